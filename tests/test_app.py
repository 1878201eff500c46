"""The Gradio app: served in a subprocess and driven with gradio_client, and its handlers called directly.

Uses the random tiny pipeline (64x64, 8 frames), so everything runs in seconds on a CPU.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

gr = pytest.importorskip("gradio")

from lumina.app import zerogpu  # noqa: E402
from lumina.app.endpoints import Studio  # noqa: E402
from lumina.app.form import (  # noqa: E402
    COMPARE_SCHEDULES, GENERATE_SETTINGS, build_request, check_schedule_text, cfg_schedule, frames_notice,
    motion_grid_defaults, neg_motion_schedule, size_choices, ui_defaults,
)
from lumina.app.jobs import Admission  # noqa: E402
from lumina.app.results import object_found, result_status  # noqa: E402
from lumina.app.state import OutputStore, check_model_spec  # noqa: E402
from lumina.app.ui.compare import compare_outputs  # noqa: E402
from lumina.app.ui.generate import FIELDS, reuse_settings  # noqa: E402
from lumina.app.ui.motion import motion_outputs  # noqa: E402
from lumina.app.vocabulary import model_vocabulary, unseen_words, vocabulary_notice  # noqa: E402
from lumina.errors import GenerationInterrupted, ModelFilesError  # noqa: E402
from lumina.media import read_audio, read_video, write_mp4  # noqa: E402
from lumina.pipelines.defaults import ModelDefaults  # noqa: E402
from lumina.pipelines.loading import TINY_DIR  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "a red circle moving right on a navy background"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python app.py` in a subprocess on a free localhost port."""

    def __init__(self, model_dir: Path, workdir: Path, extra_args=()):
        self.model = Path(model_dir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = workdir / "app.log"
        env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1",
               "GRADIO_TEMP_DIR": str(workdir / "gradio-tmp"), "PYTHONPATH": str(ROOT)}
        env.pop("GRADIO_SERVER_PORT", None)
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "app.py"), "--model", str(model_dir), "--port", str(self.port),
             "--outputs", str(workdir / "outputs"), *extra_args],
            cwd=workdir, env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT,
        )

    def wait(self, timeout: float = 240.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"app.py exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url, timeout=5) as r:
                    if r.status == 200:
                        return self.url
            except OSError:
                time.sleep(0.5)
        pytest.fail(f"app.py did not answer within {timeout:.0f} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def server(random_pipeline_dir, tmp_path_factory):
    """Started before the in-process tests so that both use the two cores; waited for where needed."""
    srv = Server(random_pipeline_dir, tmp_path_factory.mktemp("app_server"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def studio(server, random_pipeline_dir, tmp_path_factory):
    return Studio(str(random_pipeline_dir), tmp_path_factory.mktemp("studio_outputs"), keep=40)


# ---------------------------------------------------------------- handlers, called directly

def _message(excinfo) -> str:
    return str(excinfo.value.message)


@pytest.mark.parametrize("kwargs, words", [
    ({"prompt": "   "}, "prompt is empty"),
    ({"prompt": "x", "frames": 7}, "multiple of 8"),
    ({"prompt": "x", "resolution": "1024x1024"}, "larger than this model's 128 budget"),
    ({"prompt": "x", "custom_size": True, "width": 100, "height": 1000}, "aspect ratio"),
    ({"prompt": "x", "schedule": "custom", "custom_schedule": "2x4, 1x2"}, "needs a switch time"),
    ({"prompt": "x", "schedule": "3x3"}, "choose one of"),
    ({"prompt": "x", "seed": 2 ** 32}, "0..4294967295"),
    ({"prompt": "x", "steps": 1}, "2..200"),
    ({"prompt": "x", "guidance": 80}, "cfg=80.0 (a stage of cfg [80.0, 0.0]): must be a number in 0..50"),
    ({"prompt": "x", "fps": 0}, "fps=0"),
    ({"prompt": "x", "shared_noise": 1.0}, "shared noise=1.0: must be a number in 0..0.95"),
    ({"prompt": "x", "length_mode": "seconds", "duration": -1}, "duration=-1: must be more than 0"),
    ({"prompt": "x", "add_sound": True}, "video-to-audio"),
    ({"prompt": "x", "memory_mode": "model offload"}, "not available on cpu"),
    ({"prompt": "x", "model": "/nowhere"}, "not available here"),
    ({"prompt": "x", "length_mode": "seconds", "duration": 1e308}, "duration=1e+308: must be more than 0 and at most"),
    ({"prompt": "x", "steps": "lots"}, "steps='lots': not a number"),
    ({"prompt": "x", "guidance": float("inf")}, "guidance=inf: must be a number"),
    ({"prompt": "x", "guidance_until": 2}, "guidance until=2.0: must be a number in 0..1"),
])
def test_bad_input_gives_a_clear_message(studio, kwargs, words):
    with pytest.raises(gr.Error) as excinfo:
        studio.generate(**kwargs)
    message = _message(excinfo)
    assert words in message
    assert "Traceback" not in message and "File \"" not in message


def test_request_building_snaps_sizes_and_rounds_durations():
    defaults = ModelDefaults(width=64, height=64, frames=8, fps=8, max_resolution=128, steps=4)
    values = {**ui_defaults(defaults), "prompt": "x", "custom_size": True, "width": 70, "height": 50,
              "length_mode": "seconds", "duration": 1.3, "schedule": "custom", "custom_schedule": "2x4, 1x2@0.5"}
    req, notices = build_request(values, defaults)
    assert (req.width, req.height, req.frames) == (64, 64, 8)
    assert any("snapped to 64x64" in n for n in notices) and any("8 frames" in n for n in notices)
    assert req.config.cfg == (20.0, (0.2, 0.0)) and req.config.neg_motion == (2.0, (0.05, 6.0))
    assert req.config.patch == ("2x4", (0.5, "1x2"))  # typed values, parsed once at the edge
    assert cfg_schedule(7, 1) == 7 and cfg_schedule(7, 0) == 0.0 and neg_motion_schedule(2, 1, 6) == 2
    # a higher motion score keeps the preset's negative schedule (as the CLI does), unless told to follow it
    assert build_request({**values, "motion": 12}, defaults)[0].config.neg_motion == (2.0, (0.05, 6.0))
    after = build_request({**values, "motion": 12, "neg_motion_after": 12}, defaults)[0]
    assert after.config.neg_motion == (2.0, (0.05, 12.0))
    assert neg_motion_schedule(2, 0.05, 8) == (2, (0.05, 8)) and neg_motion_schedule(2, 0, 8) == 8
    assert "1x3" in check_schedule_text("custom", "2x4, 1x3@0.5") and check_schedule_text("2x2").startswith("✓")
    assert "16 frames" in frames_notice("seconds", 2, None, 8)
    assert size_choices(defaults)[0][1] == "128x128" and ("64x64 (default)", "64x64") in size_choices(defaults)
    drawn = {build_request({**values, "randomize_seed": True, "seed": 5}, defaults)[0].seed for _ in range(3)}
    assert len(drawn) > 1 and all(0 <= d <= 2 ** 32 - 1 for d in drawn)


def test_one_map_drives_the_generate_form_its_api_and_its_docs():
    """GENERATE_SETTINGS alone says what /generate takes: Studio.generate's parameters, the tab's components (one
    factory each), the form's starting values and the lists in README.md and docs/app.md, all in its order."""
    names = list(GENERATE_SETTINGS)
    assert list(inspect.signature(Studio.generate).parameters) == ["self", *names, "progress", "request"]
    assert list(FIELDS) == names and list(ui_defaults(ModelDefaults())) == names
    readme = (ROOT / "README.md").read_text().split("\n## The app\n", 1)[1].split("\n## ", 1)[0]
    listed = readme.split("`/generate` takes:", 1)[1].split("\n\n", 1)[0]
    row = next(line for line in (ROOT / "docs" / "app.md").read_text().splitlines()
               if line.startswith("| `/generate` |"))
    for text in (listed, row.split("|")[2]):  # the names, not those inside a remark in parentheses
        assert re.findall(r"`(\w+)`", re.sub(r"\([^)]*\)", "", text)) == names


def test_generate_and_reuse(studio):
    video, sidecar, seed, settings, status = studio.generate(prompt=PROMPT, seed=42, randomize_seed=False,
                                                             shared_noise=0.4)
    frames, fps = read_video(video)
    assert frames.shape == (8, 64, 64, 3) and fps == 8 and seed == 42 and status.startswith("✓ seed 42 · 64x64")
    assert "*" not in status and "`" not in status  # plain text, also for API callers
    assert settings["measured_motion"] > 0 and f"measured motion {settings['measured_motion']:.1f}" in status
    saved = json.loads(Path(sidecar).read_text())
    assert saved["request"]["seed"] == 42 and saved["sample_config"]["sharedNoise"] == 0.4
    entry = {"settings": settings}
    reused = dict(zip(GENERATE_SETTINGS, reuse_settings(entry)))
    assert reused["prompt"] == PROMPT and settings["ui"]["randomize_seed"] is False
    assert reused["neg_motion_after"] == settings["ui"]["neg_motion_after"] == 6.0 and reused["shared_noise"] == 0.4
    older = {"settings": {"ui": {k: v for k, v in settings["ui"].items()
                                 if k not in ("neg_motion_after", "shared_noise")}}}
    reused = dict(zip(GENERATE_SETTINGS, reuse_settings(older)))  # made before those settings: positive, independent
    assert reused["neg_motion_after"] == reused["motion"] and reused["seed"] == 42 and reused["shared_noise"] == 0.0


def test_stop_interrupts_only_its_owners_generation(studio):
    """Stop is bound to the job's owner: another session, or a request without one, stops nothing."""
    result = {}

    def run():
        result["value"] = studio.generate(prompt=PROMPT, seed=1, steps=200, schedule="2x4",
                                          request=gr.Request(session_hash="alice"))

    worker = threading.Thread(target=run)
    worker.start()
    control = studio.runner.control
    deadline = time.monotonic() + 60
    while not (control.running and (control.step or 0) >= 2) and worker.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert studio.stop(None) == "nothing of yours is running" and studio.stop("bob") == "nothing of yours is running"
    assert not control.stop_requested
    assert "stopping" in studio.stop("alice")
    worker.join(60)
    video, sidecar, seed, settings, status = result["value"]
    assert video is None and "stopped" in status and seed == 1
    assert control.step < 199
    assert studio.stop("alice") == "nothing of yours is running"  # the next run (compare, below) starts normally
    assert not control.stop_file.exists()


def test_progress_counts_the_steps_asked_for_and_names_the_phases(studio):
    """4 steps show as 1/4 .. 4/4 (grid points: 200 steps end at 200/200, never /199), the last reaching t=1, then
    decoding, writing and measuring, each its own update, with the bar moving forward."""
    said = []
    studio.generate(prompt=PROMPT, seed=2, steps=4, schedule="1x2",
                    progress=lambda fraction=None, desc="": said.append((fraction, desc)))
    steps = [d for f, d in said if d.startswith("step ")]
    assert [d.split(" · ")[0] for d in steps] == ["step 1/4", "step 2/4", "step 3/4", "step 4/4"]
    assert steps[0].endswith("encoding the prompt…") and steps[-1].endswith("t=1.000")
    phases = [d for f, d in said if not d.startswith("step ")]
    assert phases == ["decoding the video…", "writing mp4…", "measuring motion…"]
    fractions = [f for f, _ in said]
    assert fractions == sorted(fractions) and fractions[-1] < 1


def test_stop_reaches_a_forked_worker(studio):
    """ZeroGPU runs the job in a forked process: a stop asked for in the parent must still end it."""
    import multiprocessing

    from lumina.generation import GenerationRequest, resolve_request

    ctx = multiprocessing.get_context("fork")
    answer = ctx.Queue()
    runner = studio.runner
    control = runner.control
    job = runner.plan("alice", None, [resolve_request(GenerationRequest(prompt=PROMPT, steps=200, seed=0,
                                                                        schedule="2x4"), studio.model_defaults())])

    def worker():
        import torch

        torch.set_num_threads(1)  # OpenMP's thread pool does not survive a fork
        try:
            runner.render(None, job.videos[0], str(studio.store.new_path()))
            answer.put(("finished", control.step))
        except GenerationInterrupted:
            answer.put(("stopped", control.step))

    control.begin("alice")
    try:
        child = ctx.Process(target=worker)
        child.start()
        assert control.request_stop("alice")  # sets the parent's flag; the child can only see the stop file
        outcome, step = answer.get(timeout=120)
        child.join(30)
    finally:
        control.end()
    assert outcome == "stopped" and step < 199


def test_compare_fills_each_panel_and_times_by_the_median_of_repeated_runs(studio):
    states = list(studio.compare(prompt=PROMPT, seed=3, schedules=list(COMPARE_SCHEDULES), steps=3,
                                 resolution="32x32", repeats=3))
    counts = [len(state.results) for state in states]
    assert counts == sorted(counts) and set(counts) == {0, 1, 2, 3, 4}
    assert states[0].running == "warm-up" and states[0].status.startswith("warming up")
    for state in states[1:-1]:  # progress belongs to the one schedule that is running and not yet finished
        if state.running not in (None, "warm-up") and len(state.results) < 4:
            assert state.running not in {r.schedule for r in state.results}
    final = states[-1]
    results = final.results
    assert [r.schedule for r in results] == list(COMPARE_SCHEDULES)
    assert final.status.startswith("✓ done: 4 schedules, each timed 3x after a warm-up.")
    by_name = {r.schedule: r for r in results}
    assert by_name["1x2"].relative == pytest.approx(1.0)
    assert by_name["2x4"].tokens_per_step["2x4"] < by_name["1x2"].tokens_per_step["1x2"]
    for r in results:
        assert Path(r.video).exists() and r.motion is not None and r.motion >= 0
        assert len(r.runs) == 3 and all(t > 0 for t in r.runs) and r.denoise == sorted(r.runs)[1]  # the median
        assert r.relative == pytest.approx(r.denoise / by_name["1x2"].denoise)
        assert f"median of 3 ({min(r.runs):.2f}-{max(r.runs):.2f} s)" in r.label and "vs 1x2" in r.label
    # the status claims only what the runs show: the fastest median, and whether its runs stand clear of the others
    fastest = min(results, key=lambda r: r.denoise)
    clear = all(min(r.runs) > max(fastest.runs) for r in results if r is not fastest)
    assert f"{fastest.schedule} " in final.status
    assert ("in every run" in final.status) == clear and ("no clear speed difference" in final.status) == (not clear)
    assert not list(studio.store.root.glob("*.partial"))  # the repeats' own files are gone
    # one mp4 of the four, two by two, each 32x32 clip scaled to 192 px over a 28 px label band
    frames, fps = read_video(final.side_by_side)
    assert frames.shape == (8, 2 * (192 + 28) + 4, 2 * 192 + 4, 3) and fps == 8
    band = frames[0, 192 + 4:192 + 28, :192]
    assert (band < 100).any() and (band > 200).any()  # dark label text on white
    outputs = compare_outputs(final, COMPARE_SCHEDULES)
    assert len(outputs) == 2 * len(COMPARE_SCHEDULES) + 3 and len(outputs[-3]) == 4
    running = next(state for state in states if state.running == "2x2" and state.progress.startswith("step")
                   and len(state.results) == 1)
    captions = [c["value"] for c in compare_outputs(running, COMPARE_SCHEDULES)[4:8]]
    assert "running: step" in captions[1] and not any("running" in c for k, c in enumerate(captions) if k != 1)
    assert "denoise" in captions[0] and captions[2].endswith("waiting")


def test_motion_grid_is_3x3_by_default(studio):
    cells, status = studio.motion_grid(prompt=PROMPT, seed=5, steps=2, resolution="32x32")
    positive, negative = studio.motion_grid_defaults()
    pos, neg = [float(v) for v in positive.split(",")], [float(v) for v in negative.split(",")]
    assert len(pos) == len(neg) == 3 and len(cells) == 9 and status == "✓ done: 9 cells"
    assert {(c.positive, c.negative) for c in cells} == {(p, n) for p in pos for n in neg}
    assert all(c.measured is not None and "measured" in c.label for c in cells)
    assert all(Path(c.tiles).exists() for c in cells)
    grid, plot, table, files, _ = motion_outputs(cells, status, root="http://host:1")
    assert grid.count("<video") == 9 and grid.count("<tr>") == 4  # a header row and a row per negative score
    assert all(f"motion {p:g}" in grid for p in pos) and all(f"negative {n:g}" in grid for n in neg)
    assert all(c.label in grid for c in cells)  # the whole caption, requested -> measured
    assert "src='gradio_api" not in grid and grid.count("src='http://host:1/gradio_api/file=") == 9  # absolute links
    assert files == [c.video for c in cells] and len(table) == 9 and "gap" not in " ".join(table.columns)
    assert list(table["video"]) == [f"http://host:1/gradio_api/file={c.video}" for c in cells]
    from PIL import Image

    with Image.open(plot) as image:  # a keyed legend: each negative score's colour beside its name
        pixels = np.asarray(image.convert("RGB"))
    from lumina.app.results import PLOT_COLOURS

    for colour in PLOT_COLOURS[:3]:
        key = np.all(pixels[:, -140:] == colour, axis=-1)  # the legend column, right of the plot area
        assert key.sum() >= 100, colour
    with pytest.raises(gr.Error, match="not a number"):
        studio.motion_grid(prompt=PROMPT, positive="2, lots")


def test_motion_explorer_starts_in_the_models_regime():
    assert motion_grid_defaults(ModelDefaults.read(TINY_DIR)) == ("2, 6, 12", "0, 6, 20")  # tiny: negative 20
    release = ModelDefaults()
    motion = float(release.sample_config().motion)
    assert motion_grid_defaults(release)[0] == f"{motion / 3:g}, {motion:g}, {2 * motion:g}"
    assert len(motion_grid_defaults(release)[1].split(",")) == 3


def test_vocabulary_comes_from_the_world_and_unseen_words_are_named(random_pipeline_dir):
    from lumina_research.world import BACKGROUNDS, COLORS, MOTIONS, SHAPES

    vocab = model_vocabulary("tiny")
    assert vocab == {"colours": tuple(COLORS), "shapes": SHAPES, "backgrounds": tuple(BACKGROUNDS),
                     "motions": MOTIONS}
    assert [len(v) for v in vocab.values()] == [9, 4, 6, 7]
    assert model_vocabulary(str(random_pipeline_dir)) is None  # no shape-world training: no list, no notice
    for item in json.loads((ROOT / "examples" / "prompts.json").read_text()):
        assert unseen_words(item["prompt"], vocab) == [], item["prompt"]
    assert unseen_words("a yellow hexagon spinning on a white background", vocab) == [
        "hexagon (shape)", "spinning (motion)", "white background"]
    assert unseen_words("two red circles on a blue background and a dark red star", vocab) == ["dark red (colour)"]
    # every word outside the model's vocabulary and its captions' words, not only those on the app's own lists
    assert unseen_words("a dog running on a beach", vocab) == ["dog", "running", "beach"]
    assert unseen_words("a spaceship flying over a city at sunset", vocab) == [
        "spaceship", "flying (motion)", "city", "sunset"]
    assert unseen_words("a small red circle drifting to the left on a dark green backdrop", vocab) == []
    assert "white background" in vocabulary_notice("a red circle on a white background", vocab)
    assert vocabulary_notice("a red circle on a white background", None) == ""


def test_outputs_are_unique_and_old_ones_removed(tmp_path):
    store = OutputStore(tmp_path, keep=3)
    paths = [store.new_path() for _ in range(5)]
    assert len(set(paths)) == 5
    for k, p in enumerate(paths):
        p.write_bytes(b"x")
        p.with_suffix(".json").write_text("{}")
        p.with_suffix(".tiles.png").write_bytes(b"png")
        os.utime(p, (k, k))
    store.cleanup()
    assert sorted(tmp_path.glob("*.mp4")) == sorted(paths[2:]) and len(list(tmp_path.glob("*.json"))) == 3
    assert len(list(tmp_path.glob("*.png"))) == 3


def test_pruning_touches_only_the_apps_own_files(random_pipeline_dir, tmp_path):
    """The user's own videos (older than everything), documents and backups in --outputs survive a Generate that
    prunes; only the oldest of the app's own videos goes, with the files beside it."""
    own = Studio(str(random_pipeline_dir), tmp_path, keep=25)
    clip = np.zeros((8, 32, 32, 3), np.uint8)
    users = []
    for k in range(30):
        video = write_mp4(tmp_path / f"holiday_{k:02d}.mp4", clip, 8)
        users += [video, video.with_suffix(".docx"), video.with_suffix(".bak"), video.with_suffix(".json")]
        for path in users[-4:]:
            if not path.exists():
                path.write_text("mine")
            os.utime(path, (k, k))
    apps = []
    for k in range(25):
        video = write_mp4(own.store.new_path(), clip, 8)
        video.with_suffix(".json").write_text("{}")
        os.utime(video, (1000 + k, 1000 + k))
        apps.append(video)
    out = own.generate(prompt=PROMPT, seed=1, steps=2)[0]
    assert all(path.exists() for path in users), [p.name for p in users if not p.exists()]
    assert not apps[0].exists() and not apps[0].with_suffix(".json").exists()  # the oldest of the app's own
    assert all(p.exists() for p in apps[1:]) and Path(out).exists()
    assert len(list(tmp_path.glob("holiday_*"))) == 120


def test_admission_is_atomic_under_simultaneous_joins():
    """32 threads join at once for 16 sessions: no session passes its cap of 2, and no more than the queue's
    size (+ the one running) is admitted in all; tickets come back when jobs end."""
    admission = Admission(per_client=2, total=17, expire_s=60)
    barrier = threading.Barrier(48)
    admitted, refused = [], []

    def join(k):
        owner = f"s{k % 16}"
        barrier.wait()
        try:
            admission.admit(owner)
            admitted.append(owner)
        except ValueError as err:
            refused.append(str(err))

    threads = [threading.Thread(target=join, args=(k,)) for k in range(48)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(admitted) == 17 and admission.live() == 17 and len(refused) == 31
    assert max(admitted.count(o) for o in set(admitted)) <= 2
    assert all("queue is full" in m or "at most 2 per client" in m for m in refused)
    for owner in admitted:
        admission.start(owner)
        admission.release(owner)
    assert admission.live() == 0
    admission.admit("s0")  # room again
    # a ticket whose job was cancelled while queued lapses once Gradio's queue no longer lists it
    admission.waiting = lambda: {}
    admission._tickets["s0"][0].at -= 3600
    admission.admit("s1")
    assert admission.live() == 1


def test_object_found_tells_an_empty_frame_from_a_shape(tmp_path):
    background = np.full((8, 64, 64, 3), (20, 20, 60), np.uint8)
    murky = background + np.random.default_rng(0).integers(0, 12, background.shape, dtype=np.uint8)
    shape = background.copy()
    shape[:, 20:32, 20:32] = (230, 40, 40)  # a 12x12 red square: 3.5 % of the frame
    assert not object_found(write_mp4(tmp_path / "murky.mp4", murky, 8))
    assert object_found(write_mp4(tmp_path / "shape.mp4", shape, 8))
    settings = {"request": {"seed": 1, "width": 64, "height": 64, "frames": 8, "fps": 8}, "patch_schedule": "1x2",
                "timings": {"total": 1.0, "denoise": 0.5}, "measured_motion": 0.0}
    assert result_status({**settings, "object_found": True}).startswith("✓ seed 1")
    empty = result_status({**settings, "object_found": False})
    assert empty.startswith("⚠ no object found") and "✓" not in empty


def test_the_bundled_model_says_when_it_drew_nothing(tmp_path):
    """A prompt from outside the shape world gives the tiny model an empty frame: flagged before, and said after."""
    studio = Studio("tiny", tmp_path, keep=25)
    assert "dog" in studio.prompt_notice("a dog running on a beach")
    *_, settings, status = studio.generate(prompt="a dog running on a beach", seed=0)
    assert settings["object_found"] is False and status.startswith("⚠ no object found")
    assert "not in this model's training: dog, running, beach" in status


def test_examples_render_after_start_and_heal(random_pipeline_dir, tmp_path):
    """build_demo answers before the examples exist (they render in the background, one job each); a render
    killed midway (a file missing, a sidecar without its measurements) is redone, and only that one."""
    from lumina.app import build_demo
    from lumina.app.endpoints import load_examples

    examples = load_examples()
    demo = build_demo(model=str(random_pipeline_dir), outputs_dir=tmp_path)
    studio = demo.studio
    assert len(studio.example_results(examples)) < len(examples)  # not rendered before serving
    deadline = time.monotonic() + 300
    while len(studio.example_results(examples)) < len(examples) and time.monotonic() < deadline:
        time.sleep(0.5)
    shown = studio.example_results(examples)
    assert len(shown) == len(examples) and all(Path(e["tiles"]).exists() for e in shown)
    Path(shown[0]["tiles"]).unlink()  # killed before its contact sheet
    side = json.loads(Path(shown[1]["sidecar"]).read_text())
    Path(shown[1]["sidecar"]).write_text(json.dumps({k: v for k, v in side.items() if k != "measured_motion"}))
    assert len(studio.example_results(examples)) == len(examples) - 2
    assert studio.render_examples(examples) == 2
    assert len(studio.example_results(examples)) == len(examples)
    assert not [p for p in Path(shown[0]["video"]).parent.iterdir() if p.name.endswith(".partial")]


def test_zerogpu_duration_and_refusal(studio):
    from lumina.generation import GenerationRequest, resolve_request

    import torch

    from lumina import LuminaNextDiTVideo
    from lumina.pipelines.defaults import ModelDefaults

    pipe, defaults = studio.holder.get()
    small = resolve_request(GenerationRequest(prompt="x", width=64, height=64, frames=8, steps=4, seed=0), defaults)
    assert zerogpu.duration_for(zerogpu.estimate_seconds(pipe.transformer.config, small)) <= zerogpu.ZEROGPU_MAX_SECONDS
    zerogpu.check_budget(zerogpu.estimate_seconds(pipe.transformer.config, small), enforce=True)
    with torch.device("meta"):
        release = LuminaNextDiTVideo()  # the 2B configuration: the cost model needs only its sizes
    release_defaults = ModelDefaults()
    single = resolve_request(GenerationRequest(prompt="x", schedule="1x2", seed=0), release_defaults)  # 1248x704x96
    multi = resolve_request(GenerationRequest(prompt="x", seed=0), release_defaults)
    t_single = zerogpu.estimate_seconds(release.config, single)
    t_multi = zerogpu.estimate_seconds(release.config, multi)
    assert t_single > zerogpu.ZEROGPU_MAX_SECONDS and t_multi < 0.5 * t_single
    shorter = resolve_request(GenerationRequest(prompt="x", seed=0, frames=32, width=832, height=480), release_defaults)
    assert zerogpu.estimate_seconds(release.config, shorter) * zerogpu.SAFETY < zerogpu.ZEROGPU_MAX_SECONDS
    with pytest.raises(ValueError, match="ZeroGPU call may last at most 300 s"):
        zerogpu.check_budget(t_single, enforce=True)
    assert zerogpu.duration_for(10 ** 6) == zerogpu.ZEROGPU_MAX_SECONDS
    # the GPU call asks for the job's own estimate, made once by the runner with this server's device figure
    job = studio.runner.plan(None, None, [small])
    assert zerogpu.gpu_duration(studio.runner.id, None, job.videos[0], "x.mp4") == zerogpu.duration_for(job.seconds)
    assert job.seconds == pytest.approx(zerogpu.estimate_seconds(pipe.transformer.config, small, pipe.latent_size,
                                                                 studio.runner.fit()))
    assert zerogpu.run_generation.__name__ == "run_generation"  # locally spaces.GPU leaves it as it is


def test_the_memory_menu_offers_only_what_helps_on_this_device(studio):
    assert studio.holder.device == "cpu" and studio.holder.memory_modes == ["none"]  # no GPU memory to save
    with pytest.raises(gr.Error, match="not available on cpu"):
        studio.generate(prompt=PROMPT, memory_mode="8bit")


def test_missing_model_is_explained():
    with pytest.raises(ModelFilesError, match="--model DIR"):
        check_model_spec("./no-such-model-folder")


# ---------------------------------------------------------------- the served app

def test_generate_through_gradio_client(server):
    from gradio_client import Client

    client = Client(server.wait(), verbose=False)
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert {"/generate", "/compare", "/motion_grid", "/stop", "/v2a"} <= set(api)
    params = [p["parameter_name"] for p in api["/generate"]["parameters"]]
    assert params == list(GENERATE_SETTINGS)
    labels = {name: [r["label"] for r in e["returns"]] for name, e in api.items()}
    assert labels["/generate"] == ["Result", "Settings JSON (sidecar)", "Used seed", "Settings", "Status"]
    assert labels["/v2a"] == ["Video with sound", "Waveform", "Used settings", "Status"]
    assert not [label for ls in labels.values() for label in ls if not label or label.startswith("value_")]
    assert [p["parameter_name"] for p in api["/v2a"]["parameters"]] == ["video", "prompt", "steps", "seed"]
    assert [p["parameter_has_default"] for p in api["/v2a"]["parameters"]] == [False, True, True, True]
    assert labels["/motion_grid"] == ["Grid", "Measured motion by motion score", "Cells", "Videos", "Status"]
    assert max(len(label) for ls in labels.values() for label in ls) <= 32  # short output names

    video, sidecar, seed, settings, status = client.predict(prompt=PROMPT, seed=1234, api_name="/generate")
    frames, fps = read_video(video)
    assert frames.shape == (8, 64, 64, 3) and fps == 8
    assert seed == 1234 and settings["request"]["seed"] == 1234
    assert json.loads(Path(sidecar).read_text())["request"]["prompt"] == PROMPT

    with pytest.raises(Exception, match="multiple of 8"):  # shown as a message; the server keeps serving
        client.predict(prompt=PROMPT, seed=1, frames=12, api_name="/generate")
    with pytest.raises(Exception, match=r"steps=500: must be an integer in 2\.\.200"):  # a range error, by name
        client.predict(prompt=PROMPT, seed=1, steps=500, api_name="/generate")
    grid, plot, table, files, status = client.predict(prompt=PROMPT, seed=1, positive="2, 6", negative="0", steps=2,
                                                      api_name="/motion_grid")
    assert status == "✓ done: 2 cells" and len(files) == 2
    assert [read_video(f)[0].shape for f in files] == [(8, 64, 64, 3)] * 2
    assert grid.count(f"src='{server.url}gradio_api/file=") == 2  # absolute links
    assert server.proc.poll() is None
    with urllib.request.urlopen(server.url, timeout=10) as r:
        assert r.status == 200


def test_app_refuses_a_missing_model_clearly(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("lumina_studio_app", ROOT / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    assert app.main(["--model", str(tmp_path / "missing"), "--outputs", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "--model DIR" in err and "Traceback" not in err


def test_add_sound_muxes_the_bundled_v2a_audio_into_the_video(random_pipeline_dir, tmp_path):
    from lumina.app.ui import bundled_audio_fn
    from lumina.media import read_audio
    from lumina.v2a.cli import stream_durations

    studio = Studio(str(random_pipeline_dir), tmp_path, keep=5, audio_fn=bundled_audio_fn())
    assert studio.sound_available  # the tiny V2A member ships in assets/
    video, settings_file, seed, settings, status = studio.generate(prompt="a red circle bouncing", seed=3, steps=4,
                                                                   add_sound=True)
    d = stream_durations(video)
    assert d["video"] == pytest.approx(8 / 8, abs=1e-3) and d["audio"] == pytest.approx(d["video"], abs=0.01)
    audio, rate = read_audio(video)
    assert np.abs(audio).max() > 1e-3  # a real soundtrack, not padding
    assert "audio" in json.loads(Path(settings_file).read_text())["timings"]


def test_sound_tab_adds_a_track_to_an_upload_and_refuses_bad_files(random_pipeline_dir, tmp_path):
    from lumina.app.ui import bundled_v2a_dir

    studio = Studio(str(random_pipeline_dir), tmp_path / "out", keep=5, v2a_dir=bundled_v2a_dir(), preload=False)
    rng = np.random.default_rng(0)
    clip = write_mp4(tmp_path / "clip.mp4", rng.integers(0, 255, (30, 64, 64, 3), dtype=np.uint8), 12)  # 2.5 s
    video, wave, settings, status = studio.sound(video=str(clip), prompt="a bouncing ball", steps=6, seed=4)
    audio, rate = read_audio(video)
    frames, fps = read_video(video)
    assert frames.shape[0] == 30 and fps == 12 and rate == 16000
    assert len(audio) >= 2.5 * rate and np.abs(audio).max() > 1e-3
    assert settings["steps"] == 6 and settings["seed"] == 4 and settings["prompt"] == "a bouncing ball"
    assert settings["streams"]["audio"] == pytest.approx(2.5, abs=0.01) and status.startswith("✓ 2.50 s of sound")
    assert isinstance(settings["contacts"], list) and f"hits on {len(settings['contacts'])} contact" in status
    from PIL import Image

    with Image.open(wave) as image:
        assert image.size == (800, 160) and len(image.getcolors(1 << 16)) > 2
    assert studio.sound(video=str(clip), steps=6, seed=4)[2]["streams"] == settings["streams"]
    long = write_mp4(tmp_path / "long.mp4", np.zeros((11 * 8, 32, 32, 3), np.uint8), 8)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "notes.txt"
    text.write_text("not a video")
    for path, words in ((long, "lasts 11.0 s"), (empty, "empty"), (text, "'.txt' is not accepted"),
                        (None, "upload a video first")):
        with pytest.raises(gr.Error) as excinfo:
            studio.sound(video=None if path is None else str(path))
        assert words in _message(excinfo)
    # Stop: its owner's stop, pressed while the V2A model runs, ends the job when it returns, keeping nothing
    said, result = [], {}
    worker = threading.Thread(target=lambda: result.setdefault("value", studio.sound(
        video=str(clip), steps=6, seed=4, request=gr.Request(session_hash="alice"),
        progress=lambda fraction=None, desc="": said.append(desc))))
    worker.start()
    deadline = time.monotonic() + 60
    while not said and time.monotonic() < deadline:
        time.sleep(0.01)
    assert studio.stop(None) == "nothing of yours is running" and "stopping" in studio.stop("alice")
    worker.join(120)
    assert result["value"][:3] == (None, None, None) and result["value"][3].startswith("■ stopped")
    assert said[0] == "making sound with Lumina-V2A…"
    kept = sorted(p.suffix for p in (tmp_path / "out").glob("sound-*"))
    assert kept == [".json", ".json", ".mp4", ".mp4", ".png", ".png"]  # the two results above (mp4, sidecar, waveform)


def test_one_generate_call_parses_and_resolves_once(studio, monkeypatch):
    """One request path: a Generate call parses its schedule text once and resolves (checks) its request once;
    nothing after that (cost and budget checks, the model holder, generate_video, the pipeline) builds or checks
    a SampleConfig again, and its steps are planned once (for the estimate and the progress alike), with no model
load. Before the redesign one call parsed schedules 10 times and resolved 3 times."""
    import lumina.app.form as form
    import lumina.app.jobs as jobs
    from lumina.sampling.schedule import SampleConfig

    calls = {"parse": 0, "resolve": 0, "config": 0, "plan": 0, "load": 0}
    after_resolve = []

    def counting(name, fn):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            out = fn(*args, **kwargs)
            if name == "resolve":
                after_resolve.append(calls["config"])
            return out
        return wrapped

    monkeypatch.setattr(form, "parse_schedule", counting("parse", form.parse_schedule))
    monkeypatch.setattr(form, "resolve_request", counting("resolve", form.resolve_request))
    monkeypatch.setattr(SampleConfig, "__post_init__", counting("config", SampleConfig.__post_init__))
    monkeypatch.setattr(jobs, "plan", counting("plan", jobs.plan))
    monkeypatch.setattr(studio.holder, "_loader", counting("load", studio.holder._loader))
    video, _, _, settings, status = studio.generate(prompt=PROMPT, seed=3, steps=4, schedule="custom",
                                                    custom_schedule="2x4, 1x2@0.5")
    assert status.startswith("✓") and settings["sample_config"]["P"] == ["2x4", [0.5, "1x2"]]
    assert calls["parse"] == 1 and calls["resolve"] == 1 and calls["plan"] == 1 and calls["load"] == 0
    assert calls["config"] == after_resolve[0] > 0


def test_step_cache_in_generate_compare_and_the_gpu_estimate(studio):
    """The Step cache setting reaches the pipeline (the sidecar records it and the forwards it skipped), Compare adds
    a cached row for each schedule, and the ZeroGPU estimate charges the cached run less."""
    import torch

    from lumina.cache import StepCache
    from lumina.generation import GenerationRequest, resolve_request
    from lumina.models.transformer_nextdit import LuminaNextDiTVideo

    video, sidecar, _, settings, status = studio.generate(prompt=PROMPT, seed=5, steps=16, cache="fbc:0.9")
    saved = json.loads(Path(sidecar).read_text())
    assert status.startswith("✓") and saved["request"]["cache"] == "fbc:0.9"
    assert saved["cache"]["skipped"] > 0 and settings["ui"]["cache"] == "fbc:0.9"
    with pytest.raises(gr.Error, match="allowed: fbc"):
        studio.generate(prompt=PROMPT, cache="warp")
    final = list(studio.compare(prompt=PROMPT, seed=3, schedules=["1x2", "multiscale"], steps=6, resolution="32x32",
                                repeats=1, cache="taylorseer:3"))[-1]
    assert [r.schedule for r in final.results] == ["1x2", "multiscale", "1x2 + taylorseer:3",
                                                   "multiscale + taylorseer:3"]
    assert final.status.startswith("✓ done: 4 schedules") and Path(final.side_by_side).exists()
    with torch.device("meta"):
        release = LuminaNextDiTVideo()
    defaults = ModelDefaults()
    plain = resolve_request(GenerationRequest(prompt="x", seed=0), defaults)
    cached = resolve_request(GenerationRequest(prompt="x", seed=0, cache=StepCache.parse("taylorseer:4")), defaults)
    assert zerogpu.estimate_seconds(release.config, cached) < 0.6 * zerogpu.estimate_seconds(release.config, plain)
