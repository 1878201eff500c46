"""What a finished job becomes for the user: status lines, captions, measured motion, contact sheets, waveforms and
the side-by-side comparison movie (no Gradio: the endpoints return these, the tabs show them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from lumina.media import atomic_output, read_audio, read_video, write_mp4


NO_OBJECT = ("no object found: the frames show only a background, so the model did not draw what the prompt "
             "asks for (try its own words: the vocabulary under the prompt)")


def result_status(settings: Dict[str, Any]) -> str:
    """The plain-text status line of a finished video, from its settings (the sidecar, measured motion, and whether
    an object was found: "⚠ no object found" instead of "✓" when the frames are only background)."""
    r, t, measured = settings["request"], settings["timings"], settings.get("measured_motion")
    motion = "" if measured is None else f" · measured motion {measured:.1f}"
    mark = "⚠ " + NO_OBJECT + "\n" if settings.get("object_found") is False else "✓ "
    return (f"{mark}seed {r['seed']} · {r['width']}x{r['height']} · {r['frames']} frames @ {r['fps']} fps · "
            f"{settings['patch_schedule']} · {t['total']:.1f} s (denoise {t.get('denoise', 0):.1f} s){motion}")


def settings_caption(settings: Dict[str, Any]) -> str:
    r = settings.get("request", {})
    return (f"seed {r.get('seed')} · {r.get('width')}x{r.get('height')} · {r.get('frames')}f · "
            f"{settings.get('patch_schedule', '')} · {str(r.get('prompt', ''))[:60]}")


@dataclass
class ScaleResult:
    """One schedule of a comparison: its first video and the denoising seconds of each of its runs."""

    schedule: str
    video: str
    sidecar: str
    seconds: float
    runs: List[float]
    relative: float  # median denoising time over the reference's median
    reference: str
    tokens_per_step: Dict[str, int]
    motion: Optional[float]

    @property
    def denoise(self) -> float:
        return float(np.median(self.runs))

    @property
    def spread(self) -> str:
        return f"{min(self.runs):.2f}-{max(self.runs):.2f} s" if len(self.runs) > 1 else "one run"

    def details(self) -> List[str]:
        tokens = ", ".join(f"{k}: {v}" for k, v in self.tokens_per_step.items())
        motion = "n/a" if self.motion is None else f"{self.motion:.2f}"
        return [f"denoise {self.denoise:.2f} s, median of {len(self.runs)} ({self.spread}) · "
                f"{self.relative:.2f}x {self.reference}",
                f"whole clip {self.seconds:.2f} s · tokens/step {tokens}", f"measured motion {motion}"]

    @property
    def label(self) -> str:
        return " · ".join([self.schedule] + self.details())


def compare_verdict(results: Sequence[ScaleResult]) -> str:
    """What the timings show, and no more: which schedule was fastest, and whether its runs are clear of the
    others' (every run faster) or overlap them (no clear difference on this machine)."""
    if len(results) < 2:
        return ""
    ranked = sorted(results, key=lambda r: r.denoise)
    fastest, slowest = ranked[0], ranked[-1]
    if min(len(r.runs) for r in results) < 2:
        return (f"{fastest.schedule} had the lowest denoising time ({fastest.denoise:.2f} s); with one run each "
                f"there is no spread to say whether that holds.")
    close = [r.schedule for r in ranked[1:] if min(r.runs) <= max(fastest.runs)]
    if not close:
        return (f"{fastest.schedule} denoised fastest in every run (median {fastest.denoise:.2f} s; "
                f"{slowest.schedule} {slowest.denoise:.2f} s).")
    return (f"{fastest.schedule} had the lowest median ({fastest.denoise:.2f} s), but its runs overlap those of "
            f"{', '.join(close)}: no clear speed difference between them on this machine.")


@dataclass
class CompareState:
    """A comparison so far: the finished schedules, the one running now with its progress line, the status and,
    at the end (`done`), the side-by-side mp4."""

    results: List[ScaleResult]
    running: Optional[str]
    progress: str
    status: str
    side_by_side: Optional[str] = None
    done: bool = False


@dataclass
class GridCell:
    """One (positive, negative) motion pair of the explorer."""

    positive: float
    negative: float
    video: str
    sidecar: str
    measured: Optional[float]
    tiles: Optional[str] = None

    @property
    def label(self) -> str:
        m = "n/a" if self.measured is None else f"{self.measured:.2f}"
        return f"motion {self.positive:g} / negative {self.negative:g} → measured {m}"


MEASURED_MOTION_NOTE = ("Measured motion: the mean optical-flow magnitude of the result (Farneback, the release's "
                        "labelling protocol), so flicker and noise count as motion too.")


def measure_motion(video_path) -> Optional[float]:
    """Measured motion score of a generated video (None for a single frame)."""
    from lumina.motion import motion_score

    frames, fps = read_video(video_path)
    if len(frames) < 2:
        return None
    return float(motion_score(frames, fps or 1.0))


FOREGROUND_DISTANCE = 60.0  # RGB distance from the frame's background colour that counts as an object's pixel
MIN_FOREGROUND = 0.004  # share of a frame's pixels: the smallest shape the world draws covers about 1.5 %


def object_found(video_path) -> bool:
    """Whether a shape-world video shows anything but its background: in at least half of the frames, a share of
    MIN_FOREGROUND of the pixels stands clearly apart from the frame's median colour (its background)."""
    frames, _ = read_video(video_path)
    pixels = frames.reshape(len(frames), -1, 3).astype(np.float32)
    background = np.median(pixels, axis=1, keepdims=True)
    share = (np.linalg.norm(pixels - background, axis=2) > FOREGROUND_DISTANCE).mean(axis=1)
    return bool(np.mean(share >= MIN_FOREGROUND) >= 0.5)


def write_tiles(video_path, min_side: int = 192) -> str:
    """A 2x2 contact sheet (first, 1/3, 2/3, last frame) next to the video, so motion shows in a still image."""
    from PIL import Image

    frames, _ = read_video(video_path)
    picks = [frames[round(k * (len(frames) - 1) / 3)] for k in range(4)]
    h, w = picks[0].shape[:2]
    scale = max(1, -(-min_side // (2 * min(h, w))))
    gap = 2
    sheet = Image.new("RGB", (2 * w * scale + gap, 2 * h * scale + gap), (255, 255, 255))
    for k, frame in enumerate(picks):
        tile = Image.fromarray(frame).resize((w * scale, h * scale), Image.NEAREST)
        sheet.paste(tile, ((k % 2) * (w * scale + gap), (k // 2) * (h * scale + gap)))
    out = Path(video_path).with_suffix(".tiles.png")
    with atomic_output(out) as tmp:
        sheet.save(tmp, format="PNG")
    return str(out)


def write_waveform(video_path, width: int = 800, height: int = 160) -> str:
    """A PNG of the video's soundtrack (peak envelope per pixel column, a tick per second) next to it."""
    from PIL import Image, ImageDraw

    audio, rate = read_audio(video_path)
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    mid, scale = height // 2, (height // 2 - 4) / max(float(abs(audio).max()), 1e-6)
    edges = [round(k * len(audio) / width) for k in range(width + 1)]
    for x in range(width):
        chunk = audio[edges[x]:max(edges[x + 1], edges[x] + 1)]
        draw.line([(x, mid - float(chunk.max()) * scale), (x, mid - float(chunk.min()) * scale)], fill=(40, 90, 200))
    seconds = len(audio) / rate
    for k in range(int(seconds) + 1):
        x = min(width - 1, round(k / seconds * width)) if seconds else 0
        draw.line([(x, height - 8), (x, height)], fill=(0, 0, 0))
        draw.text((min(x + 2, width - 24), height - 18), f"{k} s", fill=(0, 0, 0))
    draw.line([(0, mid), (width, mid)], fill=(190, 190, 190))
    out = Path(video_path).with_suffix(".wave.png")
    image.save(out)
    return str(out)


def side_by_side(results: Sequence["ScaleResult"], out_path, min_side: int = 192) -> str:
    """One mp4 of the compared videos, two per row (so it stays large on a phone), each over a band naming its
    schedule and median denoising time (PyAV, via lumina.media.write_mp4); the shortest clip sets the length."""
    from PIL import Image, ImageDraw, ImageFont

    clips = [read_video(r.video) for r in results]
    fps = clips[0][1]
    length = min(len(frames) for frames, _ in clips)
    h, w = clips[0][0].shape[1:3]
    scale = max(1, -(-min_side // min(h, w)))
    band, gap = 28, 4
    cols = min(2, len(clips))
    rows = -(-len(clips) // cols)
    cell_w, cell_h = w * scale + gap, h * scale + band + gap
    font = ImageFont.load_default(size=14)
    canvas = Image.new("RGB", (cols * cell_w - gap, rows * cell_h - gap), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    spots = [((k % cols) * cell_w, (k // cols) * cell_h) for k in range(len(clips))]
    for r, (x, y) in zip(results, spots):  # under the videos, where a player's own labels do not cover it
        draw.text((x + 4, y + h * scale + 6), f"{r.schedule} · denoise {r.denoise:.2f} s", fill=(0, 0, 0), font=font)
    frames = []
    for t in range(length):
        frame = canvas.copy()
        for (clip, _), spot in zip(clips, spots):
            frame.paste(Image.fromarray(clip[t]).resize((w * scale, h * scale), Image.NEAREST), spot)
        frames.append(np.asarray(frame))
    write_mp4(out_path, np.stack(frames), int(round(fps)) or 1)
    return str(out_path)


PLOT_COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14))


def motion_plot(cells: Sequence["GridCell"], out_path, width: int = 640, height: int = 360) -> Optional[str]:
    """A PNG of measured motion against the positive score, one coloured line per negative score, with a legend
    that keys each colour to its negative score (None when no cell has a measurement)."""
    from PIL import Image, ImageDraw, ImageFont

    cells = [c for c in cells if c.measured is not None]
    if not cells:
        return None
    font = ImageFont.load_default(size=13)
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    left, right, top, bottom = 56, width - 150, 16, height - 44
    xs = sorted({c.positive for c in cells})
    x_lo, x_hi = (xs[0] - 1, xs[-1] + 1) if len(xs) == 1 else (xs[0], xs[-1])
    y_hi = max(c.measured for c in cells) * 1.15 or 1.0

    def at(x: float, y: float) -> Tuple[float, float]:
        return (left + (x - x_lo) / (x_hi - x_lo) * (right - left), bottom - y / y_hi * (bottom - top))

    draw.rectangle([left, top, right, bottom], outline=(0, 0, 0))
    for k in range(5):
        y = y_hi * k / 4
        draw.line([at(x_lo, y), (left - 4, at(x_lo, y)[1])], fill=(0, 0, 0))
        draw.text((6, at(x_lo, y)[1] - 7), f"{y:.1f}", fill=(0, 0, 0), font=font)
    for x in xs:
        px = at(x, 0)[0]
        draw.line([(px, bottom), (px, bottom + 4)], fill=(0, 0, 0))
        draw.text((px - 8, bottom + 6), f"{x:g}", fill=(0, 0, 0), font=font)
    draw.text((left + (right - left) // 2 - 40, height - 20), "motion score", fill=(0, 0, 0), font=font)
    draw.text((6, 0), "measured motion", fill=(0, 0, 0), font=font)
    negatives = list(dict.fromkeys(c.negative for c in cells))
    for k, n in enumerate(negatives):
        colour = PLOT_COLOURS[k % len(PLOT_COLOURS)]
        points = [at(c.positive, c.measured) for c in sorted(cells, key=lambda c: c.positive) if c.negative == n]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for px, py in points:
            draw.ellipse([px - 4, py - 4, px + 4, py + 4], fill=colour)
        key_y = top + 8 + 22 * k  # the legend: a colour key and its negative score
        draw.rectangle([right + 14, key_y, right + 28, key_y + 14], fill=colour)
        draw.text((right + 34, key_y), f"negative {n:g}", fill=(0, 0, 0), font=font)
    out = Path(out_path)
    with atomic_output(out) as tmp:
        image.save(tmp, format="PNG")
    return str(out)
