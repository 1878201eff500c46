"""A procedural world of flat-colour shapes, sampled from a seed and rendered at any size.

The world exists so that text-to-video training and evaluation have data whose every
fact (colours, shapes, motion, wall bounces) is known exactly.  A ``Scene`` stores
positions in normalized ``[0, 1]`` coordinates (x to the right, y downwards) so the
same scene can be rendered at any resolution, frame rate or length.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import cv2
import numpy as np

from .captions import scene_caption
from .scene import Scene, SceneObject
from .vocabulary import BACKGROUNDS, COLORS, MOTIONS, SHAPES

# Object diameter (or side) as a fraction of the frame's shorter side.
SIZES = {"small": 0.18, "large": 0.3}

# Two pairings of the shapes; between them every shape meets two of the other three.  A scene re-rendered
# with one of them is its shape twin: same pixels everywhere except where the shapes differ.
SHAPE_SWAPS = ({"circle": "square", "square": "circle", "triangle": "star", "star": "triangle"},
               {"circle": "triangle", "triangle": "circle", "square": "star", "star": "square"})

# Speeds are in frame widths per second.
SPEED_RANGE = (0.1, 0.6)
BOUNCE_SPEED_RANGE = (0.3, 0.6)

_AXIS_DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
_DIAGONAL = 1.0 / np.sqrt(2.0)
DIAGONAL_HEADINGS = {
    "up-left": (-_DIAGONAL, -_DIAGONAL),
    "up-right": (_DIAGONAL, -_DIAGONAL),
    "down-left": (-_DIAGONAL, _DIAGONAL),
    "down-right": (_DIAGONAL, _DIAGONAL),
}

_SUBPIXEL_BITS = 4  # cv2 drawing "shift": positions move smoothly, not in whole pixels
_PLACEMENT_TRIES = 50


@dataclass
class ObjectTruth:
    """Ground truth for one object; ``track`` holds normalized centres, shape (T, 2)."""

    color: str
    shape: str
    size: str
    motion: str
    speed: float
    track: np.ndarray


@dataclass
class Truth:
    """Ground truth for a rendered clip; ``bounces`` lists (time in seconds, object index)."""

    seed: int
    background: str
    objects: list[ObjectTruth]
    bounces: list[tuple[float, int]]
    facts: dict
    fps: float
    seconds: float
    width: int
    height: int


@dataclass
class Clip:
    """Rendered RGB frames, uint8 (T, H, W, 3), with their caption and ground truth."""

    frames: np.ndarray
    fps: float
    caption: str
    truth: Truth = field(repr=False)

    @property
    def seconds(self) -> float:
        return self.frames.shape[0] / self.fps


def _radii(size: str, width: int, height: int) -> tuple[float, float]:
    """Half-extent of an object in normalized x and y units for a given frame size."""
    r_px = SIZES[size] * min(width, height) / 2.0
    return r_px / width, r_px / height


def _velocity(obj: SceneObject, width: int, height: int) -> tuple[float, float]:
    """Normalized velocity per second; speed is in frame widths, so y scales by W/H."""
    return obj.speed * obj.direction[0], obj.speed * obj.direction[1] * width / height


def _fold(u: np.ndarray, span: float) -> np.ndarray:
    """Map an unbounded coordinate (measured from the low wall) onto [0, span] by reflection."""
    if span <= 0:
        return np.zeros_like(u)
    m = np.mod(u, 2.0 * span)
    return np.where(m <= span, m, 2.0 * span - m)


def _axis_bounces(u0: float, v: float, span: float, seconds: float) -> list[float]:
    """Times in (0, seconds) when an unfolded coordinate crosses a wall (a multiple of span)."""
    if v == 0 or span <= 0:
        return []
    if v > 0:
        k = np.floor(u0 / span) + 1
        step = 1
    else:
        k = np.ceil(u0 / span) - 1
        step = -1
    times = []
    while True:
        t = (k * span - u0) / v
        if t >= seconds:
            return times
        if t > 0:
            times.append(float(t))
        k += step


def object_track(obj: SceneObject, times: np.ndarray, width: int, height: int) -> np.ndarray:
    """Normalized centre positions (len(times), 2); objects reflect off the frame edges."""
    rx, ry = _radii(obj.size, width, height)
    vx, vy = _velocity(obj, width, height)
    times = np.asarray(times, dtype=np.float64)
    out = np.empty((times.size, 2))
    for axis, (r, v) in enumerate(((rx, vx), (ry, vy))):
        span = 1.0 - 2.0 * r
        out[:, axis] = r + _fold(obj.start[axis] - r + v * times, span) if span > 0 else 0.5
    return out


def object_bounces(obj: SceneObject, seconds: float, width: int, height: int) -> list[float]:
    """Sorted wall-reflection times of one object in (0, seconds)."""
    rx, ry = _radii(obj.size, width, height)
    vx, vy = _velocity(obj, width, height)
    times = []
    for axis, (r, v) in enumerate(((rx, vx), (ry, vy))):
        times += _axis_bounces(obj.start[axis] - r, v, 1.0 - 2.0 * r, seconds)
    return sorted(times)


def _sample_object(rng: np.random.Generator, color: str, shape: str, motion: str,
                   speed: float | None, seconds: float) -> SceneObject:
    """Draw size, speed, direction and start so the motion reads as its name over ``seconds``.

    Straight movers get a speed and start that keep them inside the frame for the whole
    duration when possible (else they start at the far wall and reflect once); bouncing
    objects are aimed so their first wall hit falls at 25-60 % of the duration.
    """
    size = str(rng.choice(list(SIZES)))
    r = SIZES[size] / 2.0  # placement assumes a square frame
    lo, hi = r, 1.0 - r
    span = hi - lo
    start = [float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi))]
    if motion == "still":
        return SceneObject(shape, color, size, motion, 0.0, (start[0], start[1]), (0.0, 0.0))
    if motion == "bouncing":
        angle = np.deg2rad(rng.uniform(20.0, 70.0))
        direction = (float(np.cos(angle) * rng.choice([-1, 1])), float(np.sin(angle) * rng.choice([-1, 1])))
        if speed is None:
            speed = float(rng.uniform(*BOUNCE_SPEED_RANGE))
        axis = int(rng.integers(2))
        travel = speed * abs(direction[axis]) * rng.uniform(0.25, 0.6) * seconds
        start[axis] = float(np.clip(hi - travel if direction[axis] > 0 else lo + travel, lo, hi))
        return SceneObject(shape, color, size, motion, speed, (start[0], start[1]), direction)
    if motion == "diagonal":
        direction = DIAGONAL_HEADINGS[str(rng.choice(list(DIAGONAL_HEADINGS)))]
    else:
        direction = _AXIS_DIRECTIONS[motion]
    if speed is None:
        fit = min(span / (seconds * abs(c)) for c in direction if c != 0)
        top = min(SPEED_RANGE[1], fit)
        speed = float(rng.uniform(SPEED_RANGE[0], top)) if top > SPEED_RANGE[0] else SPEED_RANGE[0]
    for axis, c in enumerate(direction):
        if c == 0:
            continue
        travel = speed * abs(c) * seconds
        if travel >= span:
            start[axis] = lo if c > 0 else hi
        else:
            start[axis] = float(rng.uniform(lo, hi - travel) if c > 0 else rng.uniform(lo + travel, hi))
    return SceneObject(shape, color, size, motion, speed, (start[0], start[1]), direction)


def _overlaps(objects: list[SceneObject], seconds: float) -> bool:
    """True if any two objects come closer than touching during the clip (square frame)."""
    times = np.linspace(0.0, seconds, 33)
    tracks = [object_track(o, times, 1, 1) for o in objects]
    for i in range(len(objects)):
        for j in range(i + 1, len(objects)):
            gap = (SIZES[objects[i].size] + SIZES[objects[j].size]) / 2.0
            if np.min(np.linalg.norm(tracks[i] - tracks[j], axis=1)) < gap:
                return True
    return False


def sample_scene(seed: int, *, n_objects: int | None = None, motion: str | None = None,
                 speed: float | None = None, background: str | None = None,
                 colors: tuple[str, ...] | None = None, shapes: tuple[str, ...] | None = None,
                 seconds: float = 2.0) -> Scene:
    """Draw a scene deterministically from ``seed``.

    Unset arguments are sampled: 1-3 objects with distinct colours, random shapes, sizes
    and motions.  ``motion``/``speed`` apply to every object; ``colors``/``shapes`` give
    one entry per object.  ``seconds`` is the clip length the placement is planned for.
    Objects are re-drawn (a bounded number of times) until they never touch each other.
    """
    rng = np.random.default_rng(seed)
    if n_objects is None:
        n_objects = len(colors) if colors is not None else int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2]))
    if not 1 <= n_objects <= 3:
        raise ValueError(f"n_objects must be 1..3, got {n_objects}")
    for name, value, allowed in (("motion", motion, MOTIONS), ("background", background, BACKGROUNDS)):
        if value is not None and value not in allowed:
            raise ValueError(f"unknown {name} {value!r}; expected one of {list(allowed)}")
    if background is None:
        background = str(rng.choice(list(BACKGROUNDS)))
    if colors is None:
        colors = tuple(str(c) for c in rng.choice(list(COLORS), size=n_objects, replace=False))
    if shapes is None:
        shapes = tuple(str(s) for s in rng.choice(SHAPES, size=n_objects))
    if len(colors) != n_objects or len(shapes) != n_objects:
        raise ValueError("colors and shapes need one entry per object")
    motions = [motion or str(rng.choice(MOTIONS)) for _ in range(n_objects)]
    for _ in range(_PLACEMENT_TRIES):
        objects = [_sample_object(rng, c, s, m, speed, seconds) for c, s, m in zip(colors, shapes, motions)]
        if not _overlaps(objects, seconds):
            break
    return Scene(seed=seed, background=background, objects=tuple(objects))


def edited(scene: Scene, field: str, mapping: dict[str, str]) -> Scene:
    """`scene` with each object's `field` ("shape", "motion", ...) mapped through `mapping`; objects keep their
    starts, speeds and headings, so a shape-edited scene moves exactly like the original."""
    return dataclasses.replace(scene, objects=tuple(
        dataclasses.replace(o, **{field: mapping.get(getattr(o, field), getattr(o, field))}) for o in scene.objects))


def _shape_points(shape: str, cx: float, cy: float, r: float) -> np.ndarray:
    """Polygon vertices (pixels) of an upright square, triangle or five-pointed star."""
    if shape == "square":
        pts = [(-r, -r), (r, -r), (r, r), (-r, r)]
    elif shape == "triangle":
        angles = np.deg2rad([-90.0, 30.0, 150.0])
        pts = list(zip(r * np.cos(angles), r * np.sin(angles)))
    elif shape == "star":
        angles = np.deg2rad(-90.0 + 36.0 * np.arange(10))
        radii = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
        pts = list(zip(radii * np.cos(angles), radii * np.sin(angles)))
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return np.array([(cx + x, cy + y) for x, y in pts])


def draw_object(img: np.ndarray, shape: str, color: tuple[int, int, int], cx: float, cy: float,
                r: float) -> None:
    """Draw a filled shape centred at pixel (cx, cy) with half-extent r, sub-pixel accurate."""
    scale = 1 << _SUBPIXEL_BITS
    if shape == "circle":
        centre = (int(round(cx * scale)), int(round(cy * scale)))
        cv2.circle(img, centre, int(round(r * scale)), color, -1, cv2.LINE_8, _SUBPIXEL_BITS)
        return
    pts = np.round(_shape_points(shape, cx, cy, r) * scale).astype(np.int32)
    cv2.fillPoly(img, [pts], color, cv2.LINE_8, _SUBPIXEL_BITS)


def render_clip(scene: Scene, *, width: int = 128, height: int = 128, fps: float = 8,
                seconds: float = 2.0) -> Clip:
    """Render ``round(seconds * fps)`` frames (frame i at t = i / fps) plus caption and truth."""
    if width < 8 or height < 8 or fps <= 0 or seconds <= 0:
        raise ValueError("width/height must be >= 8 and fps/seconds positive")
    n_frames = max(1, int(round(seconds * fps)))
    times = np.arange(n_frames) / fps
    r_px = {name: frac * min(width, height) / 2.0 for name, frac in SIZES.items()}
    tracks = [object_track(o, times, width, height) for o in scene.objects]
    frames = np.empty((n_frames, height, width, 3), dtype=np.uint8)
    frames[:] = BACKGROUNDS[scene.background]
    for i in range(n_frames):
        for obj, track in zip(scene.objects, tracks):
            x, y = track[i]
            draw_object(frames[i], obj.shape, COLORS[obj.color], x * width - 0.5, y * height - 0.5,
                        r_px[obj.size])
    bounces = sorted((t, k) for k, o in enumerate(scene.objects)
                     for t in object_bounces(o, seconds, width, height))
    truth = Truth(
        seed=scene.seed,
        background=scene.background,
        objects=[ObjectTruth(o.color, o.shape, o.size, o.motion, o.speed, tr)
                 for o, tr in zip(scene.objects, tracks)],
        bounces=bounces,
        facts=scene.facts(),
        fps=float(fps),
        seconds=float(seconds),
        width=width,
        height=height,
    )
    caption = scene_caption(scene)
    return Clip(frames=frames, fps=float(fps), caption=caption, truth=truth)
