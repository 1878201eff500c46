"""Multi-scale Next-DiT: the Lumina-Video transformer (reference §2), one class for every size.

Module names mirror the release's checkpoint keys so that its state dict loads without renaming.
The same class serves the 1.77 B "2B GQA" release, the golden test model and the tiny bundled model.
"""

from __future__ import annotations

import functools
import math
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.hooks._helpers import TransformerBlockMetadata, TransformerBlockRegistry
from diffusers.loaders import PeftAdapterMixin
from diffusers.models.attention import AttentionMixin, AttentionModuleMixin
from diffusers.models._modeling_parallel import ContextParallelInput, ContextParallelOutput
from diffusers.models.attention_dispatch import (AttentionBackendName, _AttentionBackendRegistry,
                                                 _templated_context_parallel_attention, dispatch_attention_fn)
from diffusers.models.cache_utils import CacheMixin
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.modeling_utils import ModelMixin

from lumina.errors import InvalidRequestError
from lumina.patch import PatchSize, parse_patch_size


def ffn_hidden_dim(dim: int, multiple_of: int) -> int:
    """SwiGLU width of the release: 2/3 of 4*dim, rounded up to `multiple_of`."""
    hidden = int(2 * 4 * dim / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


class RMSNorm(nn.Module):
    """RMSNorm computed in fp32 so bf16/fp16 runs keep the reference's statistics."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        out = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return out.type_as(x) * self.weight


class ScalarEmbedder(nn.Module):
    """Sinusoid (cos first, then sin) of a scaled scalar followed by Linear-SiLU-Linear.

    Used for both the diffusion time and the motion score, which share the release's shape.
    """

    def __init__(self, hidden: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def sinusoid(self, value: torch.Tensor) -> torch.Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=value.device) / half)
        args = value.float()[:, None] * freqs[None]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)

    def forward(self, value: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """`dtype`: the model's compute dtype (the weights' storage dtype may differ, e.g. layerwise float8 casting)."""
        return self.mlp(self.sinusoid(value).to(dtype))


def check_heads(dim: int, n_heads: int, n_kv_heads: int) -> None:
    """Refuse head layouts the attention cannot use (before any weights are made)."""
    if dim % n_heads or n_heads % n_kv_heads or (dim // n_heads) % 16:
        raise ValueError(
            f"dim={dim}, n_heads={n_heads}, n_kv_heads={n_kv_heads}: dim must split into heads whose size "
            "is a multiple of 16 (3D RoPE splits it 2:3:3 into channel pairs), and n_heads must be a multiple "
            "of n_kv_heads"
        )


def rope_from_positions(positions: torch.Tensor, head_dim: int, theta: float) -> torch.Tensor:
    """Complex rotations (L, head_dim/2) for per-token (frame, row, col) positions, in fp32.

    head_dim is split 2:3:3 between the three axes; each axis rotates its channel pairs by
    pos * theta^(-2k/part). Positions may be fractional: V2A scales time so that the same instant gets
    the same angle in the audio and the video streams.
    """
    unit = head_dim // 8
    parts = (unit * 2, unit * 3, unit * 3)
    pos = positions.to(torch.float64)
    angles = []
    for axis, part in enumerate(parts):
        inv = 1.0 / theta ** (torch.arange(0, part, 2, dtype=torch.float64, device=pos.device)[: part // 2] / part)
        angles.append(torch.outer(pos[:, axis], inv))
    angle = torch.cat(angles, dim=-1)
    return torch.polar(torch.ones_like(angle), angle).to(torch.complex64)


@functools.lru_cache(maxsize=32)
def rope_frequencies(grid: Tuple[int, int, int], head_dim: int, theta: float, device: torch.device) -> torch.Tensor:
    """Rotations for a (frames, rows, cols) patch grid, tokens ordered frame, row, column.

    Cached: a sampling run asks for the same few grids at every step.
    """
    axes = [torch.arange(n, device=device) for n in grid]
    positions = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)
    return rope_from_positions(positions, head_dim, theta)


def apply_rope(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive channel pairs of x (B, L, H, D) by freqs (B, L, D/2), in fp32."""
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    out = torch.view_as_real(xc * freqs[:, :, None, :]).flatten(-2)
    return out.type_as(x)


# Backends that take no mask, and the varlen sibling that reads one (caption masks, batches of unequal videos).
VARLEN_BACKEND = {
    AttentionBackendName.FLASH: AttentionBackendName.FLASH_VARLEN,
    AttentionBackendName.FLASH_HUB: AttentionBackendName.FLASH_VARLEN_HUB,
    AttentionBackendName._FLASH_3: AttentionBackendName._FLASH_VARLEN_3,
    AttentionBackendName._FLASH_3_HUB: AttentionBackendName._FLASH_3_VARLEN_HUB,
    AttentionBackendName.SAGE: AttentionBackendName.SAGE_VARLEN,
}


def attention_with_lse(ctx, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                       enable_gqa=False, return_lse=False, _save_ctx=True, _parallel_config=None):
    """One ring step's attention and its log-sum-exp, in diffusers' forward-op form and (B, S, H, D) layout.

    diffusers' ring attention merges the steps by their log-sum-exp, which its native (SDPA) backend does not return
    and which none of its kernels gives on a CPU or in fp32; torch's own CPU flash kernel and CUDA memory-efficient
    kernel do, in every dtype. Inference only (no backward)."""
    q, k, v = (x.transpose(1, 2) for x in (query, key, value))
    if q.device.type == "cpu":
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, dropout_p, is_causal,
                                                                              scale=scale)
    else:
        out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, True, dropout_p, is_causal,
                                                                          scale=scale)[:2]
        lse = lse[..., : q.shape[2]]  # the kernel pads the log-sum-exp's query axis to a multiple of 32
    out, lse = out.transpose(1, 2), lse.transpose(1, 2)
    return (out, lse) if return_lse else out


class LuminaVideoAttnProcessor:
    """Self-attention over the video tokens plus the gated caption cross-attention, both through diffusers'
    `dispatch_attention_fn`, so `set_attention_backend` picks the kernel and `enable_parallelism` splits the video
    tokens (the caption keys are whole on every rank, so cross-attention stays local)."""

    _attention_backend = None
    _parallel_config = None

    def _attend(self, attn, q, k, v, mask, parallel_config):
        """q (B, Lq, H, D), k/v (B, Lk, Hkv, D), mask (B, Lk) bool or None -> (B, Lq, H, D)."""
        backend = self._attention_backend
        if mask is not None:
            backend = VARLEN_BACKEND.get(backend, backend)
            mask = mask[:, None, None, :]  # every backend reads (B, 1, 1, Lk); not all broadcast a (B, Lk) mask
        gqa = attn.n_heads != attn.n_kv_heads
        name = backend or _AttentionBackendRegistry._active_backend
        no_gqa = "enable_gqa" not in _AttentionBackendRegistry._supported_arg_names[AttentionBackendName(name)]
        if gqa and (no_gqa or parallel_config is not None):  # diffusers' Ulysses/ring attention have no GQA either
            repeat = attn.n_heads // attn.n_kv_heads  # share the heads by copying them
            k, v = k.repeat_interleave(repeat, dim=2), v.repeat_interleave(repeat, dim=2)
            gqa = False
        if (parallel_config is not None and parallel_config.context_parallel_config.ring_degree > 1
                and AttentionBackendName(name) == AttentionBackendName.NATIVE):
            return _templated_context_parallel_attention(q, k, v, scale=attn.head_dim**-0.5,
                                                         forward_op=attention_with_lse, backward_op=None,
                                                         _parallel_config=parallel_config)
        return dispatch_attention_fn(q, k, v, attn_mask=mask, scale=attn.head_dim**-0.5, enable_gqa=gqa,
                                     backend=backend, parallel_config=parallel_config)

    def __call__(self, attn: "Attention", hidden_states, attention_mask=None, image_rotary_emb=None,
                 caption_kv=None, caption_mask=None):
        b, L, _ = hidden_states.shape
        q = attn.q_norm(attn.wq(hidden_states)).view(b, L, attn.n_heads, attn.head_dim)
        k = attn.k_norm(attn.wk(hidden_states)).view(b, L, attn.n_kv_heads, attn.head_dim)
        v = attn.wv(hidden_states).view(b, L, attn.n_kv_heads, attn.head_dim)
        q, k = apply_rope(q, image_rotary_emb), apply_rope(k, image_rotary_emb)
        out = self._attend(attn, q, k, v, attention_mask, self._parallel_config)
        out_y = self._attend(attn, q, *caption_kv, caption_mask, None)
        out = out.type_as(q) + out_y.type_as(q) * attn.gate.tanh().view(1, 1, -1, 1).to(q.dtype)
        return attn.wo(out.flatten(-2))


class Attention(nn.Module, AttentionModuleMixin):
    """Self-attention with QK-norm, 3D RoPE and GQA, plus a gated caption cross-attention branch.

    The weights live here (names as in the release's checkpoint); the computation is the processor's."""

    _default_processor_cls = LuminaVideoAttnProcessor
    _available_processors = [LuminaVideoAttnProcessor]
    _supports_qkv_fusion = False

    def __init__(self, dim: int, n_heads: int, n_kv_heads: int, cap_dim: int, qk_norm: bool, processor=None):
        super().__init__()
        self.n_heads, self.n_kv_heads = n_heads, n_kv_heads
        self.head_dim = dim // n_heads
        kv_dim = n_kv_heads * self.head_dim
        self.wq = nn.Linear(dim, n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(dim, kv_dim, bias=False)
        self.wv = nn.Linear(dim, kv_dim, bias=False)
        self.wk_y = nn.Linear(cap_dim, kv_dim, bias=False)
        self.wv_y = nn.Linear(cap_dim, kv_dim, bias=False)
        self.gate = nn.Parameter(torch.zeros(n_heads))
        self.wo = nn.Linear(n_heads * self.head_dim, dim, bias=False)
        norm = (lambda d: nn.LayerNorm(d)) if qk_norm else (lambda d: nn.Identity())
        self.q_norm, self.k_norm, self.ky_norm = norm(n_heads * self.head_dim), norm(kv_dim), norm(kv_dim)
        self.set_processor(processor or self._default_processor_cls())

    def caption_kv(self, y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of the (normed) caption features, (B, Lc, Hkv, D) each."""
        b = y.shape[0]
        yk = self.ky_norm(self.wk_y(y)).view(b, -1, self.n_kv_heads, self.head_dim)
        return yk, self.wv_y(y).view(b, -1, self.n_kv_heads, self.head_dim)

    def forward(self, hidden_states, attention_mask=None, image_rotary_emb=None, caption_kv=None, caption_mask=None):
        return self.processor(self, hidden_states, attention_mask, image_rotary_emb, caption_kv, caption_mask)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    """adaLN (scale and tanh gate) with sandwich RMSNorms around attention and FFN."""

    def __init__(self, dim, n_heads, n_kv_heads, cap_dim, ffn_dim, cond_dim, qk_norm, eps):
        super().__init__()
        self.attention = Attention(dim, n_heads, n_kv_heads, cap_dim, qk_norm)
        self.feed_forward = FeedForward(dim, ffn_dim)
        self.attention_norm1, self.attention_norm2 = RMSNorm(dim, eps), RMSNorm(dim, eps)
        self.ffn_norm1, self.ffn_norm2 = RMSNorm(dim, eps), RMSNorm(dim, eps)
        self.attention_y_norm = RMSNorm(cap_dim, eps)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 4 * dim))

    def caption_kv(self, y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.attention.caption_kv(self.attention_y_norm(y))

    def forward(self, hidden_states, attention_mask, image_rotary_emb, encoder_hidden_states, encoder_attention_mask,
                temb, captions: Optional["CaptionKV"] = None):
        """Returns the new hidden states only (registered as such for diffusers' block caches).

        `captions`: the run's keys/values store for `encoder_hidden_states` (the same at every step). This block fills
        its own entry here, inside its forward, where offload hooks have already put its weights on the device."""
        x, y = hidden_states, encoder_hidden_states
        scale_a, gate_a, scale_f, gate_f = self.adaLN_modulation(temb).unsqueeze(1).chunk(4, dim=-1)
        y_kv = self.caption_kv(y) if captions is None else captions.get(self, y)
        h = self.attention(self.attention_norm1(x) * (1 + scale_a), attention_mask, image_rotary_emb, y_kv,
                           encoder_attention_mask)
        x = x + gate_a.tanh() * self.attention_norm2(h)
        x = x + gate_f.tanh() * self.ffn_norm2(self.feed_forward(self.ffn_norm1(x) * (1 + scale_f)))
        return x


TransformerBlockRegistry.register(TransformerBlock, TransformerBlockMetadata(return_hidden_states_index=0))


class FinalLayer(nn.Module):
    def __init__(self, dim: int, out_dim: int, cond_dim: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, out_dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, dim))

    def forward(self, x, c):
        return self.linear(self.norm_final(x) * (1 + self.adaLN_modulation(c).unsqueeze(1)))


class CaptionKV:
    """One caption tensor's keys/values, per block, each computed inside its block's own forward: computed from
    outside, they would bypass block-level offload hooks (group offload) and meet weights still on the CPU. A plain
    object, neither a container nor movable with .to, so offload hooks pass it to the blocks untouched."""

    def __init__(self, cap_feats: torch.Tensor):
        self.cap_feats, self.version = cap_feats, cap_feats._version  # held, so its id stays unique for the run
        self._per_block: Dict[nn.Module, Tuple[torch.Tensor, torch.Tensor]] = {}

    def get(self, block: "TransformerBlock", y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        kv = self._per_block.get(block)
        if kv is None:
            kv = self._per_block[block] = block.caption_kv(y)
        return kv


class CaptionCache:
    """Caption keys/values for one sampling run, keyed by the caption tensor they were computed from.

    The captions do not change between denoising steps, so their projections need computing once per block; the
    caller keeps the caption tensors alive for the run (their ids are the keys), and a tensor changed in place
    since is projected again.
    """

    def __init__(self):
        self._entries: Dict[Tuple[int, torch.dtype], CaptionKV] = {}

    def for_captions(self, cap_feats: torch.Tensor, dtype: torch.dtype) -> CaptionKV:
        key = (id(cap_feats), dtype)
        entry = self._entries.get(key)
        if entry is None or entry.version != cap_feats._version:
            entry = self._entries[key] = CaptionKV(cap_feats)
        return entry


class VideoRope(nn.Module):
    """3D RoPE rotations (B, L, head_dim/2) for a padded batch of patch grids; padding rows rotate by 0.

    A module of its own so that context parallelism can split its output along the tokens as it splits the video."""

    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        self.head_dim, self.theta = head_dim, theta

    def forward(self, grids: List[Tuple[int, int, int]], length: int, device: torch.device) -> torch.Tensor:
        freqs = torch.ones(len(grids), length, self.head_dim // 2, dtype=torch.complex64, device=device)
        for i, grid in enumerate(grids):
            fr = rope_frequencies(grid, self.head_dim, self.theta, device)
            freqs[i, : fr.shape[0]] = fr
        return freqs


def check_parallel_split(lengths: List[int], degree: int, ps: PatchSize) -> None:
    """Refuse what context parallelism cannot split: batches of videos of different sizes (their padding needs a key
    mask, which diffusers' ring attention cannot carry round the ring) and videos with fewer tokens than processes."""
    if min(lengths) < max(lengths):
        raise InvalidRequestError(
            f"context parallelism splits one video's tokens over {degree} processes; this batch mixes videos of "
            f"{min(lengths)} to {max(lengths)} tokens at patch {ps.name}: give videos of one size, or run them one "
            f"at a time")
    if lengths[0] < degree:
        raise InvalidRequestError(f"the video has {lengths[0]} tokens at patch {ps.name}, fewer than the {degree} "
                                  f"processes splitting it: use a larger video, a finer patch size or fewer processes")


def ungather_padding(h: torch.Tensor, length: int, degree: int) -> torch.Tensor:
    """The `length` tokens of a context-parallel gather: each process's share (as torch.tensor_split cuts them, the
    larger ones first) was padded to the largest before the gather, since gloo gathers only equal pieces."""
    if length % degree == 0:
        return h
    share, extra = -(-length // degree), length % degree
    return torch.cat([h[:, r * share: r * share + share - (r >= extra)] for r in range(degree)], dim=1)


class LuminaNextDiTVideo(ModelMixin, ConfigMixin, AttentionMixin, CacheMixin, PeftAdapterMixin):
    """Velocity v = f(x, t, captions, caption mask, motion score, patch size) of Lumina-Video.

    `hidden_states` is a latent batch (B, C, F, H, W) or a list of (C, F, H, W) latents of different sizes; items
    are padded to a common token count and masked, so no item attends to another's tokens.

    Attention runs through diffusers' dispatcher (`set_attention_backend`), step caches through `enable_cache`
    (the blocks are registered for First-Block Cache and MagCache; `lumina.cache` builds every method's config).
    PeftAdapterMixin gives it diffusers' LoRA adapters (lumina.pipelines.lora loads them for the pipeline).
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["TransformerBlock"]
    _repeated_blocks = ["TransformerBlock"]
    # Context parallelism (`enable_parallelism`, see lumina.parallel): the video tokens and their RoPE rotations are
    # split where the blocks start, the caption path stays whole, and the final layer's output (whichever patch size
    # ran) is gathered at the parameterless `gather` point.
    _cp_plan = {
        "layers.0": {"hidden_states": ContextParallelInput(split_dim=1, expected_dims=3)},
        "rope": {0: ContextParallelInput(split_dim=1, expected_dims=3, split_output=True)},
        "gather": ContextParallelOutput(gather_dim=1, expected_dims=3),
    }

    @register_to_config
    def __init__(
        self,
        dim: int = 2304,
        n_layers: int = 24,
        n_heads: int = 16,
        n_kv_heads: Optional[int] = 8,
        in_channels: int = 16,
        qk_norm: bool = True,
        cap_feat_dim: int = 2304,
        all_patch_size: Sequence[int] = (2, 2, 4),
        all_f_patch_size: Sequence[int] = (1, 2, 2),
        rope_theta: float = 256.0,
        t_scale: float = 1000.0,
        motion_scale: float = 20.0,
        norm_eps: float = 1e-5,
        multiple_of: int = 256,
        ffn_dim: Optional[int] = None,
    ):
        super().__init__()
        n_kv_heads = n_kv_heads or n_heads
        check_heads(dim, n_heads, n_kv_heads)
        self.patch_sizes = [PatchSize(int(f), int(p)) for p, f in zip(all_patch_size, all_f_patch_size)]
        cond_dim = min(dim, 1024)
        ffn = ffn_dim or ffn_hidden_dim(dim, multiple_of)
        self.pad_token = nn.Parameter(torch.zeros(dim))
        self.all_x_embedder = nn.ModuleDict(
            {ps.key: nn.Linear(ps.volume * in_channels, dim) for ps in self.patch_sizes}
        )
        self.all_final_layer = nn.ModuleDict(
            {ps.key: FinalLayer(dim, ps.volume * in_channels, cond_dim) for ps in self.patch_sizes}
        )
        self.t_embedder = ScalarEmbedder(cond_dim)
        self.motion_embedder = ScalarEmbedder(cond_dim)
        self.cap_embedder = nn.Sequential(nn.LayerNorm(cap_feat_dim, eps=norm_eps), nn.Linear(cap_feat_dim, cond_dim))
        self.layers = nn.ModuleList(
            [
                TransformerBlock(dim, n_heads, n_kv_heads, cap_feat_dim, ffn, cond_dim, qk_norm, norm_eps)
                for _ in range(n_layers)
            ]
        )
        self.rope = VideoRope(dim // n_heads, rope_theta)
        self.gather = nn.Identity()  # where context parallelism gathers the tokens (`_cp_plan`)
        self.gradient_checkpointing = False

    @property
    def head_dim(self) -> int:
        return self.config.dim // self.config.n_heads

    @property
    def parallel_degree(self) -> int:
        """Processes that split each video's tokens (diffusers' context parallelism); 1 without it."""
        cp = getattr(self._parallel_config, "context_parallel_config", None)
        return 1 if cp is None else cp.ring_degree * cp.ulysses_degree

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype activations are computed in: that of `pad_token`, a bare parameter that neither layerwise casting
        (float8 storage) nor 8-bit quantization touches, unlike the Linear weights."""
        return self.pad_token.dtype

    def supported_patch_sizes(self) -> List[PatchSize]:
        return list(self.patch_sizes)

    def check_patch_sizes(self, patch_sizes) -> None:
        """Refuse patch sizes this model has no embedder for, naming the ones it has."""
        missing = sorted({parse_patch_size(p).name for p in patch_sizes} - {p.name for p in self.patch_sizes})
        if missing:
            raise InvalidRequestError(f"patch sizes {missing} are not in this model; it supports "
                                      f"{sorted(p.name for p in self.patch_sizes)}")

    def _resolve_patch(self, patch_size: Union[str, PatchSize, Tuple[int, int]]) -> PatchSize:
        self.check_patch_sizes([patch_size])
        return parse_patch_size(patch_size)

    def num_tokens(self, latent_shape: Tuple[int, int, int], patch_size) -> int:
        """Tokens per item for a latent (F, H, W): the cost unit of one forward pass."""
        ps = parse_patch_size(patch_size)
        f, h, w = latent_shape
        return -(-f // ps.f) * (h // ps.p) * (w // ps.p)

    def patchify(self, x: torch.Tensor, ps: PatchSize) -> Tuple[torch.Tensor, Tuple[int, int, int]]:
        """(C, F, H, W) -> tokens (N, pf*p*p*C) ordered frame, row, column; frames padded to pf."""
        c, f, h, w = x.shape
        if h % ps.p or w % ps.p:
            raise ValueError(f"latent height {h} and width {w} must be multiples of patch {ps.p} for {ps.name}")
        if f % ps.f:
            x = torch.cat([x, x[:, -1:].expand(c, ps.f - f % ps.f, h, w)], dim=1)
        fg, hg, wg = x.shape[1] // ps.f, h // ps.p, w // ps.p
        tokens = x.reshape(c, fg, ps.f, hg, ps.p, wg, ps.p).permute(1, 3, 5, 2, 4, 6, 0)
        return tokens.reshape(fg * hg * wg, ps.volume * c), (fg, hg, wg)

    def unpatchify(self, tokens: torch.Tensor, grid: Tuple[int, int, int], ps: PatchSize, frames: int) -> torch.Tensor:
        fg, hg, wg = grid
        c = self.config.in_channels
        x = tokens.reshape(fg, hg, wg, ps.f, ps.p, ps.p, c).permute(6, 0, 3, 1, 4, 2, 5)
        return x.reshape(c, fg * ps.f, hg * ps.p, wg * ps.p)[:, :frames]

    def condition(self, t, cap_feats, cap_mask, motion_score):
        """c = time + pooled caption + motion (zero where the motion score is negative)."""
        dtype = self.compute_dtype
        t_emb = self.t_embedder(t * self.config.t_scale, dtype)
        m_emb = self.motion_embedder(motion_score * self.config.motion_scale, dtype)
        m_emb = torch.where((motion_score < 0)[:, None], torch.zeros_like(m_emb), m_emb)
        maskf = cap_mask.to(cap_feats.dtype)[..., None]
        pooled = (cap_feats * maskf).sum(1) / maskf.sum(1).clamp(min=1)
        return t_emb + self.cap_embedder(pooled.to(dtype)) + m_emb

    def forward(
        self,
        hidden_states: Union[torch.Tensor, List[torch.Tensor]],
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_mask: torch.Tensor,
        motion_score: torch.Tensor,
        patch_size: Union[str, PatchSize, Tuple[int, int]] = "1x2",
        caption_cache: Optional["CaptionCache"] = None,
        return_dict: Optional[bool] = None,
    ):
        """Velocity of latents `hidden_states` at flow time `timestep` (0 noise, 1 data) for captions
        `encoder_hidden_states` (mask `encoder_attention_mask`) and a motion score (negative: no motion condition).

        `caption_cache`: pass the same CaptionCache at every step of a sampling run (without autograd) so each caption
        tensor's per-layer keys/values are computed once instead of at every step.
        `return_dict`: True gives a `Transformer2DModelOutput`, False a tuple (diffusers' conventions); left unset, the
        velocity itself (a tensor, or a list for a list input), as the release's code and the parity tests call it."""
        x = hidden_states
        ps = self._resolve_patch(patch_size)
        items = list(x) if isinstance(x, (list, tuple)) or x.dim() == 5 else [x]
        dtype = self.compute_dtype
        device = encoder_hidden_states.device
        b = len(items)
        t = torch.as_tensor(timestep, device=device, dtype=torch.float32).reshape(-1).expand(b)
        motion_score = torch.as_tensor(motion_score, device=device, dtype=torch.float32).reshape(-1).expand(b)
        c = self.condition(t, encoder_hidden_states, encoder_attention_mask, motion_score)

        patched = [self.patchify(item, ps) for item in items]
        lengths = [tok.shape[0] for tok, _ in patched]
        L = max(lengths)
        seq = torch.stack([F.pad(tok.to(dtype), (0, 0, 0, L - tok.shape[0])) for tok, _ in patched])
        freqs = self.rope([grid for _, grid in patched], L, device)
        h = self.all_x_embedder[ps.key](seq)
        y = encoder_hidden_states.to(dtype)
        y_mask = encoder_attention_mask.bool()
        attn_mask = None
        if min(lengths) < L:  # shapes, not values: no data-dependent branch for torch.compile
            attn_mask = torch.arange(L, device=device)[None, :] < torch.tensor(lengths, device=device)[:, None]
        degree = self.parallel_degree
        if degree > 1:
            check_parallel_split(lengths, degree, ps)
        captions = None
        if caption_cache is not None and not torch.is_grad_enabled():
            captions = caption_cache.for_captions(encoder_hidden_states, dtype)
        for layer in self.layers:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                h = self._gradient_checkpointing_func(layer, h, attn_mask, freqs, y, y_mask, c)
            else:
                h = layer(h, attn_mask, freqs, y, y_mask, c, captions)
        h = self.all_final_layer[ps.key](h, c)
        if degree > 1:  # this process's share padded to the largest, gathered by the `_cp_plan`, unpadded
            h = ungather_padding(self.gather(F.pad(h, (0, 0, 0, -(-L // degree) - h.shape[1]))), L, degree)
        outs = [self.unpatchify(h[i, : lengths[i]], grid, ps, item.shape[1])
                for i, ((_, grid), item) in enumerate(zip(patched, items))]
        if isinstance(x, (list, tuple)):
            out = outs
        else:
            out = torch.stack(outs) if x.dim() == 5 else outs[0]
        if return_dict is None:
            return out
        return Transformer2DModelOutput(sample=out) if return_dict else (out,)
