"""The job runner the app stands on: one object that owns the model holder, the output store, the queue's admission
(per client and in all), the stop control of the running job (bound to its owner), and the cost estimate.

A job (one video, a comparison, a motion grid, a soundtrack) is planned once: its requests are resolved and checked
by the caller, `plan` makes each video's step plan once and predicts its seconds once, with one device figure (the
throughput of this server's device), and refuses a job over the limit before anything runs. `running` then holds the
one worker, binds the stop control to the job's owner and cleans up after it, however it ends.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import torch

from lumina.app import zerogpu
from lumina.app.state import ModelHolder, OutputStore
from lumina.costs import load_fit, measure_fit
from lumina.errors import GenerationInterrupted, InvalidRequestError
from lumina.generation import ResolvedRequest
from lumina.pipelines.memory import release_memory
from lumina.sampling import plan

log = logging.getLogger("lumina.app")

MAX_JOB_SECONDS = 900.0  # one job (a video, a comparison, a grid) may hold the worker this long, on any device
MAX_JOBS_PER_CLIENT = 2  # queued or running, per Gradio session
GRACE_S = 30.0  # an admitted job reaches Gradio's queue within this; after it, a ticket without a queued event lapses
ANONYMOUS = ""  # the admission's name for requests without a session


def say(progress, fraction: Optional[float], desc: str) -> None:
    """Tell a gr.Progress-like callable (or None) how far a job is; progress is cosmetic and never breaks a run."""
    if progress is not None:
        try:
            progress(fraction, desc=desc)
        except Exception:
            log.debug("progress update failed", exc_info=True)


@dataclass
class _Ticket:
    at: float
    started: bool = False


class Admission:
    """Jobs queued or running: at most `per_client` per client (Gradio session) and `total` in all. `admit` runs when
    a job joins the queue (Gradio's validator), under one lock, so simultaneous joins cannot pass either limit;
    `start` and `release` run when the job starts and ends. A ticket whose job never starts (cancelled while queued)
    lapses: after GRACE_S when `waiting` (session -> its events in Gradio's queue) no longer lists it, else after
    `expire_s`, the longest a queued job can wait."""

    def __init__(self, per_client: int, total: int, expire_s: float,
                 waiting: Optional[Callable[[], Dict[str, int]]] = None):
        self.per_client, self.total, self.expire_s = int(per_client), int(total), float(expire_s)
        self.waiting = waiting
        self._lock = threading.Lock()
        self._tickets: Dict[str, List[_Ticket]] = {}
        self.refusals: Dict[str, str] = {}  # the last refusal of each session, for the browser's status line

    def _prune(self, now: float) -> None:
        queued = self.waiting() if self.waiting is not None else None
        for owner in list(self._tickets):
            tickets = self._tickets[owner]
            idle = [t for t in tickets if not t.started]
            if queued is not None:
                young = [t for t in idle if now - t.at < GRACE_S]
                keep = young + [t for t in idle if t not in young][:max(0, queued.get(owner, 0) - len(young))]
            else:
                keep = [t for t in idle if now - t.at < self.expire_s]
            self._tickets[owner] = [t for t in tickets if t.started or t in keep]
            if not self._tickets[owner]:
                del self._tickets[owner]

    def admit(self, owner: Optional[str]) -> None:
        """Called at the queue's door with the joining request's session; HTTP requests without one (a bare REST
        call) share one anonymous client's quota."""
        owner = ANONYMOUS if owner is None else owner
        with self._lock:
            now = time.monotonic()
            self._prune(now)
            mine = len(self._tickets.get(owner, []))
            message = None
            if mine >= self.per_client:
                message = (f"you already have {mine} job(s) queued or running; at most {self.per_client} per "
                           f"client: wait for one to finish")
            elif sum(map(len, self._tickets.values())) >= self.total:
                message = (f"the queue is full ({self.total} jobs queued or running): try again in a minute")
            if message is not None:
                self.refusals[owner] = message
                raise InvalidRequestError(message)
            self.refusals.pop(owner, None)
            self._tickets.setdefault(owner, []).append(_Ticket(now))

    def _key(self, owner: Optional[str]) -> str:
        # Gradio names a session-less request's session after its event once it is queued, so its job starts
        # under a name its ticket (ANONYMOUS) does not have.
        return owner if owner in self._tickets else ANONYMOUS

    def start(self, owner: Optional[str]) -> None:
        with self._lock:
            idle = [t for t in self._tickets.get(self._key(owner), []) if not t.started]
            if idle:
                idle[0].started = True

    def release(self, owner: Optional[str]) -> None:
        with self._lock:
            key = self._key(owner)
            tickets = self._tickets.get(key, [])
            started = [t for t in tickets if t.started]
            if started or (tickets and key != ANONYMOUS):
                tickets.remove((started or tickets)[0])
                if not tickets:
                    del self._tickets[key]

    def live(self) -> int:
        with self._lock:
            return sum(map(len, self._tickets.values()))


class RunControl:
    """Who is running a job now, which step it is at, and whether its owner asked it to stop.

    A stop is also written to `stop_file` (when set): on ZeroGPU the job runs in a forked worker whose copy
    of this object never sees the main process's flag, but it does see the file.
    """

    def __init__(self, stop_file=None):
        self._lock = threading.Lock()
        self.owner: Optional[str] = None
        self.running = False
        self.stop_requested = False
        self.stop_file = stop_file
        self.pipe = None
        self.step: Optional[int] = None

    def begin(self, owner: Optional[str]) -> None:
        with self._lock:
            self.owner, self.running, self.stop_requested, self.step = owner, True, False, None
            if self.stop_file is not None:
                self.stop_file.unlink(missing_ok=True)

    def _stopping(self) -> bool:
        return self.stop_requested or (self.stop_file is not None and self.stop_file.exists())

    def attach(self, pipe) -> None:
        with self._lock:
            self.pipe, self.step = pipe, None
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

    def request_stop(self, owner: Optional[str]) -> bool:
        """Stop the running job if it belongs to `owner`; a request without a session (None) stops nothing."""
        with self._lock:
            if owner is None or not self.running or owner != self.owner:
                return False
            self.stop_requested = True
            if self.stop_file is not None:
                self.stop_file.touch()
            if self.pipe is not None:
                self.pipe.request_interrupt()
            return True

    def check(self) -> None:
        """Between the parts of a job: raise if a stop was asked for."""
        if self._stopping():
            raise GenerationInterrupted("stopped by request")


# Where each phase of one video sits on its progress bar: denoising fills the first 90 %.
DENOISE_SHARE = 0.9
PHASES = {"decoding the video": 0.92, "adding sound": 0.94, "writing mp4": 0.96, "measuring motion": 0.98}


class StepReporter:
    """callback_on_step_end: progress in grid points ("step 7/200": `steps` of the request, the flow time each one
    reaches, the last t=1), with the scale of the step that reached it, then the phases after denoising (`phase`);
    it passes stop requests to the pipe."""

    def __init__(self, control: RunControl, steps: Sequence, progress=None, label: str = ""):
        self.control, self.steps, self.progress, self.label = control, list(steps), progress, label
        self.points = len(self.steps) + 1

    def start(self) -> None:
        say(self.progress, 0.0, f"{self.label}step 1/{self.points} · t=0.000 · encoding the prompt…")

    def __call__(self, pipe, i, t, kwargs):
        self.control.at_step(i + 1)
        step = self.steps[i]
        point = i + 2
        say(self.progress, DENOISE_SHARE * point / self.points,
            f"{self.label}step {point}/{self.points} · scale {step.patch.name} · t={step.t + step.dt:.3f}")
        if point == self.points:
            self.phase("decoding the video")
        return kwargs

    def phase(self, name: str) -> None:
        say(self.progress, PHASES.get(name), f"{self.label}{name}…")


@dataclass
class Video:
    """One video of a job: its request (resolved and checked once by the caller), its step plan and its predicted
    seconds (both made once, by `JobRunner.plan`)."""

    req: ResolvedRequest
    steps: list
    seconds: float
    runs: int = 1  # how often the job makes it (Compare times each schedule several times)


@dataclass
class Job:
    owner: Optional[str]
    model: Optional[str]
    videos: List[Video] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(v.seconds * v.runs for v in self.videos)


def owner_of(request) -> Optional[str]:
    """The Gradio session a request comes from (None: a direct call, or an HTTP request without a session)."""
    return getattr(request, "session_hash", None) if request is not None else None


class JobRunner:
    """The app's one worker: admission, the stop control, cost estimates and the videos, over one model holder and
    one output store. `zerogpu.RUNNERS` finds it from a forked ZeroGPU worker, which gets only its id."""

    def __init__(self, holder: ModelHolder, store: OutputStore, max_job_seconds: float = MAX_JOB_SECONDS,
                 max_jobs_per_client: int = MAX_JOBS_PER_CLIENT, queue_size: int = 16):
        self.holder, self.store = holder, store
        self.max_job_seconds = float(max_job_seconds)
        # a queued job waits at most for the jobs ahead of it, each within the limit; one more runs
        self.admission = Admission(max_jobs_per_client, queue_size + 1,
                                   expire_s=(queue_size + 1) * self.max_job_seconds)
        self.run_lock = holder.run_lock  # held while a job runs (and while the holder changes models)
        self.control = RunControl(stop_file=store.root / f".stop-{id(self)}")
        self._fits: Dict[str, Dict[str, float]] = {}
        self.id = id(self)
        zerogpu.RUNNERS[self.id] = self

    # -- the device figure and the estimate
    def fit(self, model: Optional[str] = None) -> Dict[str, float]:
        """Throughput of this server's device: the stored fit of its device type (lumina.costs; a CUDA GPU falls
        back to a typical one), else measured once on the loaded model."""
        model = model or self.holder.default
        if model not in self._fits:
            fit = load_fit(torch.device(self.holder.device).type)
            if fit is None:
                pipe, defaults = self.holder.get(model)
                with self.run_lock:
                    fit = measure_fit(pipe.transformer, pipe.latent_size(defaults.frames, defaults.height,
                                                                         defaults.width))
                log.info("measured throughput of %s on %s: %s", model, self.holder.device, fit)
            self._fits[model] = fit
        return self._fits[model]

    def plan(self, owner: Optional[str], model: Optional[str], requests: Sequence[ResolvedRequest],
             runs: Optional[Sequence[int]] = None) -> Job:
        """Each request's step plan and predicted seconds, once (`runs`: how often each is made, default once);
        a job predicted over `max_job_seconds` (or, on ZeroGPU, a video over one GPU call) is refused here, before
        anything runs."""
        pipe, _ = self.holder.get(model)
        fit = self.fit(model)
        job = Job(owner, model)
        for req, n in zip(requests, runs or [1] * len(requests)):
            steps = plan(req.config)
            seconds = zerogpu.estimate_seconds(pipe.transformer.config, req, pipe.latent_size, fit, steps)
            zerogpu.check_budget(seconds)
            job.videos.append(Video(req, steps, seconds, n))
        if job.seconds > self.max_job_seconds:
            raise InvalidRequestError(
                f"this job would take about {job.seconds:.0f} s on this server ({self.holder.device}); one job may "
                f"take at most {self.max_job_seconds:.0f} s so that others are not kept waiting: use fewer frames, "
                f"a smaller size, fewer steps, fewer cells or the multiscale schedule")
        return job

    # -- running
    @contextlib.contextmanager
    def running(self, owner: Optional[str]) -> Iterator[RunControl]:
        """One job at a time: holds the worker, binds the stop control to `owner`, cleans up after."""
        with self.run_lock:
            self.control.begin(owner)
            try:
                yield self.control
            finally:
                self.control.end()
                self.store.cleanup()
                release_memory()

    def video(self, job: Job, video: Video, progress=None, label: str = "", prefix: str = "") -> dict:
        """One video of `job` into the output store (inside `running`); its sidecar. Nothing stays of a failed one."""
        out = self.store.new_path(prefix)
        try:
            return zerogpu.run_generation(self.id, job.model, video, str(out), progress=progress, label=label)
        except BaseException:
            for leftover in (out, out.with_suffix(".json")):
                leftover.unlink(missing_ok=True)
            raise

    def render(self, model: Optional[str], video: Video, out_path: str, progress=None, label: str = "") -> dict:
        """The work of one video, where the GPU is (see zerogpu.run_generation)."""
        from lumina.generation import generate_video

        pipe, _ = self.holder.get(model)
        reporter = StepReporter(self.control, video.steps, progress, label)
        self.control.attach(pipe)
        reporter.start()
        try:
            return generate_video(pipe, video.req, out_path, callback_on_step_end=reporter,
                                  audio_fn=self.holder.audio_fn, on_phase=reporter.phase)
        finally:
            self.control.pipe = None

    def stop(self, owner: Optional[str]) -> str:
        """Ask `owner`'s running job to stop after its current step (a request without a session stops nothing)."""
        if self.control.request_stop(owner):
            return "■ stopping after the current step…"
        return "nothing of yours is running"
