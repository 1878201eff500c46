"""Losses: rectified-flow velocity matching (t = 0 noise, t = 1 data) and the VAE's reconstruction."""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from lumina.sampling import shift_time

Tensors = Union[torch.Tensor, Sequence[torch.Tensor]]


def sample_t(n: int, shift: float, generator: torch.Generator = None, logit_normal: bool = False,
             t_from: float = 0.0) -> torch.Tensor:
    """Training times t = shift_time(u, shift); u uniform or logit-normal(0, 1). Larger shift -> noisier.

    With ``t_from`` the times are squeezed into [t_from, 1]: a low-noise expert only ever runs there, so every
    step of its training goes to the times it serves."""
    device = generator.device if generator is not None else None
    if logit_normal:
        u = torch.sigmoid(torch.randn(n, generator=generator, device=device))
    else:
        u = torch.rand(n, generator=generator, device=device)
    return t_from + (1.0 - t_from) * shift_time(u, shift)


def interpolate(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - t) x0 + t x1 with x0 noise and x1 data; the target velocity is x1 - x0."""
    tt = t.view(-1, *([1] * (x1.dim() - 1)))
    return (1.0 - tt) * x0 + tt * x1


def flow_loss(v_pred: Tensors, v_target: Tensors, cos_weight: float = 1.0,
              weights: torch.Tensor = None, frame_diff_weight: float = 0.0,
              stakes: torch.Tensor = None, stake_weight: float = 0.0) -> Tuple[torch.Tensor, Dict[str, float]]:
    """mean over items of  MSE(v_pred, v) + cos_weight * (1 - cos(v_pred, v))
    + frame_diff_weight * MSE(d(v_pred - v) / d frame) + stake_weight * sum_k ((v_pred - v) . s_k / |s_k|)^2,
    cosine per item.

    Items may be tensors of different shapes (a list), as the multi-size transformer returns them.
    ``weights`` (B, 1, F, h, w), mean 1 per item, weight the MSE per latent cell (object emphasis).
    The frame-difference term has the same optimum as the MSE (a linear function of the error) but
    charges errors that vary from latent frame to latent frame, where motion lives, instead of letting
    the per-frame appearance dominate; one-frame items (images) add nothing to it. ``stakes`` (B, K, *item)
    are directions in which a fact moves the data (a clip minus its shape twin, ``build_twin_cache``); the
    stake term charges the error's component along each, so a fact that moves few latent cells weighs as
    much as its twin's distance, not as its share of all cells. Zero stakes add nothing. Like any quadratic
    weighting neither term moves the optimum. Each is computed (and reported in the parts) only when its
    weight is set.
    """
    preds = list(v_pred) if not isinstance(v_pred, torch.Tensor) else list(v_pred.unbind(0))
    targets = list(v_target) if not isinstance(v_target, torch.Tensor) else list(v_target.unbind(0))
    mse: List[torch.Tensor] = []
    cos: List[torch.Tensor] = []
    diff: List[torch.Tensor] = []
    stake: List[torch.Tensor] = []
    for i, (p, v) in enumerate(zip(preds, targets)):
        p, v = p.float(), v.float()
        err = p - v
        w = weights[i] if weights is not None else None
        mse.append((err.pow(2) * w).mean() if w is not None else err.pow(2).mean())
        if frame_diff_weight and err.shape[1] > 1:
            sq = (err[:, 1:] - err[:, :-1]).pow(2)
            diff.append((sq * (w[:, 1:] + w[:, :-1]) / 2).mean() if w is not None else sq.mean())
        if stake_weight:
            d = stakes[i].float().reshape(stakes.shape[1], -1)
            unit = d / d.norm(dim=1, keepdim=True).clamp_min(1e-6)
            stake.append((unit @ err.reshape(-1)).pow(2).sum())
        cos.append(1.0 - F.cosine_similarity(p.reshape(-1), v.reshape(-1), dim=0, eps=1e-6))
    mse_t, cos_t = torch.stack(mse).mean(), torch.stack(cos).mean()
    loss = mse_t + cos_weight * cos_t
    parts = {"mse": mse_t.item(), "cos": cos_t.item()}
    if frame_diff_weight:
        diff_t = torch.stack(diff).mean() if diff else mse_t.new_zeros(())
        loss = loss + frame_diff_weight * diff_t
        parts["frame_diff"] = diff_t.item()
    if stake_weight:
        stake_t = torch.stack(stake).mean()
        loss = loss + stake_weight * stake_t
        parts["stake"] = stake_t.item()
    return loss, parts


def stakes_from_t(stakes: torch.Tensor, t: torch.Tensor, from_t: float) -> torch.Tensor:
    """The items' stakes with those of items noisier than ``from_t`` zeroed (zero stakes add nothing).

    A clip's trajectory is settled at high noise and its shape only once the noisy clip shows where the
    object is; charging the shape there only is meant to leave the direction the video path has learnt alone."""
    return stakes * (t >= from_t).to(stakes.dtype).view(-1, *[1] * (stakes.dim() - 1))


def foreground_mask(clips: torch.Tensor, threshold: float = 0.1, grow: int = 2) -> torch.Tensor:
    """(B, 1, T, H, W) object mask of (B, C, T, H, W) world clips in [-1, 1].

    The background of a world clip is its per-channel median; pixels that differ from it (grown by
    ``grow`` pixels, so edges count) are objects.
    """
    bg = clips.flatten(2).median(dim=2).values[:, :, None, None, None]
    mask = ((clips - bg).abs().amax(dim=1, keepdim=True) > threshold).float()
    if grow:
        k = 2 * grow + 1
        mask = F.max_pool3d(mask, (1, k, k), stride=1, padding=(0, grow, grow))
    return mask


def mask_weights(mask: torch.Tensor, weight: float) -> torch.Tensor:
    """Loss weights 1 + weight * mask, normalized to mean 1 per item.

    Per-element weights leave every element's optimum unchanged; they spend a small model's steps on
    the few cells that carry colour, shape and motion instead of the flat background.
    """
    w = 1.0 + weight * mask.float()
    return w / w.mean(dim=tuple(range(1, w.dim())), keepdim=True)


def foreground_weights(target: torch.Tensor, weight: float) -> torch.Tensor:
    """Per-pixel VAE loss weights of world clips: 1 + weight on object pixels, mean 1 per clip."""
    return mask_weights(foreground_mask(target), weight)


def vae_loss(recon: torch.Tensor, target: torch.Tensor, kl: torch.Tensor, kl_weight: float = 1e-6,
             mse_weight: float = 1.0, weights: torch.Tensor = None,
             gradient_weight: float = 0.0) -> Tuple[torch.Tensor, Dict[str, float]]:
    """L1 + mse_weight * MSE reconstruction (optionally per-pixel weighted) plus a small KL to N(0, 1), and
    gradient_weight * L1 of the difference of horizontal and vertical pixel gradients.

    L1 and MSE are minimised by a blur when a detail is uncertain; the gradient term charges a missing edge
    where it is, which is what tells a star's points or a square's corners from a disc's rim."""
    w = 1.0 if weights is None else weights
    l1 = ((recon - target).abs() * w).mean()
    mse = ((recon - target).pow(2) * w).mean()
    kl_t = kl.mean()
    loss = l1 + mse_weight * mse + kl_weight * kl_t
    parts = {"l1": l1.item(), "mse": mse.item(), "kl": kl_t.item()}
    if gradient_weight:
        err = recon - target
        grads = [(err.diff(dim=d).abs() * (w if weights is None else w.narrow(d, 1, w.shape[d] - 1))).mean()
                 for d in (-1, -2)]
        grad_t = (grads[0] + grads[1]) / 2
        loss = loss + gradient_weight * grad_t
        parts["gradient"] = grad_t.item()
    return loss, parts


def psnr(recon: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR in dB for videos in [-1, 1]."""
    mse = F.mse_loss(recon.clamp(-1, 1), target).item()
    return float(10 * torch.log10(torch.tensor(4.0 / max(mse, 1e-12))))
