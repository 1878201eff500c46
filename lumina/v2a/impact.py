"""Impact track: an appearance-free contact cue for the sync features, computed from the video without learning.

A contact is an abrupt change of an object's velocity, whatever the object looks like.  Per frame t, at 64 px on the
short side, in luminance (or, for an object that differs from its background only in hue, the colour direction
along which the clip changes most: ``_gray``):

* forward flow t -> t+1 and backward flow t -> t-1 (OpenCV Farneback with its own 3-level pyramid; both flows are
  anchored on frame t's pixels, so for constant velocity they cancel: f + b = 0), minus their median (camera motion);
* moving regions: pixels that change between frames (more than 4 noise sigmas of the clip's frame differences) and
  whose flow exceeds half a pixel, in connected components (one per object, or per group of touching objects);
* each component's velocities before and after t (its flows, weighted by the frame difference) give its
  acceleration f + b in pixels per frame squared; the clip's median acceleration (gravity, a steady push) is removed,
  since a contact is what changes abruptly;
* the frame's score is the largest component acceleration over the clip's typical speed (the median of the fastest
  component's speed), so it is comparable across object sizes, speeds and frame rates: about 2 for a head-on
  reversal, 0 for constant velocity.

On the training distributions (peaks above 1.0 within one frame of a contact): world clips 55% of the contacts at
0.03 false peaks/s (above 0.5: 89% at 1.1/s), clean varied scenes 55% at 0.28/s; degraded varied scenes (noise, JPEG,
shake, textured backgrounds) are harder (57% at 2.0/s).  ``lumina.motion.dense_flow`` is not reused: its clamped
deep pyramid is built for 320x576 frames half a second apart; at 64 px and consecutive frames OpenCV's own pyramid
follows the objects.
"""

from __future__ import annotations

import cv2
import numpy as np

SHORT_SIDE = 64
FARNEBACK = dict(pyr_scale=0.5, levels=3, winsize=9, iterations=3, poly_n=5, poly_sigma=1.1, flags=0)
NOISE_SIGMAS = 4.0     # a pixel moves when its frame difference exceeds this many noise sigmas ...
MIN_DIFF = 6.0         # ... and this many grey levels
MIN_FLOW = 0.5         # ... and its flow this many pixels (at SHORT_SIDE)
MIN_AREA = 4           # pixels of a moving component
MIN_SPEED = 0.3        # px/frame: slower components (resting, flow noise) carry no impact
MAX_SCORE = 4.0


def _gray(frames) -> list:
    """(T, H, W, 3) uint8 or float [0, 1] -> uint8 frames with SHORT_SIDE pixels on the short side: luminance, or,
    when nothing changes in luminance by 2 * MIN_DIFF, the colour direction along which the clip changes most.

    Luminance hides an object whose colour differs from the background's only in hue (a red ball on a green wall of the
    same brightness); the first principal direction of the frame differences sees it.  Its weights have magnitudes
    summing to 1, so a change along grey moves it as much as it moves luminance.  Every other clip keeps luminance,
    which the contact detector was trained on.
    """
    rgb = [np.ascontiguousarray(f if f.dtype == np.uint8 else (np.clip(f, 0.0, 1.0) * 255 + 0.5).astype(np.uint8))
           for f in map(np.asarray, frames)]
    if not rgb:
        return []
    s = SHORT_SIDE / min(rgb[0].shape[:2])
    size = (max(1, round(rgb[0].shape[1] * s)), max(1, round(rgb[0].shape[0] * s)))
    gray = [cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), size, interpolation=cv2.INTER_AREA) for f in rgb]
    if len(gray) < 2:
        return gray
    luma_change = max(float(np.abs(b.astype(np.float32) - a).max()) for a, b in zip(gray[:-1], gray[1:]))
    if luma_change >= 2 * MIN_DIFF:
        return gray
    small = [cv2.resize(f, size, interpolation=cv2.INTER_AREA).astype(np.float32) for f in rgb]
    d = np.concatenate([(b - a).reshape(-1, 3) for a, b in zip(small[:-1], small[1:])])
    u = np.linalg.eigh(d.T @ d)[1][:, -1]
    u = (u if u.sum() >= 0 else -u) / np.abs(u).sum()
    if float(np.abs(d @ u).max()) < 2 * luma_change:
        return gray
    offset = 255.0 * float(np.clip(-u, 0, None).sum())  # the weighted image spans [0, 255]
    return [np.clip(f @ u + offset + 0.5, 0, 255).astype(np.uint8) for f in small]


def _components(f: np.ndarray, b: np.ndarray, diff: np.ndarray, threshold: float):
    """(acceleration vector, speed) of each moving component of one frame (flows in px/frame)."""
    speed = np.maximum(np.linalg.norm(f, axis=-1), np.linalg.norm(b, axis=-1))
    mask = cv2.dilate(((diff > threshold) & (speed > MIN_FLOW)).astype(np.uint8), np.ones((3, 3), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    out = []
    for k in range(1, n):
        if stats[k, cv2.CC_STAT_AREA] < MIN_AREA:
            continue
        sel = labels == k
        w = diff[sel][:, None] + 1e-3
        vf, vb = (f[sel] * w).sum(0) / w.sum(), (b[sel] * w).sum(0) / w.sum()
        s = max(float(np.linalg.norm(vf)), float(np.linalg.norm(vb)))
        if s >= MIN_SPEED:
            out.append((vf + vb, s))
    return out


def impact_track(frames) -> np.ndarray:
    """Video frames (T, H, W, 3) -> float32 (T,) impact score per frame (0 at the first and last frame)."""
    return frame_accelerations(frames)[0]


def frame_accelerations(frames) -> tuple:
    """Video frames (T, H, W, 3) -> (score (T,), acceleration (T, 2)): per frame the largest moving component's
    acceleration (minus the clip's steady one) over the clip's typical speed, its norm being the score."""
    gray = _gray(frames)
    n = len(gray)
    score = np.zeros(n, dtype=np.float32)
    acc = np.zeros((n, 2), dtype=np.float32)
    if n < 3:
        return score, acc
    fwd = [cv2.calcOpticalFlowFarneback(gray[t], gray[t + 1], None, **FARNEBACK) for t in range(n - 1)]
    bwd = [cv2.calcOpticalFlowFarneback(gray[t + 1], gray[t], None, **FARNEBACK) for t in range(n - 1)]
    diffs = [np.abs(gray[t + 1].astype(np.float32) - gray[t]) for t in range(n - 1)]
    sigma = 1.4826 * float(np.median(np.concatenate([d.ravel() for d in diffs])))
    threshold = max(NOISE_SIGMAS * sigma, MIN_DIFF)
    found = []
    for t in range(1, n - 1):
        f = fwd[t] - np.median(fwd[t].reshape(-1, 2), 0)
        b = bwd[t - 1] - np.median(bwd[t - 1].reshape(-1, 2), 0)
        found += [(t, a, s) for a, s in _components(f, b, np.maximum(diffs[t - 1], diffs[t]), threshold)]
    if not found:
        return score, acc
    steady = np.median(np.array([a for _, a, _ in found]), 0)
    fastest = np.zeros(n)
    for t, a, s in found:
        norm = float(np.linalg.norm(a - steady))
        if norm > score[t]:
            score[t], acc[t] = norm, a - steady
        fastest[t] = max(fastest[t], s)
    scale = max(float(np.median(fastest[fastest > 0])), MIN_SPEED)
    score = np.clip(score / scale, 0.0, MAX_SCORE).astype(np.float32)
    return score, (acc / scale).astype(np.float32)
