"""The Blocks page: the intro and the Generate, Compare, Motion explorer and Sound tabs (a builder per tab, in this
package) wired to `Studio`'s endpoints, and what `launch` needs."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import gradio as gr

from lumina.app.endpoints import Studio, load_examples
from lumina.app.state import cached_v2a, default_model
from lumina.app.ui.compare import build_compare_tab
from lumina.app.ui.generate import build_generate_tab, follow_model
from lumina.app.ui.motion import build_motion_tab
from lumina.app.ui.sound import build_sound_tab

QUEUE_SIZE = 16

CSS = """
button[role="tab"] {padding-left: 10px; padding-right: 10px}
.note-short {display: none}
@media (max-width: 640px) {.note-long {display: none} .note-short {display: inline} #intro p {display: none}}
.cell-label {font-size: 0.85em}
#compare-panels > div {flex: 1 1 130px; min-width: 120px}
#compare-table {overflow-x: auto; max-width: 100%}
.motion-grid {overflow-x: auto; max-width: 100%}
.motion-grid table {border-collapse: collapse; margin: 0 auto}
.motion-grid th {font-weight: 600; padding: 4px 6px; font-size: 0.9em; white-space: normal}
.motion-grid td {vertical-align: top; padding: 4px; width: 200px; max-width: 200px; min-width: 150px}
.motion-grid th[scope=row] {position: sticky; left: 0; background: var(--background-fill-primary); z-index: 1}
.motion-grid video {width: 100%; height: auto; display: block; background: #000}
.motion-grid .cap {font-size: 13px; line-height: 18px; white-space: normal; overflow-wrap: anywhere; padding-top: 2px}
.motion-grid .files {font-size: 13px; padding-top: 6px}
"""

INTRO = (
    "# Lumina-Video Studio\n"
    "Text to video with Lumina-Video's multi-scale Next-DiT and motion scores · model `{model}` on {device} · "
    "one job at a time"
)
# Said on the first screen when the model is one trained on the shape world (such as the bundled tiny one).
# A phone gets the short form, so the result stays within its first screen.
SHAPE_WORLD_NOTE = (
    '<span class="note-long">**About this model:** a {params} M-parameter toy trained on a CPU on flat shapes (4 '
    "shapes, 9 colours, 6 dark backgrounds) at {size} px; it draws only those, and says so when it drew nothing. The "
    "full Lumina-Video (1.77 B parameters) needs a GPU: `python app.py --model DIR`, or this Space on ZeroGPU.</span>"
    '<span class="note-short">**A {params} M toy model**: flat shapes at {size} px only; the full Lumina-Video '
    "needs a GPU.</span>"
)

log = logging.getLogger("lumina.app")


def default_outputs_dir() -> Path:
    return Path(os.environ.get("LUMINA_OUTPUTS", "outputs"))


def bundled_v2a_dir() -> Optional[Path]:
    """The bundled V2A model's folder (assets/lumina-v2a-tiny) when it is present; None otherwise."""
    from lumina.v2a import TINY_V2A_DIR

    return TINY_V2A_DIR if (TINY_V2A_DIR / "model_index.json").exists() else None


def bundled_audio_fn():
    """Sound from the bundled V2A model when it is present; None otherwise.

    The model (and its text encoder) loads on the first request for sound, not at start-up.
    """
    from lumina.v2a import audio_fn_for

    folder = bundled_v2a_dir()
    if folder is None:
        return None

    def audio_fn(frames, fps, prompt=None):
        return audio_fn_for(cached_v2a(str(folder)))(frames, fps, prompt)

    return audio_fn


def build_demo(model: Optional[str] = None, outputs_dir=None, keep: int = 100, extra_models: Sequence[str] = (),
               studio: Optional[Studio] = None, queue_size: int = QUEUE_SIZE, **limits) -> gr.Blocks:
    """Load the model (failing early with a clear message), lay out the app and start rendering the examples;
    `limits`: Studio's max_job_seconds and max_jobs_per_client."""
    if studio is None:
        studio = Studio(model or default_model(), outputs_dir or default_outputs_dir(), keep=keep,
                        extra_models=extra_models, audio_fn=bundled_audio_fn(), v2a_dir=bundled_v2a_dir(),
                        queue_size=queue_size, **limits)
    examples = load_examples()
    first_prompt = examples[0][0] if examples else "a red circle moving right on a navy background"

    with gr.Blocks(title="Lumina-Video Studio", delete_cache=(3600, 24 * 3600)) as demo:
        gr.Markdown(INTRO.format(model=Path(studio.holder.default).name or studio.holder.default,
                                 device=studio.holder.device), elem_id="intro")
        if studio.vocabulary() is not None:
            gr.Markdown(model_note(studio), elem_id="model-note")
        with gr.Tabs():
            generate = build_generate_tab(demo, studio, examples, first_prompt)
            compare_resolution = build_compare_tab(studio, first_prompt)
            motion_resolution, *grid_scores = build_motion_tab(studio, first_prompt)
            build_sound_tab(studio)
        follow_model(studio, generate, [compare_resolution, motion_resolution], grid_scores)
        # In the browser the seed is randomized by default; API callers get the seed they pass.
        demo.load(None, None, [generate.form["randomize_seed"]], js="() => true")

    demo.queue(default_concurrency_limit=1, max_size=queue_size)
    studio.runner.admission.waiting = lambda: waiting_sessions(demo)
    demo.studio = studio
    # The examples are rendered after the server starts answering (one job each, behind any visitor's), so a cold
    # start serves at once; what a killed render left is redone.
    threading.Thread(target=_render_examples, args=(studio, examples), name="examples", daemon=True).start()
    return demo


def _render_examples(studio: Studio, examples) -> None:
    try:
        studio.render_examples(examples)
    except Exception:  # noqa: BLE001 - the app serves without them; the next start tries again
        log.exception("rendering the examples failed")


def model_note(studio: Studio) -> str:
    """The first screen's line on what a shape-world model is (its size from its own weights)."""
    pipe, defaults = studio.holder.get()
    params = sum(p.numel() for p in pipe.transformer.parameters()) / 1e6
    return SHAPE_WORLD_NOTE.format(params=f"{params:.1f}", size=defaults.max_resolution)


def waiting_sessions(demo: gr.Blocks) -> Dict[str, int]:
    """Session -> its events waiting in Gradio's queue (so the admission drops tickets of jobs cancelled there)."""
    counts: Dict[str, int] = {}
    queue = getattr(demo, "_queue", None)
    for event_queue in getattr(queue, "event_queue_per_concurrency_id", {}).values():
        for event in list(event_queue.queue):
            counts[event.session_hash] = counts.get(event.session_hash, 0) + 1
    return counts


def launch_options(demo: gr.Blocks) -> Dict[str, Any]:
    """Extra keyword arguments for demo.launch(): CSS, the outputs folder as an allowed path, and error messages
    shown to API clients (never `"error": null`; the handlers' own errors carry no traceback)."""
    return {"css": CSS, "allowed_paths": [str(demo.studio.store.root)], "show_error": True}
