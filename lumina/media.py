"""Video files: encode frames (and optional sound) to mp4 with PyAV, and decode them back.

Every file the project produces goes through `atomic_output`: it is written under a temporary name in the
same folder (``.NAME.HOST.PID-TOKEN.partial``), flushed to disk and renamed over NAME only when complete, so a failed
or killed run never harms an existing file. `sweep_partials` removes the temporary files of this machine's
processes that died (a folder shared with other machines keeps theirs).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import uuid
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator, List, Optional, Tuple

import numpy as np

from lumina.errors import InvalidRequestError

AUDIO_RATE = 16000
_PARTIAL = re.compile(r"^\..+\.(?P<host>[\w-]+)\.(?P<pid>\d+)-[0-9a-f]+\.partial$")
_HOST = re.sub(r"[^\w-]", "-", socket.gethostname()) or "host"


def partial_path(path, pid: Optional[int] = None) -> Path:
    """The temporary name `atomic_output` writes `path` under, for process `pid` (default: this one)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{_HOST}.{os.getpid() if pid is None else pid}-{uuid.uuid4().hex[:8]}.partial")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def sweep_partials(folder) -> List[Path]:
    """Remove the temporary files of writers that no longer run (a kill -9 mid-write); returns them."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        m = _PARTIAL.match(path.name)
        if m and m["host"] == _HOST and int(m["pid"]) != os.getpid() and not _alive(int(m["pid"])):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _fsync_dir(folder: Path) -> None:
    fd = os.open(str(folder), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_output(path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync it and rename it over `path`, on failure remove it.

    The temporary name does not end in the real suffix, so writers must name their format explicitly.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_partials(path.parent)
    tmp = partial_path(path)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path, data: Any) -> Path:
    """Strict JSON (a NaN or an infinity is refused with ValueError, never written), atomically."""
    text = json.dumps(data, indent=1, allow_nan=False)
    with atomic_output(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_text(path, text: str) -> Path:
    with atomic_output(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) floats in [0, 1] or uint8 -> uint8."""
    if frames.dtype == np.uint8:
        return frames
    return (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_mp4(path, frames: np.ndarray, fps: int, audio: Optional[np.ndarray] = None, sample_rate: int = AUDIO_RATE) -> Path:
    """H.264 (yuv420p) video, plus an AAC track trimmed/padded to exactly the video's duration (atomically)."""
    frames = to_uint8(np.asarray(frames))
    path = Path(path)
    with atomic_output(path) as tmp:
        _encode_mp4(tmp, frames, fps, audio, sample_rate)
    return path


def _encode_mp4(path: Path, frames: np.ndarray, fps: int, audio: Optional[np.ndarray], sample_rate: int) -> None:
    import av  # here, not at the top: the atomic writers serve machines without PyAV (the GPU suite's)

    t, h, w, _ = frames.shape
    with av.open(str(path), mode="w", format="mp4") as container:
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


def read_video(path, max_frames: Optional[int] = None, max_pixels: Optional[int] = None) -> Tuple[np.ndarray, float]:
    """Decode the frames as uint8 (T, H, W, 3) and the stream's frame rate, one frame at a time.

    With `max_frames` / `max_pixels` (width x height) a longer or larger video is refused as soon as decoding
    reaches the cap, whatever its header claims, so memory stays bounded.
    """
    import av

    frames = []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            for frame in container.decode(stream):
                if max_pixels is not None and frame.width * frame.height > max_pixels:
                    raise InvalidRequestError(f"{Path(path).name}: frames of {frame.width}x{frame.height} pixels; "
                                              f"at most {max_pixels} pixels a frame are accepted")
                if max_frames is not None and len(frames) >= max_frames:
                    raise InvalidRequestError(f"{Path(path).name}: more than {max_frames} frames; "
                                              f"at most {max_frames} are accepted")
                frames.append(frame.to_ndarray(format="rgb24"))
    except (av.FFmpegError, IndexError, OSError) as err:
        raise ValueError(f"{path}: not a readable video ({err})") from None
    if not frames:
        raise ValueError(f"{path}: the video has no frames")
    return np.stack(frames), fps


def read_audio(path) -> Tuple[np.ndarray, int]:
    """Decode the first audio stream to mono float32 and its sample rate."""
    import av

    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise ValueError(f"{path}: the file has no audio track")
        stream = container.streams.audio[0]
        chunks = [f.to_ndarray().mean(axis=0) if f.to_ndarray().ndim == 2 else f.to_ndarray() for f in container.decode(stream)]
        return np.concatenate(chunks).astype(np.float32), stream.rate
