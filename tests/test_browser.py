"""The app in a real browser: Debian's Chromium, headless, driven by Playwright (never `playwright install`).

What a visitor sees at 1280x800 and at 390x844 (a phone): what the model is, on the first screen; Stop disabled
while idle, the result inside the first screen after Generate, the history's "Reuse these settings", Compare filling
its panels, the motion explorer's captions fitting their boxes, the Sound tab returning an mp4 with an audio track
(decoded with PyAV), and in every tab, at both sizes, an error's message where the result appears with the buttons
back (never stuck).
Saves generate.png, generate-phone.png, compare.png, motion.png and sound.png, and app.gif (a short tour), to
docs/screenshots with LUMINA_SCREENSHOTS=docs/screenshots (which also serves the bundled tiny model).
"""

from __future__ import annotations

import os
import shutil
import re
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("Debian's Chromium is not installed (/usr/bin/chromium): apt-get install -y chromium",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")

from lumina.media import write_mp4  # noqa: E402
from lumina.pipelines.defaults import ModelDefaults  # noqa: E402
from lumina.pipelines.loading import TINY_DIR  # noqa: E402
from tests.test_app import Server  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# Screenshots go to a temporary folder; LUMINA_SCREENSHOTS=docs/screenshots refreshes the README's pictures.
SHOTS = Path(os.environ.get("LUMINA_SCREENSHOTS") or tempfile.mkdtemp(prefix="lumina-shots-"))
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
DESKTOP, PHONE = {"width": 1280, "height": 800}, {"width": 390, "height": 844}
VIDEO_READY = """sel => { const v = document.querySelector(sel);
                          return !!v && !!v.currentSrc && v.readyState >= 1; }"""
# Where an element ends, measured from the top of the page (not of the scrolled viewport).
BOTTOM_ON_PAGE = "sel => { const r = document.querySelector(sel).getBoundingClientRect(); return r.bottom + scrollY; }"
GIF_FRAMES = []
WATCH_STOP = """() => { window.stopWasEnabled = false; const b = document.querySelector('#stop-btn');
    new MutationObserver(() => { if (!b.disabled) window.stopWasEnabled = true; })
        .observe(b, {attributes: true}); }"""


@pytest.fixture(scope="module")
def server(random_pipeline_dir, tmp_path_factory):
    # refreshing the README's pictures shows the shipped offline model; the default run uses a small random one
    model = TINY_DIR
    if not os.environ.get("LUMINA_SCREENSHOTS"):  # a shape-world model's first screen: with the note on the model
        model = tmp_path_factory.mktemp("shape_world") / "model"
        shutil.copytree(random_pipeline_dir, model)
        shutil.copy(TINY_DIR / "vocabulary.json", model / "vocabulary.json")
    # the Stop test's 199-step run must not meet the cost limit on a busy machine (tests/test_robust_app.py covers it)
    srv = Server(model, tmp_path_factory.mktemp("browser_server"), extra_args=["--max-job-seconds", "100000"])
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser(server):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield browser
        browser.close()


def _open(browser, server, viewport):
    page = browser.new_page(viewport=viewport)
    page.set_default_timeout(90_000)
    page.errors = []
    page.on("pageerror", lambda err: page.errors.append(str(err)))
    page.goto(server.wait())
    page.wait_for_selector("#prompt textarea")
    return page


@pytest.fixture(scope="module")
def page(browser, server):
    page = _open(browser, server, DESKTOP)
    yield page
    page.close()


def _shot(page, name: str, full_page: bool = True) -> None:
    """PNG reduced to a 256-colour palette to keep the repository small."""
    from PIL import Image

    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / name
    page.screenshot(path=str(path), full_page=full_page)
    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def _film(page, at: str = "") -> None:
    """One frame of the README's GIF, scrolled to `at` (only when refreshing the pictures)."""
    if os.environ.get("LUMINA_SCREENSHOTS"):
        import io

        from PIL import Image

        if at:
            page.locator(at).first.scroll_into_view_if_needed()
            page.wait_for_timeout(500)
        image = Image.open(io.BytesIO(page.screenshot())).convert("RGB")
        GIF_FRAMES.append(image.resize((640, round(image.height * 640 / image.width)), Image.LANCZOS))


def _stop_disabled(page, selector: str = "#stop-btn") -> bool:
    return page.locator(selector).is_disabled()


def _generate(page) -> str:
    assert _stop_disabled(page)  # nothing runs: Stop is greyed out
    page.click("#generate-btn")
    page.wait_for_function(VIDEO_READY, arg="#result-video video")
    page.wait_for_function("() => document.querySelector('#stop-btn').disabled")  # cleared when it ends
    page.wait_for_function("() => document.querySelector('#status textarea').value.startsWith('✓')")
    return page.input_value("#status textarea")


def _in_view(page, selector: str) -> bool:
    """Inside the viewport as it is now, and legible (at least 12 px text)."""
    return page.evaluate("""sel => { const e = document.querySelector(sel); const r = e.getBoundingClientRect();
        return r.top >= 0 && r.bottom <= innerHeight && r.left >= 0 && r.right <= innerWidth
               && parseFloat(getComputedStyle(e).fontSize) >= 12; }""", selector)


def test_generate_on_a_desktop(page, server):
    prompt = page.input_value("#prompt textarea")
    assert prompt.strip()  # prefilled: the first Generate makes a video
    if (Path(server.model) / "vocabulary.json").exists():  # a shape-world model says what it is on the first screen
        note = page.inner_text("#model-note")
        assert "flat shapes" in note and "CPU" in note and "GPU" in note and _in_view(page, "#model-note")
    page.get_by_role("button", name="Advanced").first.wait_for(state="visible")  # one section, not five
    for accordion in ("Size and length", "Sampling", "Scales (patch schedule)", "Seed, sound and model"):
        assert not page.get_by_role("button", name=accordion).count(), accordion
    for setting in ("Resolution", "Steps", "Motion score", "Patch schedule", "Seed"):  # all folded away
        assert not page.get_by_label(setting, exact=True).first.is_visible(), setting
    _film(page)
    page.evaluate(WATCH_STOP)
    page.click("#generate-btn")
    page.wait_for_timeout(1500)
    _film(page)  # the tiny model is still denoising: progress over the result
    page.wait_for_function(VIDEO_READY, arg="#result-video video")
    page.wait_for_function("() => document.querySelector('#stop-btn').disabled")
    assert page.evaluate("() => window.stopWasEnabled")  # while the job ran
    status = page.input_value("#status textarea")
    d = ModelDefaults.read(server.model)
    assert status.startswith("✓ seed") and f"{d.width}x{d.height}" in status and f"{d.frames} frames" in status
    assert "*" not in status and "measured motion" in status
    # the result sits under Generate, inside the first screen, without scrolling
    assert page.evaluate(BOTTOM_ON_PAGE, "#result-video video") <= DESKTOP["height"]
    assert page.evaluate(BOTTOM_ON_PAGE, "#status") <= DESKTOP["height"] + 60
    _film(page)
    _shot(page, "generate.png", full_page=False)
    used_seed = int(page.input_value("input[aria-label='Used seed']"))
    page.get_by_role("button", name="Advanced").first.click()
    # the browser randomizes the seed by default (set on page load)
    page.wait_for_function("() => document.querySelector('#randomize-seed input')?.checked", timeout=20_000)

    # history: select the video, reuse its settings -> seed fixed, randomize off
    page.locator("#history button.thumbnail-item").first.click()
    reuse = page.get_by_role("button", name="Reuse these settings")
    page.wait_for_function("() => !Array.from(document.querySelectorAll('button'))"
                           ".find(b => b.innerText.includes('Reuse these settings')).disabled")
    reuse.click()
    page.wait_for_function("() => !document.querySelector('#randomize-seed input').checked")
    assert int(page.input_value("input[aria-label='Seed']")) == used_seed

    # an example shows its cached result at once and loads its prompt
    page.locator("#examples button.thumbnail-item").nth(1).click(timeout=240_000)  # rendered after the start
    page.wait_for_function("() => document.querySelector('#status textarea').value.includes('cached example')")
    page.wait_for_function(VIDEO_READY, arg="#result-video video")
    assert page.input_value("#prompt textarea") != prompt
    _film(page)
    assert not page.errors


def _set_number(page, label: str, value: int, range_label: str = "") -> None:
    """Type `value` into a number box and wait until the page holds it (and the slider's track, `range_label`).

    On a loaded machine a re-render landing between typing and Enter can put the old value back (CI once ran a
    3-step default instead of 200 steps), so the value is checked after a pause and typed again until it stays.
    """
    box = page.get_by_label(label, exact=True).first
    held = "([sel, v]) => [...document.querySelectorAll(sel)].some(e => e.value === v)"
    for _ in range(5):
        box.fill(str(value))
        box.press("Enter")
        page.wait_for_timeout(500)
        if box.input_value() == str(value) and (
                not range_label or page.evaluate(held, [f"input[aria-label='{range_label}']", str(value)])):
            return
    raise AssertionError(f"{label} did not keep {value}: {box.input_value()}")


def _poll(page, script: str, timeout_s: float) -> None:
    """Evaluate `script` from Python every 50 ms: a page's own polling timers can be throttled while it does not
    paint, and then miss a moment that lasts only seconds (a step counter)."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(script):
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {script}"
        time.sleep(0.05)


def test_stop_keeps_the_previous_result(page):
    page.get_by_role("tab", name="Generate").click()
    before = page.evaluate("() => document.querySelector('#result-video video').currentSrc")
    # (the Advanced section was opened above)
    _set_number(page, "number input for Steps", 200, range_label="range slider for Steps")
    if not os.environ.get("LUMINA_SCREENSHOTS"):  # the small random model needs long clips to be stoppable: a few
        _set_number(page, "Frames", 256)  # seconds of steps even on a loaded CPU
    page.get_by_role("radio", name="1x2").check()
    page.click("#generate-btn")
    _poll(page, "() => /step \\d+\\//.test(document.querySelector('#result-video').innerText)", 150)
    shown = page.inner_text("#result-video")
    assert "/200 " in shown and "/199" not in shown  # the 200 steps typed above, counted as asked
    page.click("#stop-btn")
    page.wait_for_function("() => document.querySelector('#status textarea').value.startsWith('■ stopped')")
    page.wait_for_function("() => document.querySelector('#stop-btn').disabled")
    assert page.evaluate("() => document.querySelector('#result-video video').currentSrc") == before
    assert not page.errors


ERROR_PATHS = (  # tab, the box changed, what is typed there, Run, Stop, the status box, words of the message
    ("Generate", "#prompt textarea", "   ", "#generate-btn", "#stop-btn", "#status", "the prompt is empty"),
    ("Compare", "#compare-prompt textarea", "", "#compare-btn", "#compare-stop", "#compare-status",
     "the prompt is empty"),
    ("Motion", "#motion-positive textarea", "2, lots", "#motion-btn", "#motion-stop", "#motion-status",
     "'lots': not a number"),
)
BUTTONS_BACK = "([run, stop]) => !document.querySelector(run).disabled && document.querySelector(stop).disabled"


def _shows_the_error(page, run: str, stop: str, status: str, words: str) -> str:
    """After Run: the message in the tab's status, on the same screen as Run and legible; Run back, Stop off."""
    page.wait_for_function("sel => document.querySelector(sel).value.startsWith('✗')", arg=f"{status} textarea")
    message = page.input_value(f"{status} textarea")
    assert words in message, message
    page.wait_for_function(BUTTONS_BACK, arg=[run, stop])
    page.locator(status).scroll_into_view_if_needed()
    assert _in_view(page, f"{status} textarea")
    span = page.evaluate("""([a, b]) => document.querySelector(b).getBoundingClientRect().bottom
                                        - document.querySelector(a).getBoundingClientRect().top""", [run, status])
    assert span <= page.viewport_size["height"], span  # the message shows where the result appears, near Run
    return message


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_every_tab_comes_back_after_an_error(browser, server, viewport, tmp_path):
    """Never stuck: an empty prompt on Generate and Compare, "2, lots" as Motion scores and a refused upload in
    Sound each end with the message where the result appears and the tab's buttons back; a valid prompt then
    generates."""
    page = _open(browser, server, viewport)
    for tab, box, text, run, stop, status, words in ERROR_PATHS:
        page.get_by_role("tab", name=tab).click()
        before = page.input_value(box)
        page.fill(box, text)
        page.click(run)
        _shows_the_error(page, run, stop, status, words)
        page.fill(box, before)
    page.get_by_role("tab", name="Generate").click()
    assert _generate(page).startswith("✓ seed")  # typing a valid prompt helps
    page.get_by_role("tab", name="Sound").click()
    long = write_mp4(tmp_path / "long.mp4", np.zeros((11 * 8, 32, 32, 3), np.uint8), 8)
    page.locator("#sound-input input[type=file]").set_input_files(str(long))
    page.wait_for_function(VIDEO_READY, arg="#sound-input video")
    page.click("#sound-btn")
    _shows_the_error(page, "#sound-btn", "#sound-stop", "#sound-status", "lasts 11.0 s")
    assert not page.errors
    page.close()


def test_generate_on_a_phone(browser, server):
    page = _open(browser, server, PHONE)
    for tab in ("Generate", "Compare", "Motion", "Sound"):  # every tab in the bar, none behind "More"
        assert page.get_by_role("tab", name=tab).is_visible()
    if (Path(server.model) / "vocabulary.json").exists():  # the note's short form, and the result still in view
        note = page.inner_text("#model-note")
        assert "toy model" in note and "GPU" in note and "backgrounds" not in note and _in_view(page, "#model-note")
    status = _generate(page)
    assert status.startswith("✓ seed")
    assert page.evaluate(BOTTOM_ON_PAGE, "#result-video video") <= PHONE["height"]
    _shot(page, "generate-phone.png", full_page=False)
    page.get_by_role("tab", name="Compare").click()  # its four panels two by two, not one under another
    tops = page.evaluate("() => [...document.querySelectorAll('.compare-video')]"
                         ".map(e => Math.round(e.getBoundingClientRect().top))")
    assert len(tops) == 4 and tops[0] == tops[1] < tops[2] == tops[3]
    _set_number(page, "Timed runs", 1)
    page.click("#compare-btn")
    page.wait_for_function("() => document.querySelector('#compare-status textarea').value.includes('done')",
                           timeout=150_000)
    page.wait_for_function(VIDEO_READY, arg="#compare-movie video")
    # the side-by-side mp4 (two by two) is as wide as the phone, the table scrolls inside the page's width
    movie = page.evaluate("() => { const v = document.querySelector('#compare-movie video');"
                          " const r = v.getBoundingClientRect(); return [r.width, r.right, v.videoWidth]; }")
    assert movie[0] >= 300 and movie[1] <= PHONE["width"], movie
    table = page.evaluate("() => document.querySelector('#compare-table').getBoundingClientRect().right")
    assert table <= PHONE["width"] and page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
    assert "median" in page.inner_text("#compare-table")
    assert not page.errors
    page.close()


def test_compare_tab(page):
    page.get_by_role("tab", name="Compare").click()
    assert _stop_disabled(page, "#compare-stop")
    page.click("#compare-btn")
    # panels fill one by one: at some moment some are done and one is running
    page.wait_for_function("() => document.querySelectorAll('.compare-video video').length >= 1")
    page.wait_for_function("() => document.querySelector('#compare-status textarea').value.includes('done')",
                           timeout=150_000)
    page.wait_for_function(
        "() => { const v = [...document.querySelectorAll('.compare-video video')];"
        " return v.length === 4 && v.every(x => x.currentSrc && x.readyState >= 1); }")
    page.wait_for_function(VIDEO_READY, arg="#compare-movie video")
    text = page.inner_text("body")
    for words in ("1x2", "2x2", "2x4", "multiscale", "vs 1x2", "whole clip", "tokens/step", "measured motion",
                  "median of 3"):
        assert words in text
    status = page.input_value("#compare-status textarea")
    assert "each timed 3x" in status and ("in every run" in status or "no clear speed difference" in status)
    assert "speed floor" not in text
    assert "running:" not in text and _stop_disabled(page, "#compare-stop")
    _film(page, "#compare-panels")
    _shot(page, "compare.png")


CAPTIONS_FIT = """() => [...document.querySelectorAll('#motion-grid .cap, #motion-grid th')].map(e =>
    [e.innerText, e.scrollWidth <= e.clientWidth && e.scrollHeight <= e.clientHeight])"""


def _run_motion_grid(page) -> list:
    page.get_by_role("tab", name="Motion").click()
    assert _stop_disabled(page, "#motion-stop")
    assert "flicker" in page.inner_text("#motion-note")
    if not os.environ.get("LUMINA_SCREENSHOTS"):  # the pictures show the model's own step count
        steps = page.locator("#motion-steps input[type=number]")
        steps.fill("2")
        steps.press("Enter")
    page.click("#motion-btn")
    page.wait_for_function("() => document.querySelector('#motion-status textarea').value.includes('done')",
                           timeout=150_000)
    page.wait_for_function("() => [...document.querySelectorAll('#motion-grid video')].length >= 3")
    captions = page.evaluate(CAPTIONS_FIT)
    assert captions and all(fits for _, fits in captions), captions  # no caption cut off
    return [text for text, _ in captions]


def test_motion_explorer(page):
    texts = _run_motion_grid(page)
    assert sum("→ measured" in t for t in texts) == 9 and "motion 2" in texts  # the default 3x3 grid
    assert any(t.startswith("negative ") for t in texts)  # the row header
    # every cell is a playable video in place (its contact sheet as the poster)
    page.wait_for_function("() => [...document.querySelectorAll('#motion-grid video')]"
                           ".every(v => v.readyState >= 1 && v.duration > 0 && v.poster)")
    page.wait_for_selector("#motion-plot img")
    assert "negative score" in page.inner_text("#negative-note").lower()
    assert page.locator("#motion-files a, #motion-files .file-name, #motion-files td").count() >= 9
    _film(page, "#motion-grid")
    _shot(page, "motion.png")
    assert not page.errors


def test_motion_explorer_on_a_phone(browser, server):
    page = _open(browser, server, PHONE)
    texts = _run_motion_grid(page)
    assert sum("→ measured" in t for t in texts) == 9
    # cells wide enough to see (not 66 px strips): the grid scrolls sideways inside the phone's width
    grid = page.evaluate("""() => { const g = document.querySelector('#motion-grid .motion-grid');
        return [g.getBoundingClientRect().right, g.scrollWidth > g.clientWidth,
                Math.min(...[...g.querySelectorAll('video')].map(v => v.getBoundingClientRect().width))]; }""")
    assert grid[0] <= PHONE["width"] and grid[1] and grid[2] >= 140, grid
    assert page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
    page.close()


def test_sound_tab(page, server, tmp_path):
    import av

    page.get_by_role("tab", name="Sound").click()
    from lumina_research.world import render_clip, sample_scene

    scene = sample_scene(7, motion="bouncing", seconds=2.5)  # a shape-world clip, what the tiny V2A model knows
    clip = write_mp4(tmp_path / "upload.mp4", render_clip(scene, fps=10, seconds=2.5).frames, 10)  # 2.5 s
    page.locator("#sound-input input[type=file]").set_input_files(str(clip))
    page.wait_for_function(VIDEO_READY, arg="#sound-input video")
    page.click("#sound-btn")
    page.wait_for_function(VIDEO_READY, arg="#sound-video video", timeout=150_000)
    page.wait_for_function("() => document.querySelector('#sound-video video').readyState >= 2")  # a frame shows
    page.wait_for_selector("#sound-wave img")
    status = page.input_value("#sound-status textarea")
    assert status.startswith("✓ 2.50 s of sound"), status
    assert re.search(r"hits on [1-9]\d* contacts? seen at [\d., ]+ s", status), status  # where the hits went
    src = page.evaluate("() => document.querySelector('#sound-video video').currentSrc")
    out = tmp_path / "with-sound.mp4"
    with urllib.request.urlopen(src, timeout=30) as r:
        out.write_bytes(r.read())
    with av.open(str(out)) as container:  # playable: a video stream and an audio stream with real samples
        assert container.streams.video and container.streams.audio
        samples = [f.to_ndarray() for f in container.decode(audio=0)]
    audio = np.concatenate([s.reshape(-1) for s in samples])
    assert len(audio) >= 2.5 * 16000 * 0.99 and np.abs(audio).max() > 1e-3
    _film(page)
    _shot(page, "sound.png")
    # a refused upload replaces the previous result: no "✓ … of sound" or waveform beside the refusal
    long = write_mp4(tmp_path / "long.mp4", np.zeros((11 * 8, 32, 32, 3), np.uint8), 8)
    page.locator("#sound-input button[aria-label='Clear']").first.click()
    page.locator("#sound-input input[type=file]").set_input_files(str(long))
    page.wait_for_function(VIDEO_READY, arg="#sound-input video")
    page.click("#sound-btn")
    page.wait_for_function("() => document.querySelector('#sound-status textarea').value.startsWith('✗')")
    assert "lasts 11.0 s" in page.input_value("#sound-status textarea")
    page.wait_for_function("() => !document.querySelector('#sound-wave img') && "
                           "!document.querySelector('#sound-video video')")
    assert not page.errors


def test_screenshots_written():
    names = ("generate.png", "generate-phone.png", "compare.png", "motion.png", "sound.png")
    for name in names:
        assert (SHOTS / name).stat().st_size > 10_000, name
    if GIF_FRAMES:
        gif = SHOTS / "app.gif"
        frames = [f.quantize(colors=128, method=0) for f in GIF_FRAMES]
        frames[0].save(gif, save_all=True, append_images=frames[1:], duration=1600, loop=0, optimize=True)
        assert gif.stat().st_size <= 600_000
