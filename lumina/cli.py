"""Command line: `python -m lumina generate|presets|motion-score ...`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

from lumina.errors import LuminaError

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
LORA_HELP = "a LoRA .safetensors file (or a folder with one) at a scale (default 1); repeat for several"


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="text to video: writes OUT.mp4 and OUT.json")
    p.add_argument("--model", default="tiny", help="'tiny', a diffusers or release directory, or a Hub id")
    p.add_argument("--prompt", required=True)
    p.add_argument("--negative-prompt", default="")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--schedule", help="1x2 | 2x2 | 2x4 | multiscale | 'v0, v1@t1, ...' (see `presets`)")
    group.add_argument("--preset", help="a release preset name (see `presets`)")
    p.add_argument("--motion", help="positive motion score, or a schedule such as '6'")
    p.add_argument("--neg-motion", help="negative motion score, e.g. 2 or '2, 6@0.05'")
    p.add_argument("--cfg", help="guidance scale, e.g. 20 or '20, 0@0.2' (0 = no negative pass)")
    p.add_argument("--steps", type=int, help="grid points of the flow ODE (steps - 1 evaluations)")
    p.add_argument("--time-shift", type=float)
    p.add_argument("--renorm", type=float)
    p.add_argument("--shared-noise", type=float,
                   help="share (0-0.95) of the starting noise common to all latent frames; 0 = independent (release)")
    p.add_argument("--seed", type=int)
    p.add_argument("--resolution", help="WxH, multiples of 32")
    p.add_argument("--frames", type=int, help="1 or a multiple of 8")
    p.add_argument("--fps", type=int)
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--memory", default="none",
                   help="none | model-offload | sequential-offload | group-offload, '+8bit', '+vae-tiling', "
                        "'+vae-slicing'; or auto (from free GPU memory)")
    p.add_argument("--compile", action="store_true", help="torch.compile the repeated transformer blocks")
    p.add_argument("--cache", help="step cache NAME[:value]: fast (the measured default), fbc, taylorseer, pab, "
                                   "faster, mag or none (see `presets`)")
    p.add_argument("--lora", action="append", metavar="PATH[:SCALE]", help=LORA_HELP)
    p.add_argument("--parallel", metavar="ulysses|ring",
                   help="split one video over the processes of a torchrun launch (context parallelism); rank 0 "
                        "writes the video")
    p.add_argument("--audio", action="store_true", help="add sound with Lumina-V2A (--v2a-model)")
    p.add_argument("--v2a-model", default="assets/lumina-v2a-tiny", help="V2A pipeline directory")
    p.add_argument("--out", required=True, help="FILE.mp4")
    p.add_argument("--overwrite-sidecar", action="store_true",
                   help="replace a FILE.json beside --out that is not one of this program's sidecars")


def cmd_generate(args) -> int:
    """Everything the user gave is checked (values, output path, device, launch, model folder and defaults) before
    torch, diffusers or a model loads."""
    from lumina import parallel
    from lumina.cache import StepCache
    from lumina.generation import GenerationRequest, resolve_request
    from lumina.media import check_sidecar_target
    from lumina.pipelines.defaults import read_defaults
    from lumina.syntax import parse_loras, parse_resolution, parse_setting
    from lumina.validation import check_device, check_output_path

    width = height = None
    if args.resolution is not None:
        width, height = parse_resolution(args.resolution)
    check_output_path(args.out)
    check_sidecar_target(args.out, args.overwrite_sidecar)
    check_device(args.device)
    device = parallel.check_launch(args.parallel, args.device, args.memory, args.compile)
    cache = StepCache.parse(args.cache)
    parallel.check_cache(args.parallel, cache)
    defaults = read_defaults(args.model)
    req = GenerationRequest(
        prompt=args.prompt, negative_prompt=args.negative_prompt, width=width, height=height, frames=args.frames,
        fps=args.fps, preset=args.preset, schedule=parse_setting(args.schedule, "patch", defaults.named_schedules()),
        motion=parse_setting(args.motion, name="motion"), neg_motion=parse_setting(args.neg_motion, name="neg-motion"),
        cfg=parse_setting(args.cfg, name="cfg"),
        steps=args.steps, time_shift=args.time_shift, renorm=args.renorm, shared_noise=args.shared_noise,
        seed=args.seed, audio=args.audio, cache=cache,
        loras=parse_loras(args.lora),
    )
    job = resolve_request(req, defaults)
    with parallel.process_group(args.parallel, device):
        return _generate(args, job, device)


def _generate(args, job, device: str) -> int:
    """Load, (split the video over the launch's processes), generate; under --parallel only rank 0 writes."""
    import torch

    from lumina import parallel
    from lumina.generation import generate_video, run_pipeline
    from lumina.pipelines.loading import load_pipeline

    pipe, _ = load_pipeline(args.model, dtype=getattr(torch, DTYPES[args.dtype]), device=device,
                            memory=args.memory, compile_blocks=args.compile)
    if args.parallel is not None:
        parallel.enable(pipe, args.parallel)
        if parallel.rank() != 0:
            run_pipeline(pipe, job, "latent")
            return 0
    audio_fn = None
    if args.audio:
        from lumina.v2a import audio_fn_for, load_v2a

        audio_fn = audio_fn_for(load_v2a(args.v2a_model, device=device))
    sidecar = generate_video(pipe, job, args.out, audio_fn=audio_fn, overwrite_sidecar=args.overwrite_sidecar)
    print(json.dumps({"video": args.out, "seed": sidecar["request"]["seed"], "timings": sidecar["timings"]}))
    return 0


def cmd_presets(args) -> int:
    from lumina import syntax
    from lumina.cache import FAST, FAST_CACHE, METHODS
    from lumina.pipelines.defaults import ModelDefaults, read_defaults
    from lumina.sampling import PRESETS
    from lumina.syntax import format_schedule

    print("Release presets (step = grid points; step - 1 evaluations):")
    for name, cfg in PRESETS.items():
        print(f"  {name:24s} P={format_schedule(cfg.patch)!r} step={cfg.steps} ts={cfg.time_shift:g} "
              f"renorm={cfg.renorm:g} cfg={format_schedule(cfg.cfg)!r} motion={format_schedule(cfg.motion)!r} "
              f"negMotion={format_schedule(cfg.neg_motion)!r}")
    print("Patch schedules by name:")
    for name, value in ModelDefaults().named_schedules().items():
        print(f"  {name:10s} = {format_schedule(value)}")
    tiny = format_schedule(read_defaults("tiny").named_schedules()["multiscale"])
    print(f"  (a model's 'multiscale' is its multi-scale preset's schedule at its tuned switch times; tiny: {tiny})")
    print(syntax.__doc__.split("Schedule strings", 1)[1].strip().join(["Schedule strings ", ""]))
    print(f"Step caches (--cache NAME[:value]; '{FAST}' = {FAST_CACHE.label}, measured in docs/benchmarks.md):")
    for name, (what, default, (low, high), integer) in METHODS.items():
        allowed = f"{low}..{high}" if integer else f"({low}, {high}]"
        print(f"  {name:10s} {what}; default {default}, allowed {allowed}")
    return 0


def cmd_batch(args) -> int:
    from lumina.batch import run_batch
    from lumina.syntax import parse_loras

    written = run_batch(args.prompts, args.out, model=args.model, device=args.device, memory=args.memory,
                        seed=args.seed, loras=parse_loras(args.lora))
    print(f"{len(written)} new videos in {args.out}")
    return 0


def cmd_motion_score(args) -> int:
    from lumina.motion import main as motion_main

    return motion_main([args.video])


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["v2a"]:  # its own parser, in the V2A package
        from lumina.v2a.cli import main as v2a_main

        return v2a_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m lumina", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_generate(sub)
    sub.add_parser("presets", help="list release presets and patch schedules")
    b = sub.add_parser("batch", help="generate a prompt list (resumable; split over `accelerate launch` processes)")
    b.add_argument("prompts", help="text file, one prompt a line, or JSON lines of generate settings")
    b.add_argument("--out", required=True, help="output directory")
    b.add_argument("--model", default="tiny")
    b.add_argument("--memory", default="none")
    b.add_argument("--device", default=None, help="default: this process's accelerator, else cpu")
    b.add_argument("--seed", type=int, default=0, help="base seed: line i uses seed + i unless it sets one")
    b.add_argument("--lora", action="append", metavar="PATH[:SCALE]", help=LORA_HELP + "; for lines without 'loras'")
    sub.add_parser("v2a", help="add synchronized sound to a video (Lumina-V2A); see `v2a --help`")
    ms = sub.add_parser("motion-score", help="measure a video's motion score (release protocol)")
    ms.add_argument("video")
    args = parser.parse_args(argv)
    handlers = {"generate": cmd_generate, "presets": cmd_presets, "motion-score": cmd_motion_score, "batch": cmd_batch}
    try:
        return handlers[args.command](args)
    except (LuminaError, ValueError, OSError) as err:  # one line, never a traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
