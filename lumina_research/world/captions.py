"""Natural-language captions for scenes, canonical prompts, and a parser for both.

Training captions are varied (several phrasings per fact, optional adjectives, shuffled
object order) so a model learns the facts rather than one sentence pattern.  Evaluation
uses ``prompt_for`` (one canonical phrasing) and ``parse_prompt`` to recover what a
prompt asked for.  Every phrasing keeps the fact's key word (colour, shape, background
name and a motion keyword) so the parser can read captions as well as prompts.
"""

from __future__ import annotations

import re

import numpy as np

from .scene import Scene
from .vocabulary import BACKGROUNDS, COLORS, MOTIONS, SHAPES

_MOTION_PHRASES = {
    "left": ["moving left", "drifting to the left", "sliding leftward", "travelling left", "heading left"],
    "right": ["moving right", "drifting to the right", "sliding rightward", "travelling right", "heading right"],
    "up": ["moving up", "drifting upward", "floating upwards", "rising up", "gliding up"],
    "down": ["moving down", "sinking downward", "falling down", "drifting downwards", "sliding down"],
    "diagonal": ["moving diagonally", "drifting diagonally", "gliding diagonally {heading}",
                 "travelling diagonally {heading}"],
    "bouncing": ["bouncing around", "bouncing off the walls", "bouncing back and forth",
                 "bouncing around the frame"],
    "still": ["standing still", "not moving", "staying stationary", "sitting motionless", "resting still"],
}

_HEADING_WORDS = {"up-left": "up and to the left", "up-right": "up and to the right",
                  "down-left": "down and to the left", "down-right": "down and to the right"}

_SPEED_WORDS = {"slow": ["slowly", "gently"], "fast": ["quickly", "rapidly"]}

_SIZE_WORDS = {"small": ["small", "little", "tiny"], "large": ["large", "big"]}

_BACKDROP_WORDS = ["background", "backdrop"]

# Sentence frames; {objects} is the object clause list, {bg} the background colour name.
_TEMPLATES = [
    "{objects} on a {bg} {backdrop}",
    "{Objects} on a {bg} {backdrop}.",
    "On a {bg} {backdrop}, {objects}.",
    "{Objects} against a {bg} {backdrop}.",
    "A plain {bg} {backdrop} with {objects}.",
    "Over a solid {bg} {backdrop}, {objects}.",
    "{objects}, {bg} {backdrop}",
    "Simple animation: {objects} on a {bg} {backdrop}.",
]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _object_clause(obj, rng: np.random.Generator) -> str:
    """e.g. 'a small red circle drifting to the left' with optional size and speed words."""
    words = []
    if rng.random() < 0.5:
        words.append(str(rng.choice(_SIZE_WORDS[obj.size])))
    words += [obj.color, obj.shape]
    phrase = str(rng.choice(_MOTION_PHRASES[obj.motion]))
    phrase = phrase.format(heading=_HEADING_WORDS.get(obj.heading or "", "")).strip()
    if obj.motion not in ("still", "bouncing") and rng.random() < 0.4:
        if obj.speed < 0.2:
            phrase += " " + str(rng.choice(_SPEED_WORDS["slow"]))
        elif obj.speed > 0.4:
            phrase += " " + str(rng.choice(_SPEED_WORDS["fast"]))
    return f"{_article(words[0])} {' '.join(words)} {phrase}"


def _join(clauses: list[str]) -> str:
    if len(clauses) == 1:
        return clauses[0]
    return ", ".join(clauses[:-1]) + " and " + clauses[-1]


def caption_for(scene: Scene, rng: np.random.Generator) -> str:
    """A varied natural caption stating every object's colour, shape and motion and the background."""
    order = rng.permutation(len(scene.objects))
    objects = _join([_object_clause(scene.objects[i], rng) for i in order])
    template = str(rng.choice(_TEMPLATES))
    return template.format(objects=objects, Objects=objects[0].upper() + objects[1:], bg=scene.background,
                           backdrop=str(rng.choice(_BACKDROP_WORDS)))


def scene_caption(scene: Scene) -> str:
    """The caption a rendered clip of ``scene`` carries: its phrasing is drawn from the scene's seed, so a
    scene edited in one fact (e.g. its motion) keeps every other word."""
    return caption_for(scene, np.random.default_rng([scene.seed, 1]))


_CANONICAL_MOTION = {"left": "moving left", "right": "moving right", "up": "moving up", "down": "moving down",
                     "diagonal": "moving diagonally", "bouncing": "bouncing around", "still": "standing still"}


def prompt_for(background: str, objects) -> str:
    """Canonical prompt, e.g. 'a red circle moving right on a blue background'.

    ``objects`` are fact dicts (keys color, shape, motion and optionally size) or objects
    with those attributes.
    """
    clauses = []
    for obj in objects:
        get = obj.get if isinstance(obj, dict) else (lambda k, o=obj: getattr(o, k, None))
        words = [w for w in (get("size"), get("color"), get("shape")) if w]
        clauses.append(f"{_article(words[0])} {' '.join(words)} {_CANONICAL_MOTION[get('motion')]}")
    return f"{_join(clauses)} on a {background} background"


def _alternation(names) -> str:
    return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))


_BG_ALIASES = {"grey": "gray", "dark-green": "dark green"}
_BG_RE = re.compile(rf"\b({_alternation(list(BACKGROUNDS) + list(_BG_ALIASES))})\s+(?:background|backdrop)\b")
_SIZE_LOOKUP = {w: size for size, words in _SIZE_WORDS.items() for w in words}
_OBJ_RE = re.compile(rf"\b(?:({_alternation(_SIZE_LOOKUP)})\s+)?({_alternation(COLORS)})\s+"
                     rf"({_alternation(SHAPES)})s?\b")
# Checked in order: diagonal before left/right/up/down because its phrases contain them.
_MOTION_RES = [
    ("still", re.compile(r"\b(?:still|stationary|motionless|static|not moving|at rest)\b")),
    ("bouncing", re.compile(r"\bbounc\w*")),
    ("diagonal", re.compile(r"\bdiagonal\w*")),
    ("left", re.compile(r"\bleft\w*")),
    ("right", re.compile(r"\bright\w*")),
    ("up", re.compile(r"\b(?:up|upward|upwards|rising|rises)\b")),
    ("down", re.compile(r"\b(?:down|downward|downwards|falling|falls|sinking|sinks)\b")),
]
assert {m for m, _ in _MOTION_RES} == set(MOTIONS)


def parse_prompt(text: str) -> dict:
    """Extract facts from a prompt or caption.

    Returns ``{"background": name or None, "objects": [{"color", "shape", "size", "motion"}]}``
    where size/motion are None when the text does not say.  Each object's motion is read
    from the words between it and the next object.
    """
    low = text.lower()
    background = None
    bg = _BG_RE.search(low)
    if bg:
        background = _BG_ALIASES.get(bg.group(1), bg.group(1))
        low = low[:bg.start()] + " " * (bg.end() - bg.start()) + low[bg.end():]
    matches = list(_OBJ_RE.finditer(low))
    objects = []
    for k, m in enumerate(matches):
        tail = low[m.end():matches[k + 1].start() if k + 1 < len(matches) else len(low)]
        motion = next((name for name, pattern in _MOTION_RES if pattern.search(tail)), None)
        objects.append({"color": m.group(2), "shape": m.group(3),
                        "size": _SIZE_LOOKUP.get(m.group(1)) if m.group(1) else None, "motion": motion})
    return {"background": background, "objects": objects}

