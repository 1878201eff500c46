"""Video files: encode frames (and optional sound) to mp4 with PyAV, and decode them back.

Every file the project produces goes through `atomic_output`: it is written under a temporary name in the
same folder (``.NAME.HOST.PID-TOKEN.partial``), flushed to disk and renamed over NAME only when complete, so a failed
or killed run never harms an existing file. `sweep_partials` removes the temporary files of this machine's
processes that died (a folder shared with other machines keeps theirs).

A video and its JSON sidecar are written together by `write_pair`, and the sidecar describes its video (name, size,
sha256), so `read_sidecar` tells a true pair from a stale one; see `write_pair` for why a kill or a failed write
never leaves a new video beside an old sidecar for long. `write_sidecar` rewrites the sidecar of a video already
written (a measurement added later); `check_sidecar_target` refuses an X.json this project did not write.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import uuid
from fractions import Fraction
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np

from lumina.errors import InvalidRequestError, OutputError

AUDIO_RATE = 16000
Frames = Union[np.ndarray, Iterable[np.ndarray]]  # (T, H, W, 3), or frames (H, W, 3) one at a time
_PARTIAL = re.compile(r"^\.(?P<name>.+)\.(?P<host>[\w-]+)\.(?P<pid>\d+)-[0-9a-f]+\.partial$")
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
    """Remove the temporary files of writers that no longer run (a kill -9 mid-write); returns them. A finished
    sidecar whose writer was killed between its video's rename and its own (`write_pair`) is renamed into place
    instead, when it describes the video now there: the pair becomes the new one."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for path in sorted(folder.iterdir()):
        m = _PARTIAL.match(path.name)
        if m and m["host"] == _HOST and int(m["pid"]) != os.getpid() and not _alive(int(m["pid"])):
            if not _complete_pair(path, folder / m["name"]):
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def _complete_pair(partial: Path, target: Path) -> bool:
    """Rename a dead writer's sidecar `partial` over `target` if it is the sidecar of the video beside it."""
    data = _json_object(partial) if target.suffix == SIDECAR_SUFFIX else None
    video = target.parent / str((data or {}).get("video"))
    if data is None or sidecar_path(video) != target or not _describes(data, video):
        return False
    os.replace(partial, target)
    return True


def _fsync_dir(folder: Path) -> None:
    fd = os.open(str(folder), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


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
        _fsync(tmp)
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


SIDECAR_SUFFIX = ".json"


def sidecar_path(video) -> Path:
    """X.mp4 -> X.json, the sidecar's name beside its video."""
    return Path(video).with_suffix(SIDECAR_SUFFIX)


def _json_object(path) -> Optional[Dict[str, Any]]:
    """The JSON object in `path`, or None when it is missing, a folder, unreadable, not JSON or not an object."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _describes(sidecar: Dict[str, Any], video: Path) -> bool:
    """Whether `sidecar` records exactly the file `video` (its name, size and sha256)."""
    return (sidecar.get("video") == video.name and video.is_file()
            and sidecar.get("video_bytes") == video.stat().st_size and sidecar.get("video_sha256") == _digest(video))


def is_own_sidecar(sidecar, video_name: str) -> bool:
    """Whether the file `sidecar` is a sidecar this project wrote for `video_name` (a JSON object naming it), as
    opposed to someone's unrelated X.json that a new X.mp4's sidecar must not replace."""
    data = _json_object(sidecar)
    return data is not None and data.get("video") == video_name


def read_sidecar(video) -> Optional[Dict[str, Any]]:
    """The sidecar of `video` (X.mp4 -> X.json) when it describes exactly this file: its recorded name, size and
    sha256 match. None when there is none, or it belongs to another video (a stale pair: regenerate or discard).
    Use it wherever a pair is trusted: resuming a batch, serving a cached result."""
    video = Path(video)
    data = _json_object(sidecar_path(video))
    return data if data is not None and _describes(data, video) else None


def check_sidecar_target(video, overwrite_sidecar: bool = False) -> None:
    """Refuse, before any work, a video whose sidecar name X.json is a folder, or a file this project did not write
    (it would be replaced) unless `overwrite_sidecar` (the CLI's --overwrite-sidecar)."""
    video, side = Path(video), sidecar_path(video)
    if side.is_dir():
        raise InvalidRequestError(f"{side} is a folder, so the sidecar of {video.name} cannot be written there; "
                                  f"move it or choose another output name")
    if side.exists() and not overwrite_sidecar and not is_own_sidecar(side, video.name):
        raise InvalidRequestError(f"{side} exists and is not a sidecar of {video.name} (a JSON object naming it): "
                                  f"writing {video.name} would replace it; choose another output name, or pass "
                                  f"--overwrite-sidecar (overwrite_sidecar=True) to replace it")


def write_pair(video, frames: Frames, fps: int, sidecar: Dict[str, Any], audio: Optional[np.ndarray] = None,
               sample_rate: int = AUDIO_RATE, overwrite_sidecar: bool = False) -> Dict[str, Any]:
    """Write VIDEO (mp4, as `write_mp4`: `frames` an array or an iterable) and its sidecar X.json (`sidecar` plus
    "video", "video_bytes" and "video_sha256": the file it describes); returns the sidecar as written. The one writer
    of video + sidecar pairs (CLI generate, batch, v2a; the app).

    After any failure or kill the two on disk are both old or both new, or the mismatch is detectable
    (`read_sidecar` gives None) and repaired by the next write into the folder (`sweep_partials`):

    1. both are written and fsynced under temporary names; a failure here (a full disk) changes nothing;
    2. the old video is hard-linked to a temporary name (a backup), then the new video renamed over X.mp4, then the
       new sidecar over X.json;
    3. a failure at the last rename puts the backup back (or removes a video that had no predecessor): both old;
    4. a kill between the two renames leaves a new video, the old sidecar (which no longer describes it) and the
       finished sidecar under its temporary name, which `sweep_partials` renames into place: both new.

    Refused before any work (InvalidRequestError): X.json a folder, or not one of this project's sidecars unless
    `overwrite_sidecar`. A write that fails raises OutputError saying what was wrong and what is left.
    """
    video, side = Path(video), sidecar_path(video)
    check_sidecar_target(video, overwrite_sidecar)
    json.dumps(sidecar, allow_nan=False)  # a NaN is refused (ValueError) before the encode
    video.parent.mkdir(parents=True, exist_ok=True)
    sweep_partials(video.parent)
    had_video = video.exists()
    tmp_video, tmp_side, backup = partial_path(video), partial_path(side), partial_path(video)
    try:
        _encode_mp4(tmp_video, frames, fps, audio, sample_rate)
        _fsync(tmp_video)
        data = _describing(sidecar, video.name, tmp_video)
        tmp_side.write_text(json.dumps(data, indent=1, allow_nan=False))
        _fsync(tmp_side)
        if had_video:
            _backup(video, backup)
        os.replace(tmp_video, video)
        try:
            os.replace(tmp_side, side)
        except BaseException:
            if had_video:
                os.replace(backup, video)
            else:
                video.unlink(missing_ok=True)
            raise
    except OSError as err:
        left = f"the previous {video.name} and {side.name} are unchanged" if had_video else "nothing was written"
        raise OutputError(f"{video} and its sidecar {side.name} could not be written "
                          f"({err.strerror or err}); {left}") from None
    finally:
        for leftover in (tmp_video, tmp_side, backup):
            leftover.unlink(missing_ok=True)
    _fsync_dir(video.parent)
    return data


def _describing(sidecar: Dict[str, Any], name: str, content: Path) -> Dict[str, Any]:
    """`sidecar` plus the record of the video named `name` whose bytes are the file `content`."""
    return {**sidecar, "video": name, "video_bytes": content.stat().st_size, "video_sha256": _digest(content)}


def write_sidecar(video, sidecar: Dict[str, Any]) -> Dict[str, Any]:
    """Replace the sidecar of the existing `video` (to add what was measured after it was written), describing it as
    `write_pair` does, atomically: a kill leaves the previous sidecar. Returns the sidecar as written."""
    video = Path(video)
    data = _describing(sidecar, video.name, video)
    write_json(sidecar_path(video), data)
    return data


def _backup(path: Path, backup: Path) -> None:
    """A second name for `path`'s content: a hard link (instant), or a copy where the file system has none."""
    try:
        os.link(path, backup)
    except OSError:
        shutil.copyfile(path, backup)


def write_mp4(path, frames: Frames, fps: int, audio: Optional[np.ndarray] = None, sample_rate: int = AUDIO_RATE) -> Path:
    """H.264 (yuv420p) video, plus an AAC track trimmed/padded to exactly the video's duration (atomically).
    `frames`: an array (T, H, W, 3), floats in [0, 1] or uint8, or an iterable of frames (e.g. `iter_video`)."""
    path = Path(path)
    with atomic_output(path) as tmp:
        _encode_mp4(tmp, frames, fps, audio, sample_rate)
    return path


def _as_frames(frames: Frames) -> Iterable[np.ndarray]:
    """An array (T, H, W, 3), or an iterable of (H, W, 3) frames consumed one at a time -> uint8 frames."""
    if isinstance(frames, (np.ndarray, list, tuple)):
        return to_uint8(np.asarray(frames))
    return (to_uint8(np.asarray(frame)) for frame in frames)


def _encode_mp4(path: Path, frames: Frames, fps: int, audio: Optional[np.ndarray], sample_rate: int) -> None:
    import av  # here, not at the top: the atomic writers serve machines without PyAV (the GPU suite's)

    t = 0
    with av.open(str(path), mode="w", format="mp4") as container:
        vstream = container.add_stream("libx264", rate=int(fps))
        vstream.pix_fmt = "yuv420p"
        vstream.options = {"crf": "18", "preset": "veryfast"}
        astream = None
        if audio is not None:
            astream = container.add_stream("aac", rate=sample_rate)
            astream.layout = "mono"
        for t, frame in enumerate(_as_frames(frames), 1):
            if t == 1:
                h, w = frame.shape[:2]
                vstream.width, vstream.height = w - w % 2, h - h % 2
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[: vstream.height, : vstream.width]), format="rgb24")
            container.mux(vstream.encode(vf))
        if t == 0:
            raise ValueError("a video needs at least one frame")
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


@contextlib.contextmanager
def _open_video(path) -> Iterator[Tuple[Any, Any]]:
    """(container, its first video stream); a file PyAV cannot read, or one without video, is a ValueError."""
    import av

    try:
        with av.open(str(path)) as container:
            yield container, container.streams.video[0]
    except (av.FFmpegError, IndexError, OSError) as err:
        raise ValueError(f"{path}: not a readable video ({err})") from None


def iter_video(path, max_frames: Optional[int] = None, max_pixels: Optional[int] = None,
               short_side: Optional[int] = None) -> Iterator[np.ndarray]:
    """The frames as uint8 (H, W, 3), decoded one at a time, so a long or large video is never all in memory.

    With `max_frames` / `max_pixels` (width x height) a longer or larger video is refused as soon as decoding
    reaches the cap, whatever its header claims. With `short_side`, a frame whose shorter side is longer is scaled
    down to it as it is decoded (area averaging, straight from the decoder's YUV): a consumer that reads small
    frames (V2A's encoders) never holds the large ones.
    """
    with _open_video(path) as (container, stream):
        for count, frame in enumerate(container.decode(stream)):
            if max_pixels is not None and frame.width * frame.height > max_pixels:
                raise InvalidRequestError(f"{Path(path).name}: frames of {frame.width}x{frame.height} pixels; "
                                          f"at most {max_pixels} pixels a frame are accepted")
            if max_frames is not None and count >= max_frames:
                raise InvalidRequestError(f"{Path(path).name}: more than {max_frames} frames; "
                                          f"at most {max_frames} are accepted")
            scale = 1.0 if short_side is None else min(1.0, short_side / min(frame.width, frame.height))
            if scale < 1.0:
                yield frame.to_ndarray(width=max(1, round(frame.width * scale)),
                                       height=max(1, round(frame.height * scale)), format="rgb24",
                                       interpolation="AREA")
            else:
                yield frame.to_ndarray(format="rgb24")


def read_video(path, max_frames: Optional[int] = None, max_pixels: Optional[int] = None,
               short_side: Optional[int] = None) -> Tuple[np.ndarray, float]:
    """All the frames as uint8 (T, H, W, 3) and the stream's frame rate (caps and scaling: `iter_video`)."""
    with _open_video(path) as (_, stream):
        fps = float(stream.average_rate or stream.guessed_rate or 0)
    frames = list(iter_video(path, max_frames, max_pixels, short_side))
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
