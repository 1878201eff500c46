"""The app in a real browser: Debian's Chromium, headless, driven by Playwright (never `playwright install`).

Generates a video, reuses its settings from the history, runs the Compare and Motion explorer tabs and
saves {generate,compare,motion}.png (to docs/screenshots with LUMINA_SCREENSHOTS=docs/screenshots).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("Debian's Chromium is not installed (/usr/bin/chromium): apt-get install -y chromium",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")

from lumina.pipelines.loading import TINY_DIR, ModelDefaults  # noqa: E402
from tests.test_app import PROMPT, Server  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# Screenshots go to a temporary folder; LUMINA_SCREENSHOTS=docs/screenshots refreshes the README's pictures.
SHOTS = Path(os.environ.get("LUMINA_SCREENSHOTS") or tempfile.mkdtemp(prefix="lumina-shots-"))
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
VIDEO_READY = """sel => { const v = document.querySelector(sel);
                          return !!v && !!v.currentSrc && v.readyState >= 1; }"""


@pytest.fixture(scope="module")
def server(random_pipeline_dir, tmp_path_factory):
    # refreshing the README's pictures shows the shipped offline model; the default run uses a small random one
    model = TINY_DIR if os.environ.get("LUMINA_SCREENSHOTS") else random_pipeline_dir
    srv = Server(model, tmp_path_factory.mktemp("browser_server"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def page(server):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(90_000)
        errors = []
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.goto(server.wait())
        page.errors = errors
        yield page
        browser.close()


def _shot(page, name: str) -> None:
    """Full-page PNG, reduced to a 256-colour palette to keep the repository small."""
    from PIL import Image

    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / name
    page.screenshot(path=str(path), full_page=True)
    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def test_generate_in_the_browser(page, server):
    page.wait_for_selector("#prompt textarea")
    # the browser randomizes the seed by default (set on page load)
    page.wait_for_function("() => document.querySelector('#randomize-seed input')?.checked", timeout=20_000)
    # the custom schedule is checked as you type, with the parser's message
    page.get_by_role("radio", name="custom").check()
    page.get_by_label("Custom schedule").fill("")
    page.get_by_label("Custom schedule").press_sequentially("2x4, 1x3@0.5")
    page.wait_for_function("() => /⚠[^\\n]*1x3/.test(document.body.innerText)")
    page.get_by_role("radio", name="multiscale").check()
    page.fill("#prompt textarea", PROMPT)
    page.click("#generate-btn")
    page.wait_for_function(VIDEO_READY, arg="#result-video video")
    status = page.inner_text("#status")
    d = ModelDefaults.read(server.model)
    assert "seed" in status and f"{d.width}x{d.height}" in status and f"{d.frames} frames" in status
    used_seed = int(page.input_value("input[aria-label='Used seed']"))

    # history: select the video, reuse its settings -> seed fixed, randomize off
    page.locator("#history button.thumbnail-item").first.click()
    reuse = page.get_by_role("button", name="Reuse these settings")
    reuse.wait_for(state="visible")
    page.wait_for_function("() => !Array.from(document.querySelectorAll('button'))"
                           ".find(b => b.innerText.includes('Reuse these settings')).disabled")
    reuse.click()
    page.wait_for_function("() => !document.querySelector('#randomize-seed input').checked")
    assert int(page.input_value("input[aria-label='Seed']")) == used_seed
    _shot(page, "generate.png")
    assert not page.errors


def test_compare_tab_in_the_browser(page):
    page.get_by_role("tab", name="Compare scales").click()
    page.click("#compare-btn")
    page.wait_for_function(
        "() => { const v = [...document.querySelectorAll('.compare-video video')];"
        " return v.length === 4 && v.every(x => x.currentSrc && x.readyState >= 1); }")
    page.wait_for_function("() => document.querySelector('#compare-status').innerText.includes('done')")
    text = page.inner_text("body")
    for words in ("1x2", "2x2", "2x4", "multiscale", "vs 1x2", "tokens/step", "measured motion"):
        assert words in text
    _shot(page, "compare.png")


def test_motion_explorer_in_the_browser(page):
    page.get_by_role("tab", name="Motion explorer").click()
    steps = page.locator("input[aria-label='number input for Steps']").last
    steps.fill("2")
    steps.press("Enter")
    page.click("#motion-btn")
    page.wait_for_function("() => document.querySelector('#motion-status').innerText.includes('done')",
                           timeout=150_000)
    page.wait_for_function("() => { const im = [...document.querySelectorAll('#motion-grid img')];"
                           " return im.length >= 9 && im.every(i => i.complete && i.naturalWidth > 0); }")
    assert page.inner_text("#motion-grid").count("measured") == 9
    page.locator("#motion-grid button.thumbnail-item").nth(4).click()  # the centre cell plays
    page.wait_for_function(VIDEO_READY, arg="#motion-video video")
    page.wait_for_selector("#motion-plot canvas, #motion-plot svg")
    page.wait_for_timeout(1500)  # let the plot finish drawing
    _shot(page, "motion.png")
    assert not page.errors


def test_screenshots_written():
    for name in ("generate.png", "compare.png", "motion.png"):
        assert (SHOTS / name).stat().st_size > 10_000, name
    assert os.access(SHOTS, os.W_OK)
