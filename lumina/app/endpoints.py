"""What the app's buttons do, as plain Python that tests call directly.

`Studio`'s public methods are the app's endpoints: their keyword parameters are the API's parameter names, each turns
its values into typed requests once (resolved and checked by `lumina.app.form`), and runs them as one job on the
`JobRunner`. User mistakes come back as `gr.Error` with the validation message (never a traceback), a stopped job
comes back as a "stopped" status.
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
import statistics
import threading
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import gradio as gr

from lumina import validation as V
from lumina.app.form import (
    COMPARE_SCHEDULES, CUSTOM, GENERATE_SETTINGS, MAX_GRID_SIDE, SCHEDULES, SOUND_NOTE, build_request,
    check_schedule_text, motion_grid_defaults, size_notice, ui_defaults,
)
from lumina.app.jobs import MAX_JOB_SECONDS, MAX_JOBS_PER_CLIENT, PHASES, JobRunner, owner_of, say
from lumina.app.results import (
    CompareState, GridCell, ScaleResult, compare_verdict, measure_motion, object_found, result_status, side_by_side,
    write_tiles, write_waveform,
)
from lumina.app.state import ModelHolder, OutputStore
from lumina.app.vocabulary import model_vocabulary, unseen_words, vocabulary_notice
from lumina.app import zerogpu
from lumina.cache import StepCache
from lumina.errors import GenerationInterrupted, InvalidRequestError, LuminaError
from lumina.media import write_json
from lumina.pipelines.defaults import ModelDefaults
from lumina.sampling.schedule import stages
from lumina.settings import SETTINGS
from lumina.syntax import parse_numbers

log = logging.getLogger("lumina.app")

EXAMPLES_FILE = SETTINGS.examples_file
COMPARE_REPEATS = 3  # timed runs of each schedule; the median and the range are shown


@contextlib.contextmanager
def _as_user_error(name: str):
    try:
        yield
    except gr.Error:
        raise
    except (LuminaError, ValueError, OverflowError) as err:
        raise gr.Error(str(err), print_exception=False) from None
    except Exception as err:  # the server keeps running; details go to its log only
        log.exception("unexpected error in %s", name)
        raise gr.Error(f"unexpected error ({type(err).__name__}: {err}); details are in the server log",
                       print_exception=False) from None


def endpoint(fn):
    """An endpoint: validation errors become gr.Error (shown as a message), anything else a short gr.Error; and the
    job's admission ticket (taken when it joined the queue) is returned when it ends, however it ends. For a
    generator, both hold for what it raises while it runs and end when its last update is sent."""
    signature = inspect.signature(fn)

    def owner(self, args, kwargs):  # Gradio passes the request by position or by name
        return owner_of(signature.bind(self, *args, **kwargs).arguments.get("request"))

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def streamed(self, *args, **kwargs):
            who = owner(self, args, kwargs)
            self.runner.admission.start(who)
            try:
                with _as_user_error(fn.__name__):
                    yield from fn(self, *args, **kwargs)
            finally:
                self.runner.admission.release(who)

        return streamed

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        who = owner(self, args, kwargs)
        self.runner.admission.start(who)
        try:
            with _as_user_error(fn.__name__):
                return fn(self, *args, **kwargs)
        finally:
            self.runner.admission.release(who)

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
    """The app's server side: the job runner (model holder, output store, admission, stop control, costs) and the
    endpoints."""

    def __init__(self, model: str, outputs_dir, keep: int = 100, extra_models: Sequence[str] = (),
                 loader=None, preload: bool = True, audio_fn=None, v2a_dir: Optional[Path] = None,
                 max_job_seconds: float = MAX_JOB_SECONDS, max_jobs_per_client: int = MAX_JOBS_PER_CLIENT,
                 queue_size: int = 16):
        kwargs = {} if loader is None else {"loader": loader}
        holder = ModelHolder(model, extra_models, **kwargs)
        holder.audio_fn = audio_fn  # a V2A model's (frames, fps, prompt) -> waveform; None: no sound
        store = OutputStore(Path(outputs_dir), keep=max(int(keep), MAX_GRID_SIDE ** 2))
        self.runner = JobRunner(holder, store, max_job_seconds, max_jobs_per_client, queue_size)
        self.holder, self.store = holder, store
        self.v2a_dir = v2a_dir  # the Sound tab's V2A model folder; None: no Sound tab
        if preload:
            holder.get()

    # -- what the UI is built from
    @property
    def sound_available(self) -> bool:
        return self.holder.audio_fn is not None

    def model_defaults(self, model: Optional[str] = None) -> ModelDefaults:
        return self.holder.get(model)[1]

    def schedule_choices(self, model: Optional[str] = None) -> List[str]:
        pipe, defaults = self.holder.get(model)
        supported = {p.name for p in pipe.transformer.supported_patch_sizes()}
        named = defaults.named_schedules()
        return [s for s in SCHEDULES if {v for _, v in stages(named[s])} <= supported] + [CUSTOM]

    def vocabulary(self, model: Optional[str] = None) -> Optional[Dict[str, Tuple[str, ...]]]:
        return model_vocabulary(model or self.holder.default)

    def prompt_notice(self, prompt: str, model: Optional[str] = None) -> str:
        return vocabulary_notice(prompt, self.vocabulary(model))

    def motion_grid_defaults(self, model: Optional[str] = None) -> Tuple[str, str]:
        return motion_grid_defaults(self.model_defaults(model))

    def defaults_for_ui(self, model: Optional[str] = None) -> Dict[str, Any]:
        values = ui_defaults(self.model_defaults(model), model or self.holder.default)
        choices = self.schedule_choices(model)
        if values["schedule"] not in choices:
            values["schedule"] = choices[0]
        return values

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

    # -- the examples: rendered once per model, lazily, healing what a killed render left
    def _example_files(self, prompt: str, seed: int) -> Dict[str, Path]:
        folder = self.store.examples_cache(self.holder.default)
        video = folder / (hashlib.sha1(json.dumps([prompt, int(seed)]).encode()).hexdigest()[:16] + ".mp4")
        return {"video": video, "sidecar": video.with_suffix(".json"), "tiles": video.with_suffix(".tiles.png")}

    def _cached_example(self, prompt: str, seed: int) -> Optional[Dict[str, Any]]:
        """The example's files when all are complete (the sidecar, written last and atomically, carries the
        measured motion); None when any is missing."""
        files = self._example_files(prompt, seed)
        try:
            side = json.loads(files["sidecar"].read_text())
        except (OSError, ValueError):
            return None
        if "measured_motion" not in side or not (files["video"].is_file() and files["tiles"].is_file()):
            return None
        values = {**ui_defaults(self.model_defaults()), "prompt": prompt, "seed": int(seed)}
        settings = {"ui": values, **side}
        return {"prompt": prompt, "seed": int(seed), **{k: str(v) for k, v in files.items()}, "settings": settings,
                "status": result_status(settings) + " · a cached example"}

    def example_results(self, examples: Sequence[Sequence[Any]]) -> List[Dict[str, Any]]:
        """The examples rendered so far: [{prompt, seed, video, sidecar, tiles, settings, status}]."""
        return [e for e in (self._cached_example(p, s) for p, s in examples) if e is not None]

    def render_examples(self, examples: Sequence[Sequence[Any]]) -> int:
        """Render the examples not (completely) cached yet, one job each, at the model's defaults; returns how many.
        Every file is written atomically and the sidecar last, so a render killed midway is redone next time."""
        done = 0
        for prompt, seed in examples:
            if self._cached_example(prompt, seed) is not None:
                continue
            files = self._example_files(prompt, seed)
            log.info("rendering the example %r (seed %s) once for this model", prompt, seed)
            pipe, defaults = self.holder.get()
            req, _ = build_request({**self.defaults_for_ui(), "prompt": prompt, "seed": int(seed)}, defaults)
            job = self.runner.plan(None, None, [req])
            with self.runner.running(None):
                side = zerogpu.run_generation(self.runner.id, None, job.videos[0], str(files["video"]))
            write_tiles(files["video"])
            write_json(files["sidecar"], {**side, "measured_motion": measure_motion(files["video"])})
            done += 1
        return done

    # -- stop
    def stop(self, owner: Optional[str]) -> str:
        """Ask `owner`'s running job to stop after its current step; a request without a session stops nothing."""
        return self.runner.stop(owner)

    # -- Generate
    @endpoint
    @takes_generate_settings
    def generate(self, given: Dict[str, Any], progress, request):
        """Text to video. Returns (video mp4, settings JSON file, used seed, settings dict, status).

        Unset values take the model's defaults; `randomize_seed=True` draws a seed from 0..2**32-1.
        """
        owner = owner_of(request)
        _, defaults = self.holder.get(given.get("model"), given.get("memory_mode"))  # one load for both
        values = {**self.defaults_for_ui(given.get("model")), "memory_mode": self.holder.memory_mode,
                  **{k: v for k, v in given.items() if v is not None}}
        if given.get("seed") is None:
            values["seed"] = None  # an empty seed box means "draw one"
        req, notices = build_request(values, defaults, self.sound_available)
        job = self.runner.plan(owner, values["model"], [req])
        vocab = self.vocabulary(values["model"])
        unseen = unseen_words(req.prompt, vocab)
        if unseen:
            notices.append(f"not in this model's training: {', '.join(unseen)}")
            notify("warning", vocabulary_notice(req.prompt, vocab))
        for note in notices:
            notify("info", note)
        try:
            with self.runner.running(owner):
                sidecar = self.runner.video(job, job.videos[0], progress)
                video = self.store.root / sidecar["video"]
                say(progress, PHASES["measuring motion"], "measuring motion…")
                measured = measure_motion(video)
                found = object_found(video) if vocab else None
        except GenerationInterrupted as err:
            notify("warning", f"stopped: {err}")
            return None, None, req.seed, None, f"■ stopped ({err}); the previous result stays"
        ui = {**values, "seed": req.seed, "randomize_seed": False}
        if values["custom_size"]:
            ui["width"], ui["height"] = req.width, req.height
        settings = {"ui": ui, "measured_motion": measured, "object_found": found, **sidecar}
        if sidecar.get("prompt_truncated"):
            notices.append("the prompt was longer than 256 tokens and was truncated")
            notify("warning", notices[-1])
        status = result_status(settings)
        if notices:
            status += "\nNote: " + "; ".join(notices)
        return str(video), str(video.with_suffix(".json")), req.seed, settings, status

    # -- what Compare and the motion grid share
    def _shared_values(self, prompt, seed, steps, resolution, frames, negative_prompt, model, **extra):
        """Generate-form values for a job whose videos share one prompt and seed; (values, defaults)."""
        if seed is None or seed == "":
            raise InvalidRequestError("give a seed: every video of this job uses the same one")
        defaults = self.model_defaults(model)
        values = {**self.defaults_for_ui(model), "length_mode": "frames", "randomize_seed": False}
        values.update({k: v for k, v in dict(prompt=prompt, seed=seed, steps=steps, resolution=resolution,
                                             frames=frames, negative_prompt=negative_prompt, model=model,
                                             **extra).items() if v is not None})
        return values, defaults

    # -- Compare
    def _compare_worker(self, job, names: List[str], repeats: int, events: "queue.Queue") -> None:
        try:
            with self.runner.running(job.owner) as control:
                warm_up, *videos = job.videos
                side = self.runner.video(job, warm_up, _Relay(events, "warm-up"))  # untimed: loads and warms up
                for path in self.store.root.glob(Path(side["video"]).stem + ".*"):
                    path.unlink(missing_ok=True)
                for round_ in range(repeats):  # round-robin, so load on the machine falls on every schedule alike
                    for name, video in zip(names, videos):
                        control.check()
                        side = self.runner.video(job, video, _Relay(events, name))
                        if round_ == 0:
                            events.put(("progress", name, "measuring motion…"))
                            events.put(("first", name, side, measure_motion(self.store.root / side["video"])))
                        else:
                            for path in self.store.root.glob(Path(side["video"]).stem + ".*"):
                                path.unlink(missing_ok=True)
                            events.put(("again", name, side["timings"]["denoise"]))
            events.put(("end", None))
        except GenerationInterrupted as err:
            events.put(("end", err))
        except BaseException as err:  # re-raised by the generator, which turns it into a message
            events.put(("error", err))

    @endpoint
    def compare(self, prompt: str, seed: Optional[float] = 0, schedules: Sequence[str] = COMPARE_SCHEDULES,
                steps: Optional[float] = None, resolution: Optional[str] = None, frames: Optional[float] = None,
                repeats: Optional[float] = COMPARE_REPEATS, negative_prompt: str = "", model: Optional[str] = None,
                cache: Optional[str] = None, request: gr.Request = None) -> Iterator["CompareState"]:
        """The same prompt and seed with several patch schedules, after an untimed warm-up, each run `repeats`
        times (round-robin) for its median denoising time and their range. With a step `cache` ("fast",
        "fbc:0.1", ...), every schedule also runs with it, as rows "schedule + cache" of the table and the movie.

        Yields a CompareState whenever a schedule starts, reports a step or finishes a run; the last one has the
        status (what the timings show) and the side-by-side mp4 of all finished schedules.
        """
        chosen = set(schedules or ())
        unknown = sorted(chosen - set(COMPARE_SCHEDULES))
        names = [s for s in COMPARE_SCHEDULES if s in chosen]
        if unknown or not names:
            raise InvalidRequestError(f"schedules: choose some of {list(COMPARE_SCHEDULES)}")
        repeats = V.as_int("repeats", COMPARE_REPEATS if repeats is None else repeats)
        if not 1 <= repeats <= 9:
            raise InvalidRequestError(f"repeats={repeats}: must be an integer in 1..9")
        values, defaults = self._shared_values(prompt, seed, steps, resolution, frames, negative_prompt, model)
        requests = [build_request({**values, "schedule": name}, defaults)[0] for name in names]
        step_cache = StepCache.parse(cache)
        if step_cache is not None:
            requests += [dataclasses.replace(r, cache=step_cache) for r in requests]
            names = names + [f"{name} + {step_cache.label}" for name in names]
        warm_up = dataclasses.replace(requests[0], config=requests[0].config.replace(steps=2), audio=False)
        job = self.runner.plan(owner_of(request), values["model"], [warm_up] + requests,
                               runs=[1] + [repeats] * len(requests))
        events: "queue.Queue" = queue.Queue()
        threading.Thread(target=self._compare_worker, args=(job, names, repeats, events), name="compare",
                         daemon=True).start()
        runs: Dict[str, Tuple[Dict[str, Any], Optional[float], List[float]]] = {}
        state = CompareState([], "warm-up", "waiting for the model…", "warming up (an untimed run)…")
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
                if kind == "first":
                    runs[data[0]] = (data[1], data[2], [data[1]["timings"]["denoise"]])
                else:
                    runs[data[0]][2].append(data[1])
                results = self._scale_results([(n, *runs[n]) for n in names if n in runs])
                state = dataclasses.replace(state, results=results, running=None, progress="")
            yield state
        stopped = data[0]
        done = min((len(r[2]) for r in runs.values()), default=0)
        if stopped is not None:
            notify("warning", f"stopped: {stopped}")
            status = f"■ stopped ({stopped}); {len(runs)} of {len(names)} schedules rendered"
        else:
            status = f"✓ done: {len(runs)} schedules, each timed {done}x after a warm-up. {compare_verdict(state.results)}"
        movie = side_by_side(state.results, self.store.new_path("compare-")) if runs else None
        yield CompareState(state.results, None, "", status, movie, done=True)

    def _scale_results(self, runs) -> List[ScaleResult]:
        """(schedule, first run's sidecar, measured motion, denoise seconds of every run) -> panels, timed by the
        median of their runs and compared with 1x2's median (or the first schedule's)."""
        median = {name: statistics.median(times) for name, _, _, times in runs}
        reference = "1x2" if "1x2" in median else runs[0][0]
        results = []
        for name, side, motion, times in runs:
            video = self.store.root / side["video"]
            results.append(ScaleResult(
                schedule=name, video=str(video), sidecar=str(video.with_suffix(".json")),
                seconds=side["timings"]["total"], runs=list(times), relative=median[name] / max(median[reference], 1e-9),
                reference=f"vs {reference}", tokens_per_step=dict(side["tokens_per_step"]), motion=motion))
        return results

    # -- the motion grid
    @endpoint
    def motion_grid(self, prompt: str, seed: Optional[float] = 0, positive: Optional[str] = None,
                    negative: Optional[str] = None, neg_motion_until: Optional[float] = None,
                    steps: Optional[float] = None, resolution: Optional[str] = None, frames: Optional[float] = None,
                    negative_prompt: str = "", model: Optional[str] = None, progress=gr.Progress(),
                    request: gr.Request = None) -> Tuple[List[GridCell], str]:
        """One prompt and seed over positive x negative motion scores (unset: the model's own grid, see
        `motion_grid_defaults`): ([GridCell] row-major by negative, status)."""
        default_pos, default_neg = self.motion_grid_defaults(model)
        pos = parse_numbers("positive scores", default_pos if positive in (None, "") else positive, MAX_GRID_SIDE)
        neg = parse_numbers("negative scores", default_neg if negative in (None, "") else negative, MAX_GRID_SIDE)
        values, defaults = self._shared_values(prompt, seed, steps, resolution, frames, negative_prompt, model,
                                               neg_motion_until=neg_motion_until)
        pairs = [(p, n) for n in neg for p in pos]
        requests = [build_request({**values, "motion": p, "neg_motion": n, "neg_motion_after": p}, defaults)[0]
                    for p, n in pairs]
        owner = owner_of(request)
        job = self.runner.plan(owner, values["model"], requests)
        cells: List[GridCell] = []
        status = f"✓ done: {len(pairs)} cells"
        try:
            with self.runner.running(owner) as control:
                for k, ((p, n), video) in enumerate(zip(pairs, job.videos)):
                    control.check()
                    label = f"cell {k + 1}/{len(pairs)} (motion {p:g}, negative {n:g}) · "
                    side = self.runner.video(job, video, progress, label)
                    path = self.store.root / side["video"]
                    say(progress, PHASES["measuring motion"], label + "measuring motion…")
                    cells.append(GridCell(p, n, str(path), str(path.with_suffix(".json")), measure_motion(path),
                                          write_tiles(path)))
        except GenerationInterrupted as err:
            notify("warning", f"stopped: {err}")
            status = f"■ stopped ({err}); {len(cells)} of {len(pairs)} cells finished"
        return cells, status

    # -- Sound
    def sound_default_steps(self) -> Optional[int]:
        """The V2A model's own step count (from its model_index.json; None without a V2A model)."""
        if self.v2a_dir is None:
            return None
        return int(json.loads((Path(self.v2a_dir) / "model_index.json").read_text())["default_steps"])

    @endpoint
    def sound(self, video: Optional[str], prompt: Optional[str] = "", steps: Optional[float] = None,
              seed: Optional[float] = 0, progress=gr.Progress(),
              request: gr.Request = None) -> Tuple[Optional[str], Optional[str], Optional[Dict[str, Any]], str]:
        """Lumina-V2A's soundtrack for an uploaded video (up to 10 s, any fps): (mp4 with sound, waveform PNG,
        used settings, status). `steps` unset: the V2A model's default; `prompt` optional."""
        if self.v2a_dir is None:
            raise InvalidRequestError(SOUND_NOTE)
        if not video:
            raise InvalidRequestError(f"upload a video first ({', '.join(V.VIDEO_SUFFIXES)}; up to "
                                      f"{V.MAX_V2A_SECONDS:g} s)")
        steps = self.sound_default_steps() if steps is None else V.as_int("steps", steps)
        V.check_steps(steps)
        seed = V.as_int("seed", 0 if seed is None else seed)
        V.check_seed(seed)
        prompt = str(prompt or "")
        if Path(video).is_file() and Path(video).stat().st_size == 0:
            raise InvalidRequestError("the uploaded file is empty (0 bytes); upload a video")
        V.check_video_upload(video)
        out = self.store.new_path("sound-")
        owner = owner_of(request)
        try:
            with self.runner.running(owner) as control:
                control.check()
                say(progress, 0.1, "making sound with Lumina-V2A…")
                info = zerogpu.run_sound(str(self.v2a_dir), str(video), str(out), prompt or None, steps, seed)
                control.check()  # the V2A model runs in one piece: a stop asked meanwhile drops its result
                say(progress, 0.95, "drawing the waveform…")
                image = write_waveform(out)
        except GenerationInterrupted as err:
            for leftover in self.store.root.glob(out.stem + ".*"):
                leftover.unlink(missing_ok=True)
            return None, None, None, f"■ stopped ({err})"
        settings = {"prompt": prompt, "steps": steps, "seed": seed, "model": Path(self.v2a_dir).name, **info,
                    "video": out.name}
        status = (f"✓ {info['seconds']:.2f} s of sound for {info['frames']} frames at {info['fps']:g} fps · "
                  f"steps {steps} · seed {seed} · {info['total_seconds']:.1f} s")
        if info.get("contacts") is not None:
            hits = info["contacts"]
            status += (f" · hits on {len(hits)} contact{'s' if len(hits) != 1 else ''} seen"
                       + (f" at {', '.join(f'{t:.2f}' for t in hits[:8])}{' …' if len(hits) > 8 else ''} s" if hits else ""))
        return str(out), image, settings, status
