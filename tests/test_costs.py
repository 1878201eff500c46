"""The cost model behind ZeroGPU durations and benchmark predictions."""

import pytest
import torch

from lumina import PRESETS, LuminaNextDiTVideo
from lumina.costs import fit_throughput, forward_flops, request_seconds


@pytest.fixture(scope="module")
def release_config():
    with torch.device("meta"):
        return LuminaNextDiTVideo().config


def test_flops_scale_with_tokens_and_multiscale_is_cheaper(release_config):
    latent = (24, 88, 156)  # 1248x704, 96 frames
    f_1x2 = forward_flops(release_config, 82368)
    assert 2 * 1.6e9 * 82368 < f_1x2  # at least 2 x params x tokens
    fit = {"overhead_s": 0.0, "flops_per_second": 1e14}
    single, tokens = request_seconds(release_config, PRESETS["f24F96R960"], latent, fit)
    multi, tokens_ms = request_seconds(release_config, PRESETS["f24F96R960-MultiScale"], latent, fit)
    assert tokens == {"1x2": 82368} and tokens_ms == {"2x4": 10296, "2x2": 41184, "1x2": 82368}
    assert 0.2 < multi / single < 0.4  # the paper measures 0.34


def test_fit_recovers_overhead_and_throughput():
    samples = [(f, 0.05 + f / 2e12) for f in (1e11, 5e11, 2e12)]
    fit = fit_throughput(samples)
    assert abs(fit["overhead_s"] - 0.05) < 1e-9 and abs(fit["flops_per_second"] / 2e12 - 1) < 1e-9
    with pytest.raises(ValueError, match="overhead dominates"):
        fit_throughput([(1e9, 0.04), (1e10, 0.03)])


def test_only_cuda_falls_back_to_a_fit_measured_elsewhere(tmp_path, monkeypatch):
    """A GPU's constants predict nothing about a CPU: a device without a fit gets None, CUDA its fallback."""
    import json

    from lumina import costs

    monkeypatch.setattr(costs, "COST_FILE", tmp_path / "cost_model.json")
    assert costs.load_fit("cuda") == costs.DEFAULT_FIT and costs.load_fit("cpu") is None
    (tmp_path / "cost_model.json").write_text(json.dumps({"cpu": {"overhead_s": 0.006, "flops_per_second": 6e10}}))
    assert costs.load_fit("cpu")["overhead_s"] == 0.006 and costs.load_fit("cuda") == costs.DEFAULT_FIT


# The first H200 measurement (docs/benchmarks.md): seconds per bf16 forward at 1248x704x96, batch 1.
H200_FORWARDS = {82368: 3.98, 41184: 1.18, 10296: 0.145}


def test_parallel_prediction_splits_compute_and_adds_the_ulysses_all_to_alls(release_config):
    from lumina.costs import NVLINK_BYTES_PER_S, parallel_request_seconds, ulysses_step_bytes

    fit = fit_throughput([(forward_flops(release_config, t), s) for t, s in H200_FORWARDS.items()])
    latent, preset = (24, 88, 156), PRESETS["f24F96R960-MultiScale"]
    one = parallel_request_seconds(release_config, preset, latent, 1, fit)
    assert one["comm_s"] == 0 and one["seconds"] == pytest.approx(request_seconds(release_config, preset, latent, fit)[0])
    assert one["seconds"] == pytest.approx(148, rel=0.02)  # the H200's composed figure the fit comes from
    # 4 all-to-alls x 24 layers of 82,368 tokens x 2304 values in bf16, 7/8 of it leaving each of 8 GPUs
    assert ulysses_step_bytes(release_config, 82368, 8) == 4 * 24 * 82368 * 2304 * 2 * 7 / 8
    rows = {g: parallel_request_seconds(release_config, preset, latent, g, fit) for g in (2, 4, 8)}
    # the table in docs/benchmarks.md
    assert [round(rows[g]["seconds"], 1) for g in (2, 4, 8)] == [78.4, 42.1, 23.7]
    assert 0.80 < rows[8]["attention_share"] < 0.82
    assert rows[8]["comm_s"] < 0.03 * rows[8]["seconds"]
    slower = parallel_request_seconds(release_config, preset, latent, 8, fit, NVLINK_BYTES_PER_S / 10)
    assert slower["comm_s"] == pytest.approx(10 * rows[8]["comm_s"]) and slower["compute_s"] == rows[8]["compute_s"]
