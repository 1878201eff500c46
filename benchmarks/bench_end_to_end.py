"""End-to-end denoising time: single-scale 1x2 versus a multi-scale schedule, same seed and steps.

    python benchmarks/bench_end_to_end.py                        # bundled tiny model (CPU)
    python benchmarks/bench_end_to_end.py --model DIR --device cuda --dtype bf16 --size 1248x704x96

Also prints the time the cost model (lumina.costs) predicts, so its fit can be checked ("no fit" on a device that
`benchmarks/bench_forward.py --fit` has not measured yet).
"""

from __future__ import annotations

import argparse

import torch
from _util import device_name, report, sync

from lumina.costs import load_fit, request_seconds
from lumina.pipelines.loading import load_pipeline

SCHEDULES = ("1x2", "2x2", "2x4", "multiscale")  # "multiscale": the model's own (ModelDefaults.named_schedules)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny")
    p.add_argument("--size", help="WxHxFRAMES (default: the model's)")
    p.add_argument("--steps", type=int, help="grid points (default: the model's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--memory", default="none")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    pipe, defaults = load_pipeline(args.model, dtype=dtype, device=args.device, memory=args.memory)
    pipe.set_progress_bar_config(disable=True)
    w, h, frames = (int(v) for v in args.size.split("x")) if args.size else (defaults.width, defaults.height, defaults.frames)
    rows, base = [], None
    fit = load_fit(torch.device(args.device).type)
    for label in SCHEDULES:
        config = defaults.sample_config(patch=label, steps=args.steps)
        times = []
        for r in range(args.repeats + 1):
            gen = torch.Generator("cpu").manual_seed(0)
            out = pipe(prompt="a red circle moving right on a blue background", width=w, height=h, num_frames=frames, sample_config=config,
                       generator=gen, output_type="latent")
            sync(args.device)
            if r:  # the first run warms up
                times.append(out.timings["denoise"])
        sec = min(times)
        base = base or sec
        predicted, tokens = request_seconds(pipe.transformer.config, config, pipe.latent_size(frames, h, w), fit)
        rows.append([label, "/".join(str(tokens[k]) for k in tokens), config.steps - 1, f"{sec:.3f}",
                     f"{sec / base:.3f}", f"{predicted:.3f}" if fit else "no fit"])
    meta = {"model": args.model, "size": f"{w}x{h}x{frames}", "device": args.device, "dtype": args.dtype,
            "device_name": device_name(args.device), "memory": pipe.memory_plan.name}
    report(f"end_to_end_{torch.device(args.device).type}", ["schedule", "tokens/step", "steps", "denoise s",
                                                            "vs 1x2", "cost model s"], rows, meta)


if __name__ == "__main__":
    main()
