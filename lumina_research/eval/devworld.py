"""Out-of-world *tuning* clips for the V2A sync bench: where a choice about unfamiliar videos is made.

The out-of-world bench (lumina_research.eval.outworld) must stay out of every choice, yet the training distributions
(lumina_research.world.render, .scenes) do not show how a model fails on videos unlike them: a pipeline setting that
looks neutral there can double the false onsets on other videos.  This third generator, written apart from all three
(it imports none of them), is the set those choices are made on: spinning polygons (squares, triangles, hexagons,
stars) on plain, striped, noisy or vignetted backgrounds; a box of wall bounces (1-2 bodies), a floor under gravity
with decaying bounces, or a row of 2-3 bodies colliding on a line; 8-30 fps; some clips noisy or blurred.  Contact
times come from a 1 ms simulation (wall and body-body contacts faster than MIN_SPEED); the reference soundtrack is a
short noise tap at each contact.
"""

from __future__ import annotations

from typing import Dict, List

import cv2
import numpy as np

DEV_SEED = 11_000_000
RATES = (8.0, 10.0, 14.0, 18.0, 24.0, 30.0)
CANVASES = ((144, 108), (128, 128), (192, 108), (108, 144))
KINDS = ("box", "floor", "line")
SPRITES = {"square": 4, "triangle": 3, "hexagon": 6, "star": 10}
STEP = 0.001            # simulation step (s)
MIN_SPEED = 0.12        # canvas heights per second: slower contacts are silent (a floor bounce this slow ends in rest)
MERGE = 0.03            # contacts closer than this are one (s)
MIN_GAP = 0.12          # a clip's contacts are at least this far apart (s), so each is countable ...
EDGE = 0.1              # ... and not within this of the clip's ends (s)


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    style = int(rng.integers(4))
    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    if style == 0:
        img = np.ones((h, w, 1)) * a
    elif style == 1:
        period = int(rng.integers(6, 24))
        img = np.where((np.arange(w)[None, :, None] // period) % 2 == 0, a, b) * np.ones((h, 1, 1))
    elif style == 2:
        img = a + rng.normal(0, 25, (h, w, 1))
    else:
        yy, xx = np.mgrid[:h, :w]
        r = (np.hypot(xx - w / 2, yy - h / 2) / np.hypot(w / 2, h / 2))[..., None]
        img = a * (1 - r) + b * r
    return np.clip(img, 0, 255).astype(np.float32)


def _polygon(sprite: str, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    n = SPRITES[sprite]
    t = angle + 2 * np.pi * np.arange(n) / n
    rad = np.where(np.arange(n) % 2 == 1, 0.5 * r, r) if sprite == "star" else np.full(n, r)
    return np.stack([cx + rad * np.cos(t), cy + rad * np.sin(t)], -1)


def _simulate(rng: np.random.Generator, kind: str, w: int, h: int, seconds: float):
    """Body radii and per-step (positions (n, 2), angles (n,)), and the contact times (s)."""
    n = 1 if kind == "floor" else int(rng.integers(1, 3)) if kind == "box" else int(rng.integers(2, 4))
    r = rng.uniform(0.06, 0.16, n) * min(w, h)
    pos = np.stack([rng.uniform(r, w - r), rng.uniform(r, h - r)], -1)
    heading = rng.uniform(0, 2 * np.pi, n)
    vel = np.stack([np.cos(heading), np.sin(heading)], -1) * rng.uniform(0.3, 1.2) * w * rng.uniform(0.6, 1.0, (n, 1))
    gravity, restitution = 0.0, 1.0
    if kind == "floor":
        gravity, restitution = rng.uniform(1.0, 3.0) * h, rng.uniform(0.75, 0.95)
        vel[:, 0], vel[:, 1], pos[:, 1] = rng.uniform(-0.3, 0.3, n) * w, 0.0, r + 2
    elif kind == "line":
        r = np.minimum(r, w / (2.5 * n))
        pos[:, 0] = np.clip(np.linspace(0.15 * w, 0.85 * w, n) + rng.uniform(-3, 3, n), r, w - r)
        pos[:, 1], vel[:, 1] = h / 2, 0.0
    angle0, spin = rng.uniform(0, 2 * np.pi, n), rng.uniform(-3, 3, n)
    loud = MIN_SPEED * h
    contacts, states = [], []
    for step in range(int(round(seconds / STEP))):
        vel[:, 1] += gravity * STEP
        pos += vel * STEP
        hit = False
        for i in range(n):
            for axis, size in ((0, w), (1, h)):
                if (pos[i, axis] < r[i] and vel[i, axis] < 0) or (pos[i, axis] > size - r[i] and vel[i, axis] > 0):
                    hit |= abs(vel[i, axis]) > loud
                    vel[i, axis] *= -(restitution if axis == 1 else 1.0)
                    if kind == "floor" and axis == 1 and abs(vel[i, 1]) < loud:  # too slow to bounce again: rests
                        vel[i, 1], pos[i, 1] = 0.0, size - r[i]
            for j in range(i + 1, n):
                d = pos[j] - pos[i]
                dist = float(np.linalg.norm(d))
                normal = d / (dist + 1e-9)
                closing = float(np.dot(vel[i] - vel[j], normal))
                if dist < r[i] + r[j] and closing > 0:  # elastic, masses ~ area
                    mi, mj = r[i] ** 2, r[j] ** 2
                    vel[i] -= 2 * closing * mj / (mi + mj) * normal
                    vel[j] += 2 * closing * mi / (mi + mj) * normal
                    hit |= closing > loud
        if hit and (not contacts or (step + 1) * STEP - contacts[-1] > MERGE):
            contacts.append((step + 1) * STEP)
        states.append((pos.copy(), angle0 + spin * (step + 1) * STEP))
    return r, states, contacts


def dev_world_clip(seed: int, seconds: float = 4.0) -> Dict:
    """One clip: frames uint8 (T, H, W, 3), fps, contact times (s), reference audio (16 kHz), its kind."""
    rng = np.random.default_rng([seed, 7])
    fps = float(rng.choice(RATES))
    w, h = CANVASES[int(rng.integers(len(CANVASES)))]
    kind = KINDS[int(rng.integers(len(KINDS)))]
    r, states, contacts = _simulate(rng, kind, w, h, seconds)
    sprites = [str(rng.choice(list(SPRITES))) for _ in r]
    colours = [tuple(float(c) for c in rng.uniform(0, 255, 3)) for _ in r]
    backdrop = _background(rng, w, h)
    noise = rng.uniform(0, 8) if rng.random() < 0.4 else 0.0
    blur = rng.random() < 0.3
    frames = np.empty((int(round(seconds * fps)), h, w, 3), np.uint8)
    for f in range(len(frames)):
        pos, angles = states[min(int(round(f / fps / STEP)), len(states) - 1)]
        img = backdrop.copy()
        for i in range(len(r)):
            pts = np.round(_polygon(sprites[i], pos[i, 0], pos[i, 1], r[i], angles[i]) * 16).astype(np.int32)
            cv2.fillPoly(img, [pts], colours[i], cv2.LINE_AA, 4)
        if blur:
            img = cv2.GaussianBlur(img, (0, 0), 0.8)
        if noise:
            img = img + rng.normal(0, noise, img.shape)
        frames[f] = np.clip(img, 0, 255).astype(np.uint8)
    return dict(seed=seed, kind=kind, frames=frames, fps=fps, contacts=contacts,
                truth_audio=tap_track(contacts, len(frames) / fps, seed))


def tap_track(contacts, seconds: float, seed: int, sample_rate: int = 16000) -> np.ndarray:
    """The reference soundtrack: a 30 ms exponentially decaying noise tap at each contact."""
    rng = np.random.default_rng([seed, 8])
    wave = np.zeros(int(round(seconds * sample_rate)), np.float32)
    n = int(0.03 * sample_rate)
    for c in contacts:
        i = int(round(c * sample_rate))
        tap = (rng.normal(0, 0.5, n) * np.exp(-np.arange(n) / (0.006 * sample_rate)))[: len(wave) - i]
        wave[i:i + len(tap)] += tap.astype(np.float32)
    return wave


def countable(contacts, seconds: float) -> bool:
    c = np.asarray(contacts)
    return bool(len(c)) and bool(np.all(np.diff(c) >= MIN_GAP)) and c.min() >= EDGE and c.max() <= seconds - EDGE


def dev_world_clips(n: int, seconds: float = 4.0, seed0: int = DEV_SEED, max_tries: int = 20) -> List[Dict]:
    """n tuning clips with countable contacts (seeds from DEV_SEED, skipping the others)."""
    clips: List[Dict] = []
    seed = seed0
    while len(clips) < n and seed < seed0 + n * max_tries:
        clip = dev_world_clip(seed, seconds)
        seed += 1
        if countable(clip["contacts"], seconds):
            clips.append(clip)
    return clips
