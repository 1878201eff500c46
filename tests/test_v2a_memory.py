"""V2A's memory is bounded (issue 41): the largest accepted input (594 frames of 640x480 at 60 fps) took the CLI to a
5.35 GB peak (the frames held at full size, then again as float32). The model now reads a copy at most 256 px on its
short side and the output is re-encoded from a second decode, frame by frame.

Measured as the peak RSS of `python -m lumina v2a` in a fresh process (its parent reports RUSAGE_CHILDREN, so no
earlier test's children count), minus the peak of the same command on a 16-frame clip of the same frame size: what
the clip's length costs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lumina.media import read_sidecar

ROOT = Path(__file__).resolve().parents[1]
LIMIT_MB = 1500  # the bound for the largest accepted input


def _synthetic(path: Path, frames: int, width: int = 640, height: int = 480, fps: int = 60) -> Path:
    """A ball bouncing over a colour ramp, written frame by frame with PyAV (never all in memory)."""
    import av

    yy, xx = np.mgrid[0:height, 0:width]
    ramp = np.stack([xx * 255 // width, yy * 255 // height, np.full_like(xx, 60)], -1).astype(np.uint8)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "23", "preset": "ultrafast"}
        for i in range(frames):
            t = i / fps
            cx = (0.1 + 0.8 * abs(t * 0.7 % 2 - 1)) * width
            cy = (0.2 + 0.6 * abs(t * 1.3 % 2 - 1)) * height
            frame = ramp.copy()
            frame[(xx - cx) ** 2 + (yy - cy) ** 2 < (height // 10) ** 2] = (230, 40, 40)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


MEASURE = ("import resource, subprocess, sys\n"
           "proc = subprocess.run([sys.executable, '-m', 'lumina', 'v2a', *sys.argv[1:]], capture_output=True, text=True)\n"
           "print(proc.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)\n"
           "print(proc.stdout if proc.returncode == 0 else proc.stderr[-3000:])\n")


def _peak_mb(video: Path, out: Path) -> int:
    proc = subprocess.run([sys.executable, "-c", MEASURE, "--video", str(video), "--out", str(out), "--steps", "3"],
                          cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)})
    rc, peak = map(int, proc.stdout.splitlines()[0].split())
    assert rc == 0, proc.stdout[-3000:]
    info = json.loads(proc.stdout.splitlines()[1])
    assert info["streams"]["video"] == pytest.approx(info["seconds"], abs=0.02)
    assert read_sidecar(out) is not None  # the output is whole: full size, with its sidecar
    return peak


def _growth(tmp_path: Path, frames: int) -> tuple:
    base = _peak_mb(_synthetic(tmp_path / "short.mp4", 16), tmp_path / "short-out.mp4")
    peak = _peak_mb(_synthetic(tmp_path / "long.mp4", frames), tmp_path / "long-out.mp4")
    from lumina.media import read_video

    out, fps = read_video(tmp_path / "long-out.mp4")
    assert out.shape == (frames, 480, 640, 3) and fps == 60  # re-encoded at the input's size, not the model's
    return peak - base, peak


IN_ONE_PROCESS = ("import json, resource, sys\n"
                  "from lumina.v2a import load_v2a\n"
                  "from lumina.v2a.cli import add_sound\n"
                  "pipe, peaks = load_v2a(), []\n"
                  "for video, out in zip(sys.argv[1::2], sys.argv[2::2]):\n"
                  "    add_sound(video, out, steps=3, pipe=pipe)\n"
                  "    peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)\n"
                  "print(json.dumps(peaks))\n")


def test_v2a_memory_grows_with_the_small_copy_not_the_full_frames(tmp_path):
    """120 frames (2 s) of 640x480 through the CLI's `add_sound`, after a 16-frame clip in the same process (one
    model load: the default suite's share of the slow test below). The peak may grow by the proportional share of
    the bound at most; before the change it grew by about 0.7 GB."""
    short, long = _synthetic(tmp_path / "short.mp4", 16), _synthetic(tmp_path / "long.mp4", 120)
    proc = subprocess.run([sys.executable, "-c", IN_ONE_PROCESS, str(short), str(tmp_path / "short-out.mp4"),
                           str(long), str(tmp_path / "long-out.mp4")], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    base, peak = json.loads(proc.stdout.splitlines()[-1])
    assert peak - base < LIMIT_MB * 120 / 594, (base, peak)
    assert read_sidecar(tmp_path / "long-out.mp4") is not None


@pytest.mark.slow
def test_v2a_largest_accepted_input_stays_under_1_5_gb(tmp_path):
    """594 frames of 640x480 at 60 fps (about 2 minutes on the 2-core CPU): 5.35 GB before, about 0.85 GB now."""
    growth, peak = _growth(tmp_path, 594)
    assert growth < LIMIT_MB and peak < LIMIT_MB, (growth, peak)
