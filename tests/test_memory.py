"""Memory modes on the CPU: what exists here runs, what cannot work is refused before any hook."""

import pytest
import torch

from lumina.errors import InvalidRequestError
from lumina.pipelines.memory import GIB, MemoryPlan, apply_memory_mode, check_plan, choose_plan, parse_memory_mode
from tests.builders import random_pipeline

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


def test_8bit_weights_and_vae_tiling_on_cpu():
    import bitsandbytes as bnb

    pipe = random_pipeline()
    ref = pipe("a red circle", generator=torch.Generator().manual_seed(0), **FAST).frames
    plan = apply_memory_mode(pipe, "8bit+vae-tiling+vae-slicing", "cpu")
    assert plan.name == "none+8bit+vae-tiling+vae-slicing"
    assert isinstance(pipe.transformer.layers[0].feed_forward.w1, bnb.nn.Linear8bitLt)
    assert isinstance(pipe.transformer.all_x_embedder["2-1"], torch.nn.Linear)  # kept in full precision
    assert pipe.transformer.layers[0].feed_forward.w1.weight.dtype == torch.int8
    assert pipe.vae.use_tiling and pipe.vae.use_slicing
    out = pipe("a red circle", generator=torch.Generator().manual_seed(0), **FAST).frames
    err = ((out - ref).abs().max() / ref.abs().max()).item()
    assert 0 < err < 0.05, err
    video = pipe("a red circle", num_inference_steps=3, height=64, width=64, num_frames=8).frames
    assert video.shape == (1, 8, 64, 64, 3)


def test_a_low_noise_expert_is_counted_and_quantized_with_the_transformer():
    import bitsandbytes as bnb

    from lumina import LuminaVideoPipeline
    from lumina.pipelines.memory import estimate_bytes
    from tests.builders import random_transformer

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
