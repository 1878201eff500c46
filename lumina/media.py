"""Video files: encode frames (and optional sound) to mp4 with PyAV, and decode them back."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Optional, Tuple

import av
import numpy as np

AUDIO_RATE = 16000


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) floats in [0, 1] or uint8 -> uint8."""
    if frames.dtype == np.uint8:
        return frames
    return (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_mp4(path, frames: np.ndarray, fps: int, audio: Optional[np.ndarray] = None, sample_rate: int = AUDIO_RATE) -> Path:
    """H.264 (yuv420p) video, plus an AAC track trimmed/padded to exactly the video's duration."""
    frames = to_uint8(np.asarray(frames))
    t, h, w, _ = frames.shape
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        vstream = container.add_stream("libx264", rate=int(fps))
        vstream.width, vstream.height = w - w % 2, h - h % 2
        vstream.pix_fmt = "yuv420p"
        vstream.options = {"crf": "18", "preset": "veryfast"}
        astream = None
        if audio is not None:
            astream = container.add_stream("aac", rate=sample_rate)
            astream.layout = "mono"
        for frame in frames:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[: vstream.height, : vstream.width]), format="rgb24")
            container.mux(vstream.encode(vf))
        container.mux(vstream.encode())
        if astream is not None:
            n = int(round(t / fps * sample_rate))
            samples = np.zeros(n, dtype=np.float32)
            a = np.asarray(audio, dtype=np.float32)[:n]
            samples[: len(a)] = a
            af = av.AudioFrame.from_ndarray(samples[None, :], format="fltp", layout="mono")
            af.sample_rate = sample_rate
            af.pts = 0
            af.time_base = Fraction(1, sample_rate)
            container.mux(astream.encode(af))
            container.mux(astream.encode())
    return path


def read_video(path) -> Tuple[np.ndarray, float]:
    """Decode all frames as uint8 (T, H, W, 3) and the stream's frame rate."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    except (av.FFmpegError, IndexError, OSError) as err:
        raise ValueError(f"{path}: not a readable video ({err})") from None
    if not frames:
        raise ValueError(f"{path}: the video has no frames")
    return np.stack(frames), fps


def read_audio(path) -> Tuple[np.ndarray, int]:
    """Decode the first audio stream to mono float32 and its sample rate."""
    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise ValueError(f"{path}: the file has no audio track")
        stream = container.streams.audio[0]
        chunks = [f.to_ndarray().mean(axis=0) if f.to_ndarray().ndim == 2 else f.to_ndarray() for f in container.decode(stream)]
        return np.concatenate(chunks).astype(np.float32), stream.rate
