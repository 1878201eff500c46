"""The Next-DiT itself: masks, mixed lengths, dtypes, the 2B key table, save/load."""

import re

import pytest
import torch

from lumina import LuminaNextDiTVideo
from lumina.models.transformer_nextdit import CaptionCache
from tests.builders import random_transformer

REFERENCE_2B = """
pad_token (2304,)
all_x_embedder.2-1.weight (2304, 64)
all_x_embedder.2-2.weight (2304, 128)
all_x_embedder.4-2.weight (2304, 512)
all_final_layer.2-1.linear.weight (64, 2304)
all_final_layer.4-2.linear.weight (512, 2304)
all_final_layer.2-2.adaLN_modulation.1.weight (2304, 1024)
t_embedder.mlp.0.weight (1024, 256)
t_embedder.mlp.2.weight (1024, 1024)
motion_embedder.mlp.0.weight (1024, 256)
cap_embedder.0.weight (2304,)
cap_embedder.1.weight (1024, 2304)
layers.23.attention.wq.weight (2304, 2304)
layers.23.attention.wk.weight (1152, 2304)
layers.23.attention.wv.weight (1152, 2304)
layers.23.attention.wk_y.weight (1152, 2304)
layers.23.attention.wv_y.weight (1152, 2304)
layers.23.attention.wo.weight (2304, 2304)
layers.23.attention.gate (16,)
layers.23.attention.q_norm.weight (2304,)
layers.23.attention.q_norm.bias (2304,)
layers.23.attention.k_norm.weight (1152,)
layers.23.attention.ky_norm.weight (1152,)
layers.23.feed_forward.w1.weight (6144, 2304)
layers.23.feed_forward.w3.weight (6144, 2304)
layers.23.feed_forward.w2.weight (2304, 6144)
layers.23.attention_norm1.weight (2304,)
layers.23.ffn_norm2.weight (2304,)
layers.23.attention_y_norm.weight (2304,)
layers.23.adaLN_modulation.1.weight (9216, 1024)
layers.23.adaLN_modulation.1.bias (9216,)
"""


def test_release_2b_configuration_has_the_reference_key_table():
    with torch.device("meta"):
        model = LuminaNextDiTVideo()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for line in REFERENCE_2B.strip().splitlines():
        key, shape = line.split(" ", 1)
        assert shapes[key] == tuple(int(s) for s in re.findall(r"\d+", shape)), key
    assert not any(k.endswith(("wq.bias", "wk.bias", "wv.bias", "wo.bias")) for k in shapes)
    assert {k.split(".")[1] for k in shapes if k.startswith("layers.")} == {str(i) for i in range(24)}
    per_layer = 23  # 6 projections, gate, 3 LayerNorms (w, b), 3 FFN, 5 RMSNorms, adaLN (w, b)
    assert sum(1 for k in shapes if k.startswith("layers.0.")) == per_layer
    n_params = sum(v.numel() for v in model.state_dict().values())
    assert abs(n_params / 1e9 - 1.77) < 0.01, n_params


def inputs(b=2, f=2, h=8, w=8, length=6, cap_dim=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 16, f, h, w, generator=g)
    cap = torch.randn(b, length, cap_dim, generator=g)
    mask = torch.ones(b, length, dtype=torch.long)
    return x, torch.rand(b, generator=g), cap, mask, torch.tensor([6.0] * b)


@pytest.mark.parametrize("patch", ["1x2", "2x2", "2x4"])
def test_padded_caption_tokens_do_not_leak(patch):
    model = random_transformer()
    x, t, cap, mask, motion = inputs(b=1)
    with torch.no_grad():
        ref = model(x, t, cap, mask, motion, patch)
        padded_cap = torch.cat([cap, 100 * torch.randn(1, 10, 32)], dim=1)
        padded_mask = torch.cat([mask, torch.zeros(1, 10, dtype=torch.long)], dim=1)
        out = model(x, t, padded_cap, padded_mask, motion, patch)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_caption_cache_computes_caption_keys_once_per_caption_tensor():
    model = random_transformer()
    x, t, cap, mask, motion = inputs(b=2)
    other = torch.randn_like(cap)
    cache, calls = CaptionCache(), []
    original = model.layers[0].caption_kv
    model.layers[0].caption_kv = lambda y: calls.append(1) or original(y)
    with torch.no_grad():
        for step, patch in enumerate(["2x4", "2x2", "1x2"]):
            for c in (cap, other):
                torch.testing.assert_close(model(x, t * step, c, mask, motion, patch, cache),
                                           model(x, t * step, c, mask, motion, patch), rtol=0, atol=0)
        assert len(calls) == 2 + 6  # once per caption tensor with the cache, every call without
        cap.mul_(2.0)  # changed in place: the cached keys are stale and recomputed
        torch.testing.assert_close(model(x, t, cap, mask, motion, "1x2", cache), model(x, t, cap, mask, motion, "1x2"))
    with torch.enable_grad():
        model(x, t, cap, mask, motion, "1x2", cache).sum().backward()  # training ignores the cache
    assert model.layers[0].attention.wk_y.weight.grad is not None


def test_mixed_length_items_match_separate_runs():
    model = random_transformer()
    _, t, cap, mask, motion = inputs(b=2)
    a = torch.randn(16, 2, 8, 8)
    b = torch.randn(16, 4, 8, 12)
    with torch.no_grad():
        joint = model([a, b], t, cap, mask, motion, "2x2")
        alone_a = model(a[None], t[:1], cap[:1], mask[:1], motion[:1], "2x2")[0]
        alone_b = model(b[None], t[1:], cap[1:], mask[1:], motion[1:], "2x2")[0]
    assert joint[0].shape == a.shape and joint[1].shape == b.shape
    torch.testing.assert_close(joint[0], alone_a, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(joint[1], alone_b, rtol=1e-4, atol=1e-5)


def test_negative_motion_means_unconditional_and_motion_changes_output():
    model = random_transformer()
    x, t, cap, mask, _ = inputs(b=1)
    with torch.no_grad():
        a = model(x, t, cap, mask, torch.tensor([-1.0]), "1x2")
        b = model(x, t, cap, mask, torch.tensor([-5.0]), "1x2")
        c = model(x, t, cap, mask, torch.tensor([6.0]), "1x2")
    torch.testing.assert_close(a, b)
    assert (a - c).abs().max() > 1e-4


def test_single_frame_items_take_two_frame_patches():
    model = random_transformer()
    x, t, cap, mask, motion = inputs(b=1, f=1)
    with torch.no_grad():
        out = model(x, t, cap, mask, motion, "2x4")
    assert out.shape == x.shape and torch.isfinite(out).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_close_to_fp32(dtype):
    model = random_transformer()
    x, t, cap, mask, motion = inputs()
    with torch.no_grad():
        ref = model(x, t, cap, mask, motion, "2x2")
        out = model.to(dtype)(x.to(dtype), t, cap.to(dtype), mask, motion, "2x2")
    assert out.dtype == dtype
    assert ((out.float() - ref).abs().max() / ref.abs().max()).item() < 0.05


def test_head_sizes_the_3d_rope_cannot_split_are_refused():
    with pytest.raises(ValueError, match="multiple of 16"):
        LuminaNextDiTVideo(dim=32, n_layers=1, n_heads=4, n_kv_heads=2)  # head size 8: 2:3:3 split has odd parts
    model = LuminaNextDiTVideo(dim=64, n_layers=1, n_heads=4, n_kv_heads=2, cap_feat_dim=32, multiple_of=32)
    x, t, cap, mask, motion = inputs(b=1)
    assert model(x, t, cap, mask, motion, "1x2").shape == x.shape  # head size 16, the smallest that works


def test_unknown_patch_size_is_refused_with_the_allowed_ones():
    model = random_transformer()
    x, t, cap, mask, motion = inputs(b=1)
    with pytest.raises(ValueError, match=r"it supports \['1x2', '2x2', '2x4'\]"):
        model(x, t, cap, mask, motion, "4x4")
    with pytest.raises(ValueError, match="FxP"):
        model(x, t, cap, mask, motion, "big")


def test_save_pretrained_round_trip_is_exact(tmp_path):
    model = random_transformer(seed=3)
    model.save_pretrained(tmp_path)
    loaded = LuminaNextDiTVideo.from_pretrained(tmp_path)
    for (k, v), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    assert loaded.config.multiple_of == 32
    x, t, cap, mask, motion = inputs()
    with torch.no_grad():
        assert torch.equal(model(x, t, cap, mask, motion, "2x4"), loaded.eval()(x, t, cap, mask, motion, "2x4"))
