"""The Compare tab: one prompt and seed rendered with each patch schedule, a panel per schedule filling as it finishes,
a summary table and the side-by-side mp4."""

from __future__ import annotations

from typing import Any, List, Optional, Sequence

import gradio as gr
import pandas as pd

from lumina import validation as V
from lumina.app.endpoints import COMPARE_REPEATS, Studio
from lumina.app.form import CACHE_CHOICES, COMPARE_SCHEDULES, size_choices
from lumina.app.results import CompareState
from lumina.app.ui.common import Number, Slider, prompt_and_seed, wire_job, wire_stop
from lumina.cache import NONE

COMPARE_INTRO = (
    "One prompt and seed rendered with each patch schedule. Coarser patches mean fewer tokens per step; whether "
    "that makes denoising faster on this machine is what the timings say: after an untimed warm-up, each schedule "
    "runs several times in turn, and each panel gives its **median** denoising time with the range of its runs "
    "(and the median's ratio to 1x2's), the whole clip's time, tokens per step and measured motion. The status "
    "says which schedule was fastest and whether its runs stand clear of the others'. **2x4** runs every step at "
    "the coarsest scale, **multiscale** starts there and finishes at 1x2."
)


COMPARE_COLUMNS = ["schedule", "denoise median (s)", "runs (s)", "vs 1x2", "tokens/step", "motion"]


def compare_table(results) -> pd.DataFrame:
    return pd.DataFrame([{
        "schedule": r.schedule, "denoise median (s)": round(r.denoise, 3), "runs (s)": r.spread,
        "vs 1x2": round(r.relative, 2), "tokens/step": ", ".join(f"{v}" for v in r.tokens_per_step.values()),
        "motion": None if r.motion is None else round(r.motion, 2),
    } for r in results], columns=COMPARE_COLUMNS)


def compare_outputs(state: CompareState, schedules: Sequence[str], shown: Optional[set] = None) -> List[Any]:
    """Four (video, caption) panels in COMPARE_SCHEDULES order (progress only in the running one), the table,
    the side-by-side mp4 and the status. `shown`: the panels whose video was already sent, left as they are
    until the last state, which sends them all."""
    shown = set() if shown is None or state.done else shown
    by_name = {r.schedule: r for r in state.results}
    videos, captions = [], []
    for name in COMPARE_SCHEDULES:
        r = by_name.get(name)
        chosen = name in schedules
        if r is not None and name in shown:
            videos.append(gr.skip())
        else:
            videos.append(gr.update(value=r.video if r else None, visible=chosen))
            if r is not None:
                shown.add(name)
        if r is not None:
            caption = "  \n".join([f"**{name}**"] + r.details())
        elif state.running == name:
            caption = f"**{name}**  \nrunning: {state.progress}"
        else:
            caption = f"**{name}**  \n{'waiting' if not state.done and chosen else 'not run'}"
        captions.append(gr.update(value=caption, visible=chosen))
    return videos + captions + [compare_table(state.results), state.side_by_side, state.status]


def build_compare_tab(studio: Studio, first_prompt: str) -> gr.Dropdown:
    """The tab and its events; returns its resolution dropdown, which follows the Model dropdown."""
    d = studio.defaults_for_ui()
    schedules = studio.schedule_choices()
    with gr.Tab("Compare", id="compare"):
        gr.Markdown(COMPARE_INTRO)
        c_prompt, c_seed = prompt_and_seed(first_prompt, "for every schedule", "compare")
        with gr.Row():
            c_schedules = gr.CheckboxGroup(
                [s for s in COMPARE_SCHEDULES if s in schedules], label="Schedules",
                value=[s for s in COMPARE_SCHEDULES if s in schedules], info="the patch schedules to render")
            c_steps = Slider(2, V.MAX_STEPS, value=d["steps"], step=1, label="Steps",
                             elem_id="compare-steps", info="the same for every schedule")
            c_resolution = gr.Dropdown(size_choices(studio.model_defaults()), value=d["resolution"],
                                       label="Resolution", allow_custom_value=True,
                                       info="larger: bigger speed differences")
            c_frames = Number(value=d["frames"], label="Frames", precision=0, info="1 or a multiple of 8")
            c_repeats = Number(value=COMPARE_REPEATS, label="Timed runs", precision=0,
                               info="runs of each schedule (1-9): the median and range are shown")
            c_cache = gr.Dropdown(CACHE_CHOICES, value=NONE, label="Step cache rows", allow_custom_value=True,
                                  info="also run each schedule with this step cache (rows 'schedule + cache')")
        with gr.Row():
            c_run = gr.Button("Compare", variant="primary", elem_id="compare-btn")
            c_stop = gr.Button("Stop", variant="stop", interactive=False, elem_id="compare-stop")
        c_status = gr.Textbox(label="Status", show_label=False, interactive=False, elem_id="compare-status",
                              placeholder="Press Compare: each panel fills as its schedule finishes.")
        with gr.Row(elem_id="compare-panels"):
            c_videos, c_captions = [], []
            for name in COMPARE_SCHEDULES:
                with gr.Column(min_width=120):
                    c_videos.append(gr.Video(label=name, autoplay=True, loop=True, interactive=False,
                                             elem_classes="compare-video"))
                    c_captions.append(gr.Markdown(f"**{name}**", label=f"{name} caption",
                                                  elem_classes="cell-label"))
        c_movie = gr.Video(label="Side by side", interactive=False, loop=True, elem_id="compare-movie",
                           buttons=["download"])
        c_table = gr.Dataframe(pd.DataFrame(columns=COMPARE_COLUMNS), label="Summary", interactive=False,
                               elem_id="compare-table", wrap=True)

    wire_stop(studio, c_stop, c_status)

    def compare(prompt, seed, schedules, steps, resolution, frames, repeats=COMPARE_REPEATS, cache=NONE,
                request: gr.Request = None):
        """Render one prompt and seed with each chosen patch schedule (and, with a step cache, each again with it),
        several timed runs each; panels fill as they finish."""
        shown: set = set()
        for state in studio.compare(prompt=prompt, seed=seed, schedules=schedules, steps=steps,
                                    resolution=resolution, frames=frames, repeats=repeats, cache=cache,
                                    request=request):
            yield compare_outputs(state, schedules or (), shown)

    c_inputs = [c_prompt, c_seed, c_schedules, c_steps, c_resolution, c_frames, c_repeats, c_cache]
    outputs = c_videos + c_captions + [c_table, c_movie, c_status]
    wire_job(studio, c_run, c_stop, compare, c_inputs, outputs, c_status, "compare",
             cleared=c_videos + [c_table, c_movie], show_progress_on=[c_status], show_progress="minimal")
    return c_resolution
