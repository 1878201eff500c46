"""ShapesBench mechanics on a small random model: every section is measured and written out."""

import json

import numpy as np
import pytest

from lumina_research.eval.shapes import MOTION_LEVELS, Bench, flicker_score, jump_share, motion_control_stats, read_back, run, summarize
from lumina_research.world import render_clip, sample_scene


def test_flicker_score_follows_vbench():
    still = np.full((4, 8, 8, 3), 100, np.uint8)
    blink = still.copy()
    blink[1::2] = 200
    assert flicker_score(still) == 1.0
    assert abs(flicker_score(blink) - (255 - 100) / 255) < 1e-6


def test_motion_control_pools_and_ranks_within_prompts():
    """Two prompts whose objects differ in size: each ranks its levels perfectly, pooled they interleave."""
    small, large = [0.1, 0.5, 1.0, 1.5, 2.0], [1.2, 3.0, 6.0, 9.0, 12.0]
    stats = motion_control_stats(MOTION_LEVELS, [small, large])
    assert stats["spearman_within_prompt"] == pytest.approx(1.0)
    assert 0.6 < stats["spearman"] < 0.95
    assert stats["mean_measured"]["0.0"] == pytest.approx(0.65) and len(stats["pairs"]) == 10
    reversed_large = motion_control_stats(MOTION_LEVELS, [small, large[::-1]])
    assert reversed_large["spearman_within_prompt"] == pytest.approx(0.0)  # +1 and -1
    assert motion_control_stats(MOTION_LEVELS, [[3.0] * 5])["spearman"] == 0.0  # nothing to rank


def test_adherence_reads_rendered_ground_truth():
    scene = sample_scene(5, n_objects=1, motion="right", background="navy", colors=("red",), shapes=("circle",))
    clip = render_clip(scene, width=128, height=128, fps=8, seconds=2.0)
    facts = {"background": "navy", "objects": [{"color": "red", "shape": "circle", "motion": "right"}]}
    scores, jump = read_back(clip.frames, 8, facts)
    assert scores == {"background": True, "color": True, "shape": True, "direction": True}
    assert 0.1 < jump < 0.17  # the world's movers glide evenly: 2 of 15 frame steps
    wrong = {"background": "black", "objects": [{"color": "green", "shape": "square", "motion": "left"}]}
    scores, _ = read_back(clip.frames, 8, wrong)
    assert not any(scores.values())
    still = {"background": "navy", "objects": [{"color": "red", "shape": "circle", "motion": "still"}]}
    assert read_back(clip.frames, 8, still)[1] is None  # no jump asked of a still prompt


def test_jump_share_finds_a_latent_step_jump():
    glide = np.stack([np.linspace(0.2, 0.8, 16), np.full(16, 0.5)], axis=1)
    assert jump_share(glide) == pytest.approx(2 / 15)
    held = np.repeat(np.array([0.2, 0.3, 0.6, 0.7]), 4)  # still within each 4-frame step, jumping between them
    stepped = np.stack([held, np.full(16, 0.5)], axis=1)
    assert jump_share(stepped) == pytest.approx(0.3 / 0.5)  # frame 7 -> 8 carries the 0.3 jump of 0.5 in all
    assert jump_share(np.zeros((16, 2))) == 0.0


def test_summarize_averages_facts_and_skips_missing_jumps():
    yes = {"background": True, "color": True, "shape": False, "direction": True}
    no = {"background": True, "color": False, "shape": False, "direction": False}
    row = summarize([(yes, 0.2), (no, None), (yes, 0.4)])
    assert row["color"] == pytest.approx(2 / 3) and row["shape"] == 0.0 and row["background"] == 1.0
    assert row["adherence"] == pytest.approx((1 + 2 / 3 + 0 + 2 / 3) / 4)
    assert row["jump"] == pytest.approx(0.3)
    assert summarize([(no, None)])["jump"] is None


def test_bench_runs_end_to_end(random_pipeline_dir, tmp_path):
    result = run(str(random_pipeline_dir), n_prompts=4, n_motion=1, seed=0, out=tmp_path)
    assert [r["schedule"] for r in result["table2"]] == ["1x2", "2x2", "2x4", "multiscale"]
    assert result["table2"][0]["time_vs_1x2"] == 1.0
    assert len(result["motion"]["pairs"]) == 5 and -1 <= result["motion"]["spearman"] <= 1
    # one prompt: its own correlation is the pooled one
    assert result["motion"]["spearman_within_prompt"] == pytest.approx(result["motion"]["spearman"])
    saved = json.loads((tmp_path / "shapesbench.json").read_text())
    assert saved["n_prompts"] == result["n_prompts"] >= 1
    report = (tmp_path / "shapesbench.md").read_text()
    assert "| multiscale |" in report and "multiscale = `2x4, 2x2@0.03, 1x2@0.125`" in report  # the model's own
    assert "negative score `2, 6@0.05`" in report
    assert "evaluation set 0, prompt i with noise seed 0 + i" in report
    ceiling = result["vae_ceiling"]
    assert set(ceiling) == {"background", "color", "shape", "direction", "adherence", "jump"}
    assert all(0 <= ceiling[k] <= 1 for k in ("background", "color", "shape", "direction", "adherence"))
    assert "| VAE ceiling" in report and "| jump |" in report
    from PIL import Image

    sheet = Image.open(tmp_path / "samples.png")
    n = min(4, result["n_prompts"])
    assert sheet.size == (64 * 3, 64 * n)  # 8 frames every 3rd -> 3 per row, one row per clip (64x64 model)
    gif = Image.open(tmp_path / "sample.gif")
    total_ms = 0
    for i in range(gif.n_frames):  # GIF writers merge identical neighbours; the clip's length survives
        gif.seek(i)
        total_ms += gif.info["duration"]
    assert gif.size == (64, 64) and total_ms == pytest.approx(8 * 1000 / 8, abs=8 * 10)  # GIF delays are centiseconds


def test_each_prompt_draws_its_own_noise(random_pipeline_dir):
    """A table must not rest on one noise draw: prompt i renders from its own seed, the same on every call."""
    bench = Bench(str(random_pipeline_dir), seed=3)
    prompt = "a red circle moving right on a navy background"
    first, again, second = (bench.render(prompt, i, schedule="1x2")[0] for i in (0, 0, 1))
    assert np.array_equal(first, again)
    assert np.abs(first.astype(int) - second.astype(int)).mean() > 1.0
