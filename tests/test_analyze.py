"""The pixel-only analyzer against ground truth, on clean and degraded renders."""

import cv2
import numpy as np
import pytest

from lumina.media import read_video, write_mp4
from lumina_research.world import analyze, render_clip, sample_scene
from lumina_research.world.analyze import turning_points

SINGLE_SEEDS = range(3000, 3040)
MULTI_SEEDS = range(4000, 4020)


def _degrade(frames, seed):
    """Mild blur plus sensor-like noise, as a generated video might show."""
    rng = np.random.default_rng(seed)
    blurred = np.stack([cv2.GaussianBlur(f, (0, 0), 0.8) for f in frames]).astype(np.float32)
    return np.clip(blurred + rng.normal(0, 6, frames.shape), 0, 255).astype(np.uint8)


def _mp4_round_trip(frames, fps, path):
    """Through the app's own mp4 writer (H.264 yuv420p) and reader."""
    write_mp4(path, frames, fps)
    return read_video(path)[0]


def _single_accuracy(degrade=None):
    hits = np.zeros(5)
    for seed in SINGLE_SEEDS:
        clip = render_clip(sample_scene(seed, n_objects=1))
        frames = clip.frames if degrade is None else degrade(clip.frames, seed)
        result = analyze(frames, clip.fps)
        truth = clip.truth.objects[0]
        found = result.objects[0] if len(result.objects) == 1 else None
        hits += [result.background == clip.truth.background,
                 found is not None and found.color == truth.color,
                 found is not None and found.shape == truth.shape,
                 found is not None and found.direction == truth.motion,
                 found is not None and found.size == truth.size]
    return hits / len(SINGLE_SEEDS)


def _multi_matching(degrade=None):
    matched = total = 0
    for seed in MULTI_SEEDS:
        clip = render_clip(sample_scene(seed, n_objects=int(2 + seed % 2)))
        frames = clip.frames if degrade is None else degrade(clip.frames, seed)
        pool = [(o.color, o.shape) for o in analyze(frames, clip.fps).objects]
        for obj in clip.truth.objects:
            total += 1
            if (obj.color, obj.shape) in pool:
                pool.remove((obj.color, obj.shape))
                matched += 1
    return matched / total


@pytest.mark.parametrize("degrade", [None, _degrade], ids=["clean", "blur+noise"])
def test_single_object_accuracy(degrade):
    background, color, shape, direction, size = _single_accuracy(degrade)
    assert background == 1.0
    assert color >= 0.95
    assert shape >= 0.90
    assert direction >= 0.90
    assert size >= 0.90


@pytest.mark.parametrize("degrade", [None, _degrade], ids=["clean", "blur+noise"])
def test_multi_object_colour_and_shape_matching(degrade):
    assert _multi_matching(degrade) >= 0.8


def test_survives_h264_round_trip(tmp_path):
    for seed in range(3100, 3108):
        clip = render_clip(sample_scene(seed, n_objects=1))
        result = analyze(_mp4_round_trip(clip.frames, clip.fps, tmp_path / "c.mp4"), clip.fps)
        truth = clip.truth.objects[0]
        assert result.background == clip.truth.background
        assert [(o.color, o.shape, o.direction) for o in result.objects] == [(truth.color, truth.shape, truth.motion)]


def test_bounce_times_and_tracks_match_truth():
    for seed in range(3200, 3212):
        clip = render_clip(sample_scene(seed, n_objects=1, motion="bouncing"), fps=12)
        found = analyze(clip.frames, clip.fps).objects[0]
        assert found.direction == "bouncing"
        np.testing.assert_allclose(found.track, clip.truth.objects[0].track, atol=0.02)
        visible = [t for t, _ in clip.truth.bounces if 2 / clip.fps < t < clip.seconds - 3 / clip.fps]
        for t in visible:
            assert min(abs(t - b) for b in found.bounce_times) < 1 / clip.fps
        assert len(found.bounce_times) <= len(clip.truth.bounces)


def test_other_resolutions_and_facts_layout():
    scene = sample_scene(9, n_objects=1, motion="left", colors=("orange",), shapes=("star",), background="navy")
    clip = render_clip(scene, width=160, height=96, fps=10)
    result = analyze(clip.frames, clip.fps)
    assert result.facts() == scene.facts()
    assert result.objects[0].coverage == 1.0


def test_turning_points_ignore_jitter():
    t = np.linspace(0, 1, 40)
    x = 1 - np.abs(t - 0.5) + np.random.default_rng(0).normal(0, 0.005, t.size)
    assert turning_points(x) in ([19], [20])
    assert turning_points(0.01 * np.sin(20 * t)) == []


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        analyze(np.zeros((0, 8, 8, 3), np.uint8), 8)
    with pytest.raises(ValueError):
        analyze(np.zeros((4, 8, 8), np.uint8), 8)
