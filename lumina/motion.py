"""Motion score: how much a video moves, measured the way the release's data filter does.

Protocol: take frames every 0.5 s (t = 0, 0.5, 1.0, ... while inside the clip; a clip
shorter than that uses its first and last frame), transpose portrait frames to landscape,
resize to 320x576 (height x width), run Farneback dense optical flow on grayscale between
consecutive samples (with a deeper pyramid than OpenCV builds by itself, see FARNEBACK),
and report the mean absolute flow component (|dx| and |dy| averaged over all pixels and
pairs) in pixels at 320x576.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator

import cv2
import numpy as np

SAMPLE_INTERVAL_S = 0.5
FLOW_HEIGHT = 320
FLOW_WIDTH = 576

# Farneback settings chosen on rendered flat-colour shapes.  OpenCV stops its own pyramid
# once a level would be under 32 px (three levels at 320x576), too shallow to follow a
# textureless shape that moves further than its own width between samples, so the
# pyramid is built here: PYRAMID_LEVELS halvings (coarsest 10x18), a single-level
# Farneback at each, started from the flow of the level above.  Each finer level may
# change that flow by at most TRUST_PX (in its own pixels): in flat regions Farneback's
# answer depends on faint texture (e.g. compression noise) and can run away by hundreds
# of pixels, so without this bound an mp4 re-encode could move the score several-fold.
# The price is that coarse flow spreads into a halo around moving shapes, so the score
# reads several times the true mean displacement of a flat shape; it stays monotonic in
# speed, exactly 0 for a still clip, and within ~7 % through a libx264 round trip.
PYRAMID_LEVELS = 5
TRUST_PX = 1.0
FARNEBACK = dict(pyr_scale=0.5, levels=0, winsize=11, iterations=5, poly_n=7, poly_sigma=1.5,
                 flags=cv2.OPTFLOW_FARNEBACK_GAUSSIAN)


def dense_flow(prev: np.ndarray, cur: np.ndarray) -> np.ndarray:
    """Coarse-to-fine Farneback flow (H, W, 2) between two grayscale uint8 images."""
    h, w = prev.shape
    flow = None
    for level in range(PYRAMID_LEVELS, -1, -1):
        size = (max(1, w >> level), max(1, h >> level))
        a = cv2.resize(prev, size, interpolation=cv2.INTER_AREA) if level else prev
        b = cv2.resize(cur, size, interpolation=cv2.INTER_AREA) if level else cur
        if flow is None:
            start = np.zeros((size[1], size[0], 2), np.float32)
            flow = cv2.calcOpticalFlowFarneback(a, b, start, **FARNEBACK)
            continue
        start = cv2.resize(flow, size, interpolation=cv2.INTER_LINEAR) * np.float32(2.0)
        params = dict(FARNEBACK, flags=FARNEBACK["flags"] | cv2.OPTFLOW_USE_INITIAL_FLOW)
        flow = cv2.calcOpticalFlowFarneback(a, b, start.copy(), **params)
        flow = np.clip(flow, start - TRUST_PX, start + TRUST_PX)
    return flow


def _sampled(frames: Iterable[np.ndarray], fps: float) -> Iterator[np.ndarray]:
    """Yield the frames nearest t = 0, 0.5, 1.0, ...; if only one, also yield the last frame."""
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    step = SAMPLE_INTERVAL_S * fps
    k = 0
    target = 0
    last = None
    count = 0
    yielded = 0
    for i, frame in enumerate(frames):
        last, count = frame, i + 1
        if i == target:
            yield frame
            yielded += 1
            k += 1
            target = int(round(k * step))
            while target <= i:  # fps < 2: several sample times map to the same frame
                k += 1
                target = int(round(k * step))
    if count < 2:
        raise ValueError(f"need at least 2 frames to measure motion, got {count}")
    if yielded == 1:
        yield last


def _prepare(frame: np.ndarray) -> np.ndarray:
    """RGB uint8 frame -> 320x576 grayscale float, transposing portrait frames first."""
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected RGB frames of shape (H, W, 3), got {frame.shape}")
    if frame.shape[0] > frame.shape[1]:
        frame = frame.transpose(1, 0, 2)
    gray = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
    return cv2.resize(gray, (FLOW_WIDTH, FLOW_HEIGHT), interpolation=cv2.INTER_AREA)


def _score(frames: Iterable[np.ndarray], fps: float) -> float:
    total = 0.0
    pairs = 0
    prev = None
    for frame in _sampled(frames, fps):
        cur = _prepare(frame)
        if prev is not None:
            flow = dense_flow(prev, cur)
            total += float(np.abs(flow).mean())
            pairs += 1
        prev = cur
    return total / pairs


def motion_score(frames: np.ndarray, fps: float) -> float:
    """Motion score of uint8 RGB frames shaped (T, H, W, 3) played at ``fps``."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames of shape (T, H, W, 3), got {frames.dtype} {frames.shape}")
    return _score(iter(frames), fps)


def motion_score_file(path: str) -> float:
    """Motion score of a video file, decoded with PyAV and sampled while streaming."""
    import av

    try:
        container = av.open(str(path))
    except FileNotFoundError as exc:
        raise ValueError(f"video file not found: {path}") from exc
    except av.error.FFmpegError as exc:
        raise ValueError(f"cannot open {path} as a video: {exc}") from exc
    with container:
        if not container.streams.video:
            raise ValueError(f"{path} has no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not rate:
            raise ValueError(f"{path}: cannot determine the frame rate")
        frames = (f.to_ndarray(format="rgb24") for f in container.decode(stream))
        try:
            return _score(frames, float(rate))
        except av.error.FFmpegError as exc:
            raise ValueError(f"cannot decode {path}: {exc}") from exc


def main(argv: list[str] | None = None) -> int:
    """CLI: print the motion score of one video as the last line; errors go to stderr, exit 1."""
    parser = argparse.ArgumentParser(prog="lumina motion-score", description=__doc__.splitlines()[0])
    parser.add_argument("video", help="path to a video file")
    args = parser.parse_args(argv)
    try:
        score = motion_score_file(args.video)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{score:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
