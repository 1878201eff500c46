"""The Generate form as plain data: its settings in API order, their starting values for a model, and the
conversion of the form's values into a typed request. No model and no Gradio here, so tests and the endpoints
share one rule for every value.
"""

from __future__ import annotations

import functools
import inspect
import math
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from lumina import validation as V
from lumina.cache import FAST, NONE, StepCache
from lumina.errors import InvalidRequestError
from lumina.generation import GenerationRequest, ResolvedRequest, resolve_request
from lumina.pipelines.defaults import ModelDefaults
from lumina.sampling.schedule import TimeAware, stages
from lumina.syntax import format_schedule, parse_loras, parse_resolution, parse_schedule

SCHEDULES = ("multiscale", "1x2", "2x2", "2x4")
CUSTOM = "custom"
COMPARE_SCHEDULES = ("1x2", "2x2", "2x4", "multiscale")
LENGTH_MODES = ("seconds", "frames")
# The step caches the app offers by name (any NAME:VALUE is accepted too); `fast` is the measured default.
CACHE_CHOICES = [NONE, FAST, "fbc:0.05", "fbc:0.2", "taylorseer:3", "taylorseer:4", "pab:2", "mag:0.06"]
MAX_GRID_SIDE = 5
SOUND_NOTE = "Sound needs a video-to-audio (V2A) model; none is available yet, so this is off."
LORA_SPACE_NOTE = "LoRAs are for local runs of the app: a LoRA names a file on the server's disk, which a Space does not offer"


def on_a_space() -> bool:
    """Whether the app runs on a Hugging Face Space (ZeroGPU or not): Spaces set SPACE_ID. The LoRA field, which
    names a file on the server's disk, is offered to local runs only."""
    return bool(os.environ.get("SPACE_ID"))


# The headings of the Generate tab's one "Advanced" section, in order; each setting names the one it sits under.
GROUPS = {"size": "Size and length", "sampling": "Sampling", "motion": "Motion", "scales": "Scales (patch schedule)",
          "seed": "Seed, sound and model"}


@dataclass(frozen=True)
class Setting:
    """One setting of the Generate tab: its label there, its type and default in the API, and where it is drawn
    (`group`: a GROUPS key, None for above the Generate button; settings sharing a `row` sit side by side)."""

    label: str
    annotation: Any
    default: Any = None  # None: the model's default; inspect.Parameter.empty: required
    reset_with_model: bool = True  # set to the new model's starting value when the Model dropdown changes
    group: Optional[str] = None
    row: Optional[str] = None


# The Generate tab's settings in API order: the names and defaults of `Studio.generate`'s parameters (and so of the
# `/generate` endpoint), the order of the tab's inputs, where each is drawn, and the list README.md and docs/app.md
# give. A new setting is one entry here and its component in lumina.app.ui.generate.FIELDS.
GENERATE_SETTINGS: Dict[str, Setting] = {
    "prompt": Setting("Prompt", str, inspect.Parameter.empty, reset_with_model=False),
    "negative_prompt": Setting("Negative prompt", Optional[str], reset_with_model=False, group="sampling"),
    "resolution": Setting("Resolution", Optional[str], group="size", row="size"),
    "custom_size": Setting("Custom size", bool, False, group="size", row="size"),
    "width": Setting("Width", Optional[float], group="size", row="custom"),
    "height": Setting("Height", Optional[float], group="size", row="custom"),
    "length_mode": Setting("Length in", Optional[str], group="size", row="length"),
    "duration": Setting("Duration (s)", Optional[float], group="size", row="length"),
    "frames": Setting("Frames", Optional[float], group="size", row="length"),
    "fps": Setting("FPS", Optional[float], group="size", row="length"),
    "steps": Setting("Steps", Optional[float], group="sampling"),
    "guidance": Setting("Guidance (CFG)", Optional[float], group="sampling"),
    "guidance_until": Setting("Guidance until t", Optional[float], group="sampling"),
    "time_shift": Setting("Time shift", Optional[float], group="sampling"),
    "shared_noise": Setting("Shared noise", Optional[float], group="sampling"),
    "motion": Setting("Motion score", Optional[float], group="motion"),
    "neg_motion": Setting("Negative motion", Optional[float], group="motion"),
    "neg_motion_until": Setting("Switch at t", Optional[float], group="motion"),
    "neg_motion_after": Setting("Negative after the switch", Optional[float], group="motion"),
    "schedule": Setting("Patch schedule", Optional[str], group="scales"),
    "custom_schedule": Setting("Custom schedule", Optional[str], group="scales"),
    "seed": Setting("Seed", Optional[float], reset_with_model=False, group="seed", row="seed"),
    "randomize_seed": Setting("Randomize seed", bool, False, reset_with_model=False, group="seed", row="seed"),
    "add_sound": Setting("Add sound", bool, False, group="seed"),
    "model": Setting("Model", Optional[str], reset_with_model=False, group="seed", row="model"),
    "memory_mode": Setting("Memory mode", Optional[str], reset_with_model=False, group="seed", row="model"),
    "cache": Setting("Step cache", Optional[str], group="sampling"),
    "lora": Setting("LoRA", Optional[str], group="seed"),  # cleared when the model changes: a LoRA is for one model
}

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
        "randomize_seed": False, "add_sound": False, "model": model, "memory_mode": "none", "cache": NONE, "lora": "",
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
    V.check_fps(fps)
    if values["length_mode"] == "seconds":
        seconds = V.as_float("duration", values["duration"])
        longest = V.MAX_FRAMES / fps
        if not 0 < seconds <= longest:  # checked here, before any rounding could overflow
            raise InvalidRequestError(f"duration={seconds:g}: must be more than 0 and at most {longest:g} s at "
                                      f"{fps} fps ({V.MAX_FRAMES} frames)")
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
    loras = parse_loras(values.get("lora"))
    if loras and on_a_space():
        raise InvalidRequestError(LORA_SPACE_NOTE)
    number = lambda name, label: V.as_float(label, values[name])  # noqa: E731
    for name, label in (("guidance_until", "guidance until"), ("neg_motion_until", "negative motion until")):
        V.check_stages(label, [number(name, label)], 0.0, 1.0)
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
        seed=None if seed is None else V.as_int("seed", seed), audio=bool(values.get("add_sound")), loras=loras,
        cache=StepCache.parse(values.get("cache")),
    )
    return resolve_request(req, defaults), notices


def motion_grid_defaults(defaults: ModelDefaults) -> Tuple[str, str]:
    """(positive, negative) scores of the explorer's default 3x3 grid, in the model's own regime: positives spread
    around its default motion score (a third, once, twice), so measured motion rises along a row; negatives 0, the
    motion score and the model's own negative score (the tiny model's 20, the release's 2), so the rows show what
    pushing away from no motion, from the asked motion and from the model's default does."""
    preset = defaults.sample_config()
    motion = float(stages(preset.motion)[0][1])
    negative = float(stages(preset.neg_motion)[0][1])
    positives = sorted({round(motion / 3, 1), motion, 2 * motion})
    negatives = sorted({0.0, motion, negative} if negative not in (0.0, motion) else {0.0, motion, 2 * motion})
    return ", ".join(_g(v) for v in positives), ", ".join(_g(v) for v in negatives)
