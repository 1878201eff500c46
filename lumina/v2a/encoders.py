"""Video-side encoders of Lumina-V2A and the frame preprocessing they share.

* ``V2AFrameEncoder``: the tiny member's stand-in for CLIP: a small conv net over 32x32 frames, pooled
  to a ``grid x grid`` token map per frame (colour and layout, at the low visual frame rate).
* ``V2ASyncEncoder``: our stand-in for Synchformer: a small conv net over each frame and its two
  frame differences at the video's *full* frame rate, then temporal convolutions.  It also carries an
  onset head trained to predict the soundtrack's onset strength per frame (an auxiliary target that
  any video with sound provides).  With ``impact_features`` it also reads the impact track
  (``lumina.v2a.impact``), an appearance-free contact cue.
* ``encode_visual``: runs either one of those or a transformers ``CLIPVisionModel`` (patch tokens
  average-pooled to the grid), returning (T, grid*grid, dim).
"""

from __future__ import annotations

from typing import Optional, Tuple

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from lumina.v2a.impact import impact_track

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def as_float_frames(frames) -> np.ndarray:
    """uint8 or float frames (T, H, W, 3) -> float32 in [0, 1]."""
    frames = video_frames(frames)
    return frames.astype(np.float32) / 255.0 if frames.dtype == np.uint8 else frames


def video_frames(frames) -> np.ndarray:
    """Frames (T, H, W, 3) as the encoders take them: uint8 as they are (each frame becomes float where it is
    resized, so a long clip is never float all at once: 4x its bytes), others as float32 clipped to [0, 1]."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected video frames of shape (T, H, W, 3), got {frames.shape}")
    return frames if frames.dtype == np.uint8 else np.clip(frames.astype(np.float32), 0.0, 1.0)


def resize_frames(frames: np.ndarray, size: int) -> torch.Tensor:
    """(T, H, W, 3) uint8 or in [0, 1] -> (T, 3, size, size) float in [0, 1] by area averaging (cv2 INTER_AREA)."""
    out = np.stack([cv2.resize(f.astype(np.float32) / 255.0 if f.dtype == np.uint8 else f, (size, size),
                               interpolation=cv2.INTER_AREA) for f in frames])
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def visual_frame_indices(num_frames: int, fps: float, visual_fps: float) -> Tuple[np.ndarray, np.ndarray]:
    """Frames nearest to times k / visual_fps over the clip, and their true times (i / fps)."""
    seconds = num_frames / fps
    count = max(1, int(np.ceil(seconds * visual_fps - 1e-9)))
    idx = np.clip(np.round(np.arange(count) / visual_fps * fps).astype(int), 0, num_frames - 1)
    return idx, idx / float(fps)


class V2AFrameEncoder(ModelMixin, ConfigMixin):
    """(N, 3, S, S) frames in [0, 1] -> (N, grid*grid, out_dim) tokens (mean- and max-pooled conv features).

    ``spectrum_bins > 0`` adds a head that predicts, from a frame's pooled tokens, the normalized log-mel
    spectrum heard around that frame: the auxiliary target (any video with sound has it) that teaches the
    small encoder which looks sound which way (in the world: colour -> pitch) without waiting for the
    gradient through the transformer.
    """

    @register_to_config
    def __init__(self, image_size: int = 32, width: int = 32, out_dim: int = 64, grid: int = 2,
                 spectrum_bins: int = 0):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 4, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(width, width, 1), nn.GELU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.GELU(),
        )
        self.proj = nn.Linear(4 * width, out_dim)
        self.spectrum_head = nn.Linear(out_dim, spectrum_bins) if spectrum_bins else None

    def predict_spectrum(self, tokens: torch.Tensor) -> torch.Tensor:
        """(..., G, out_dim) tokens of a frame -> (..., spectrum_bins) normalized log-mel."""
        return self.spectrum_head(tokens.mean(-2))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        h = self.net((pixels.to(self.proj.weight.dtype) - 0.5) / 0.25)
        g = self.config.grid
        # mean and max per cell: a small object is a few pixels of a cell, max keeps its colour undiluted
        h = torch.cat([F.adaptive_avg_pool2d(h, (g, g)), F.adaptive_max_pool2d(h, (g, g))], dim=1)
        return self.proj(h.flatten(2).transpose(1, 2))


class V2ASyncEncoder(ModelMixin, ConfigMixin):
    """Frames (T, 3, S, S) in [0, 1] at the video's frame rate -> sync features (T, out_dim).

    Per frame the input is [frame, frame - previous, next - frame] (9 channels; the first and last
    frame repeat themselves), so a reversal of motion (a bounce) is visible in one step; temporal
    convolutions then look a few frames around.  ``onset_logits`` reads the onset head.

    ``impact_features``: a small MLP of each frame's impact score and its two neighbours is added to the
    features (its output layer starts at zero, so a member fine-tuned with it starts as the one without).
    The conv net sees appearance and learns the training world's look; the impact track does not.
    """

    @register_to_config
    def __init__(self, image_size: int = 32, width: int = 16, hidden: int = 64, out_dim: int = 32,
                 temporal_kernel: int = 5, impact_features: bool = False):
        super().__init__()
        w = width
        self.spatial = nn.Sequential(
            nn.Conv2d(9, w, 4, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1), nn.GELU(),
        )
        cells = (image_size // 8) ** 2
        self.frame_proj = nn.Linear(2 * w * cells, hidden)
        pad = temporal_kernel // 2
        self.temporal = nn.Sequential(
            nn.GELU(), nn.Conv1d(hidden, hidden, temporal_kernel, padding=pad, padding_mode="replicate"),
            nn.GELU(), nn.Conv1d(hidden, out_dim, 3, padding=1, padding_mode="replicate"),
        )
        self.onset_head = nn.Linear(out_dim, 1)
        self.impact_proj = None
        if impact_features:
            self.impact_proj = nn.Sequential(nn.Linear(3, hidden), nn.GELU(), nn.Linear(hidden, out_dim))
            nn.init.zeros_(self.impact_proj[2].weight)
            nn.init.zeros_(self.impact_proj[2].bias)

    def forward(self, frames: torch.Tensor, impact: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(T, 3, S, S) or (B, T, 3, S, S), impact (T,) or (B, T) with ``impact_features`` -> (T, out_dim) or
        (B, T, out_dim)."""
        single = frames.dim() == 4
        if (impact is None) != (self.impact_proj is None):
            raise ValueError("this sync encoder " + ("needs" if impact is None else "takes no") + " an impact track")
        x = frames.unsqueeze(0) if single else frames
        x = x.to(self.frame_proj.weight.dtype)
        b, t = x.shape[:2]
        prev = torch.cat([x[:, :1], x[:, :-1]], dim=1)
        nxt = torch.cat([x[:, 1:], x[:, -1:]], dim=1)
        inp = torch.cat([(x - 0.5) / 0.25, (x - prev) * 8.0, (nxt - x) * 8.0], dim=2)
        h = self.spatial(inp.flatten(0, 1)).flatten(1)
        h = self.frame_proj(h).view(b, t, -1).transpose(1, 2)
        out = self.temporal(h).transpose(1, 2)
        if self.impact_proj is not None:
            k = impact.reshape(b, t, 1).to(out.dtype)
            k = torch.cat([torch.cat([k[:, :1], k[:, :-1]], 1), k, torch.cat([k[:, 1:], k[:, -1:]], 1)], dim=2)
            out = out + self.impact_proj(k)
        return out[0] if single else out

    def onset_logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.onset_head(features).squeeze(-1)


def is_clip_vision(encoder) -> bool:
    """A transformers vision tower (CLIPVisionModel & co): class token first, then patch tokens."""
    from transformers import PreTrainedModel

    return isinstance(encoder, PreTrainedModel)


def visual_input_size(encoder) -> int:
    return int(encoder.config.image_size)


@torch.no_grad()
def encode_visual(encoder, frames: np.ndarray, grid: int, batch: int = 64) -> torch.Tensor:
    """Frames (T, H, W, 3), uint8 or in [0, 1] -> (T, grid*grid, dim) tokens from a frame encoder or CLIP."""
    pixels = resize_frames(frames, visual_input_size(encoder))
    param = next(encoder.parameters())
    outs = []
    for i in range(0, len(pixels), batch):
        chunk = pixels[i:i + batch].to(device=param.device, dtype=param.dtype)
        if is_clip_vision(encoder):
            mean = torch.tensor(CLIP_MEAN, device=chunk.device, dtype=chunk.dtype).view(1, 3, 1, 1)
            std = torch.tensor(CLIP_STD, device=chunk.device, dtype=chunk.dtype).view(1, 3, 1, 1)
            hidden = encoder(pixel_values=(chunk - mean) / std).last_hidden_state[:, 1:]
            side = int(round(hidden.shape[1] ** 0.5))
            fmap = hidden.transpose(1, 2).reshape(hidden.shape[0], hidden.shape[2], side, side)
            outs.append(F.adaptive_avg_pool2d(fmap.float(), (grid, grid)).flatten(2).transpose(1, 2))
        else:
            outs.append(encoder(chunk).float())
    return torch.cat(outs)


@torch.no_grad()
def encode_sync(encoder, frames: np.ndarray) -> torch.Tensor:
    """Frames (T, H, W, 3), uint8 or in [0, 1] -> sync features (T, dim) at the video's frame rate (the impact
    track from the full frames when the encoder reads one)."""
    param = next(encoder.parameters())
    pixels = resize_frames(frames, encoder.config.image_size).to(device=param.device, dtype=param.dtype)
    impact = None
    if encoder.config.impact_features:
        impact = torch.from_numpy(impact_track(frames)).to(device=param.device)
    return encoder(pixels, impact).float()
