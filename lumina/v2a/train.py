"""Train the tiny Lumina-V2A member on CPU: world clips with their soundtrack, or a folder of videos with sound.

    python -m lumina.v2a.train --world 1600 --out assets/lumina-v2a-tiny --minutes 20
    python -m lumina.v2a.train --videos DIR --out OUT [--world 0] [--vae-from DIR]

Stages (each time-boxed, all in one process; --minutes splits 12% VAE / 75% transformer, the rest is data):
1. examples: clips rendered with ``render_sound`` (or cut from the videos), frames area-resized to 32x32;
2. mel VAE: diffusers ``AutoencoderKL`` on 1-channel normalized log-mel (time x 128 mel), 4x down,
   8 latent channels, trained on 1 s crops (L1 + MSE + tiny KL); scaling factor = 1 / latent std
   (``--vae-from DIR`` reuses a trained one);
3. latents of every example (posterior mean x scaling factor) and MiniLM caption features;
4. LuminaV2ATransformer + V2AFrameEncoder + V2ASyncEncoder jointly: rectified flow (t = 0 noise,
   t = 1 data, logit-normal t), video+text dropped together 10% (CFG), caption alone 70%, plus two
   auxiliary losses any video with sound provides: the sync encoder predicts the soundtrack's onset
   strength per frame, the frame encoder the mel spectrum heard around its frame; EMA weights are shipped;
5. the pipeline (vocoder None -> Griffin-Lim; MiniLM attached at load time) is written in diffusers
   layout with a training report (train_report.json).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from lumina.train.budget import budgeted_steps, ema_update
from lumina.train.losses import interpolate, sample_t, vae_loss
from lumina.v2a.audio import MelConfig, log_mel, normalize, pad_frames
from lumina.v2a.data import buckets, folder_examples, world_examples
from lumina.v2a.encoders import V2AFrameEncoder, V2ASyncEncoder, visual_frame_indices
from lumina.v2a.model import LuminaV2ATransformer
from lumina.v2a.pipeline import LuminaV2APipeline, latent_times

MINILM_SOURCE = "minilm"


@dataclass
class V2ARecipe:
    world: int = 1600
    videos: Optional[str] = None
    video_window: float = 4.0
    seed: int = 0
    enc_size: int = 32
    visual_fps: float = 8.0
    # mel + VAE
    n_mels: int = 128
    vae_channels: Tuple[int, ...] = (16, 32, 32)
    latent_channels: int = 8
    vae_steps: int = 600
    vae_batch: int = 8
    vae_crop: int = 64
    vae_lr: float = 1e-3
    vae_kl: float = 1e-6
    vae_minutes: float = 4.0
    # transformer
    dim: int = 128
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int = 2
    visual_grid: int = 2
    frame_width: int = 32
    visual_dim: int = 64
    sync_dim: int = 32
    text: bool = True
    dit_steps: int = 4000
    batch: int = 12
    lr: float = 1e-3
    warmup: int = 50
    weight_decay: float = 0.01
    cond_dropout: float = 0.1
    caption_dropout: float = 0.7
    onset_weight: float = 0.5
    spectrum_weight: float = 2.0
    loud_weight: float = 2.0         # flow-loss emphasis on loud time-frequency cells (tones, hits)
    onset_frame_weight: float = 4.0  # ... and on latent frames with an onset (timing)
    sample_steps: int = 32           # the shipped pipeline's defaults
    sample_guidance: float = 4.0
    vae_from: Optional[str] = None
    init: Optional[str] = None       # a V2A pipeline directory whose transformer and encoders are fine-tuned
    ema: float = 0.995
    dit_minutes: float = 12.0
    threads: int = 1
    log_every: int = 25


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------------------------------
# stage 1: examples


def build_examples(recipe: V2ARecipe) -> List[Dict]:
    examples: List[Dict] = []
    if recipe.videos:
        examples += list(folder_examples(recipe.videos, recipe.video_window, enc_size=recipe.enc_size))
        log(f"{len(examples)} windows from videos in {recipe.videos}")
    if recipe.world:
        examples += list(world_examples(recipe.world, seed0=recipe.seed * 100_000, enc_size=recipe.enc_size))
        log(f"{recipe.world} world clips rendered")
    if not examples:
        raise SystemExit("no training examples: give --world N and/or --videos DIR with sound")
    return examples


# ------------------------------------------------------------------------------------------------
# stage 2: mel VAE


def make_vae(recipe: V2ARecipe):
    from diffusers import AutoencoderKL

    n = len(recipe.vae_channels)
    return AutoencoderKL(
        in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=tuple(recipe.vae_channels),
        layers_per_block=1, latent_channels=recipe.latent_channels, norm_num_groups=8,
        mid_block_add_attention=False, sample_size=64,
    )


def train_vae(vae, mels: Sequence[torch.Tensor], recipe: V2ARecipe) -> Dict:
    rng = np.random.default_rng(recipe.seed + 1)
    opt = torch.optim.AdamW(vae.parameters(), lr=recipe.vae_lr, weight_decay=0.0)
    vae.train()
    t0 = time.time()
    hist = []
    step = 0
    for step in budgeted_steps(opt, recipe.vae_steps, recipe.vae_minutes, recipe.vae_lr, 20):
        crops = []
        for _ in range(recipe.vae_batch):
            m = mels[int(rng.integers(len(mels)))]
            if m.shape[0] <= recipe.vae_crop:
                crops.append(m[: recipe.vae_crop])
                continue
            s = int(rng.integers(m.shape[0] - recipe.vae_crop))
            crops.append(m[s:s + recipe.vae_crop])
        n = min(c.shape[0] for c in crops) // 4 * 4
        x = torch.stack([c[:n] for c in crops]).unsqueeze(1)
        post = vae.encode(x).latent_dist
        z = post.sample()
        rec = vae.decode(z).sample
        loss, parts = vae_loss(rec, x, post.kl(), recipe.vae_kl)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        hist.append(parts["l1"])
        if step % recipe.log_every == 0:
            log(f"vae step {step} l1 {np.mean(hist[-recipe.log_every:]):.4f} mse {parts['mse']:.4f} "
                f"lr {opt.param_groups[0]['lr']:.2e}")
    vae.eval()
    return {"vae_steps": step + 1, "vae_l1": float(np.mean(hist[-50:])), "vae_minutes": (time.time() - t0) / 60}


@torch.no_grad()
def encode_latents(vae, mels: Sequence[torch.Tensor], cfg: MelConfig, down: int) -> List[torch.Tensor]:
    """Posterior means (C, T', F') per example, unscaled."""
    out = []
    for m in mels:
        x = pad_frames(m, down, cfg).unsqueeze(0).unsqueeze(0)
        out.append(vae.encode(x).latent_dist.mode()[0])
    return out


# ------------------------------------------------------------------------------------------------
# stage 3: captions


@torch.no_grad()
def caption_features(captions: Sequence[str], max_tokens: int = 77) -> Tuple[List[Optional[torch.Tensor]], object, object]:
    from lumina.models.components import load_text_encoder

    tokenizer, encoder = load_text_encoder(MINILM_SOURCE)
    feats: List[Optional[torch.Tensor]] = []
    for text in captions:
        if not text:
            feats.append(None)
            continue
        tok = tokenizer([text], truncation=True, max_length=max_tokens, return_tensors="pt")
        feats.append(encoder(**tok).last_hidden_state[0].clone())
    return feats, tokenizer, encoder


# ------------------------------------------------------------------------------------------------
# stage 4: transformer + encoders


class Trainable(torch.nn.Module):
    def __init__(self, transformer, frame_encoder, sync_encoder):
        super().__init__()
        self.transformer, self.frame_encoder, self.sync_encoder = transformer, frame_encoder, sync_encoder


def make_models(recipe: V2ARecipe, latent_freq: int, cap_dim: int) -> Trainable:
    transformer = LuminaV2ATransformer(
        dim=recipe.dim, n_layers=recipe.n_layers, n_heads=recipe.n_heads, n_kv_heads=recipe.n_kv_heads,
        latent_channels=recipe.latent_channels, latent_freq=latent_freq, visual_dim=recipe.visual_dim,
        visual_grid=recipe.visual_grid, sync_dim=recipe.sync_dim, cap_feat_dim=cap_dim,
    )
    frame = V2AFrameEncoder(image_size=recipe.enc_size, width=recipe.frame_width, out_dim=recipe.visual_dim,
                            grid=recipe.visual_grid, spectrum_bins=recipe.n_mels if recipe.spectrum_weight else 0)
    sync = V2ASyncEncoder(image_size=recipe.enc_size, out_dim=recipe.sync_dim)
    return Trainable(transformer, frame, sync)


def load_trainable(path: str) -> Trainable:
    """The transformer and encoders of a saved V2A pipeline, to continue training them."""
    return Trainable(LuminaV2ATransformer.from_pretrained(path, subfolder="transformer"),
                     V2AFrameEncoder.from_pretrained(path, subfolder="visual_encoder"),
                     V2ASyncEncoder.from_pretrained(path, subfolder="sync_encoder"))


def frame_spectra(mel: torch.Tensor, times: np.ndarray, half_window: float, cfg: MelConfig) -> torch.Tensor:
    """Mean normalized log-mel (len(times), n_mels) within +-half_window seconds of each time."""
    centres = np.arange(mel.shape[0]) / cfg.frame_rate
    rows = []
    for t in times:
        sel = np.nonzero(np.abs(centres - t) <= half_window)[0]
        rows.append(mel[sel].mean(0) if len(sel) else mel[min(int(round(t * cfg.frame_rate)), mel.shape[0] - 1)])
    return torch.stack(rows)


def loss_weight_map(mel: torch.Tensor, wave: np.ndarray, down: int, cfg: MelConfig, recipe: V2ARecipe) -> torch.Tensor:
    """(T', F') weights (mean 1) of the flow loss: 1 + loud * loudness + onset * onset strength of the frame.

    Per-element weights leave each element's optimum (the conditional mean velocity) unchanged; they only
    spend more of a small model's capacity where the sound is: tonal lines and the hits that carry timing.
    """
    from lumina.v2a.audio import onset_envelope
    from lumina.v2a.data import FLUX_REF

    x = pad_frames(mel, down, cfg)[None, None]
    loud = F.avg_pool2d(x, down)[0, 0]                                    # (T', F')
    loud = ((loud + 1.0) / 2.5).clamp(0.0, 1.0)
    flux, times = onset_envelope(wave, cfg.sample_rate)
    centres = latent_times(loud.shape[0], down, cfg).numpy()
    half = down * cfg.hop_length / cfg.sample_rate / 2
    onset = np.array([flux[np.abs(times - c) <= half].max(initial=0.0) for c in centres]) / FLUX_REF
    onset = torch.from_numpy(np.clip(onset, 0.0, 1.0)).float()
    w = 1.0 + recipe.loud_weight * loud + recipe.onset_frame_weight * onset[:, None]
    return w / w.mean()


def make_batch(examples, latents, caps, idx, recipe: V2ARecipe, cfg: MelConfig, down: int, rng, mels=None,
               weights=None) -> Dict:
    ex0 = examples[idx[0]]
    fps = ex0["fps"]
    n_frames = len(ex0["frames"])
    vidx, vtimes = visual_frame_indices(n_frames, fps, recipe.visual_fps)
    spectra = None
    if mels is not None:
        spectra = torch.stack([frame_spectra(mels[i], vtimes, 0.5 / recipe.visual_fps, cfg) for i in idx])
    frames = torch.from_numpy(np.stack([examples[i]["frames"] for i in idx])).float().div_(255.0)
    frames = frames.permute(0, 1, 4, 2, 3)                              # (B, T, 3, S, S)
    x1 = torch.stack([latents[i] for i in idx])
    onset = torch.from_numpy(np.stack([examples[i]["onset"] for i in idx]))
    b = len(idx)
    cap_list = []
    for i in idx:
        c = caps[i] if caps is not None else None
        if c is not None and rng.random() < recipe.caption_dropout:
            c = None
        cap_list.append(c)
    cap_feats = cap_mask = None
    if any(c is not None for c in cap_list):
        L = max(c.shape[0] if c is not None else 1 for c in cap_list)
        dim = next(c for c in cap_list if c is not None).shape[1]
        cap_feats = torch.zeros(b, L, dim)
        cap_mask = torch.zeros(b, L, dtype=torch.bool)
        for j, c in enumerate(cap_list):
            if c is not None:
                cap_feats[j, : c.shape[0]] = c
                cap_mask[j, : c.shape[0]] = True
        # items without a caption keep an all-False mask: the model puts its null caption there
    drop = torch.from_numpy(rng.random(b) < recipe.cond_dropout)
    return dict(frames=frames, visual_idx=torch.from_numpy(vidx), visual_times=torch.tensor(vtimes, dtype=torch.float32),
                sync_times=torch.arange(n_frames, dtype=torch.float32) / fps,
                audio_times=latent_times(x1.shape[2], down, cfg), x1=x1, onset=onset, cap_feats=cap_feats,
                cap_mask=cap_mask, drop=drop, spectra=spectra,
                weights=torch.stack([weights[i] for i in idx]) if weights is not None else None)


def step_loss(model: Trainable, batch: Dict, gen: torch.Generator, recipe: V2ARecipe) -> Tuple[torch.Tensor, Dict]:
    frames = batch["frames"]
    b, t = frames.shape[:2]
    vis_frames = frames[:, batch["visual_idx"]]
    visual = model.frame_encoder(vis_frames.flatten(0, 1)).view(b, vis_frames.shape[1], -1, recipe.visual_dim)
    sync = model.sync_encoder(frames)
    onset_loss = F.binary_cross_entropy_with_logits(model.sync_encoder.onset_logits(sync), batch["onset"])
    spectrum_loss = torch.zeros(())
    if batch.get("spectra") is not None and model.frame_encoder.spectrum_head is not None:
        spectrum_loss = F.mse_loss(model.frame_encoder.predict_spectrum(visual), batch["spectra"])
    x1 = batch["x1"]
    x0 = torch.randn(x1.shape, generator=gen)
    tt = sample_t(b, 1.0, gen, logit_normal=True)
    xt = interpolate(x0, x1, tt)
    v = model.transformer(xt, tt, visual, batch["visual_times"], sync, batch["sync_times"], batch["audio_times"],
                          batch["cap_feats"], batch["cap_mask"], batch["drop"])
    err = (v - (x1 - x0)).pow(2)
    if batch.get("weights") is not None:
        err = err * batch["weights"][:, None]
    flow = err.mean()
    loss = flow + recipe.onset_weight * onset_loss + recipe.spectrum_weight * spectrum_loss
    return loss, {"flow": flow.item(), "onset": onset_loss.item(), "spectrum": spectrum_loss.item()}


def train_dit(model: Trainable, examples, latents, caps, recipe: V2ARecipe, cfg: MelConfig, down: int,
              mels=None, weights=None) -> Tuple[Trainable, Dict]:
    groups = buckets(examples)
    keys = list(groups)
    bucket_p = np.array([len(groups[k]) for k in keys], dtype=np.float64)
    bucket_p /= bucket_p.sum()
    rng = np.random.default_rng(recipe.seed + 2)
    gen = torch.Generator().manual_seed(recipe.seed + 3)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.dim() < 2 or "null_" in name else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=recipe.lr, betas=(0.9, 0.98))
    ema = copy.deepcopy(model).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    model.train()
    t0 = time.time()
    hist: List[Dict] = []
    step = 0
    for step in budgeted_steps(opt, recipe.dit_steps, recipe.dit_minutes, recipe.lr, recipe.warmup):
        key = keys[int(rng.choice(len(keys), p=bucket_p))]
        pool = groups[key]
        idx = [pool[int(i)] for i in rng.integers(len(pool), size=recipe.batch)]
        batch = make_batch(examples, latents, caps, idx, recipe, cfg, down, rng, mels, weights)
        loss, parts = step_loss(model, batch, gen, recipe)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema_update(ema, model, step, recipe.ema)
        hist.append(parts)
        if step % recipe.log_every == 0:
            recent = hist[-recipe.log_every:]
            log(f"dit step {step} flow {np.mean([h['flow'] for h in recent]):.4f} "
                f"onset {np.mean([h['onset'] for h in recent]):.4f} "
                f"spectrum {np.mean([h['spectrum'] for h in recent]):.4f} lr {opt.param_groups[0]['lr']:.2e} bucket {key} "
                f"({(time.time() - t0) / (step + 1):.2f} s/step)")
    tail = hist[-100:]
    return ema, {"dit_steps": step + 1, "dit_minutes": (time.time() - t0) / 60,
                 "flow_loss": float(np.mean([h["flow"] for h in tail])),
                 "onset_loss": float(np.mean([h["onset"] for h in tail])),
                 "spectrum_loss": float(np.mean([h["spectrum"] for h in tail]))}


# ------------------------------------------------------------------------------------------------


def train(out: Path, recipe: V2ARecipe) -> Dict:
    torch.manual_seed(recipe.seed)
    torch.set_num_threads(recipe.threads)
    t_all = time.perf_counter()
    out = Path(out)
    cfg = MelConfig(n_mels=recipe.n_mels)
    examples = build_examples(recipe)
    mels = [normalize(log_mel(ex["wave"], cfg), cfg) for ex in examples]
    t_data = time.perf_counter() - t_all
    log(f"examples ready in {t_data:.0f}s")

    if recipe.vae_from:  # reuse a trained mel VAE (e.g. to retrain only the transformer on new data)
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(recipe.vae_from, subfolder="vae").eval()
        recipe.vae_channels = tuple(vae.config.block_out_channels)
        recipe.latent_channels = vae.config.latent_channels
        vae_report = {"vae_from": recipe.vae_from}
    else:
        vae = make_vae(recipe)
        vae_report = train_vae(vae, mels, recipe)
    down = 2 ** (len(recipe.vae_channels) - 1)
    raw = encode_latents(vae, mels, cfg, down)
    std = float(torch.cat([z.flatten() for z in raw]).std())
    vae.register_to_config(scaling_factor=1.0 / std)
    latents = [z / std for z in raw]
    log(f"latents encoded (std {std:.3f})")

    caps = tokenizer = text_encoder = None
    cap_dim = 384
    if recipe.text:
        caps, tokenizer, text_encoder = caption_features([ex["caption"] for ex in examples])
        cap_dim = text_encoder.config.hidden_size
        log("caption features encoded")

    model = make_models(recipe, recipe.n_mels // down, cap_dim)
    if recipe.init:
        model = load_trainable(recipe.init)
        log(f"transformer and encoders initialised from {recipe.init}")
    weights = None
    if recipe.loud_weight or recipe.onset_frame_weight:
        weights = [loss_weight_map(m, ex["wave"], down, cfg, recipe) for m, ex in zip(mels, examples)]
    ema, dit_report = train_dit(model, examples, latents, caps, recipe, cfg, down, mels, weights)

    pipe = LuminaV2APipeline(
        transformer=ema.transformer.eval(), vae=vae, sync_encoder=ema.sync_encoder.eval(),
        visual_encoder=ema.frame_encoder.eval(), vocoder=None, text_encoder=None, tokenizer=None,
        n_mels=cfg.n_mels, mel_norm_mean=cfg.norm_mean, mel_norm_scale=cfg.norm_scale, visual_fps=recipe.visual_fps,
        text_encoder_source=MINILM_SOURCE if recipe.text else None, default_steps=recipe.sample_steps,
        default_guidance=recipe.sample_guidance,
    )
    out.mkdir(parents=True, exist_ok=True)
    pipe.to(dtype=torch.float16).save_pretrained(str(out))  # float16 storage: the assets' size budget
    report = {"recipe": asdict(recipe), "examples": len(examples), "data_seconds": t_data, **vae_report, **dit_report,
              "latent_std": std, "text_encoder": MINILM_SOURCE if recipe.text else None,
              "total_minutes": (time.perf_counter() - t_all) / 60}
    (out / "train_report.json").write_text(json.dumps(report, indent=1))
    log(f"saved {out} ({report['total_minutes']:.1f} min)")
    return report


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lumina.v2a.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output directory (diffusers layout)")
    p.add_argument("--world", type=int, default=V2ARecipe.world, help="number of procedural world clips (0 = none)")
    p.add_argument("--videos", help="folder of video files with sound (VGGSound-style); FILE.txt = caption")
    p.add_argument("--minutes", type=float, help="total budget: split 1:3 between the VAE and the transformer")
    p.add_argument("--vae-minutes", type=float)
    p.add_argument("--dit-minutes", type=float)
    p.add_argument("--vae-steps", type=int)
    p.add_argument("--dit-steps", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--no-text", action="store_true", help="train without MiniLM caption features")
    p.add_argument("--vae-from", help="a V2A pipeline directory whose mel VAE is reused (skips VAE training)")
    p.add_argument("--init", help="a V2A pipeline directory whose transformer and encoders are fine-tuned "
                   "(use with --vae-from the same directory)")
    p.add_argument("--lr", type=float)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    recipe = V2ARecipe(world=args.world, videos=args.videos, text=not args.no_text, threads=args.threads, seed=args.seed,
                       vae_from=args.vae_from, init=args.init)
    if args.minutes:  # data, latents and captions take the remaining ~15%
        recipe.vae_minutes = args.minutes * 0.12
        recipe.dit_minutes = args.minutes * (0.85 if args.vae_from else 0.75)
    for name in ("vae_minutes", "dit_minutes", "vae_steps", "dit_steps", "batch", "lr"):
        if getattr(args, name) is not None:
            setattr(recipe, name, getattr(args, name))
    train(Path(args.out), recipe)
    return 0


if __name__ == "__main__":
    sys.exit(main())
