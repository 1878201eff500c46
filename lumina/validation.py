"""Every user-facing limit in one place, shared by the pipeline, the CLI and the app.

Each check raises InvalidRequestError naming the value and the allowed range (reference §4 for sizes).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import List, Optional, Tuple

from lumina.errors import InvalidRequestError

SIZE_MULTIPLE = 32  # VAE 8 x largest patch 4
MAX_ASPECT = 4.0
FRAME_MULTIPLE = 8  # latent frames = frames / 4 must be even for f_patch 2
MAX_FRAMES = 256  # ~10 s at 24 fps; the release was trained on 96
MAX_STEPS = 200
MAX_SEED = 2**32 - 1
MOTION_RANGE = (-1.0, 100.0)
GUIDANCE_RANGE = (0.0, 50.0)
SHARED_NOISE_RANGE = (0.0, 0.95)  # share of the starting noise common to all latent frames
TIME_SHIFT_RANGE = (0.1, 100.0)  # 1 = no shift; the release uses 8 and 24
RENORM_RANGE = (-1.0, 100.0)  # > 0 caps the guided norm at renorm x |positive|; <= 0 turns it off (release: -1, 2)
FPS_RANGE = (1, 60)
# The range of each number of a SampleConfig, by the name its messages use (every stage of a time-aware one).
RANGES = {"cfg": GUIDANCE_RANGE, "motion": MOTION_RANGE, "negative motion": MOTION_RANGE,
          "time shift": TIME_SHIFT_RANGE, "renorm": RENORM_RANGE, "shared noise": SHARED_NOISE_RANGE}


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise InvalidRequestError(message)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def as_float(name: str, value) -> float:
    """The one number parser: an int, a float or its text -> a finite float; anything else refused by name."""
    if isinstance(value, str):
        text = value.strip()
        hint = (" (schedule text is read at the edge: pass the typed form, e.g. (20.0, (0.2, 0.0)), or "
                "lumina.syntax.parse_schedule)") if ("@" in text or "," in text) else ""
        try:
            value = float(text)
        except ValueError:
            raise InvalidRequestError(f"{name}={text!r}: not a number{hint}") from None
    _require(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
             f"{name}={value!r}: must be a number")
    return float(value)


def as_int(name: str, value) -> int:
    """A whole number (the app's number boxes send 16.0 for 16)."""
    number = as_float(name, value)
    _require(number == int(number), f"{name}={value!r}: must be a whole number")
    return int(number)


def check_size(width, height, max_resolution: int) -> None:
    """Multiples of 32, aspect at most 4, (w/32)(h/32) <= (max_resolution/32)^2."""
    _require(_is_int(width) and _is_int(height), f"width and height must be integers, got {width!r} x {height!r}")
    _require(
        width >= SIZE_MULTIPLE and height >= SIZE_MULTIPLE and width % SIZE_MULTIPLE == 0 and height % SIZE_MULTIPLE == 0,
        f"size {width}x{height}: width and height must be positive multiples of {SIZE_MULTIPLE} "
        f"(VAE 8 x largest patch 4)",
    )
    aspect = max(width, height) / min(width, height)
    _require(aspect <= MAX_ASPECT, f"size {width}x{height}: aspect ratio {aspect:.2f} exceeds {MAX_ASPECT:g}")
    budget = (max_resolution // SIZE_MULTIPLE) ** 2
    cells = (width // SIZE_MULTIPLE) * (height // SIZE_MULTIPLE)
    _require(
        cells <= budget,
        f"size {width}x{height} is larger than this model's {max_resolution} budget: (w/32)*(h/32) = {cells} "
        f"must be at most {budget} (e.g. {max_resolution}x{max_resolution})",
    )


def check_frames(frames) -> None:
    """1 (an image) or a positive multiple of 8 (latent frames = frames/4, divisible by f_patch 2)."""
    _require(
        _is_int(frames) and (frames == 1 or (frames > 0 and frames % FRAME_MULTIPLE == 0)),
        f"frames={frames!r}: must be 1 (an image) or a positive multiple of {FRAME_MULTIPLE} "
        f"(the VAE packs 4 frames per latent and the 2x patches take 2 latents)",
    )
    _require(frames <= MAX_FRAMES, f"frames={frames}: at most {MAX_FRAMES} frames (about 10 s at 24 fps) are accepted")


def check_size_and_frames(width, height, frames, max_resolution: int) -> None:
    _require(
        width is not None and height is not None and frames is not None,
        "give width, height and num_frames, or initial latents",
    )
    check_size(width, height, max_resolution)
    check_frames(frames)


def check_latent_shape(shape: Tuple[int, ...], channels: int, batch: int) -> None:
    _require(
        len(shape) == 5 and shape[1] == channels and shape[0] == batch,
        f"latents of shape {shape}: expected ({batch}, {channels}, F, H, W)",
    )
    f, h, w = shape[2:]
    _require(h % 4 == 0 and w % 4 == 0, f"latent size {h}x{w} must be multiples of 4 (the largest patch)")
    _require(f == 1 or f % 2 == 0, f"latent frames {f} must be 1 or even (f_patch 2)")


def supported_sizes(max_resolution: int, min_side: int = 128) -> List[Tuple[int, int]]:
    """Usable (width, height) pairs at the model's target resolution, largest area first."""
    budget = (max_resolution // SIZE_MULTIPLE) ** 2
    sizes = []
    for w in range(min_side, SIZE_MULTIPLE * budget + 1, SIZE_MULTIPLE):
        for h in range(min_side, SIZE_MULTIPLE * budget + 1, SIZE_MULTIPLE):
            cells = (w // SIZE_MULTIPLE) * (h // SIZE_MULTIPLE)
            if cells <= budget and max(w, h) / min(w, h) <= MAX_ASPECT:
                sizes.append((w, h))
    return sorted(sizes, key=lambda s: (-s[0] * s[1], -s[0]))


def snap_size(value: int) -> int:
    """Nearest multiple of 32, at least 32 (the app says when it snapped)."""
    return max(SIZE_MULTIPLE, int(round(value / SIZE_MULTIPLE)) * SIZE_MULTIPLE)


def frames_for(seconds: float, fps: int) -> int:
    """Frames for a duration, rounded to the nearest allowed count (a multiple of 8); a duration whose frames would
    pass MAX_FRAMES is refused here, by name, before any arithmetic could overflow."""
    check_fps(fps)
    _require(isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and seconds > 0,
             f"duration {seconds!r} must be > 0 s")
    frames = max(FRAME_MULTIPLE, round(seconds * fps / FRAME_MULTIPLE) * FRAME_MULTIPLE) \
        if seconds * fps <= 2 * MAX_FRAMES else None
    _require(frames is not None and frames <= MAX_FRAMES,
             f"duration {seconds:g} s: at {fps} fps at most {MAX_FRAMES / fps:g} s ({MAX_FRAMES} frames) are accepted")
    return frames


def check_fps(fps) -> None:
    _require(_is_int(fps) and FPS_RANGE[0] <= fps <= FPS_RANGE[1], f"fps={fps!r}: must be an integer in {FPS_RANGE[0]}..{FPS_RANGE[1]}")


def check_steps(steps) -> None:
    _require(
        _is_int(steps) and 2 <= steps <= MAX_STEPS,
        f"steps={steps!r}: must be an integer in 2..{MAX_STEPS} (num_inference_steps, --steps and the release's "
        f"`step` count grid points of the flow ODE: steps - 1 denoising evaluations)",
    )


def check_seed(seed) -> None:
    _require(_is_int(seed) and 0 <= seed <= MAX_SEED, f"seed={seed!r}: must be an integer in 0..{MAX_SEED}")


def check_stages(name: str, values, lo: float, hi: float) -> None:
    """The same range rule for every stage of a time-aware value (its constant, or each value of "20, 0@0.2")."""
    values = list(values)
    for value in values:
        _require(
            isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and lo <= value <= hi,
            f"{name}={value!r}" + (f" (a stage of {name} {values!r})" if len(values) > 1 else "")
            + f": must be a number in {lo:g}..{hi:g}",
        )


def check_output_path(path, suffixes: Tuple[str, ...] = (".mp4",), option: str = "--out") -> Path:
    """Refuse an output the run could not write, before any model loads: wrong suffix, an existing folder of that
    name, a path under a file, or a folder where files cannot be created (probed by creating one there)."""
    import tempfile

    p = Path(path).expanduser()
    _require(p.suffix.lower() in suffixes, f"{option} {str(path)!r}: the output must be a {' or '.join(suffixes)} file")
    _require(not p.is_dir(), f"{option} {str(path)!r} is an existing folder; name a file inside it")
    folder = p.absolute().parent
    while not folder.exists():
        folder = folder.parent
    _require(folder.is_dir(), f"{option} {str(path)!r}: {folder} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise InvalidRequestError(f"{option} {str(path)!r}: cannot write in {folder} ({err.strerror or err})") from None
    return p


def check_device(device: str) -> str:
    """A torch device this machine has: 'cpu', 'cuda', 'cuda:N' (N < the GPU count), 'mps'."""
    if device == "cpu":  # the default, known without importing torch
        return device
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InvalidRequestError(f"--device {device!r}: not a device; use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        _require(count > 0, f"--device {device!r}: no CUDA GPU is available here; use --device cpu")
        _require(dev.index is None or dev.index < count, f"--device {device!r}: this machine has {count} GPU(s)")
    elif dev.type == "mps":
        _require(torch.backends.mps.is_available(), f"--device {device!r}: MPS is not available here; use cpu")
    else:
        _require(dev.type == "cpu", f"--device {device!r}: use cpu, cuda, cuda:N or mps")
    return device


MAX_PROMPT_CHARS = 4000


def check_prompt(prompt: Optional[str], max_chars: int = MAX_PROMPT_CHARS) -> str:
    _require(isinstance(prompt, str) and prompt.strip() != "", "the prompt is empty: describe the video you want")
    _require(len(prompt) <= max_chars, f"the prompt has {len(prompt)} characters; at most {max_chars} are accepted")
    return prompt.strip()


def check_negative_prompt(text: Optional[str], max_chars: int = MAX_PROMPT_CHARS) -> str:
    """Optional (None or empty: none), with the prompt's length limit: it is encoded the same way."""
    text = "" if text is None else text
    _require(isinstance(text, str), f"negative_prompt={text!r}: must be text")
    _require(len(text) <= max_chars,
             f"the negative prompt has {len(text)} characters; at most {max_chars} are accepted")
    return text


VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv", ".avi")
MAX_UPLOAD_BYTES = 200 * 1024**2
MAX_V2A_SECONDS = 10.0
MAX_V2A_FPS = 60
MAX_V2A_FRAMES = int(MAX_V2A_SECONDS * MAX_V2A_FPS)
MAX_V2A_PIXELS = 640 * 480  # width x height of a frame


def check_video_upload(path, max_bytes: int = MAX_UPLOAD_BYTES, max_seconds: float = MAX_V2A_SECONDS) -> float:
    """An uploaded video for V2A: type by suffix and by decoding, size, duration, frame rate and frame size (from
    its header; `lumina.media.read_video` enforces the frame and pixel caps again while decoding); returns its
    seconds.

    Only the path handed over by the server is opened; the user's file name is never used to build a path.
    """
    from pathlib import Path

    p = Path(path)
    _require(p.suffix.lower() in VIDEO_SUFFIXES,
             f"file type {p.suffix or '(none)'!r} is not accepted; upload one of {', '.join(VIDEO_SUFFIXES)}")
    _require(p.is_file(), "the upload did not arrive; try again")
    size = p.stat().st_size
    _require(size <= max_bytes, f"the video is {size / 1024**2:.0f} MB; at most {max_bytes / 1024**2:.0f} MB are accepted")
    import av

    try:
        with av.open(str(p)) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            seconds = float(container.duration / av.time_base) if container.duration else \
                float(stream.frames / float(stream.average_rate or 1))
            width, height = stream.codec_context.width, stream.codec_context.height
    except (av.FFmpegError, IndexError, ZeroDivisionError):
        raise InvalidRequestError("the upload is not a readable video (no decodable video stream)") from None
    _require(0 < seconds <= max_seconds,
             f"the video lasts {seconds:.1f} s; sound can be made for videos of up to {max_seconds:g} s")
    _require(0 < fps <= MAX_V2A_FPS,
             f"the video runs at {fps:g} fps; at most {MAX_V2A_FPS} fps are accepted (re-encode it at a lower rate)")
    _require(width * height <= MAX_V2A_PIXELS,
             f"the video's frames are {width}x{height}; at most {MAX_V2A_PIXELS} pixels a frame (e.g. 640x480) "
             f"are accepted (scale it down)")
    return seconds
