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
import queue
import threading
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import gradio as gr

from lumina import validation as V
from lumina.errors import GenerationInterrupted, InvalidRequestError, LuminaError
from lumina.app import zerogpu
from lumina.app.form import (
    COMPARE_SCHEDULES, CUSTOM, GENERATE_SETTINGS, MAX_GRID_SIDE, SCHEDULES, SOUND_NOTE, build_request,
    check_schedule_text, motion_grid_defaults, size_notice, ui_defaults,
)
from lumina.app.results import (
    CompareState, GridCell, ScaleResult, measure_motion, result_status, side_by_side, write_tiles, write_waveform,
)
from lumina.app.state import ClientQuota, ModelHolder, OutputStore, say
from lumina.app.vocabulary import model_vocabulary, unseen_words, vocabulary_notice
from lumina.generation import ResolvedRequest
from lumina.pipelines.defaults import ModelDefaults
from lumina.pipelines.memory import release_memory
from lumina.sampling.schedule import stages
from lumina.settings import SETTINGS
from lumina.syntax import parse_numbers

log = logging.getLogger("lumina.app")

EXAMPLES_FILE = SETTINGS.examples_file
MAX_JOB_SECONDS = 900.0  # one job (a video, a comparison, a grid) may hold the worker this long, on any device
MAX_JOBS_PER_CLIENT = 2  # queued or running, per Gradio session


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


def takes_generate_settings(fn):
    """`fn(self, given, progress, request)` as a method whose parameters are GENERATE_SETTINGS (in order, with their
    API defaults), `progress` and `request`: Gradio reads the `/generate` API's names and defaults, and where to
    pass the progress tracker and the request, from this signature, so the map alone says what the API takes."""
    P = inspect.Parameter
    signature = inspect.Signature(
        [P("self", P.POSITIONAL_OR_KEYWORD)]
        + [P(name, P.POSITIONAL_OR_KEYWORD, default=s.default, annotation=s.annotation)
           for name, s in GENERATE_SETTINGS.items()]
        + [P("progress", P.POSITIONAL_OR_KEYWORD, default=gr.Progress()),
           P("request", P.POSITIONAL_OR_KEYWORD, default=None, annotation=gr.Request)])

    @functools.wraps(fn)
    def method(self, *args, **kwargs):
        call = signature.bind(self, *args, **kwargs)
        call.apply_defaults()
        given = {name: call.arguments[name] for name in GENERATE_SETTINGS}
        return fn(self, given, call.arguments["progress"], call.arguments["request"])

    method.__signature__ = signature
    method.__annotations__ = {name: s.annotation for name, s in GENERATE_SETTINGS.items()} | {"request": gr.Request}
    return method


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


class _Relay:
    """A progress callable (like gr.Progress) that hands each update to the comparison's event queue."""

    def __init__(self, events: "queue.Queue", name: str):
        self.events, self.name = events, name

    def __call__(self, fraction=None, desc: str = "") -> None:
        self.events.put(("progress", self.name, desc))


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
        pipe, _ = self.holder.get(model)
        fit = self.holder.fit(model)
        seconds = sum(zerogpu.estimate_seconds(pipe.transformer.config, req, pipe.latent_size, fit) for req in requests)
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
    @takes_generate_settings
    def generate(self, given: Dict[str, Any], progress, request):
        """Text to video. Returns (video mp4, settings JSON file, used seed, settings dict, status).

        Unset values take the model's defaults; `randomize_seed=True` draws a seed from 0..2**32-1.
        """
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
                    label = f"cell {k + 1}/{len(requests)} (+{p:g}/-{n:g}) · "
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
        if info.get("contacts") is not None:
            hits = info["contacts"]
            status += (f" · hits on {len(hits)} contact{'s' if len(hits) != 1 else ''} seen"
                       + (f" at {', '.join(f'{t:.2f}' for t in hits[:8])}{' …' if len(hits) > 8 else ''} s" if hits else ""))
        return str(out), image, settings, status


def _owner(request) -> Optional[str]:
    return getattr(request, "session_hash", None) if request is not None else None
