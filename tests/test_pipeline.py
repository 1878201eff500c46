"""LuminaVideoPipeline end to end on small real components: encoding, validation, outputs, callbacks."""

import subprocess
import sys
import json

import numpy as np
import pytest
import torch

from lumina.errors import GenerationInterrupted, InvalidRequestError, NonFiniteLatentsError
from lumina.media import read_video
from lumina.pipelines.pipeline_lumina_video import MAX_PROMPT_TOKENS, SYSTEM_PROMPT
from lumina.sampling import initial_noise
from tests.builders import random_pipeline, random_transformer

FAST = dict(num_inference_steps=3, height=64, width=64, num_frames=8)


@pytest.fixture(scope="module")
def pipe():
    return random_pipeline()


def test_prompt_encoding_right_pads_to_multiple_of_8_and_flags_truncation(pipe):
    prompts = ["a red circle", "a much longer prompt about a blue square moving"]
    emb, mask, _, _ = pipe.encode_prompt(prompts, do_classifier_free_guidance=False)
    assert emb.shape[1] % 8 == 0 and emb.shape[2] == 32 and not pipe.prompt_truncated(prompts)
    assert mask[0].tolist() == sorted(mask[0].tolist(), reverse=True)  # ones then zeros: right padding
    ids = pipe.tokenizer(SYSTEM_PROMPT + "a red circle")["input_ids"]
    assert int(mask[0].sum()) == len(ids)
    long_emb, long_mask, _, _ = pipe.encode_prompt("word " * 400, do_classifier_free_guidance=False)
    assert pipe.prompt_truncated("word " * 400) and long_emb.shape[1] == MAX_PROMPT_TOKENS and int(long_mask.sum()) == MAX_PROMPT_TOKENS


def test_hidden_states_minus_two_are_the_features(pipe):
    emb, mask, _, _ = pipe.encode_prompt("a red circle")
    tok = pipe.tokenizer([SYSTEM_PROMPT + "a red circle"], return_tensors="pt", padding=True, pad_to_multiple_of=8)
    with torch.no_grad():
        hs = pipe.text_encoder(**tok, output_hidden_states=True).hidden_states
    torch.testing.assert_close(emb, hs[-2])
    assert not torch.allclose(emb, hs[-1])


@pytest.mark.parametrize("output_type,check", [
    ("np", lambda f: isinstance(f, np.ndarray) and f.shape == (1, 8, 64, 64, 3) and 0 <= f.min() and f.max() <= 1),
    ("pt", lambda f: isinstance(f, torch.Tensor) and tuple(f.shape) == (1, 8, 3, 64, 64)),
    ("pil", lambda f: len(f) == 1 and len(f[0]) == 8 and f[0][0].size == (64, 64)),
    ("latent", lambda f: tuple(f.shape) == (1, 16, 2, 8, 8)),
])
def test_output_types(pipe, output_type, check):
    out = pipe("a red circle", generator=torch.Generator().manual_seed(0), output_type=output_type, **FAST)
    assert check(out.frames)
    assert set(out.timings) == {"encode", "denoise", "decode", "total"}


@pytest.mark.parametrize("vae, factors, latent_shape", [
    (dict(vae_levels=3), (4, 4), (1, 16, 2, 16, 16)),    # 3 blocks: 4x spatial (more detail per latent cell)
    (dict(vae_temporal=2), (2, 8), (1, 16, 4, 8, 8)),    # 2x temporal (a fast object keeps its shape)
])
def test_a_tiny_vae_compressing_otherwise_sizes_latents_tokens_and_gpu_time(pipe, vae, factors, latent_shape):
    """A tiny VAE may compress less than the release's 4x time / 8x space: the pipeline sizes its latents, token
    counts and ZeroGPU estimate from its VAE, and the decoded video has the frames and size asked for."""
    from lumina.app import zerogpu
    from lumina.generation import GenerationRequest, resolve_request
    from lumina.pipelines.defaults import ModelDefaults

    other = random_pipeline(**vae)
    t, s = factors
    assert other.vae_compression == factors and pipe.vae_compression == (4, 8)
    assert other.latent_size(16, 64, 96) == (16 // t, 64 // s, 96 // s)
    latent = other("a red circle", generator=torch.Generator().manual_seed(0), output_type="latent", **FAST).frames
    assert tuple(latent.shape) == latent_shape
    video = other("a red circle", generator=torch.Generator().manual_seed(0), output_type="np", **FAST).frames
    assert video.shape == (1, 8, 64, 64, 3)
    tokens = [p.transformer.num_tokens(p.latent_size(8, 64, 64), "1x2") for p in (other, pipe)]
    assert tokens[0] == (4 // t) * (8 // s) ** 2 * tokens[1]
    defaults = ModelDefaults(width=64, height=64, frames=8, fps=8, preset="f24F96R960-MultiScale",
                             max_resolution=128, steps=4)
    req = resolve_request(GenerationRequest(prompt="a red circle", schedule="1x2"), defaults)
    seconds = [zerogpu.estimate_seconds(p.transformer.config, req, p.latent_size) for p in (other, pipe)]
    assert seconds[0] > seconds[1]


def test_batched_guidance_equals_two_passes(pipe):
    """Both CFG branches in one padded forward give the same video as two forwards (prompts of
    different lengths, so the padding and its mask are exercised)."""
    kw = dict(negative_prompt="a much longer negative prompt about blurry noisy frames", guidance_scale=4.0,
              motion_score=8.0, negative_motion_score=2.0, output_type="latent", **FAST)
    runs = {}
    for batched in (True, False):
        pipe.batched_guidance = batched
        runs[batched] = pipe("a red circle", generator=torch.Generator().manual_seed(3), **kw).frames
    pipe.batched_guidance = True
    torch.testing.assert_close(runs[True], runs[False], atol=1e-4, rtol=1e-4)
    unguided = pipe("a red circle", generator=torch.Generator().manual_seed(3), **{**kw, "guidance_scale": 0.0}).frames
    assert (runs[True] - unguided).abs().max() > 1e-2  # the negative branch really took part


def test_same_seed_same_video_and_initial_latents_respected(pipe):
    a = pipe("a red circle", generator=torch.Generator().manual_seed(1), output_type="latent", **FAST).frames
    b = pipe("a red circle", generator=torch.Generator().manual_seed(1), output_type="latent", **FAST).frames
    c = pipe("a red circle", generator=torch.Generator().manual_seed(2), output_type="latent", **FAST).frames
    assert torch.equal(a, b) and not torch.equal(a, c)
    noise = torch.randn(1, 16, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    d = pipe("a red circle", latents=noise, output_type="latent", num_inference_steps=3).frames
    torch.testing.assert_close(d, a)


def test_shared_noise_starts_every_latent_frame_from_a_common_part(pipe):
    shared = pipe("a red circle", generator=torch.Generator().manual_seed(1), output_type="latent", shared_noise=0.5,
                  **FAST).frames
    start = initial_noise((1, 16, 2, 8, 8), torch.Generator().manual_seed(1), 0.5)
    torch.testing.assert_close(shared, pipe("a red circle", latents=start, output_type="latent", **FAST).frames)
    plain = pipe("a red circle", generator=torch.Generator().manual_seed(1), output_type="latent", **FAST).frames
    assert (shared - plain).abs().max() > 0.1


def test_callback_sees_every_step_and_schedule_is_reported(pipe):
    seen = []

    def cb(p, i, t, kw):
        seen.append((i, round(t, 4), tuple(kw["latents"].shape)))
        return kw

    out = pipe("a red circle", callback_on_step_end=cb, patch_schedule=("2x4", (0.5, "1x2")), time_shift=1.0,
               output_type="latent", **FAST)
    assert [s[0] for s in seen] == [0, 1]
    assert [row["patch"] for row in out.schedule] == ["2x4", "1x2"]


def test_interrupt_stops_the_loop_and_pipeline_stays_usable(pipe):
    def stop_after_first(p, i, t, kw):
        p.request_interrupt()
        return kw

    with pytest.raises(GenerationInterrupted, match="after 1 of"):
        pipe("a red circle", callback_on_step_end=stop_after_first, output_type="latent", num_inference_steps=6,
             height=64, width=64, num_frames=8)
    out = pipe("a red circle", output_type="latent", **FAST)
    assert torch.isfinite(out.frames).all()


def test_nan_latents_are_detected_not_decoded(pipe):
    def poison(p, i, t, kw):
        return {"latents": kw["latents"] * float("nan")}

    with pytest.raises(NonFiniteLatentsError, match="no video was written"):
        pipe("a red circle", callback_on_step_end=poison, **FAST)


def test_a_low_noise_expert_takes_over_from_its_time_and_survives_save_and_load(pipe, tmp_path):
    """transformer_2 denoises exactly the steps at t >= expert_from_t; the steps before are the base model's
    alone (same latents as without the expert), and the pair round-trips through save_pretrained."""
    from lumina import LuminaVideoPipeline

    expert = random_transformer(32, seed=7)
    duo = LuminaVideoPipeline(transformer=pipe.transformer, vae=pipe.vae, text_encoder=pipe.text_encoder,
                              tokenizer=pipe.tokenizer, transformer_2=expert, max_resolution=128, expert_from_t=0.5)
    calls = {"base": [], "expert": []}
    hooks = [net.register_forward_hook(
        lambda m, args, kwargs, out, name=name: calls[name].append(float(kwargs["timestep"][0])), with_kwargs=True)
             for name, net in (("base", pipe.transformer), ("expert", expert))]
    kw = dict(num_inference_steps=6, time_shift=1.0, guidance_scale=4.0, height=64, width=64, num_frames=8)
    trail = {}
    record = lambda name: lambda p, i, t, k: trail.setdefault(name, []).append(k["latents"].clone())  # noqa: E731
    try:
        out = duo("a red circle", generator=torch.Generator().manual_seed(4), output_type="latent",
                  callback_on_step_end=record("duo"), **kw)
    finally:
        for h in hooks:
            h.remove()
    assert calls["base"] and all(t < 0.5 for t in calls["base"])
    assert calls["expert"] and all(t >= 0.5 for t in calls["expert"])
    assert [row["expert"] for row in out.schedule] == [row["t"] >= 0.5 for row in out.schedule]
    solo = pipe("a red circle", generator=torch.Generator().manual_seed(4), output_type="latent",
                callback_on_step_end=record("solo"), **kw)
    n_base = sum(not row["expert"] for row in out.schedule)
    for a, b in zip(trail["duo"][:n_base], trail["solo"][:n_base]):
        torch.testing.assert_close(a, b)
    assert (out.frames - solo.frames).abs().max() > 1e-3  # the expert really drew the rest

    duo.save_pretrained(str(tmp_path))
    loaded = LuminaVideoPipeline.from_pretrained(str(tmp_path))
    assert loaded.config.expert_from_t == 0.5 and loaded.transformer_2 is not None
    again = loaded("a red circle", generator=torch.Generator().manual_seed(4), output_type="latent", **kw)
    torch.testing.assert_close(again.frames, out.frames)


@pytest.mark.parametrize("kwargs", [dict(expert_from_t=0.3), dict(transformer_2="expert"),
                                    dict(transformer_2="expert", expert_from_t=1.0)])
def test_a_half_specified_or_out_of_range_expert_is_refused(pipe, kwargs):
    from lumina import LuminaVideoPipeline

    kwargs = {k: (random_transformer(32) if v == "expert" else v) for k, v in kwargs.items()}
    with pytest.raises(InvalidRequestError, match="0 < t < 1"):
        LuminaVideoPipeline(transformer=pipe.transformer, **kwargs)


@pytest.mark.parametrize("kwargs,message", [
    (dict(height=60, width=64, num_frames=8), "multiples of 32"),
    (dict(height=64, width=64, num_frames=12), "multiple of 8"),
    (dict(height=32, width=256, num_frames=8), "aspect ratio"),
    (dict(height=512, width=512, num_frames=8), "budget"),
    (dict(height=64, width=64, num_frames=8, output_type="gif"), "allowed: np, pt, pil, latent"),
    (dict(height=64, width=64, num_frames=8, patch_schedule=("2x4", (0.5, "3x3"))), "not one of"),
    (dict(height=64, width=64, num_frames=8, patch_schedule="2x4, 1x2@0.5"), "read at the edge"),
    (dict(height=64, width=64, num_frames=8, guidance_scale="20, 0@0.2"), r"cfg='20, 0@0.2': not a number"),
    (dict(height=64, width=64, num_frames=8, num_inference_steps=1), "steps=1: must be an integer in 2..200 "
                                                                      r"\(num_inference_steps.*grid points"),
    (dict(height=64, width=64, num_frames=8, num_videos_per_prompt=0), "num_videos_per_prompt=0"),
    (dict(height=64, width=64, num_frames=8, generator=[torch.Generator()] * 3), "3 generators for 1 videos"),
    (dict(height=64, width=64, num_frames=8, negative_prompt=["a", "b"]), "2 negative prompts for 1 prompts"),
])
def test_bad_requests_are_refused_with_the_rule(pipe, kwargs, message):
    with pytest.raises((InvalidRequestError, ValueError), match=message):
        pipe("a red circle", **{"num_inference_steps": 3, **kwargs})


def test_cli_generates_a_decodable_mp4_with_sidecar(random_pipeline_dir, tmp_path):
    out = tmp_path / "clip.mp4"
    proc = subprocess.run(
        [sys.executable, "-m", "lumina", "generate", "--model", str(random_pipeline_dir), "--prompt",
         "a red circle moving right", "--schedule", "multiscale", "--motion", "8", "--neg-motion", "2, 6@0.05",
         "--cfg", "4, 0@0.5", "--steps", "4", "--seed", "7", "--resolution", "64x32", "--frames", "16",
         "--shared-noise", "0.2", "--fps", "8", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    frames, fps = read_video(out)
    assert frames.shape == (16, 32, 64, 3) and fps == 8
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["request"]["seed"] == 7 and side["sample_config"]["motion"] == 8.0
    assert side["sample_config"]["P"] == ["2x4", [0.03, "2x2"], [0.125, "1x2"]]
    assert side["sample_config"]["sharedNoise"] == 0.2 and side["sample_config"]["cfg"] == [4.0, [0.5, 0.0]]
    assert len(side["schedule"]) == 3 and side["schedule"][0]["patch"] == "2x4"
    assert set(side["timings"]) >= {"encode", "denoise", "decode", "total"}
    assert [row["patch"] for row in side["schedule"]] == ["2x4", "2x4", "2x2"]  # t = 0, 0.02, 0.077 at ts 24
    assert side["tokens_per_step"]["2x4"] * 4 == side["tokens_per_step"]["2x2"]


def test_cli_refuses_bad_input_without_traceback(random_pipeline_dir, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "lumina", "generate", "--model", str(random_pipeline_dir), "--prompt", "x",
         "--resolution", "70x64", "--out", str(tmp_path / "x.mp4")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2 and "multiples of 32" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "lumina", "generate", "--model", str(random_pipeline_dir), "--prompt", "x",
         "--shared-noise", "1", "--out", str(tmp_path / "x.mp4")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2 and "shared noise=1.0: must be a number in 0..0.95" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "lumina", "presets"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "f24F96R960-MultiScale" in proc.stdout and "2x4, 2x2@0.03, 1x2@0.125" in proc.stdout
