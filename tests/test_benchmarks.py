"""The benchmark scripts run in CI-sized configurations and write their tables (no timing asserts)."""

import json
import os
import subprocess
import sys
from pathlib import Path


BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def run(script, *args, tmp_path):
    env = {**os.environ, "LUMINA_BENCH_RESULTS": str(tmp_path)}
    proc = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=400,
                          env=env, cwd=BENCH)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_forward_benchmark(tmp_path):
    out = run("bench_forward.py", "--size", "64x64x8", "--repeats", "1", tmp_path=tmp_path)
    data = json.loads((tmp_path / "forward_tiny_cpu.json").read_text())
    tokens = {row[0]: row[1] for row in data["rows"]}
    assert tokens == {"1x2": 32, "2x2": 16, "2x4": 4}  # latent (2, 8, 8)
    assert "CPU" in data["meta"]["device_name"] and "| 1x2" in out


def test_end_to_end_and_memory_benchmarks(random_pipeline_dir, tmp_path):
    run("bench_end_to_end.py", "--model", str(random_pipeline_dir), "--repeats", "1", tmp_path=tmp_path)
    e2e = json.loads((tmp_path / "end_to_end_cpu.json").read_text())
    assert [r[0] for r in e2e["rows"]] == ["1x2", "2x2", "2x4", "multiscale"] and e2e["rows"][0][4] == "1.000"
    assert [len(r[1].split("/")) > 1 for r in e2e["rows"]] == [False, False, False, True]  # multi-scale: the model's
    from lumina.costs import load_fit

    assert all((r[5] == "no fit") == (load_fit("cpu") is None) for r in e2e["rows"])  # no GPU constants for a CPU
    run("bench_memory.py", "--model", str(random_pipeline_dir), "--size", "64x64x8", "--steps", "3", tmp_path=tmp_path)
    mem = json.loads((tmp_path / "memory_cpu.json").read_text())
    modes = {r[0]: r for r in mem["rows"]}
    assert set(modes) == {"none", "8bit", "none+vae-tiling"}
    assert float(modes["none"][3]) == 0.0 and 0 < float(modes["8bit"][3]) < 0.1
