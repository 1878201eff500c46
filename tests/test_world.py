"""The procedural world: determinism, geometry, bounces, captions, sound and dataset split."""

import numpy as np
import pytest

from lumina_research.world import (
    BACKGROUNDS,
    COLOR_PITCH_HZ,
    COLORS,
    MOTIONS,
    SHAPES,
    SIZES,
    caption_for,
    eval_seed,
    held_out_prompts,
    make_clips,
    parse_prompt,
    prompt_for,
    render_clip,
    render_sound,
    sample_scene,
    train_seed,
)


def _key(obj):
    return obj["color"], obj["shape"], obj["motion"]


def test_vocabulary_sizes_and_palette_separation():
    assert set(SHAPES) >= {"circle", "square", "triangle", "star"}
    assert len(COLORS) >= 8 and len(BACKGROUNDS) >= 6
    assert not set(COLORS) & set(BACKGROUNDS)
    for c in COLORS.values():
        for b in BACKGROUNDS.values():
            assert np.linalg.norm(np.subtract(c, b)) > 100


def test_same_seed_same_clip_different_seed_different():
    a, b = render_clip(sample_scene(11)), render_clip(sample_scene(11))
    assert a.frames.tobytes() == b.frames.tobytes()
    assert a.caption == b.caption
    assert a.truth.facts == b.truth.facts
    clips = [render_clip(sample_scene(s)) for s in range(12)]
    assert len({c.frames.tobytes() for c in clips}) == 12
    assert len({c.caption for c in clips}) == 12


def test_sizes_fps_and_length_are_honoured():
    clip = render_clip(sample_scene(3), width=96, height=64, fps=12, seconds=1.5)
    assert clip.frames.shape == (18, 64, 96, 3) and clip.frames.dtype == np.uint8
    assert clip.fps == 12 and clip.seconds == pytest.approx(1.5)
    assert all(o.track.shape == (18, 2) for o in clip.truth.objects)
    assert render_clip(sample_scene(3), fps=5, seconds=3.0).frames.shape[0] == 15


@pytest.mark.parametrize("shape", SHAPES)
def test_object_is_drawn_where_the_track_says_at_any_resolution(shape):
    scene = sample_scene(5, n_objects=1, motion="diagonal", colors=("yellow",), shapes=(shape,))
    for width, height in ((128, 128), (200, 120)):
        clip = render_clip(scene, width=width, height=height)
        bg = np.array(BACKGROUNDS[scene.background])
        for i in (0, len(clip.frames) - 1):
            ys, xs = np.nonzero(np.any(clip.frames[i] != bg, axis=2))
            centre = np.array([(xs.mean() + 0.5) / width, (ys.mean() + 0.5) / height])
            np.testing.assert_allclose(centre, clip.truth.objects[0].track[i], atol=1.0 / min(width, height))
            assert set(map(tuple, clip.frames[i][ys, xs])) == {COLORS["yellow"]}


def test_straight_motion_matches_name_and_speed():
    directions = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
    for seed in range(60):
        motion = MOTIONS[seed % 5]  # the five straight motions
        scene = sample_scene(seed, n_objects=1, motion=motion)
        obj = scene.objects[0]
        clip = render_clip(scene)
        assert clip.truth.bounces == []  # planned to stay inside the frame
        step = np.diff(clip.truth.objects[0].track, axis=0) * clip.fps
        assert np.allclose(np.linalg.norm(step, axis=1), obj.speed)  # square frame: widths/s
        if motion in directions:
            assert np.allclose(np.sign(step[0]), directions[motion])
        else:
            assert np.all(np.abs(step[0]) > 0) and np.isclose(abs(step[0, 0]), abs(step[0, 1]))
        assert 0.1 <= obj.speed <= 0.6


def test_bounce_times_match_reflections_in_the_track():
    fps = 200  # fine sampling: a reflection shows as a velocity sign flip between samples
    for seed in range(20):
        scene = sample_scene(seed, n_objects=1, motion="bouncing")
        clip = render_clip(scene, width=64, height=64, fps=fps)
        times = [t for t, _ in clip.truth.bounces]
        assert times, "a bouncing object must bounce within the clip"
        velocity = np.diff(clip.truth.objects[0].track, axis=0)
        flips = np.nonzero(np.any(np.sign(velocity[1:]) != np.sign(velocity[:-1]), axis=1))[0]
        flip_times = (flips + 1) / fps
        assert len(flip_times) == len(times)
        np.testing.assert_allclose(flip_times, times, atol=1.0 / fps)
        r = SIZES[scene.objects[0].size] / 2
        for t in times:  # the object touches a wall at each bounce
            pos = clip.truth.objects[0].track[int(round(t * fps))]
            assert np.min(np.abs(np.concatenate([pos - r, 1 - r - pos]))) < 0.01


def test_multi_object_scenes_have_distinct_colours_and_rarely_touch():
    touching = 0
    for seed in range(30):
        scene = sample_scene(seed, n_objects=3)
        clip = render_clip(scene)
        assert len({o.color for o in scene.objects}) == 3
        for i in range(3):
            for j in range(i + 1, 3):
                gap = (SIZES[scene.objects[i].size] + SIZES[scene.objects[j].size]) / 2
                dist = np.linalg.norm(clip.truth.objects[i].track - clip.truth.objects[j].track, axis=1)
                touching += dist.min() < gap * 0.99
    assert touching <= 3  # only when placement retries run out


def test_captions_state_the_facts_and_vary():
    skeletons, openings, still_phrases = set(), set(), set()
    for seed in range(200):
        scene = sample_scene(seed)
        caption = render_clip(scene, width=16, height=16, fps=1, seconds=1).caption
        low = caption.lower()
        assert scene.background in low
        for obj in scene.objects:
            assert f"{obj.color} {obj.shape}" in low
        parsed = parse_prompt(caption)
        assert parsed["background"] == scene.background
        assert sorted(map(_key, parsed["objects"])) == sorted(map(_key, scene.facts()["objects"]))
        skeleton = low
        for word in [scene.background] + [w for o in scene.objects for w in (o.color, o.shape)]:
            skeleton = skeleton.replace(word, "_")
        skeletons.add(skeleton)
        openings.add(" ".join(skeleton.split()[:2]))
        if len(scene.objects) == 1 and scene.objects[0].motion == "still":
            still_phrases.add(skeleton.split("_ _")[1].split(",")[0].split(" on ")[0].split(" against ")[0])
    assert len(skeletons) >= 100
    assert len(openings) >= 6
    assert len(still_phrases) >= 3


def test_caption_rng_changes_phrasing_not_facts():
    scene = sample_scene(2, n_objects=2)
    captions = {caption_for(scene, np.random.default_rng(k)) for k in range(20)}
    assert len(captions) >= 10
    assert all(sorted(map(_key, parse_prompt(c)["objects"])) == sorted(map(_key, scene.facts()["objects"]))
               for c in captions)


def test_prompt_for_and_parse_prompt():
    assert prompt_for("blue", [{"color": "red", "shape": "circle", "motion": "right"}]) \
        == "a red circle moving right on a blue background"
    assert parse_prompt("On a navy backdrop, a small yellow square drifts upward.") == {
        "background": "navy",
        "objects": [{"color": "yellow", "shape": "square", "size": "small", "motion": "up"}]}
    parsed = parse_prompt("A large green triangle bounces around against a dark green background")
    assert parsed["background"] == "dark green"
    assert parsed["objects"] == [{"color": "green", "shape": "triangle", "size": "large", "motion": "bouncing"}]
    parsed = parse_prompt("an orange star gliding diagonally up and to the left and a white circle not moving, "
                          "black background")
    assert [_key(o) for o in parsed["objects"]] == [("orange", "star", "diagonal"), ("white", "circle", "still")]
    assert parse_prompt("a cat on a sofa") == {"background": None, "objects": []}


def test_held_out_prompts_are_disjoint_from_training_and_parse_back():
    train = {train_seed(0, i) for i in range(2000)} | {train_seed(1, i) for i in range(2000)}
    held = {eval_seed(0, i) for i in range(2000)} | {eval_seed(7, i) for i in range(2000)}
    assert not train & held
    pairs = held_out_prompts(30, seed=0)
    assert len(pairs) == 30 and pairs == held_out_prompts(30, seed=0)
    for prompt, facts in pairs:
        parsed = parse_prompt(prompt)
        assert parsed["background"] == facts["background"]
        assert parsed["objects"] == facts["objects"]
    clips = list(make_clips(3, seed=0, width=32, height=48, fps=4, seconds=1.0))
    assert [c.truth.seed for c in clips] == [train_seed(0, i) for i in range(3)]
    assert all(c.frames.shape == (4, 48, 32, 3) for c in clips)


def test_sound_length_range_and_determinism():
    clip = render_clip(sample_scene(4, n_objects=3), width=32, height=32)
    wave = render_sound(clip)
    assert wave.dtype == np.float32 and wave.shape == (32000,)
    assert 0.05 < np.max(np.abs(wave)) <= 0.9
    assert np.array_equal(wave, render_sound(clip.truth))
    assert render_sound(clip, sample_rate=8000, seconds=3.0).shape == (24000,)


@pytest.mark.parametrize("shape", SHAPES)
def test_sound_pitch_follows_colour(shape):
    assert len(set(COLOR_PITCH_HZ.values())) == len(COLORS)
    classes = {round(12 * np.log2(f / 440.0)) % 12 for f in COLOR_PITCH_HZ.values()}
    assert len(classes) == len(COLORS)  # one pitch class per colour
    for color, hz in COLOR_PITCH_HZ.items():
        assert 220 <= hz <= 880
        clip = render_clip(sample_scene(1, n_objects=1, motion="still", colors=(color,), shapes=(shape,)),
                           width=16, height=16)
        wave = render_sound(clip, sample_rate=16000)
        spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
        peak = np.fft.rfftfreq(len(wave), 1 / 16000)[np.argmax(spectrum)]
        assert abs(peak - hz) < 1.0


def test_sound_clicks_at_bounces():
    sr = 16000
    for seed in range(5):
        clip = render_clip(sample_scene(seed, n_objects=1, motion="bouncing"), width=32, height=32)
        wave = render_sound(clip, sample_rate=sr).astype(np.float64)
        hop = sr // 100  # 10 ms energy frames of the high-passed signal
        diff = np.diff(wave)
        energy = np.array([np.sum(diff[i:i + hop] ** 2) for i in range(0, len(diff) - hop, hop)])
        median = np.median(energy)
        near = np.zeros(len(energy), bool)
        for t, _ in clip.truth.bounces:
            k = int(t * 100)
            assert energy[k:k + 2].max() > 20 * median
            near[max(0, k - 1):k + 5] = True
        assert energy[~near].max() < 3 * median
