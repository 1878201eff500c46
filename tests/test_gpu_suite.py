"""The GPU suite rehearsed at toy sizes on the CPU, so the one command a GPU session runs cannot rot."""

import json
import subprocess
import sys
from pathlib import Path

from lumina.pipelines.memory import modes_for

SUITE = str(Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_suite.py")
PRESETS_512 = ("f16F64R512", "f16F64R512-MultiScale")


def test_toy_suite_runs_every_section_and_meets_the_mode_checks(tmp_path):
    """Run as a GPU machine would: without PyAV, OpenCV or Gradio (only diffusers and bitsandbytes are carried)."""
    blocked = "import sys, runpy; sys.modules.update(dict.fromkeys(['av', 'cv2', 'gradio'])); "
    run = f"sys.argv = ['gpu_suite.py', '--toy', '--out', {str(tmp_path)!r}]; runpy.run_path({SUITE!r}, run_name='__main__')"
    done = subprocess.run([sys.executable, "-c", blocked + run], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    results = saved = json.loads((tmp_path / "gpu_suite.json").read_text())
    assert saved["sections"].keys() == {"forward", "presets", "end_to_end", "memory_modes"}
    assert all("error" not in sec for sec in saved["sections"].values()), saved["sections"]

    forward = results["sections"]["forward"]["rows"]
    assert len(forward) == 2 * 3 * 2 and all(r["s"] > 0 and r["tflops"] > 0 for r in forward)
    by_key = {(r["size"], r["patch"]): r["tokens"] for r in forward}
    assert by_key[("960", "1x2")] == 2 * by_key[("960", "2x2")] == 8 * by_key[("960", "2x4")]

    presets = results["sections"]["presets"]
    assert presets["f24F96R960"]["steps"] == {"1x2x2": 60, "1x2x1": 9}  # cfg truncated at t = 0.2 of 70 grid points
    assert sum(presets["f24F96R960-MultiScale"]["steps"].values()) == 69

    e2e = results["sections"]["end_to_end"]
    for name in PRESETS_512:
        assert e2e[name]["finite"] and e2e[name]["frames_shape"] == [1, 8, 64, 64, 3]

    modes = results["sections"]["memory_modes"]
    assert [r["mode"] for r in modes["rows"]][0] == "none"
    assert {r["mode"] for r in modes["rows"]} == set(modes_for("cpu"))
    failed = [c for c in modes["checks"] if not c["ok"]]
    assert not failed, failed
    assert any(c["mode"] == "8bit" and c["check"].startswith("latent vs none") for c in modes["checks"])
    assert "| mode | check | ok | value |" in (tmp_path / "gpu_suite.md").read_text()
