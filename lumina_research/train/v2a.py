"""Train the tiny Lumina-V2A member on CPU: world clips with their soundtrack, or a folder of videos with sound.

    python -m lumina_research.train v2a --world 1600 --out assets/lumina-v2a-tiny --minutes 20
    python -m lumina_research.train v2a --videos DIR --out OUT [--world N] [--scenes N] [--vae-from DIR]
    python -m lumina_research.train v2a --videos DIR --out OUT --visual-encoder CLIP_DIR --vocoder HIFIGAN_DIR \
        --dim 1024 --layers 16 --heads 16 --kv-heads 8 --vae-channels 128 256 512 --latent-channels 8   # real scale
    python -m lumina_research.train v2a --videos DIR --out OUT2 --init OUT       # fine-tune any saved V2A pipeline

Real scale: ``--visual-encoder`` is a transformers CLIPVisionModel directory (frozen: its pooled patch
features are computed once per example at its own input size and replace the tiny frame encoder),
``--vocoder`` a SpeechT5HifiGan directory (the mel then follows its hop, its sample rate, which must be
16 kHz, and its model_in_dim bins).  ``--init`` takes a saved pipeline's transformer, encoders, VAE,
vocoder, mel geometry and text encoder and trains on.

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
   with ``--contacts`` first a contact detector (lumina.v2a.contacts) is fit on the examples' impact-track
   candidates, and the transformer gets an onset-track input fed the soundtrack's true hits;
5. the pipeline (vocoder None -> Griffin-Lim unless --vocoder; MiniLM attached at load time) is written in diffusers
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

from lumina_research.train.budget import budgeted_steps, ema_update
from lumina_research.train.losses import interpolate, sample_t, vae_loss
from lumina.v2a.audio import SAMPLE_RATE, MelConfig, log_mel, normalize, pad_frames
from lumina.v2a.contacts import V2AContactDetector, onset_track
from lumina_research.train.v2a_data import buckets, folder_examples, world_examples
from lumina.v2a.encoders import V2AFrameEncoder, V2ASyncEncoder, is_clip_vision, visual_frame_indices
from lumina.v2a.model import LuminaV2ATransformer
from lumina.v2a.pipeline import LuminaV2APipeline, latent_times, vocoder_hop

MINILM_SOURCE = "minilm"


@dataclass
class V2ARecipe:
    world: int = 1600
    scenes: int = 0                  # varied scenes (lumina_research.world.scenes): any look, contacts make the sound
    clean_share: Optional[float] = None  # ... of which this share is clean (None: the scenes' CLEAN_SHARE)
    videos: Optional[str] = None
    video_window: float = 4.0
    seed: int = 0
    enc_size: int = 32
    visual_fps: float = 8.0
    # mel + VAE
    n_mels: int = 128
    hop_length: int = 256
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
    init: Optional[str] = None       # a V2A pipeline directory fine-tuned as a whole (VAE too, unless vae_from)
    impact: bool = False             # the sync encoder also reads the impact track (lumina.v2a.impact)
    contacts: bool = False           # the transformer reads a contact onset track from a trained contact detector
    onset_dropout: float = 0.0       # ... of which this share of the true hits is left out in training (> 0: the
                                     #     learned path also hits where the track has none; on unfamiliar looks it scatters)
    sync_dropout: float = 0.5        # ... and the sync features of this share of examples (hits from the track alone)
    onset_lr_scale: float = 10.0     # ... whose input layer learns at this multiple of lr
    detector_false_rate: float = 0.15  # the detector's threshold: most contacts at at most this many false ones per s
    visual_encoder: Optional[str] = None  # a CLIPVisionModel directory (frozen) instead of the tiny frame encoder
    vocoder: Optional[str] = None    # a SpeechT5HifiGan directory instead of Griffin-Lim
    ema: float = 0.995
    dit_minutes: float = 12.0
    threads: int = 1
    log_every: int = 25


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------------------------------
# stage 1: examples


def build_examples(recipe: V2ARecipe, visual: Optional[Tuple[int, float]] = None) -> List[Dict]:
    """Examples of the recipe's sources; ``visual=(size, fps)`` also keeps frames for a frozen CLIP."""
    examples: List[Dict] = []
    cues = tuple(c for c, on in (("impact", recipe.impact), ("contacts", recipe.contacts)) if on)
    if recipe.videos:
        examples += list(folder_examples(recipe.videos, recipe.video_window, enc_size=recipe.enc_size, visual=visual,
                                         cues=cues))
        log(f"{len(examples)} windows from videos in {recipe.videos}")
    if recipe.world:
        examples += list(world_examples(recipe.world, seed0=recipe.seed * 100_000, enc_size=recipe.enc_size,
                                        visual=visual, cues=cues))
        log(f"{recipe.world} world clips rendered")
    if recipe.scenes:
        from lumina_research.world.scenes import scene_examples

        share = {} if recipe.clean_share is None else {"clean_share": recipe.clean_share}
        examples += list(scene_examples(recipe.scenes, seed0=3_000_000 + recipe.seed * 100_000, enc_size=recipe.enc_size,
                                        visual=visual, cues=cues, **share))
        log(f"{recipe.scenes} varied scenes rendered")
    if not examples:
        raise SystemExit("no training examples: give --world N, --scenes N and/or --videos DIR with sound")
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
def caption_features(captions: Sequence[str], tokenizer, encoder, max_tokens: int = 77) -> List[Optional[torch.Tensor]]:
    feats: List[Optional[torch.Tensor]] = []
    for text in captions:
        if not text:
            feats.append(None)
            continue
        tok = tokenizer([text], truncation=True, max_length=max_tokens, return_tensors="pt")
        feats.append(encoder(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]).last_hidden_state[0].clone())
    return feats


# ------------------------------------------------------------------------------------------------
# stage 4: transformer + encoders


class Trainable(torch.nn.Module):
    """What training updates: the transformer, the sync encoder and the tiny frame encoder (None with a frozen CLIP)."""

    def __init__(self, transformer, frame_encoder, sync_encoder):
        super().__init__()
        self.transformer, self.frame_encoder, self.sync_encoder = transformer, frame_encoder, sync_encoder


def make_models(recipe: V2ARecipe, latent_freq: int, cap_dim: int, clip=None) -> Trainable:
    visual_dim = int(clip.config.hidden_size) if clip is not None else recipe.visual_dim
    transformer = LuminaV2ATransformer(
        dim=recipe.dim, n_layers=recipe.n_layers, n_heads=recipe.n_heads, n_kv_heads=recipe.n_kv_heads,
        latent_channels=recipe.latent_channels, latent_freq=latent_freq, visual_dim=visual_dim,
        visual_grid=recipe.visual_grid, sync_dim=recipe.sync_dim, cap_feat_dim=cap_dim,
    )
    frame = None
    if clip is None:
        frame = V2AFrameEncoder(image_size=recipe.enc_size, width=recipe.frame_width, out_dim=recipe.visual_dim,
                                grid=recipe.visual_grid, spectrum_bins=recipe.n_mels if recipe.spectrum_weight else 0)
    sync = V2ASyncEncoder(image_size=recipe.enc_size, out_dim=recipe.sync_dim, impact_features=recipe.impact)
    return Trainable(transformer, frame, sync)


@torch.no_grad()
def grown(module, new_prefix: str, **changes):
    """The same module built with config ``changes`` that add parts under ``new_prefix`` (which start at zero
    output): it still computes exactly what it did, and training goes on from there."""
    config = {k: v for k, v in module.config.items() if not k.startswith("_")}
    new = type(module)(**{**config, **changes})
    missing, unexpected = new.load_state_dict(module.state_dict(), strict=False)
    if unexpected or any(not k.startswith(new_prefix) for k in missing):
        raise ValueError(f"{type(module).__name__} weights do not fit: missing {missing}, unexpected {unexpected}")
    return new


def with_impact(sync_encoder: V2ASyncEncoder) -> V2ASyncEncoder:
    """The same sync encoder plus the impact MLP."""
    return grown(sync_encoder, "impact_proj.", impact_features=True)


def with_onsets(transformer: LuminaV2ATransformer, channels: int) -> LuminaV2ATransformer:
    """The same transformer plus the onset-track input (``channels`` mel frames per audio-latent frame)."""
    return grown(transformer, "onset_embedder.", onset_channels=channels)


def add_clip_features(examples: Sequence[Dict], clip, grid: int) -> None:
    """Each example's visual_frames -> visual_feats (T_v, grid*grid, D) of the frozen CLIP (frames dropped)."""
    from lumina.v2a.encoders import as_float_frames, encode_visual

    for ex in examples:
        ex["visual_feats"] = encode_visual(clip, as_float_frames(ex.pop("visual_frames")), grid)


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
    from lumina_research.train.v2a_data import FLUX_REF

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
    visual = torch.stack([examples[i]["visual_feats"] for i in idx]) if "visual_feats" in ex0 else None
    frames = torch.from_numpy(np.stack([examples[i]["frames"] for i in idx])).float().div_(255.0)
    frames = frames.permute(0, 1, 4, 2, 3)                              # (B, T, 3, S, S)
    x1 = torch.stack([latents[i] for i in idx])
    onset = torch.from_numpy(np.stack([examples[i]["onset"] for i in idx]))
    impact = torch.from_numpy(np.stack([examples[i]["impact"] for i in idx])) if "impact" in ex0 else None
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
    onsets = sync_keep = None
    if recipe.contacts:  # the true hits, a share left out; and the sync features of a share of examples dropped
        n_lat = x1.shape[2]
        onsets = torch.stack([onset_track([h for h in examples[i]["hits"] if rng.random() >= recipe.onset_dropout],
                                          n_lat, down, cfg.hop_length, cfg.sample_rate) for i in idx])
        sync_keep = torch.from_numpy(rng.random(b) >= recipe.sync_dropout).float()
    return dict(onsets=onsets, sync_keep=sync_keep, frames=frames, visual=visual, visual_idx=torch.from_numpy(vidx),
                visual_times=torch.tensor(vtimes, dtype=torch.float32),
                sync_times=torch.arange(n_frames, dtype=torch.float32) / fps,
                audio_times=latent_times(x1.shape[2], down, cfg), x1=x1, onset=onset, impact=impact, cap_feats=cap_feats,
                cap_mask=cap_mask, drop=drop, spectra=spectra,
                weights=torch.stack([weights[i] for i in idx]) if weights is not None else None)


def step_loss(model: Trainable, batch: Dict, gen: torch.Generator, recipe: V2ARecipe) -> Tuple[torch.Tensor, Dict]:
    frames = batch["frames"]
    b, t = frames.shape[:2]
    visual = batch.get("visual")
    if visual is None:
        vis_frames = frames[:, batch["visual_idx"]]
        visual = model.frame_encoder(vis_frames.flatten(0, 1)).view(b, vis_frames.shape[1], -1, recipe.visual_dim)
    sync = model.sync_encoder(frames, batch.get("impact"))
    onset_loss = F.binary_cross_entropy_with_logits(model.sync_encoder.onset_logits(sync), batch["onset"])
    if batch.get("sync_keep") is not None:  # zero features: the transformer's RMSNorm-ed sync input is then zero
        sync = sync * batch["sync_keep"][:, None, None]
    spectrum_loss = torch.zeros(())
    spectrum_head = getattr(model.frame_encoder, "spectrum_head", None)
    if batch.get("spectra") is not None and spectrum_head is not None and batch.get("visual") is None:
        spectrum_loss = F.mse_loss(model.frame_encoder.predict_spectrum(visual), batch["spectra"])
    x1 = batch["x1"]
    x0 = torch.randn(x1.shape, generator=gen)
    tt = sample_t(b, 1.0, gen, logit_normal=True)
    xt = interpolate(x0, x1, tt)
    v = model.transformer(xt, tt, visual, batch["visual_times"], sync, batch["sync_times"], batch["audio_times"],
                          batch["cap_feats"], batch["cap_mask"], batch["drop"], batch.get("onsets"))
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
    decay, no_decay, onset = [], [], []
    for name, p in model.named_parameters():
        if name.startswith("transformer.onset_embedder."):
            onset.append(p)
        else:
            (no_decay if p.dim() < 2 or "null_" in name else decay).append(p)
    param_groups = [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if onset:  # a new input learns at its own pace while a fine-tuned member's weights move slowly
        param_groups.append({"params": onset, "weight_decay": 0.0, "lr_scale": recipe.onset_lr_scale})
    opt = torch.optim.AdamW(param_groups, lr=recipe.lr, betas=(0.9, 0.98))
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


def contact_scores(detector: V2AContactDetector, examples: Sequence[Dict], threshold: float) -> Dict:
    """Share of the examples' hits with a detected contact within one frame, and false contacts per second (the sync
    bench's own count, lumina_research.eval.v2a.score_onsets)."""
    from lumina_research.eval.v2a import score_onsets

    rows = []
    for ex in examples:
        times, feats = ex["candidates"]
        found = np.asarray(times)[detector.probabilities(feats) > threshold] / ex["fps"]
        rows.append(score_onsets(found, ex["hits"], ex["fps"], ex["seconds"]))
    return {"contacts_met": sum(r["hits"] for r in rows) / max(sum(r["bounces"] for r in rows), 1),
            "false_per_s": sum(r["false_onsets"] for r in rows) / max(sum(r["seconds"] for r in rows), 1e-9)}


def train_detector(examples: Sequence[Dict], recipe: V2ARecipe, steps: int = 200) -> Tuple[V2AContactDetector, Dict]:
    """Fit the contact detector on the examples' candidates (a candidate is a contact when a hit of the soundtrack
    lies within one frame of it); its threshold is the one that meets the most contacts of a held-out 15% at no more
    than ``detector_false_rate`` false contacts per second."""
    rng = np.random.default_rng(recipe.seed + 4)
    order = rng.permutation(len(examples))
    held = [examples[i] for i in order[: max(1, len(examples) * 15 // 100)]]
    fit = [examples[i] for i in order[len(held):]] or held
    feats, labels = [], []
    for ex in fit:
        times, f = ex["candidates"]
        hits = np.asarray(ex["hits"]) * ex["fps"]
        feats.append(f)
        labels += [float(len(hits) > 0 and np.min(np.abs(hits - t)) <= 1.0) for t in times]
    if not labels:
        raise SystemExit("--contacts: no motion in the training videos gives a contact candidate; nothing to train the "
                         "contact detector on")
    x = torch.from_numpy(np.concatenate(feats))
    y = torch.tensor(labels)
    detector = V2AContactDetector(num_features=x.shape[1])
    detector.feature_mean.copy_(x.mean(0))
    detector.feature_std.copy_(x.std(0).clamp(min=1e-3))
    opt = torch.optim.AdamW(detector.parameters(), lr=3e-3, weight_decay=1e-3)
    for _ in range(steps):
        loss = F.binary_cross_entropy_with_logits(detector(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    detector.eval()
    grid = [round(float(t), 2) for t in np.arange(0.1, 0.96, 0.05)]
    scores = {t: contact_scores(detector, held, t) for t in grid}
    ok = [t for t in grid if scores[t]["false_per_s"] <= recipe.detector_false_rate]
    if ok:  # the most contacts, then the fewest false ones; of equal thresholds the middle one (a margin both ways)
        top = max((scores[t]["contacts_met"], -scores[t]["false_per_s"]) for t in ok)
        tied = [t for t in ok if (scores[t]["contacts_met"], -scores[t]["false_per_s"]) == top]
        best = tied[len(tied) // 2]
    else:
        best = min(grid, key=lambda t: scores[t]["false_per_s"])
    detector.register_to_config(threshold=best)
    report = {"detector_candidates": len(y), "detector_positive_share": float(y.mean()), "detector_loss": loss.item(),
              "detector_threshold": best, "detector_held_out": scores[best]}
    log(f"contact detector: threshold {best}, held out {scores[best]}")
    return detector, report


# ------------------------------------------------------------------------------------------------


def mel_config(recipe: V2ARecipe, vocoder) -> MelConfig:
    """The recipe's mel; with a vocoder its hop and bins (refused unless it runs at the data's 16 kHz)."""
    if vocoder is None:
        return MelConfig(n_mels=recipe.n_mels, hop_length=recipe.hop_length)
    rate = int(vocoder.config.sampling_rate)
    if rate != SAMPLE_RATE:
        raise SystemExit(f"the vocoder runs at {rate} Hz; V2A training data is {SAMPLE_RATE} Hz: use a 16 kHz vocoder")
    recipe.n_mels, recipe.hop_length = int(vocoder.config.model_in_dim), vocoder_hop(vocoder)
    return MelConfig(n_mels=recipe.n_mels, hop_length=recipe.hop_length)


def train(out: Path, recipe: V2ARecipe) -> Dict:
    from diffusers import AutoencoderKL
    from transformers import CLIPVisionModel, SpeechT5HifiGan

    torch.manual_seed(recipe.seed)
    torch.set_num_threads(recipe.threads)
    t_all = time.perf_counter()
    out = Path(out)
    init = None
    if recipe.init:  # a saved V2A pipeline of any scale: its parts and its mel geometry
        from lumina.v2a import load_v2a

        init = load_v2a(recipe.init, text=False)
        vocoder = init.vocoder
        clip = init.visual_encoder if is_clip_vision(init.visual_encoder) else None
        cfg = init.mel_config
        recipe.n_mels, recipe.hop_length = cfg.n_mels, cfg.hop_length
        recipe.enc_size = int(init.sync_encoder.config.image_size)
        recipe.visual_fps = float(init.config.visual_fps)
        recipe.visual_grid = int(init.transformer.config.visual_grid)
        if recipe.impact and not init.sync_encoder.config.impact_features:
            init.sync_encoder = with_impact(init.sync_encoder)
        recipe.impact = bool(init.sync_encoder.config.impact_features)
        log(f"parts and mel geometry from {recipe.init}")
    else:
        vocoder = SpeechT5HifiGan.from_pretrained(recipe.vocoder).eval() if recipe.vocoder else None
        clip = CLIPVisionModel.from_pretrained(recipe.visual_encoder).eval() if recipe.visual_encoder else None
        cfg = mel_config(recipe, vocoder)
    if clip is not None:
        clip.requires_grad_(False)
    visual = (int(clip.config.image_size), recipe.visual_fps) if clip is not None else None
    examples = build_examples(recipe, visual)
    if clip is not None:
        add_clip_features(examples, clip, recipe.visual_grid)
    mels = [normalize(log_mel(ex["wave"], cfg), cfg) for ex in examples]
    t_data = time.perf_counter() - t_all
    log(f"examples ready in {t_data:.0f}s")

    keep_scale = False
    if recipe.vae_from:  # reuse a trained mel VAE (e.g. to retrain only the transformer on new data)
        vae = AutoencoderKL.from_pretrained(recipe.vae_from, subfolder="vae", torch_dtype=torch.float32).eval()
        vae_report = {"vae_from": recipe.vae_from}
    elif init is not None:  # the transformer learned this VAE's latents at this scale: keep both
        vae, keep_scale = init.vae.eval(), True
        vae_report = {"vae_from": recipe.init}
    else:
        vae = make_vae(recipe)
        vae_report = train_vae(vae, mels, recipe)
    recipe.vae_channels = tuple(vae.config.block_out_channels)
    recipe.latent_channels = vae.config.latent_channels
    down = 2 ** (len(recipe.vae_channels) - 1)
    raw = encode_latents(vae, mels, cfg, down)
    std = float(torch.cat([z.flatten() for z in raw]).std())
    if keep_scale:
        std = 1.0 / float(vae.config.scaling_factor)
    vae.register_to_config(scaling_factor=1.0 / std)
    latents = [z / std for z in raw]
    log(f"latents encoded (std {std:.3f})")

    caps = tokenizer = text_encoder = None
    source = None
    if init is not None and init.text_encoder is not None:  # a pipeline that carries its own text encoder
        tokenizer, text_encoder = init.tokenizer, init.text_encoder
    elif recipe.text and (init is None or init.config.text_encoder_source == MINILM_SOURCE):
        from lumina.models.components import load_text_encoder

        tokenizer, text_encoder = load_text_encoder(MINILM_SOURCE)
        source = MINILM_SOURCE
    if text_encoder is not None:
        caps = caption_features([ex["caption"] for ex in examples], tokenizer, text_encoder)
        log("caption features encoded")
    cap_dim = int(text_encoder.config.hidden_size) if text_encoder is not None else 384

    if init is not None:
        model = Trainable(init.transformer, None if clip is not None else init.visual_encoder, init.sync_encoder)
    else:
        model = make_models(recipe, recipe.n_mels // down, cap_dim, clip)
    detector, detector_report = None, {}
    if recipe.contacts:
        detector, detector_report = train_detector(examples, recipe)
        if not model.transformer.config.onset_channels:
            model.transformer = with_onsets(model.transformer, down)
    weights = None
    if recipe.loud_weight or recipe.onset_frame_weight:
        weights = [loss_weight_map(m, ex["wave"], down, cfg, recipe) for m, ex in zip(mels, examples)]
    spectra_from = mels if clip is None else None  # the frame encoder's spectrum target; a frozen CLIP has none
    ema, dit_report = train_dit(model, examples, latents, caps, recipe, cfg, down, spectra_from, weights)

    own_text = text_encoder is not None and source is None
    pipe = LuminaV2APipeline(
        transformer=ema.transformer.eval(), vae=vae, sync_encoder=ema.sync_encoder.eval(),
        visual_encoder=clip if clip is not None else ema.frame_encoder.eval(), vocoder=vocoder,
        text_encoder=text_encoder if own_text else None, tokenizer=tokenizer if own_text else None,
        contact_detector=detector if detector is not None else (init.contact_detector if init is not None else None),
        n_mels=cfg.n_mels, hop_length=cfg.hop_length, mel_norm_mean=cfg.norm_mean, mel_norm_scale=cfg.norm_scale,
        visual_fps=recipe.visual_fps, text_encoder_source=source, default_steps=recipe.sample_steps,
        default_guidance=recipe.sample_guidance,
    )
    out.mkdir(parents=True, exist_ok=True)
    pipe.to(dtype=torch.float16).save_pretrained(str(out))  # float16 storage: the assets' size budget
    report = {"recipe": asdict(recipe), "examples": len(examples), "data_seconds": t_data, **vae_report,
              **detector_report, **dit_report,
              "latent_std": std, "text_encoder": source or (type(text_encoder).__name__ if text_encoder else None),
              "total_minutes": (time.perf_counter() - t_all) / 60}
    (out / "train_report.json").write_text(json.dumps(report, indent=1))
    log(f"saved {out} ({report['total_minutes']:.1f} min)")
    return report


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lumina_research.train v2a", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output directory (diffusers layout)")
    p.add_argument("--world", type=int, help=f"number of procedural world clips (default {V2ARecipe.world}, "
                   "0 when --videos is given)")
    p.add_argument("--scenes", type=int, default=0, help="number of varied scenes (lumina_research.world.scenes)")
    p.add_argument("--clean-share", type=float, help="share of the varied scenes that are clean: only the look varies "
                   "(default lumina_research.world.scenes.CLEAN_SHARE)")
    p.add_argument("--videos", help="folder of video files with sound (VGGSound-style); FILE.txt = caption")
    p.add_argument("--minutes", type=float, help="total budget: split 1:3 between the VAE and the transformer")
    p.add_argument("--vae-minutes", type=float)
    p.add_argument("--dit-minutes", type=float)
    p.add_argument("--vae-steps", type=int)
    p.add_argument("--dit-steps", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--no-text", action="store_true", help="train without MiniLM caption features")
    p.add_argument("--vae-from", help="a V2A pipeline directory whose mel VAE is reused (skips VAE training)")
    p.add_argument("--init", help="a saved V2A pipeline (any scale) fine-tuned as a whole: transformer, encoders, "
                   "VAE (unless --vae-from), vocoder, mel geometry, text encoder")
    p.add_argument("--impact", action="store_true", help="the sync encoder also reads the impact track "
                   "(lumina.v2a.impact, an appearance-free contact cue); with --init it is added to that member")
    p.add_argument("--contacts", action="store_true", help="train a contact detector (lumina.v2a.contacts) and give the "
                   "transformer its onset track: hits are placed where the detector finds contacts")
    p.add_argument("--visual-encoder", help="a transformers CLIPVisionModel directory (frozen) for the visual tokens")
    p.add_argument("--vocoder", help="a transformers SpeechT5HifiGan directory (16 kHz); the mel follows its hop and bins")
    p.add_argument("--dim", type=int, help=f"transformer width (default {V2ARecipe.dim})")
    p.add_argument("--layers", type=int, dest="n_layers", help=f"transformer blocks (default {V2ARecipe.n_layers})")
    p.add_argument("--heads", type=int, dest="n_heads", help=f"attention heads (default {V2ARecipe.n_heads})")
    p.add_argument("--kv-heads", type=int, dest="n_kv_heads", help=f"key/value heads (default {V2ARecipe.n_kv_heads})")
    p.add_argument("--n-mels", type=int, help=f"mel bins without a vocoder (default {V2ARecipe.n_mels})")
    p.add_argument("--hop", type=int, dest="hop_length", help=f"mel hop without a vocoder (default {V2ARecipe.hop_length})")
    p.add_argument("--vae-channels", type=int, nargs="+", help=f"mel VAE block widths (default {V2ARecipe.vae_channels})")
    p.add_argument("--latent-channels", type=int, help=f"mel VAE latent channels (default {V2ARecipe.latent_channels})")
    p.add_argument("--onset-dropout", type=float, help=f"with --contacts: share of true hits left out of the onset "
                   f"track in training (default {V2ARecipe.onset_dropout})")
    p.add_argument("--sync-dropout", type=float, help=f"with --contacts: share of examples trained without sync features "
                   f"(default {V2ARecipe.sync_dropout})")
    p.add_argument("--onset-lr-scale", type=float, help=f"with --contacts: the onset-track input learns at this multiple "
                   f"of --lr (default {V2ARecipe.onset_lr_scale})")
    p.add_argument("--lr", type=float)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    world = args.world if args.world is not None else (0 if args.videos else V2ARecipe.world)
    recipe = V2ARecipe(world=world, scenes=args.scenes, videos=args.videos, text=not args.no_text, threads=args.threads,
                       seed=args.seed, vae_from=args.vae_from, init=args.init, visual_encoder=args.visual_encoder,
                       vocoder=args.vocoder, impact=args.impact,
                       contacts=args.contacts)
    if args.minutes:  # data, latents and captions take the remaining ~15%
        recipe.vae_minutes = args.minutes * 0.12
        recipe.dit_minutes = args.minutes * (0.85 if args.vae_from or args.init else 0.75)
    for name in ("clean_share", "onset_dropout", "sync_dropout", "onset_lr_scale", "vae_minutes", "dit_minutes",
                 "vae_steps", "dit_steps", "batch", "lr", "dim", "n_layers",
                 "n_heads", "n_kv_heads", "n_mels", "hop_length", "latent_channels"):
        if getattr(args, name) is not None:
            setattr(recipe, name, getattr(args, name))
    if args.vae_channels:
        recipe.vae_channels = tuple(args.vae_channels)
    train(Path(args.out), recipe)
    return 0


if __name__ == "__main__":
    sys.exit(main())
