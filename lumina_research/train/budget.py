"""Step and wall-time budgets, the learning-rate schedule and the weight EMA shared by every training loop
(video VAE, decoder, DiT, and Lumina-V2A)."""

from __future__ import annotations

import math
import time
from typing import Callable, Iterator, Optional

import torch


def budget_progress(step: int, total_steps: int, t_start: float, max_minutes: Optional[float]) -> Optional[float]:
    """Progress in [0, 1] by steps or by wall time, whichever is further; None once the time budget is spent."""
    progress = step / total_steps
    if max_minutes:
        elapsed = time.time() - t_start
        if elapsed > 60 * max_minutes:
            return None
        progress = max(progress, elapsed / (60 * max_minutes))
    return progress


def warmup_cosine_lr(lr: float, warmup: int, progress: float, step: int) -> float:
    """Linear warmup, then cosine decay to 10% of `lr` over the budget."""
    warm = min(1.0, (step + 1) / max(1, warmup))
    return lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def budgeted_steps(opt: torch.optim.Optimizer, total_steps: int, max_minutes: Optional[float], lr: float,
                   warmup: int, on_budget_spent: Optional[Callable[[int], None]] = None) -> Iterator[int]:
    """The step indices of a training loop, each after setting every param group's lr (warmup, then
    cosine over the step or time budget, times the group's "lr_scale" if it has one); ends early once
    `max_minutes` is spent, calling `on_budget_spent(steps_done)`."""
    t_start = time.time()
    for step in range(total_steps):
        progress = budget_progress(step, total_steps, t_start, max_minutes)
        if progress is None:
            if on_budget_spent is not None:
                on_budget_spent(step)
            return
        for g in opt.param_groups:
            g["lr"] = warmup_cosine_lr(lr, warmup, progress, step) * g.get("lr_scale", 1.0)
        yield step


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, step: int, decay: float) -> None:
    """EMA of the weights with a warmup (decay min(decay, (1 + step) / (10 + step))): early steps follow fast."""
    d = min(decay, (1 + step) / (10 + step))
    torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in model.parameters()], 1.0 - d)
