"""Losses: rectified-flow velocity matching (t = 0 noise, t = 1 data) and the VAE's reconstruction."""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from lumina.sampling import shift_time

Tensors = Union[torch.Tensor, Sequence[torch.Tensor]]


def sample_t(n: int, shift: float, generator: torch.Generator = None, logit_normal: bool = False) -> torch.Tensor:
    """Training times t = shift_time(u, shift); u uniform or logit-normal(0, 1). Larger shift -> noisier."""
    if logit_normal:
        u = torch.sigmoid(torch.randn(n, generator=generator))
    else:
        u = torch.rand(n, generator=generator)
    return shift_time(u, shift)


def interpolate(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - t) x0 + t x1 with x0 noise and x1 data; the target velocity is x1 - x0."""
    tt = t.view(-1, *([1] * (x1.dim() - 1)))
    return (1.0 - tt) * x0 + tt * x1


def flow_loss(v_pred: Tensors, v_target: Tensors, cos_weight: float = 1.0) -> Tuple[torch.Tensor, Dict[str, float]]:
    """mean over items of  MSE(v_pred, v) + cos_weight * (1 - cos(v_pred, v)), cosine per item.

    Items may be tensors of different shapes (a list), as the multi-size transformer returns them.
    """
    preds = list(v_pred) if not isinstance(v_pred, torch.Tensor) else list(v_pred.unbind(0))
    targets = list(v_target) if not isinstance(v_target, torch.Tensor) else list(v_target.unbind(0))
    mse: List[torch.Tensor] = []
    cos: List[torch.Tensor] = []
    for p, v in zip(preds, targets):
        p, v = p.float().reshape(-1), v.float().reshape(-1)
        mse.append(F.mse_loss(p, v))
        cos.append(1.0 - F.cosine_similarity(p, v, dim=0, eps=1e-6))
    mse_t, cos_t = torch.stack(mse).mean(), torch.stack(cos).mean()
    loss = mse_t + cos_weight * cos_t
    return loss, {"mse": mse_t.item(), "cos": cos_t.item()}


def vae_loss(recon: torch.Tensor, target: torch.Tensor, kl: torch.Tensor, kl_weight: float = 1e-6,
             mse_weight: float = 1.0) -> Tuple[torch.Tensor, Dict[str, float]]:
    """L1 + mse_weight * MSE reconstruction plus a small KL to the unit Gaussian."""
    l1 = (recon - target).abs().mean()
    mse = F.mse_loss(recon, target)
    kl_t = kl.mean()
    loss = l1 + mse_weight * mse + kl_weight * kl_t
    return loss, {"l1": l1.item(), "mse": mse.item(), "kl": kl_t.item()}


def psnr(recon: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR in dB for videos in [-1, 1]."""
    mse = F.mse_loss(recon.clamp(-1, 1), target).item()
    return float(10 * torch.log10(torch.tensor(4.0 / max(mse, 1e-12))))
