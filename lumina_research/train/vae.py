"""Train the tiny causal video VAE (diffusers AutoencoderKLCogVideoX) on world clips.

4x temporal / 8x spatial compression to 16 latent channels like the release's CogVideoX VAE; a tiny one may
also compress space 4x (three blocks) or time 2x (at 8 fps a fast small object smears over a 4-frame latent
and comes back without its shape; see make_vae).
Trained as an autoencoder (L1 + MSE + small KL) on random 64x64 crops of 8 frames (and single
frames, so 1-frame image latents decode too); it is fully convolutional so it runs on 128x128x16.
After training the scaling factor is set to 1 / std of the latents of held-out clips.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch
from diffusers import AutoencoderKLCogVideoX

from lumina.models.components import tiny_vae_config, vae_compression
from lumina_research.train.budget import budgeted_steps
from lumina_research.train.data import ClipSpec, frames_to_tensor, render
from lumina_research.train.losses import foreground_weights, psnr, vae_loss
from lumina_research.world.dataset import train_seed

VAE_SEED_OFFSET = 1_000_000  # training-scene index: VAE clips never coincide with the DiT's clips
HOLDOUT_SEED_OFFSET = 9_000_000


@dataclass
class VAERecipe:
    steps: int = 300
    batch: int = 4
    crop: int = 64
    frames: int = 8
    image_every: int = 4          # every k-th step is a batch of single frames (2x the batch)
    lr: float = 2e-3
    warmup: int = 20
    kl_weight: float = 1e-6
    mse_weight: float = 1.0
    foreground_weight: float = 8.0  # extra loss weight on object pixels (see losses.foreground_weights)
    object_crops: float = 0.75      # share of crops centred on an object rather than placed at random
    seed: int = 0
    max_minutes: Optional[float] = None  # stop early (lr schedule follows elapsed time too)
    init: Optional[str] = None      # continue from this VAE folder
    block_out_channels: Tuple[int, ...] = (16, 32, 32, 32)
    temporal_compression: int = 4  # video frames a latent frame: the release's 4, or 2 (fast objects keep their shapes)
    norm_num_groups: int = 4
    layers_per_block: int = 1
    eval_clips: int = 4          # held-out clips for PSNR
    scale_clips: int = 16        # clips whose latent std sets the scaling factor


def make_vae(recipe: VAERecipe) -> AutoencoderKLCogVideoX:
    """The tiny config with the recipe's widths and temporal compression.

    The widths are chosen for CPU speed: a full-resolution width above 16 and a half-resolution
    width above 32 keep batch-1 decoding on PyTorch's oneDNN conv3d path instead of the slow
    reference kernel (its heuristic needs N*C*T*H > 20480).
    """
    levels = len(recipe.block_out_channels)
    if levels not in (3, 4):
        raise ValueError(f"a tiny VAE has 3 blocks (4x spatial compression) or 4 (8x, the release's); "
                         f"got widths {tuple(recipe.block_out_channels)}")
    if recipe.temporal_compression not in (2, 4):
        raise ValueError(f"a tiny VAE compresses time 4x (the release's) or 2x; got {recipe.temporal_compression}")
    cfg = tiny_vae_config()
    cfg.update(block_out_channels=tuple(recipe.block_out_channels), norm_num_groups=recipe.norm_num_groups,
               layers_per_block=recipe.layers_per_block, down_block_types=("CogVideoXDownBlock3D",) * levels,
               up_block_types=("CogVideoXUpBlock3D",) * levels, temporal_compression_ratio=recipe.temporal_compression)
    return AutoencoderKLCogVideoX(**cfg)


def _crop_origin(rng: np.random.Generator, clip, t0: int, crop: int, spec: ClipSpec, object_crops: float):
    """Top-left corner of a crop: around a random object's centre at frame t0 (jittered), or anywhere."""
    if clip.truth.objects and rng.random() < object_crops:
        obj = clip.truth.objects[int(rng.integers(len(clip.truth.objects)))]
        cx, cy = obj.track[t0]
        y = int(cy * spec.height - crop / 2 + rng.integers(-crop // 4, crop // 4 + 1))
        x = int(cx * spec.width - crop / 2 + rng.integers(-crop // 4, crop // 4 + 1))
        return int(np.clip(y, 0, spec.height - crop)), int(np.clip(x, 0, spec.width - crop))
    return int(rng.integers(0, spec.height - crop + 1)), int(rng.integers(0, spec.width - crop + 1))


def _crop_batch(rng: np.random.Generator, seed_base: int, n: int, frames: int, crop: int, spec: ClipSpec,
                object_crops: float = 0.0):
    out = []
    for _ in range(n):
        seed = train_seed(0, seed_base + int(rng.integers(0, 2**29)))  # a training scene, never a ShapesBench one
        clip = render(seed, spec)
        video = clip.frames
        t0 = int(rng.integers(0, spec.frames - frames + 1))
        y0, x0 = _crop_origin(rng, clip, t0, crop, spec, object_crops)
        clip = video[t0 : t0 + frames, y0 : y0 + crop, x0 : x0 + crop]
        if rng.random() < 0.5:
            clip = clip[:, :, ::-1]
        out.append(frames_to_tensor(clip))
    return torch.stack(out)


def holdout_clips(n: int = 4, spec: ClipSpec = ClipSpec()) -> torch.Tensor:
    return torch.stack([frames_to_tensor(render(HOLDOUT_SEED_OFFSET + i, spec).frames) for i in range(n)])


@torch.no_grad()
def measure_scaling_factor(vae: AutoencoderKLCogVideoX, n: int = 16, spec: ClipSpec = ClipSpec()) -> Tuple[float, float]:
    """(1 / std, mean) of the posterior means of n full clips: scaled latents then have unit std."""
    zs = []
    for i in range(0, n, 4):
        x = torch.stack([frames_to_tensor(render(HOLDOUT_SEED_OFFSET + 1000 + j, spec).frames)
                         for j in range(i, min(n, i + 4))])
        zs.append(vae.encode(x).latent_dist.mean)
        vae._clear_fake_context_parallel_cache() if hasattr(vae, "_clear_fake_context_parallel_cache") else None
    z = torch.cat(zs)
    return float(1.0 / z.std()), float(z.mean())


@torch.no_grad()
def evaluate(vae: AutoencoderKLCogVideoX, spec: ClipSpec = ClipSpec(), n: int = 4) -> Dict[str, float]:
    """Held-out reconstruction PSNR of full 128x128x16 clips and of single frames, and decode time."""
    vae.eval()
    x = holdout_clips(n, spec)
    z = vae.encode(x).latent_dist.mean
    rec = vae.decode(z).sample
    img = x[:, :, :1]
    rec_img = vae.decode(vae.encode(img).latent_dist.mean).sample
    t0 = time.perf_counter()
    vae.decode(z[:1])
    decode_s = time.perf_counter() - t0
    return {"psnr_video": psnr(rec, x), "psnr_image": psnr(rec_img, img), "decode_1x16x128x128_s": decode_s,
            "latent_shape": list(z.shape[1:])}


def train_vae(out: Path, recipe: VAERecipe = VAERecipe(), spec: ClipSpec = ClipSpec(),
              log: Callable[[str], None] = print) -> AutoencoderKLCogVideoX:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    vae = (AutoencoderKLCogVideoX.from_pretrained(recipe.init) if recipe.init else make_vae(recipe)).train()
    n_params = sum(p.numel() for p in vae.parameters())
    log(f"vae: {n_params / 1e6:.2f}M params, recipe {asdict(recipe)}")
    opt = torch.optim.AdamW(vae.parameters(), lr=recipe.lr, betas=(0.9, 0.99), weight_decay=0.0)
    t_start = time.time()
    history = []
    step = 0
    for step in budgeted_steps(opt, recipe.steps, recipe.max_minutes, recipe.lr, recipe.warmup,
                               lambda n: log(f"vae: time budget reached after {n} steps")):
        image = recipe.image_every > 0 and step % recipe.image_every == recipe.image_every - 1
        if image:
            x = _crop_batch(rng, VAE_SEED_OFFSET, recipe.batch * 2, 1, recipe.crop, spec, recipe.object_crops)
        else:
            x = _crop_batch(rng, VAE_SEED_OFFSET, recipe.batch, recipe.frames, recipe.crop, spec, recipe.object_crops)
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        weights = foreground_weights(x, recipe.foreground_weight) if recipe.foreground_weight else None
        loss, parts = vae_loss(rec, x, post.kl(), recipe.kl_weight, recipe.mse_weight, weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        if hasattr(vae, "_clear_fake_context_parallel_cache"):
            vae._clear_fake_context_parallel_cache()
        history.append({"step": step, "loss": loss.item(), **parts, "image": image})
        if step % 10 == 0 or step == recipe.steps - 1:
            log(f"vae step {step} loss {history[-1]['loss']:.4f} l1 {parts['l1']:.4f} mse {parts['mse']:.4f} "
                f"kl {parts['kl']:.1f} lr {opt.param_groups[0]['lr']:.2e} {'img' if image else 'vid'} "
                f"{time.time() - t_start:.0f}s")
    train_s = time.time() - t_start
    vae.eval()
    sf, mean = measure_scaling_factor(vae, n=recipe.scale_clips, spec=spec)
    vae.register_to_config(scaling_factor=sf)
    metrics = evaluate(vae, spec, n=recipe.eval_clips)
    log(f"vae: trained {len(history)} steps in {train_s:.0f}s; scaling_factor {sf:.4f} (latent mean {mean:.3f}); {metrics}")
    vae.save_pretrained(out, safe_serialization=True)
    last = history[-20:]
    report = {"recipe": asdict(recipe), "params": n_params, "train_seconds": train_s, "steps": len(history),
              "final_loss": float(np.mean([h["loss"] for h in last])) if last else None,
              "first_loss": history[0]["loss"] if history else None,
              "scaling_factor": sf, "latent_mean": mean, **metrics}
    (out / "train_report.json").write_text(json.dumps(report, indent=1))
    return vae


@dataclass
class DecoderRecipe:
    """Decoder-only fine-tuning on cached latents: the encoder (so the DiT's latent space) is frozen."""

    steps: int = 100000
    batch: int = 2
    latent_crop: int = 8           # latent pixels (x8 in the video)
    lr: float = 5e-4
    warmup: int = 10
    latent_noise: float = 0.05     # robustness to the DiT's imperfect latents (in scaled-latent units)
    latent_frames: Optional[int] = None  # decode only the first k latent frames (4k or 2k video frames): cheaper steps
    foreground_weight: float = 8.0  # extra loss weight on object pixels
    gradient_weight: float = 0.0    # weight of the pixel-gradient L1 (losses.vae_loss): sharper edges
    object_crops: float = 0.75      # share of crops centred on an object
    seed: int = 0
    max_minutes: Optional[float] = None
    save_every_minutes: float = 3.0


def finetune_decoder(vae: AutoencoderKLCogVideoX, latents: torch.Tensor, seeds, out: Path,
                     recipe: DecoderRecipe = DecoderRecipe(), spec: ClipSpec = ClipSpec(),
                     log: Callable[[str], None] = print) -> AutoencoderKLCogVideoX:
    """Train vae.decoder to map cached scaled latents (N, 16, F', h, w) of `seeds` back to their clips."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    sf = float(vae.config.scaling_factor)
    vae.requires_grad_(False)
    params = list(vae.decoder.parameters()) + (list(vae.post_quant_conv.parameters()) if vae.post_quant_conv else [])
    for p in params:
        p.requires_grad_(True)
    vae.decoder.train()
    opt = torch.optim.AdamW(params, lr=recipe.lr, betas=(0.9, 0.99), weight_decay=0.0)
    before = evaluate(vae, spec)
    log(f"decoder: before {before}")
    lc = recipe.latent_crop
    h, w = latents.shape[-2:]
    tc, s = vae_compression(vae.config)
    t_start = last_save = time.time()
    history = []
    for step in budgeted_steps(opt, recipe.steps, recipe.max_minutes, recipe.lr, recipe.warmup):
        idx = rng.integers(0, latents.shape[0], recipe.batch)
        zs, xs = [], []
        for i in idx:
            clip = render(int(seeds[i]), spec)
            py, px = _crop_origin(rng, clip, 0, s * lc, spec, recipe.object_crops)
            y0, x0 = min(py // s, h - lc), min(px // s, w - lc)
            lf = recipe.latent_frames or latents.shape[2]
            z = latents[i, :, :lf, y0 : y0 + lc, x0 : x0 + lc].float()
            frames = clip.frames[: tc * lf, s * y0 : s * (y0 + lc), s * x0 : s * (x0 + lc)]
            zs.append(z + recipe.latent_noise * torch.randn_like(z))
            xs.append(frames_to_tensor(frames))
        z, x = torch.stack(zs) / sf, torch.stack(xs)
        rec = vae.decode(z).sample
        weights = foreground_weights(x, recipe.foreground_weight) if recipe.foreground_weight else None
        loss, parts = vae_loss(rec, x, torch.zeros(1), 0.0, weights=weights, gradient_weight=recipe.gradient_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        history.append(loss.item())
        if step % 20 == 0:
            log(f"decoder step {step} loss {loss.item():.4f} l1 {parts['l1']:.4f} lr {opt.param_groups[0]['lr']:.2e} "
                f"{time.time() - t_start:.0f}s")
        if time.time() - last_save > 60 * recipe.save_every_minutes:
            vae.save_pretrained(out, safe_serialization=True)
            last_save = time.time()
    vae.eval().requires_grad_(False)
    after = evaluate(vae, spec)
    log(f"decoder: {len(history)} steps in {time.time() - t_start:.0f}s; after {after}")
    vae.save_pretrained(out, safe_serialization=True)
    report_path = out / "train_report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    rounds = report.pop("decoder_finetune_rounds", None) or ([report.pop("decoder_finetune")] if "decoder_finetune" in report else [])
    report["decoder_finetune"] = {"recipe": asdict(recipe), "steps": len(history), "seconds": time.time() - t_start,
                                  "loss_first20": float(np.mean(history[:20])) if history else None,
                                  "loss_last20": float(np.mean(history[-20:])) if history else None,
                                  "before": before, "after": after}
    report["decoder_finetune_rounds"] = rounds + [report.pop("decoder_finetune")]
    report["decoder_finetune"] = report["decoder_finetune_rounds"][-1]
    report.update({k: v for k, v in after.items()})
    report_path.write_text(json.dumps(report, indent=1))
    return vae
