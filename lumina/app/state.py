"""Server-side state: the loaded model (one at a time, behind a lock), the running job's stop control,
and the folder of generated files (unique names, oldest removed)."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar, Dict, List, Optional, Sequence, Tuple

from lumina.errors import GenerationInterrupted, InvalidRequestError, ModelFilesError
from lumina.generation import ResolvedRequest, generate_video
from lumina.media import sweep_partials
import torch

from lumina.costs import load_fit, measure_fit
from lumina.pipelines.defaults import ModelDefaults
from lumina.pipelines.loading import TINY_DIR, load_pipeline
from lumina.pipelines.memory import modes_for
from lumina.sampling import plan

log = logging.getLogger("lumina.app")

HOW_TO_GET_A_MODEL = (
    "no model to serve: the bundled tiny model is missing from {tiny}. Train it with "
    "`python -m lumina_research.train all`, or start the app with --model DIR (a diffusers-layout pipeline folder "
    "with model_index.json, or a release checkpoint folder), or set LUMINA_MODEL=DIR."
)

def default_model() -> str:
    """LUMINA_MODEL, else "tiny" when the bundled model exists; otherwise a clear error."""
    env = os.environ.get("LUMINA_MODEL")
    if env:
        return env
    if (TINY_DIR / "model_index.json").exists():
        return "tiny"
    raise ModelFilesError(HOW_TO_GET_A_MODEL.format(tiny=TINY_DIR))


def check_model_spec(model: str) -> None:
    """Fail before loading anything when a local model cannot be there."""
    if model == "tiny" and not (TINY_DIR / "model_index.json").exists():
        raise ModelFilesError(HOW_TO_GET_A_MODEL.format(tiny=TINY_DIR))
    if model.startswith((".", "/", "~")) and not Path(model).expanduser().exists():
        raise ModelFilesError(f"model folder {model} does not exist. " + HOW_TO_GET_A_MODEL.format(tiny=TINY_DIR))


@functools.lru_cache(maxsize=1)
def cached_v2a(folder: str):
    """The V2A pipeline in `folder`, loaded once (on the first request for sound, not at start-up)."""
    from lumina.v2a import load_v2a

    return load_v2a(folder)


def pick_device() -> Tuple[str, "object"]:
    import torch

    if torch.cuda.is_available():
        return "cuda", torch.bfloat16
    return "cpu", torch.float32


class RunControl:
    """Who is generating now, which step it is at, and whether someone asked it to stop.

    A stop is also written to `stop_file` (when set): on ZeroGPU the job runs in a forked worker whose copy
    of this object never sees the main process's flag, but it does see the file.
    """

    def __init__(self, stop_file: Optional[Path] = None):
        self._lock = threading.Lock()
        self.owner: Optional[str] = None
        self.running = False
        self.stop_requested = False
        self.stop_file = stop_file
        self.pipe = None
        self.step: Optional[int] = None
        self.total: Optional[int] = None

    def begin(self, owner: Optional[str]) -> None:
        with self._lock:
            self.owner, self.running, self.stop_requested = owner, True, False
            self.step = self.total = None
            if self.stop_file is not None:
                self.stop_file.unlink(missing_ok=True)

    def _stopping(self) -> bool:
        return self.stop_requested or (self.stop_file is not None and self.stop_file.exists())

    def attach(self, pipe, total: int) -> None:
        with self._lock:
            self.pipe, self.step, self.total = pipe, None, total
            if self._stopping():
                pipe.request_interrupt()

    def at_step(self, step: int) -> None:
        with self._lock:
            self.step = step
            if self._stopping() and self.pipe is not None:
                # The pipeline clears its flag when denoising starts, so a stop pressed during
                # text encoding is re-sent after the first step.
                self.pipe.request_interrupt()

    def end(self) -> None:
        with self._lock:
            self.running, self.pipe, self.owner = False, None, None
            if self.stop_file is not None:
                self.stop_file.unlink(missing_ok=True)

    def request_stop(self, owner: Optional[str] = None) -> bool:
        """Stop the running job if there is one and it belongs to `owner` (None: any owner)."""
        with self._lock:
            if not self.running or (owner is not None and self.owner is not None and owner != self.owner):
                return False
            self.stop_requested = True
            if self.stop_file is not None:
                self.stop_file.touch()
            if self.pipe is not None:
                self.pipe.request_interrupt()
            return True

    def check(self) -> None:
        """Between the videos of a batch: raise if a stop was asked for."""
        if self._stopping():
            raise GenerationInterrupted("stopped by request")


class ClientQuota:
    """Jobs each client (Gradio session) has queued or running. `admit` runs when a job joins the queue and refuses
    a client already at `limit`; `release` runs when the job ends. A ticket whose job never ran (cancelled while
    queued) lapses after `expire_s`, the longest a queued job can wait."""

    def __init__(self, limit: int, expire_s: float):
        self.limit, self.expire_s = int(limit), float(expire_s)
        self._lock = threading.Lock()
        self._tickets: Dict[str, List[float]] = {}

    def admit(self, owner: Optional[str]) -> None:
        if owner is None:
            return
        with self._lock:
            now = time.monotonic()
            live = [t for t in self._tickets.get(owner, []) if now - t < self.expire_s]
            if len(live) >= self.limit:
                raise InvalidRequestError(
                    f"you already have {len(live)} job(s) queued or running; at most {self.limit} per client: "
                    f"wait for one to finish")
            self._tickets[owner] = live + [now]

    def release(self, owner: Optional[str]) -> None:
        with self._lock:
            live = self._tickets.get(owner)
            if live:
                live.pop(0)
                if not live:
                    del self._tickets[owner]


def say(progress, fraction: Optional[float], desc: str) -> None:
    """Tell a gr.Progress-like callable (or None) how far a job is; progress is cosmetic and never breaks a run."""
    if progress is not None:
        try:
            progress(fraction, desc=desc)
        except Exception:
            log.debug("progress update failed", exc_info=True)


class StepReporter:
    """callback_on_step_end: report progress with the step's scale and pass stop requests to the pipe.

    The flow time shown is the one a step reaches (the last step reaches t=1); after the last step the
    pipeline decodes, which is said at once. `phase(name)` reports the later phases of a video.
    """

    def __init__(self, control: RunControl, steps: Sequence, progress=None, label: str = ""):
        self.control, self.steps, self.progress, self.label = control, list(steps), progress, label

    def __call__(self, pipe, i, t, kwargs):
        n = len(self.steps)
        self.control.at_step(i + 1)
        step = self.steps[i]
        desc = f"step {i + 1}/{n} · scale {step.patch.name} · t={step.t + step.dt:.3f}"
        say(self.progress, (i + 1) / n, self.label + desc + (" · decoding the video…" if i + 1 == n else ""))
        return kwargs

    def phase(self, name: str) -> None:
        say(self.progress, None, f"{self.label}{name}…")


class ModelHolder:
    """Keeps one pipeline loaded; `generate` runs one video at a time."""

    registry: ClassVar[Dict[int, "ModelHolder"]] = {}

    def __init__(self, model: str, extra_models: Sequence[str] = (), loader: Callable = load_pipeline):
        self.default = model
        choices = [model] + [m for m in extra_models if m]
        if model != "tiny" and (TINY_DIR / "model_index.json").exists():
            choices.append("tiny")
        self.choices: List[str] = list(dict.fromkeys(choices))
        self._loader = loader
        self._load_lock = threading.RLock()
        self.run_lock = threading.RLock()  # held while a video is made and while models change
        self._current: Optional[Tuple[str, object, ModelDefaults]] = None
        self.memory_mode = "none"
        self.device, self.dtype = pick_device()
        self.control = RunControl()
        self._fits: Dict[str, Dict[str, float]] = {}
        self.audio_fn: Optional[Callable] = None  # (frames, fps, prompt) -> waveform, once a V2A model exists
        self.id = id(self)
        ModelHolder.registry[self.id] = self

    @property
    def memory_modes(self) -> List[str]:
        return modes_for(torch.device(self.device).type)

    def get(self, model: Optional[str] = None, memory_mode: Optional[str] = None):
        """(pipe, defaults) for `model` (default: the one given at start), loading it if needed."""
        model = model or self.default
        if model not in self.choices:
            raise InvalidRequestError(f"model {model!r} is not available here; choose one of {self.choices}")
        if memory_mode is not None and memory_mode not in self.memory_modes:
            raise InvalidRequestError(f"memory mode {memory_mode!r} is not available on {self.device}; "
                                      f"choose one of {self.memory_modes}")
        want_mode = memory_mode or self.memory_mode
        with self._load_lock:
            if self._current is not None and self._current[0] == model and want_mode == self.memory_mode:
                return self._current[1], self._current[2]
        with self.run_lock, self._load_lock:  # never swap the model under a running job
            if self._current is not None and self._current[0] == model and want_mode == self.memory_mode:
                return self._current[1], self._current[2]
            self._current = None  # free the old model before loading the next
            check_model_spec(model)
            log.info("loading model %s on %s", model, self.device)
            pipe, defaults = self._loader(model, dtype=self.dtype, device=self.device, memory=want_mode)
            self.memory_mode = want_mode
            self._current = (model, pipe, defaults)
            return pipe, defaults

    def fit(self, model: Optional[str] = None) -> Dict[str, float]:
        """Throughput of this server's device for the cost estimates: the stored fit of its device type
        (lumina.costs; a CUDA GPU falls back to a typical one), else measured once on the loaded model."""
        model = model or self.default
        if model not in self._fits:
            fit = load_fit(torch.device(self.device).type)
            if fit is None:
                pipe, defaults = self.get(model)
                with self.run_lock:
                    fit = measure_fit(pipe.transformer, pipe.latent_size(defaults.frames, defaults.height,
                                                                         defaults.width))
                log.info("measured throughput of %s on %s: %s", model, self.device, fit)
            self._fits[model] = fit
        return self._fits[model]

    def generate(self, model: Optional[str], req: ResolvedRequest, out_path, progress=None, label: str = ""):
        """One video, with per-step progress naming the scale; GenerationInterrupted if stopped.

        The caller holds `run_lock` (Studio does, per job). It is not taken here because on ZeroGPU this
        runs in a process forked while the parent held it.
        """
        pipe, _ = self.get(model)
        steps = plan(req.config)
        reporter = StepReporter(self.control, steps, progress, label)
        self.control.attach(pipe, len(steps))
        try:
            return generate_video(pipe, req, out_path, callback_on_step_end=reporter,
                                  audio_fn=self.audio_fn, on_phase=reporter.phase)
        finally:
            self.control.pipe = None


OWN_NAME = re.compile(r"^\w*[0-9a-f]{32}\.(mp4|json|tiles\.png)$")  # what `new_path` names, and its sidecars


def readable_video(path: Path) -> bool:
    """Whether an mp4 opens with a video stream that has frames (a file cut short by a kill does not)."""
    import av

    try:
        with av.open(str(path)) as container:
            return bool(container.streams.video) and (container.streams.video[0].frames or 0) > 0
    except (av.FFmpegError, OSError):
        return False


@dataclass
class OutputStore:
    """Generated files live under `root` as <uuid>.mp4 + <uuid>.json (+ <uuid>.tiles.png); only the newest
    `keep` videos stay. At start, what a killed server left behind is swept (`sweep`)."""

    root: Path
    keep: int = 100

    def __post_init__(self):
        self.root = Path(self.root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        for path in self.sweep():
            log.warning("removed %s (unreadable or orphaned)", path.name)

    def sweep(self) -> List[Path]:
        """Remove temporary files of dead writers, unreadable videos, and sidecars or contact sheets whose video
        is gone; returns what was removed."""
        removed = sweep_partials(self.root)
        with self._lock:
            ours = [p for p in self.root.iterdir() if p.is_file() and OWN_NAME.match(p.name)]
            for path in sorted(ours, key=lambda p: p.suffix != ".mp4"):  # videos first, then what they own
                stem = path.name.split(".")[0]
                if not (readable_video(path) if path.suffix == ".mp4" else (self.root / f"{stem}.mp4").exists()):
                    path.unlink(missing_ok=True)
                    removed.append(path)
        return removed

    def new_path(self, prefix: str = "") -> Path:
        return self.root / f"{prefix}{uuid.uuid4().hex}.mp4"

    def cleanup(self) -> List[Path]:
        """Remove all but the newest `keep` videos (and their sidecars); returns what was removed."""
        removed = []
        with self._lock:
            videos = sorted(self.root.glob("*.mp4"), key=lambda p: p.stat().st_mtime, reverse=True)
            for old in videos[self.keep:]:
                for path in [old] + sorted(self.root.glob(f"{old.stem}.*")):  # sidecar, contact sheet
                    try:
                        path.unlink()
                        removed.append(path)
                    except FileNotFoundError:
                        pass
        return removed

    def examples_cache(self, model: str) -> Path:
        """A per-model folder for Gradio's cached examples (a new model must not reuse old videos)."""
        digest = hashlib.sha1(str(Path(model).resolve() if model != "tiny" else TINY_DIR).encode()).hexdigest()[:10]
        return self.root / ".examples_cache" / digest
