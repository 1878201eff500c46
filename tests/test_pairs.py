"""A video and its sidecar are one pair (issue 41): after any kill or write failure they are both old or both new, or
the mismatch is detected (`read_sidecar`) and repaired by the next write; someone else's X.json is never replaced.

Real files, real mp4s (decoded to compare), real SIGKILLs of a writer process, a real full file system (a small tmpfs,
where this machine lets the tests mount one).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from lumina.errors import InvalidRequestError, OutputError
from lumina.media import (check_sidecar_target, read_sidecar, read_video, sidecar_path, sweep_partials, write_json,
                          write_pair)

ROOT = Path(__file__).resolve().parents[1]


def _clip(shift: int, frames: int = 8) -> np.ndarray:
    """A bar at column 4*shift: clips with different shifts decode differently."""
    out = np.zeros((frames, 64, 64, 3), np.uint8)
    out[:, :, 4 * shift:4 * shift + 4] = 255
    return out


def _listing(folder: Path):
    return sorted(p.name for p in folder.iterdir())


def _same_video(path: Path, frames: np.ndarray) -> bool:
    decoded = read_video(path)[0]
    return decoded.shape == frames.shape and float(np.abs(decoded.astype(int) - frames).mean()) < 3


@pytest.fixture
def old_pair(tmp_path):
    """A previous result: clip.mp4 (bar at 0) and its sidecar."""
    sidecar = write_pair(tmp_path / "clip.mp4", _clip(0), 8, {"run": "old"})
    return tmp_path / "clip.mp4", sidecar, (tmp_path / "clip.json").read_bytes()


def test_the_sidecar_describes_its_video_and_a_stale_one_is_detected(old_pair, tmp_path):
    video, sidecar, _ = old_pair
    assert sidecar["video"] == "clip.mp4" and sidecar["video_bytes"] == video.stat().st_size
    assert len(sidecar["video_sha256"]) == 64 and sidecar["run"] == "old"
    assert read_sidecar(video) == json.loads((tmp_path / "clip.json").read_text()) == sidecar
    assert _listing(tmp_path) == ["clip.json", "clip.mp4"]  # no temporary file left
    data = bytearray(video.read_bytes())
    data[-10] ^= 0xFF  # same size, one byte changed
    video.write_bytes(bytes(data))
    assert read_sidecar(video) is None
    write_json(tmp_path / "other.json", {**sidecar, "video": "other.mp4"})
    assert read_sidecar(tmp_path / "other.mp4") is None  # names a video that is not there
    (tmp_path / "clip.json").write_text("[" * 100_000 + "]" * 100_000)
    assert read_sidecar(video) is None  # unreadable: no pair, no traceback


def _fail_at_rename(monkeypatch, target: Path):
    """os.replace raises when it would rename onto `target` (a failure, e.g. EIO, at that step)."""
    real = os.replace

    def replace(src, dst):
        if Path(dst) == target:
            raise OSError(5, "Input/output error")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)


def test_a_failed_sidecar_rename_puts_the_previous_video_back(old_pair, tmp_path, monkeypatch):
    video, old, old_bytes = old_pair
    _fail_at_rename(monkeypatch, tmp_path / "clip.json")
    with pytest.raises(OutputError, match=r"clip.mp4 and its sidecar clip.json could not be written "
                                          r"\(Input/output error\); the previous clip.mp4 and clip.json are unchanged"):
        write_pair(video, _clip(5), 8, {"run": "new"})
    monkeypatch.undo()
    assert (tmp_path / "clip.json").read_bytes() == old_bytes and read_sidecar(video) == old
    assert _same_video(video, _clip(0))
    assert _listing(tmp_path) == ["clip.json", "clip.mp4"]


def test_a_failed_first_pair_leaves_nothing(tmp_path, monkeypatch):
    _fail_at_rename(monkeypatch, tmp_path / "new.json")
    with pytest.raises(OutputError, match="nothing was written"):
        write_pair(tmp_path / "new.mp4", _clip(1), 8, {})
    assert _listing(tmp_path) == []


KILLER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    import numpy as np
    import lumina.media as media

    video, at = Path(sys.argv[1]), sys.argv[2]
    real = os.replace

    def replace(src, dst):  # SIGKILL just before the rename onto `at`
        if Path(dst).name == at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(src, dst)

    os.replace = replace
    frames = np.zeros((8, 64, 64, 3), np.uint8)
    frames[:, :, 20:24] = 255
    media.write_pair(video, frames, 8, {"run": "new"})
""")


@pytest.mark.parametrize("at", ["clip.mp4", "clip.json"], ids=["before-the-video-rename", "between-the-renames"])
def test_a_writer_killed_at_either_rename_leaves_a_pair_the_next_write_makes_whole(at, old_pair, tmp_path):
    video, old, _ = old_pair
    proc = subprocess.run([sys.executable, "-c", KILLER, str(video), at], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    leftovers = [name for name in _listing(tmp_path) if name.endswith(".partial")]
    if at == "clip.json":
        # the state the issue found (4 of 4 tries): the new video beside the old sidecar; it is now detected
        assert _same_video(video, _clip(5)) and read_sidecar(video) is None
        assert any(name.startswith(".clip.json.") for name in leftovers), leftovers  # the finished sidecar
    else:
        assert _same_video(video, _clip(0)) and read_sidecar(video) == old
    write_pair(tmp_path / "next.mp4", _clip(2), 8, {})  # the next run writing into the folder
    assert _listing(tmp_path) == ["clip.json", "clip.mp4", "next.json", "next.mp4"]
    healed = read_sidecar(video)
    assert healed is not None and healed["run"] == ("new" if at == "clip.json" else "old")
    assert _same_video(video, _clip(5 if at == "clip.json" else 0))


def test_the_sweep_never_installs_a_sidecar_that_does_not_describe_the_video(old_pair, tmp_path):
    """A dead writer's sidecar for a video that never arrived (killed before the video's rename) is removed."""
    video, old, _ = old_pair
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stray = tmp_path / f".clip.json.{_host()}.{dead.pid}-0123abcd.partial"
    stray.write_text(json.dumps({**old, "video_sha256": "0" * 64, "run": "never"}))
    assert sweep_partials(tmp_path) == [stray]
    assert read_sidecar(video) == old and _listing(tmp_path) == ["clip.json", "clip.mp4"]


def _host() -> str:
    from lumina.media import _HOST

    return _HOST


def test_a_folder_or_someone_elses_json_at_the_sidecar_name_is_refused_before_any_work(tmp_path):
    (tmp_path / "package.json").write_text('{"name": "my-package", "version": "1.0.0"}\n')
    with pytest.raises(InvalidRequestError, match=r"package.json exists and is not a sidecar of package.mp4 .*"
                                                  r"pass --overwrite-sidecar"):
        write_pair(tmp_path / "package.mp4", _clip(1), 8, {})
    assert _listing(tmp_path) == ["package.json"]
    (tmp_path / "x.json").mkdir()
    with pytest.raises(InvalidRequestError, match="x.json is a folder, so the sidecar of x.mp4 cannot be written"):
        check_sidecar_target(tmp_path / "x.mp4", overwrite_sidecar=True)
    written = write_pair(tmp_path / "package.mp4", _clip(1), 8, {}, overwrite_sidecar=True)
    assert read_sidecar(tmp_path / "package.mp4") == written
    check_sidecar_target(tmp_path / "package.mp4")  # now its own sidecar: replacing it needs no flag
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        write_pair(tmp_path / "package.mp4", _clip(2), 8, {"cfg": float("nan")})
    assert read_sidecar(tmp_path / "package.mp4") == written


@pytest.fixture
def small_disk(tmp_path):
    """A 512 KiB tmpfs (skipped where this machine does not let the tests mount one)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()})")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def _fill(folder: Path, leave: int) -> None:
    """Fill the file system of `folder` but `leave` bytes (in whole blocks)."""
    stat = os.statvfs(folder)
    free = stat.f_bavail * stat.f_frsize
    (folder / "filler").write_bytes(b"\0" * max(0, free - leave))


def test_a_full_disk_at_the_sidecar_leaves_the_previous_pair(small_disk):
    old = write_pair(small_disk / "clip.mp4", _clip(0), 8, {"run": "old"})
    new_size = len(_encoded(_clip(5), small_disk.parent))
    _fill(small_disk, leave=-(-new_size // 4096) * 4096)  # room for the new video, none for its sidecar
    with pytest.raises(OutputError, match=r"could not be written \(No space left on device\); the previous clip.mp4 "
                                          r"and clip.json are unchanged"):
        write_pair(small_disk / "clip.mp4", _clip(5), 8, {"run": "new", "notes": "x" * 8192})
    assert read_sidecar(small_disk / "clip.mp4") == old and _same_video(small_disk / "clip.mp4", _clip(0))
    assert _listing(small_disk) == ["clip.json", "clip.mp4", "filler"]


def _encoded(frames: np.ndarray, folder: Path) -> bytes:
    from lumina.media import write_mp4

    return write_mp4(folder / "probe.mp4", frames, 8).read_bytes()


def test_a_measurement_added_later_keeps_the_pair_whole(old_pair, tmp_path):
    """The app adds the measured motion to an example's sidecar after the video is written (`write_sidecar`)."""
    from lumina.media import write_sidecar

    video, old, _ = old_pair
    updated = write_sidecar(video, {**old, "measured_motion": 3.5})
    assert read_sidecar(video) == updated and updated["measured_motion"] == 3.5
    assert updated["video_sha256"] == old["video_sha256"]
    video.write_bytes(video.read_bytes()[:-1])  # a truncated video is no longer the one described
    assert read_sidecar(video) is None


def test_sidecar_path_is_the_videos_name_with_json():
    assert sidecar_path("out/a.b.mp4") == Path("out/a.b.json")


PROMPT = "a red circle moving right on a navy background"
FAST = ["--model", "tiny", "--prompt", PROMPT, "--seed", "3", "--resolution", "64x64", "--frames", "8", "--steps", "2"]


def _cli(args, capsys):
    from lumina.cli import main

    rc = main(["generate", *FAST, *args])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, [line for line in err.splitlines() if line.startswith("error")]


def test_cli_refuses_to_replace_an_unrelated_json_beside_out_unless_told(tmp_path, capsys):
    package = tmp_path / "package.json"
    package.write_text('{"name": "my-package", "version": "1.0.0"}\n')
    rc, err = _cli(["--out", str(tmp_path / "package.mp4")], capsys)
    assert rc == 2 and len(err) == 1 and "package.json exists and is not a sidecar of package.mp4" in err[0], err
    assert "--overwrite-sidecar" in err[0] and _listing(tmp_path) == ["package.json"]
    (tmp_path / "folder.json").mkdir()
    rc, err = _cli(["--out", str(tmp_path / "folder.mp4"), "--overwrite-sidecar"], capsys)
    assert rc == 2 and "folder.json is a folder" in err[0], err
    rc, err = _cli(["--out", str(tmp_path / "package.mp4"), "--overwrite-sidecar"], capsys)
    assert rc == 0 and not err
    sidecar = read_sidecar(tmp_path / "package.mp4")
    assert sidecar is not None and sidecar["request"]["seed"] == 3 and "name" not in sidecar
    assert read_video(tmp_path / "package.mp4")[0].shape == (8, 64, 64, 3)


def test_cli_full_disk_at_the_sidecar_exits_2_and_keeps_the_previous_pair(small_disk, tmp_path, capsys):
    rc, _ = _cli(["--out", str(tmp_path / "probe.mp4")], capsys)  # the same run elsewhere: the new video's size
    assert rc == 0
    old = write_pair(small_disk / "clip.mp4", _clip(0), 8, {"run": "old"})
    _fill(small_disk, leave=-(-(tmp_path / "probe.mp4").stat().st_size // 4096) * 4096)
    rc, err = _cli(["--out", str(small_disk / "clip.mp4")], capsys)
    assert rc == 2 and len(err) == 1, err
    assert "clip.mp4 and its sidecar clip.json could not be written (No space left on device); the previous " \
           "clip.mp4 and clip.json are unchanged" in err[0]
    assert read_sidecar(small_disk / "clip.mp4") == old and _same_video(small_disk / "clip.mp4", _clip(0))
    assert _listing(small_disk) == ["clip.json", "clip.mp4", "filler"]
