"""Property-based checks of the validators: every refusal is an InvalidRequestError naming the rule."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lumina import validation as V
from lumina.errors import InvalidRequestError

anything = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                     st.text(max_size=10))


@settings(max_examples=300, deadline=None)
@given(w=st.integers(-100, 3000), h=st.integers(-100, 3000), r=st.sampled_from([128, 256, 512, 960]))
def test_size_rule(w, h, r):
    ok = (w >= 32 and h >= 32 and w % 32 == 0 and h % 32 == 0 and max(w, h) / min(w, h) <= 4
          and (w // 32) * (h // 32) <= (r // 32) ** 2)
    if ok:
        V.check_size(w, h, r)
    else:
        with pytest.raises(InvalidRequestError, match=f"{w}x{h}"):
            V.check_size(w, h, r)


@settings(max_examples=200, deadline=None)
@given(f=st.integers(-20, 400))
def test_frames_rule(f):
    if f == 1 or (0 < f <= V.MAX_FRAMES and f % 8 == 0):
        V.check_frames(f)
    else:
        with pytest.raises(InvalidRequestError, match="multiple of 8" if f % 8 or f <= 0 else "at most 256"):
            V.check_frames(f)


@settings(max_examples=200, deadline=None)
@given(value=anything)
def test_validators_only_raise_invalid_request(value):
    for check in (V.check_frames, V.check_seed, V.check_steps, V.check_fps, lambda v: V.as_float("guidance", v),
                  lambda v: V.as_int("frames", v), lambda v: V.check_stages("motion", [v], *V.MOTION_RANGE),
                  lambda v: V.check_size(v, v, 256), V.check_prompt):
        try:
            check(value)
        except InvalidRequestError as err:
            assert str(err)


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(-2**40, 2**40))
def test_seed_range_is_full_32_bit(seed):
    if 0 <= seed < 2**32:
        V.check_seed(seed)
    else:
        with pytest.raises(InvalidRequestError, match="4294967295"):
            V.check_seed(seed)


@settings(max_examples=200, deadline=None)
@given(x=st.floats(-1000, 1000, allow_nan=False))
def test_motion_and_guidance_ranges(x):
    from lumina.sampling import SampleConfig

    lo, hi = V.MOTION_RANGE
    if lo <= x <= hi:
        SampleConfig(motion=x)
    else:
        with pytest.raises(InvalidRequestError, match="motion"):
            SampleConfig(motion=x)
    with pytest.raises(InvalidRequestError, match="cfg"):
        SampleConfig(cfg=math.nan)


@settings(max_examples=100, deadline=None)
@given(v=st.integers(1, 5000))
def test_snap_size_gives_allowed_multiples(v):
    s = V.snap_size(v)
    assert s % 32 == 0 and s >= 32 and abs(s - v) <= max(16, 32 - v)


def test_supported_sizes_fit_the_budget_and_frames_for_durations():
    sizes = V.supported_sizes(128)
    assert (128, 128) in sizes and all((w // 32) * (h // 32) <= 16 for w, h in sizes)
    assert V.supported_sizes(960)[0][0] * V.supported_sizes(960)[0][1] <= 960 * 960
    assert V.frames_for(4, 24) == 96 and V.frames_for(2, 8) == 16 and V.frames_for(0.1, 8) == 8
    with pytest.raises(InvalidRequestError, match="fps"):
        V.frames_for(2, 0)
    from lumina.syntax import parse_resolution

    assert parse_resolution("256x128") == (256, 128)
    with pytest.raises(InvalidRequestError, match="WxH"):
        parse_resolution("256 by 128")
    with pytest.raises(InvalidRequestError, match="empty"):
        V.check_prompt("   ")


def test_a_huge_duration_is_a_range_error_naming_the_field():
    """1e308 s used to overflow in the rounding (OverflowError); now it is refused by name with the allowed span."""
    assert V.frames_for(10.7, 24) == 256  # rounds to the largest count
    for seconds, fps in ((1e308, 24), (float("inf"), 8), (11, 24)):
        with pytest.raises(InvalidRequestError, match=rf"duration .* s: at {fps} fps at most {256 / fps:g} s "
                                                      r"\(256 frames\) are accepted"):
            V.frames_for(seconds, fps)


def test_the_negative_prompt_has_the_prompts_length_limit():
    from lumina.generation import GenerationRequest, resolve_request
    from lumina.pipelines.defaults import ModelDefaults

    ok = resolve_request(GenerationRequest(prompt="x", negative_prompt="n" * V.MAX_PROMPT_CHARS, seed=1),
                         ModelDefaults())
    assert len(ok.negative_prompt) == 4000
    with pytest.raises(InvalidRequestError, match="the negative prompt has 4001 characters; at most 4000"):
        resolve_request(GenerationRequest(prompt="x", negative_prompt="n" * 4001), ModelDefaults())
    with pytest.raises(InvalidRequestError, match="negative_prompt=5: must be text"):
        resolve_request(GenerationRequest(prompt="x", negative_prompt=5), ModelDefaults())
    with pytest.raises(InvalidRequestError, match="the prompt has 4001 characters; at most 4000"):
        resolve_request(GenerationRequest(prompt="p" * 4001), ModelDefaults())


def test_video_upload_checks(tmp_path):
    import numpy as np

    from lumina.media import write_mp4

    ok = write_mp4(tmp_path / "clip.mp4", np.zeros((16, 32, 32, 3), np.uint8), 8)
    assert abs(V.check_video_upload(ok) - 2.0) < 0.2
    with pytest.raises(InvalidRequestError, match="not accepted"):
        V.check_video_upload(tmp_path / "evil.sh")
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(b"not a video at all")
    with pytest.raises(InvalidRequestError, match="not a readable video"):
        V.check_video_upload(fake)
    with pytest.raises(InvalidRequestError, match="up to 1 s"):
        V.check_video_upload(ok, max_seconds=1)
    with pytest.raises(InvalidRequestError, match="at most"):
        V.check_video_upload(ok, max_bytes=10)


stage_values = st.one_of(st.floats(-1e12, 1e12), st.sampled_from([math.nan, math.inf, -math.inf, 0.0, 50.0, 100.0]))


@settings(max_examples=200, deadline=None)
@given(values=st.lists(stage_values, min_size=1, max_size=4), kind=st.sampled_from(["cfg", "motion", "neg_motion"]))
def test_every_stage_of_a_schedule_meets_the_rule(values, kind):
    """The rule of a value applies to each stage of its schedule ("v0, v1@t1, ..."), not only to a constant."""
    from lumina.sampling import SampleConfig
    from lumina.syntax import format_schedule, parse_schedule

    lo, hi = V.GUIDANCE_RANGE if kind == "cfg" else V.MOTION_RANGE
    times = [round(0.1 + 0.2 * i, 2) for i in range(len(values) - 1)]
    setting = tuple([values[0]] + list(zip(times, values[1:]))) if times else values[0]
    text = format_schedule(setting) if all(math.isfinite(v) for v in values) else None
    ok = all(math.isfinite(v) and lo <= v <= hi for v in values)
    for value in [setting] + ([parse_schedule(text)] if text else []):
        if ok:
            SampleConfig(**{kind: value})
        else:
            in_range = f"must be a number in {lo:g}..{hi:g}"
            with pytest.raises(InvalidRequestError, match=in_range if all(map(math.isfinite, values)) else "number"):
                SampleConfig(**{kind: value})


@pytest.mark.parametrize("name, value, words", [
    ("renorm", math.nan, "renorm=nan"), ("renorm", 1e9, "renorm=1000000000.0"), ("time_shift", math.inf, "time shift=inf"),
    ("time_shift", 0.0, "time shift=0.0"), ("steps", 0, "steps=0"), ("steps", 201, "steps=201"),
])
def test_scalar_sampling_values_have_one_rule(name, value, words):
    from lumina.sampling import SampleConfig

    with pytest.raises(InvalidRequestError, match=words):
        SampleConfig(**{name: value})


@pytest.mark.parametrize("field, value, words", [
    ("frames", 0, "frames=0"), ("fps", 0, "fps=0"), ("width", 0, "size 0x"), ("height", 0, "x0:"), ("steps", 0, "steps=0"),
    ("seed", -1, "seed=-1"), ("cfg", (4.0, (0.5, 1e9)), "cfg=1000000000.0"), ("renorm", math.nan, "renorm=nan"),
])
def test_zero_is_a_value_and_every_setting_is_checked_before_loading(field, value, words):
    """A request is refused against the model's defaults alone (no weights): zero is never replaced by a default."""
    from lumina.generation import GenerationRequest, resolve_request
    from lumina.pipelines.loading import read_defaults

    with pytest.raises(InvalidRequestError, match=words):
        resolve_request(GenerationRequest(prompt="a red circle", **{field: value}), read_defaults("tiny"))


def test_output_path_checks(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir.mp4").mkdir()
    assert V.check_output_path(tmp_path / "new" / "deeper" / "x.mp4") == tmp_path / "new" / "deeper" / "x.mp4"
    assert not (tmp_path / "new").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["dir.mp4", "file"]
    for path, words in ((tmp_path / "file" / "x.mp4", "is a file, not a folder"), (tmp_path / "dir.mp4", "existing folder"),
                        ("/proc/x.mp4", "cannot write in /proc"), (tmp_path / "x.avi", "must be a .mp4 file")):
        with pytest.raises(InvalidRequestError, match=words):
            V.check_output_path(path)
