"""Varied training scenes for V2A: everything that should not matter varies, contacts make the sound.

The procedural world (lumina_research.world) always shows 1-3 flat shapes of two sizes moving at 0.1-0.6 frame
widths per second on a dark plain background.  A model trained only on it learns those looks, not "a hit
when something strikes a wall or another object".  These scenes vary what should not matter:

* objects: 1-4 of the world's shapes, sizes 10-40% of the frame's short side, any colour (half from the
  world's palette, half random, some with an outline), on light, dark, gradient or textured backgrounds;
* motion: 0.15-1.6 frame widths per second, constant velocity or constant acceleration of any direction
  (gravity-like, with restitution 0.6-1), elastic collisions between objects, and open walls through which
  objects leave (or enter) the frame without a sound;
* video: 8-30 fps, frame sizes and aspects, Gaussian blur, pixel noise, JPEG compression, small camera shake.

The soundtrack (lumina_research.world.sound.soundtrack) keeps the world's rules where they apply: an object of a
palette colour hums its colour's pitch with its shape's timbre (fading as it leaves the frame), other
colours are silent, and every contact (wall or object-object, above a minimum impact speed) is a click whose
loudness grows with the impact speed.  Contact times come from the simulation (4 ms steps), not the pixels.
A scene busier than 2.5 contacts per second is slowed down (a click the video cannot place teaches the model
to scatter clicks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from lumina_research.world.render import draw_object
from lumina_research.world.vocabulary import COLORS, SHAPES
from lumina_research.world.sound import COLOR_PITCH_HZ, soundtrack

SCENE_FPS = (8, 10, 12, 15, 20, 24, 25, 30)
SCENE_SECONDS = (2.0, 4.0)
SIM_DT = 0.004           # seconds per simulation step
MIN_IMPACT = 0.08        # frame widths per second: slower contacts are silent (resting, grazing)
MERGE_SECONDS = 0.03     # contacts closer than this make one click
MAX_CONTACT_RATE = 2.5   # contacts per second: a busier scene is slowed down (clicks must stay countable)
MIN_RADIUS = 0.05        # of the short side: at the encoders' 32x32 a contact stays visible (>= 3 px across)
CLEAN_SHARE = 0.5        # scenes where only the look varies: the step from the world to everything at once
FRAME_SIZES = ((64, 64), (96, 96), (128, 128), (96, 72), (128, 72), (72, 96))


@dataclass
class Body:
    shape: str
    color: Tuple[int, int, int]
    outline: Optional[Tuple[int, int, int]]
    radius: float                 # pixels
    pos: np.ndarray               # (2,) pixels
    vel: np.ndarray               # (2,) pixels per second
    pitch: Optional[float]        # Hz, or None for a silent colour


@dataclass
class Motion:
    accel: np.ndarray             # (2,) pixels / s^2
    restitution: float
    walls: Tuple[bool, bool, bool, bool]   # left, right, top, bottom closed


def simulate(bodies: List[Body], motion: Motion, width: int, height: int, seconds: float,
             times: np.ndarray) -> Tuple[np.ndarray, List[Tuple[float, float]]]:
    """Positions (len(times), n, 2) at the frame times and the contacts [(time, impact speed px/s)]."""
    n = len(bodies)
    pos = np.array([b.pos for b in bodies], dtype=np.float64)
    vel = np.array([b.vel for b in bodies], dtype=np.float64)
    rad = np.array([b.radius for b in bodies])
    mass = rad ** 2
    steps = int(np.ceil(seconds / SIM_DT)) + 1
    track = np.empty((steps, n, 2))
    contacts: List[Tuple[float, float]] = []
    lo_hi = ((0.0, float(width)), (0.0, float(height)))
    min_impact = MIN_IMPACT * width
    for s in range(steps):
        track[s] = pos
        t = (s + 1) * SIM_DT
        vel += motion.accel * SIM_DT
        pos += vel * SIM_DT
        for axis in (0, 1):
            lo, hi = lo_hi[axis]
            closed_lo, closed_hi = motion.walls[2 * axis], motion.walls[2 * axis + 1]
            for i in range(n):
                if closed_lo and pos[i, axis] - rad[i] < lo and vel[i, axis] < 0:
                    pos[i, axis] = lo + rad[i]
                    speed = -vel[i, axis]
                    vel[i, axis] = speed * motion.restitution if speed > min_impact else 0.0
                    if speed > min_impact:
                        contacts.append((t, speed))
                elif closed_hi and pos[i, axis] + rad[i] > hi and vel[i, axis] > 0:
                    pos[i, axis] = hi - rad[i]
                    speed = vel[i, axis]
                    vel[i, axis] = -speed * motion.restitution if speed > min_impact else 0.0
                    if speed > min_impact:
                        contacts.append((t, speed))
        for i in range(n):
            for j in range(i + 1, n):
                d = pos[j] - pos[i]
                dist = float(np.hypot(d[0], d[1]))
                if dist >= rad[i] + rad[j] or dist == 0.0:
                    continue
                normal = d / dist
                approach = float(np.dot(vel[i] - vel[j], normal))
                if approach <= 0:
                    continue
                impulse = 2.0 * approach / (mass[i] + mass[j])
                vel[i] -= impulse * mass[j] * normal
                vel[j] += impulse * mass[i] * normal
                if approach > min_impact:
                    contacts.append((t, approach))
    idx = np.clip(np.round(times / SIM_DT).astype(int), 0, steps - 1)
    merged: List[Tuple[float, float]] = []
    for time, speed in sorted(contacts):
        if time >= seconds:
            break
        if merged and time - merged[-1][0] < MERGE_SECONDS:
            merged[-1] = (merged[-1][0], max(merged[-1][1], speed))
        else:
            merged.append((time, speed))
    return track[idx], merged


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    kind = rng.choice(["flat", "flat", "gradient", "noise", "stripes", "checker"])
    base = rng.integers(0, 256, 3).astype(np.float32)
    if kind == "flat":
        return np.broadcast_to(base, (height, width, 3)).copy()
    other = rng.integers(0, 256, 3).astype(np.float32)
    if kind == "gradient":
        ramp = np.linspace(0.0, 1.0, height if rng.random() < 0.5 else width, dtype=np.float32)
        ramp = ramp[:, None] if len(ramp) == height else ramp[None, :]
        ramp = np.broadcast_to(ramp, (height, width))[..., None]
        return base * (1 - ramp) + other * ramp
    if kind == "noise":
        cells = rng.random((int(rng.integers(3, 12)), int(rng.integers(3, 12)), 1)).astype(np.float32)
        smooth = cv2.resize(cells, (width, height), interpolation=cv2.INTER_CUBIC)[..., None]
        grain = rng.random((height, width, 1)).astype(np.float32) * 0.3
        mix = np.clip(smooth * 0.7 + grain, 0, 1)
        return base * (1 - mix) + other * mix
    period = int(rng.integers(6, 24))
    yy, xx = np.mgrid[0:height, 0:width]
    if kind == "stripes":
        mask = ((xx + yy * rng.integers(0, 2)) // period) % 2
    else:
        mask = (xx // period + yy // period) % 2
    return np.where(mask[..., None] == 1, other, base * 0.5 + other * 0.5).astype(np.float32)


def _colour(rng: np.random.Generator) -> Tuple[Tuple[int, int, int], Optional[float]]:
    """A palette colour (slightly jittered) with its pitch, or a random colour that stays silent."""
    if rng.random() < 0.5:
        name = str(rng.choice(list(COLORS)))
        rgb = np.clip(np.array(COLORS[name]) + rng.integers(-12, 13, 3), 0, 255)
        return tuple(int(c) for c in rgb), COLOR_PITCH_HZ[name]
    return tuple(int(c) for c in rng.integers(0, 256, 3)), None


def sample_bodies(rng: np.random.Generator, width: int, height: int, open_walls: bool, max_count: int = 4) -> List[Body]:
    short = min(width, height)
    bodies: List[Body] = []
    count = min(max_count, int(rng.choice([1, 1, 2, 2, 3, 4])))
    for _ in range(count * 20):
        if len(bodies) == count:
            break
        r = float(rng.uniform(MIN_RADIUS, 0.2)) * short
        if r * 2.2 > short:
            continue
        pos = np.array([rng.uniform(r, width - r), rng.uniform(r, height - r)])
        if any(np.hypot(*(pos - b.pos)) < r + b.radius + 1 for b in bodies):
            continue
        speed = float(np.exp(rng.uniform(np.log(0.15), np.log(1.6)))) * width
        angle = rng.uniform(0, 2 * np.pi)
        vel = speed * np.array([np.cos(angle), np.sin(angle)])
        if open_walls and rng.random() < 0.3:  # enters from outside
            pos = pos - vel * rng.uniform(0.3, 1.0)
        color, pitch = _colour(rng)
        outline = tuple(int(c) for c in rng.integers(0, 256, 3)) if rng.random() < 0.2 else None
        bodies.append(Body(str(rng.choice(SHAPES)), color, outline, r, pos, vel, pitch))
    return bodies


def _degrade(frame: np.ndarray, settings: Dict, rng: np.random.Generator) -> np.ndarray:
    out = frame
    if settings["shake"] > 0:
        dx, dy = rng.normal(0, settings["shake"], 2)
        m = np.float32([[1, 0, dx], [0, 1, dy]])
        out = cv2.warpAffine(out, m, (out.shape[1], out.shape[0]), borderMode=cv2.BORDER_REFLECT)
    if settings["blur"] > 0:
        out = cv2.GaussianBlur(out, (0, 0), settings["blur"])
    if settings["noise"] > 0:
        out = out + rng.normal(0, settings["noise"], out.shape).astype(np.float32)
    out = np.clip(out, 0, 255).astype(np.uint8)
    if settings["jpeg"]:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, settings["jpeg"]])
        out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return out


def render_scene(seed: int, fps: float, seconds: float, sample_rate: int = 16000, clean: bool = False) -> Dict:
    """One varied scene: frames uint8 (T, H, W, 3), the soundtrack and the contact times.

    ``clean``: only the look varies (1-2 objects, constant velocity, closed walls, no blur, noise, JPEG or shake).
    """
    rng = np.random.default_rng([seed, 33])
    width, height = FRAME_SIZES[int(rng.integers(len(FRAME_SIZES)))]
    mode = "walls" if clean else rng.choice(["walls", "walls", "accel", "open"])
    walls = (True, True, True, True)
    if mode == "open":
        walls = tuple(bool(rng.random() < 0.5) for _ in range(4))
    accel = np.zeros(2)
    if mode == "accel":
        a = float(rng.uniform(0.5, 3.0)) * width
        angle = rng.uniform(0, 2 * np.pi) if rng.random() < 0.5 else np.pi / 2  # half of them: gravity down
        accel = a * np.array([np.cos(angle), np.sin(angle)])
    motion = Motion(accel, float(rng.uniform(0.6, 1.0)) if mode == "accel" else 1.0, walls)
    bodies = sample_bodies(rng, width, height, mode == "open", 2 if clean else 4)
    n_frames = max(1, int(round(seconds * fps)))
    times = np.arange(n_frames) / fps
    for _ in range(6):
        track, contacts = simulate(bodies, motion, width, height, seconds, times)
        if len(contacts) <= MAX_CONTACT_RATE * seconds:
            break
        for b in bodies:
            b.vel = b.vel * 0.5
        motion.accel = motion.accel * 0.25
    background = _background(rng, width, height)
    state = {"shake": float(rng.choice([0.0, 0.0, rng.uniform(0.3, 1.5)])),
             "blur": float(rng.choice([0.0, rng.uniform(0.5, 1.5)])),
             "noise": float(rng.choice([0.0, rng.uniform(2.0, 12.0)])),
             "jpeg": int(rng.choice([0, int(rng.integers(20, 90))]))}
    if clean:
        state = dict.fromkeys(state, 0)
    frames = np.empty((n_frames, height, width, 3), dtype=np.uint8)
    visible = np.zeros((n_frames, len(bodies)))
    for k in range(n_frames):
        img = background.copy()
        for i, b in enumerate(bodies):
            x, y = track[k, i]
            if b.outline is not None:
                draw_object(img, b.shape, b.outline, x - 0.5, y - 0.5, b.radius + max(1.0, 0.1 * b.radius))
            draw_object(img, b.shape, b.color, x - 0.5, y - 0.5, b.radius)
            inside_x = np.clip(min(x + b.radius, width) - max(x - b.radius, 0), 0, 2 * b.radius)
            inside_y = np.clip(min(y + b.radius, height) - max(y - b.radius, 0), 0, 2 * b.radius)
            visible[k, i] = inside_x * inside_y / (2 * b.radius) ** 2
        frames[k] = _degrade(img, state, rng)
    n = int(round(n_frames / fps * sample_rate))
    sample_t = np.arange(n) / sample_rate
    tones = [(b.pitch, b.shape, np.interp(sample_t, times, visible[:, i]))
             for i, b in enumerate(bodies) if b.pitch is not None]
    hits = [t for t, _ in contacts]
    gains = [float(np.clip(0.55 + 0.45 * s / (0.8 * width), 0.55, 1.0)) for _, s in contacts]
    wave = soundtrack(tones, hits, n_frames / fps, seed, sample_rate=sample_rate, hit_gains=gains)
    return dict(frames=frames, fps=float(fps), wave=wave, contacts=hits, size=(width, height), mode=str(mode))


def scene_examples(n: int, seed0: int = 3_000_000, enc_size: int = 32, visual: Optional[Tuple[int, float]] = None,
                   clean_share: float = CLEAN_SHARE, cues: Sequence[str] = ()) -> Iterator[Dict]:
    """n varied training examples (lumina_research.train.v2a_data.make_example dicts, no caption); fps, length
    and (for clean_share of them) a clean scene vary by seed."""
    from lumina_research.train.v2a_data import make_example

    for i in range(n):
        seed = seed0 + i
        rng = np.random.default_rng([seed, 34])
        fps = float(rng.choice(SCENE_FPS))
        seconds = float(rng.choice(SCENE_SECONDS))
        scene = render_scene(seed, fps, seconds, clean=bool(rng.random() < clean_share))
        yield make_example(scene["frames"], fps, scene["wave"], "", enc_size, visual, cues, seed=seed)
