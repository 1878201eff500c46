"""What the app's buttons do, as plain Python that tests call directly.

`Studio` owns the model holder and the output folder. Its public methods are the app's endpoints:
their keyword parameters are the API's parameter names, user mistakes come back as `gr.Error` with
the validation message (never a traceback), and a stopped run comes back as a "stopped" status.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import inspect
import json
import logging
import math
import queue
import random
import re
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import gradio as gr
import numpy as np

from lumina import validation as V
from lumina.errors import GenerationInterrupted, InvalidRequestError, LuminaError
from lumina.app import zerogpu
from lumina.app.state import ClientQuota, ModelHolder, OutputStore, say
from lumina.generation import GenerationRequest, ResolvedRequest, resolve_request
from lumina.media import atomic_output, read_audio, read_video, write_mp4
from lumina.pipelines.defaults import ModelDefaults
from lumina.pipelines.loading import TINY_DIR
from lumina.pipelines.memory import release_memory
from lumina.sampling.schedule import TimeAware, stages
from lumina.syntax import format_schedule, parse_numbers, parse_resolution, parse_schedule
from lumina.settings import SETTINGS

log = logging.getLogger("lumina.app")

EXAMPLES_FILE = SETTINGS.examples_file
SCHEDULES = ("multiscale", "1x2", "2x2", "2x4")
CUSTOM = "custom"
COMPARE_SCHEDULES = ("1x2", "2x2", "2x4", "multiscale")
LENGTH_MODES = ("seconds", "frames")
MAX_GRID_SIDE = 5
MAX_JOB_SECONDS = 900.0  # one job (a video, a comparison, a grid) may hold the worker this long, on any device
MAX_JOBS_PER_CLIENT = 2  # queued or running, per Gradio session
SOUND_NOTE = "Sound needs a video-to-audio (V2A) model; none is available yet, so this is off."

# Every parameter of `Studio.generate` that describes the video (the API's names, in UI order).
SETTING_NAMES = (
    "prompt", "negative_prompt", "resolution", "custom_size", "width", "height", "length_mode", "duration",
    "frames", "fps", "steps", "guidance", "guidance_until", "time_shift", "shared_noise", "motion",
    "neg_motion", "neg_motion_until", "neg_motion_after", "schedule", "custom_schedule", "seed", "randomize_seed",
    "add_sound", "model", "memory_mode",
)


@contextlib.contextmanager
def _as_user_error(name: str):
    try:
        yield
    except gr.Error:
        raise
    except (LuminaError, ValueError) as err:
        raise gr.Error(str(err), print_exception=False) from None
    except Exception as err:  # the server keeps running; details go to its log only
        log.exception("unexpected error in %s", name)
        raise gr.Error(f"unexpected error ({type(err).__name__}: {err}); details are in the server log",
                       print_exception=False) from None


def user_errors(fn):
    """Turn validation errors into gr.Error (shown as a message) and anything else into a short gr.Error;
    for a generator, also the errors raised while it runs."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def generator(*args, **kwargs):
            with _as_user_error(fn.__name__):
                yield from fn(*args, **kwargs)

        return generator

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _as_user_error(fn.__name__):
            return fn(*args, **kwargs)

    return wrapper


def one_job(fn):
    """An endpoint that runs a job: when it ends, however it ends, the client's queue ticket is returned."""

    signature = inspect.signature(fn)

    def release(self, args, kwargs):  # Gradio passes the request by position or by name
        self.quota.release(_owner(signature.bind(self, *args, **kwargs).arguments.get("request")))

    if inspect.isgeneratorfunction(fn):  # a streamed job ends when its last update is sent, not when it starts
        @functools.wraps(fn)
        def streamed(self, *args, **kwargs):
            try:
                yield from fn(self, *args, **kwargs)
            finally:
                release(self, args, kwargs)

        return streamed

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        try:
            return fn(self, *args, **kwargs)
        finally:
            release(self, args, kwargs)

    return wrapper


def notify(kind: str, message: str) -> None:
    """gr.Info / gr.Warning when inside an event; silently skipped elsewhere (direct calls)."""
    try:
        with warnings.catch_warnings():  # outside an event Gradio turns these into Python warnings
            warnings.simplefilter("ignore", UserWarning)
            (gr.Warning if kind == "warning" else gr.Info)(message)
    except Exception:
        pass


def load_examples(path: Path = EXAMPLES_FILE) -> List[List[Any]]:
    """[[prompt, seed], ...] from examples/prompts.json ([] if missing or unreadable)."""
    try:
        items = json.loads(Path(path).read_text())
        return [[str(e["prompt"]), int(e.get("seed", 0))] for e in items]
    except (OSError, ValueError, KeyError, TypeError):
        log.warning("no examples read from %s", path)
        return []


# ---------------------------------------------------------------- the shape world's vocabulary

# Words a prompt may use for a colour, a shape or a motion in general English; what the model knows comes
# from its vocabulary.json, these only find the words it does not know.
COLOUR_WORDS = ("red", "green", "blue", "yellow", "purple", "orange", "white", "cyan", "pink", "black", "gray",
                "grey", "navy", "maroon", "brown", "magenta", "violet", "gold", "golden", "silver", "beige", "teal",
                "lime", "olive", "indigo", "turquoise", "lavender", "crimson", "cream", "ivory", "khaki")
SHAPE_WORDS = ("circle", "square", "triangle", "star", "rectangle", "hexagon", "pentagon", "octagon", "oval",
               "ellipse", "heart", "diamond", "cross", "ring", "ball", "cube", "sphere", "dot", "arrow", "crescent",
               "cat", "dog", "car", "bird", "person", "tree", "flower", "fish")
MOTION_WORDS = ("spinning", "rotating", "rolling", "zigzagging", "orbiting", "circling", "growing", "shrinking",
                "pulsing", "jumping", "flashing", "blinking", "wobbling", "swaying", "dancing", "shaking",
                "exploding", "flying", "spiralling", "spiraling", "expanding", "fading", "morphing", "swimming")
TONE_WORDS = ("dark", "light", "bright", "pale")


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
    """The colours, shapes, backgrounds and motions `prompt` names that the model was not trained on
    ([] for a model without a list). Its captions call the navy background "blue" or "dark blue" too."""
    if not vocab or not prompt:
        return []
    words = re.findall(r"[a-z]+", str(prompt).lower())
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
    return list(dict.fromkeys(unseen))


def vocabulary_notice(prompt: str, vocab: Optional[Dict[str, Tuple[str, ...]]]) -> str:
    """A warning when the prompt asks for something the model never saw; "" otherwise."""
    unseen = unseen_words(prompt, vocab)
    if not unseen:
        return ""
    return (f"⚠ Not in this model's training: {', '.join(unseen)}. It draws only what it was trained on, "
            f"so it will pick something from its own vocabulary instead.")


# ---------------------------------------------------------------- pure helpers (no model needed)

def _g(v: float) -> str:
    return f"{v:g}"


def cfg_schedule(guidance: float, until: float) -> TimeAware:
    """Guidance `guidance` while t < until, none after: (20.0, (0.2, 0.0)) (until >= 1: always; <= 0: never)."""
    if guidance == 0 or until <= 0:
        return 0.0
    return guidance if until >= 1 else (guidance, (until, 0.0))


def neg_motion_schedule(neg_motion: float, until: float, after: float) -> TimeAware:
    """Negative motion score while t < until, then ``after``: (2.0, (0.05, 6.0)).

    The Generate tab starts from the model's default negative score, as the CLI does (the release's "2, 6@0.05";
    the tiny model's constant 20); the motion explorer passes the positive score (the paper's "4 / 2 then 4"
    ablation: the gap acts early only)."""
    if until >= 1:
        return neg_motion
    return after if until <= 0 else (neg_motion, (until, after))


def patch_schedule(schedule: str, custom_schedule: str, named: Dict[str, TimeAware]) -> TimeAware:
    """The Generate tab's schedule choice (a name, or CUSTOM with its text) as a typed patch schedule."""
    if schedule == CUSTOM:
        return parse_schedule(custom_schedule or "", "patch", named)
    if schedule not in named:
        raise InvalidRequestError(f"schedule={schedule!r}: choose one of {list(named) + [CUSTOM]}")
    return named[schedule]


def check_schedule_text(schedule: str, custom_schedule: str = "", supported=None,
                        named: Optional[Dict[str, TimeAware]] = None) -> str:
    """Markdown for the live check under the schedule box: what the schedule does, or why it cannot run.
    `supported`: the model's `check_patch_sizes`."""
    try:
        parsed = patch_schedule(schedule, custom_schedule, named or ModelDefaults().named_schedules())
        parts = stages(parsed)
        if supported is not None:
            supported([v for _, v in parts])
    except ValueError as err:
        return f"⚠ {err}"
    words = [f"{v} from t=0" if i == 0 else f"{v} from t={_g(t)}" for i, (t, v) in enumerate(parts)]
    return f"✓ `{format_schedule(parsed)}`: {' → '.join(words)}"


def size_notice(custom_size: bool, width, height, max_resolution: Optional[int] = None) -> str:
    """Markdown under the custom size: the snapped size, and whether the model accepts it."""
    if not custom_size:
        return ""
    try:
        w, h = int(round(V.as_float("width", width))), int(round(V.as_float("height", height)))
    except InvalidRequestError as err:
        return f"⚠ {err}"
    sw, sh = V.snap_size(w), V.snap_size(h)
    note = f"✓ {w}x{h}"
    if (sw, sh) != (w, h):
        note = f"Note: {w}x{h} will be snapped to **{sw}x{sh}** (sides must be multiples of {V.SIZE_MULTIPLE})"
    if max_resolution is not None:
        try:
            V.check_size(sw, sh, max_resolution)
        except InvalidRequestError as err:
            note += f"  \n⚠ {err}"
    return note


def frames_notice(length_mode: str, duration, frames, fps) -> str:
    try:
        fps = V.as_int("fps", fps)
        if length_mode == "seconds":
            n = V.frames_for(V.as_float("duration", duration), fps)
            return f"Note: {_g(duration)} s at {fps} fps → **{n} frames** ({n / fps:.2f} s; frames come in multiples of 8)"
        n = V.as_int("frames", frames)
        V.check_frames(n)
        return f"✓ {n} frames = {n / fps:.2f} s at {fps} fps"
    except ValueError as err:
        return f"⚠ {err}"


@functools.lru_cache(maxsize=8)
def _all_sizes(max_resolution: int) -> Tuple[Tuple[int, int], ...]:
    return tuple(V.supported_sizes(max_resolution, min_side=V.SIZE_MULTIPLE))


RATIOS = ((1, 1), (16, 9), (9, 16), (4, 3), (3, 4), (2, 1), (1, 2))


def size_choices(defaults: ModelDefaults) -> List[Tuple[str, str]]:
    """(label, "WxH") for the dropdown: per common aspect ratio the largest size the model supports and a
    quarter-area one, plus the model's default size."""
    budget = (defaults.max_resolution // V.SIZE_MULTIPLE) ** 2
    sizes = _all_sizes(defaults.max_resolution)
    picked = {(defaults.width, defaults.height): "default"}
    for rw, rh in RATIOS:
        for fraction, tag in ((1.0, "full"), (0.25, "fast")):
            fits = [(w, h) for w, h in sizes
                    if (w // 32) * (h // 32) <= fraction * budget and abs(math.log((w / h) / (rw / rh))) < 0.1]
            if fits:
                best = max(fits, key=lambda s: (s[0] * s[1], -abs(math.log((s[0] / s[1]) / (rw / rh)))))
                picked.setdefault(best, f"{rw}:{rh}")
    ordered = sorted(picked, key=lambda s: (-s[0] * s[1], -s[0]))
    return [(f"{w}x{h} ({picked[(w, h)]})", f"{w}x{h}") for w, h in ordered]


def ui_defaults(defaults: ModelDefaults, model: Optional[str] = None) -> Dict[str, Any]:
    """The Generate tab's starting values for a model (also the API's defaults)."""
    preset = defaults.sample_config()
    cfg = stages(preset.cfg)
    guidance = float(cfg[0][1])
    guidance_until = next((t for t, v in cfg[1:] if float(v) == 0.0), 1.0)
    neg = stages(preset.neg_motion)
    motion = float(stages(preset.motion)[0][1])
    multiscale = defaults.named_schedules()["multiscale"]
    if preset.patch == multiscale:
        schedule, custom = "multiscale", ""
    elif isinstance(preset.patch, str) and preset.patch in SCHEDULES:
        schedule, custom = preset.patch, ""
    else:
        schedule, custom = CUSTOM, format_schedule(preset.patch)
    return {
        "prompt": "", "negative_prompt": "", "resolution": f"{defaults.width}x{defaults.height}",
        "custom_size": False, "width": defaults.width, "height": defaults.height,
        "length_mode": "frames", "duration": round(defaults.frames / defaults.fps, 3), "frames": defaults.frames,
        "fps": defaults.fps, "steps": preset.steps, "guidance": guidance,
        "guidance_until": float(guidance_until), "time_shift": preset.time_shift,
        "shared_noise": preset.shared_noise, "motion": motion,
        "neg_motion": float(neg[0][1]), "neg_motion_until": float(neg[1][0]) if len(neg) > 1 else 1.0,
        "neg_motion_after": float(neg[-1][1]),
        "schedule": schedule, "custom_schedule": custom or format_schedule(multiscale), "seed": 0,
        "randomize_seed": False, "add_sound": False, "model": model, "memory_mode": "none",
    }


def build_request(values: Dict[str, Any], defaults: ModelDefaults,
                  sound_available: bool = False) -> Tuple[ResolvedRequest, List[str]]:
    """Generate-tab values -> a typed request, resolved (and so checked) once, and notices (snapped size, rounded
    frames). Only what the form adds is handled here (custom size, seconds, guidance until t, the schedule choice);
    every value's rule is applied by `resolve_request`."""
    notices: List[str] = []
    if values["custom_size"]:
        if values.get("width") is None or values.get("height") is None:
            raise InvalidRequestError("custom size: give both width and height")
        w = int(round(V.as_float("width", values["width"])))
        h = int(round(V.as_float("height", values["height"])))
        width, height = V.snap_size(w), V.snap_size(h)
        if (width, height) != (w, h):
            notices.append(f"size {w}x{h} snapped to {width}x{height} (multiples of {V.SIZE_MULTIPLE})")
    else:
        width, height = parse_resolution(str(values["resolution"]).split(" ")[0])
    fps = V.as_int("fps", values["fps"])
    if values["length_mode"] == "seconds":
        seconds = V.as_float("duration", values["duration"])
        frames = V.frames_for(seconds, fps)
        if abs(frames / fps - seconds) > 1e-6:
            notices.append(f"{_g(seconds)} s at {fps} fps rounded to {frames} frames ({frames / fps:.2f} s)")
    elif values["length_mode"] == "frames":
        frames = V.as_int("frames", values["frames"])
    else:
        raise InvalidRequestError(f"length_mode={values['length_mode']!r}: choose one of {list(LENGTH_MODES)}")
    seed = values.get("seed")
    if values["randomize_seed"] or seed is None or seed == "":
        seed = None  # resolve_request draws one
    if values.get("add_sound") and not sound_available:
        raise InvalidRequestError(SOUND_NOTE)
    number = lambda name, label: V.as_float(label, values[name])  # noqa: E731
    req = GenerationRequest(
        prompt=values.get("prompt"), negative_prompt=str(values.get("negative_prompt") or ""), width=width,
        height=height, frames=frames, fps=fps,
        schedule=patch_schedule(values["schedule"], values.get("custom_schedule"), defaults.named_schedules()),
        motion=number("motion", "motion"),
        neg_motion=neg_motion_schedule(number("neg_motion", "negative motion"),
                                       number("neg_motion_until", "negative motion until"),
                                       number("neg_motion_after", "negative motion after")),
        cfg=cfg_schedule(number("guidance", "guidance"), number("guidance_until", "guidance until")),
        steps=V.as_int("steps", values["steps"]), time_shift=number("time_shift", "time shift"),
        shared_noise=number("shared_noise", "shared noise"),
        seed=None if seed is None else V.as_int("seed", seed), audio=bool(values.get("add_sound")),
    )
    return resolve_request(req, defaults), notices


def result_status(settings: Dict[str, Any]) -> str:
    """The plain-text status line of a finished video, from its settings (the sidecar, measured motion)."""
    r, t, measured = settings["request"], settings["timings"], settings.get("measured_motion")
    motion = "" if measured is None else f" · measured motion {measured:.1f}"
    return (f"✓ seed {r['seed']} · {r['width']}x{r['height']} · {r['frames']} frames @ {r['fps']} fps · "
            f"{settings['patch_schedule']} · {t['total']:.1f} s (denoise {t.get('denoise', 0):.1f} s){motion}")


def settings_caption(settings: Dict[str, Any]) -> str:
    r = settings.get("request", {})
    return (f"seed {r.get('seed')} · {r.get('width')}x{r.get('height')} · {r.get('frames')}f · "
            f"{settings.get('patch_schedule', '')} · {str(r.get('prompt', ''))[:60]}")


@dataclass
class ScaleResult:
    """One schedule of a comparison."""

    schedule: str
    video: str
    sidecar: str
    seconds: float
    denoise: float
    relative: float
    reference: str
    tokens_per_step: Dict[str, int]
    motion: Optional[float]

    def details(self) -> List[str]:
        tokens = ", ".join(f"{k}: {v}" for k, v in self.tokens_per_step.items())
        motion = "n/a" if self.motion is None else f"{self.motion:.2f}"
        return [f"denoise {self.denoise:.2f} s ({self.relative:.2f}x {self.reference}) · "
                f"whole clip {self.seconds:.2f} s",
                f"tokens/step {tokens}", f"measured motion {motion}"]

    @property
    def label(self) -> str:
        return " · ".join([self.schedule] + self.details())


@dataclass
class CompareState:
    """A comparison so far: the finished schedules, the one running now with its progress line, the status and,
    at the end (`done`), the side-by-side mp4."""

    results: List[ScaleResult]
    running: Optional[str]
    progress: str
    status: str
    side_by_side: Optional[str] = None
    done: bool = False


class _Relay:
    """A progress callable (like gr.Progress) that hands each update to the comparison's event queue."""

    def __init__(self, events: "queue.Queue", name: str):
        self.events, self.name = events, name

    def __call__(self, fraction=None, desc: str = "") -> None:
        self.events.put(("progress", self.name, desc))


@dataclass
class GridCell:
    """One (positive, negative) motion pair of the explorer."""

    positive: float
    negative: float
    video: str
    sidecar: str
    measured: Optional[float]
    tiles: Optional[str] = None

    @property
    def gap(self) -> float:
        return self.positive - self.negative

    @property
    def label(self) -> str:
        m = "n/a" if self.measured is None else f"{self.measured:.2f}"
        return f"motion {_g(self.positive)} / negative {_g(self.negative)} → measured {m}"


MEASURED_MOTION_NOTE = ("Measured motion: the mean optical-flow magnitude of the result (Farneback, the release's "
                        "labelling protocol), so flicker and noise count as motion too.")


def motion_grid_defaults(defaults: ModelDefaults) -> Tuple[str, str]:
    """(positive, negative) scores for the explorer in the model's own regime: its negative score (the tiny
    model's 20, the release's 2) and positives spread around its default motion score, so measured motion
    rises across a row."""
    preset = defaults.sample_config()
    motion = float(stages(preset.motion)[0][1])
    negative = float(stages(preset.neg_motion)[0][1])
    positives = sorted({round(motion / 3, 1), motion, 2 * motion})
    return ", ".join(_g(v) for v in positives), _g(negative)


def measure_motion(video_path) -> Optional[float]:
    """Measured motion score of a generated video (None for a single frame)."""
    from lumina.motion import motion_score

    frames, fps = read_video(video_path)
    if len(frames) < 2:
        return None
    return float(motion_score(frames, fps or 1.0))


def write_tiles(video_path, min_side: int = 192) -> str:
    """A 2x2 contact sheet (first, 1/3, 2/3, last frame) next to the video, so motion shows in a still image."""
    from PIL import Image

    frames, _ = read_video(video_path)
    picks = [frames[round(k * (len(frames) - 1) / 3)] for k in range(4)]
    h, w = picks[0].shape[:2]
    scale = max(1, -(-min_side // (2 * min(h, w))))
    gap = 2
    sheet = Image.new("RGB", (2 * w * scale + gap, 2 * h * scale + gap), (255, 255, 255))
    for k, frame in enumerate(picks):
        tile = Image.fromarray(frame).resize((w * scale, h * scale), Image.NEAREST)
        sheet.paste(tile, ((k % 2) * (w * scale + gap), (k // 2) * (h * scale + gap)))
    out = Path(video_path).with_suffix(".tiles.png")
    with atomic_output(out) as tmp:
        sheet.save(tmp, format="PNG")
    return str(out)


def write_waveform(video_path, width: int = 800, height: int = 160) -> str:
    """A PNG of the video's soundtrack (peak envelope per pixel column, a tick per second) next to it."""
    from PIL import Image, ImageDraw

    audio, rate = read_audio(video_path)
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    mid, scale = height // 2, (height // 2 - 4) / max(float(abs(audio).max()), 1e-6)
    edges = [round(k * len(audio) / width) for k in range(width + 1)]
    for x in range(width):
        chunk = audio[edges[x]:max(edges[x + 1], edges[x] + 1)]
        draw.line([(x, mid - float(chunk.max()) * scale), (x, mid - float(chunk.min()) * scale)], fill=(40, 90, 200))
    seconds = len(audio) / rate
    for k in range(int(seconds) + 1):
        x = min(width - 1, round(k / seconds * width)) if seconds else 0
        draw.line([(x, height - 8), (x, height)], fill=(0, 0, 0))
        draw.text((min(x + 2, width - 24), height - 18), f"{k} s", fill=(0, 0, 0))
    draw.line([(0, mid), (width, mid)], fill=(190, 190, 190))
    out = Path(video_path).with_suffix(".wave.png")
    image.save(out)
    return str(out)


def side_by_side(results: Sequence["ScaleResult"], out_path, min_side: int = 192) -> str:
    """One mp4 of the compared videos next to each other (PyAV, via lumina.media.write_mp4), each under a band
    naming its schedule and denoising time; the shortest clip sets the length."""
    from PIL import Image, ImageDraw, ImageFont

    clips = [read_video(r.video) for r in results]
    fps = clips[0][1]
    length = min(len(frames) for frames, _ in clips)
    h, w = clips[0][0].shape[1:3]
    scale = max(1, -(-min_side // min(h, w)))
    band, gap = 28, 4
    font = ImageFont.load_default(size=14)
    canvas = Image.new("RGB", (len(clips) * (w * scale + gap) - gap, h * scale + band), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for k, r in enumerate(results):  # under the videos, where a player's own labels do not cover it
        draw.text((k * (w * scale + gap) + 4, h * scale + 6), f"{r.schedule} · denoise {r.denoise:.2f} s",
                  fill=(0, 0, 0), font=font)
    frames = []
    for t in range(length):
        frame = canvas.copy()
        for k, (clip, _) in enumerate(clips):
            tile = Image.fromarray(clip[t]).resize((w * scale, h * scale), Image.NEAREST)
            frame.paste(tile, (k * (w * scale + gap), 0))
        frames.append(np.asarray(frame))
    write_mp4(out_path, np.stack(frames), int(round(fps)) or 1)
    return str(out_path)


# ---------------------------------------------------------------- the endpoints

class Studio:
    """The app's server side: one model holder, one output folder, the endpoints."""

    def __init__(self, model: str, outputs_dir, keep: int = 100, extra_models: Sequence[str] = (),
                 loader=None, preload: bool = True, audio_fn=None, v2a_dir: Optional[Path] = None,
                 max_job_seconds: float = MAX_JOB_SECONDS, max_jobs_per_client: int = MAX_JOBS_PER_CLIENT,
                 queue_size: int = 16):
        kwargs = {} if loader is None else {"loader": loader}
        self.holder = ModelHolder(model, extra_models, **kwargs)
        self.holder.audio_fn = audio_fn  # a V2A model's (frames, fps, prompt) -> waveform; None: no sound
        self.v2a_dir = v2a_dir  # the Sound tab's V2A model folder; None: no Sound tab
        self.store = OutputStore(Path(outputs_dir), keep=max(int(keep), MAX_GRID_SIDE ** 2))
        self.max_job_seconds = float(max_job_seconds)
        # a queued job waits at most for the jobs ahead of it, each within the limit
        self.quota = ClientQuota(max_jobs_per_client, expire_s=(queue_size + 1) * self.max_job_seconds)
        self.holder.control.stop_file = self.store.root / f".stop-{self.holder.id}"
        if preload:
            self.holder.get()

    # -- what the UI is built from
    @property
    def sound_available(self) -> bool:
        return self.holder.audio_fn is not None

    def model_defaults(self, model: Optional[str] = None) -> ModelDefaults:
        return self.holder.get(model)[1]

    def supported_patches(self, model: Optional[str] = None) -> List[str]:
        pipe, _ = self.holder.get(model)
        return [p.name for p in pipe.transformer.supported_patch_sizes()]

    def schedule_choices(self, model: Optional[str] = None) -> List[str]:
        supported = set(self.supported_patches(model))
        named = self.model_defaults(model).named_schedules()
        ok = [s for s in SCHEDULES if {v for _, v in stages(named[s])} <= supported]
        return ok + [CUSTOM]

    def vocabulary(self, model: Optional[str] = None) -> Optional[Dict[str, Tuple[str, ...]]]:
        return model_vocabulary(model or self.holder.default)

    def prompt_notice(self, prompt: str, model: Optional[str] = None) -> str:
        return vocabulary_notice(prompt, self.vocabulary(model))

    def motion_grid_defaults(self, model: Optional[str] = None) -> Tuple[str, str]:
        return motion_grid_defaults(self.model_defaults(model))

    def defaults_for_ui(self, model: Optional[str] = None) -> Dict[str, Any]:
        values = ui_defaults(self.model_defaults(model), model or self.holder.default)
        if values["schedule"] not in self.schedule_choices(model):
            values["schedule"] = self.schedule_choices(model)[0]
        return values

    def example_results(self, examples: Sequence[Sequence[Any]]) -> List[Dict[str, Any]]:
        """Each (prompt, seed) example rendered once per model at its defaults and kept under
        OUTPUTS/.examples_cache/<model>/ with a contact sheet for its thumbnail: [{prompt, seed, video, sidecar,
        tiles, settings, status}]. Later starts reuse the files."""
        folder = self.store.examples_cache(self.holder.default)
        folder.mkdir(parents=True, exist_ok=True)
        defaults = self.model_defaults()
        shown = []
        for prompt, seed in examples:
            values = {**self.defaults_for_ui(), "prompt": prompt, "seed": int(seed)}
            video = folder / (hashlib.sha1(json.dumps([prompt, int(seed)]).encode()).hexdigest()[:16] + ".mp4")
            if not (video.exists() and video.with_suffix(".json").exists()):
                log.info("rendering the example %r (seed %s) once for this model", prompt, seed)
                req, _ = build_request(values, defaults)
                with self._job(None):
                    side = zerogpu.run_generation(self.holder.id, None, req, str(video))
                side["measured_motion"] = measure_motion(video)
                video.with_suffix(".json").write_text(json.dumps(side, indent=1))
                write_tiles(video)
            settings = {"ui": {**values, "randomize_seed": False}, **json.loads(video.with_suffix(".json").read_text())}
            shown.append({"prompt": prompt, "seed": int(seed), "video": str(video),
                          "sidecar": str(video.with_suffix(".json")), "tiles": str(video.with_suffix(".tiles.png")),
                          "settings": settings, "status": result_status(settings) + " · a cached example"})
        return shown

    # -- shared by the endpoints
    def _values(self, given: Dict[str, Any]) -> Dict[str, Any]:
        values = self.defaults_for_ui(given.get("model"))
        values.update({k: v for k, v in given.items() if v is not None})
        if "seed" in given and given["seed"] is None:
            values["seed"] = None  # an empty seed box means "draw one"
        return values

    def admission(self, n_inputs: int):
        """The validator of a job's event: Gradio calls it with the event's inputs and the request when the job
        joins the queue, before it waits; it refuses a client that already has its quota of jobs."""

        def admit(*args):
            self.quota.admit(_owner(args[-1]))
            return [None] * n_inputs  # no remark on any input

        P = inspect.Parameter
        admit.__signature__ = inspect.Signature(
            [P(f"input{i}", P.POSITIONAL_OR_KEYWORD) for i in range(n_inputs)]
            + [P("request", P.POSITIONAL_OR_KEYWORD, annotation=gr.Request)])
        admit.__annotations__ = {"request": gr.Request}
        return user_errors(admit)

    def check_cost(self, model: Optional[str], requests: Sequence[ResolvedRequest]) -> float:
        """Refuse a job predicted to hold the worker beyond `max_job_seconds` (lumina.costs with this device's
        throughput); returns the prediction in seconds."""
        seconds = sum(self.holder.estimate_seconds(model, req) for req in requests)
        if seconds > self.max_job_seconds:
            raise InvalidRequestError(
                f"this job would take about {seconds:.0f} s on this server ({self.holder.device}); one job may take "
                f"at most {self.max_job_seconds:.0f} s so that others are not kept waiting: use fewer frames, a "
                f"smaller size, fewer steps, fewer cells or the multiscale schedule")
        return seconds

    @contextlib.contextmanager
    def _job(self, request):
        """One job (a video or a batch) at a time: holds the run lock, owns the stop control, cleans up after."""
        control = self.holder.control
        with self.holder.run_lock:
            control.begin(_owner(request))
            try:
                yield control
            finally:
                control.end()
                self.store.cleanup()
                release_memory()

    def _run(self, model: Optional[str], req: ResolvedRequest, progress=None, label: str = "") -> Dict[str, Any]:
        pipe, _ = self.holder.get(model)
        zerogpu.check_budget(pipe, req)
        out = self.store.new_path()
        try:
            return zerogpu.run_generation(self.holder.id, model, req, str(out), progress=progress, label=label)
        except BaseException:
            for leftover in (out, out.with_suffix(".json")):
                leftover.unlink(missing_ok=True)
            raise

    def check_schedule(self, schedule: str, custom_schedule: str = "", model: Optional[str] = None) -> str:
        try:
            pipe, defaults = self.holder.get(model)
        except (LuminaError, ValueError) as err:
            return f"⚠ {err}"
        return check_schedule_text(schedule, custom_schedule, pipe.transformer.check_patch_sizes,
                                   defaults.named_schedules())

    def size_note(self, custom_size: bool, width, height, model: Optional[str] = None) -> str:
        try:
            max_resolution = self.model_defaults(model).max_resolution
        except (LuminaError, ValueError):
            max_resolution = None
        return size_notice(custom_size, width, height, max_resolution)

    def stop(self, owner: Optional[str] = None) -> str:
        """Ask the running job (of this session, when `owner` is given) to stop after its current step."""
        if self.holder.control.request_stop(owner):
            return "■ stopping after the current step…"
        return "nothing of yours is running"

    @user_errors
    @one_job
    def generate(self, prompt: str, negative_prompt: Optional[str] = None, resolution: Optional[str] = None,
                 custom_size: bool = False, width: Optional[float] = None, height: Optional[float] = None,
                 length_mode: Optional[str] = None, duration: Optional[float] = None, frames: Optional[float] = None,
                 fps: Optional[float] = None, steps: Optional[float] = None, guidance: Optional[float] = None,
                 guidance_until: Optional[float] = None, time_shift: Optional[float] = None,
                 shared_noise: Optional[float] = None,
                 motion: Optional[float] = None, neg_motion: Optional[float] = None,
                 neg_motion_until: Optional[float] = None, neg_motion_after: Optional[float] = None,
                 schedule: Optional[str] = None,
                 custom_schedule: Optional[str] = None, seed: Optional[float] = None, randomize_seed: bool = False,
                 add_sound: bool = False, model: Optional[str] = None, memory_mode: Optional[str] = None,
                 progress=gr.Progress(), request: gr.Request = None):
        """Text to video. Returns (video mp4, settings JSON file, used seed, settings dict, status).

        Unset values take the model's defaults; `randomize_seed=True` draws a seed from 0..2**32-1.
        """
        given = {k: v for k, v in locals().items() if k in SETTING_NAMES}
        values = self._values(given)
        _, defaults = self.holder.get(values["model"], values["memory_mode"])
        req, notices = build_request(values, defaults, self.sound_available)
        self.check_cost(values["model"], [req])
        for note in notices:
            notify("info", note)
        try:
            with self._job(request):
                sidecar = self._run(values["model"], req, progress)
                video = str(self.store.root / sidecar["video"])
                say(progress, None, "measuring motion…")
                measured = measure_motion(video)
        except GenerationInterrupted as err:
            notify("warning", f"stopped: {err}")
            return None, None, req.seed, None, f"■ stopped ({err})"
        ui = {**values, "seed": req.seed, "randomize_seed": False}
        if values["custom_size"]:
            ui["width"], ui["height"] = req.width, req.height
        settings = {"ui": ui, "measured_motion": measured, **sidecar}
        status = result_status(settings)
        if sidecar.get("prompt_truncated"):
            notices.append("the prompt was longer than 256 tokens and was truncated")
            notify("warning", notices[-1])
        unseen = unseen_words(req.prompt, self.vocabulary(values["model"]))
        if unseen:
            notices.append(f"not in this model's training: {', '.join(unseen)}")
        if notices:
            status += "\nNote: " + "; ".join(notices)
        return video, str(Path(video).with_suffix(".json")), req.seed, settings, status

    def _batch_request(self, prompt, seed, steps, resolution, frames, negative_prompt, model, **extra):
        values = self._values({"prompt": prompt, "seed": seed, "steps": steps, "resolution": resolution,
                               "frames": frames, "negative_prompt": negative_prompt, "model": model,
                               "length_mode": "frames", "randomize_seed": False, **extra})
        if seed is None:
            raise InvalidRequestError("give a seed: every video of a comparison uses the same one")
        return values, self.model_defaults(values["model"])

    def _warm_up(self, model: Optional[str], req: ResolvedRequest, progress) -> None:
        """One short untimed run, so that every compared schedule finds the model and the machine warm."""
        side = self._run(model, dataclasses.replace(req, config=req.config.replace(steps=2), audio=False), progress)
        for path in self.store.root.glob(Path(side["video"]).stem + ".*"):
            path.unlink(missing_ok=True)

    def _compare_worker(self, model: Optional[str], requests, request, events: "queue.Queue") -> None:
        try:
            with self._job(request) as control:
                self._warm_up(model, requests[0][1], _Relay(events, "warm-up"))
                for name, req in requests:
                    control.check()
                    relay = _Relay(events, name)
                    side = self._run(model, req, relay)
                    relay(None, "measuring motion…")
                    events.put(("done", name, side, measure_motion(self.store.root / side["video"])))
            events.put(("end", None))
        except GenerationInterrupted as err:
            events.put(("end", err))
        except BaseException as err:  # re-raised by the generator, which turns it into a message
            events.put(("error", err))

    def _scale_results(self, runs: List[Tuple[str, Dict[str, Any], Optional[float]]]) -> List[ScaleResult]:
        reference = next((r for r in runs if r[0] == "1x2"), runs[0])
        ref_denoise = max(reference[1]["timings"].get("denoise", 0.0), 1e-9)
        results = []
        for name, side, motion in runs:
            video = self.store.root / side["video"]
            t = side["timings"]
            results.append(ScaleResult(
                schedule=name, video=str(video), sidecar=str(video.with_suffix(".json")), seconds=t["total"],
                denoise=t.get("denoise", 0.0), relative=t.get("denoise", 0.0) / ref_denoise,
                reference=f"vs {reference[0]}", tokens_per_step=dict(side["tokens_per_step"]), motion=motion,
            ))
        return results

    @user_errors
    @one_job
    def compare(self, prompt: str, seed: Optional[float] = 0, schedules: Sequence[str] = COMPARE_SCHEDULES,
                steps: Optional[float] = None, resolution: Optional[str] = None, frames: Optional[float] = None,
                negative_prompt: str = "", model: Optional[str] = None,
                request: gr.Request = None) -> Iterator["CompareState"]:
        """The same prompt and seed with several patch schedules, after a short warm-up run.

        Yields a CompareState whenever a schedule starts, reports a step or finishes; the last one has the
        status and the side-by-side mp4 of all finished schedules.
        """
        schedules = [s for s in COMPARE_SCHEDULES if s in set(schedules or ())]
        unknown = sorted(set(schedules or ()) - set(COMPARE_SCHEDULES))
        if unknown or not schedules:
            raise InvalidRequestError(f"choose schedules among {list(COMPARE_SCHEDULES)}")
        values, defaults = self._batch_request(prompt, seed, steps, resolution, frames, negative_prompt, model)
        requests = []
        for name in schedules:
            req, _ = build_request({**values, "schedule": name}, defaults)
            requests.append((name, req))
        self.check_cost(values["model"], [req for _, req in requests])
        events: "queue.Queue" = queue.Queue()
        threading.Thread(target=self._compare_worker, args=(values["model"], requests, request, events),
                         name="compare", daemon=True).start()
        runs: List[Tuple[str, Dict[str, Any], Optional[float]]] = []
        state = CompareState([], "warm-up", "waiting for the model…", "warming up (a 2-step run, not timed)…")
        yield state
        while True:
            kind, *data = events.get()
            if kind == "error":
                raise data[0]
            if kind == "end":
                break
            if kind == "progress":
                state = dataclasses.replace(state, running=data[0], progress=data[1],
                                            status=f"rendering {data[0]}…" if data[0] != "warm-up" else state.status)
            else:
                runs.append((data[0], data[1], data[2]))
                state = dataclasses.replace(state, results=self._scale_results(runs), running=None, progress="")
            yield state
        stopped = data[0]
        if stopped is not None:
            notify("warning", f"stopped: {stopped}")
            status = f"■ stopped ({stopped}); {len(runs)} of {len(requests)} finished"
        else:
            status = f"✓ done: {len(runs)} schedules, timed after a 2-step warm-up"
        movie = None
        if runs:
            movie = side_by_side(state.results, self.store.new_path("compare-"))
        yield CompareState(state.results, None, "", status, movie, done=True)

    @user_errors
    @one_job
    def motion_grid(self, prompt: str, seed: Optional[float] = 0, positive="2, 6, 12", negative="0, 2, 6",
                    neg_motion_until: Optional[float] = None, steps: Optional[float] = None,
                    resolution: Optional[str] = None, frames: Optional[float] = None, negative_prompt: str = "",
                    model: Optional[str] = None, progress=gr.Progress(),
                    request: gr.Request = None) -> Tuple[List[GridCell], str]:
        """One prompt and seed over positive x negative motion scores: ([GridCell] row-major by negative, status)."""
        pos = parse_numbers("positive motion", positive, MAX_GRID_SIDE)
        neg = parse_numbers("negative motion", negative, MAX_GRID_SIDE)
        values, defaults = self._batch_request(prompt, seed, steps, resolution, frames, negative_prompt, model,
                                               neg_motion_until=neg_motion_until)
        requests = []
        for n in neg:
            for p in pos:
                req, _ = build_request({**values, "motion": p, "neg_motion": n, "neg_motion_after": p}, defaults)
                requests.append((p, n, req))
        self.check_cost(values["model"], [req for _, _, req in requests])
        cells: List[GridCell] = []
        status = "✓ done"
        try:
            with self._job(request) as control:
                for k, (p, n, req) in enumerate(requests):
                    control.check()
                    label = f"cell {k + 1}/{len(requests)} (+{_g(p)}/-{_g(n)}) · "
                    side = self._run(values["model"], req, progress, label)
                    video = self.store.root / side["video"]
                    say(progress, None, label + "measuring motion…")
                    cells.append(GridCell(p, n, str(video), str(video.with_suffix(".json")), measure_motion(video),
                                          write_tiles(video)))
        except GenerationInterrupted as err:
            notify("warning", f"stopped: {err}")
            status = f"■ stopped ({err}); {len(cells)} of {len(requests)} cells finished"
        return cells, status


    def sound_default_steps(self) -> Optional[int]:
        """The V2A model's own step count (from its model_index.json; None without a V2A model)."""
        if self.v2a_dir is None:
            return None
        return int(json.loads((Path(self.v2a_dir) / "model_index.json").read_text())["default_steps"])

    @user_errors
    @one_job
    def sound(self, video: Optional[str], prompt: str = "", steps: Optional[float] = None,
              seed: Optional[float] = 0, progress=gr.Progress(),
              request: gr.Request = None) -> Tuple[str, str, Dict[str, Any], str]:
        """Lumina-V2A's soundtrack for an uploaded video (up to 10 s, any fps): (mp4 with sound, waveform PNG,
        used settings, status). `steps` unset: the V2A model's default."""
        if self.v2a_dir is None:
            raise InvalidRequestError(SOUND_NOTE)
        if not video:
            raise InvalidRequestError(f"upload a video first ({', '.join(V.VIDEO_SUFFIXES)}; up to "
                                      f"{V.MAX_V2A_SECONDS:g} s)")
        steps = self.sound_default_steps() if steps is None else V.as_int("steps", steps)
        V.check_steps(steps)
        seed = V.as_int("seed", 0 if seed is None else seed)
        V.check_seed(seed)
        if Path(video).is_file() and Path(video).stat().st_size == 0:
            raise InvalidRequestError("the uploaded file is empty (0 bytes); upload a video")
        V.check_video_upload(video)
        out = self.store.new_path("sound-")
        with self._job(request):
            say(progress, None, "making sound with Lumina-V2A…")
            info = zerogpu.run_sound(str(self.v2a_dir), str(video), str(out), prompt or None, steps, seed)
            say(progress, None, "drawing the waveform…")
            image = write_waveform(out)
        settings = {"prompt": prompt or "", "steps": steps, "seed": seed, "model": Path(self.v2a_dir).name, **info,
                    "video": out.name}
        status = (f"✓ {info['seconds']:.2f} s of sound for {info['frames']} frames at {info['fps']:g} fps · "
                  f"steps {steps} · seed {seed} · {info['total_seconds']:.1f} s")
        return str(out), image, settings, status


def _owner(request) -> Optional[str]:
    return getattr(request, "session_hash", None) if request is not None else None
