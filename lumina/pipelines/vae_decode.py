"""A CogVideoX decode whose memory does not depend on the number of latent frames.

diffusers' `AutoencoderKLCogVideoX.decode` (0.31 and later; huggingface/diffusers#10035, #10091) needs more memory
than one temporal chunk of one tile, for three reasons measured in docs/benchmarks.md ("Full-size decode: memory"):

* every 1x1x1 causal conv (the spatial norms' `conv_y` / `conv_b`, 74 in CogVideoX-2b's decoder) stores a copy of its
  whole input as its "cache" (`inputs[:, :, -k + 1:]` is every frame when k = 1), which no later chunk reads;
* the caller holds the previous chunk's cache dict for the whole of the next decoder call, so two chunks' caches
  are alive at once (the jump from one chunk to two);
* the tiled path keeps every tile's full-length output until it blends them at the end.

`decode_latents` below calls diffusers' own decoder, tile and chunk for tile and chunk as diffusers does (same
frame split, same tile grid, same blending), so the video is the same; it only changes what is kept alive.
"""

from __future__ import annotations

import time
import weakref
from contextlib import contextmanager
from typing import Optional, Tuple

import torch
from diffusers.models.autoencoders.autoencoder_kl_cogvideox import CogVideoXCausalConv3d
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class _HandedOver(dict):
    """A conv-cache dict whose `get` pops: each layer's cache from the previous chunk is freed as soon as that
    layer has read it, instead of when the whole decoder call returns."""

    def get(self, key, default=None):
        return self.pop(key, default)


def _handed_over(cache):
    if isinstance(cache, dict):
        return _HandedOver({k: _handed_over(v) for k, v in cache.items() if v is not None})
    return cache


@contextmanager
def _pointwise_convs_uncached(decoder: torch.nn.Module):
    """Stop 1x1x1 causal convs from caching: they pad nothing in time, so `pad_mode="replicate"` (a zero-width
    pad, the same output) makes diffusers return None instead of a copy of their whole input."""
    convs = [m for m in decoder.modules() if isinstance(m, CogVideoXCausalConv3d) and m.time_kernel_size == 1]
    modes = [m.pad_mode for m in convs]
    for m in convs:
        m.pad_mode = "replicate"
    try:
        yield
    finally:
        for m, mode in zip(convs, modes):
            m.pad_mode = mode


def _decode_frames(vae, z: torch.Tensor) -> torch.Tensor:
    """All frames of one latent tile, in diffusers' temporal chunks (the first takes the remainder), the causal
    conv cache carried from chunk to chunk."""
    frames, chunk = z.shape[2], vae.num_latent_frames_batch_size
    cache, out = None, []
    for k in range(max(frames // chunk, 1)):
        rest = frames % chunk
        part = z[:, :, chunk * k + (0 if k == 0 else rest): chunk * (k + 1) + rest]
        if vae.post_quant_conv is not None:
            part = vae.post_quant_conv(part)
        decoded, cache = vae.decoder(part, conv_cache=cache)
        cache = _handed_over(cache)  # the only reference left: the decoder's plain dicts go
        out.append(decoded)
    return torch.cat(out, dim=2)


def _decode_tiled(vae, z: torch.Tensor) -> torch.Tensor:
    """diffusers' `tiled_decode` tiles and linear blending, each tile written into the output as soon as it is
    blended; only the edges the next tiles blend with (the bottom rows of the row above, the right columns of the
    left tile) are kept, instead of every tile's output.

    The grid is diffusers': a tile every stride cells while the start is inside the latent, so a last tile may be
    thin (from 1 cell) and lie inside its neighbour, which it still blends with (384x640 has one: 80 = 2 * 36 + 8).
    Each tile is placed at its own start and blended over its real overlap with its neighbours. diffusers places
    them at multiples of `tile - blend` pixels, which is the tile stride only for some tile sizes (CogVideoX-2b's
    defaults: 200 and 288 pixels, where this gives diffusers' video); for others (the tiny model's VAE) its
    video came out misaligned and larger than asked (70 pixel rows for 64)."""
    height, width = z.shape[3:]
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    tile_h, tile_w = vae.tile_latent_min_height, vae.tile_latent_min_width
    stride_h = int(tile_h * (1 - vae.tile_overlap_factor_height))
    stride_w = int(tile_w * (1 - vae.tile_overlap_factor_width))
    rows, cols = list(range(0, height, stride_h)), list(range(0, width, stride_w))  # diffusers' grid
    blend_h, blend_w = (tile_h - stride_h) * scale, (tile_w - stride_w) * scale
    out_h = [(b - a) * scale for a, b in zip(rows, rows[1:] + [height])]
    out_w = [(b - a) * scale for a, b in zip(cols, cols[1:] + [width])]
    video, above = None, [None] * len(cols)
    for r, i in enumerate(rows):
        left = None
        for c, j in enumerate(cols):
            tile = _decode_frames(vae, z[:, :, :, i: i + tile_h, j: j + tile_w])
            if r > 0:
                tile = vae.blend_v(above[c], tile, blend_h)
            if c > 0:
                tile = vae.blend_h(left, tile, blend_w)
            if video is None:
                video = tile.new_empty(*tile.shape[:3], sum(out_h), sum(out_w))
            y, x = sum(out_h[:r]), sum(out_w[:c])
            video[:, :, :, y: y + out_h[r], x: x + out_w[c]] = tile[:, :, :, : out_h[r], : out_w[c]]
            above[c] = tile[:, :, :, tile.shape[3] - min(blend_h, tile.shape[3]):].clone()
            left = tile[:, :, :, :, tile.shape[4] - min(blend_w, tile.shape[4]):].clone()
    return video


def half_conv3d_falls_back(cudnn_version: Optional[int]) -> bool:
    """Whether PyTorch runs half-precision 3D convolutions without cuDNN under this cuDNN: from 2.9 it turns cuDNN
    off for them on cuDNN 9.8 to 9.14 (wrong results, pytorch/pytorch#163539), and the fallback takes ~17x the
    memory (pytorch/pytorch#166643), enough to fill an H200 with one release-size decode."""
    return cudnn_version is not None and 90800 <= cudnn_version < 91500


@contextmanager
def _cudnn_precision(vae, z: torch.Tensor):
    """Yield the latent in the dtype the decode runs in: float32 (the VAE with it, for the call) where a half-
    precision decode would lose cuDNN, else as given. Float32 costs twice the tile memory, not seventeen times."""
    half = z.is_cuda and vae.dtype in (torch.float16, torch.bfloat16)
    if not (half and half_conv3d_falls_back(torch.backends.cudnn.version())):
        yield z
        return
    dtype = vae.dtype
    vae.to(torch.float32)
    try:
        yield z.float()
    finally:
        vae.to(dtype)


@torch.no_grad()
def decode_latents(vae, z: torch.Tensor, chunk: Optional[int] = None) -> torch.Tensor:
    """Decode unscaled latents (B, C, F, H, W) to video like `vae.decode(z).sample`, with the VAE's tiling and
    slicing settings, in memory bounded by one temporal chunk of one tile plus the output.

    `chunk` overrides `vae.num_latent_frames_batch_size` (latent frames a decoder call) for this call.
    """
    hook = getattr(vae, "_hf_hook", None)
    if hook is not None and hasattr(hook, "pre_forward"):
        hook.pre_forward(vae)  # model CPU offload: onload the VAE, as diffusers' `decode` does
    saved = vae.num_latent_frames_batch_size
    vae.num_latent_frames_batch_size = chunk or saved
    try:
        with _pointwise_convs_uncached(vae.decoder), _cudnn_precision(vae, z) as z:
            samples = z.split(1) if vae.use_slicing and z.shape[0] > 1 else [z]
            height, width = z.shape[3:]
            tiled = vae.use_tiling and (width > vae.tile_latent_min_width or height > vae.tile_latent_min_height)
            decode = _decode_tiled if tiled else _decode_frames
            videos = [decode(vae, s) for s in samples]
    finally:
        vae.num_latent_frames_batch_size = saved
    return videos[0] if len(videos) == 1 else torch.cat(videos)


class TensorBytes(TorchDispatchMode):
    """Peak bytes of tensor storage created inside the block and alive at once: the CPU's stand-in for
    `torch.cuda.max_memory_allocated`, exact and independent of the allocator (glibc keeps freed blocks, so the
    RSS follows the allocation history as much as the live tensors)."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._seen = set()

    def _free(self, key, nbytes):
        self._seen.discard(key)
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                storage = t.untyped_storage()
                key = id(storage)
                if key not in self._seen:
                    self._seen.add(key)
                    self.live += storage.nbytes()
                    weakref.finalize(storage, self._free, key, storage.nbytes())
        self.peak = max(self.peak, self.live)
        return out


def measure_decode(vae, latent_shape: Tuple[int, ...], device="cuda", dtype: torch.dtype = torch.bfloat16,
                   bounded: bool = True, seed: int = 0) -> Tuple[int, float]:
    """(peak bytes, seconds) of decoding a random latent of `latent_shape` with `vae` (moved to device/dtype; its
    tiling and slicing settings apply); `bounded=False` measures diffusers' own `vae.decode` instead.

    The peak is what the decode adds to the memory allocated before it (weights and latent excluded): on CUDA
    `max_memory_allocated` minus the allocation before (the absolute peak stays readable from
    `torch.cuda.max_memory_allocated()` afterwards); on the CPU the `TensorBytes` peak.
    """
    device = torch.device(device)
    vae = vae.to(device).eval()
    if vae.dtype != dtype:
        vae = vae.to(dtype)
    z = torch.randn(latent_shape, generator=torch.Generator().manual_seed(seed)).to(device=device, dtype=dtype)
    decode = (lambda: decode_latents(vae, z)) if bounded else (lambda: vae.decode(z).sample)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        start = time.perf_counter()
        with torch.no_grad():
            decode()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before, time.perf_counter() - start
    tracker = TensorBytes()
    start = time.perf_counter()
    with torch.no_grad(), tracker:
        decode()
    return tracker.peak, time.perf_counter() - start
