"""Contact detection: when does something strike something in a video, whatever it looks like.

Lumina-V2A's transformer places a hit where its *onset track* says one is (``LuminaV2ATransformer`` with
``onset_channels``), the way SyncFusion conditions Foley synthesis on detected onsets: the timing then comes from a
cue that does not depend on the look, and the learned features are left with what a sound is like.

* ``contact_candidates(frames)``: every local peak of the impact track (``lumina.v2a.impact``) summed over a frame
  pair (a contact between two frames splits its velocity change over both; their sum is the whole change, and the
  split gives the time within the pair), with 24 scale-free features of its neighbourhood;
* ``V2AContactDetector``: a small MLP over those features, trained on clips whose contact times are known, that keeps
  the candidates above its ``threshold``;
* ``onset_track(times, ...)``: contact times -> the transformer's input, one-hot per mel frame, ``downsample`` mel
  frames per audio-latent frame.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from lumina.v2a.impact import frame_accelerations

WINDOW = 3                 # frames of context on each side of a candidate pair
MIN_CANDIDATE = 0.15       # pair scores below this are not candidates (flow noise)
NUM_FEATURES = 2 * WINDOW + 2 + 2 * WINDOW + 1 + 9


def _local_baseline(score: np.ndarray, width: int = 4) -> np.ndarray:
    """Per frame: the median score of its neighbourhood, leaving out the frame and its direct neighbours."""
    n = len(score)
    out = np.zeros(n, dtype=np.float32)
    for t in range(n):
        around = np.concatenate([score[max(0, t - width):max(0, t - 1)], score[t + 2:t + width + 1]])
        out[t] = np.median(around) if len(around) else 0.0
    return out


def candidates_from_track(score: np.ndarray, acc: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Impact track (score (T,), acceleration (T, 2)) -> (times in frames (K,), features (K, NUM_FEATURES))."""
    n = len(score)
    pair = np.zeros(n, dtype=np.float32)
    for t in range(n - 1):
        pair[t] = max(float(np.linalg.norm(acc[t] + acc[t + 1])), score[t], score[t + 1])
    base = _local_baseline(score)
    s_pad, p_pad = np.pad(score, WINDOW), np.pad(pair, WINDOW)
    spread = [float(np.median(score)), float(np.percentile(score, 90))] if n else [0.0, 0.0]
    times, feats = [], []
    for t in range(n - 1):
        left = pair[t - 1] if t > 0 else -1.0
        if pair[t] <= MIN_CANDIDATE or pair[t] < left or pair[t] <= pair[t + 1]:
            continue
        a, b = float(score[t]), float(score[t + 1])
        frac = b / (a + b) if a + b > 0 else 0.5
        na, nb = float(np.linalg.norm(acc[t])), float(np.linalg.norm(acc[t + 1]))
        cos = float(np.dot(acc[t], acc[t + 1]) / (na * nb + 1e-6))
        feats.append(list(s_pad[t:t + 2 * WINDOW + 2]) + list(p_pad[t:t + 2 * WINDOW + 1])
                     + [base[t], base[t + 1], pair[t] - max(base[t], base[t + 1]), na, nb, cos] + spread + [frac])
        times.append(t + frac)
    return np.asarray(times, dtype=np.float64), np.asarray(feats, dtype=np.float32).reshape(-1, NUM_FEATURES)


def contact_candidates(frames) -> Tuple[np.ndarray, np.ndarray]:
    """Video frames (T, H, W, 3) -> candidate contact times in frames (K,) and their features (K, NUM_FEATURES)."""
    return candidates_from_track(*frame_accelerations(frames))


class V2AContactDetector(ModelMixin, ConfigMixin):
    """Which impact-track peaks are contacts: an MLP over ``contact_candidates`` features -> logit.

    Trained on clips with known contact times (``lumina_research.train.v2a``); the features are ratios of the clip's
    own motion, so the detector reads no colour, shape, size or frame rate.  ``threshold`` (a probability) is chosen
    on held-out training clips for few false contacts.
    """

    @register_to_config
    def __init__(self, num_features: int = NUM_FEATURES, hidden: int = 32, threshold: float = 0.5):
        super().__init__()
        self.register_buffer("feature_mean", torch.zeros(num_features))
        self.register_buffer("feature_std", torch.ones(num_features))
        self.net = nn.Sequential(nn.Linear(num_features, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = (features.to(self.feature_mean.dtype) - self.feature_mean) / self.feature_std
        return self.net(x).squeeze(-1)

    @torch.no_grad()
    def probabilities(self, features: np.ndarray) -> np.ndarray:
        if len(features) == 0:
            return np.zeros(0, dtype=np.float32)
        x = torch.from_numpy(np.asarray(features, dtype=np.float32)).to(self.feature_mean.device)
        return torch.sigmoid(self(x).float()).cpu().numpy()

    def select(self, times: np.ndarray, features: np.ndarray, fps: float) -> np.ndarray:
        """Candidates (times in frames, features) -> contact times in seconds, above the threshold."""
        keep = self.probabilities(features) > float(self.config.threshold)
        return np.sort(np.asarray(times, dtype=np.float64)[keep]) / float(fps)

    def detect(self, frames, fps: float) -> np.ndarray:
        """Contact times (s) in video frames (T, H, W, 3) at ``fps``."""
        return self.select(*contact_candidates(frames), fps)


def onset_track(times: Sequence[float], n_latent: int, downsample: int, hop_length: int,
                sample_rate: int) -> torch.Tensor:
    """Contact times (s) -> (n_latent, downsample) float: 1 at the mel frame of each contact (the nearest frame
    centre), grouped ``downsample`` mel frames per audio-latent frame; times outside the clip are dropped."""
    out = torch.zeros(n_latent * downsample)
    for t in times:
        k = int(round(float(t) * sample_rate / hop_length))
        if 0 <= k < len(out):
            out[k] = 1.0
    return out.view(n_latent, downsample)
