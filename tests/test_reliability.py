"""Faults never take the app down: an injected failure mid-denoising, then a normal request; a load test."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

gr = pytest.importorskip("gradio")

from lumina.app.endpoints import Studio  # noqa: E402
from lumina.media import read_video  # noqa: E402
from tests.test_app import PROMPT, Server  # noqa: E402

FAST = dict(resolution="64x64", length_mode="frames", frames=8, fps=8, steps=4)


class FailOnCall:
    """A forward hook on the real transformer that raises on its n-th call (a fault midway through denoising)."""

    def __init__(self, n: int):
        self.n, self.calls = n, 0

    def __call__(self, module, args, output):
        self.calls += 1
        if self.calls == self.n:
            raise RuntimeError("injected fault")
        return output


def test_fault_midway_then_normal_request_succeeds(random_pipeline_dir, tmp_path):
    studio = Studio(str(random_pipeline_dir), tmp_path / "outputs")
    pipe, _ = studio.holder.get()
    fault = FailOnCall(3)
    handle = pipe.transformer.register_forward_hook(fault)
    try:
        with pytest.raises(gr.Error, match="injected fault"):
            studio.generate(PROMPT, seed=1, **FAST)
    finally:
        handle.remove()
    assert fault.calls == 3
    assert not list((tmp_path / "outputs").glob("*.mp4"))  # no half-made video is presented
    video, sidecar, seed, settings, status = studio.generate(PROMPT, seed=1, **FAST)
    frames, fps = read_video(video)
    assert frames.shape == (8, 64, 64, 3) and seed == 1 and status.startswith("✓")


def test_load_twenty_requests_four_at_a_time(random_pipeline_dir, tmp_path):
    """A queue of 2 behind one worker: 4 clients at a time get videos or Gradio's "Queue is full" at once."""
    from gradio_client import Client

    server = Server(random_pipeline_dir, tmp_path, extra_args=["--queue-size", "2"])
    try:
        url = server.wait()
        local = threading.local()

        busy = []

        def one(i):
            """Like a polite client: on a busy answer, wait and try again (bounded)."""
            if not hasattr(local, "client"):
                local.client = Client(url, verbose=False)
            for _ in range(120):
                try:
                    out = local.client.predict(prompt=f"{PROMPT} {i}", seed=100 + i, **FAST, api_name="/generate")
                    return ("ok", i, out)
                except Exception as err:  # noqa: BLE001 - the answer itself is what we check
                    # Gradio's own "Queue is full" (503), or the app's admission at the queue's door (400)
                    message = err.response.json()["detail"] if hasattr(err, "response") else str(err)
                    if "queue is full" not in message.lower():
                        return ("error", i, message)
                    busy.append(message)
                    time.sleep(0.5)
            return ("error", i, "still busy after 60 s")

        start = time.monotonic()
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(one, range(20)))
        elapsed = time.monotonic() - start
        ok = [r for r in results if r[0] == "ok"]
        errors = [r for r in results if r[0] == "error"]
        assert not errors, errors[:3]
        assert all(message == "Queue is full! Please try again." or message.startswith("the queue is full (3 jobs")
                   for message in busy)
        paths = set()
        for _, i, out in ok:
            video, seed = out[0], out[2]
            video_path = video["video"] if isinstance(video, dict) else video
            frames, _ = read_video(video_path)
            assert frames.shape == (8, 64, 64, 3) and seed == 100 + i
            paths.add(str(video_path))
        assert len(paths) == len(ok)  # distinct files
        outputs = sorted((tmp_path / "outputs").glob("*.mp4"))
        assert len(outputs) == len(ok)  # nothing lost or overwritten on the server side
        assert server.proc.poll() is None  # still up
        assert Client(url, verbose=False).predict(prompt=PROMPT, seed=7, **FAST, api_name="/generate")[2] == 7
        print(f"load test: {len(ok)} videos, {len(busy)} busy answers in {elapsed:.1f} s")
    finally:
        server.stop()
