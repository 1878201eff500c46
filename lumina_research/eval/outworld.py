"""Out-of-world clips for the V2A sync bench: videos that the training renderers never made.

Written apart from lumina_research.world.render and lumina_research.world.scenes (it shares no code with them) and
kept out of any tuning: sprites they do not draw (shaded balls, rings, two-colour beach balls, framed boxes,
ellipses), scenes they do not stage (gravity with a floor and decaying bounces, a billiard table of colliding balls,
the plain bouncing ball of issue 33 on a flat background), frame sizes, speeds and rates of their own (9-29.97 fps).
Each clip carries its exact contact times (1 ms integration, wall and ball-ball contacts above a minimum impact
speed) and a reference soundtrack of wooden knocks (a damped 0.7-2 kHz resonance, not the world's noise click) that
validates the metric.
"""

from __future__ import annotations

from typing import Dict, List

import cv2
import numpy as np

OUT_OF_WORLD_SEED = 9_100_000
RATES = (9.0, 12.0, 15.0, 16.0, 20.0, 25.0, 29.97)
CANVASES = ((160, 120), (112, 112), (176, 99), (120, 160))
KINDS = ("gravity", "billiards", "plain")
SPRITES = ("ball", "ring", "beach", "box", "ellipse")
STEP = 0.001            # integration step (s)
MIN_SPEED = 0.12        # canvas heights per second: softer contacts are silent and the sprite comes to rest
MIN_GAP = 0.15          # contacts of one clip are at least this far apart (s), so each is countable
EDGE = 0.1              # and not within this of the clip's ends (s)


def _backdrop(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    style = int(rng.integers(4))
    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    y = np.linspace(0, 1, h)[:, None, None]
    x = np.linspace(0, 1, w)[None, :, None]
    if style == 0:      # sky: vertical blend
        img = a * (1 - y) + b * y + 0 * x
    elif style == 1:    # wood: sinusoidal grain
        grain = 0.5 + 0.5 * np.sin(2 * np.pi * (x * rng.uniform(3, 9) + 0.3 * np.sin(2 * np.pi * y * 2)))
        img = a * grain + b * (1 - grain)
    elif style == 2:    # paper with grid lines
        img = np.ones((h, w, 1)) * np.maximum(a, 160)
        step = int(rng.integers(10, 20))
        img = np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img
        img[::step, :] = b * 0.6
        img[:, ::step] = b * 0.6
    else:               # blurred blobs, photo-like
        img = rng.uniform(0, 255, (max(2, h // 20), max(2, w // 20), 3))
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
        img = cv2.GaussianBlur(img, (0, 0), 4)
    return np.broadcast_to(img, (h, w, 3)).astype(np.float32).copy()


def _paint(img: np.ndarray, sprite: str, cx: float, cy: float, hx: float, hy: float, c1, c2) -> None:
    s = 4  # cv2 sub-pixel shift bits
    k = 1 << s
    ctr = (int(cx * k), int(cy * k))
    if sprite == "ball":
        cv2.circle(img, ctr, int(hx * k), c1, -1, cv2.LINE_AA, s)
        hl = (int((cx - 0.35 * hx) * k), int((cy - 0.35 * hy) * k))
        cv2.circle(img, hl, int(0.35 * hx * k), tuple(0.5 * np.array(c1) + 127), -1, cv2.LINE_AA, s)
    elif sprite == "ring":
        cv2.circle(img, ctr, int(hx * 0.8 * k), c1, max(2, int(hx * 0.35)), cv2.LINE_AA, s)
    elif sprite == "beach":
        cv2.ellipse(img, ctr, (int(hx * k), int(hy * k)), 0, 0, 180, c1, -1, cv2.LINE_AA, s)
        cv2.ellipse(img, ctr, (int(hx * k), int(hy * k)), 0, 180, 360, c2, -1, cv2.LINE_AA, s)
    elif sprite == "box":
        p1 = (int((cx - hx) * k), int((cy - hy) * k))
        p2 = (int((cx + hx) * k), int((cy + hy) * k))
        cv2.rectangle(img, p1, p2, c2, -1, cv2.LINE_AA, s)
        inset = max(2.0, 0.25 * min(hx, hy))
        q1 = (int((cx - hx + inset) * k), int((cy - hy + inset) * k))
        q2 = (int((cx + hx - inset) * k), int((cy + hy - inset) * k))
        cv2.rectangle(img, q1, q2, c1, -1, cv2.LINE_AA, s)
    else:
        cv2.ellipse(img, ctr, (int(hx * k), int(hy * k)), 0, 0, 360, c1, -1, cv2.LINE_AA, s)


def _layout(rng: np.random.Generator, kind: str, w: int, h: int) -> Dict:
    count = {"gravity": int(rng.integers(1, 3)), "billiards": int(rng.integers(2, 4)), "plain": 1}[kind]
    bodies = []
    for _ in range(count * 30):
        if len(bodies) == count:
            break
        if kind == "billiards":
            sprite = str(rng.choice(["ball", "ring", "beach"]))
        elif kind == "plain":
            sprite = "ball"
        else:
            sprite = str(rng.choice(SPRITES))
        r = rng.uniform(0.04, 0.22) * min(w, h)
        aspect = rng.uniform(0.6, 1.6) if sprite in ("box", "ellipse") else 1.0
        hx, hy = r * min(1.0, aspect), r * min(1.0, 1.0 / aspect)
        p = np.array([rng.uniform(hx, w - hx), rng.uniform(hy, h * (0.5 if kind == "gravity" else 1.0) - hy)])
        if any(np.hypot(*(p - q["p"])) < max(hx, hy) + q["r"] + 2 for q in bodies):
            continue
        speed = rng.uniform(*((0.15, 0.5) if kind == "billiards" else (0.25, 1.3))) * h
        ang = rng.uniform(0, 2 * np.pi)
        plain = kind == "plain"
        colour = rng.uniform(0, 255, 3) if not plain else np.array([230.0, 40.0, 40.0])
        bodies.append(dict(sprite=sprite, hx=hx, hy=hy, r=max(hx, hy), p=p, v=speed * np.array([np.cos(ang), np.sin(ang)]),
                           c1=tuple(float(c) for c in colour), c2=tuple(float(c) for c in rng.uniform(0, 255, 3))))
    return dict(bodies=bodies, gravity=rng.uniform(0.8, 2.5) * h if kind == "gravity" else 0.0,
                bounce=rng.uniform(0.75, 0.95) if kind == "gravity" else 1.0)


def _integrate(layout: Dict, w: int, h: int, seconds: float, frame_times: np.ndarray):
    """Sprite centres at the frame times (T, n, 2) and the contact times (s)."""
    bodies = layout["bodies"]
    p = np.stack([b["p"] for b in bodies]).astype(np.float64)
    v = np.stack([b["v"] for b in bodies]).astype(np.float64)
    half = np.array([[b["hx"], b["hy"]] for b in bodies])
    rad = np.array([b["r"] for b in bodies])
    m = rad ** 2
    floor_speed = MIN_SPEED * h
    n_steps = int(round(seconds / STEP)) + 1
    centres = np.empty((n_steps, len(bodies), 2))
    hits: List[float] = []
    for k in range(n_steps):
        centres[k] = p
        now = (k + 1) * STEP
        v[:, 1] += layout["gravity"] * STEP
        p += v * STEP
        low, high = half, np.array([w, h]) - half
        for axis in range(2):
            under = (p[:, axis] < low[:, axis]) & (v[:, axis] < 0)
            over = (p[:, axis] > high[:, axis]) & (v[:, axis] > 0)
            for i in np.nonzero(under | over)[0]:
                impact = abs(v[i, axis])
                p[i, axis] = low[i, axis] if under[i] else high[i, axis]
                if impact > floor_speed:
                    v[i, axis] = -v[i, axis] * layout["bounce"]
                    hits.append(now)
                else:
                    v[i, axis] = 0.0
        for i in range(len(bodies)):
            for j in range(i + 1, len(bodies)):
                gap = p[j] - p[i]
                dist = np.linalg.norm(gap)
                if dist == 0 or dist > rad[i] + rad[j]:
                    continue
                unit = gap / dist
                closing = np.dot(v[i] - v[j], unit)
                if closing > 0:
                    v[i] -= 2 * m[j] / (m[i] + m[j]) * closing * unit
                    v[j] += 2 * m[i] / (m[i] + m[j]) * closing * unit
                    if closing > floor_speed:
                        hits.append(now)
    rows = np.clip(np.round(frame_times / STEP).astype(int), 0, n_steps - 1)
    return centres[rows], sorted(hits)


def knock_track(contacts, seconds: float, seed: int, sample_rate: int = 16000) -> np.ndarray:
    """The reference soundtrack: a 40 ms wooden knock (damped resonance + a little noise) at each contact."""
    rng = np.random.default_rng([seed, 5])
    n = int(round(seconds * sample_rate))
    out = np.zeros(n)
    t = np.arange(int(0.04 * sample_rate)) / sample_rate
    for c in contacts:
        start = int(round(c * sample_rate))
        if start >= n:
            continue
        f = rng.uniform(700, 2000)
        knock = np.sin(2 * np.pi * f * t) * np.exp(-t / 0.008) + 0.3 * rng.normal(0, 1, len(t)) * np.exp(-t / 0.003)
        stop = min(n, start + len(t))
        out[start:stop] += 0.6 * knock[:stop - start]
    return (out / max(1.0, np.abs(out).max() / 0.9)).astype(np.float32)


def out_of_world_clip(seed: int, seconds: float = 4.0) -> Dict:
    """One clip: frames uint8 (T, H, W, 3), fps, contact times, reference audio, its kind (gravity/billiards/plain)."""
    rng = np.random.default_rng([seed, 91])
    kind = KINDS[int(rng.integers(len(KINDS)))]
    w, h = CANVASES[int(rng.integers(len(CANVASES)))]
    fps = 16.0 if kind == "plain" else float(RATES[int(rng.integers(len(RATES)))])
    layout = _layout(rng, kind, w, h)
    n_frames = int(round(seconds * fps))
    frame_times = np.arange(n_frames) / fps
    centres, contacts = _integrate(layout, w, h, n_frames / fps, frame_times)
    if kind == "plain":
        back = np.full((h, w, 3), 235.0, dtype=np.float32)
    else:
        back = _backdrop(rng, w, h)
    frames = np.empty((n_frames, h, w, 3), dtype=np.uint8)
    for k in range(n_frames):
        img = back.copy()
        for b, (cx, cy) in zip(layout["bodies"], centres[k]):
            _paint(img, b["sprite"], cx, cy, b["hx"], b["hy"], b["c1"], b["c2"])
        frames[k] = np.clip(img, 0, 255).astype(np.uint8)
    return dict(seed=seed, kind=kind, frames=frames, fps=fps, contacts=contacts, size=(w, h),
                truth_audio=knock_track(contacts, n_frames / fps, seed))


def countable(contacts, seconds: float) -> bool:
    c = np.asarray(contacts)
    return (len(c) > 0 and c[0] >= EDGE and c[-1] <= seconds - EDGE
            and (len(c) < 2 or float(np.diff(c).min()) >= MIN_GAP))


def out_of_world_clips(n: int, seconds: float = 4.0, seed0: int = OUT_OF_WORLD_SEED, max_tries: int = 20) -> List[Dict]:
    """n held-out clips with at least one contact, contacts MIN_GAP apart and EDGE inside the clip."""
    clips: List[Dict] = []
    seed = seed0
    while len(clips) < n and seed < seed0 + n * max_tries:
        clip = out_of_world_clip(seed, seconds)
        seed += 1
        if countable(clip["contacts"], len(clip["frames"]) / clip["fps"]):
            clips.append(clip)
    return clips
