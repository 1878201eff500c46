"""`python -m lumina_research.train vae|dit|decoder|assemble|all|v2a ...`: train the bundled tiny models on CPU.

    python -m lumina_research.train vae --out /tmp/lt/vae --minutes 12
    python -m lumina_research.train dit --vae /tmp/lt/vae --out /tmp/lt/transformer --minutes 25
    python -m lumina_research.train decoder --vae /tmp/lt/vae --out /tmp/lt/vae_decoder --minutes 20   # encoder frozen
    python -m lumina_research.train assemble --vae /tmp/lt/vae_decoder --dit /tmp/lt/transformer --out assets/lumina-video-tiny
    python -m lumina_research.train all --out assets/lumina-video-tiny          # all of the above (decoder || DiT)
    python -m lumina_research.train v2a --videos DIR --out OUT                   # Lumina-V2A (see lumina_research.train.v2a)

Caches (motion labels, caption features, latents) go to --cache (default $LUMINA_TRAIN_CACHE or
/tmp/lumina_train) and are reused when their inputs match. Use --threads 1 on a busy machine:
PyTorch's OpenMP threads lose far more than they gain when the cores are oversubscribed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

from lumina.patch import RELEASE_PATCH_SIZES

DEFAULT_CACHE = Path(os.environ.get("LUMINA_TRAIN_CACHE", "/tmp/lumina_train"))


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=int(os.environ.get("LUMINA_TRAIN_THREADS", "2")),
                   help="torch CPU threads (default 2; 1 is faster when the machine is busy)")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="cache folder for labels, features, latents")
    p.add_argument("--device", default="cpu", help="where the DiT trains and captions and latents are encoded "
                   "(cuda when a GPU is lent; default cpu)")


def _vae_args(p: argparse.ArgumentParser, prefix: str = "", minutes: float = 12.0) -> None:
    p.add_argument(f"--{prefix.replace('_', '-')}steps", type=int, default=2000, help="VAE steps (upper bound with --minutes)")
    p.add_argument(f"--{prefix.replace('_', '-')}batch", type=int, default=4)
    p.add_argument(f"--{prefix.replace('_', '-')}crop", type=int, default=48)
    p.add_argument(f"--{prefix.replace('_', '-')}lr", type=float, default=1e-3)
    p.add_argument(f"--{prefix.replace('_', '-')}minutes", type=float, default=minutes, help="wall-time budget for VAE training")
    p.add_argument(f"--{prefix.replace('_', '-')}foreground-weight", type=float, default=8.0,
                   help="extra loss weight on object pixels")
    p.add_argument(f"--{prefix.replace('_', '-')}init", default=None, help="continue from this VAE folder")
    p.add_argument(f"--{prefix.replace('_', '-')}widths", type=int, nargs="+", default=[16, 32, 32, 32],
                   help="block_out_channels of the CogVideoX blocks: four (8x spatial compression, the "
                        "release's) or three (4x: twice the latent detail per axis)")
    p.add_argument(f"--{prefix.replace('_', '-')}temporal", type=int, choices=(2, 4), default=4,
                   help="video frames a latent frame: 4 (the release's) or 2 (objects moving fast keep their "
                        "shapes; twice the latent frames)")


PATCH_NAMES = tuple(p.name for p in RELEASE_PATCH_SIZES)  # the tiny DiT has the release's three


def per_patch(option: str):
    """argparse type for PATCH=VALUE (one of the model's patch sizes, a positive number)."""
    def parse(text: str) -> tuple:
        patch, sep, value = text.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = None
        if not sep or patch not in PATCH_NAMES or number is None or not number > 0:
            raise argparse.ArgumentTypeError(
                f"{option} {text!r}: give PATCH=VALUE with PATCH one of {', '.join(PATCH_NAMES)} and VALUE a number > 0")
        return patch, number
    return parse


def _dit_args(p: argparse.ArgumentParser, prefix: str = "", minutes: float = 24.0) -> None:
    from lumina_research.train.dit import DiTRecipe

    p.add_argument(f"--{prefix.replace('_', '-')}steps", type=int, default=100000, help="DiT steps (upper bound with --minutes)")
    p.add_argument(f"--{prefix.replace('_', '-')}batch", type=int, default=4, help="videos per 1x2 step")
    p.add_argument(f"--{prefix.replace('_', '-')}lr", type=float, default=6e-4)
    p.add_argument(f"--{prefix.replace('_', '-')}minutes", type=float, default=minutes, help="wall-time budget for DiT training")
    p.add_argument(f"--{prefix.replace('_', '-')}dim", type=int, default=128)
    p.add_argument(f"--{prefix.replace('_', '-')}layers", type=int, default=4)
    p.add_argument(f"--{prefix.replace('_', '-')}heads", type=int, default=DiTRecipe.n_heads,
                   help="attention heads (dim / heads is the head size; 32 keeps RoPE's axes as shipped)")
    p.add_argument(f"--{prefix.replace('_', '-')}kv-heads", type=int, default=DiTRecipe.n_kv_heads,
                   help="key/value heads (grouped-query attention; divides --heads)")
    p.add_argument(f"--{prefix.replace('_', '-')}init", type=Path, default=None,
                   help="continue from this transformer folder (fresh optimizer and schedule); "
                        "one with fewer --layers is grown in depth")
    p.add_argument(f"--{prefix.replace('_', '-')}object-weight", type=float, default=4.0,
                   help="extra flow-loss weight on latent cells objects touch (0: plain MSE)")
    p.add_argument(f"--{prefix.replace('_', '-')}frame-diff-weight", type=float, default=0.0,
                   help="weight of the flow error's differences between latent frames (motion consistency)")
    p.add_argument(f"--{prefix.replace('_', '-')}image-prob", type=float, default=DiTRecipe.image_prob,
                   help="share of steps that train on first-frame images instead of videos")
    p.add_argument(f"--{prefix.replace('_', '-')}stake-weight", type=float, default=0.0,
                   help="weight of the flow error along items' shape stakes (a clip or its first frame minus its shape twins)")
    p.add_argument(f"--{prefix.replace('_', '-')}stake-from-t", type=float, default=0.0,
                   help="charge the stakes only at times t >= this (0 noise, 1 data): shape once the noisy clip shows "
                        "where the object is, leaving the high-noise steps that settle its trajectory alone")
    p.add_argument(f"--{prefix.replace('_', '-')}t-from", type=float, default=0.0,
                   help="train only at times t >= this: a low-noise expert, which a pipeline assembled with "
                        "--expert uses from that time on while the base transformer settles the trajectory")
    p.add_argument(f"--{prefix.replace('_', '-')}shared-noise", type=float, default=0.0,
                   help="train from noise with this share of its variance common to all latent frames (PYoCo's "
                        "mixed noise), so that sampling with that sharedNoise is what the model saw")
    p.add_argument(f"--{prefix.replace('_', '-')}patch-shift", nargs="+", type=per_patch("--patch-shift"), default=None,
                   metavar="PATCH=SHIFT", help="training time shift per patch size, e.g. 1x2=1 2x2=3 2x4=6 (the default; "
                   "larger: noisier times); patch sizes not named keep theirs")
    p.add_argument(f"--{prefix.replace('_', '-')}patch-probs", nargs="+", type=per_patch("--patch-probs"), default=None,
                   metavar="PATCH=WEIGHT", help="how often each patch size is drawn, as relative weights, e.g. "
                   "2x4=2 draws 2x4 half the time; patch sizes not named weigh 1 (the default: equally)")
    p.add_argument(f"--{prefix.replace('_', '-')}shape-twins", type=int, default=0,
                   help="clips whose first frames get shape twins encoded (the image stakes; 0: none)")
    p.add_argument(f"--{prefix.replace('_', '-')}video-shape-twins", type=int, default=0,
                   help="clips whose whole videos get shape twins encoded (the video stakes; 0: none)")
    p.add_argument("--clips", type=int, default=1000, help="world clips with captions/motion labels (images)")
    p.add_argument("--video-clips", type=int, default=500, help="of those, clips encoded as videos")


def run_vae(out: Path, args, prefix: str = ""):
    from lumina_research.train.vae import VAERecipe, train_vae

    g = lambda k: getattr(args, prefix + k)  # noqa: E731
    recipe = VAERecipe(steps=g("steps"), batch=g("batch"), crop=g("crop"), lr=g("lr"), seed=args.seed,
                       max_minutes=g("minutes") or None, foreground_weight=g("foreground_weight"), init=g("init"),
                       block_out_channels=tuple(g("widths")), temporal_compression=g("temporal"))
    return train_vae(out, recipe, log=_log)


def prepare_data(vae_dir: Path, args, shape_twins: int = 0, video_shape_twins: int = 0):
    from diffusers import AutoencoderKLCogVideoX

    from lumina_research.train.data import TrainingSet, build_latent_cache, build_meta_cache, build_twin_cache

    cache = Path(args.cache)
    workers = max(1, args.threads)
    meta = build_meta_cache(cache / f"meta_{args.clips}.pt", args.clips, seed0=0, workers=workers,
                            device=args.device, log=_log)
    vae = AutoencoderKLCogVideoX.from_pretrained(str(vae_dir)).eval().to(args.device)
    latents = build_latent_cache(cache / f"latents_{args.clips}_{args.video_clips}.pt", vae, meta,
                                 n_video=args.video_clips, batch=8 if args.device == "cpu" else 128,
                                 workers=workers, log=_log)
    motion = meta["motion"].numpy()
    info = {"clips_with_captions": args.clips, "video_clips": int(latents["videos"].shape[0]),
            "image_latents": int(latents["images"].shape[0]),
            "motion_labels": {"mean": round(float(motion.mean()), 1), "median": round(float(np.median(motion)), 1),
                              "p90": round(float(np.percentile(motion, 90)), 1)}}
    twins = video_twins = None
    if shape_twins:
        twins = build_twin_cache(cache / f"twins_{shape_twins}.pt", vae, meta, latents, shape_twins, log=_log)
        info["shape_twins"] = len(twins["seeds"])
    if video_shape_twins:
        video_twins = build_twin_cache(cache / f"video_twins_{video_shape_twins}.pt", vae, meta, latents,
                                       video_shape_twins,
                                       batch=8, log=_log, video=True)
        info["video_shape_twins"] = len(video_twins["seeds"])
    return TrainingSet(meta, latents, twins=twins, video_twins=video_twins), info


def run_dit(vae_dir: Path, out: Path, args, prefix: str = ""):
    from lumina_research.train.dit import DiTRecipe, train_dit

    g = lambda k: getattr(args, prefix + k)  # noqa: E731
    if g("stake_weight") and not (g("shape_twins") or g("video_shape_twins")):
        raise SystemExit("--stake-weight needs --shape-twins N or --video-shape-twins N: the stakes come from the first "
                         "N clips' shape twins")
    data, info = prepare_data(vae_dir, args, g("shape_twins"), g("video_shape_twins"))
    paper = DiTRecipe()  # per-patch-size values not named on the command line keep these
    recipe = DiTRecipe(steps=g("steps"), batch=g("batch"), lr=g("lr"), seed=args.seed, max_minutes=g("minutes") or None,
                       dim=g("dim"), n_layers=g("layers"), n_heads=g("heads"), n_kv_heads=g("kv_heads"),
                       init=str(g("init")) if g("init") else None,
                       object_weight=g("object_weight"), frame_diff_weight=g("frame_diff_weight"),
                       stake_weight=g("stake_weight"), stake_from_t=g("stake_from_t"), t_from=g("t_from"),
                       shared_noise=g("shared_noise"), image_prob=g("image_prob"), device=args.device,
                       patch_shift={**paper.patch_shift, **dict(g("patch_shift") or [])},
                       patch_probs={**dict.fromkeys(PATCH_NAMES, 1.0), **dict(g("patch_probs"))}
                       if g("patch_probs") else paper.patch_probs)
    train_dit(out, data, recipe, log=_log)
    (Path(out) / "data_info.json").write_text(json.dumps(info))
    return info


def run_decoder(vae_dir: Path, out: Path, args, minutes: float):
    """Fine-tune the VAE decoder on the cached latents (encoder frozen: the DiT's latents stay valid)."""
    from lumina_research.train.vae import DecoderRecipe, finetune_decoder

    from diffusers import AutoencoderKLCogVideoX

    data, _ = prepare_data(vae_dir, args)
    vae = AutoencoderKLCogVideoX.from_pretrained(str(vae_dir))
    report = Path(vae_dir) / "train_report.json"
    Path(out).mkdir(parents=True, exist_ok=True)
    if report.exists() and Path(out).resolve() != Path(vae_dir).resolve():
        (Path(out) / "train_report.json").write_text(report.read_text())
    seeds = data.seeds[: data.videos.shape[0]]
    recipe = DecoderRecipe(seed=args.seed, max_minutes=minutes, lr=getattr(args, "lr", None) or DecoderRecipe.lr,
                           batch=4, latent_crop=6, latent_frames=2, gradient_weight=args.gradient_weight)
    return finetune_decoder(vae, data.videos, seeds, out, recipe, log=_log)


def run_assemble(vae_dir: Path, dit_dir: Path, out: Path, steps: int, preset: str, notes: Optional[Path] = None,
                 expert_dir: Optional[Path] = None, expert_from_t: Optional[float] = None):
    from lumina.errors import InvalidRequestError
    from lumina_research.train.assemble import assemble

    info_path = Path(dit_dir) / "data_info.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else None
    text = Path(notes).read_text() if notes else None
    try:
        return assemble(dit_dir, vae_dir, out, steps=steps, preset=preset, data_info=info, notes=text, log=_log,
                        expert_dir=expert_dir, expert_from_t=expert_from_t)
    except InvalidRequestError as err:  # e.g. --expert without --expert-from-t: the pipeline states the rule
        raise SystemExit(f"error: {err}")


def main(argv=None) -> int:
    from lumina_research.train.assemble import DEFAULT_PRESET, DEFAULT_STEPS

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["v2a"]:  # its own options: world clips and/or a folder of videos with sound
        from lumina_research.train.v2a import main as train_v2a

        return train_v2a(argv[1:])

    parser = argparse.ArgumentParser(prog="python -m lumina_research.train", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("v2a", help="train a Lumina-V2A model (python -m lumina_research.train v2a --help)", add_help=False)
    p = sub.add_parser("vae", help="train the tiny CogVideoX VAE")
    p.add_argument("--out", type=Path, required=True)
    _vae_args(p)
    _common(p)
    p = sub.add_parser("dit", help="cache data with a trained VAE and train the tiny Next-DiT")
    p.add_argument("--vae", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    _dit_args(p)
    _common(p)
    p = sub.add_parser("decoder", help="fine-tune the VAE decoder on cached latents (encoder frozen)")
    p.add_argument("--vae", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--clips", type=int, default=1000)
    p.add_argument("--video-clips", type=int, default=500)
    p.add_argument("--gradient-weight", type=float, default=0.0,
                   help="weight of the pixel-gradient L1 next to L1 + MSE (sharper edges, so shapes survive)")
    _common(p)
    p = sub.add_parser("assemble", help="write the diffusers pipeline folder, defaults and model card")
    p.add_argument("--vae", type=Path, required=True)
    p.add_argument("--dit", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--sample-steps", type=int, default=DEFAULT_STEPS)
    p.add_argument("--preset", default=DEFAULT_PRESET)
    p.add_argument("--notes", type=Path, default=None, help="markdown appended to the model card")
    p.add_argument("--expert", type=Path, default=None,
                   help="a transformer trained with --t-from: the pipeline's low-noise expert (transformer_2)")
    p.add_argument("--expert-from-t", type=float, default=None, help="the time the expert takes over (0 noise, 1 data)")
    _common(p)
    p = sub.add_parser("all", help="vae, then dit, then assemble")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--work", type=Path, default=None, help="where the trained parts go (default CACHE/run)")
    _vae_args(p, "vae_", minutes=10.0)
    _dit_args(p, "dit_", minutes=22.0)
    p.add_argument("--decoder-minutes", type=float, default=22.0,
                   help="decoder fine-tuning, run in a second process while the DiT trains (0: skip)")
    p.add_argument("--sample-steps", type=int, default=DEFAULT_STEPS)
    p.add_argument("--preset", default=DEFAULT_PRESET)
    _common(p)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(max(1, args.threads))
    t0 = time.time()
    if args.command == "vae":
        run_vae(args.out, args)
    elif args.command == "dit":
        run_dit(args.vae, args.out, args)
    elif args.command == "decoder":
        run_decoder(args.vae, args.out, args, args.minutes)
    elif args.command == "assemble":
        run_assemble(args.vae, args.dit, args.out, args.sample_steps, args.preset, args.notes, args.expert,
                     args.expert_from_t)
    else:
        work = args.work or Path(args.cache) / "run"
        run_vae(work / "vae", args, "vae_")
        vae_dir = work / "vae"
        decoder = None
        if args.decoder_minutes > 0:
            prepare_data(work / "vae", args)  # build the caches once, before two processes read them
            # the decoder is fine-tuned on the cached latents in a second process while the DiT trains:
            # the encoder stays frozen, so the DiT's latents stay valid
            import subprocess

            cmd = [sys.executable, "-m", "lumina_research.train", "decoder", "--vae", str(work / "vae"), "--out",
                   str(work / "vae_decoder"), "--minutes", str(args.decoder_minutes), "--threads", "1",
                   "--clips", str(args.clips), "--video-clips", str(args.video_clips),
                   "--cache", str(args.cache), "--seed", str(args.seed)]
            decoder = subprocess.Popen(cmd)
            _log(f"all: decoder fine-tuning in process {decoder.pid}")
        run_dit(work / "vae", work / "transformer", args, "dit_")
        if decoder is not None:
            if decoder.wait() == 0:
                vae_dir = work / "vae_decoder"
            else:
                _log("all: decoder fine-tuning failed; assembling with the trained VAE as is")
        run_assemble(vae_dir, work / "transformer", args.out, args.sample_steps, args.preset)
    _log(f"{args.command}: done in {(time.time() - t0) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
