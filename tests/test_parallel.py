"""One video over several processes (issue 40): diffusers' context parallelism on the CPU with the gloo backend.

Two real processes under `python -m torch.distributed.run` give the one-process video, for Ulysses and for ring
attention, at 1x2 and over a multi-scale schedule, with token counts that do not divide by two among them; under the
CLI only rank 0 writes, and bad launches are refused before any work.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lumina import parallel
from lumina.cli import main
from lumina.errors import InvalidRequestError
from lumina.media import read_video
from tests.builders import random_pipeline
from tests.cp_worker import CASES, forward_case, run_case

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]


def _launch(args, tmp_path: Path, timeout: int = 420) -> subprocess.CompletedProcess:
    """Two processes under torch.distributed.run, each rank's stdout and stderr kept in tmp_path/logs."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    cmd = [*LAUNCH, "--log-dir", str(tmp_path / "logs"), "--tee", "3", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _rank_logs(tmp_path: Path, stream: str):
    """{rank: text} of one stream of the last launch's processes."""
    return {int(p.parent.name): p.read_text() for p in (tmp_path / "logs").glob(f"*/attempt_0/*/{stream}.log")}


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """One launch of tests/cp_worker.py: every case in both modes."""
    out = tmp_path_factory.mktemp("cp")
    proc = _launch(["-m", "tests.cp_worker", str(out)], out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [load_file(str(out / f"rank{r}.safetensors")) for r in (0, 1)], \
        [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


@pytest.fixture(scope="module")
def one_process():
    """The same cases in this single process, with their per-step logs."""
    pipe = random_pipeline(0)
    return {case: run_case(pipe, case) for case in CASES}


@pytest.mark.parametrize("mode", parallel.MODES)
@pytest.mark.parametrize("case", list(CASES))
def test_two_processes_give_the_one_process_video(launched, one_process, mode, case):
    latents, _ = launched
    reference, schedule = one_process[case]
    tokens = {row["patch"] for row in schedule}
    assert tokens == ({"1x2"} if case == "1x2" else {"2x4", "2x2", "1x2"})  # every scale of the schedule ran
    got = latents[0][f"{mode}/{case}"]
    assert torch.equal(got, latents[1][f"{mode}/{case}"])  # both ranks hold the same video
    scale = reference.abs().max().item()
    assert scale > 0.5
    assert (got - reference).abs().max().item() < 2e-5 * scale


@pytest.mark.parametrize("mode", parallel.MODES)
def test_two_processes_give_the_one_process_forward_over_an_odd_token_count(launched, mode):
    latents, _ = launched
    model = random_pipeline(0).transformer
    assert model.num_tokens((3, 6, 10), "1x2") == 45
    reference = forward_case(model)
    got = latents[0][f"{mode}/forward"]
    assert torch.equal(got, latents[1][f"{mode}/forward"])
    assert (got - reference).abs().max().item() < 1e-5 * reference.abs().max().item()


def test_the_multiscale_case_has_a_token_count_two_processes_split_unevenly():
    pipe = random_pipeline(0)
    assert pipe.transformer.num_tokens(pipe.latent_size(8, 96, 96), "2x4") == 9


def test_a_batch_of_videos_of_two_sizes_is_refused_under_both_modes(launched):
    _, messages = launched
    for rank_messages in messages:
        for mode in parallel.MODES:
            assert "mixes videos of 24 to 30 tokens at patch 1x2" in rank_messages[mode]
            assert "give videos of one size" in rank_messages[mode]


def test_cli_under_torch_distributed_run_writes_one_video_from_rank_0(tmp_path, random_pipeline_dir):
    """rank 0 writes the video and its sidecar (which records the split); rank 1 writes and reports nothing; the
    video is the one-process CLI's."""
    args = ["--model", str(random_pipeline_dir), "--prompt", "a red circle", "--seed", "3", "--frames", "16"]
    out = tmp_path / "cp" / "clip.mp4"
    proc = _launch(["-m", "lumina", "generate", *args, "--parallel", "ring", "--out", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in out.parent.iterdir()) == ["clip.json", "clip.mp4"]
    stdout = _rank_logs(tmp_path, "stdout")
    assert json.loads(stdout[0].strip().splitlines()[-1])["video"] == str(out)
    assert stdout[1].strip() == ""
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["parallel"] == {"mode": "ring", "degree": 2}

    single = tmp_path / "one" / "clip.mp4"
    assert main(["generate", *args, "--out", str(single)]) == 0
    one = json.loads(single.with_suffix(".json").read_text())
    assert one["parallel"] is None and one["schedule"] == sidecar["schedule"]
    frames, _ = read_video(out)
    reference, _ = read_video(single)
    assert frames.shape == reference.shape == (16, 64, 64, 3)
    # The same latents (checked above) decoded and encoded twice: mp4 encoding itself varies a little run to run on
    # this random model's noisy frames (mean ~1 level of 255 between two identical one-process runs).
    assert np.abs(frames.astype(int) - reference.astype(int)).mean() < 3 < reference.std()


def test_a_bad_argument_is_refused_by_the_launched_processes_before_any_work(tmp_path):
    out = tmp_path / "clip.mp4"
    proc = _launch(["-m", "lumina", "generate", "--prompt", "x", "--steps", "0", "--parallel", "ulysses",
                    "--out", str(out)], tmp_path, timeout=180)
    assert proc.returncode != 0
    assert "exitcode  : 2" in proc.stderr  # the launcher's summary of the first rank to stop
    stderr = _rank_logs(tmp_path, "stderr")
    refusals = [text for text in stderr.values() if "error: steps=0: must be an integer in 2..200" in text]
    assert refusals and not any("Traceback" in text for text in stderr.values())
    assert not any("Loading" in text for text in stderr.values())  # no model was loaded
    assert list(tmp_path.glob("*.mp4")) == []


@pytest.mark.parametrize("argv, env, message", [
    (["--parallel", "ulysses"], {}, "this is a single process; start it as `torchrun --nproc_per_node N"),
    (["--parallel", "tensor"], {"WORLD_SIZE": "2"}, "--parallel 'tensor': use one of ulysses, ring"),
    ([], {"WORLD_SIZE": "2"}, "this is a launch of 2 processes: add --parallel ulysses|ring"),
    (["--parallel", "ring", "--memory", "model-offload"], {"WORLD_SIZE": "2"}, "--parallel runs with --memory none"),
    (["--parallel", "ring", "--compile"], {"WORLD_SIZE": "2"}, "and without --compile"),
])
def test_launch_refusals(argv, env, message, tmp_path, monkeypatch, capsys):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(["generate", "--prompt", "x", "--out", str(tmp_path / "c.mp4"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_ulysses_needs_a_head_count_the_processes_divide():
    parallel.check_heads(16, "ulysses", 8)
    parallel.check_heads(4, "ring", 3)
    with pytest.raises(InvalidRequestError, match="this model has 4 heads, which 3 processes do not divide"):
        parallel.check_heads(4, "ulysses", 3)


def test_gpu_suite_context_parallel_section_rehearsed_with_two_cpu_processes(tmp_path):
    """The section a machine with several GPUs runs by itself, at toy sizes: one process, then a launch of two."""
    suite = ROOT / "benchmarks" / "gpu_suite.py"
    done = subprocess.run([sys.executable, str(suite), "--toy", "--sections", "context_parallel", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    section = json.loads((tmp_path / "gpu_suite.json").read_text())["sections"]["context_parallel"]
    assert section["gpus"] == 2 and section["same_weights"], section
    rows = {r["mode"]: r for r in section["rows"]}
    assert rows.keys() == {"one process", "ulysses", "ring"}
    for mode in parallel.MODES:
        assert rows[mode]["denoise_s"] > 0 and rows[mode]["rel_diff"] < 1e-5, rows[mode]
    assert sorted(p.name for p in (tmp_path / "context_parallel").iterdir()) == \
        ["cp_worker.json", "ring.safetensors", "ulysses.safetensors"]
    assert "| ring |" in (tmp_path / "gpu_suite.md").read_text()


@pytest.mark.parametrize("length, degree", [(45, 2), (32, 3), (16, 3), (10, 4), (12, 4)])
def test_gathered_shares_padded_to_the_largest_lose_only_their_padding(length, degree):
    from lumina.models.transformer_nextdit import ungather_padding

    tokens = torch.randn(2, length, 3)
    share = -(-length // degree)
    gathered = torch.cat([torch.nn.functional.pad(part, (0, 0, 0, share - part.shape[1]), value=float("nan"))
                          for part in tokens.tensor_split(degree, dim=1)], dim=1)  # diffusers' cut, as gathered
    assert torch.equal(ungather_padding(gathered, length, degree), tokens)


def test_ring_steps_get_attention_and_its_log_sum_exp():
    from lumina.models.transformer_nextdit import attention_with_lse

    q, k, v = (torch.randn(2, 7, 4, 16) for _ in range(3))  # (B, S, H, D)
    out, lse = attention_with_lse(None, q, k, v, scale=0.25, return_lse=True)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) * 0.25
    expected = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v)
    assert torch.allclose(out, expected, atol=1e-5)
    assert torch.allclose(lse, scores.logsumexp(-1).transpose(1, 2), atol=1e-5)


def test_adaptive_step_caches_are_refused_under_context_parallelism():
    from lumina.cache import StepCache

    with pytest.raises(InvalidRequestError, match="processes could disagree"):
        parallel.check_cache("ulysses", StepCache.parse("fbc"))
    parallel.check_cache("ring", StepCache.parse("taylorseer:3"))  # decided by the step count: the same everywhere
    parallel.check_cache(None, StepCache.parse("fbc"))
