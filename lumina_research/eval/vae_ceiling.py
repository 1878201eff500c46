"""A VAE's ceiling: held-out world scenes through the VAE alone (no transformer), read back by the analyzer.

    python -m lumina_research.eval vae --vae data/vae_t2 [--scenes 80] [--set 1] [--min-speed 0.3] [--still]

What no transformer sampling in that VAE's latents can beat, for any VAE folder (ShapesBench reports the loaded
model's own VAE on its scenes). Single-object scenes, as ShapesBench scores the main object. --still renders the
same scenes with every object at rest: what the encoder loses to motion within a latent frame shows as the gap.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import torch

from lumina_research.eval.shapes import vae_ceiling
from lumina.models.components import load_release_vae
from lumina.pipelines.loading import load_pipeline
from lumina.pipelines.pipeline_lumina_video import LuminaVideoPipeline
from lumina_research.world.dataset import held_out_scenes
from lumina_research.world.render import Scene


def at_rest(scene: Scene) -> Scene:
    """`scene` with every object still where it starts."""
    return dataclasses.replace(scene, objects=tuple(dataclasses.replace(o, motion="still", speed=0.0)
                                                    for o in scene.objects))


def ceiling(vae_dir: str, n_scenes: int, eval_set: int, min_speed: float = 0.0, still: bool = False) -> dict:
    """`vae_ceiling` of the first `n_scenes` single-object scenes of evaluation set `eval_set` whose object moves at
    least `min_speed` frame widths a second, through `vae_dir`, at the tiny model's clip size."""
    tiny, defaults = load_pipeline("tiny")
    pipe = LuminaVideoPipeline(transformer=tiny.transformer, vae=load_release_vae(vae_dir, torch.float32))
    pool = held_out_scenes((4 if min_speed <= 0 else 16) * n_scenes, eval_set)
    scenes = [s for s in pool if len(s.objects) == 1 and s.objects[0].speed >= min_speed][:n_scenes]
    if still:
        scenes = [at_rest(s) for s in scenes]
    return {"vae": vae_dir, "set": eval_set, "scenes": len(scenes), "min_speed": min_speed, "still": still,
            **vae_ceiling(pipe, defaults, scenes)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lumina_research.eval vae", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vae", required=True, help="an AutoencoderKLCogVideoX folder")
    p.add_argument("--scenes", type=int, default=80, help="single-object scenes")
    p.add_argument("--set", type=int, default=1, help="evaluation set (lumina_research.world.dataset.eval_seed)")
    p.add_argument("--min-speed", type=float, default=0.0,
                   help="only scenes whose object moves at least this many frame widths a second")
    p.add_argument("--still", action="store_true", help="render the scenes with every object at rest")
    args = p.parse_args(argv)
    print(json.dumps(ceiling(args.vae, args.scenes, args.set, args.min_speed, args.still)))
    return 0
