"""What a finished job becomes for the user: status lines, captions, measured motion, contact sheets, waveforms and
the side-by-side comparison movie (no Gradio: the endpoints return these, the tabs show them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from lumina.media import atomic_output, read_audio, read_video, write_mp4


def result_status(settings: Dict[str, Any]) -> str:
    """The plain-text status line of a finished video, from its settings (the sidecar, measured motion)."""
    r, t, measured = settings["request"], settings["timings"], settings.get("measured_motion")
    motion = "" if measured is None else f" · measured motion {measured:.1f}"
    return (f"✓ seed {r['seed']} · {r['width']}x{r['height']} · {r['frames']} frames @ {r['fps']} fps · "
            f"{settings['patch_schedule']} · {t['total']:.1f} s (denoise {t.get('denoise', 0):.1f} s){motion}")


def settings_caption(settings: Dict[str, Any]) -> str:
    r = settings.get("request", {})
    return (f"seed {r.get('seed')} · {r.get('width')}x{r.get('height')} · {r.get('frames')}f · "
            f"{settings.get('patch_schedule', '')} · {str(r.get('prompt', ''))[:60]}")


@dataclass
class ScaleResult:
    """One schedule of a comparison."""

    schedule: str
    video: str
    sidecar: str
    seconds: float
    denoise: float
    relative: float
    reference: str
    tokens_per_step: Dict[str, int]
    motion: Optional[float]

    def details(self) -> List[str]:
        tokens = ", ".join(f"{k}: {v}" for k, v in self.tokens_per_step.items())
        motion = "n/a" if self.motion is None else f"{self.motion:.2f}"
        return [f"denoise {self.denoise:.2f} s ({self.relative:.2f}x {self.reference}) · "
                f"whole clip {self.seconds:.2f} s",
                f"tokens/step {tokens}", f"measured motion {motion}"]

    @property
    def label(self) -> str:
        return " · ".join([self.schedule] + self.details())


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
    def gap(self) -> float:
        return self.positive - self.negative

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
    """One mp4 of the compared videos next to each other (PyAV, via lumina.media.write_mp4), each under a band
    naming its schedule and denoising time; the shortest clip sets the length."""
    from PIL import Image, ImageDraw, ImageFont

    clips = [read_video(r.video) for r in results]
    fps = clips[0][1]
    length = min(len(frames) for frames, _ in clips)
    h, w = clips[0][0].shape[1:3]
    scale = max(1, -(-min_side // min(h, w)))
    band, gap = 28, 4
    font = ImageFont.load_default(size=14)
    canvas = Image.new("RGB", (len(clips) * (w * scale + gap) - gap, h * scale + band), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for k, r in enumerate(results):  # under the videos, where a player's own labels do not cover it
        draw.text((k * (w * scale + gap) + 4, h * scale + 6), f"{r.schedule} · denoise {r.denoise:.2f} s",
                  fill=(0, 0, 0), font=font)
    frames = []
    for t in range(length):
        frame = canvas.copy()
        for k, (clip, _) in enumerate(clips):
            tile = Image.fromarray(clip[t]).resize((w * scale, h * scale), Image.NEAREST)
            frame.paste(tile, (k * (w * scale + gap), 0))
        frames.append(np.asarray(frame))
    write_mp4(out_path, np.stack(frames), int(round(fps)) or 1)
    return str(out_path)
