"""Memory modes on the CPU: what exists here runs, what cannot work is refused before any hook."""

import pytest
import torch

from lumina.errors import InvalidRequestError
from lumina.pipelines.memory import (FULL_PRECISION_MODULES, GIB, MemoryPlan, apply_memory_mode, check_plan,
                                     choose_plan, enable_group_offload, enable_model_offload, mode_tolerance,
                                     int8_layers, parse_memory_mode, quantization_devices, quantize_8bit,
                                     relative_difference)
from tests.builders import random_pipeline, random_transformer

FAST = dict(num_inference_steps=3, height=64, width=64, num_frames=8, output_type="latent")


def test_parse_modes():
    assert parse_memory_mode("auto") is None
    plan = parse_memory_mode("model-offload+8bit+vae-tiling")
    assert (plan.offload, plan.quantize_8bit, plan.vae_tiling, plan.vae_slicing) == ("model-offload", True, True, False)
    assert parse_memory_mode("8bit").offload == "none" and parse_memory_mode("group_offload").offload == "group-offload"
    for bad in ["fast", "model-offload+group-offload", "", "8bit+turbo"]:
        with pytest.raises(InvalidRequestError, match="offload tier"):
            parse_memory_mode(bad)


@pytest.mark.parametrize("mode", ["model-offload", "sequential-offload", "group-offload"])
def test_offload_tiers_are_refused_on_cpu(mode):
    with pytest.raises(InvalidRequestError, match="CUDA GPU"):
        check_plan(parse_memory_mode(mode), "cpu")


@pytest.mark.parametrize("mode", ["sequential-offload+8bit", "group-offload+8bit"])
def test_8bit_with_per_layer_offload_is_refused(mode):
    with pytest.raises(InvalidRequestError, match="cannot be moved to the CPU"):
        check_plan(parse_memory_mode(mode), "cuda")


def test_8bit_with_model_offload_is_resolved():
    plan = check_plan(parse_memory_mode("model-offload+8bit"), "cuda")
    assert plan.quantize_8bit and "kept on the GPU" in plan.reason


def test_auto_picks_the_lightest_mode_that_fits():
    assert choose_plan(None, 4 * GIB, 10 * GIB, GIB).offload == "none"
    assert choose_plan(80 * GIB, 4 * GIB, 10 * GIB, GIB).offload == "none"
    assert choose_plan(10 * GIB, 4 * GIB, 10 * GIB, GIB).offload == "model-offload"
    small = choose_plan(6 * GIB, 8 * GIB, 10 * GIB, GIB)
    assert small.offload == "model-offload" and small.quantize_8bit
    assert choose_plan(2 * GIB, 8 * GIB, 10 * GIB, GIB).offload == "group-offload"


def test_auto_on_cpu_runs_unchanged():
    pipe = random_pipeline()
    ref = pipe("a red circle", generator=torch.Generator().manual_seed(0), **FAST).frames
    plan = apply_memory_mode(pipe, "auto", "cpu")
    assert plan == MemoryPlan(reason=plan.reason) and plan.offload == "none"
    out = pipe("a red circle", generator=torch.Generator().manual_seed(0), **FAST).frames
    assert torch.equal(ref, out)


def _low_noise_pair():
    from lumina import LuminaVideoPipeline

    solo = random_pipeline()
    return LuminaVideoPipeline(transformer=solo.transformer, vae=solo.vae, text_encoder=solo.text_encoder,
                               tokenizer=solo.tokenizer, transformer_2=random_transformer(32, seed=3),
                               max_resolution=128, expert_from_t=0.5)


def test_8bit_weights_and_vae_tiling_on_cpu():
    import bitsandbytes as bnb

    pipe = random_pipeline()
    ref = pipe("a red circle", generator=torch.Generator().manual_seed(0), **FAST).frames
    plan = apply_memory_mode(pipe, "8bit+vae-tiling+vae-slicing", "cpu")
    assert plan.name == "none+8bit+vae-tiling+vae-slicing"
    block = pipe.transformer.layers[0]
    assert isinstance(block.feed_forward.w1, bnb.nn.Linear8bitLt) and block.feed_forward.w1.weight.dtype == torch.int8
    assert isinstance(pipe.text_encoder.encoder.layer[0].attention.self.query, bnb.nn.Linear8bitLt)
    for kept in (pipe.transformer.all_x_embedder["2-1"], block.adaLN_modulation[1], pipe.transformer.t_embedder.mlp[0]):
        assert type(kept) is torch.nn.Linear  # kept in full precision
    assert not block.feed_forward.w1.training  # swapped layers keep eval mode: bitsandbytes' int8 inference path
    assert pipe.vae.use_tiling and pipe.vae.use_slicing
    assert quantization_devices(pipe, "cpu") == []
    out = pipe("a red circle", generator=torch.Generator().manual_seed(0), **FAST).frames
    assert quantization_devices(pipe, "cpu") == []  # after the first forward the scales live in the layer state
    # measured 5.4%: three guided steps amplify one forward's 1.1% (test below); the 3% bound is for release sizes
    assert 0 < relative_difference(out, ref) < 0.08
    video = pipe("a red circle", num_inference_steps=3, height=64, width=64, num_frames=8).frames
    assert video.shape == (1, 8, 64, 64, 3)


def test_int8_layers_counts_only_int8_weights():
    """What the GPU suite holds an 8-bit mode to: bitsandbytes layers whose weight really is int8 (bitsandbytes
    builds and quantizes them on a CPU too)."""
    import bitsandbytes as bnb

    model = random_transformer()
    assert int8_layers(model) == 0 and int8_layers(None) == 0
    float_weights = bnb.nn.Linear8bitLt(32, 32, has_fp16_weights=True)  # an int8 layer class that saves nothing
    assert float_weights.weight.dtype == torch.float32 and int8_layers(float_weights) == 0
    swapped = quantize_8bit(model, FULL_PRECISION_MODULES)
    assert int8_layers(model) == swapped == 18


def test_8bit_forward_on_cpu_is_within_the_8bit_tolerance():
    """bitsandbytes 0.50's CPU int8 kernels against full precision, one transformer forward (measured 1.1%)."""
    model = random_transformer()
    g = torch.Generator().manual_seed(0)
    args = (torch.randn(1, 16, 2, 8, 8, generator=g), torch.tensor([0.5]), torch.randn(1, 6, 32, generator=g),
            torch.ones(1, 6, dtype=torch.long), torch.tensor([6.0]), "1x2")
    with torch.no_grad():
        ref = model(*args)
        assert quantize_8bit(model, FULL_PRECISION_MODULES) == 2 * 9  # 2 blocks x (6 attention + 3 FFN) projections
        out = model(*args)
    assert 0.002 < relative_difference(out, ref) < mode_tolerance(parse_memory_mode("8bit"))


def test_quantization_devices_names_scales_away_from_their_weight():
    pipe = random_pipeline()
    apply_memory_mode(pipe, "8bit", "cpu")
    assert quantization_devices(pipe) == [] and quantization_devices(pipe, "cpu") == []
    layer = pipe.transformer.layers[1].attention.wo
    layer.weight.SCB = layer.weight.SCB.to("meta")  # what nn.Module.to leaves behind, on a device the CPU has
    assert quantization_devices(pipe) == ["transformer.layers.1.attention.wo: weight.SCB on meta, weight on cpu"]
    wrong_device = quantization_devices(pipe, "cuda")
    n_8bit = sum(isinstance(m, type(layer)) for c in (pipe.transformer, pipe.text_encoder) for m in c.modules())
    assert len([p for p in wrong_device if "not on cuda" in p]) == n_8bit == 2 * 9 + (2 * 6 + 1)  # + BERT, its pooler


def test_8bit_components_stay_where_they_were_quantized():
    """pipe.to (also called by model offload) moves the rest and leaves 8-bit components in place: nn.Module.to
    would move their int8 weights without the row scales (to the meta device it cannot move them at all)."""
    pipe = random_pipeline()
    apply_memory_mode(pipe, "8bit", "cpu")
    pipe.to("meta")
    assert pipe.vae.device.type == "meta"
    assert pipe.transformer.device.type == "cpu" and pipe.text_encoder.device.type == "cpu"
    assert quantization_devices(pipe, "cpu") == []


def test_model_offload_keeps_8bit_components_on_the_device():
    """model-offload+8bit, run on the CPU as the onload device: only the VAE is offloaded; the 8-bit text encoder
    and transformers get no offload hook, so nothing moves their int8 weights."""
    duo = _low_noise_pair()
    ref = duo("a red circle", generator=torch.Generator().manual_seed(0), time_shift=1.0, **FAST).frames
    apply_memory_mode(duo, "8bit", "cpu")
    enable_model_offload(duo, "cpu")
    assert duo.model_cpu_offload_seq == "vae" and hasattr(duo.vae, "_hf_hook")
    for name in ("text_encoder", "transformer", "transformer_2"):
        assert not hasattr(getattr(duo, name), "_hf_hook"), name
    for _ in range(2):  # the second call runs after maybe_free_model_hooks has set offloading up again
        out = duo("a red circle", generator=torch.Generator().manual_seed(0), time_shift=1.0, **FAST).frames
        assert quantization_devices(duo, "cpu") == []
        assert 0 < relative_difference(out, ref) < 0.08


def test_group_offload_matches_none_with_a_low_noise_expert():
    """diffusers' block-level group offload with the CPU as the onload device: same hooks, same numbers."""
    pipe = _low_noise_pair()
    pipe.batched_guidance = False  # as every offload tier runs it
    ref = pipe("a red circle", generator=torch.Generator().manual_seed(0), time_shift=1.0, **FAST)
    enable_group_offload(pipe, "cpu")
    for net in pipe.denoisers.values():
        assert all(hasattr(block, "_diffusers_hook") for block in net.layers)
    out = pipe("a red circle", generator=torch.Generator().manual_seed(0), time_shift=1.0, **FAST)
    assert any(row["expert"] for row in out.schedule) and not all(row["expert"] for row in out.schedule)
    assert torch.equal(out.frames, ref.frames)


def test_group_offloaded_blocks_are_entered_only_through_their_forward():
    """A block's weights are on the compute device only inside its forward (its offload hook); every call into a
    block's submodules must come from there, the caption keys/values included, which stay cached for the run."""
    pipe = _low_noise_pair()
    enable_group_offload(pipe, "cpu")
    inside, bypass, caption_projections = set(), [], {}

    def enter(block, *_):
        inside.add(block)

    def leave(block, *_):
        inside.discard(block)

    def check(block, name):
        def hook(*_):
            if block not in inside:
                bypass.append(name)
        return hook

    def count(key):
        def hook(*_):
            caption_projections[key] = caption_projections.get(key, 0) + 1
        return hook

    for net_name, net in pipe.denoisers.items():
        for i, block in enumerate(net.layers):
            block.register_forward_pre_hook(enter)
            block.register_forward_hook(leave)
            for name, sub in block.named_modules():
                if sub is not block:
                    sub.register_forward_pre_hook(check(block, f"{net_name}.layers.{i}.{name}"))
            block.attention.wk_y.register_forward_pre_hook(count((net_name, i)))
    pipe.batched_guidance = False
    out = pipe("a red circle", generator=torch.Generator().manual_seed(0), time_shift=1.0,
               **{**FAST, "num_inference_steps": 6})
    assert bypass == []
    # once per caption tensor and run, not per forward: the transformer runs a guided step (prompt and negative) and
    # two unguided ones (the prompt again), the expert two unguided steps
    assert [(row["expert"], row["cfg"] > 1) for row in out.schedule] == [(False, True), (False, False), (False, False),
                                                                           (True, False), (True, False)]
    assert caption_projections == {("transformer", 0): 2, ("transformer", 1): 2, ("transformer_2", 0): 1,
                                   ("transformer_2", 1): 1}


def test_a_low_noise_expert_is_counted_and_quantized_with_the_transformer():
    import bitsandbytes as bnb

    from lumina import LuminaVideoPipeline
    from lumina.pipelines.memory import estimate_bytes

    solo = random_pipeline()
    duo = LuminaVideoPipeline(transformer=solo.transformer, vae=solo.vae, text_encoder=solo.text_encoder,
                              tokenizer=solo.tokenizer, transformer_2=random_transformer(32, seed=3),
                              max_resolution=128, expert_from_t=0.5)
    assert estimate_bytes(duo, 64)[0] == 2 * estimate_bytes(solo, 64)[0]
    assert estimate_bytes(duo, 64)[1:] == estimate_bytes(solo, 64)[1:]
    apply_memory_mode(duo, "8bit", "cpu")
    for net in (duo.transformer, duo.transformer_2):
        assert isinstance(net.layers[0].feed_forward.w1, bnb.nn.Linear8bitLt)
    out = duo("a red circle", generator=torch.Generator().manual_seed(0), time_shift=1.0, **FAST)
    assert torch.isfinite(out.frames).all() and any(row["expert"] for row in out.schedule)
