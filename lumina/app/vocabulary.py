"""The shape world's vocabulary: what a model trained on it knows (its vocabulary.json) and every word of a prompt it
was never trained on, for the notice under the prompt (before the run) and in the status.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from lumina.pipelines.loading import TINY_DIR

# Words a prompt may use for a colour, a shape or a motion in general English; what the model knows comes
# from its vocabulary.json, these only find the words it does not know.
COLOUR_WORDS = ("red", "green", "blue", "yellow", "purple", "orange", "white", "cyan", "pink", "black", "gray",
                "grey", "navy", "maroon", "brown", "magenta", "violet", "gold", "golden", "silver", "beige", "teal",
                "lime", "olive", "indigo", "turquoise", "lavender", "crimson", "cream", "ivory", "khaki")
SHAPE_WORDS = ("circle", "square", "triangle", "star", "rectangle", "hexagon", "pentagon", "octagon", "oval",
               "ellipse", "heart", "diamond", "cross", "ring", "ball", "cube", "sphere", "dot", "arrow", "crescent")
MOTION_WORDS = ("spinning", "rotating", "rolling", "zigzagging", "orbiting", "circling", "growing", "shrinking",
                "pulsing", "jumping", "flashing", "blinking", "wobbling", "swaying", "dancing", "shaking",
                "exploding", "flying", "spiralling", "spiraling", "expanding", "fading", "morphing", "swimming")
TONE_WORDS = ("dark", "light", "bright", "pale")
# The other words of the world's training captions (lumina_research.world.captions: its sentence frames, motion
# phrases, size and speed words), and plain English words that name nothing: a prompt may use these freely.
CAPTION_WORDS = frozenset("""
a an the on over against with and plain solid simple animation background backdrop small little tiny large big
slowly gently quickly rapidly moving drifting sliding travelling traveling heading floating rising gliding sinking
falling standing staying sitting resting not to of off back forth around frame walls leftward rightward upward
upwards downward downwards diagonally stationary motionless still left right up down bouncing dark blue
one two three shape shapes object objects in at is are it its that this there very while across
""".split())


def model_vocabulary(model: str) -> Optional[Dict[str, Tuple[str, ...]]]:
    """What a model trained on the shape world (lumina_research.train, e.g. the bundled tiny model) knows: its
    colours, shapes, backgrounds and motions, from the vocabulary.json training writes next to its weights
    (the app never imports the research code); other models (the release) have no such list: None."""
    path = (TINY_DIR if model == "tiny" else Path(model)) / "vocabulary.json"
    if not path.exists():
        return None
    return {kind: tuple(words) for kind, words in json.loads(path.read_text()).items()}


def vocabulary_text(vocab: Optional[Dict[str, Tuple[str, ...]]]) -> str:
    """One line for next to the prompt ("" for a model without a list)."""
    if not vocab:
        return ""
    return ("This model knows " + "; ".join(f"{len(words)} {kind}: {', '.join(words)}"
                                             for kind, words in vocab.items()) + ".")


def unseen_words(prompt: str, vocab: Optional[Dict[str, Tuple[str, ...]]]) -> List[str]:
    """Every word of `prompt` the model was not trained on ([] for a model without a list): a colour, shape,
    background or motion outside its vocabulary is named with its kind ("hexagon (shape)", "white background"),
    any other word outside its vocabulary and its captions' words as it is ("dog", "beach"). Its captions call the
    navy background "blue" or "dark blue" too."""
    if not vocab or not prompt:
        return []
    words = re.findall(r"[a-z]+", str(prompt).lower())
    known = set(CAPTION_WORDS) | {w for names in vocab.values() for name in names for w in name.split()}
    unseen: List[str] = []
    for i, word in enumerate(words):
        stem = word[:-1] if word.endswith("s") and word[:-1] in SHAPE_WORDS else word
        if word in COLOUR_WORDS:
            name = f"{words[i - 1]} {word}" if i and words[i - 1] in TONE_WORDS else word
            name = name.replace("grey", "gray")
            if any(w in ("background", "backdrop") for w in words[i + 1:i + 3]):
                if name not in vocab["backgrounds"] and name not in ("blue", "dark blue"):
                    unseen.append(f"{name} background")
            elif name not in vocab["colours"]:
                unseen.append(f"{name} (colour)")
        elif stem in SHAPE_WORDS and stem not in vocab["shapes"]:
            unseen.append(f"{stem} (shape)")
        elif word in MOTION_WORDS and word not in vocab["motions"]:
            unseen.append(f"{word} (motion)")
        elif stem not in known and word not in TONE_WORDS:
            unseen.append(word)
    return list(dict.fromkeys(unseen))


def vocabulary_notice(prompt: str, vocab: Optional[Dict[str, Tuple[str, ...]]]) -> str:
    """A warning when the prompt asks for something the model never saw; "" otherwise."""
    unseen = unseen_words(prompt, vocab)
    if not unseen:
        return ""
    return (f"⚠ Not in this model's training: {', '.join(unseen)}. It draws only what it was trained on (the "
            f"words listed under the prompt), so these words will be ignored or drawn as something it knows.")
