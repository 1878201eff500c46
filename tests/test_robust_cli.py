"""Nothing lost, nothing half-written, every bad input refused before the work starts (issue 32), on the CLI.

Real subprocesses, real files and the bundled tiny model; mp4s are checked by decoding them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch  # noqa: F401  (imported up front so the timed refusals below measure no import)

from lumina.cli import main
from lumina.media import read_video, sweep_partials, write_json, write_mp4
from lumina.pipelines.loading import TINY_DIR
from lumina.v2a.cli import main as v2a_main

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "a red circle moving right on a navy background"
FAST = ["--resolution", "64x64", "--frames", "8", "--steps", "2"]


def _old_clip(folder: Path):
    """A previous good result: 16 frames with a moving bar, and its sidecar."""
    frames = np.zeros((16, 64, 64, 3), np.uint8)
    for i in range(16):
        frames[i, :, 4 * i:4 * i + 4] = 255
    video = write_mp4(folder / "good.mp4", frames, 8)
    write_json(folder / "good.json", {"video": "good.mp4", "frames": 16})
    return video, read_video(video)[0], (folder / "good.json").read_bytes()


def _env():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


def test_kill_during_the_write_keeps_the_previous_file(tmp_path):
    """kill -9 as soon as the output folder changes (the write begins): the old clip and sidecar survive whole,
    and the only leftovers are temporary files (the new video's, maybe its sidecar's: a sidecar that does not describe
    the video there is never installed) that the sweep (run before every write and at app start) removes."""
    video, old_frames, old_sidecar = _old_clip(tmp_path)
    before = {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
    proc = subprocess.Popen([sys.executable, "-m", "lumina", "generate", "--model", "tiny", "--prompt", PROMPT,
                             "--seed", "3", "--out", str(video), *FAST], cwd=tmp_path, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    changed = None
    while changed is None and time.monotonic() < deadline and proc.poll() is None:
        now = {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in os.scandir(tmp_path) if p.is_file()}
        if now != before:
            changed = sorted(set(now.items()) ^ set(before.items()))
            os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert changed is not None, f"the output folder never changed; rc={proc.returncode}: {proc.stderr.read()[-2000:]}"
    assert proc.returncode == -signal.SIGKILL  # killed mid-write, not finished
    frames, fps = read_video(video)
    assert np.array_equal(frames, old_frames) and fps == 8
    assert (tmp_path / "good.json").read_bytes() == old_sidecar
    assert any(name.endswith(".partial") for name, _ in changed), changed  # the kill came during the write
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name not in ("good.mp4", "good.json"))
    assert all(name.startswith((".good.mp4.", ".good.json.")) and name.endswith(".partial") for name in leftovers), \
        leftovers
    assert sorted(p.name for p in sweep_partials(tmp_path)) == leftovers
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.json", "good.mp4"]


def test_a_failed_write_leaves_the_old_file_and_no_partial(tmp_path):
    video, old_frames, _ = _old_clip(tmp_path)
    with pytest.raises(ValueError):  # 2 channels: PyAV refuses the frame mid-write
        write_mp4(video, np.zeros((8, 64, 64, 2), np.uint8), 8)
    assert np.array_equal(read_video(video)[0], old_frames)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.json", "good.mp4"]
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        write_json(tmp_path / "good.json", {"renorm": float("nan")})
    assert json.loads((tmp_path / "good.json").read_text()) == {"video": "good.mp4", "frames": 16}


def _refuse(args, capsys, model: str = "tiny"):
    """Run the CLI in-process; returns (exit code, its error lines, seconds). Besides third-party loading noise
    (progress bars, library warnings), stderr ends with the one error line, and holds no traceback."""
    start = time.perf_counter()
    rc = main(["generate", "--model", model, "--prompt", PROMPT, *args])
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error")]
    assert errors == lines[-1:], lines
    return rc, errors, seconds


@pytest.fixture(scope="module")
def unloadable_model(tmp_path_factory) -> Path:
    """The tiny model's config and defaults, with weights that cannot load: a refusal that names a setting
    (not the weights) proves the request was checked before any model was loaded."""
    folder = tmp_path_factory.mktemp("unloadable")
    shutil.copy(TINY_DIR / "model_index.json", folder / "model_index.json")
    return folder


BAD_SETTINGS = [
    (["--frames", "0"], "frames=0"),
    (["--fps", "0"], "fps=0"),
    (["--resolution", "0x0"], "size 0x0"),
    (["--cfg", "1e9, 0@0.5"], "cfg=1000000000.0"),
    (["--motion", "1e9, 0@0.5"], "motion=1000000000.0"),
    (["--neg-motion", "2, 1e9@0.05"], "negative motion=1000000000.0"),
    (["--renorm", "nan"], "renorm=nan"),
    (["--cfg", "nan, 0@0.2"], "cfg=nan"),
    (["--time-shift", "inf"], "time shift=inf"),
    (["--steps", "0"], "steps=0"),
    (["--cache", "fbc:lots"], "not a number"),
    (["--cache", "warp"], "allowed: fbc"),
    (["--device", "cuda:7" if torch.cuda.is_available() else "cuda"], "--device"),
]


@pytest.mark.parametrize("args, words", BAD_SETTINGS, ids=[" ".join(a) for a, _ in BAD_SETTINGS])
def test_bad_settings_refused_in_one_line_before_loading(args, words, unloadable_model, tmp_path, capsys):
    rc, err, seconds = _refuse(["--out", str(tmp_path / "x.mp4"), *args], capsys, str(unloadable_model))
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: ") and words in err[0], err
    assert seconds < 2.0
    assert not list(tmp_path.iterdir())


def _unwritable_outs(tmp_path: Path):
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "x.mp4").mkdir()
    return [("/proc/x.mp4", "cannot write in /proc"), (str(tmp_path / "a-file" / "x.mp4"), "is a file, not a folder"),
            (str(tmp_path / "x.mp4"), "is an existing folder"), (str(tmp_path / "x.gif"), "must be a .mp4 file")]


def test_unwritable_out_refused_in_under_two_seconds(unloadable_model, tmp_path, capsys):
    for out, words in _unwritable_outs(tmp_path):
        rc, err, seconds = _refuse(["--out", out], capsys, str(unloadable_model))
        assert rc == 2 and len(err) == 1 and words in err[0], (out, err)
        assert seconds < 2.0, (out, seconds)


def _corrupt(tmp_path: Path, case: str) -> Path:
    """A copy of the tiny model (only what the case needs; the rest linked) with one file damaged."""
    folder = tmp_path / case
    folder.mkdir()
    if case == "release-truncated":
        data = (TINY_DIR / "transformer" / "diffusion_pytorch_model.safetensors").read_bytes()
        (folder / "consolidated.00-of-01.safetensors").write_bytes(data[:5000])
        return folder
    shutil.copy(TINY_DIR / "model_index.json", folder / "model_index.json")
    for sub in ("text_encoder", "tokenizer", "transformer", "vae"):
        (folder / sub).symlink_to(TINY_DIR / sub, target_is_directory=True)
    if case == "model-index":
        (folder / "model_index.json").write_text((TINY_DIR / "model_index.json").read_text()[:40])
    elif case == "defaults":
        index = json.loads((TINY_DIR / "model_index.json").read_text())
        (folder / "model_index.json").write_text(json.dumps({**index, "defaults": {"preset": "f24"}}))
    elif case == "diffusers-truncated":
        (folder / "vae").unlink()
        (folder / "vae").mkdir()
        shutil.copy(TINY_DIR / "vae" / "config.json", folder / "vae" / "config.json")
        data = (TINY_DIR / "vae" / "diffusion_pytorch_model.safetensors").read_bytes()
        (folder / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(data[: len(data) // 2])
    elif case in ("list", "nested", "transformer-empty", "unknown-library"):
        index = json.loads((TINY_DIR / "model_index.json").read_text())
        malformed = {"list": [1, 2, 3], "nested": None, "transformer-empty": {**index, "transformer": []},
                     "unknown-library": {**index, "vae": ["os", "system"]}}[case]
        text = "[" * 200_000 + "]" * 200_000 if case == "nested" else json.dumps(malformed)
        (folder / "model_index.json").write_text(text)
    elif case == "pickle":
        (folder / "text_encoder").unlink()
        (folder / "text_encoder").mkdir()
        shutil.copy(TINY_DIR / "text_encoder" / "config.json", folder / "text_encoder" / "config.json")
        payload = f"cos\nsystem\n(Vtouch {tmp_path / 'UNPICKLED'}\ntR.".encode()  # unpickling it runs `touch`
        (folder / "text_encoder" / "pytorch_model.bin").write_bytes(payload)
    return folder


# Refused from the folder's layout, before any library reads it (the others when their file is read).
LAYOUT = {
    "list": "model_index.json: not a valid pipeline config (a JSON object naming the components is expected, not a list)",
    "nested": "model_index.json: not a valid pipeline config (nested too deeply)",
    "transformer-empty": "'transformer' is []; a component is a pair [library, class]",
    "unknown-library": "'vae' is [\"os\", \"system\"]; a component is a pair [library, class] with the library one of",
    "pickle": "text_encoder/pytorch_model.bin: text_encoder's weights are a pickle file, which this project never loads",
}


@pytest.mark.parametrize("case, words", [
    ("model-index", "model_index.json: not a valid pipeline config"),
    ("defaults", "unknown preset 'f24'"),
    ("diffusers-truncated", "vae/diffusion_pytorch_model.safetensors"),
    ("release-truncated", "SafetensorError"),
    *LAYOUT.items(),
])
def test_corrupt_model_folders_give_one_line_and_are_never_unpickled(case, words, tmp_path, capsys):
    model = _corrupt(tmp_path, case)
    rc, err, seconds = _refuse(["--out", str(tmp_path / "x.mp4"), *FAST], capsys, str(model))
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: ") and words in err[0], err
    assert not (tmp_path / "x.mp4").exists() and not (tmp_path / "UNPICKLED").exists()
    assert case not in LAYOUT or seconds < 2.0
    if case == "pickle":  # the payload is a real one: unpickled, it would have run
        import pickle

        pickle.loads((model / "text_encoder" / "pytorch_model.bin").read_bytes())
        assert (tmp_path / "UNPICKLED").exists()


def test_high_fps_video_refused_by_v2a_with_the_cap(tmp_path, capsys):
    """The issue's input: 10 s at 240 fps, 256x256 (a small file). Refused before decoding, naming the cap."""
    clip = write_mp4(tmp_path / "fast.mp4", np.zeros((2400, 256, 256, 3), np.uint8), 240)
    assert clip.stat().st_size < 1024**2
    start = time.perf_counter()
    rc = v2a_main(["--video", str(clip), "--out", str(tmp_path / "out.mp4")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "240 fps; at most 60 fps" in err[0], err
    assert time.perf_counter() - start < 2.0 and not (tmp_path / "out.mp4").exists()
    # decoding is bounded too, whatever a header claims
    from lumina.errors import InvalidRequestError

    with pytest.raises(InvalidRequestError, match="more than 100 frames; at most 100"):
        read_video(clip, max_frames=100)
    with pytest.raises(InvalidRequestError, match="256x256 pixels; at most 4096"):
        read_video(clip, max_pixels=64 * 64)


HEAVY = ("torch", "diffusers", "transformers", "cv2", "accelerate")


def _run_cli(args, cwd):
    """`python -m lumina ARGS` in a fresh interpreter: (exit code, stderr, wall seconds, heavy modules it imported)."""
    probe = ("import runpy, sys; sys.argv = ['lumina', *sys.argv[1:]]\n"
             "try:\n    runpy.run_module('lumina', run_name='__main__')\n"
             "finally:\n    print('HEAVY', sorted(m for m in %r if m in sys.modules), file=sys.stderr)\n" % (HEAVY,))
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", probe, *args], cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=120)
    seconds = time.perf_counter() - start
    heavy = [line for line in proc.stderr.splitlines() if line.startswith("HEAVY")][-1]
    return proc.returncode, proc.stderr, seconds, heavy


@pytest.mark.parametrize("args, words", [
    (["presets"], None),
    (["generate", "--prompt", PROMPT, "--out", "x.gif"], "must be a .mp4 file"),
    (["generate", "--prompt", PROMPT, "--out", "x.mp4", "--frames", "7"], "frames=7"),
    (["generate", "--prompt", "", "--out", "x.mp4"], "the prompt is empty"),
    (["v2a", "--video", "nothing.mp4", "--out", "x.mp4"], "no such file"),
    (["v2a", "--video", "not-a-video.mp4", "--out", "x.mp4"], "not a readable video"),
    (["v2a", "--video", "not-a-video.mp4", "--out", "x.mp4", "--seed", "-5"], "seed=-5: must be an integer in 0..4294967295"),
    (["v2a", "--video", "not-a-video.mp4", "--out", "x.mp4", "--seed", str(2**64)],
     f"seed={2**64}: must be an integer in 0..4294967295"),
    (["batch", "lines.txt", "--out", "out"], "lines.txt: prompt 1: unknown preset ['a']"),
    (["generate", "--prompt", PROMPT, "--out", "package.mp4"], "package.json exists and is not a sidecar of package.mp4"),
    (["v2a", "--video", "not-a-video.mp4", "--out", "package.mp4"], "package.json exists and is not a sidecar"),
], ids=["presets", "out-suffix", "frames", "empty-prompt", "v2a-missing", "v2a-unreadable", "v2a-seed", "v2a-seed-2**64",
        "batch-line", "generate-foreign-json", "v2a-foreign-json"])
def test_presets_and_refusals_answer_in_under_two_seconds_without_heavy_imports(args, words, tmp_path):
    """Measured before the change: 6-7 s each, nearly all of it importing diffusers before anything was checked."""
    (tmp_path / "not-a-video.mp4").write_text("not a video")
    (tmp_path / "lines.txt").write_text('{"prompt": "x", "preset": ["a"]}\n')
    (tmp_path / "package.json").write_text('{"name": "my-package"}\n')
    rc, err, seconds, heavy = _run_cli(args, tmp_path)
    assert heavy == "HEAVY []", (args, heavy)
    assert seconds < 2.0, (args, seconds)
    if words is None:
        assert rc == 0
    else:
        errors = [line for line in err.splitlines() if line.startswith("error")]
        assert rc == 2 and len(errors) == 1 and words in errors[0] and "Traceback" not in err, err
