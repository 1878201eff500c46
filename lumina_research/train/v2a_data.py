"""Training examples for V2A: the procedural world with its soundtrack, or any folder of videos with sound.

An example is a dict with
  frames  uint8 (T, S, S, 3): the video at its own frame rate, area-resized to S x S (the size of the tiny
          frame and sync encoders, so they never need the full frames again),
  fps, seconds, wave float32 (N,) at 16 kHz with N = round(seconds * 16000),
  caption (str, may be ""), onset float32 (T,): the soundtrack's onset strength at each frame
  (the sync encoder's auxiliary target), and with ``visual=(size, visual_fps)`` visual_frames uint8
  (T_v, size, size, 3): the frames at the visual frame rate at a frozen CLIP's input size, and per cue asked for
  (``cues``, computed once here from the full frames): "impact" impact float32 (T,), the impact track
  (lumina.v2a.impact); "contacts" candidates (times in frames (K,), features (K, F)) for the contact detector
  (lumina.v2a.contacts) and hits float64, the soundtrack's onset times after its first 50 ms (the detector's labels
  and what the transformer's onset track is trained on).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from lumina.v2a.audio import SAMPLE_RATE, detect_onsets, onset_envelope, resample_audio
from lumina.v2a.contacts import candidates_from_track
from lumina.v2a.encoders import as_float_frames, resize_frames, visual_frame_indices
from lumina.v2a.impact import frame_accelerations

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".avi")
CUES = ("impact", "contacts")
FIRST_HIT = 0.05     # s: onsets before this are the soundtrack starting, not a contact
FLUX_REF = 1.5       # spectral flux counted as a full-strength onset (a world bounce click peaks at ~1-4)
WORLD_FPS = (8, 12, 24, 30)
WORLD_SECONDS = (2.0, 4.0, 6.0)


def small_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """Video (T, H, W, 3) -> uint8 (T, size, size, 3) exactly as the pipeline resizes it."""
    small = resize_frames(as_float_frames(frames), size).permute(0, 2, 3, 1).numpy()
    return (np.clip(small, 0, 1) * 255 + 0.5).astype(np.uint8)


def onset_targets(wave: np.ndarray, num_frames: int, fps: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Per video frame k: the strongest spectral flux within half a frame of k / fps, over FLUX_REF, clipped to 1."""
    flux, times = onset_envelope(wave, sample_rate)
    out = np.zeros(num_frames, dtype=np.float32)
    for k in range(num_frames):
        sel = np.abs(times - k / fps) <= 0.5 / fps
        if sel.any():
            out[k] = flux[sel].max()
    return np.clip(out / FLUX_REF, 0.0, 1.0)


def make_example(frames: np.ndarray, fps: float, wave: np.ndarray, caption: str = "", size: int = 32,
                 visual: Optional[Tuple[int, float]] = None, cues: Sequence[str] = (), **extra) -> Dict:
    seconds = len(frames) / float(fps)
    n = int(round(seconds * SAMPLE_RATE))
    w = np.zeros(n, dtype=np.float32)
    w[: min(n, len(wave))] = np.asarray(wave, dtype=np.float32)[:n]
    ex = dict(frames=small_frames(frames, size), fps=float(fps), seconds=seconds, wave=w, caption=caption,
              onset=onset_targets(w, len(frames), fps))
    if visual is not None:
        idx, _ = visual_frame_indices(len(frames), fps, visual[1])
        ex["visual_frames"] = small_frames(frames[idx], visual[0])
    unknown = set(cues) - set(CUES)
    if unknown:
        raise ValueError(f"unknown cues {sorted(unknown)}; allowed: {CUES}")
    if cues:
        score, acc = frame_accelerations(frames)
        if "impact" in cues:
            ex["impact"] = score
        if "contacts" in cues:
            ex["candidates"] = candidates_from_track(score, acc)
            hits = detect_onsets(w) if np.any(w) else np.zeros(0)
            ex["hits"] = hits[hits > FIRST_HIT]
    ex.update(extra)
    return ex


def world_clip(seed: int, fps: float, seconds: float, size: int = 128, *, n_objects: Optional[int] = None,
               motion: Optional[str] = None):
    """A world clip (lumina_research.world.render.Clip) and its soundtrack (render_sound)."""
    from lumina_research.world.render import render_clip, sample_scene
    from lumina_research.world.sound import render_sound

    scene = sample_scene(int(seed), n_objects=n_objects, motion=motion, seconds=seconds)
    clip = render_clip(scene, width=size, height=size, fps=fps, seconds=seconds)
    return clip, render_sound(clip, seconds=len(clip.frames) / fps)


def world_examples(n: int, seed0: int = 0, enc_size: int = 32, bounce_share: float = 0.6,
                   visual: Optional[Tuple[int, float]] = None, cues: Sequence[str] = ()) -> Iterator[Dict]:
    """n world examples; fps, length, render size and (for bounce_share of them) bouncing motion vary by seed."""
    for i in range(n):
        seed = seed0 + i
        rng = np.random.default_rng([seed, 11])
        fps = float(rng.choice(WORLD_FPS))
        seconds = float(rng.choice(WORLD_SECONDS))
        size = int(rng.choice([64, 128]))
        motion = "bouncing" if rng.random() < bounce_share else None
        clip, wave = world_clip(seed, fps, seconds, size, motion=motion)
        yield make_example(clip.frames, fps, wave, clip.caption, enc_size, visual, cues, seed=seed)


def folder_examples(folder, window: float = 4.0, max_seconds: float = 10.0, enc_size: int = 32,
                    limit: Optional[int] = None, visual: Optional[Tuple[int, float]] = None,
                    cues: Sequence[str] = ()) -> Iterator[Dict]:
    """VGGSound-style folder: every video with an audio track, cut into windows of `window` seconds.

    A caption is read from a sidecar FILE.txt when present.  Videos without sound are skipped.
    """
    from lumina.media import read_audio, read_video

    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
    count = 0
    for path in files:
        try:
            frames, fps = read_video(path)
            wave, rate = read_audio(path)
        except ValueError:
            continue
        if fps <= 0:
            continue
        wave = resample_audio(wave, rate)
        caption = path.with_suffix(".txt").read_text().strip() if path.with_suffix(".txt").exists() else ""
        per = max(1, int(round(min(window, max_seconds) * fps)))
        for start in range(0, max(1, len(frames) - per + 1), per):
            chunk = frames[start:start + per]
            a0 = int(round(start / fps * SAMPLE_RATE))
            yield make_example(chunk, fps, wave[a0:a0 + int(round(len(chunk) / fps * SAMPLE_RATE))], caption,
                               enc_size, visual, cues, source=str(path))
            count += 1
            if limit is not None and count >= limit:
                return


def bucket_key(ex: Dict) -> tuple:
    return (round(ex["fps"], 3), len(ex["frames"]))


def buckets(examples: Sequence[Dict]) -> Dict[tuple, List[int]]:
    """Indices grouped by (fps, frame count): a training batch is drawn from one bucket."""
    out: Dict[tuple, List[int]] = {}
    for i, ex in enumerate(examples):
        out.setdefault(bucket_key(ex), []).append(i)
    return out
