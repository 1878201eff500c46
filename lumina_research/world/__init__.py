"""Procedural shapes world: scenes, rendering, captions, sound, analysis and datasets.

Every clip is generated from a seed, so its facts are known exactly; ``analyze`` reads
the same facts back from pixels to score generated videos.
"""

from .analyze import Analysis, ObjectAnalysis, analyze
from .captions import caption_for, parse_prompt, prompt_for
from .dataset import eval_seed, held_out_prompts, held_out_scenes, make_clips, prompt_of, train_seed
from .render import SHAPE_SWAPS, SIZES, Clip, ObjectTruth, Truth, edited, render_clip, sample_scene
from .scene import Scene, SceneObject
from .sound import COLOR_PITCH_HZ, render_sound
from .vocabulary import BACKGROUNDS, COLORS, MOTIONS, SHAPES

__all__ = [
    "Analysis", "ObjectAnalysis", "analyze",
    "caption_for", "parse_prompt", "prompt_for",
    "eval_seed", "held_out_prompts", "held_out_scenes", "make_clips", "prompt_of", "train_seed",
    "BACKGROUNDS", "COLORS", "MOTIONS", "SHAPE_SWAPS", "SHAPES", "SIZES",
    "Clip", "ObjectTruth", "Scene", "SceneObject", "Truth", "edited", "render_clip", "sample_scene",
    "COLOR_PITCH_HZ", "render_sound",
]
