"""Server-side state: the loaded model (one at a time, behind a lock) and the folder of generated files (names only
the app makes; only those are swept and pruned). The job runner (`lumina.app.jobs`) stands on both."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import torch

from lumina.errors import InvalidRequestError, ModelFilesError
from lumina.media import sweep_partials
from lumina.pipelines.defaults import ModelDefaults
from lumina.pipelines.loading import TINY_DIR, load_pipeline
from lumina.pipelines.memory import modes_for

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


class ModelHolder:
    """Keeps one pipeline loaded; a model and its memory mode change together, in one load."""

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
        self.audio_fn: Optional[Callable] = None  # (frames, fps, prompt) -> waveform, once a V2A model exists

    @property
    def memory_modes(self) -> List[str]:
        """The memory modes worth offering on this device: on a CPU there is no GPU memory to save, so only
        'none'; on CUDA the offload and tiling modes (lumina.pipelines.memory)."""
        kind = torch.device(self.device).type
        return modes_for(kind) if kind == "cuda" else ["none"]

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


PREFIXES = ("", "compare-", "sound-")  # what `new_path` is asked for
# The names `new_path` makes and the files beside them (sidecar, contact sheet, waveform): the only files in the
# outputs folder the app sweeps or prunes; the user's own files there are never touched.
OWN_NAME = re.compile(r"^(?:compare-|sound-)?[0-9a-f]{32}\.(?:mp4|json|tiles\.png|wave\.png|plot\.png)$")


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
            ours = self._own()
            for path in sorted(ours, key=lambda p: p.suffix != ".mp4"):  # videos first, then what they own
                stem = path.name.split(".")[0]
                if not (readable_video(path) if path.suffix == ".mp4" else (self.root / f"{stem}.mp4").exists()):
                    path.unlink(missing_ok=True)
                    removed.append(path)
        return removed

    def new_path(self, prefix: str = "") -> Path:
        if prefix not in PREFIXES:
            raise ValueError(f"output prefix {prefix!r}: one of {PREFIXES}")
        return self.root / f"{prefix}{uuid.uuid4().hex}.mp4"

    def _own(self) -> List[Path]:
        return [p for p in self.root.iterdir() if OWN_NAME.match(p.name) and p.is_file()]

    def cleanup(self) -> List[Path]:
        """Remove all but the newest `keep` videos the app made (and the files beside them); returns what was
        removed. Files the app did not name are never counted nor removed."""
        removed = []
        with self._lock:
            own = self._own()
            videos = sorted((p for p in own if p.suffix == ".mp4"), key=lambda p: p.stat().st_mtime, reverse=True)
            for old in videos[self.keep:]:
                stem = old.name.split(".")[0]
                for path in [p for p in own if p.name.split(".")[0] == stem]:
                    path.unlink(missing_ok=True)
                    removed.append(path)
        return removed

    def examples_cache(self, model: str) -> Path:
        """A per-model folder for Gradio's cached examples (a new model must not reuse old videos)."""
        digest = hashlib.sha1(str(Path(model).resolve() if model != "tiny" else TINY_DIR).encode()).hexdigest()[:10]
        return self.root / ".examples_cache" / digest
