"""Train the tiny multi-scale Next-DiT (LuminaNextDiTVideo) with the paper's recipe at CPU scale.

Per step: draw a patch size (1x2 / 2x2 / 2x4) and whether the batch is videos or first-frame images;
draw t = shift_time(u, shift[patch]) so larger patches learn the noisier times they serve at inference;
drop 10% of captions to the empty prompt (classifier-free guidance) and 10% of motion labels to -1
(unconditional), and give half the still clips a moving clip's motion label (so "still" in a caption
overrides a high motion score); regress the velocity x1 - x0 with MSE + 1.0 * (1 - cosine), the MSE weighted up on the
latent cells objects touch (the background is most of every clip and easy), optionally plus the MSE of the error's
differences between latent frames (sampled trajectories otherwise hold still inside pairs of latent frames and jump
between them), and optionally plus the error along items' shape stakes (a clip or its first frame minus its shape
twins: what the shape word alone decides, ~15x less of the latents than direction). AdamW with warmup and
cosine decay; an EMA of the weights is what gets saved.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, Optional

import numpy as np
import torch

from lumina.models.transformer_nextdit import LuminaNextDiTVideo
from lumina.sampling import initial_noise
from lumina_research.train.budget import budgeted_steps, ema_update
from lumina_research.train.data import TrainingSet
from lumina_research.train.losses import flow_loss, interpolate, mask_weights, sample_t, stakes_from_t


@dataclass
class DiTRecipe:
    steps: int = 4000
    batch: int = 8                     # videos per 1x2 step; coarser patches get more items (same tokens)
    max_batch_multiplier: int = 4
    lr: float = 6e-4
    warmup: int = 100
    weight_decay: float = 0.01
    ema: float = 0.998
    image_prob: float = 0.2
    caption_dropout: float = 0.1
    motion_dropout: float = 0.1
    still_relabel: float = 0.5         # still clips given a moving clip's motion label: the caption's "still" wins
    cos_weight: float = 1.0
    object_weight: float = 4.0         # extra flow-loss weight on latent cells objects touch (0: plain MSE)
    frame_diff_weight: float = 0.0     # weight of the error's latent-frame differences (motion consistency)
    stake_weight: float = 0.0          # weight of the error along items' shape stakes (needs a twin cache)
    stake_from_t: float = 0.0          # stakes count only for items at t >= this (shape after the trajectory is set)
    t_from: float = 0.0                # train only at t >= this: a low-noise expert (the pipeline's transformer_2)
    shared_noise: float = 0.0          # noise with this share common to all latent frames (sampling's sharedNoise)
    patch_probs: Dict[str, float] = field(default_factory=lambda: {"1x2": 1 / 3, "2x2": 1 / 3, "2x4": 1 / 3})
    patch_shift: Dict[str, float] = field(default_factory=lambda: {"1x2": 1.0, "2x2": 3.0, "2x4": 6.0})
    logit_normal: bool = False
    seed: int = 0
    max_minutes: Optional[float] = None
    save_every_minutes: float = 5.0
    device: str = "cpu"                # "cuda": the model and the data move there; the model trains in bf16 autocast
    init: Optional[str] = None         # continue from a saved transformer folder (fresh optimizer; may be shallower)
    # architecture
    dim: int = 128
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int = 2
    multiple_of: int = 32
    cap_feat_dim: int = 384


def make_transformer(recipe: DiTRecipe) -> LuminaNextDiTVideo:
    return LuminaNextDiTVideo(
        dim=recipe.dim, n_layers=recipe.n_layers, n_heads=recipe.n_heads, n_kv_heads=recipe.n_kv_heads,
        in_channels=16, cap_feat_dim=recipe.cap_feat_dim, all_patch_size=(2, 2, 4), all_f_patch_size=(1, 2, 2),
        multiple_of=recipe.multiple_of,
    )


def load_init(model: LuminaNextDiTVideo, init: str) -> str:
    """Start from a saved transformer; if it has fewer layers than `model`, grow it in depth.

    Small models trained for hours are capacity-bound, and training a deeper one from scratch would throw those
    hours away. The saved blocks keep their order, spread evenly over the deeper stack; each new block starts
    as an identity (its adaLN output is zero, so both tanh gates are closed), so the grown model computes
    exactly what the saved one did and training opens the new blocks as the loss asks for them."""
    saved = LuminaNextDiTVideo.from_pretrained(init)
    old, new = saved.config.n_layers, model.config.n_layers
    plain = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731  (JSON gives lists)
    differ = {k: (v, model.config[k]) for k, v in saved.config.items()
              if not k.startswith("_") and k != "n_layers" and plain(model.config[k]) != plain(v)}
    if differ or old > new:
        raise ValueError(f"--init {init} cannot seed this transformer: it may only have fewer layers "
                         f"({old} saved, {new} here); other settings differ (saved, here): {differ}")
    if old == new:
        model.load_state_dict(saved.state_dict())
        return f"initialised from {init}"
    slots = [round(i * new / old) for i in range(old)]
    state = {}
    for key, value in saved.state_dict().items():
        if key.startswith("layers."):
            index, rest = key[len("layers."):].split(".", 1)
            key = f"layers.{slots[int(index)]}.{rest}"
        state[key] = value
    for index in set(range(new)) - set(slots):
        block = model.layers[index]
        torch.nn.init.zeros_(block.adaLN_modulation[-1].weight)
        torch.nn.init.zeros_(block.adaLN_modulation[-1].bias)
        state.update({f"layers.{index}.{k}": v for k, v in block.state_dict().items()})
    model.load_state_dict(state)
    return f"grown from {init}: its {old} blocks at layers {slots} of {new}, the others start as identities"


def batch_size_for(model: LuminaNextDiTVideo, recipe: DiTRecipe, patch: str, latent_shape, video_shape) -> int:
    """Equal-token batches: as many items as give the tokens of `batch` 1x2 videos (capped)."""
    mult = model.num_tokens(video_shape, "1x2") / model.num_tokens(latent_shape, patch)
    return recipe.batch * max(1, min(recipe.max_batch_multiplier, int(round(mult))))


def train_dit(out: Path, data: TrainingSet, recipe: DiTRecipe = DiTRecipe(),
              log: Callable[[str], None] = print) -> LuminaNextDiTVideo:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(recipe.seed)
    device = torch.device(recipe.device)
    rng = np.random.default_rng(recipe.seed)
    gen = torch.Generator(device).manual_seed(recipe.seed)
    data.rng = np.random.default_rng(recipe.seed + 1)
    model = make_transformer(recipe).train()
    if recipe.init:
        log(f"dit: {load_init(model, recipe.init)}")
    model.to(device)
    data.to(device)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    n_params = sum(p.numel() for p in model.parameters())
    log(f"dit: {n_params / 1e6:.2f}M params, {len(data)} clips, recipe {asdict(recipe)}")
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.dim() < 2 or "norm" in name or "pad_token" in name else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=recipe.lr, betas=(0.9, 0.99),
                            fused=device.type == "cuda")
    patches = list(recipe.patch_probs)
    probs = np.array([recipe.patch_probs[p] for p in patches], dtype=np.float64)
    probs /= probs.sum()
    video_shape = tuple(data.videos.shape[2:])
    image_shape = tuple(data.images.shape[2:])
    history = []
    running: Dict[str, list] = {p: [] for p in patches}
    t_start = last_save = time.time()
    for step in budgeted_steps(opt, recipe.steps, recipe.max_minutes, recipe.lr, recipe.warmup,
                               lambda n: log(f"dit: time budget reached after {n} steps")):
        patch = patches[int(rng.choice(len(patches), p=probs))]
        image = rng.random() < recipe.image_prob
        size = batch_size_for(model, recipe, patch, image_shape if image else video_shape, video_shape)
        x1, cap, mask, motion, objects, stakes = data.batch(size, image, recipe.caption_dropout,
                                                             recipe.motion_dropout, recipe.still_relabel)
        weights = mask_weights(objects, recipe.object_weight) if objects is not None and recipe.object_weight else None
        x0 = initial_noise(x1.shape, gen, recipe.shared_noise, device)
        t = sample_t(size, recipe.patch_shift[patch], gen, recipe.logit_normal, recipe.t_from)
        xt = interpolate(x0, x1, t)
        with autocast:
            v_pred = model(xt, t, cap, mask, motion, patch)
        stake_weight = recipe.stake_weight if stakes is not None else 0.0
        if stake_weight and recipe.stake_from_t:
            stakes = stakes_from_t(stakes, t, recipe.stake_from_t)
        loss, parts = flow_loss(v_pred, x1 - x0, recipe.cos_weight, weights, recipe.frame_diff_weight,
                                stakes, stake_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))
        opt.step()
        ema_update(ema, model, step, recipe.ema)
        rec = {"step": step, "patch": patch, "image": bool(image), "batch": size, "loss": loss.item(), **parts,
               "grad_norm": grad_norm, "time": time.time() - t_start}
        history.append(rec)
        running[patch].append(rec["loss"])
        if step % 25 == 0 or step == recipe.steps - 1:
            avg = {p: round(float(np.mean(v[-50:])), 4) for p, v in running.items() if v}
            terms = " ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in parts.items())
            log(f"dit step {step} loss {rec['loss']:.4f} ({terms}) "
                f"avg50 {avg} lr {opt.param_groups[0]['lr']:.2e} {time.time() - t_start:.0f}s")
        if time.time() - last_save > 60 * recipe.save_every_minutes:
            ema.save_pretrained(out, safe_serialization=True)
            last_save = time.time()
    train_s = time.time() - t_start
    ema.save_pretrained(out, safe_serialization=True)
    summary = {}
    for p in patches:
        for kind in (False, True):
            vals = [h["loss"] for h in history if h["patch"] == p and h["image"] == kind]
            if vals:
                summary[f"{p}-{'image' if kind else 'video'}"] = {
                    "first50": float(np.mean(vals[:50])), "last50": float(np.mean(vals[-50:])), "steps": len(vals)}
    report = {"recipe": asdict(recipe), "params": n_params, "clips": len(data), "steps": len(history),
              "train_seconds": train_s, "steps_per_second": len(history) / max(train_s, 1e-9),
              "loss_first100": float(np.mean([h["loss"] for h in history[:100]])) if history else None,
              "loss_last100": float(np.mean([h["loss"] for h in history[-100:]])) if history else None,
              "by_patch": summary}
    if recipe.init and (Path(recipe.init) / "train_report.json").exists():
        previous = json.loads((Path(recipe.init) / "train_report.json").read_text())
        report["previous"] = previous.pop("previous", []) + [previous]
    (out / "train_report.json").write_text(json.dumps(report, indent=1))
    with open(out / "train_history.jsonl", "w") as fh:
        for h in history:
            fh.write(json.dumps(h) + "\n")
    log(f"dit: {len(history)} steps in {train_s:.0f}s; loss {report['loss_first100']} -> {report['loss_last100']}")
    return ema
