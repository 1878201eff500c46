"""`python -m lumina v2a --video IN.mp4 --out OUT.mp4 [--prompt TEXT] [--model DIR] [--contacts 'T1, T2']`: add a
soundtrack to a video.  It prints what it did as JSON, with the contact times the hits were placed on.

The video stream is re-encoded from the decoded frames (H.264) and muxed with an AAC track of exactly the
video's duration; OUT.json beside it records the settings and describes OUT.mp4 (lumina.media.write_pair).
Also runnable as `python -m lumina.v2a.cli ...`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

from lumina.errors import LuminaError
from lumina.syntax import parse_numbers


def stream_durations(path) -> Dict[str, float]:
    """Seconds of the video stream (decoded frames / rate) and of the audio stream.

    "audio" is the AAC stream's own duration (what players show); "audio_decoded" counts decoded samples,
    which AAC rounds up to whole 1024-sample frames (at most 64 ms more at 16 kHz).
    """
    import av

    out: Dict[str, float] = {}
    with av.open(str(path)) as container:
        if container.streams.video:
            vs = container.streams.video[0]
            rate = float(vs.average_rate or vs.guessed_rate)
            out["video"] = sum(1 for _ in container.decode(vs)) / rate
    with av.open(str(path)) as container:
        if container.streams.audio:
            stream = container.streams.audio[0]
            samples = sum(f.samples for f in container.decode(stream))
            out["audio_decoded"] = samples / float(stream.rate)
            if stream.duration is not None:
                out["audio"] = float(stream.duration * stream.time_base)
            else:
                out["audio"] = out["audio_decoded"]
    return out


def add_sound(video: str, out: str, prompt: Optional[str] = None, model: str = "assets/lumina-v2a-tiny",
              steps: Optional[int] = None, cfg: Optional[float] = None, seed: int = 0, pipe=None,
              contacts: Optional[List[float]] = None, sync_cfg: Optional[float] = None,
              overwrite_sidecar: bool = False) -> Dict:
    """Sound for ``video`` muxed into ``out``, with its sidecar OUT.json (the settings, the contact times and the
    timings; `lumina.media.write_pair`); ``contacts`` (s): where the hits go instead of the detected contacts.
    The output path, its sidecar's name, the seed and the video's header are checked before torch and the model
    load."""
    from lumina import validation as V
    from lumina.media import check_sidecar_target, iter_video, read_video, sidecar_path, write_pair

    V.check_output_path(out)
    check_sidecar_target(out, overwrite_sidecar)
    V.check_seed(seed)
    t0 = time.perf_counter()
    V.check_video_upload(video)
    import torch

    from lumina.v2a import load_v2a
    from lumina.v2a.pipeline import READ_SHORT_SIDE

    caps = dict(max_frames=V.MAX_V2A_FRAMES, max_pixels=V.MAX_V2A_PIXELS)
    # the model reads small frames; the output is re-encoded from a second decode, frame by frame: memory stays
    # bounded by the small copy (155 MB for the largest accepted input, 594 frames of 640x480, instead of 2.7 GB)
    frames, fps = read_video(video, short_side=READ_SHORT_SIDE, **caps)
    pipe = pipe or load_v2a(model)
    result = pipe(frames, fps, prompt=prompt, num_inference_steps=steps, guidance_scale=cfg,
                  generator=torch.Generator("cpu").manual_seed(seed), contacts=contacts, sync_guidance_scale=sync_cfg)
    info = {"source": Path(video).name, "prompt": prompt, "seed": seed, "steps": steps, "cfg": cfg,
            "sync_cfg": sync_cfg, "fps": fps, "frames": len(frames), "seconds": len(frames) / fps,
            "contacts": None if result.contacts is None else [round(float(t), 3) for t in result.contacts],
            "timings": {k: round(v, 3) for k, v in result.timings.items()},
            "total_seconds": round(time.perf_counter() - t0, 3)}
    write_pair(out, iter_video(video, **caps), fps, info, audio=result.audio, sample_rate=result.sample_rate,
               overwrite_sidecar=overwrite_sidecar)
    return {**info, "video": str(out), "sidecar": str(sidecar_path(out)), "streams": stream_durations(out)}


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "v2a":
        argv = argv[1:]
    p = argparse.ArgumentParser(prog="python -m lumina v2a", description="video to audio: writes OUT.mp4 with sound")
    p.add_argument("--video", required=True, help="input video file")
    p.add_argument("--out", required=True, help="OUT.mp4")
    p.add_argument("--prompt", help="optional text describing the sound")
    p.add_argument("--model", default="assets/lumina-v2a-tiny", help="V2A pipeline directory (diffusers layout)")
    p.add_argument("--steps", type=int, help="sampling grid points (steps - 1 evaluations)")
    p.add_argument("--cfg", type=float, help="guidance scale (0 = none)")
    p.add_argument("--sync-cfg", type=float, help="the sync features' own guidance (default: the model's; = --cfg: one "
                   "guidance for all): lower keeps the hits they make on their own, often false, from being amplified")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite-sidecar", action="store_true",
                   help="replace an OUT.json that is not one of this program's sidecars")
    p.add_argument("--contacts", help="contact times in seconds, e.g. '0.5, 1.25': the hits go there instead of where "
                   "the model's contact detector finds them")
    args = p.parse_args(argv)
    if not Path(args.video).exists():
        print(f"error: {args.video}: no such file", file=sys.stderr)
        return 2
    try:
        contacts = None if args.contacts is None else parse_numbers("contacts", args.contacts, 100)
        info = add_sound(args.video, args.out, args.prompt, args.model, args.steps, args.cfg, args.seed,
                         contacts=contacts, sync_cfg=args.sync_cfg, overwrite_sidecar=args.overwrite_sidecar)
    except (LuminaError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
