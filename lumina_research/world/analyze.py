"""Read the world's facts back out of pixels alone, to score generated videos against prompts.

Given only frames, recover the background colour, each object's colour, shape, size and
centre track, its motion word and its wall-bounce times.  Built to tolerate mild blur,
noise and compression: pixels are labelled with a blend model (pixel = a * colour +
(1 - a) * background) so soft edges keep their object's colour, specks are filtered by
area, and objects are linked across frames by colour and position.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from .render import SIZES
from .vocabulary import BACKGROUNDS, COLORS

FOREGROUND_DISTANCE = 60.0   # RGB distance from the background that counts as an object
MIN_AREA_128 = 20            # smallest object in pixels at 128x128, scaled with frame area
SPLIT_SHARE = 0.2            # a second colour must hold this share of a blob to split it
LINK_GATE = 0.4              # max normalized jump (plus colour penalty) to link detections
COLOR_CHANGE_COST = 0.5
MIN_COVERAGE = 0.3           # drop tracks seen in fewer than this share of frames
TURN_DELTA = 0.04            # reversal of at least this much (normalized) is a bounce
STILL_EXTENT = 0.04          # an object that never strays this far from its start is still
DIAGONAL_RATIO = np.tan(np.deg2rad(22.5))
SIZE_SPLIT = (SIZES["small"] + SIZES["large"]) / 4.0  # radius / min side between the two sizes

_COLOR_NAMES = list(COLORS)
_COLOR_RGB = np.array([COLORS[n] for n in _COLOR_NAMES], dtype=np.float32)


@dataclass
class ObjectAnalysis:
    """One tracked object; ``track`` is the normalized centre per frame, shape (T, 2)."""

    color: str
    shape: str
    size: str
    direction: str
    track: np.ndarray
    bounce_times: list[float]
    coverage: float


@dataclass
class Analysis:
    """What a video shows: background name and RGB estimate, and the tracked objects."""

    background: str
    background_rgb: tuple[int, int, int]
    objects: list[ObjectAnalysis]
    fps: float

    def facts(self) -> dict:
        """Facts in the same layout as ``Scene.facts()`` / ``parse_prompt`` (motion = direction)."""
        return {
            "background": self.background,
            "objects": [{"color": o.color, "shape": o.shape, "size": o.size, "motion": o.direction}
                        for o in self.objects],
        }


@dataclass
class _Detection:
    color: str
    pos: np.ndarray
    shape: str
    radius: float


def _nearest(rgb: np.ndarray, table: dict) -> str:
    names = list(table)
    dist = np.linalg.norm(np.array([table[n] for n in names], dtype=np.float32) - rgb, axis=1)
    return names[int(np.argmin(dist))]


def estimate_background(frames: np.ndarray) -> np.ndarray:
    """Most common border colour over (up to 8) frames, as float RGB."""
    idx = np.linspace(0, len(frames) - 1, min(len(frames), 8)).round().astype(int)
    f = frames[idx]
    border = np.concatenate([f[:, 0].reshape(-1, 3), f[:, -1].reshape(-1, 3),
                             f[:, :, 0].reshape(-1, 3), f[:, :, -1].reshape(-1, 3)])
    bins = border // 16
    codes = (bins[:, 0].astype(np.int32) << 8 | bins[:, 1]) << 8 | bins[:, 2]
    values, counts = np.unique(codes, return_counts=True)
    return np.median(border[codes == values[np.argmax(counts)]], axis=0).astype(np.float32)


def _blend_labels(pixels: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """Index of the object colour each pixel best fits as a blend with the background."""
    d = pixels - bg
    e = _COLOR_RGB - bg
    alpha = np.clip(d @ e.T / np.sum(e * e, axis=1), 0.0, 1.2)
    residual = np.linalg.norm(d[:, None, :] - alpha[:, :, None] * e[None], axis=2)
    return np.argmin(residual, axis=1)


def classify_shape(mask: np.ndarray) -> tuple[str, float]:
    """Shape name and half-extent (pixels, as ``SIZES`` measures it) of a binary blob.

    Stars are the only concave shape (solidity well below 1); a triangle fills most of its
    minimum enclosing triangle (others fill <= ~0.6); a circle fills its minimum enclosing
    circle (~1) where a square fills ~0.64.  All of these are rotation invariant.
    """
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    contour = max(contours, key=cv2.contourArea)
    _, radius = cv2.minEnclosingCircle(contour)
    radius += 0.5  # contour runs through boundary pixel centres
    contour_area = cv2.contourArea(contour)
    hull_area = cv2.contourArea(cv2.convexHull(contour))
    if hull_area <= 0:
        return "circle", radius
    if contour_area / hull_area < 0.8:
        return "star", radius
    triangle_area, _ = cv2.minEnclosingTriangle(contour)
    if contour_area / triangle_area > 0.75:
        return "triangle", radius
    if np.count_nonzero(mask) / (np.pi * radius * radius) > 0.8:
        return "circle", radius
    return "square", radius / np.sqrt(2.0)


def _detect(frame: np.ndarray, bg: np.ndarray, min_area: int) -> list[_Detection]:
    """Blobs far from the background, split by colour where two objects touch."""
    h, w = frame.shape[:2]
    pixels = frame.reshape(-1, 3).astype(np.float32)
    fg = (np.linalg.norm(pixels - bg, axis=1) > FOREGROUND_DISTANCE).reshape(h, w).astype(np.uint8)
    kernel = np.ones((3, 3), np.uint8)
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, kernel)
    labels = np.full(h * w, -1)
    flat_fg = fg.reshape(-1).astype(bool)
    labels[flat_fg] = _blend_labels(pixels[flat_fg], bg)
    labels = labels.reshape(h, w)
    n, comp, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    found = []
    for k in range(1, n):
        if stats[k, cv2.CC_STAT_AREA] < min_area:
            continue
        blob = comp == k
        ids, counts = np.unique(labels[blob], return_counts=True)
        keep = [i for i, c in zip(ids, counts) if c >= max(min_area, SPLIT_SHARE * counts.sum())]
        parts = []
        for i in keep if len(keep) > 1 else []:
            sub = cv2.morphologyEx((blob & (labels == i)).astype(np.uint8), cv2.MORPH_OPEN, kernel)
            m, sub_comp, sub_stats, _ = cv2.connectedComponentsWithStats(sub, connectivity=8)
            if m > 1:
                j = 1 + int(np.argmax(sub_stats[1:, cv2.CC_STAT_AREA]))
                if sub_stats[j, cv2.CC_STAT_AREA] >= min_area:
                    parts.append((int(i), sub_comp == j))
        if len(parts) < 2:  # one object (or a split that did not hold up): keep the blob whole
            parts = [(int(ids[np.argmax(counts)]), blob)]
        for color_index, mask in parts:
            ys, xs = np.nonzero(mask)
            shape, radius = classify_shape(mask)
            pos = np.array([(xs.mean() + 0.5) / w, (ys.mean() + 0.5) / h])
            found.append(_Detection(_COLOR_NAMES[color_index], pos, shape, radius))
    return found


def _link(per_frame: list[list[_Detection]]) -> list[dict[int, _Detection]]:
    """Join detections into tracks (frame index -> detection) by position and colour."""
    tracks: list[dict[int, _Detection]] = []
    for t, dets in enumerate(per_frame):
        live = [tr for tr in tracks if max(tr) >= t - 3]
        if live and dets:
            cost = np.array([[np.linalg.norm(tr[max(tr)].pos - d.pos)
                              + (0.0 if tr[max(tr)].color == d.color else COLOR_CHANGE_COST)
                              for d in dets] for tr in live])
            rows, cols = linear_sum_assignment(cost)
            pairs = [(r, c) for r, c in zip(rows, cols) if cost[r, c] < LINK_GATE]
        else:
            pairs = []
        for r, c in pairs:
            live[r][t] = dets[c]
        matched = {c for _, c in pairs}
        tracks += [{t: d} for c, d in enumerate(dets) if c not in matched]
    return tracks


def _vote(values: list[str]) -> str:
    names, counts = np.unique(values, return_counts=True)
    return str(names[np.argmax(counts)])


def turning_points(x: np.ndarray, delta: float = TURN_DELTA) -> list[int]:
    """Indices where a series reverses direction by at least ``delta`` (zig-zag filter)."""
    points: list[int] = []
    trend = 0
    lo = hi = ext = 0
    for i in range(1, len(x)):
        if trend == 0:
            lo = i if x[i] < x[lo] else lo
            hi = i if x[i] > x[hi] else hi
            if x[i] - x[lo] >= delta:
                trend, ext = 1, hi
            elif x[hi] - x[i] >= delta:
                trend, ext = -1, lo
        elif trend * (x[i] - x[ext]) > 0:
            ext = i
        elif trend * (x[ext] - x[i]) >= delta:
            points.append(ext)
            trend, ext = -trend, i
    return points


def _refine(x: np.ndarray, e: int) -> float:
    """Sub-frame time (in frames) of a reversal at index e: where lines fit before and after meet."""
    before = np.arange(max(0, e - 3), e)
    after = np.arange(e + 1, min(len(x), e + 4))
    if len(before) < 2 or len(after) < 2:
        return float(e)
    b1, a1 = np.polyfit(before, x[before], 1)
    b2, a2 = np.polyfit(after, x[after], 1)
    if b1 == b2:
        return float(e)
    return float(np.clip((a2 - a1) / (b1 - b2), e - 1, e + 1))


def classify_track(track: np.ndarray, fps: float, aspect: float = 1.0) -> tuple[str, list[float]]:
    """Motion word and bounce times (seconds) for a normalized track; aspect = height / width."""
    bounces = sorted(_refine(track[:, a], e) / fps for a in (0, 1) for e in turning_points(track[:, a]))
    if bounces:
        return "bouncing", bounces
    k = max(1, min(2, len(track) // 4))
    start, end = np.median(track[:k], axis=0), np.median(track[-k:], axis=0)
    if np.max(np.linalg.norm(track - start, axis=1)) < STILL_EXTENT:
        return "still", []
    dx, dy = end[0] - start[0], (end[1] - start[1]) * aspect
    if min(abs(dx), abs(dy)) > DIAGONAL_RATIO * max(abs(dx), abs(dy)):
        return "diagonal", []
    if abs(dx) >= abs(dy):
        return ("left" if dx < 0 else "right"), []
    return ("up" if dy < 0 else "down"), []


def analyze(frames: np.ndarray, fps: float) -> Analysis:
    """Recover background, objects (colour, shape, size, track) and motion from uint8 (T, H, W, 3)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"expected uint8 frames of shape (T, H, W, 3), got {frames.dtype} {frames.shape}")
    n_frames, h, w = frames.shape[:3]
    bg = estimate_background(frames)
    min_area = max(4, int(round(MIN_AREA_128 * h * w / 128 ** 2)))
    per_frame = [_detect(f, bg, min_area) for f in frames]
    objects = []
    for tr in _link(per_frame):
        if len(tr) < max(1, MIN_COVERAGE * n_frames):
            continue
        times = np.array(sorted(tr))
        pos = np.array([tr[t].pos for t in times])
        track = np.stack([np.interp(np.arange(n_frames), times, pos[:, a]) for a in (0, 1)], axis=1)
        direction, bounces = classify_track(track, fps, h / w)
        radius = np.median([d.radius for d in tr.values()]) / min(h, w)
        objects.append(ObjectAnalysis(
            color=_vote([d.color for d in tr.values()]),
            shape=_vote([d.shape for d in tr.values()]),
            size="large" if radius > SIZE_SPLIT else "small",
            direction=direction,
            track=track,
            bounce_times=bounces,
            coverage=len(tr) / n_frames,
        ))
    return Analysis(background=_nearest(bg, BACKGROUNDS), background_rgb=tuple(int(round(v)) for v in bg),
                    objects=objects, fps=float(fps))
