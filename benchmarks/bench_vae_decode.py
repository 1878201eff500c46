"""Peak memory and seconds of a CogVideoX decode against latent frames and area: diffusers' `vae.decode` versus
`lumina.pipelines.vae_decode.decode_latents`, random weights of the CogVideoX-2b configuration (optionally with
fewer channels).

    python benchmarks/bench_vae_decode.py --channels 32,64,64,128 --frames 2,4,8 --area 16x24
    python benchmarks/bench_vae_decode.py --device cuda --dtype bf16 --frames 24 --area 88x156 --tiling on

"peak GB" is what the decode adds to the memory allocated before it (`measure_decode`): tensor bytes alive at once
on the CPU (`TensorBytes`), `max_memory_allocated` on CUDA.
"""

from __future__ import annotations

import argparse

import torch
from _util import device_name, report

from lumina.pipelines.vae_decode import measure_decode

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def build_vae(channels, tiling: bool):
    from diffusers import AutoencoderKLCogVideoX

    torch.manual_seed(0)
    vae = AutoencoderKLCogVideoX(block_out_channels=tuple(channels), norm_num_groups=min(32, channels[0])).eval()
    (vae.enable_tiling if tiling else vae.disable_tiling)()
    return vae


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--channels", default="128,256,256,512", help="block_out_channels (CogVideoX-2b: 128,256,256,512)")
    p.add_argument("--frames", default="2,4,8", help="latent frame counts")
    p.add_argument("--area", default="16x24", help="latent HxW, comma separated")
    p.add_argument("--tiling", choices=["on", "off"], default="off")
    p.add_argument("--paths", default="diffusers,bounded")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    channels = [int(c) for c in args.channels.split(",")]
    vae = build_vae(channels, args.tiling == "on")
    rows = []
    for area in args.area.split(","):
        h, w = (int(v) for v in area.split("x"))
        for frames in args.frames.split(","):
            for path in args.paths.split(","):
                peak, seconds = measure_decode(vae, (1, 16, int(frames), h, w), args.device, DTYPES[args.dtype],
                                               bounded=path == "bounded")
                rows.append([path, frames, area, f"{peak / 1e9:.3f}", f"{seconds:.1f}"])
                print(rows[-1], flush=True)
    meta = {"channels": channels, "tiling": args.tiling, "device": args.device, "dtype": args.dtype,
            "device_name": device_name(args.device)}
    name = (f"vae_decode_{args.device}_{'x'.join(map(str, channels))}_tiling-{args.tiling}_"
            f"f{args.frames.replace(',', '-')}_a{args.area.replace(',', '-')}")
    report(name, ["path", "latent frames", "latent HxW", "peak GB", "s"], rows, meta)


if __name__ == "__main__":
    main()
