"""Seconds per transformer forward for each patch size, relative to 1x2, and the cost-model fit.

    python benchmarks/bench_forward.py --config tiny                     # CPU, seconds
    python benchmarks/bench_forward.py --config 2b --size 1248x704x96 --device cuda --dtype bf16

Both configurations use random weights: `tiny` is the bundled model's architecture, `2b` the release's
(built directly on the device).
`--fit` stores overhead and FLOP throughput for the device in results/cost_model.json (used by the app's
ZeroGPU duration estimate through lumina.costs).
"""

from __future__ import annotations

import argparse
import json

import torch
from _util import device_name, report

from lumina import LuminaNextDiTVideo
from lumina.costs import COST_FILE, fit_throughput, forward_samples
from lumina.models.components import latent_size
from lumina.pipelines.loading import TINY_DIR

CONFIGS = {
    "tiny": {k: v for k, v in LuminaNextDiTVideo.load_config(str(TINY_DIR / "transformer")).items()
             if not k.startswith("_")},  # the shipped architecture
    "2b": {},
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=sorted(CONFIGS), default="tiny")
    p.add_argument("--size", default="128x128x16", help="WxHxFRAMES of the video")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--fit", action="store_true", help="update results/cost_model.json for this device")
    args = p.parse_args(argv)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    w, h, frames = (int(v) for v in args.size.lower().split("x"))
    torch.manual_seed(0)
    with torch.device(args.device):
        model = LuminaNextDiTVideo(**CONFIGS[args.config]).to(dtype).eval()
    rows, samples = [], []
    base = None
    for ps, tokens, flops, sec in forward_samples(model, latent_size(frames, h, w), args.repeats):
        base = base or sec
        samples.append((flops, sec))
        rows.append([ps, tokens, f"{sec:.4f}", f"{sec / base:.3f}", f"{flops / sec / 1e12:.2f}"])
    meta = {"config": args.config, "size": args.size, "dtype": args.dtype, "device": args.device,
            "device_name": device_name(args.device),
            "params": sum(p.numel() for p in model.parameters())}
    report(f"forward_{args.config}_{torch.device(args.device).type}", ["patch", "tokens", "s/forward", "vs 1x2", "TFLOP/s"],
           rows, meta)
    if args.fit:
        try:
            fit = fit_throughput(samples)
        except ValueError as err:
            print(f"no cost-model fit: {err}")
            return
        fits = json.loads(COST_FILE.read_text()) if COST_FILE.exists() else {}
        fits[torch.device(args.device).type] = {**fit, "from": meta}
        COST_FILE.write_text(json.dumps(fits, indent=1))
        print(f"cost model for {args.device}: {fits[torch.device(args.device).type]}")


if __name__ == "__main__":
    main()
