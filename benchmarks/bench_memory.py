"""Peak GPU memory and seconds per step for each memory mode; 8-bit versus bf16 output difference.

    python benchmarks/bench_memory.py --model DIR --device cuda --size 1248x704x96
    python benchmarks/bench_memory.py --model tiny --device cpu       # only the 8-bit difference (no GPU)

Peak memory needs CUDA; on the CPU the table reports the modes that exist there and the 8-bit error.
"""

from __future__ import annotations

import argparse

import torch
from _util import device_name, report, sync

from lumina.errors import LuminaError
from lumina.pipelines.loading import load_pipeline
from lumina.pipelines.memory import modes_for

def run_mode(args, mode, w, h, frames):
    dtype = torch.bfloat16 if torch.device(args.device).type == "cuda" else torch.float32
    pipe, _ = load_pipeline(args.model, dtype=dtype, device=args.device, memory=mode)
    pipe.set_progress_bar_config(disable=True)
    if torch.device(args.device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    out = pipe(prompt="a red circle moving right on a blue background", width=w, height=h, num_frames=frames,
               num_inference_steps=args.steps, generator=torch.Generator().manual_seed(0), output_type="np")
    sync(args.device)
    peak = torch.cuda.max_memory_allocated() / 1e9 if torch.device(args.device).type == "cuda" else None
    per_step = out.timings["denoise"] / (args.steps - 1)
    del pipe
    return out.frames, peak, per_step


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny")
    p.add_argument("--size", default="128x128x16")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    w, h, frames = (int(v) for v in args.size.split("x"))
    modes = [m for m in modes_for(torch.device(args.device).type) if m != "auto"]  # the menu's modes, by name
    rows, reference = [], None
    for mode in modes:
        try:
            video, peak, per_step = run_mode(args, mode, w, h, frames)
        except LuminaError as err:
            rows.append([mode, "refused", "-", str(err)[:60]])
            continue
        reference = video if reference is None else reference
        diff = float(abs(video - reference).mean())
        rows.append([mode, "-" if peak is None else f"{peak:.2f}", f"{per_step:.3f}", f"{diff:.4f}"])
    meta = {"model": args.model, "size": args.size, "device": args.device, "device_name": device_name(args.device),
            "steps": args.steps}
    report(f"memory_{torch.device(args.device).type}", ["mode", "peak GB", "s/step", "mean |video - none|"], rows, meta)


if __name__ == "__main__":
    main()
