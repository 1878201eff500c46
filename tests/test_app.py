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
    ({"prompt": "x", "length_mode": "seconds", "duration": -1}, "must be > 0 s"),
    ({"prompt": "x", "add_sound": True}, "video-to-audio"),
    ({"prompt": "x", "memory_mode": "model offload"}, "not available on cpu"),
    ({"prompt": "x", "model": "/nowhere"}, "not available here"),
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


def test_stop_interrupts_a_running_generation(studio):
    result = {}

    def run():
        result["value"] = studio.generate(prompt=PROMPT, seed=1, steps=200, schedule="2x4")

    worker = threading.Thread(target=run)
    worker.start()
    control = studio.holder.control
    deadline = time.monotonic() + 60
    while not (control.running and (control.step or 0) >= 2) and worker.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "stopping" in studio.stop()
    worker.join(60)
    video, sidecar, seed, settings, status = result["value"]
    assert video is None and "stopped" in status and seed == 1
    assert control.step < 199
    assert studio.stop() == "nothing of yours is running"  # the next run (compare, below) starts normally
    assert not control.stop_file.exists()


def test_progress_names_the_phases_after_denoising(studio):
    said = []
    studio.generate(prompt=PROMPT, seed=2, steps=4, schedule="1x2",
                    progress=lambda fraction=None, desc="": said.append((fraction, desc)))
    steps = [d for f, d in said if d.startswith("step ")]
    assert [d.split(" · ")[0] for d in steps] == ["step 1/3", "step 2/3", "step 3/3"]
    assert steps[-1].endswith("t=1.000 · decoding the video…")  # the flow time the last step reaches
    assert [d for f, d in said if f is None] == ["writing mp4…", "measuring motion…"]


def test_stop_reaches_a_forked_worker(studio):
    """ZeroGPU runs the job in a forked process: a stop asked for in the parent must still end it."""
    import multiprocessing

    from lumina.generation import GenerationRequest, resolve_request

    ctx = multiprocessing.get_context("fork")
    answer = ctx.Queue()
    control = studio.holder.control

    def worker():
        import torch

        torch.set_num_threads(1)  # OpenMP's thread pool does not survive a fork
        try:
            job = resolve_request(GenerationRequest(prompt=PROMPT, steps=200, seed=0, schedule="2x4"),
                                  studio.model_defaults())
            studio.holder.generate(None, job, str(studio.store.new_path()))
            answer.put(("finished", control.step))
        except GenerationInterrupted:
            answer.put(("stopped", control.step))

    control.begin(None)
    try:
        child = ctx.Process(target=worker)
        child.start()
        assert control.request_stop()  # sets the parent's flag; the child can only see the stop file
        outcome, step = answer.get(timeout=120)
        child.join(30)
    finally:
        control.end()
    assert outcome == "stopped" and step < 199


def test_compare_fills_each_panel_as_it_finishes(studio):
    states = list(studio.compare(prompt=PROMPT, seed=3, schedules=list(COMPARE_SCHEDULES), steps=3,
                                 resolution="32x32"))
    counts = [len(state.results) for state in states]
    assert counts == sorted(counts) and set(counts) == {0, 1, 2, 3, 4}
    assert states[0].running == "warm-up" and states[0].status.startswith("warming up")
    for state in states[1:-1]:  # progress belongs to the one schedule that is running and not yet finished
        if state.running not in (None, "warm-up"):
            assert state.running not in {r.schedule for r in state.results}
            assert state.progress.startswith("step ") or state.progress in ("writing mp4…", "measuring motion…")
    final = states[-1]
    results = final.results
    assert [r.schedule for r in results] == list(COMPARE_SCHEDULES) and final.status.startswith("✓ done")
    by_name = {r.schedule: r for r in results}
    assert by_name["1x2"].relative == pytest.approx(1.0)
    assert by_name["2x4"].tokens_per_step["2x4"] < by_name["1x2"].tokens_per_step["1x2"]
    for r in results:
        assert Path(r.video).exists() and r.motion is not None and r.motion >= 0
        assert 0 < r.denoise < r.seconds
        assert r.relative == pytest.approx(r.denoise / by_name["1x2"].denoise)
        assert r.schedule in r.label and "vs 1x2" in r.label and "whole clip" in r.label and "motion" in r.label
    # one mp4 of the four, each 32x32 clip scaled to 192 px, with a 28 px label band under them
    frames, fps = read_video(final.side_by_side)
    assert frames.shape == (8, 192 + 28, 4 * 192 + 3 * 4, 3) and fps == 8
    band = frames[0, 192 + 4:, :192]
    assert (band < 100).any() and (band > 200).any()  # dark label text on white
    outputs = compare_outputs(final, COMPARE_SCHEDULES)
    assert len(outputs) == 2 * len(COMPARE_SCHEDULES) + 3 and len(outputs[-3]) == 4
    running = next(state for state in states if state.running == "2x2" and state.progress.startswith("step"))
    captions = [c["value"] for c in compare_outputs(running, COMPARE_SCHEDULES)[4:8]]
    assert "running: step" in captions[1] and not any("running" in c for k, c in enumerate(captions) if k != 1)
    assert "denoise" in captions[0] and captions[2].endswith("waiting")


def test_motion_grid_is_3x3(studio):
    cells, status = studio.motion_grid(prompt=PROMPT, seed=5, positive="2, 6, 12", negative="0, 2, 6", steps=2,
                                       resolution="32x32")
    assert len(cells) == 9 and status.startswith("✓")
    assert {(c.positive, c.negative) for c in cells} == {(p, n) for p in (2, 6, 12) for n in (0, 2, 6)}
    assert all(c.measured is not None and "measured" in c.label for c in cells)
    assert all(Path(c.tiles).exists() for c in cells)
    grid, plot_df, table, _ = motion_outputs(cells, status)
    plot_df = plot_df["value"]
    assert grid.count("<video") == 9 and grid.count("<tr>") == 4  # a header row and a row per negative score
    assert [f"positive {p}" in grid for p in (2, 6, 12)] == [True] * 3
    assert [f"negative {n}" in grid for n in (0, 2, 6)] == [True] * 3
    assert all(c.label in grid for c in cells)  # the whole caption, requested -> measured
    assert len(plot_df) == 9 and len(table) == 9
    assert sorted(plot_df["gap"]) == sorted(p - n for p in (2, 6, 12) for n in (0, 2, 6))
    with pytest.raises(gr.Error, match="not a number"):
        studio.motion_grid(prompt=PROMPT, positive="2, fast")


def test_motion_explorer_starts_in_the_models_regime():
    assert motion_grid_defaults(ModelDefaults.read(TINY_DIR)) == ("2, 6, 12", "20")  # tiny: negative 20
    release = ModelDefaults()
    motion = float(release.sample_config().motion)
    assert motion_grid_defaults(release) == (f"{motion / 3:g}, {motion:g}, {2 * motion:g}", "2")


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


def test_zerogpu_duration_and_refusal(studio):
    from lumina.generation import GenerationRequest, resolve_request

    import torch

    from lumina import LuminaNextDiTVideo, LuminaVideoPipeline
    from lumina.pipelines.defaults import ModelDefaults

    pipe, defaults = studio.holder.get()
    small = resolve_request(GenerationRequest(prompt="x", width=64, height=64, frames=8, steps=4, seed=0), defaults)
    assert zerogpu.duration_for(zerogpu.estimate_seconds(pipe.transformer.config, small)) <= zerogpu.ZEROGPU_MAX_SECONDS
    zerogpu.check_budget(pipe, small, enforce=True)
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
        zerogpu.check_budget(LuminaVideoPipeline(transformer=release), single, enforce=True)
    assert zerogpu.duration_for(10 ** 6) == zerogpu.ZEROGPU_MAX_SECONDS
    assert zerogpu.run_generation.__name__ == "run_generation"  # locally spaces.GPU leaves it as it is


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

    video, sidecar, seed, settings, status = client.predict(prompt=PROMPT, seed=1234, api_name="/generate")
    frames, fps = read_video(video)
    assert frames.shape == (8, 64, 64, 3) and fps == 8
    assert seed == 1234 and settings["request"]["seed"] == 1234
    assert json.loads(Path(sidecar).read_text())["request"]["prompt"] == PROMPT

    with pytest.raises(Exception, match="multiple of 8"):  # shown as a message; the server keeps serving
        client.predict(prompt=PROMPT, seed=1, frames=12, api_name="/generate")
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


def test_one_generate_call_parses_and_resolves_once(studio, monkeypatch):
    """One request path: a Generate call parses its schedule text once and resolves (checks) its request once;
    nothing after that (cost and budget checks, the model holder, generate_video, the pipeline) builds or checks
    a SampleConfig again. Before the redesign one call parsed schedules 10 times and resolved 3 times."""
    import lumina.app.form as form
    from lumina.sampling.schedule import SampleConfig

    calls = {"parse": 0, "resolve": 0, "config": 0}
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
    video, _, _, settings, status = studio.generate(prompt=PROMPT, seed=3, steps=4, schedule="custom",
                                                    custom_schedule="2x4, 1x2@0.5")
    assert status.startswith("✓") and settings["sample_config"]["P"] == ["2x4", [0.5, "1x2"]]
    assert calls["parse"] == 1 and calls["resolve"] == 1
    assert calls["config"] == after_resolve[0] > 0
