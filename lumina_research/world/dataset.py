"""Training clips and held-out evaluation prompts with disjoint scene seeds.

Split rule: scene seeds come from ``base = seed * 100003 + i``; training scenes use the
even seed ``2 * base`` and evaluation scenes the odd seed ``2 * base + 1``, so no
evaluation scene is ever a training scene, whatever ``seed``/``n`` either side uses.
(The fact space is small, so an evaluation prompt's wording may still occur in
training; what is held out is the exact scene: layout, speeds, object combination.)
"""

from __future__ import annotations

from collections.abc import Iterator

from .captions import prompt_for
from .render import Clip, Scene, render_clip, sample_scene

SEED_STRIDE = 100003


def train_seed(seed: int, i: int) -> int:
    """Scene seed of the i-th training clip of dataset ``seed`` (always even)."""
    return 2 * (seed * SEED_STRIDE + i)


def eval_seed(seed: int, i: int) -> int:
    """Scene seed of the i-th held-out prompt of evaluation set ``seed`` (always odd)."""
    return 2 * (seed * SEED_STRIDE + i) + 1


def make_clips(n: int, seed: int, **render_kwargs) -> Iterator[Clip]:
    """Yield ``n`` training clips; ``render_kwargs`` go to ``render_clip`` (width, height, fps, seconds)."""
    seconds = render_kwargs.get("seconds", 2.0)
    for i in range(n):
        yield render_clip(sample_scene(train_seed(seed, i), seconds=seconds), **render_kwargs)


def held_out_scenes(n: int, seed: int) -> list[Scene]:
    """The first ``n`` scenes of evaluation set ``seed``."""
    return [sample_scene(eval_seed(seed, i)) for i in range(n)]


def prompt_of(scene: Scene) -> tuple[str, dict]:
    """A scene's (canonical prompt, facts); facts as ``Scene.facts()``."""
    facts = scene.facts()
    return prompt_for(facts["background"], facts["objects"]), facts


def held_out_prompts(n: int, seed: int) -> list[tuple[str, dict]]:
    """``n`` (canonical prompt, facts) pairs from evaluation seeds."""
    return [prompt_of(scene) for scene in held_out_scenes(n, seed)]
