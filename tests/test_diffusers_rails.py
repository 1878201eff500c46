"""The Next-DiT and its pipeline on diffusers' rails, checked the way diffusers' own model and pipeline mixins check
theirs: return_dict, attention backends, gradient checkpointing, layerwise casting, whole-model compile, the
pipeline's properties and callbacks, encode_prompt's recipe, and the step caches (CacheMixin)."""

import copy

import pytest
import torch
from diffusers import FirstBlockCacheConfig
from diffusers.models.attention_dispatch import attention_backend
from diffusers.models.modeling_outputs import Transformer2DModelOutput

from lumina.errors import InvalidRequestError
from lumina.cache import FAST_CACHE, METHODS, StepCache, calibrate_mag_ratios
from tests.builders import random_pipeline, random_transformer

MULTISCALE = ("2x4", (0.3, "2x2"), (0.6, "1x2"))
FAST = dict(num_inference_steps=10, height=64, width=64, num_frames=8, output_type="latent", time_shift=1.0)


def _inputs(batch=2):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 16, 2, 8, 8, generator=g)
    cap = torch.randn(batch, 6, 32, generator=g)
    mask = torch.ones(batch, 6, dtype=torch.long)
    mask[-1, 3:] = 0
    return x, torch.linspace(0.2, 0.8, batch), cap, mask, torch.tensor([6.0, -1.0][:batch])


@pytest.fixture(scope="module")
def model():
    return random_transformer()


@pytest.fixture(scope="module")
def pipe():
    return random_pipeline()


def test_return_dict_gives_the_output_class_or_a_tuple(model):
    args = _inputs()
    with torch.no_grad():
        plain = model(*args, "2x2")
        as_tuple = model(*args, "2x2", return_dict=False)
        as_dict = model(*args, "2x2", return_dict=True)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 1
    assert isinstance(as_dict, Transformer2DModelOutput)
    torch.testing.assert_close(as_tuple[0], plain, rtol=0, atol=0)
    torch.testing.assert_close(as_dict.sample, plain, rtol=0, atol=0)


def test_attention_backend_reaches_every_processor_and_the_kernel(model):
    args = _inputs()
    with torch.no_grad():
        native = model(*args, "1x2")
        model.set_attention_backend("_native_math")
        try:
            assert {p._attention_backend.value for p in model.attn_processors.values()} == {"_native_math"}
            math_out = model(*args, "1x2")
        finally:
            model.set_attention_backend("native")
        with attention_backend("_native_math"):
            ctx_out = model(*args, "1x2")
    assert len(model.attn_processors) == model.config.n_layers
    torch.testing.assert_close(math_out, native, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ctx_out, native, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="must be one of"):
        model.set_attention_backend("no-such-kernel")


def test_unequal_videos_in_one_batch_attend_only_to_their_own_tokens(model):
    g = torch.Generator().manual_seed(1)
    small, large = torch.randn(16, 2, 8, 8, generator=g), torch.randn(16, 4, 8, 12, generator=g)
    cap, mask = torch.randn(2, 6, 32, generator=g), torch.ones(2, 6, dtype=torch.long)
    t, motion = torch.tensor([0.4, 0.4]), torch.tensor([5.0, 5.0])
    with torch.no_grad():
        together = model([small, large], t, cap, mask, motion, "1x2")
        alone = model([small], t[:1], cap[:1], mask[:1], motion[:1], "1x2")
    torch.testing.assert_close(together[0], alone[0], rtol=1e-5, atol=1e-5)


def test_gradient_checkpointing_gives_the_same_gradients():
    args = _inputs()
    grads = []
    for checkpointing in (False, True):
        net = random_transformer(seed=3).train()
        if checkpointing:
            net.enable_gradient_checkpointing()
        net(*args, "2x2", return_dict=False)[0].square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 20
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-5, atol=1e-6)


def test_layerwise_float8_storage_computes_in_the_compute_dtype():
    """The compute dtype is not read from a weight (float8 here): the result equals float32 weights rounded to
    float8, so only the storage changed."""
    net = random_transformer(seed=4)
    rounded = copy.deepcopy(net)
    net.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.float32)
    cast = [name for name, m in net.named_modules()
            if getattr(m, "_diffusers_hook", None) is not None and m._diffusers_hook.get_hook("layerwise_casting")]
    assert len(cast) > 10 and net.layers[0].attention.wq.weight.dtype == torch.float8_e4m3fn
    with torch.no_grad():
        for name in cast:
            module = rounded.get_submodule(name)
            for p in module.parameters(recurse=False):
                p.copy_(p.to(torch.float8_e4m3fn).float())
        args = _inputs()
        out, ref = net(*args, "1x2"), rounded(*args, "1x2")
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_whole_model_compiles_without_graph_breaks(model):
    args = _inputs()
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        out = compiled(*args, "2x2")
        ref = model(*args, "2x2")
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_pipeline_properties_and_callback_tensors(pipe):
    seen = []

    def callback(p, i, t, tensors):
        seen.append((i, p.num_timesteps, p.guidance_scale, p.do_classifier_free_guidance, sorted(tensors),
                     tensors["noise_pred"].shape == tensors["latents"].shape, p.interrupt))
        return {}

    inputs = list(pipe._callback_tensor_inputs)
    pipe("a red circle", guidance_scale=(4.0, (0.5, 0.0)), callback_on_step_end=callback,
         callback_on_step_end_tensor_inputs=inputs, **FAST)
    assert len(seen) == 9 and all(s[1] == 9 for s in seen)
    assert [s[2] for s in seen] == [4.0] * 5 + [0.0] * 4
    assert [s[3] for s in seen] == [True] * 5 + [False] * 4
    assert all(s[4] == sorted(inputs) and s[5] and s[6] is False for s in seen)


def test_a_callback_may_change_guidance_and_latents(pipe):
    """Setting `_guidance_scale` to 0 after step 3 (diffusers' CFG cut-off callbacks) equals planning it."""
    def cut(p, i, t, tensors):
        if i == 3:
            p._guidance_scale = 0.0
        return {}

    planned_t = None

    def find_t(p, i, t, tensors):
        nonlocal planned_t
        if i == 4:
            planned_t = t
        return {}

    base = dict(prompt="a red circle", **FAST)
    pipe(**base, generator=torch.Generator().manual_seed(1), callback_on_step_end=find_t)
    cut_run = pipe(**base, guidance_scale=4.0, generator=torch.Generator().manual_seed(1), callback_on_step_end=cut)
    planned = pipe(**base, guidance_scale=(4.0, (planned_t, 0.0)), generator=torch.Generator().manual_seed(1))
    assert [s["cfg"] for s in cut_run.schedule] == [4.0] * 4 + [0.0] * 5
    torch.testing.assert_close(cut_run.frames, planned.frames, rtol=1e-5, atol=1e-5)

    zeroed = pipe(**base, generator=torch.Generator().manual_seed(1),
                  callback_on_step_end=lambda p, i, t, k: {"latents": torch.zeros_like(k["latents"])} if i == 8 else {})
    assert float(zeroed.frames.abs().max()) == 0.0


def test_precomputed_embeddings_follow_diffusers_recipe(pipe):
    pe, pm, ne, nm = pipe.encode_prompt("a red circle", negative_prompt="blurry", num_videos_per_prompt=2)
    assert pe.shape[0] == pm.shape[0] == ne.shape[0] == nm.shape[0] == 2
    from_text = pipe("a red circle", negative_prompt="blurry", num_videos_per_prompt=2,
                     generator=torch.Generator().manual_seed(2), **FAST)
    from_embeds = pipe(prompt_embeds=pe, prompt_attention_mask=pm, negative_prompt_embeds=ne,
                       negative_prompt_attention_mask=nm, generator=torch.Generator().manual_seed(2), **FAST)
    torch.testing.assert_close(from_embeds.frames, from_text.frames, rtol=1e-6, atol=1e-6)
    none = pipe.encode_prompt("a red circle", do_classifier_free_guidance=False)
    assert none[2] is None and none[3] is None


def _computed_steps(pipe, **kwargs):
    """Indices of the steps whose last block's attention really ran (a cache did not answer them)."""
    ran = []
    hook = pipe.transformer.layers[-1].attention.wo.register_forward_pre_hook(
        lambda *_: ran.append(int(round((1000 - pipe.current_timestep) * 1e3))))
    try:
        out = pipe("a red circle", generator=torch.Generator().manual_seed(3), **kwargs)
    finally:
        hook.remove()
    index_of_t = {int(round(s["t"] * 1e6)): s["step"] for s in out.schedule}
    return out, sorted({index_of_t[t] for t in ran})


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("cache", ["fbc:0.9", "taylorseer:4", "pab:3", "faster:3"])
def test_step_caches_skip_work_but_never_across_a_patch_switch(pipe, cache, batched):
    pipe.batched_guidance = batched
    try:
        kwargs = dict(FAST, num_inference_steps=16, patch_schedule=MULTISCALE)
        if cache.startswith("faster"):
            with pytest.raises(InvalidRequestError, match="both guidance branches" if not batched else "every step"):
                pipe("a red circle", cache=cache, **kwargs)
            if not batched:
                return
            kwargs["guidance_scale"] = 4.0
        plain = pipe("a red circle", generator=torch.Generator().manual_seed(3), **kwargs)
        cached, computed = _computed_steps(pipe, cache=cache, **kwargs)
    finally:
        pipe.batched_guidance = True
    switches = [s["step"] for prev, s in zip(cached.schedule, cached.schedule[1:]) if s["patch"] != prev["patch"]]
    assert len(switches) == 2 and all(i in computed for i in [0] + switches)
    stats = cached.cache
    assert stats["cache"] == StepCache.parse(cache).label and stats["skipped"] > 0
    assert stats["forwards"] == stats["computed"] + stats["skipped"]
    assert not pipe.transformer.is_cache_enabled  # the call's cache is the call's
    assert plain.cache == {"cache": "none", "forwards": stats["forwards"], "computed": stats["forwards"], "skipped": 0}
    err = (cached.frames - plain.frames).abs().mean() / plain.frames.abs().mean()
    assert 0 < err < 0.5


def test_a_cache_enabled_by_the_user_runs_in_the_pipelines_contexts(pipe):
    kwargs = dict(FAST, num_inference_steps=16, patch_schedule=MULTISCALE)
    pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=0.9))
    try:
        first = pipe("a red circle", generator=torch.Generator().manual_seed(3), **kwargs)
        again = pipe("a red circle", generator=torch.Generator().manual_seed(3), **kwargs)
        with pytest.raises(InvalidRequestError, match="already enabled"):
            pipe("a red circle", cache="fbc", **kwargs)
    finally:
        pipe.transformer.disable_cache()
    assert first.cache["skipped"] > 0
    torch.testing.assert_close(again.frames, first.frames, rtol=0, atol=0)  # no state leaks from run to run


def test_mag_cache_needs_the_models_ratios_then_skips(pipe):
    with pytest.raises(InvalidRequestError, match="magnitude ratios"):
        pipe("a red circle", cache="mag", **FAST)
    ratios = calibrate_mag_ratios(pipe, **FAST)
    assert len(ratios) == 9 and ratios[0] == 1.0 and all(r > 0 for r in ratios)
    saved = pipe.config.defaults
    pipe.register_to_config(defaults={**(saved or {}), "mag_ratios": ratios})
    try:
        out = pipe("a red circle", cache="mag:0.5", **FAST)
    finally:
        pipe.register_to_config(defaults=saved)
    assert out.cache["skipped"] > 0


@pytest.mark.parametrize("text,error", [("fbc:lots", "not a number"), ("warp", "allowed: fbc"),
                                        ("fbc:2", r"in \(0.0, 1.0\]"), ("taylorseer:2.5", "whole number"),
                                        ("pab:inf", "whole number from 2 to 20"), ("pab:1", "from 2 to 20")])
def test_cache_text_is_parsed_once_with_clear_refusals(text, error):
    with pytest.raises(InvalidRequestError, match=error):
        StepCache.parse(text)
    assert StepCache.parse("fast") == FAST_CACHE and StepCache.parse("none") is None
    assert StepCache.parse("FBC:0.2") == StepCache("fbc", 0.2) and set(METHODS) >= {"fbc", "mag", "taylorseer"}


def test_cli_cache_is_recorded_in_the_sidecar_with_its_forward_counts(tmp_path):
    import json

    from lumina.cli import main
    from lumina.media import read_video

    out = tmp_path / "clip.mp4"
    rc = main(["generate", "--model", "tiny", "--prompt", "a red circle moving right on a navy background",
               "--resolution", "64x64", "--frames", "8", "--steps", "16", "--seed", "1", "--cache", "fbc:0.9",
               "--out", str(out)])
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert rc == 0 and read_video(out)[0].shape[0] == 8
    assert sidecar["request"]["cache"] == "fbc:0.9"
    counts = sidecar["cache"]
    assert counts["cache"] == "fbc:0.9" and counts["skipped"] > 0
    assert counts["forwards"] == counts["computed"] + counts["skipped"] >= 15
