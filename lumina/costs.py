"""How long a request takes: FLOPs per forward from the config, seconds from a fitted throughput.

`seconds(forward) = overhead + flops / flops_per_second`, with the two constants fitted by
`benchmarks/bench_forward.py` per device and stored in `benchmarks/results/cost_model.json`. The app's
ZeroGPU duration and the benchmarks' predictions both come from here.
"""

from __future__ import annotations

import json
from typing import Dict, List, Optional, Sequence, Tuple

from lumina.cache import StepCache, work_share
from lumina.sampling import SampleConfig, plan
from lumina.settings import SETTINGS

COST_FILE = SETTINGS.results / "cost_model.json"
# Fallback for a CUDA GPU before any benchmark ran: H100-class bf16 at ~35% utilisation.
DEFAULT_FIT = {"overhead_s": 0.01, "flops_per_second": 3.5e14}


def forward_flops(config, tokens: int, caption_tokens: int = 256) -> float:
    """Multiply-adds x2 of one transformer forward over `tokens` video tokens (one item)."""
    return sum(forward_flops_parts(config, tokens, caption_tokens).values())


def forward_flops_parts(config, tokens: int, caption_tokens: int = 256) -> Dict[str, float]:
    """The FLOPs of one forward by where they go: "attention" (the attention modules: projections, caption keys and
    the attention itself) and "ffn"."""
    d, layers = config.dim, config.n_layers
    kv = (d // config.n_heads) * (config.n_kv_heads or config.n_heads)
    ffn = config.ffn_dim or 0
    if not ffn:
        from lumina.models.transformer_nextdit import ffn_hidden_dim

        ffn = ffn_hidden_dim(d, config.multiple_of)
    projections = 2 * (2 * d * d + 2 * d * kv)
    caption = 2 * caption_tokens * 2 * config.cap_feat_dim * kv
    attention = attention_flops(config, tokens, caption_tokens) / layers
    return {"attention": float(layers * (tokens * projections + caption + attention)),
            "ffn": float(layers * tokens * 2 * 3 * d * ffn)}


def attention_flops(config, tokens: int, caption_tokens: int = 256) -> float:
    """The attention part of `forward_flops` (scores and weighted values over the video and caption keys, all
    layers): the part that grows with the square of the tokens."""
    return float(config.n_layers * 2 * 2 * tokens * (tokens + caption_tokens) * config.dim)


def load_fit(device: str = "cuda") -> Optional[Dict[str, float]]:
    """The fitted constants of a device type; without a fit, the fallback for CUDA and None for anything else
    (a GPU's constants predict nothing about a CPU)."""
    if COST_FILE.exists():
        fits = json.loads(COST_FILE.read_text())
        if device in fits:
            return fits[device]
    return DEFAULT_FIT if device == "cuda" else None


def forward_seconds(config, tokens: int, fit: Dict[str, float]) -> float:
    return fit["overhead_s"] + forward_flops(config, tokens) / fit["flops_per_second"]


def stage_positions(steps: Sequence, cache: Optional[StepCache]) -> List[Tuple[int, int]]:
    """(position in its stage, the stage's length) of each step: a cache restarts at a patch-size switch and, for the
    methods whose state is per cache context, where guidance turns off and the context changes."""
    stage_of = lambda step: (step.patch, cache is not None and cache.per_context and step.guided)  # noqa: E731
    sizes: Dict[tuple, int] = {}
    for step in steps:
        sizes[stage_of(step)] = sizes.get(stage_of(step), 0) + 1
    out, position, previous = [], 0, None
    for step in steps:
        position = position + 1 if stage_of(step) == previous else 0
        previous = stage_of(step)
        out.append((position, sizes[previous]))
    return out


def request_seconds(
    transformer_config, sample_config: SampleConfig, latent_shape: Tuple[int, int, int], fit: Optional[dict] = None,
    cache: Optional[StepCache] = None, steps: Optional[Sequence] = None,
) -> Tuple[float, Dict[str, int]]:
    """Predicted denoising seconds for one video, and the tokens per step of each scale used. With a step `cache`,
    each step is charged the share of its work the cache still computes (`lumina.cache.work_share`), the per-forward
    overhead included. `steps`: the config's step plan, where the caller has made it already."""

    fit = fit or load_fit()
    f, h, w = latent_shape
    total, tokens_by_scale = 0.0, {}
    steps = plan(sample_config) if steps is None else steps
    for step, (position, stage_steps) in zip(steps, stage_positions(steps, cache)):
        ps = step.patch
        tokens = -(-f // ps.f) * (h // ps.p) * (w // ps.p)
        tokens_by_scale[ps.name] = tokens
        parts = forward_flops_parts(transformer_config, tokens)
        share = work_share(cache, position, stage_steps, (1.0 - step.t) * 1000.0, step.guided,
                           transformer_config.n_layers, parts["attention"] / sum(parts.values()))
        total += forward_seconds(transformer_config, tokens, fit) * (2 if step.guided else 1) * share
    return total, tokens_by_scale


def forward_samples(model, latent_shape: Tuple[int, int, int], repeats: int = 3, caption_tokens: int = 32,
                    batch: int = 1, patches: Optional[Sequence[str]] = None) -> List[Tuple[str, int, float, float]]:
    """(patch, tokens an item, FLOPs of the batch, median seconds) of one forward of `model` at each patch size
    (default: every one it supports), on the device and dtype it is on, with random inputs of `latent_shape`
    (frames, height, width)."""
    import statistics
    import time

    import torch

    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    latent = torch.randn(batch, model.config.in_channels, *latent_shape, device=device, dtype=dtype)
    cap = torch.randn(batch, caption_tokens, model.config.cap_feat_dim, device=device, dtype=dtype)
    mask = torch.ones(batch, caption_tokens, device=device, dtype=torch.long)
    t, motion = torch.full((batch,), 0.5, device=device), torch.full((batch,), 6.0, device=device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    rows = []
    for ps in patches or [p.name for p in model.supported_patch_sizes()]:
        times = []
        with torch.no_grad():
            for k in range(repeats + 1):  # the first run warms up
                sync()
                start = time.perf_counter()
                model(latent, t, cap, mask, motion, ps)
                sync()
                if k:
                    times.append(time.perf_counter() - start)
        tokens = model.num_tokens(tuple(latent_shape), ps)
        rows.append((ps, tokens, batch * forward_flops(model.config, tokens, caption_tokens), statistics.median(times)))
    return rows


def measure_fit(model, latent_shape: Tuple[int, int, int]) -> Dict[str, float]:
    """The throughput fit of the device `model` is on, measured now (for a device without a stored fit) at most at
    (2, 32, 32) latents (512 tokens at 1x2), so that measuring stays short whatever the model's default size."""
    f, h, w = latent_shape
    small = (min(f, 2), min(h, 32), min(w, 32))
    samples = [(flops, sec) for _, _, flops, sec in forward_samples(model, small, repeats=2)]
    try:
        return fit_throughput(samples)
    except ValueError:  # per-forward overhead dominates at this size: charge the slowest forward flat
        return {"overhead_s": max(sec for _, sec in samples), "flops_per_second": float("inf")}


def fit_throughput(samples) -> Dict[str, float]:
    """Least squares of seconds = overhead + flops / throughput over (flops, seconds) pairs."""
    n = len(samples)
    mean_x = sum(x for x, _ in samples) / n
    mean_y = sum(y for _, y in samples) / n
    var = sum((x - mean_x) ** 2 for x, _ in samples)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in samples) / var if var else mean_y / mean_x
    if slope <= 0:
        raise ValueError("seconds do not grow with FLOPs in these samples (per-forward overhead dominates): "
                         "no throughput can be fitted; benchmark a larger configuration")
    overhead = max(mean_y - slope * mean_x, 0.0)
    return {"overhead_s": overhead, "flops_per_second": 1.0 / slope}


# Assumed all-to-all bandwidth of one H200 over NVLink 4 / NVSwitch, each direction: 80% of the 450 GB/s a GPU's 18
# links carry one way (NCCL's all-to-all reaches about that on 8-GPU SXM boards). An assumption, not a measurement.
NVLINK_BYTES_PER_S = 3.6e11


def ulysses_step_bytes(config, tokens: int, gpus: int, bytes_per_value: int = 2) -> float:
    """Bytes one forward (one item) moves between `gpus` GPUs under Ulysses attention, all of them together: per layer
    four all-to-alls (queries, keys, values, output), each of tokens x dim values (keys and values after their heads
    are shared out: GQA is not split) of which each GPU keeps 1/N."""
    return 4 * config.n_layers * tokens * config.dim * bytes_per_value * (gpus - 1) / gpus


def parallel_request_seconds(
    transformer_config, sample_config: SampleConfig, latent_shape: Tuple[int, int, int], gpus: int,
    fit: Optional[dict] = None, link_bytes_per_s: float = NVLINK_BYTES_PER_S,
) -> Dict[str, float]:
    """Predicted denoising seconds of one video split over `gpus` GPUs with Ulysses attention (`--parallel ulysses`),
    as `request_seconds` composes them: each GPU computes 1/N of every forward's FLOPs (its tokens' projections and
    FFN, and full-sequence attention for 1/N of the heads) at the device fit's throughput, pays the fit's per-forward
    overhead whole, and waits for the all-to-alls, each GPU sending its share at `link_bytes_per_s` (no overlap).

    Returns {"seconds", "compute_s", "comm_s", "attention_share"} (the attention share of the FLOPs over the run)."""
    fit = fit or load_fit()
    f, h, w = latent_shape
    compute = comm = flops = attention = 0.0
    for step in plan(sample_config):
        ps = step.patch
        tokens = -(-f // ps.f) * (h // ps.p) * (w // ps.p)
        items = 2 if step.guided else 1
        step_flops = items * forward_flops(transformer_config, tokens)
        flops += step_flops
        attention += items * attention_flops(transformer_config, tokens)
        compute += items * fit["overhead_s"] + step_flops / gpus / fit["flops_per_second"]
        comm += items * ulysses_step_bytes(transformer_config, tokens, gpus) / gpus / link_bytes_per_s
    return {"seconds": compute + comm, "compute_s": compute, "comm_s": comm, "attention_share": attention / flops}
