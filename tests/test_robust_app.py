"""The app under hostile use (issue 32): swept outputs, a cost limit on any device, a per-client queue cap, API
errors with messages, and kill -9 of the server mid-job then a restart that loses nothing.

Real servers (`python app.py` on 127.0.0.1) driven with gradio_client and plain HTTP; mp4s are decoded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

gr = pytest.importorskip("gradio")

from gradio_client import Client  # noqa: E402

from lumina.app.endpoints import Studio  # noqa: E402
from lumina.app.form import GENERATE_SETTINGS, ui_defaults  # noqa: E402
from lumina.app.state import OutputStore  # noqa: E402
from lumina.media import partial_path, read_video, write_json, write_mp4  # noqa: E402
from lumina.pipelines.defaults import ModelDefaults  # noqa: E402
from tests.test_app import PROMPT, Server  # noqa: E402

FAST = dict(resolution="64x64", length_mode="frames", frames=8, fps=8, steps=4)


def _dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)


def test_outputs_swept_at_start(tmp_path):
    """A killed server leaves a temporary file, a cut-short mp4 or a sidecar without its video: all go at start;
    good videos, their sidecars and files the app did not make stay."""
    good = tmp_path / f"{uuid.uuid4().hex}.mp4"
    write_mp4(good, np.zeros((8, 32, 32, 3), np.uint8), 8)
    write_json(good.with_suffix(".json"), {"video": good.name})
    cut = tmp_path / f"{uuid.uuid4().hex}.mp4"
    cut.write_bytes(good.read_bytes()[:48])
    orphan = tmp_path / f"{uuid.uuid4().hex}.json"
    orphan.write_text("{}")
    partial = partial_path(tmp_path / f"{uuid.uuid4().hex}.mp4", pid=_dead_pid())
    partial.write_bytes(b"\0" * 100)
    mine = partial_path(tmp_path / f"{uuid.uuid4().hex}.mp4")  # a live writer's: kept
    mine.write_bytes(b"\0")
    elsewhere = tmp_path / f".{uuid.uuid4().hex}.mp4.other-machine.{_dead_pid()}-0badcafe.partial"  # kept
    elsewhere.write_bytes(b"\0")
    (tmp_path / "notes.json").write_text("{}")
    store = OutputStore(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([good.name, good.with_suffix(".json").name,
                                                                 mine.name, elsewhere.name, "notes.json"])
    assert read_video(good)[0].shape == (8, 32, 32, 3) and store.sweep() == []


def test_cost_limit_holds_on_cpu(random_pipeline_dir, tmp_path):
    """The 5x5 grid at 200 steps and 256 frames is refused at once with the limit stated; a small video passes.
    On a CPU without a stored fit the throughput is measured on the loaded model."""
    studio = Studio(str(random_pipeline_dir), tmp_path, max_job_seconds=120)
    fit = studio.runner.fit()
    assert fit["overhead_s"] >= 0 and fit["flops_per_second"] > 0
    start = time.perf_counter()
    with pytest.raises(gr.Error, match=r"would take about \d+ s on this server \(cpu\); one job may take at most 120 s"):
        studio.motion_grid(PROMPT, seed=0, positive="1, 2, 3, 4, 5", negative="0, 1, 2, 3, 4", steps=200, frames=256,
                           resolution="64x64")
    assert time.perf_counter() - start < 10 and not list(tmp_path.glob("*.mp4"))
    video, *_ = studio.generate(PROMPT, seed=1, **FAST)
    assert read_video(video)[0].shape == (8, 64, 64, 3)


def _api_values(**changes):
    values = ui_defaults(ModelDefaults(width=64, height=64, frames=8, fps=8, max_resolution=128, steps=4))
    values.update({"prompt": PROMPT, "model": None, **FAST, **changes})
    return [values[name] for name in GENERATE_SETTINGS]


def _rest_error(url: str, data) -> str:
    """POST /gradio_api/call/generate with raw JSON (NaN and Infinity included): the refusal's message, from the
    join (a value the inputs cannot take) or from the event stream (a value the handlers refuse)."""
    body = json.dumps({"data": data}).encode()  # Python writes NaN / Infinity literals, as a hostile client may
    req = urllib.request.Request(url + "gradio_api/call/generate", body, {"Content-Type": "application/json"})
    try:
        event_id = json.loads(urllib.request.urlopen(req, timeout=30).read())["event_id"]
    except urllib.error.HTTPError as err:
        assert err.code == 400
        return json.loads(err.read())["detail"]
    with urllib.request.urlopen(f"{url}gradio_api/call/generate/{event_id}", timeout=120) as r:
        stream = r.read().decode()
    assert "event: error" in stream, stream[-500:]
    return stream.split("event: error", 1)[1].split("data:", 1)[1].strip()


def test_per_client_queue_cap_and_api_errors(random_pipeline_dir, tmp_path):
    server = Server(random_pipeline_dir, tmp_path, extra_args=["--max-jobs-per-client", "2", "--queue-size", "4"])
    try:
        url = server.wait()
        # bad API types: a message, never "error": null
        for changes, words in ((dict(seed=float("nan")), "seed=nan: must be a number"),
                               (dict(custom_size=True, width=float("inf"), height=64), "width=inf: must be a number"),
                               (dict(steps="abc"), "steps='abc': not a number"),
                               (dict(fps="Infinity"), "fps=inf: must be a number"),
                               (dict(length_mode="seconds", duration=1e308), "duration=1e+308: must be more than 0"),
                               (dict(steps=500), "steps=500: must be an integer in 2..200")):
            message = _rest_error(url, _api_values(**changes))
            assert message not in ("null", "", None) and words in message, (changes, message)
            assert "index" not in message and "Traceback" not in message
        # one client: 2 jobs queued or running at most; the others are refused at once, saying why
        client = Client(url, verbose=False)
        jobs = [client.submit(prompt=f"{PROMPT} {i}", seed=i, **FAST, api_name="/generate") for i in range(4)]
        done, refused = [], []
        for job in jobs:
            try:
                done.append(job.result(timeout=300))
            except httpx.HTTPStatusError as err:
                refused.append(err.response.json()["detail"])
        assert len(done) == 2 and len(refused) == 2, (done, refused)
        assert all(message.startswith("you already have 2 job(s) queued or running; at most 2 per client")
                   for message in refused), refused
        assert all(read_video(out[0])[0].shape == (8, 64, 64, 3) for out in done)
        # finished jobs return their tickets, and other clients were never limited
        assert client.predict(prompt=PROMPT, seed=9, **FAST, api_name="/generate")[2] == 9
        assert Client(url, verbose=False).predict(prompt=PROMPT, seed=10, **FAST, api_name="/generate")[2] == 10
        # the comparison and the motion grid pass the same admission
        small = dict(prompt=PROMPT, seed=1, steps=4, resolution="64x64", frames=8)
        assert client.predict(schedules=["1x2"], **small, api_name="/compare")[-1].startswith("✓ done")
        assert client.predict(positive="2", negative="0", **small, api_name="/motion_grid")[-1] == "✓ done: 1 cells"

        # simultaneous joins of 12 sessions cannot pass --queue-size 4 (+ the one running)
        config = json.loads(urllib.request.urlopen(url + "config", timeout=30).read())
        fn_index = next(d["id"] for d in config["dependencies"] if d.get("api_name") == "generate")
        barrier = threading.Barrier(12)

        def join(k):
            body = json.dumps({"data": _api_values(steps=100, frames=32, seed=k), "fn_index": fn_index,
                               "session_hash": f"session-{k}", "event_data": None, "trigger_id": None}).encode()
            req = urllib.request.Request(url + "gradio_api/queue/join", body, {"Content-Type": "application/json"})
            barrier.wait()
            try:
                return ("accepted", json.loads(urllib.request.urlopen(req, timeout=60).read())["event_id"])
            except urllib.error.HTTPError as err:
                return ("refused", json.loads(err.read())["detail"])

        with ThreadPoolExecutor(max_workers=12) as pool:
            answers = list(pool.map(join, range(12)))
        accepted = [a for a in answers if a[0] == "accepted"]
        refused = [a[1] for a in answers if a[0] == "refused"]
        assert 1 <= len(accepted) <= 5 and len(refused) == 12 - len(accepted), answers
        assert all(message.startswith("the queue is full (5 jobs queued or running)") for message in refused), refused
    finally:
        server.stop()


def test_an_anonymous_stop_stops_nothing(random_pipeline_dir, tmp_path):
    """A POST to /stop without a session (curl), or another client's /stop, leaves a running job alone; the job's
    own client stops it."""
    server = Server(random_pipeline_dir, tmp_path, extra_args=["--max-job-seconds", "100000"])
    try:
        url = server.wait()
        owner, other = Client(url, verbose=False), Client(url, verbose=False)
        long = dict(prompt=PROMPT, seed=3, resolution="64x64", length_mode="frames", frames=64, fps=8, steps=120,
                    schedule="1x2")

        def wait_running(job):
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                progress = job.status().progress_data
                if progress and any("step " in (p.desc or "") for p in progress):
                    return
                time.sleep(0.05)
            raise AssertionError("the job did not start")

        job = owner.submit(**long, api_name="/generate")
        wait_running(job)
        anonymous = urllib.request.Request(url + "gradio_api/run/stop", json.dumps({"data": []}).encode(),
                                           {"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(anonymous, timeout=30).read())
        assert answer["data"] == ["nothing of yours is running"]
        assert other.predict(api_name="/stop") == "nothing of yours is running"
        video, _, seed, _, status = job.result(timeout=600)
        assert status.startswith("✓") and seed == 3 and read_video(video)[0].shape == (64, 64, 64, 3)
        job = owner.submit(**long, api_name="/generate")
        wait_running(job)
        assert owner.predict(api_name="/stop").startswith("■ stopping")
        assert job.result(timeout=300)[-1].startswith("■ stopped")
    finally:
        server.stop()


def test_server_killed_mid_job_restarts_with_nothing_lost(random_pipeline_dir, tmp_path):
    """A load of 4 clients x 2 videos, then a job killed with the server (kill -9) while its file is written and
    two more waiting behind it; a restart sweeps what was left, keeps every finished video, and serves the next
    request."""
    outputs = tmp_path / "outputs"
    server = Server(random_pipeline_dir, tmp_path)
    try:
        url = server.wait()
        clients = [Client(url, verbose=False) for _ in range(4)]

        def two(k):
            return [clients[k].predict(prompt=f"{PROMPT} {k}", seed=10 * k + i, **FAST, api_name="/generate")
                    for i in range(2)]

        with ThreadPoolExecutor(max_workers=4) as pool:
            finished = [out for outs in pool.map(two, range(4)) for out in outs]
        assert sorted(out[2] for out in finished) == [0, 1, 10, 11, 20, 21, 30, 31]
        before = set(os.listdir(outputs))
        clients[0].submit(prompt=PROMPT, seed=3, **{**FAST, "frames": 64}, api_name="/generate")
        for k in (1, 2):  # waiting in the queue when the server dies
            clients[k].submit(prompt=PROMPT, seed=40 + k, **FAST, api_name="/generate")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and set(os.listdir(outputs)) == before:
            time.sleep(0.0005)
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait(timeout=30)
        left = set(os.listdir(outputs)) - before
        assert left and all(name.endswith(".partial") for name in left), left  # killed during the write
    finally:
        server.stop()
    server = Server(random_pipeline_dir, tmp_path)
    try:
        client = Client(server.wait(), verbose=False)
        assert sorted(os.listdir(outputs)) == sorted(before)  # the partial is gone, every finished video stays
        for out in finished:
            frames, _ = read_video(outputs / os.path.basename(out[0]))
            assert frames.shape == (8, 64, 64, 3)
            assert json.loads((outputs / os.path.basename(out[1])).read_text())["request"]["seed"] == out[2]
        video, _, seed, _, status = client.predict(prompt=PROMPT, seed=4, **FAST, api_name="/generate")
        assert seed == 4 and status.startswith("✓") and read_video(video)[0].shape == (8, 64, 64, 3)
        assert len(list(outputs.glob("*.mp4"))) == len(finished) + 1
    finally:
        server.stop()
