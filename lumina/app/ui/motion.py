"""The Motion tab: one prompt and seed over a grid of positive x negative motion scores, shown as a table of videos,
a plot of requested gap against measured motion, and a table of the cells."""

from __future__ import annotations

import html
from typing import Any, List, Tuple

import gradio as gr
import pandas as pd

from lumina import validation as V
from lumina.app.endpoints import Studio
from lumina.app.form import MAX_GRID_SIDE, size_choices
from lumina.app.results import MEASURED_MOTION_NOTE
from lumina.app.ui.common import Slider, prompt_and_seed, running, wire_stop

MOTION_COLUMNS = ["positive", "negative", "requested gap", "measured motion"]
PLOT_COLUMNS = ["gap", "measured", "motion", "negative"]


def file_url(path) -> str:
    """A URL Gradio serves for a file under an allowed path (relative: works under a Space's root too)."""
    return "gradio_api/file=" + html.escape(str(path), quote=True)


def motion_grid_html(cells) -> str:
    """The grid as a table: a column per positive score, a row per negative score, each cell a playable video
    (its contact sheet as the poster) with its full caption underneath."""
    if not cells:
        return ""
    positives = list(dict.fromkeys(c.positive for c in cells))
    negatives = list(dict.fromkeys(c.negative for c in cells))
    by_pair = {(c.positive, c.negative): c for c in cells}
    head = "".join(f"<th scope='col'>positive {p:g}</th>" for p in positives)
    rows = []
    for n in negatives:
        tds = []
        for p in positives:
            c = by_pair.get((p, n))
            if c is None:
                tds.append("<td></td>")
                continue
            poster = f" poster='{file_url(c.tiles)}'" if c.tiles else ""
            tds.append(f"<td><video src='{file_url(c.video)}'{poster} controls loop muted playsinline "
                       f"preload='metadata'></video><div class='cap'>{html.escape(c.label)}</div></td>")
        rows.append(f"<tr><th scope='row'>negative {n:g}</th>{''.join(tds)}</tr>")
    return (f"<div class='motion-grid'><table><thead><tr><th></th>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def motion_outputs(cells, status) -> List[Any]:
    """The grid (HTML), plot data, table and status."""
    plot_df = pd.DataFrame({"gap": [float(c.gap) for c in cells],
                            "measured": [float("nan") if c.measured is None else c.measured for c in cells],
                            "motion": [f"motion {c.positive:g}" for c in cells],
                            "negative": [float(c.negative) for c in cells]}, columns=PLOT_COLUMNS)
    plot_df = plot_df.dropna(subset=["measured"])
    plot = gr.update(value=plot_df)
    if len(plot_df):
        gaps, measured = plot_df["gap"], plot_df["measured"]
        plot = gr.update(value=plot_df, x_lim=[float(gaps.min()) - 1, float(gaps.max()) + 1],
                         y_lim=[0.0, float(measured.max()) * 1.25 + 1e-3])
    table = pd.DataFrame([{"positive": c.positive, "negative": c.negative, "requested gap": c.gap,
                           "measured motion": None if c.measured is None else round(c.measured, 4)} for c in cells],
                         columns=MOTION_COLUMNS)
    return [motion_grid_html(cells), plot, table, status]


def build_motion_tab(studio: Studio, first_prompt: str) -> Tuple[gr.Dropdown, gr.Textbox, gr.Textbox]:
    """The tab and its events; returns what follows the Model dropdown: its resolution and its (positive,
    negative) scores."""
    d = studio.defaults_for_ui()
    grid_positive, grid_negative = studio.motion_grid_defaults()
    with gr.Tab("Motion", id="motion"):
        gr.Markdown("One prompt and seed over a grid of motion scores: columns are the positive score "
                    "(what to move like), rows the negative one (what guidance pushes away from). The "
                    "defaults are this model's own negative score with positives spread around its "
                    "default, so measured motion should rise along a row. Press a tile to play it.")
        gr.Markdown(MEASURED_MOTION_NOTE, elem_id="motion-note")
        m_prompt, m_seed = prompt_and_seed(first_prompt, "in every cell")
        with gr.Row():
            m_pos = gr.Textbox(value=grid_positive, label="Positive scores",
                               info=f"comma separated, up to {MAX_GRID_SIDE}")
            m_neg = gr.Textbox(value=grid_negative, label="Negative scores",
                               info=f"comma separated, up to {MAX_GRID_SIDE}")
            m_until = Slider(0, 1, value=d["neg_motion_until"], step=0.01, label="Switch at t",
                             info="then the negative score follows the positive one")
        with gr.Row():
            m_steps = Slider(2, V.MAX_STEPS, value=d["steps"], step=1, label="Steps", elem_id="motion-steps",
                             info="few steps: noisy videos, and noise reads as motion")
            m_resolution = gr.Dropdown(size_choices(studio.model_defaults()), value=d["resolution"],
                                       label="Resolution", allow_custom_value=True, info="smaller: a faster grid")
            m_frames = gr.Number(value=max(d["frames"], 8), label="Frames", precision=0,
                                 info="a multiple of 8")
        with gr.Row():
            m_run = gr.Button("Run grid", variant="primary", elem_id="motion-btn")
            m_stop = gr.Button("Stop", variant="stop", interactive=False, elem_id="motion-stop")
        m_status = gr.Textbox(label="Status", show_label=False, interactive=False, elem_id="motion-status",
                              placeholder="Press Run grid: one video per cell.")
        m_grid = gr.HTML(label="Grid", elem_id="motion-grid")
        with gr.Row():
            m_plot = gr.ScatterPlot(None, x="gap", y="measured",  # (an empty DataFrame breaks updates)
                                    color="motion", x_title="requested gap (positive - negative)",
                                    y_title="measured motion score", color_title="positive score",
                                    title="Requested gap vs measured motion",
                                    label="Requested gap vs measured motion", height=320,
                                    elem_id="motion-plot", min_width=300)
            m_table = gr.Dataframe(pd.DataFrame(columns=MOTION_COLUMNS), label="Cells", interactive=False,
                                   min_width=300)

    wire_stop(studio, m_stop, m_status)

    def motion_grid(prompt, seed, positive, negative, neg_motion_until, steps, resolution, frames,
                    progress=gr.Progress(), request: gr.Request = None):
        """Render one prompt and seed over a grid of positive x negative motion scores."""
        cells, state = studio.motion_grid(prompt=prompt, seed=seed, positive=positive, negative=negative,
                                          neg_motion_until=neg_motion_until, steps=steps, resolution=resolution,
                                          frames=frames, progress=progress, request=request)
        return motion_outputs(cells, state)

    m_inputs = [m_prompt, m_seed, m_pos, m_neg, m_until, m_steps, m_resolution, m_frames]
    running(m_run, m_stop, motion_grid, m_inputs, [m_grid, m_plot, m_table, m_status], api_name="motion_grid",
            show_progress_on=[m_status], validator=studio.admission(len(m_inputs)))
    return m_resolution, m_pos, m_neg
