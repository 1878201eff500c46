"""Flow-loss probes of a trained transformer: where does a text-to-video gap lie?

    python -m lumina_research.eval probe [--model tiny] [--clips 96] [--out DIR]

(a) generalisation: the flow loss on the first training scenes against training-distribution scenes past
    every cache (``--unseen-from``), never trained on. Equal losses mean the model does not overfit, so
    more scenes of the same data are not the lever.
(b) caption words: on single-object left/right/up/down clips, the loss with the true caption, with one
    fact edited (the direction mirrored, or the shape swapped circle <-> square, triangle <-> star: the
    world's captioner on the same scene, same phrasing draws) and with the empty caption. The share of the
    empty caption's rise that an edit gives says how much the model relies on that word.
(c) what each word is worth: the latent MSE between each clip and its edited twin (the scene re-rendered
    with the other shape; played backwards for the other direction). A fact that moves the latents little
    gives the flow loss, and so training, little reason to learn its word.
Noise and times are fixed, so two models compare on identical inputs.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Dict, List, Sequence

import torch

from lumina.media import write_json, write_text
from lumina.motion import motion_score
from lumina.pipelines.loading import load_pipeline
from lumina_research.train.data import ClipSpec, encode_video_latents, frames_to_tensor, training_caption
from lumina_research.train.losses import flow_loss, interpolate
from lumina_research.world.captions import scene_caption
from lumina_research.world.dataset import train_seed
from lumina_research.world.render import SHAPE_SWAPS, Scene, edited, render_clip, sample_scene

OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}
SWAPPED_SHAPE = SHAPE_SWAPS[0]
TIMES = (0.05, 0.2, 0.5, 0.8)
PATCHES = ("1x2", "2x4")


def mirrored_caption(scene: Scene) -> str:
    """The clip's caption with every straight mover's direction reversed (same template and phrase draws)."""
    return scene_caption(edited(scene, "motion", OPPOSITE))


def shape_swapped_caption(scene: Scene) -> str:
    """The clip's caption with every object's shape swapped (circle <-> square, triangle <-> star)."""
    return scene_caption(edited(scene, "shape", SWAPPED_SHAPE))


def _scenes(start: int, n: int, straight_single: bool, spec: ClipSpec = ClipSpec()):
    """n training-distribution (scene, clip) pairs from scene index `start` on (optionally only single
    straight movers)."""
    out, i = [], start
    while len(out) < n:
        scene = sample_scene(train_seed(0, i), seconds=spec.seconds)
        i += 1
        if not straight_single or (len(scene.objects) == 1 and scene.objects[0].motion in OPPOSITE):
            clip = render_clip(scene, width=spec.width, height=spec.height, fps=spec.fps, seconds=spec.seconds)
            out.append((scene, clip))
    return out


@torch.no_grad()
def clip_latents(pipe, clips, batch: int = 8) -> torch.Tensor:
    """The clips' scaled VAE latents x1, encoded `batch` at a time."""
    return torch.cat([encode_video_latents(pipe.vae, torch.stack([frames_to_tensor(c.frames) for c in clips[j:j + batch]]))
                      for j in range(0, len(clips), batch)])


def encode_clips(pipe, clips):
    """The clips as the DiT's data: latents x1 and their motion labels (the scorer's, as in training)."""
    return clip_latents(pipe, clips), torch.tensor([motion_score(c.frames, c.fps) for c in clips], dtype=torch.float32)


@torch.no_grad()
def flow_losses(pipe, data, captions: Sequence[str], patches=PATCHES, times=TIMES, batch: int = 32,
                seed: int = 0) -> Dict[str, List[float]]:
    """Per patch size, the flow MSE at each t of `data` (``encode_clips``) captioned `captions`, on fixed noise."""
    x1, motion = data
    embeds, mask, _, _ = pipe.encode_prompt(list(captions), do_classifier_free_guidance=False)
    noise = torch.randn(x1.shape, generator=torch.Generator().manual_seed(seed))
    out = {}
    for patch in patches:
        row = []
        for t in times:
            err = 0.0
            for j in range(0, x1.shape[0], batch):
                s = slice(j, j + batch)
                tt = torch.full((x1[s].shape[0],), float(t))
                v = pipe.transformer(interpolate(noise[s], x1[s], tt), tt, embeds[s], mask[s], motion[s], patch)
                err += flow_loss(v, x1[s] - noise[s], cos_weight=0.0)[1]["mse"] * x1[s].shape[0]
            row.append(err / x1.shape[0])
        out[patch] = row
    return out


def word_stakes(pipe, scenes, clips, x1: torch.Tensor, spec: ClipSpec = ClipSpec()) -> Dict[str, float]:
    """Latent MSE between each clip (latents `x1`) and its twin with the other shape / the other direction; the
    direction twin is the clip played backwards (same path, so it stays in frame)."""
    swapped = [render_clip(edited(s, "shape", SWAPPED_SHAPE), width=spec.width, height=spec.height, fps=spec.fps,
                           seconds=spec.seconds) for s in scenes]
    backwards = [dataclasses.replace(c, frames=c.frames[::-1].copy()) for c in clips]
    return {name: float(((clip_latents(pipe, twins) - x1) ** 2).mean())
            for name, twins in (("shape", swapped), ("direction", backwards))}


def run(model: str = "tiny", n: int = 96, seen_from: int = 0, unseen_from: int = 20000) -> Dict:
    pipe, _ = load_pipeline(model)
    generalisation = {}
    for name, start in (("seen", seen_from), ("unseen", unseen_from)):
        pairs = _scenes(start, n, False)
        captions = [training_caption(scene) for scene, _ in pairs]  # exactly what training sees
        generalisation[name] = flow_losses(pipe, encode_clips(pipe, [c for _, c in pairs]), captions)
    scenes, movers = zip(*_scenes(unseen_from, n, True))
    data = encode_clips(pipe, movers)
    d = {"true": flow_losses(pipe, data, [c.caption for c in movers]),
         "direction mirrored": flow_losses(pipe, data, [mirrored_caption(s) for s in scenes]),
         "shape swapped": flow_losses(pipe, data, [shape_swapped_caption(s) for s in scenes]),
         "empty": flow_losses(pipe, data, [""] * len(movers))}
    share = {edit: {p: [(m - t) / max(e - t, 1e-12) for t, m, e in zip(d["true"][p], d[edit][p], d["empty"][p])]
                    for p in PATCHES}
             for edit in ("direction mirrored", "shape swapped")}
    return {"model": model, "clips": n, "times": list(TIMES), "seen_from": seen_from, "unseen_from": unseen_from,
            "generalisation": generalisation, "caption_words": d, "edit_share": share,
            "latent_mse_of_edit": word_stakes(pipe, scenes, movers, data[0])}


def markdown(r: Dict) -> str:
    head = "| | " + " | ".join(f"{p} t={t}" for p in PATCHES for t in r["times"]) + " |"
    rule = "|---" * (1 + len(PATCHES) * len(r["times"])) + "|"
    rows = [f"Flow-loss probe of `{r['model']}` ({r['clips']} clips per row; unseen scenes from index {r['unseen_from']})",
            "", head, rule]
    for group in ("generalisation", "caption_words"):
        for name, losses in r[group].items():
            rows.append(f"| {group}: {name} | " + " | ".join(f"{v:.4f}" for p in PATCHES for v in losses[p]) + " |")
    for edit, share in r["edit_share"].items():
        rows.append(f"| {edit} / empty rise | " + " | ".join(f"{v:.2f}" for p in PATCHES for v in share[p]) + " |")
    stakes = r["latent_mse_of_edit"]
    rows += ["", "Latent MSE between a clip and its twin (latent variance ~1): "
             + ", ".join(f"{k} {v:.4f}" for k, v in stakes.items())
             + f" (direction / shape = {stakes['direction'] / max(stakes['shape'], 1e-12):.1f}x)."]
    return "\n".join(rows) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lumina_research.eval probe", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny")
    p.add_argument("--clips", type=int, default=96)
    p.add_argument("--seen-from", type=int, default=0, help="first training scene index of the seen set")
    p.add_argument("--unseen-from", type=int, default=20000, help="first scene index past every training cache")
    p.add_argument("--out", default=None, help="folder for probe.json and probe.md")
    args = p.parse_args(argv)
    if args.clips < 1 or args.seen_from < 0 or args.unseen_from < 0:
        p.error("--clips must be at least 1 and scene indices non-negative")
    result = run(args.model, args.clips, args.seen_from, args.unseen_from)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "probe.json", result)
        write_text(out / "probe.md", markdown(result))
    print(markdown(result))
    return 0
