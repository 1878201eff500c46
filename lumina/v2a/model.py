"""LuminaV2ATransformer: Next-DiT co-attention over audio-latent and visual tokens (Lumina-V2A).

One sequence ``[audio latent tokens | visual tokens]`` runs through the engine's own
``TransformerBlock``s, so their joint self-attention is the co-attention between the two streams;
text tokens enter through the block's gated caption cross-attention (``y``).  Rotary positions come
from ``rope_from_positions`` with the first coordinate *time in seconds times* ``rope_time_rate``:
an audio token and a visual token of the same instant get the same angle.  The second coordinate
separates the streams (audio: its frequency band index, visual: ``visual_offset + row``), the third
is the visual column.  High-frame-rate sync features are resampled (linear interpolation in time) to
the audio-latent frames and a Linear of them is added to the audio tokens (with ``visual_to_audio``
the grid-mean visual features are aligned and added the same way, a direct path for what the frame
shows at that instant besides the co-attention).  The conditioning vector
is time embedding + pooled text (+ the pooled visual features, MMAudio-style global conditioning, unless
``visual_in_condition=False``).  The output is the flow velocity of the audio latent only.

Classifier-free guidance drops video, sync and text together: ``drop[i] = True`` replaces item i's
visual tokens, sync features and caption by learned null embeddings (same sequence layout, so the
conditional and unconditional passes batch together).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from lumina.models.transformer_nextdit import (
    FinalLayer,
    RMSNorm,
    ScalarEmbedder,
    TransformerBlock,
    check_heads,
    ffn_hidden_dim,
    rope_from_positions,
)


def interpolation_matrix(src_times: torch.Tensor, dst_times: torch.Tensor) -> torch.Tensor:
    """(len(dst), len(src)) weights of linear interpolation in time (edge values held outside)."""
    src = src_times.to(torch.float64).reshape(-1)
    dst = dst_times.to(torch.float64).reshape(-1)
    n = src.numel()
    w = torch.zeros(dst.numel(), n, dtype=torch.float64, device=src.device)
    if n == 1:
        w[:, 0] = 1.0
        return w.float()
    idx = torch.searchsorted(src, dst).clamp(1, n - 1)
    lo, hi = src[idx - 1], src[idx]
    frac = ((dst - lo) / (hi - lo).clamp(min=1e-12)).clamp(0.0, 1.0)
    rows = torch.arange(dst.numel(), device=src.device)
    w[rows, idx - 1] = 1.0 - frac
    w[rows, idx] += frac
    return w.float()


class LuminaV2ATransformer(ModelMixin, ConfigMixin):
    """Velocity v = f(audio latent x, t, visual tokens, sync features, captions) for V2A flow matching.

    Shapes: x (B, C, T_a, F_a) audio latent (time, frequency) with T_a frames at ``audio_times`` seconds;
    visual (B, T_v, G, D_v) with G = visual_grid**2 tokens per frame at ``visual_times`` seconds;
    sync (B, T_s, D_s) at ``sync_times`` seconds (the video's own frame rate); cap_feats (B, L, D_c)
    with cap_mask (B, L), or None for "no prompt".
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["TransformerBlock"]
    _repeated_blocks = ["TransformerBlock"]

    @register_to_config
    def __init__(
        self,
        dim: int = 128,
        n_layers: int = 4,
        n_heads: int = 4,
        n_kv_heads: Optional[int] = 2,
        latent_channels: int = 8,
        latent_freq: int = 32,
        freq_patches: int = 1,
        visual_dim: int = 64,
        visual_grid: int = 2,
        sync_dim: int = 32,
        cap_feat_dim: int = 384,
        qk_norm: bool = True,
        rope_theta: float = 256.0,
        rope_time_rate: float = 15.625,
        visual_offset: int = 4,
        t_scale: float = 1000.0,
        norm_eps: float = 1e-5,
        multiple_of: int = 32,
        ffn_dim: Optional[int] = None,
        visual_in_condition: bool = True,
        visual_to_audio: bool = True,
        onset_channels: int = 0,
    ):
        super().__init__()
        n_kv_heads = n_kv_heads or n_heads
        check_heads(dim, n_heads, n_kv_heads)
        if latent_freq % freq_patches:
            raise ValueError(f"latent_freq={latent_freq} must be a multiple of freq_patches={freq_patches}")
        if visual_offset < freq_patches:
            raise ValueError("visual_offset must exceed the audio frequency indices (freq_patches)")
        cond_dim = min(dim, 1024)
        ffn = ffn_dim or ffn_hidden_dim(dim, multiple_of)
        token_in = latent_channels * latent_freq // freq_patches
        self.audio_embedder = nn.Linear(token_in, dim)
        self.visual_embedder = nn.Sequential(nn.LayerNorm(visual_dim, eps=norm_eps), nn.Linear(visual_dim, dim))
        self.sync_embedder = nn.Sequential(RMSNorm(sync_dim, norm_eps), nn.Linear(sync_dim, dim))
        self.visual_audio_embedder = (
            nn.Sequential(nn.LayerNorm(visual_dim, eps=norm_eps), nn.Linear(visual_dim, dim)) if visual_to_audio else None
        )
        # contact onsets (lumina.v2a.contacts.onset_track): one slot per mel frame of an audio-latent frame; zero
        # output at first, so a member fine-tuned with them starts as the one without
        self.onset_embedder = nn.Linear(onset_channels, dim) if onset_channels else None
        if self.onset_embedder is not None:
            nn.init.zeros_(self.onset_embedder.weight)
            nn.init.zeros_(self.onset_embedder.bias)
        self.null_visual = nn.Parameter(torch.zeros(dim))
        self.null_sync = nn.Parameter(torch.zeros(dim))
        self.null_caption = nn.Parameter(torch.zeros(cap_feat_dim))
        self.t_embedder = ScalarEmbedder(cond_dim)
        self.cap_embedder = nn.Sequential(nn.LayerNorm(cap_feat_dim, eps=norm_eps), nn.Linear(cap_feat_dim, cond_dim))
        self.visual_cond_embedder = (
            nn.Sequential(nn.LayerNorm(visual_dim, eps=norm_eps), nn.Linear(visual_dim, cond_dim))
            if visual_in_condition else None
        )
        self.layers = nn.ModuleList(
            [TransformerBlock(dim, n_heads, n_kv_heads, cap_feat_dim, ffn, cond_dim, qk_norm, norm_eps)
             for _ in range(n_layers)]
        )
        self.final_layer = FinalLayer(dim, token_in, cond_dim)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)
        self.gradient_checkpointing = False

    @property
    def head_dim(self) -> int:
        return self.config.dim // self.config.n_heads

    # -- token layout -----------------------------------------------------------------------------

    def positions(self, audio_times: torch.Tensor, visual_times: torch.Tensor) -> torch.Tensor:
        """(T_a*P + T_v*G, 3) float positions: (time * rate, stream/frequency row, column)."""
        cfg = self.config
        rate = cfg.rope_time_rate
        p, g = cfg.freq_patches, cfg.visual_grid
        at = audio_times.float().reshape(-1, 1).expand(-1, p).reshape(-1) * rate
        band = torch.arange(p, device=at.device, dtype=torch.float32).repeat(audio_times.numel())
        audio = torch.stack([at, band, torch.zeros_like(at)], dim=-1)
        vt = visual_times.float().reshape(-1, 1).expand(-1, g * g).reshape(-1).to(at.device) * rate
        cell = torch.arange(g * g, device=at.device).repeat(visual_times.numel())
        rows = (cell // g).float() + cfg.visual_offset
        cols = (cell % g).float()
        visual = torch.stack([vt, rows, cols], dim=-1)
        return torch.cat([audio, visual], dim=0)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, F) -> (B, T*P, C*F/P), tokens ordered time then frequency band."""
        b, c, t, f = x.shape
        p = self.config.freq_patches
        return x.reshape(b, c, t, p, f // p).permute(0, 2, 3, 1, 4).reshape(b, t * p, c * (f // p))

    def unpatchify(self, tokens: torch.Tensor, t: int) -> torch.Tensor:
        b = tokens.shape[0]
        c, f, p = self.config.latent_channels, self.config.latent_freq, self.config.freq_patches
        return tokens.reshape(b, t, p, c, f // p).permute(0, 3, 1, 2, 4).reshape(b, c, t, f)

    def captions(self, cap_feats, cap_mask, drop, batch, dtype, device):
        """Caption tokens and mask, with the learned null caption where there is none or it is dropped."""
        null = self.null_caption.to(dtype)
        if cap_feats is None:
            return null.view(1, 1, -1).expand(batch, 1, -1), torch.ones(batch, 1, dtype=torch.bool, device=device)
        y = cap_feats.to(dtype)
        mask = cap_mask.bool().clone() if cap_mask is not None else torch.ones(y.shape[:2], dtype=torch.bool, device=device)
        if drop is not None and bool(drop.any()):
            keep = ~drop.view(-1, 1, 1)
            y = torch.where(keep, y, torch.zeros_like(y))
            y[drop, 0] = null
            mask[drop] = False
            mask[drop, 0] = True
        empty = ~mask.any(dim=1)
        if bool(empty.any()):  # a padded batch item without tokens would give NaN attention
            y = y.clone()
            y[empty, 0] = null
            mask[empty, 0] = True
        return y, mask

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        visual: torch.Tensor,
        visual_times: torch.Tensor,
        sync: torch.Tensor,
        sync_times: torch.Tensor,
        audio_times: torch.Tensor,
        cap_feats: Optional[torch.Tensor] = None,
        cap_mask: Optional[torch.Tensor] = None,
        drop: Optional[torch.Tensor] = None,
        onsets: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """``onsets`` (B, T_a, onset_channels): the contact onset track, required when the model has onset_channels."""
        b, _, t_a, _ = x.shape
        device = x.device
        dtype = self.audio_embedder.weight.dtype
        t = torch.as_tensor(t, device=device, dtype=torch.float32).reshape(-1).expand(b)
        if drop is not None:
            drop = torch.as_tensor(drop, device=device, dtype=torch.bool).reshape(-1).expand(b)
        p, g = self.config.freq_patches, self.config.visual_grid
        if visual.shape[2] != g * g:
            raise ValueError(f"visual features have {visual.shape[2]} tokens per frame; this model expects {g * g}")

        audio = self.audio_embedder(self.patchify(x.to(dtype)))                       # (B, T_a*P, D)
        weights = interpolation_matrix(sync_times, audio_times).to(device=device, dtype=dtype)
        sync_a = self.sync_embedder(torch.matmul(weights, sync.to(dtype)))           # (B, T_a, D)
        vis = self.visual_embedder(visual.to(dtype)).reshape(b, -1, audio.shape[-1])  # (B, T_v*G, D)
        if self.visual_audio_embedder is not None:  # frame features aligned to the audio frames, like sync
            v_weights = interpolation_matrix(visual_times, audio_times).to(device=device, dtype=dtype)
            sync_a = sync_a + self.visual_audio_embedder(torch.matmul(v_weights, visual.to(dtype).mean(2)))
        if (onsets is None) != (self.onset_embedder is None):
            raise ValueError("this transformer " + ("needs" if onsets is None else "takes no") + " onset track")
        if onsets is not None:
            sync_a = sync_a + self.onset_embedder(onsets.to(device=device, dtype=dtype))
        if drop is not None and bool(drop.any()):
            dmask = drop.view(-1, 1, 1)
            sync_a = torch.where(dmask, self.null_sync.to(dtype).view(1, 1, -1), sync_a)
            vis = torch.where(dmask, self.null_visual.to(dtype).view(1, 1, -1), vis)
        audio = audio + sync_a.repeat_interleave(p, dim=1)
        h = torch.cat([audio, vis], dim=1)
        n_audio = audio.shape[1]

        pos = self.positions(audio_times.to(device), visual_times.to(device))
        freqs = rope_from_positions(pos, self.head_dim, self.config.rope_theta).unsqueeze(0).expand(b, -1, -1)

        y, y_mask = self.captions(cap_feats, cap_mask, drop, b, dtype, device)
        maskf = y_mask.to(y.dtype)[..., None]
        pooled = (y * maskf).sum(1) / maskf.sum(1).clamp(min=1)
        c = self.t_embedder(t * self.config.t_scale, dtype) + self.cap_embedder(pooled)
        if self.visual_cond_embedder is not None:
            v_c = self.visual_cond_embedder(visual.to(dtype).mean(dim=(1, 2)))
            if drop is not None:
                v_c = v_c * (~drop).to(dtype)[:, None]
            c = c + v_c

        for layer in self.layers:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                h = self._gradient_checkpointing_func(layer, h, None, freqs, y, y_mask, c)
            else:
                h = layer(h, None, freqs, y, y_mask, c)
        out = self.final_layer(h[:, :n_audio], c)
        return self.unpatchify(out, t_a)
