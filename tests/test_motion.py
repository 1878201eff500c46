"""Motion score: protocol details, monotonicity in speed, file round trip, errors and CLI."""

import runpy
import sys

import numpy as np
import pytest

from lumina import motion
from lumina.media import write_mp4
from lumina.motion import main, motion_score, motion_score_file
from lumina_research.world import render_clip, sample_scene

SCENES = [("black", "circle", "red", "right"), ("gray", "star", "blue", "down"),
          ("brown", "triangle", "yellow", "diagonal"), ("navy", "square", "white", "left")]


def _clip(speed, background="black", shape="circle", color="red", motion_name="right", **kwargs):
    scene = sample_scene(7, n_objects=1, motion=motion_name if speed else "still", speed=speed or None,
                         background=background, colors=(color,), shapes=(shape,))
    return render_clip(scene, **kwargs)


@pytest.mark.parametrize("background,shape,color,motion_name", SCENES)
def test_score_strictly_increases_with_speed(background, shape, color, motion_name):
    scores = [motion_score(c.frames, c.fps) for c in
              (_clip(s, background, shape, color, motion_name) for s in (0.0, 0.1, 0.2, 0.4))]
    assert scores[0] < 0.05
    assert all(b > a * 1.2 for a, b in zip(scores, scores[1:])), scores


def test_only_frames_every_half_second_count():
    clip = _clip(0.3)
    frames = clip.frames.copy()  # 8 fps: samples are frames 0, 4, 8, 12
    base = motion_score(frames, clip.fps)
    frames[[1, 2, 3, 5, 9, 13, 14, 15]] = 255
    assert motion_score(frames, clip.fps) == base
    frames[8] = 255
    assert motion_score(frames, clip.fps) != base


def test_short_clip_uses_first_and_last_frame():
    clip = _clip(0.4, fps=8, seconds=0.375)  # 3 frames, under 0.5 s
    expected = motion_score(clip.frames[[0, 2]], fps=2.0)  # two frames exactly 0.5 s apart
    assert motion_score(clip.frames, clip.fps) == pytest.approx(expected) and expected > 0.1


def test_portrait_video_is_transposed_first():
    landscape = _clip(0.3, width=128, height=72)
    portrait = landscape.frames.transpose(0, 2, 1, 3)
    assert motion_score(portrait, 8) == pytest.approx(motion_score(landscape.frames, 8))
    tall = _clip(0.3, width=72, height=128, motion_name="down")
    assert motion_score(tall.frames, tall.fps) > 0.5


def test_mp4_round_trip_matches_in_memory_score(tmp_path):
    for speed, shape, motion_name in ((0.15, "circle", "right"), (0.3, "star", "up"), (0.25, "square", "diagonal")):
        clip = _clip(speed, "maroon", shape, "cyan", motion_name)
        path = tmp_path / f"{shape}.mp4"
        write_mp4(path, clip.frames, clip.fps)
        in_memory = motion_score(clip.frames, clip.fps)
        assert motion_score_file(path) == pytest.approx(in_memory, rel=0.1)


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        motion_score_file(tmp_path / "missing.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_text("not a video")
    with pytest.raises(ValueError, match="junk.mp4"):
        motion_score_file(junk)
    one = tmp_path / "one.mp4"
    write_mp4(one, _clip(0.2).frames[:1], 8)
    with pytest.raises(ValueError, match="at least 2 frames"):
        motion_score_file(one)
    with pytest.raises(ValueError, match="at least 2 frames"):
        motion_score(np.zeros((1, 8, 8, 3), np.uint8), 8)
    with pytest.raises(ValueError, match="uint8"):
        motion_score(np.zeros((4, 8, 8, 3), np.float32), 8)


def test_cli_prints_score_last(tmp_path, capsys, monkeypatch):
    clip = _clip(0.2)
    path = tmp_path / "clip.mp4"
    write_mp4(path, clip.frames, clip.fps)
    assert main([str(path)]) == 0
    assert float(capsys.readouterr().out.strip().splitlines()[-1]) == pytest.approx(motion_score_file(path), abs=1e-4)
    assert main([str(tmp_path / "nope.mp4")]) == 1
    assert "not found" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["lumina.motion", str(path)])  # `python -m lumina.motion VIDEO`
    monkeypatch.delitem(sys.modules, "lumina.motion")  # run it fresh, as -m would
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("lumina.motion", run_name="__main__")
    assert exit_info.value.code == 0
    assert float(capsys.readouterr().out.strip().splitlines()[-1]) == pytest.approx(motion_score_file(path), abs=1e-4)


def test_flow_is_zero_for_identical_frames():
    frame = motion._prepare(_clip(0.0).frames[0])
    assert np.abs(motion.dense_flow(frame, frame)).max() < 1e-3
