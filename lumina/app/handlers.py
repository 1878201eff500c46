"""What the app's buttons do, as plain Python that tests call directly.

`Studio` owns the model holder and the output folder. Its public methods are the app's endpoints:
their keyword parameters are the API's parameter names, user mistakes come back as `gr.Error` with
the validation message (never a traceback), and a stopped run comes back as a "stopped" status.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import logging
import math
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import gradio as gr

from lumina import validation as V
from lumina.errors import GenerationInterrupted, InvalidRequestError, LuminaError
from lumina.app import zerogpu
from lumina.app.state import ClientQuota, ModelHolder, OutputStore
from lumina.generation import GenerationRequest
from lumina.media import atomic_output, read_video
from lumina.pipelines.loading import ModelDefaults
from lumina.pipelines.memory import release_memory
from lumina.sampling import format_schedule, parse_schedule_string
from lumina.sampling.schedule import stages

log = logging.getLogger("lumina.app")

EXAMPLES_FILE = Path(__file__).resolve().parents[2] / "examples" / "prompts.json"
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


def user_errors(fn):
    """Turn validation errors into gr.Error (shown as a message) and anything else into a short gr.Error."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except (LuminaError, ValueError) as err:
            raise gr.Error(str(err), print_exception=False) from None
        except Exception as err:  # the server keeps running; details go to its log only
            log.exception("unexpected error in %s", fn.__name__)
            raise gr.Error(f"unexpected error ({type(err).__name__}: {err}); details are in the server log",
                           print_exception=False) from None

    return wrapper


def one_job(fn):
    """An endpoint that runs a job: when it ends, however it ends, the client's queue ticket is returned."""

    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        try:
            return fn(self, *args, **kwargs)
        finally:  # Gradio passes the request by position or by name
            self.quota.release(_owner(signature.bind(self, *args, **kwargs).arguments.get("request")))

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


# ---------------------------------------------------------------- pure helpers (no model needed)

def _as_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value != int(value):
        raise InvalidRequestError(f"{name}={value!r}: must be a whole number")
    return int(value)


def _as_float(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidRequestError(f"{name}={value!r}: must be a number")
    return float(value)


def _g(v: float) -> str:
    return f"{v:g}"


def cfg_schedule(guidance: float, until: float) -> str:
    """Guidance `guidance` while t < until, none after: "20, 0@0.2" (until >= 1: always; <= 0: never)."""
    V.check_guidance(guidance)
    V.check_number("guidance until", until, 0.0, 1.0)
    if guidance == 0 or until <= 0:
        return "0"
    return _g(guidance) if until >= 1 else f"{_g(guidance)}, 0@{_g(until)}"


def neg_motion_schedule(motion: float, neg_motion: float, until: float, after: float) -> str:
    """Negative motion score while t < until, then ``after``: "2, 6@0.05".

    The Generate tab starts from the model's default negative score, as the CLI does (the release's "2, 6@0.05";
    the tiny model's constant 20); the motion explorer passes the positive score (the paper's "4 / 2 then 4"
    ablation: the gap acts early only)."""
    V.check_motion("motion", motion)
    V.check_motion("negative motion", neg_motion)
    V.check_number("negative motion until", until, 0.0, 1.0)
    V.check_motion("negative motion after", after)
    if until >= 1:
        return _g(neg_motion)
    if until <= 0:
        return _g(after)
    return f"{_g(neg_motion)}, {_g(after)}@{_g(until)}"


def describe_schedule(text: str, supported: Optional[Iterable[str]] = None,
                      shorthands: Optional[Dict[str, Any]] = None) -> str:
    """Parse a patch schedule string and say what it does; ValueError with the parser's message if bad."""
    parsed = parse_schedule_string(text, "patch", shorthands)
    parts = stages(parsed)
    if supported is not None:
        missing = sorted({v for _, v in parts} - set(supported))
        if missing:
            raise InvalidRequestError(
                f"patch sizes {missing} are not in this model; it supports {sorted(supported)}"
            )
    words = [f"{v} from t=0" if i == 0 else f"{v} from t={_g(t)}" for i, (t, v) in enumerate(parts)]
    return " → ".join(words)


def check_schedule_text(schedule: str, custom_schedule: str = "", supported: Optional[Iterable[str]] = None,
                        shorthands: Optional[Dict[str, Any]] = None) -> str:
    """Markdown for the live check under the schedule box."""
    text = custom_schedule if schedule == CUSTOM else schedule
    try:
        parsed = format_schedule(parse_schedule_string(text, "patch", shorthands))
        return f"✓ `{parsed}`: {describe_schedule(text, supported, shorthands)}"
    except ValueError as err:
        return f"⚠ {err}"


def size_notice(custom_size: bool, width, height, max_resolution: Optional[int] = None) -> str:
    """Markdown under the custom size: the snapped size, and whether the model accepts it."""
    if not custom_size:
        return ""
    try:
        w, h = int(round(_as_float("width", width))), int(round(_as_float("height", height)))
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
        fps = _as_int("fps", fps)
        if length_mode == "seconds":
            n = V.frames_for(_as_float("duration", duration), fps)
            return f"Note: {_g(duration)} s at {fps} fps → **{n} frames** ({n / fps:.2f} s; frames come in multiples of 8)"
        n = _as_int("frames", frames)
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
    multiscale = defaults.patch_shorthands()["multiscale"]
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


def build_request(values: Dict[str, Any], defaults: ModelDefaults, supported: Optional[Iterable[str]] = None,
                  sound_available: bool = False) -> Tuple[GenerationRequest, List[str]]:
    """Generate-tab values -> a validated GenerationRequest and notices (snapped size, rounded frames)."""
    notices: List[str] = []
    prompt = V.check_prompt(values.get("prompt"))
    if values["custom_size"]:
        if values.get("width") is None or values.get("height") is None:
            raise InvalidRequestError("custom size: give both width and height")
        w = int(round(_as_float("width", values["width"])))
        h = int(round(_as_float("height", values["height"])))
        width, height = V.snap_size(w), V.snap_size(h)
        if (width, height) != (w, h):
            notices.append(f"size {w}x{h} snapped to {width}x{height} (multiples of {V.SIZE_MULTIPLE})")
    else:
        width, height = V.parse_resolution(str(values["resolution"]).split(" ")[0])
    V.check_size(width, height, defaults.max_resolution)
    fps = _as_int("fps", values["fps"])
    V.check_fps(fps)
    if values["length_mode"] == "seconds":
        seconds = _as_float("duration", values["duration"])
        frames = V.frames_for(seconds, fps)
        if abs(frames / fps - seconds) > 1e-6:
            notices.append(f"{_g(seconds)} s at {fps} fps rounded to {frames} frames ({frames / fps:.2f} s)")
    elif values["length_mode"] == "frames":
        frames = _as_int("frames", values["frames"])
    else:
        raise InvalidRequestError(f"length_mode={values['length_mode']!r}: choose one of {list(LENGTH_MODES)}")
    V.check_frames(frames)
    steps = _as_int("steps", values["steps"])
    V.check_steps(steps)
    guidance = _as_float("guidance", values["guidance"])
    cfg = cfg_schedule(guidance, _as_float("guidance until", values["guidance_until"]))
    motion = _as_float("motion", values["motion"])
    neg = neg_motion_schedule(motion, _as_float("negative motion", values["neg_motion"]),
                              _as_float("negative motion until", values["neg_motion_until"]),
                              _as_float("negative motion after", values["neg_motion_after"]))
    time_shift = _as_float("time shift", values["time_shift"])
    V.check_time_shift(time_shift)
    shared_noise = _as_float("shared noise", values["shared_noise"])  # its range: SampleConfig's rule
    schedule = values["schedule"]
    if schedule not in SCHEDULES + (CUSTOM,):
        raise InvalidRequestError(f"schedule={schedule!r}: choose one of {list(SCHEDULES) + [CUSTOM]}")
    text = (values.get("custom_schedule") or "") if schedule == CUSTOM else schedule
    describe_schedule(text, supported, defaults.patch_shorthands())
    if values["randomize_seed"] or values.get("seed") is None or values.get("seed") == "":
        seed = random.randint(0, V.MAX_SEED)
    else:
        seed = _as_int("seed", values["seed"])
        V.check_seed(seed)
    if values.get("add_sound") and not sound_available:
        raise InvalidRequestError(SOUND_NOTE)
    req = GenerationRequest(
        prompt=prompt, negative_prompt=str(values.get("negative_prompt") or ""), width=width, height=height,
        frames=frames, fps=fps, schedule=text, motion=motion, neg_motion=neg, cfg=cfg, steps=steps,
        time_shift=time_shift, shared_noise=shared_noise, seed=seed, audio=bool(values.get("add_sound")),
    )
    return req, notices


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
    relative: float
    reference: str
    tokens_per_step: Dict[str, int]
    motion: Optional[float]

    def details(self) -> List[str]:
        tokens = ", ".join(f"{k}: {v}" for k, v in self.tokens_per_step.items())
        motion = "n/a" if self.motion is None else f"{self.motion:.2f}"
        return [f"{self.seconds:.2f} s ({self.relative:.2f}x {self.reference})", f"tokens/step {tokens}",
                f"measured motion {motion}"]

    @property
    def label(self) -> str:
        return " · ".join([self.schedule] + self.details())


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
        return f"motion {_g(self.positive)} / neg {_g(self.negative)} (gap {_g(self.gap)}) → measured {m}"


def parse_scores(name: str, text) -> List[float]:
    """'2, 6, 12' -> [2.0, 6.0, 12.0], each a valid motion score; 1..MAX_GRID_SIDE values."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        items: List[Any] = [text]
    elif isinstance(text, (list, tuple)):
        items = list(text)
    else:
        items = [p for p in str(text or "").replace(";", ",").split(",") if p.strip()]
    values = []
    for item in items:
        try:
            value = float(item)
        except (TypeError, ValueError):
            raise InvalidRequestError(f"{name}: {str(item).strip()!r} is not a number; write e.g. '2, 6, 12'") from None
        V.check_motion(name, value)
        values.append(value)
    if not 1 <= len(values) <= MAX_GRID_SIDE:
        raise InvalidRequestError(f"{name}: give 1 to {MAX_GRID_SIDE} comma-separated scores, got {len(values)}")
    return values


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


# ---------------------------------------------------------------- the endpoints

class Studio:
    """The app's server side: one model holder, one output folder, the endpoints."""

    def __init__(self, model: str, outputs_dir, keep: int = 100, extra_models: Sequence[str] = (),
                 loader=None, preload: bool = True, audio_fn=None, max_job_seconds: float = MAX_JOB_SECONDS,
                 max_jobs_per_client: int = MAX_JOBS_PER_CLIENT, queue_size: int = 16):
        kwargs = {} if loader is None else {"loader": loader}
        self.holder = ModelHolder(model, extra_models, **kwargs)
        self.holder.audio_fn = audio_fn  # a V2A model's (frames, fps, prompt) -> waveform; None: no sound
        self.store = OutputStore(Path(outputs_dir), keep=max(int(keep), MAX_GRID_SIDE ** 2))
        self.max_job_seconds = float(max_job_seconds)
        # a queued job waits at most for the jobs ahead of it, each within the limit
        self.quota = ClientQuota(max_jobs_per_client, expire_s=(queue_size + 1) * self.max_job_seconds)
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
        named = self.model_defaults(model).patch_shorthands()
        ok = [s for s in SCHEDULES if {v for _, v in stages(named[s])} <= supported]
        return ok + [CUSTOM]

    def defaults_for_ui(self, model: Optional[str] = None) -> Dict[str, Any]:
        values = ui_defaults(self.model_defaults(model), model or self.holder.default)
        if values["schedule"] not in self.schedule_choices(model):
            values["schedule"] = self.schedule_choices(model)[0]
        return values

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

    def check_cost(self, model: Optional[str], requests: Sequence[GenerationRequest]) -> float:
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

    def _run(self, model: Optional[str], req: GenerationRequest, progress=None, label: str = "") -> Dict[str, Any]:
        pipe, defaults = self.holder.get(model)
        zerogpu.check_budget(pipe, defaults, req)
        out = self.store.new_path()
        try:
            return zerogpu.run_generation(self.holder.id, model, req, str(out), progress=progress, label=label)
        except BaseException:
            for leftover in (out, out.with_suffix(".json")):
                leftover.unlink(missing_ok=True)
            raise

    def check_schedule(self, schedule: str, custom_schedule: str = "", model: Optional[str] = None) -> str:
        try:
            supported = self.supported_patches(model)
        except (LuminaError, ValueError) as err:
            return f"⚠ {err}"
        return check_schedule_text(schedule, custom_schedule, supported, self.model_defaults(model).patch_shorthands())

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
        pipe, defaults = self.holder.get(values["model"], values["memory_mode"])
        supported = [p.name for p in pipe.transformer.supported_patch_sizes()]
        req, notices = build_request(values, defaults, supported, self.sound_available)
        self.check_cost(values["model"], [req])
        for note in notices:
            notify("info", note)
        try:
            with self._job(request):
                sidecar = self._run(values["model"], req, progress)
        except GenerationInterrupted as err:
            notify("warning", f"stopped: {err}")
            return None, None, req.seed, None, f"■ stopped ({err})"
        video = str(self.store.root / sidecar["video"])
        ui = {**values, "seed": req.seed, "randomize_seed": False}
        if values["custom_size"]:
            ui["width"], ui["height"] = req.width, req.height
        settings = {"ui": ui, **sidecar}
        t = sidecar["timings"]
        status = (f"✓ seed **{req.seed}** · {req.width}x{req.height} · {req.frames} frames @ {req.fps} fps · "
                  f"`{sidecar['patch_schedule']}` · {t['total']:.1f} s (denoise {t.get('denoise', 0):.1f} s)")
        if sidecar.get("prompt_truncated"):
            notices.append("the prompt was longer than 256 tokens and was truncated")
            notify("warning", notices[-1])
        if notices:
            status += "  \nNote: " + "; ".join(notices)
        return video, str(Path(video).with_suffix(".json")), req.seed, settings, status

    def _batch_request(self, prompt, seed, steps, resolution, frames, negative_prompt, model, **extra):
        values = self._values({"prompt": prompt, "seed": seed, "steps": steps, "resolution": resolution,
                               "frames": frames, "negative_prompt": negative_prompt, "model": model,
                               "length_mode": "frames", "randomize_seed": False, **extra})
        if seed is None:
            raise InvalidRequestError("give a seed: every video of a comparison uses the same one")
        pipe, defaults = self.holder.get(values["model"])
        supported = [p.name for p in pipe.transformer.supported_patch_sizes()]
        return values, defaults, supported

    @user_errors
    @one_job
    def compare(self, prompt: str, seed: Optional[float] = 0, schedules: Sequence[str] = COMPARE_SCHEDULES,
                steps: Optional[float] = None, resolution: Optional[str] = None, frames: Optional[float] = None,
                negative_prompt: str = "", model: Optional[str] = None, progress=gr.Progress(),
                request: gr.Request = None) -> Tuple[List[ScaleResult], str]:
        """The same prompt and seed with several patch schedules: ([ScaleResult], status)."""
        schedules = [s for s in COMPARE_SCHEDULES if s in set(schedules or ())]
        unknown = sorted(set(schedules or ()) - set(COMPARE_SCHEDULES))
        if unknown or not schedules:
            raise InvalidRequestError(f"choose schedules among {list(COMPARE_SCHEDULES)}")
        values, defaults, supported = self._batch_request(prompt, seed, steps, resolution, frames, negative_prompt,
                                                          model)
        requests = []
        for name in schedules:
            req, _ = build_request({**values, "schedule": name}, defaults, supported)
            requests.append((name, req))
        self.check_cost(values["model"], [req for _, req in requests])
        runs: List[Tuple[str, Dict[str, Any]]] = []
        status = "✓ done"
        try:
            with self._job(request) as control:
                for k, (name, req) in enumerate(requests):
                    control.check()
                    runs.append((name, self._run(values["model"], req, progress,
                                                 f"{name} ({k + 1}/{len(requests)}) · ")))
        except GenerationInterrupted as err:
            notify("warning", f"stopped: {err}")
            status = f"■ stopped ({err}); {len(runs)} of {len(requests)} finished"
        if not runs:
            return [], status
        reference = next((s for n, s in runs if n == "1x2"), runs[0][1])
        ref_name = next((n for n, s in runs if s is reference), runs[0][0])
        results = []
        for name, side in runs:
            video = self.store.root / side["video"]
            results.append(ScaleResult(
                schedule=name, video=str(video), sidecar=str(video.with_suffix(".json")),
                seconds=side["timings"]["total"],
                relative=side["timings"]["total"] / max(reference["timings"]["total"], 1e-9),
                reference=f"vs {ref_name}", tokens_per_step=dict(side["tokens_per_step"]),
                motion=measure_motion(video),
            ))
        return results, status

    @user_errors
    @one_job
    def motion_grid(self, prompt: str, seed: Optional[float] = 0, positive="2, 6, 12", negative="0, 2, 6",
                    neg_motion_until: Optional[float] = None, steps: Optional[float] = None,
                    resolution: Optional[str] = None, frames: Optional[float] = None, negative_prompt: str = "",
                    model: Optional[str] = None, progress=gr.Progress(),
                    request: gr.Request = None) -> Tuple[List[GridCell], str]:
        """One prompt and seed over positive x negative motion scores: ([GridCell] row-major by negative, status)."""
        pos = parse_scores("positive motion", positive)
        neg = parse_scores("negative motion", negative)
        values, defaults, supported = self._batch_request(prompt, seed, steps, resolution, frames, negative_prompt,
                                                          model, neg_motion_until=neg_motion_until)
        requests = []
        for n in neg:
            for p in pos:
                req, _ = build_request({**values, "motion": p, "neg_motion": n, "neg_motion_after": p}, defaults,
                                       supported)
                requests.append((p, n, req))
        self.check_cost(values["model"], [req for _, _, req in requests])
        cells: List[GridCell] = []
        status = "✓ done"
        try:
            with self._job(request) as control:
                for k, (p, n, req) in enumerate(requests):
                    control.check()
                    side = self._run(values["model"], req, progress,
                                     f"cell {k + 1}/{len(requests)} (+{_g(p)}/-{_g(n)}) · ")
                    video = self.store.root / side["video"]
                    cells.append(GridCell(p, n, str(video), str(video.with_suffix(".json")), measure_motion(video),
                                          write_tiles(video)))
        except GenerationInterrupted as err:
            notify("warning", f"stopped: {err}")
            status = f"■ stopped ({err}); {len(cells)} of {len(requests)} cells finished"
        return cells, status


def _owner(request) -> Optional[str]:
    return getattr(request, "session_hash", None) if request is not None else None
