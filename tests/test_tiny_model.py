"""The shipped tiny model (assets/lumina-video-tiny) loads offline and follows a simple colour prompt."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lumina.media import to_uint8
from lumina.pipelines.loading import TINY_DIR, load_pipeline
from lumina.sampling.schedule import normalize_time_aware
from lumina_research.train.assemble import DEFAULT_SAMPLING, DEFAULT_STEPS

PROMPT = "a red circle moving right on a blue background"

@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return load_pipeline("tiny")


def render(tiny, prompt: str, **changes) -> np.ndarray:
    """uint8 frames of `prompt` at the shipped defaults (with `changes` to their sample config), seed 0."""
    pipe, defaults = tiny
    out = pipe(prompt, height=defaults.height, width=defaults.width, num_frames=defaults.frames,
               sample_config=defaults.sample_config().replace(**changes), generator=torch.Generator().manual_seed(0),
               output_type="np")
    return to_uint8(out.frames[0])


@pytest.fixture(scope="module")
def sample(tiny):
    return render(tiny, PROMPT)


def test_folder_layout_and_size():
    names = {p.name for p in TINY_DIR.iterdir()}
    assert {"model_index.json", "transformer", "vae", "pipeline_lumina_video.py", "README.md"} <= names
    index = json.loads((TINY_DIR / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline_lumina_video", "LuminaVideoPipeline"]  # its shipped code (diffusers)
    assets = TINY_DIR.parent  # the video model and the V2A member share the budget
    size_mb = sum(f.stat().st_size for f in assets.rglob("*") if f.is_file()) / 2**20
    assert size_mb <= 60.0, f"assets/ holds {size_mb:.1f} MB, over the 60 MB budget"


def test_defaults_are_the_trained_setting(tiny):
    pipe, defaults = tiny
    assert (defaults.width, defaults.height, defaults.frames, defaults.fps) == (128, 128, 16, 8)
    config = defaults.sample_config()  # the settings assemble writes, tuned on held-out prompts
    assert (config.time_shift, config.cfg, config.steps) == (DEFAULT_SAMPLING["ts"], DEFAULT_SAMPLING["cfg"], DEFAULT_STEPS)
    assert config.neg_motion == DEFAULT_SAMPLING["negMotion"]
    assert all(p.dtype == torch.float32 for p in pipe.transformer.parameters())
    assert "MultiScale" in defaults.preset and defaults.max_resolution == 128
    assert config.patch == normalize_time_aware(DEFAULT_SAMPLING["P"]) == defaults.named_schedules()["multiscale"]
    assert {p.name for p in pipe.transformer.supported_patch_sizes()} == {"1x2", "2x2", "2x4"}
    assert pipe.text_encoder is not None and pipe.tokenizer is not None


def test_red_object_on_blue_background(sample):
    assert sample.shape == (16, 128, 128, 3)
    f = sample.astype(np.float32)
    border = np.concatenate([f[:, :6].reshape(-1, 3), f[:, -6:].reshape(-1, 3),
                             f[:, :, :6].reshape(-1, 3), f[:, :, -6:].reshape(-1, 3)])
    r, g, b = np.median(border, axis=0)
    assert b > r + 20 and b > g + 20, f"background RGB {(r, g, b)} is not blue-ish"
    red = (f[..., 0] > 140) & (f[..., 0] > f[..., 1] + 60) & (f[..., 0] > f[..., 2] + 60)
    assert red.mean() > 0.002, f"only {red.mean() * 100:.2f}% red pixels"
    per_frame = red.reshape(16, -1).mean(1)
    assert (per_frame > 0.002).sum() >= 3, f"red pixels per frame: {per_frame}"


def test_background_follows_the_prompt(sample):
    f = sample.astype(np.float32)
    r, g, b = np.median(f[:, :6].reshape(-1, 3), axis=0)
    assert b > r + 20 and b > g + 20, f"background RGB {(r, g, b)} is not blue-ish"


def test_world_analyzer_agrees(sample):
    analyze = pytest.importorskip("lumina_research.world.analyze").analyze
    facts = analyze(sample, 8).facts()
    assert facts["background"] == "navy", facts  # the world's blue background
    # the soft blob's edges blend red with the light core, so the analyzer may call it pink or orange
    assert any(o["color"] in ("red", "orange", "pink") for o in facts["objects"]), facts


def test_still_prompt_stays_still_at_the_default_motion_score(tiny, sample):
    """Trained with still clips relabelled: "standing still" beats the default motion score 6."""
    from lumina.motion import motion_score

    fps = tiny[1].fps
    still = motion_score(render(tiny, "a red circle standing still on a blue background"), fps)
    moving = motion_score(sample, fps)
    # measured 0.41 vs 10.5 here (round 8; round 7: 2.2 vs 8.0); round 6, which followed the score over the word,
    # measured still prompts 1.45x moving ones on ShapesBench. The target is under a tenth.
    assert still < 1.0 and still < 0.1 * moving, f"still {still:.2f} vs moving {moving:.2f}"


def test_measured_motion_follows_the_requested_score_at_the_defaults(tiny):
    """Requested and measured motion share one unit: with the defaults' negative score the measured motion rises
    with the request and stays within a factor 2 of it (measured 5.6 / 9.0 / 13.2 / 23.0 for 4 / 8 / 16 / 24; the
    release's negative "2, 6@0.05" overshoots the low scores and gives 25.1 at 16, 23.6 at 24)."""
    from lumina.motion import motion_score

    measured = [motion_score(render(tiny, PROMPT, motion=level), tiny[1].fps) for level in (4.0, 8.0, 16.0, 24.0)]
    assert all(a < b for a, b in zip(measured, measured[1:])), measured
    assert all(0.5 * level < m < 2.0 * level for level, m in zip((4, 8, 16, 24), measured)), measured


def test_probe_caption_edits_change_only_their_fact():
    from lumina_research.eval.probe import OPPOSITE, SWAPPED_SHAPE, _scenes, mirrored_caption, shape_swapped_caption
    from lumina_research.world.captions import parse_prompt

    for scene, clip in _scenes(20000, 6, True):
        true = parse_prompt(clip.caption)
        (t,) = true["objects"]
        for edited, changed in ((mirrored_caption(scene), {"motion": OPPOSITE[t["motion"]]}),
                                (shape_swapped_caption(scene), {"shape": SWAPPED_SHAPE[t["shape"]]})):
            seen = parse_prompt(edited)
            assert seen["background"] == true["background"] and seen["objects"] == [{**t, **changed}], edited


def test_probe_word_stakes_a_shape_moves_the_latents_less_than_a_direction(tiny):
    """The world's facts differ in how much of the latent they decide: another shape changes a few cells'
    values, the other direction the object's place in every frame (the bundled VAE: ~0.015 vs ~0.2)."""
    from lumina_research.eval.probe import _scenes, clip_latents, word_stakes

    scenes, clips = zip(*_scenes(20000, 6, True))
    stakes = word_stakes(tiny[0], scenes, clips, clip_latents(tiny[0], clips))
    assert 0.002 < stakes["shape"] < 0.25 * stakes["direction"], stakes


def test_probe_the_shipped_model_uses_the_direction_words(tiny):
    """Flow loss at t = 0.05 on unseen single straight movers: the true caption beats the mirrored one,
    which beats no caption (the shipped model: ~0.11 / 0.15 / 0.18 over 96 clips)."""
    from lumina_research.eval.probe import _scenes, encode_clips, flow_losses, mirrored_caption

    scenes, clips = zip(*_scenes(20000, 8, True))
    data = encode_clips(tiny[0], clips)
    losses = {name: flow_losses(tiny[0], data, caps, patches=("1x2",), times=(0.05,))["1x2"][0]
              for name, caps in (("true", [c.caption for c in clips]),
                                 ("mirrored", [mirrored_caption(s) for s in scenes]), ("empty", [""] * len(clips)))}
    assert losses["true"] < 0.9 * losses["mirrored"] and losses["mirrored"] < losses["empty"], losses


def test_vae_ceiling_keeps_background_colour_and_an_even_glide(tiny):
    """World clips through the bundled VAE alone: the facts a DiT could show at best. Background and colour
    survive, and straight movers still glide (jump ~0.13-0.2, where generated clips jump ~0.3)."""
    from lumina_research.eval.shapes import vae_ceiling
    from lumina_research.world import held_out_scenes

    single = [s for s in held_out_scenes(16, 1) if len(s.objects) == 1]
    ceiling = vae_ceiling(*tiny, single)
    assert len(single) >= 6 and ceiling["background"] == 1.0 and ceiling["color"] >= 0.8, ceiling
    assert ceiling["direction"] >= 0.7 and 0.1 < ceiling["jump"] < 0.25, ceiling


def test_data_vae_t2_keeps_the_shapes_of_fast_movers_that_the_shipped_vae_smears(capsys):
    """`python -m lumina_research.eval vae` on the first 8 single-object scenes of evaluation set 1 that move at least 0.3
    frame widths a second: the shipped VAE (4 frames a latent) keeps every shape at rest and loses most in motion;
    data/vae_t2 (2 frames a latent, what the GPU round's variant D trains on) keeps them in motion."""
    from lumina_research.eval.__main__ import main
    from lumina_research.eval.vae_ceiling import ceiling

    vae_t2 = TINY_DIR.parents[1] / "data" / "vae_t2"
    assert json.loads((vae_t2 / "config.json").read_text())["temporal_compression_ratio"] == 2
    assert main(["vae", "--vae", str(vae_t2), "--scenes", "8", "--min-speed", "0.3"]) == 0
    kept = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    smeared = ceiling(str(TINY_DIR / "vae"), 8, 1, min_speed=0.3)
    at_rest = ceiling(str(TINY_DIR / "vae"), 8, 1, min_speed=0.3, still=True)
    assert kept["scenes"] == smeared["scenes"] == at_rest["scenes"] == 8
    assert at_rest["shape"] == 1.0 and smeared["shape"] <= 0.5 and kept["shape"] >= 0.875, (at_rest, smeared, kept)
    assert kept["background"] == kept["color"] == kept["direction"] == 1.0, kept
