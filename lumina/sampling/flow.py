"""Euler sampling of the rectified-flow ODE with the release's guidance rules (reference §3).

Pure math: the caller supplies the velocity function, so the same code drives the video pipeline,
the V2A pipeline and evaluation during training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch

from lumina.patch import PatchSize, parse_patch_size
from lumina.sampling.schedule import SampleConfig, value_at


def initial_noise(shape, generator: Optional[torch.Generator] = None, shared: float = 0.0,
                  device="cpu") -> torch.Tensor:
    """Starting noise (B, C, F, H, W) on `device`; a `shared` share of its variance is common to all frames (dim 2).

    A small model couples its latent frames weakly: from independent noise each frame settles where the object
    is on its own, so tracks drift and jump between latent frames. A common part gives every frame the same
    starting layout for the prompt's motion to displace (PYoCo's mixed noise); each element stays N(0, 1).
    The common part is drawn after the independent one, so `shared=0` is plain `torch.randn`."""
    noise = torch.randn(shape, generator=generator, dtype=torch.float32, device=device)
    if shared:
        common = torch.randn((*shape[:2], 1, *shape[3:]), generator=generator, dtype=torch.float32, device=device)
        noise = shared ** 0.5 * common + (1.0 - shared) ** 0.5 * noise
    return noise


def shift_time(t: torch.Tensor, shift: float) -> torch.Tensor:
    """Time shift t / (t + s - s t): s > 1 spends more steps near noise (t = 0)."""
    return t / (t + shift - shift * t)


def time_grid(steps: int, shift: float) -> torch.Tensor:
    """`steps` grid points from noise (0) to data (1), shifted; steps - 1 Euler moves (float64)."""
    return shift_time(torch.linspace(0.0, 1.0, steps, dtype=torch.float64), shift)


@dataclass(frozen=True)
class StepPlan:
    """Everything one Euler step needs, read from the time-aware settings at its t."""

    index: int
    t: float
    dt: float
    patch: PatchSize
    cfg: float
    motion: float
    neg_motion: float
    renorm: float

    @property
    def guided(self) -> bool:
        """False where CFG is truncated: no negative pass is run."""
        return self.cfg != 0.0


def plan(config: SampleConfig) -> List[StepPlan]:
    grid = time_grid(config.steps, config.time_shift).tolist()
    return [
        StepPlan(
            index=i,
            t=grid[i],
            dt=grid[i + 1] - grid[i],
            patch=parse_patch_size(value_at(config.patch, grid[i])),
            cfg=float(value_at(config.cfg, grid[i])),
            motion=float(value_at(config.motion, grid[i])),
            neg_motion=float(value_at(config.neg_motion, grid[i])),
            renorm=config.renorm,
        )
        for i in range(config.steps - 1)
    ]


def guide(pos: torch.Tensor, neg: Optional[torch.Tensor], cfg: float, renorm: float) -> torch.Tensor:
    """guided = pos + cfg (pos - neg); renorm > 0 caps each item's L2 norm at renorm * |pos|."""
    if neg is None or cfg == 0.0:
        return pos
    guided = pos + cfg * (pos - neg)
    if renorm > 0:
        dims = tuple(range(1, pos.dim()))
        max_norm = torch.linalg.vector_norm(pos, dim=dims, keepdim=True) * renorm
        norm = torch.linalg.vector_norm(guided, dim=dims, keepdim=True)
        guided = torch.where(norm > max_norm, guided * (max_norm / norm), guided)
    return guided


def euler_step(x: torch.Tensor, velocity: torch.Tensor, dt: float) -> torch.Tensor:
    return x + dt * velocity.to(x.dtype)
