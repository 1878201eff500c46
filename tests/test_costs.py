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


def _predicted_computed(config, cache):
    """Branch forwards lumina.cache.work_share counts as computed over a run's plan (stages as costs reads them)."""
    from lumina.cache import work_share
    from lumina.costs import stage_positions
    from lumina.sampling import plan

    steps = plan(config)
    return sum((2 if s.guided else 1) * (work_share(cache, position, size, (1 - s.t) * 1000, s.guided, 2, 0.5) == 1.0)
               for s, (position, size) in zip(steps, stage_positions(steps, cache)))


@pytest.mark.parametrize("label", ["taylorseer:3", "taylorseer:4", "pab:2", "pab:3"])
def test_cost_model_knows_which_forwards_each_deterministic_cache_computes(label):
    """The rules lumina.costs charges are the hooks' own: the forwards it counts as computed are the ones a real
    run computes, over a multi-scale schedule (stages restart the caches)."""
    import torch

    from lumina.cache import StepCache
    from tests.builders import random_pipeline

    pipe = random_pipeline()
    cache = StepCache.parse(label)
    config = pipe.defaults.sample_config(patch=("2x4", (0.3, "2x2"), (0.6, "1x2")), steps=20, cfg=(4.0, (0.7, 0.0)),
                                         time_shift=1.0)
    out = pipe("a red circle", height=64, width=64, num_frames=8, sample_config=config, output_type="latent",
               cache=cache, generator=torch.Generator().manual_seed(0))
    assert out.cache["computed"] == _predicted_computed(config, cache) < out.cache["forwards"]


def test_cached_release_predictions_order_the_methods():
    from types import SimpleNamespace

    from lumina.cache import FAST_CACHE, StepCache
    from lumina.sampling import PRESETS

    release = SimpleNamespace(dim=2304, n_layers=24, n_heads=16, n_kv_heads=8, ffn_dim=None, multiple_of=256,
                              cap_feat_dim=2304)
    fit = {"overhead_s": 0.04, "flops_per_second": 4.4e14}  # the first H200 measurement's fit (docs/benchmarks.md)
    seconds = {label: request_seconds(release, PRESETS["f24F96R960-MultiScale"], (24, 88, 156), fit,
                                      StepCache.parse(label))[0]
               for label in ["none", "taylorseer:4", "taylorseer:6", "pab:2", FAST_CACHE.label]}
    assert 140 < seconds["none"] < 160
    assert seconds["taylorseer:6"] < 60 < seconds["taylorseer:4"] < seconds["pab:2"] < seconds["none"]
    assert seconds[FAST_CACHE.label] < 50  # if the release skips as often as the tiny model (ADAPTIVE_SKIP_SHARE)
