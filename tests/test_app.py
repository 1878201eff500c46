"""The Gradio app: served in a subprocess and driven with gradio_client, and its handlers called directly.

Uses the random tiny pipeline (64x64, 8 frames), so everything runs in seconds on a CPU.
"""

from __future__ import annotations

import importlib.util
import json
import os
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
from lumina.app.handlers import (  # noqa: E402
    COMPARE_SCHEDULES, Studio, build_request, check_schedule_text, cfg_schedule, frames_notice, neg_motion_schedule,
    SETTING_NAMES, size_choices, ui_defaults,
)
from lumina.app.state import OutputStore, check_model_spec  # noqa: E402
from lumina.app.ui import compare_outputs, motion_outputs, reuse_settings  # noqa: E402
from lumina.errors import ModelFilesError  # noqa: E402
from lumina.media import read_video  # noqa: E402
from lumina.pipelines.loading import ModelDefaults  # noqa: E402

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
    ({"prompt": "x", "guidance": 80}, "guidance=80.0"),
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
    req, notices = build_request(values, defaults, ["1x2", "2x2", "2x4"])
    assert (req.width, req.height, req.frames) == (64, 64, 8)
    assert any("snapped to 64x64" in n for n in notices) and any("8 frames" in n for n in notices)
    assert req.cfg == "20, 0@0.2" and req.neg_motion == "2, 6@0.05" and req.schedule == "2x4, 1x2@0.5"
    assert cfg_schedule(7, 1) == "7" and cfg_schedule(7, 0) == "0" and neg_motion_schedule(6, 2, 1, 6) == "2"
    # a higher motion score keeps the preset's negative schedule (as the CLI does), unless told to follow it
    assert build_request({**values, "motion": 12}, defaults)[0].neg_motion == "2, 6@0.05"
    assert build_request({**values, "motion": 12, "neg_motion_after": 12}, defaults)[0].neg_motion == "2, 12@0.05"
    assert neg_motion_schedule(12, 2, 0.05, 8) == "2, 8@0.05" and neg_motion_schedule(12, 2, 0, 8) == "8"
    assert "1x3" in check_schedule_text("custom", "2x4, 1x3@0.5") and check_schedule_text("2x2").startswith("✓")
    assert "16 frames" in frames_notice("seconds", 2, None, 8)
    assert size_choices(defaults)[0][1] == "128x128" and ("64x64 (default)", "64x64") in size_choices(defaults)
    drawn = {build_request({**values, "randomize_seed": True, "seed": 5}, defaults)[0].seed for _ in range(3)}
    assert len(drawn) > 1 and all(0 <= d <= 2 ** 32 - 1 for d in drawn)


def test_generate_and_reuse(studio):
    video, sidecar, seed, settings, status = studio.generate(prompt=PROMPT, seed=42, randomize_seed=False,
                                                             shared_noise=0.4)
    frames, fps = read_video(video)
    assert frames.shape == (8, 64, 64, 3) and fps == 8 and seed == 42 and "seed **42**" in status
    saved = json.loads(Path(sidecar).read_text())
    assert saved["request"]["seed"] == 42 and saved["sample_config"]["sharedNoise"] == 0.4
    entry = {"settings": settings}
    reused = dict(zip(SETTING_NAMES, reuse_settings(entry)))
    assert reused["prompt"] == PROMPT and settings["ui"]["randomize_seed"] is False
    assert reused["neg_motion_after"] == settings["ui"]["neg_motion_after"] == 6.0 and reused["shared_noise"] == 0.4
    older = {"settings": {"ui": {k: v for k, v in settings["ui"].items()
                                 if k not in ("neg_motion_after", "shared_noise")}}}
    reused = dict(zip(SETTING_NAMES, reuse_settings(older)))  # made before those settings: positive, independent
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


def test_compare_returns_four_labelled_results(studio):
    results, status = studio.compare(prompt=PROMPT, seed=3, schedules=list(COMPARE_SCHEDULES), steps=3,
                                      resolution="32x32")
    assert [r.schedule for r in results] == list(COMPARE_SCHEDULES) and status.startswith("✓")
    by_name = {r.schedule: r for r in results}
    assert by_name["1x2"].relative == pytest.approx(1.0)
    assert by_name["2x4"].tokens_per_step["2x4"] < by_name["1x2"].tokens_per_step["1x2"]
    for r in results:
        assert Path(r.video).exists() and r.motion is not None and r.motion >= 0
        assert r.schedule in r.label and "vs 1x2" in r.label and "tokens/step" in r.label and "motion" in r.label
    outputs = compare_outputs(results, status)
    assert len(outputs) == 2 * len(COMPARE_SCHEDULES) + 2 and len(outputs[-2]) == 4


def test_motion_grid_is_3x3(studio):
    cells, status = studio.motion_grid(prompt=PROMPT, seed=5, positive="2, 6, 12", negative="0, 2, 6", steps=2,
                                       resolution="32x32")
    assert len(cells) == 9 and status.startswith("✓")
    assert {(c.positive, c.negative) for c in cells} == {(p, n) for p in (2, 6, 12) for n in (0, 2, 6)}
    assert all(c.measured is not None and "measured" in c.label for c in cells)
    assert all(Path(c.tiles).exists() for c in cells)
    gallery, plot_df, table, _, state = motion_outputs(cells, status, 3)
    plot_df = plot_df["value"]
    assert len(gallery["value"]) == 9 and gallery["columns"] == 3 and len(plot_df) == 9 and len(table) == 9
    assert sorted(plot_df["gap"]) == sorted(p - n for p in (2, 6, 12) for n in (0, 2, 6))
    with pytest.raises(gr.Error, match="not a number"):
        studio.motion_grid(prompt=PROMPT, positive="2, fast")


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
    from lumina.generation import GenerationRequest

    import torch

    from lumina import LuminaNextDiTVideo, LuminaVideoPipeline
    from lumina.pipelines.loading import ModelDefaults

    pipe, defaults = studio.holder.get()
    small = GenerationRequest(prompt="x", width=64, height=64, frames=8, steps=4, seed=0)
    assert zerogpu.duration_for(zerogpu.estimate_seconds(pipe.transformer.config, defaults, small)) <= zerogpu.ZEROGPU_MAX_SECONDS
    zerogpu.check_budget(pipe, defaults, small, enforce=True)
    with torch.device("meta"):
        release = LuminaNextDiTVideo()  # the 2B configuration: the cost model needs only its sizes
    release_defaults = ModelDefaults()
    single = GenerationRequest(prompt="x", schedule="1x2", seed=0)  # 1248x704x96, 70 steps
    multi = GenerationRequest(prompt="x", seed=0)
    t_single = zerogpu.estimate_seconds(release.config, release_defaults, single)
    t_multi = zerogpu.estimate_seconds(release.config, release_defaults, multi)
    assert t_single > zerogpu.ZEROGPU_MAX_SECONDS and t_multi < 0.5 * t_single
    shorter = GenerationRequest(prompt="x", seed=0, frames=32, width=832, height=480)
    assert zerogpu.estimate_seconds(release.config, release_defaults, shorter) * zerogpu.SAFETY < zerogpu.ZEROGPU_MAX_SECONDS
    with pytest.raises(ValueError, match="ZeroGPU call may last at most 300 s"):
        zerogpu.check_budget(LuminaVideoPipeline(transformer=release), release_defaults, single, enforce=True)
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
    assert {"/generate", "/compare", "/motion_grid", "/stop"} <= set(api)
    params = [p["parameter_name"] for p in api["/generate"]["parameters"]]
    assert params[0] == "prompt" and "seed" in params and "randomize_seed" in params

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
