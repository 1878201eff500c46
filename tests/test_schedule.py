"""Time-aware settings, presets, schedule strings and the Euler grid (reference §3)."""

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lumina.pipelines.defaults import ModelDefaults
from lumina.sampling import PRESETS, SampleConfig, guide, initial_noise, plan, time_grid, value_at
from lumina.syntax import format_schedule, parse_schedule

RELEASE_NAMES = ModelDefaults().named_schedules()


def parse_text(text, kind="patch"):
    return parse_schedule(text, kind, RELEASE_NAMES if kind == "patch" else None)


def test_presets_match_the_release_table():
    ms = PRESETS["f24F96R960-MultiScale"]
    assert ms.patch == ("2x4", (0.03, "2x2"), (0.125, "1x2"))
    assert (ms.steps, ms.time_shift, ms.renorm) == (70, 24.0, 2.0)
    assert ms.cfg == (20.0, (0.2, 0.0)) and ms.neg_motion == (2.0, (0.05, 6.0)) and ms.motion == 6.0
    low = PRESETS["f16F64R512-MultiScale"]
    assert low.patch == ("2x4", (0.075, "2x2"), (0.3, "1x2")) and low.renorm == -1 and low.cfg == (12.0, (0.4, 0.0))
    assert PRESETS["f16F64R512"].patch == "1x2" and PRESETS["f16F64R512"].time_shift == 8


def test_json_lists_equal_tuples():
    from_json = SampleConfig.from_dict(json.loads(json.dumps(PRESETS["f24F96R960-MultiScale"].to_dict())))
    assert from_json == PRESETS["f24F96R960-MultiScale"]


def test_shared_noise_is_a_project_key_outside_the_release_presets():
    assert all(p.shared_noise == 0.0 and "sharedNoise" not in p.to_dict() for p in PRESETS.values())
    mixed = SampleConfig.from_dict({**PRESETS["f24F96R960"].to_dict(), "sharedNoise": 0.3})
    assert mixed.shared_noise == 0.3 and mixed.to_dict()["sharedNoise"] == 0.3
    assert SampleConfig.from_dict(json.loads(json.dumps(mixed.to_dict()))) == mixed
    for bad, message in ((1.0, "shared noise=1.0: must be a number in 0..0.95"), (-0.1, "shared noise=-0.1"),
                         ("lots", "shared noise='lots': not a number")):
        with pytest.raises(ValueError, match=message):
            PRESETS["f24F96R960"].replace(shared_noise=bad)


def test_initial_noise_shares_the_asked_variance_across_frames():
    shape = (2, 16, 4, 32, 32)
    plain = initial_noise(shape, torch.Generator().manual_seed(3))
    torch.testing.assert_close(plain, torch.randn(shape, generator=torch.Generator().manual_seed(3)))

    def frame_correlation(x):
        f = x.transpose(0, 2).reshape(shape[2], -1)
        return torch.corrcoef(f)[~torch.eye(shape[2], dtype=torch.bool)].mean().item()

    assert abs(frame_correlation(plain)) < 0.02
    for shared in (0.3, 0.6):
        mixed = initial_noise(shape, torch.Generator().manual_seed(3), shared)
        assert abs(frame_correlation(mixed) - shared) < 0.03
        assert abs(mixed.std().item() - 1.0) < 0.02 and abs(mixed.mean().item()) < 0.02  # still N(0, 1) per element


def test_value_at_switches_at_the_boundary():
    s = (2.0, (0.05, 6.0))
    assert value_at(s, 0.0) == 2.0 and value_at(s, 0.0499) == 2.0 and value_at(s, 0.05) == 6.0
    assert value_at(7.5, 0.9) == 7.5


def test_grid_is_shifted_and_has_step_minus_one_moves():
    g = time_grid(5, 3.0)
    u = torch.linspace(0, 1, 5, dtype=torch.float64)
    torch.testing.assert_close(g, u / (u + 3 - 3 * u))
    steps = plan(PRESETS["f24F96R960-MultiScale"].replace(steps=12))
    assert len(steps) == 11
    assert [s.patch.name for s in steps[:2]] == ["2x4", "2x4"] or steps[0].patch.name == "2x4"
    assert steps[-1].patch.name == "1x2" and not steps[-1].guided and steps[0].guided


def test_guide_cfg_zero_skips_negative_and_renorm_caps_norm():
    pos, neg = torch.ones(2, 4), torch.zeros(2, 4)
    assert torch.equal(guide(pos, neg, 0.0, 2.0), pos)
    out = guide(pos, neg, 10.0, 2.0)
    torch.testing.assert_close(torch.linalg.vector_norm(out, dim=1), 2 * torch.linalg.vector_norm(pos, dim=1))
    torch.testing.assert_close(guide(pos, neg, 10.0, -1), pos * 11)


@pytest.mark.parametrize("text,expected", [
    ("2x4, 2x2@0.03, 1x2@0.125", ("2x4", (0.03, "2x2"), (0.125, "1x2"))),
    ("multiscale", ("2x4", (0.03, "2x2"), (0.125, "1x2"))),
    (" 1x2 ", "1x2"),
    ("2x4@0, 1x2@0.5", ("2x4", (0.5, "1x2"))),
])
def test_patch_schedule_strings(text, expected):
    assert parse_text(text) == expected


@pytest.mark.parametrize("text,message", [
    ("", "empty"),
    ("3x3", "FxP|1x2"),
    ("2x4, 1x2", "needs a switch time"),
    ("2x4, 2x2@0.5, 1x2@0.2", "larger than the previous"),
    ("2x4, 1x2@1.5", r"in \(0, 1\)"),
    ("2x4@0.1, 1x2@0.5", "first entry"),
    ("2x4,,1x2@0.5", "empty"),
])
def test_bad_patch_schedules_are_refused_clearly(text, message):
    with pytest.raises(ValueError, match=message):
        parse_text(text)


def test_number_schedules_and_errors():
    assert parse_text("20, 0@0.2", "number") == (20.0, (0.2, 0.0))
    with pytest.raises(ValueError, match="not a number"):
        parse_text("abc", "number")
    with pytest.raises(ValueError, match="unknown sample_config keys"):
        SampleConfig.from_dict({"P": "1x2", "bogus": 1})
    with pytest.raises(ValueError, match=r"steps=1: must be an integer in 2\.\.200"):
        SampleConfig(steps=1)


patches = st.sampled_from(["1x2", "2x2", "2x4"])


@settings(max_examples=200, deadline=None)
@given(first=patches, rest=st.lists(st.tuples(st.floats(0.001, 0.999), patches), max_size=4))
def test_schedule_strings_round_trip(first, rest):
    times = sorted({round(t, 4) for t, _ in rest})
    setting = (first, *[(t, p) for t, (_, p) in zip(times, rest)]) if times else first
    text = format_schedule(setting)
    assert parse_text(text) == setting
    assert format_schedule(parse_text(text)) == text


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_parser_never_crashes_with_anything_but_value_error(text):
    try:
        parse_text(text)
    except ValueError as err:
        assert str(err)
