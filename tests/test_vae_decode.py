"""The bounded CogVideoX decode (lumina.pipelines.vae_decode): diffusers' video, with memory that does not grow with
the latent frames the way diffusers' own decode does (huggingface/diffusers#10035, #10091)."""

import pytest
import torch
from diffusers import AutoencoderKLCogVideoX
from diffusers.models.autoencoders.autoencoder_kl_cogvideox import CogVideoXCausalConv3d

from lumina.pipelines.vae_decode import TensorBytes, decode_latents, measure_decode


def toy_vae(channels=(8, 16, 16, 32), tiling=False) -> AutoencoderKLCogVideoX:
    """The CogVideoX-2b layout (4 levels, 4x temporal, 8x spatial) with few channels; tiles of 32x48 pixels."""
    torch.manual_seed(0)
    vae = AutoencoderKLCogVideoX(block_out_channels=channels, norm_num_groups=8, layers_per_block=1,
                                 sample_height=64, sample_width=96).eval()
    (vae.enable_tiling if tiling else vae.disable_tiling)()
    return vae


@pytest.mark.parametrize("tiling", [False, True])
def test_bounded_decode_gives_diffusers_video(tiling):
    vae = toy_vae((8, 16, 16, 16), tiling)
    if tiling:  # overlaps whose stride is tile - blend, as CogVideoX-2b's defaults: diffusers' placement is exact
        vae.enable_tiling(tile_overlap_factor_height=1 / 4, tile_overlap_factor_width=1 / 3)
    vae.enable_slicing()
    modes = [m.pad_mode for m in vae.modules() if isinstance(m, CogVideoXCausalConv3d)]
    for batch, frames in ((2, 3), (1, 6)):  # an odd first chunk (two videos, sliced); three chunks carrying the cache
        z = torch.randn(batch, 16, frames, 5, 7, generator=torch.Generator().manual_seed(frames))
        with torch.no_grad():
            ref = vae.decode(z).sample
        out = decode_latents(vae, z)
        assert out.shape == ref.shape
        assert torch.equal(out, ref)  # the same operations in the same order: bit-identical
    assert [m.pad_mode for m in vae.modules() if isinstance(m, CogVideoXCausalConv3d)] == modes
    assert vae.num_latent_frames_batch_size == 2


def test_tiles_are_placed_at_their_own_start():
    """Tiles of 4x6 latent cells at diffusers' overlap factors (1/6, 1/5) start every 3x4 cells (24x32 pixels) while
    diffusers places them every tile - blend pixels (27x39): its video is misaligned and 24x63 for a 24x56 one.
    Ours puts each tile at its start: where one tile alone covers the video, the video is that tile's decode."""
    vae = toy_vae((8, 16, 16, 16), tiling=True)
    z = torch.randn(1, 16, 2, 3, 7, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = vae.decode(z).sample
    out = decode_latents(vae, z)
    assert ref.shape[-2:] == (24, 63) and out.shape[-2:] == (24, 56)
    left, right = decode_latents(vae, z[..., 0:6]), decode_latents(vae, z[..., 4:7])  # each one tile: untiled
    assert torch.equal(out[..., :32], left[..., :32])  # before the overlap (pixels 32-47)
    assert torch.equal(out[..., 48:], right[..., 16:])  # after it


def release_tiled_vae() -> AutoencoderKLCogVideoX:
    """CogVideoX-2b's tiling as released (480x720 samples: 30x45-latent tiles every 25x36 cells, 40- and 72-pixel
    blends), few channels."""
    torch.manual_seed(0)
    vae = AutoencoderKLCogVideoX(block_out_channels=(8,) * 4, norm_num_groups=4, layers_per_block=1).eval()
    vae.enable_tiling()
    assert (vae.tile_latent_min_height, vae.tile_latent_min_width) == (30, 45)
    return vae


@pytest.mark.parametrize("height, width, tiles", [(48, 80, 2 * 3), (26, 73, 2 * 3)])
def test_thin_last_tiles_as_diffusers(height, width, tiles):
    """diffusers starts a tile every stride cells up to the end, so a width mod 36 of 1-9 (a height mod 25 of 1-5)
    adds a thin last tile blended over its neighbour's edge: 384x640 (80 = 2 * 36 + 8 columns) and 208x584 (thin
    in both directions, each thin tile inside its neighbour). Skipping them differed by up to 1.6 here."""
    vae = release_tiled_vae()
    z = torch.randn(1, 16, 1, height, width, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = vae.decode(z).sample
    calls = []
    hook = vae.decoder.register_forward_hook(lambda *_: calls.append(1))
    out = decode_latents(vae, z)
    hook.remove()
    assert len(calls) == tiles
    assert out.shape == ref.shape == (1, 3, 1, 8 * height, 8 * width)
    assert torch.equal(out, ref)


def test_one_chunk_override_is_one_decoder_call():
    vae = toy_vae((8, 16, 16, 16))
    z = torch.randn(1, 16, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    vae.num_latent_frames_batch_size = 4
    with torch.no_grad():
        ref = vae.decode(z).sample
    vae.num_latent_frames_batch_size = 2
    assert torch.equal(decode_latents(vae, z, chunk=4), ref)
    assert not torch.equal(decode_latents(vae, z), ref)  # 2-frame chunks: another (causal) computation
    assert vae.num_latent_frames_batch_size == 2


def test_tensor_bytes_counts_live_storage():
    with TensorBytes() as tracker:
        a = torch.zeros(1000)  # 4,000 bytes
        b = torch.zeros(500)  # + 2,000
        del a
        c = b[:100] + 1  # a view of b adds nothing; c adds 400
    assert tracker.peak == 6000 and tracker.live == 2400
    del b, c


def working_bytes(vae, frames, bounded):
    """Peak tensor bytes of a decode of 8x12 latent cells, less its output (which has to grow with the frames)."""
    peak, _ = measure_decode(vae, (1, 16, frames, 8, 12), "cpu", torch.float32, bounded=bounded)
    return peak - 3 * (4 * frames) * 64 * 96 * 4


def test_decode_memory_is_flat_in_latent_frames():
    vae = toy_vae()
    ours = [working_bytes(vae, f, True) for f in (2, 8)]
    theirs = [working_bytes(vae, f, False) for f in (2, 8)]
    # measured: ours 22.7 -> 25.1 MB (the second chunk adds the carried causal context, later chunks nothing);
    # diffusers 53.9 -> 96.3 MB (both chunks' caches alive, and 1x1x1 convs caching their whole input)
    assert ours[1] <= 1.15 * ours[0], ours
    assert theirs[1] >= 1.5 * theirs[0], theirs
    assert ours[1] < 0.4 * theirs[1]


def test_half_precision_decode_keeps_cudnn():
    """cuDNN 9.8-9.14 under PyTorch >= 2.9: half-precision conv3d leaves cuDNN for a fallback that filled an H200,
    so the decode runs in float32 there; elsewhere (and on the CPU) it runs in the VAE's own dtype."""
    from lumina.pipelines.vae_decode import half_conv3d_falls_back

    assert [half_conv3d_falls_back(v) for v in (None, 90700, 90800, 91300, 91499, 91500, 92100)] == \
        [False, False, True, True, True, False, False]
    vae = toy_vae((8, 16, 16, 16)).to(torch.bfloat16)
    out = decode_latents(vae, torch.randn(1, 16, 2, 4, 4, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16 and vae.dtype == torch.bfloat16
