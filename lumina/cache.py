"""Step caches for the Next-DiT, through diffusers' own hooks (`transformer.enable_cache`).

Light to import (torch and diffusers load when a config is built), so the CLI checks `--cache` at once.

A cache is named once, as `StepCache(method, knob)` (text "fbc:0.1", parsed by `StepCache.parse`), and turned into
diffusers' config for one run by `StepCache.config`, since some methods need that run's step count and clock.
The pipeline runs each forward in a `cache_context` and resets the hooks' state at every patch-size switch, so no
residual computed at one patch size is reused at another.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence

from lumina.errors import InvalidRequestError

# Attention and FFN of every block: where attention-level caches (PAB, FasterCache, TaylorSeer) act.
ATTENTION = r"^layers\.\d+\.attention$"
FEED_FORWARD = r"^layers\.\d+\.feed_forward$"

# method -> (what its knob is, default knob, allowed range, integer knob?)
METHODS: Dict[str, tuple] = {
    "fbc": ("First-Block Cache: relative change of the first block's residual under which the other blocks are "
            "skipped", 0.1, (0.0, 1.0), False),
    "taylorseer": ("TaylorSeer: steps between full computations (attention and FFN predicted in between)", 3,
                   (2, 20), True),
    "pab": ("Pyramid Attention Broadcast: steps an attention output is reused", 2, (2, 20), True),
    # diffusers 0.42 hooks FasterCache's attention reuse only onto modules named blocks.*attn, so here it approximates
    # the negative branch from the positive one (computing it one step in N) and leaves attention reuse to pab.
    "faster": ("FasterCache: steps between two computations of the negative branch", 5, (2, 20), True),
    "mag": ("MagCache: accumulated magnitude error allowed before a step is computed again", 0.06, (0.0, 1.0),
            False),
}
NONE = "none"
FAST = "fast"


@dataclass(frozen=True)
class StepCache:
    """One step-cache setting: a method of `METHODS` and its knob (the method's default if None)."""

    method: str
    knob: Optional[float] = None

    def __post_init__(self):
        if self.method not in METHODS:
            raise InvalidRequestError(f"cache method {self.method!r}; allowed: {', '.join(METHODS)}, {FAST} or "
                                      f"{NONE} (NAME[:value]; `python -m lumina presets` lists them)")
        _, default, (low, high), integer = METHODS[self.method]
        knob = default if self.knob is None else self.knob
        in_range = isinstance(knob, (int, float)) and not isinstance(knob, bool) and math.isfinite(knob) and (
            low <= knob <= high and knob == int(knob) if integer else low < knob <= high)
        if not in_range:
            allowed = f"a whole number from {low} to {high}" if integer else f"a number in ({low}, {high}]"
            raise InvalidRequestError(f"cache {self.method}:{self.knob}: the value must be {allowed} "
                                      f"({METHODS[self.method][0]})")
        object.__setattr__(self, "knob", int(knob) if integer else float(knob))

    @property
    def per_context(self) -> bool:
        """Whether diffusers keeps this method's state per cache context (so it restarts where guidance turns off and
        the context changes), rather than one state for the whole call (pab, faster)."""
        return self.method in ("fbc", "mag", "taylorseer")

    @property
    def label(self) -> str:
        return f"{self.method}:{self.knob:g}"

    @classmethod
    def parse(cls, text) -> Optional["StepCache"]:
        """"fbc", "fbc:0.2", "fast" (the measured default, `FAST_CACHE`) or "none"/""/None (no cache)."""
        if text is None or isinstance(text, StepCache):
            return text
        name, _, value = str(text).strip().lower().partition(":")
        if name in ("", NONE):
            return None
        if name == FAST and not value:
            return FAST_CACHE
        knob = None
        if value:
            try:
                knob = float(value)
            except ValueError:
                raise InvalidRequestError(f"cache {text!r}: {value!r} is not a number; use NAME[:value], e.g. "
                                          f"fbc:0.1") from None
        return cls(name, knob)

    def config(self, num_steps: int, current_timestep: Callable[[], float], mag_ratios: Optional[Sequence] = None,
               batched_guidance: bool = True, guided_throughout: bool = True):
        """diffusers' config of this cache for a run of `num_steps` forwards; `current_timestep` reads the run's clock
        on diffusers' scale (1000 = noise, 0 = data). FasterCache needs both guidance branches in one batch at every
        step (`batched_guidance`, `guided_throughout`)."""
        import torch
        from diffusers import (FasterCacheConfig, FirstBlockCacheConfig, MagCacheConfig,
                               PyramidAttentionBroadcastConfig, TaylorSeerCacheConfig)

        if self.method == "fbc":
            return FirstBlockCacheConfig(threshold=self.knob)
        if self.method == "taylorseer":
            return TaylorSeerCacheConfig(cache_interval=self.knob, disable_cache_before_step=2, max_order=1,
                                         taylor_factors_dtype=torch.float32,
                                         cache_identifiers=[ATTENTION, FEED_FORWARD])
        if self.method == "pab":
            return PyramidAttentionBroadcastConfig(
                spatial_attention_block_skip_range=self.knob, spatial_attention_timestep_skip_range=(100, 800),
                spatial_attention_block_identifiers=(ATTENTION,), temporal_attention_block_identifiers=(),
                cross_attention_block_identifiers=(), current_timestep_callback=current_timestep)
        if self.method == "faster":
            if not batched_guidance:
                raise InvalidRequestError("cache faster approximates the negative branch from a batch holding both "
                                          "guidance branches; this memory mode runs them apart: use fbc or pab")
            if not guided_throughout:
                raise InvalidRequestError("cache faster needs guidance at every step, and this run stops guiding "
                                          "(guidance 0 from some t on, as every release preset does): use pab, the "
                                          "same attention reuse without the negative-branch approximation, or "
                                          "a constant guidance")
            return FasterCacheConfig(
                unconditional_batch_skip_range=self.knob, spatial_attention_timestep_skip_range=(-1, 681),
                spatial_attention_block_identifiers=(ATTENTION,), temporal_attention_block_identifiers=(),
                current_timestep_callback=current_timestep, attention_weight_callback=lambda _: 0.5,
                tensor_format="BCFHW",
                _unconditional_conditional_input_kwargs_identifiers=[
                    "hidden_states", "timestep", "encoder_hidden_states", "encoder_attention_mask", "motion_score"])
        if not mag_ratios:
            raise InvalidRequestError("cache mag needs this model's magnitude ratios (they depend on the checkpoint): "
                                      "calibrate them with `lumina.cache.calibrate_mag_ratios(pipe)` and "
                                      "save the pipeline, or use fbc / taylorseer / pab")
        return MagCacheConfig(threshold=self.knob, num_inference_steps=num_steps, mag_ratios=list(mag_ratios),
                              retention_ratio=0.2, max_skip_steps=3)


# Share of forwards the adaptive methods skipped on the tiny model, by knob (benchmarks/bench_cache.py, both
# schedules; docs/benchmarks.md): the cost model's assumption for them until a GPU run measures the release's own.
ADAPTIVE_SKIP_SHARE = {"fbc": {0.05: 0.7, 0.1: 0.8, 0.2: 0.88}, "mag": {0.06: 0.5, 0.25: 0.5}}


def skip_share(cache: StepCache) -> float:
    """The measured skip share of an adaptive cache at the nearest measured knob."""
    measured = ADAPTIVE_SKIP_SHARE[cache.method]
    return measured[min(measured, key=lambda k: abs(k - cache.knob))]


def work_share(cache: Optional[StepCache], position: int, stage_steps: int, timestep: float, guided: bool,
               n_layers: int, attention_share: float) -> float:
    """Predicted share of a step's uncached work that `cache` still computes: the step is the `position`-th of its
    stage (`stage_steps` long: caches restart at a patch-size switch, and in a new cache context where guidance turns
    off), at diffusers' `timestep` (1000 = noise).
    Rules of each method as diffusers 0.42 applies them (see `StepCache.config`); fbc and mag skip adaptively, so
    they are charged their measured skip share (`skip_share`)."""
    if cache is None or position == 0:
        return 1.0
    method, k = cache.method, cache.knob
    if method == "fbc":  # a skipped forward still runs the first block
        return 1.0 - skip_share(cache) * (1.0 - 1.0 / n_layers)
    if method == "mag":  # the first 20% of a stage always computes
        return 1.0 if position < 0.2 * stage_steps else 1.0 - skip_share(cache)
    if method == "taylorseer":  # attention and FFN predicted between full computations
        return 1.0 if position < 2 or (position - 3) % k == 0 else 0.05
    if method == "pab":  # attention output reused inside its timestep range
        return 1.0 - attention_share if 100 < timestep < 800 and position % k else 1.0
    if method == "faster":  # the negative branch approximated from the positive one
        return 0.5 if guided and timestep < 641 and position % k else 1.0
    return 1.0


# The measured default of `--cache fast` (benchmarks/bench_cache.py; table and choice in docs/benchmarks.md).
FAST_CACHE = StepCache("fbc", 0.1)


class ForwardCounter:
    """Forwards per guidance branch (a guided step is two, as in `lumina.costs`) and how many of them ran their last
    block's attention (computed) or were answered by a cache (skipped): a hook on that attention's output projection,
    which runs only when the attention is computed, and counts the batch rows it computes (FasterCache computes the
    positive rows alone when it approximates the negative branch). Attached once for a whole run."""

    def __init__(self):
        self.forwards = self.computed = 0
        self._batch = 1

    @contextmanager
    def attached(self, nets):
        handles = [net.layers[-1].attention.wo.register_forward_pre_hook(self._ran) for net in nets]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def _ran(self, module, args) -> None:
        self.computed += args[0].shape[0] // self._batch

    def count(self, rows: int, batch: int) -> None:
        """A forward of `rows` batch rows is about to run, `batch` rows a branch."""
        self._batch = batch
        self.forwards += rows // batch

    def summary(self, cache: Optional[StepCache]) -> Dict[str, object]:
        return {"cache": cache.label if cache else NONE, "forwards": self.forwards, "computed": self.computed,
                "skipped": self.forwards - self.computed}


def calibrate_mag_ratios(pipe, prompt: str = "a red circle moving right", **call_kwargs) -> list:
    """MagCache's per-step magnitude ratios of this pipeline's transformer, measured on one run at 1x2 (every forward
    computed): the mean ratio of consecutive residual norms (output - input of the block stack) per step."""
    import torch

    net = pipe.transformer
    norms, inputs = [], {}
    first, last = net.layers[0], net.layers[-1]
    h1 = first.register_forward_pre_hook(lambda m, args: inputs.__setitem__("h", args[0]))
    h2 = last.register_forward_hook(
        lambda m, args, out: norms.append(torch.linalg.norm((out - inputs["h"]).float(), dim=-1)))
    try:
        pipe(prompt, **{**call_kwargs, "patch_schedule": "1x2", "output_type": "latent"})
    finally:
        h1.remove()
        h2.remove()
    ratios = [1.0] + [float((cur / (prev + 1e-8)).mean()) for prev, cur in zip(norms, norms[1:])]
    return [round(r, 4) for r in ratios]
