"""The Motion tab: one prompt and seed over a grid of positive x negative motion scores, shown as a table of videos,
a plot of measured motion against the motion score (a keyed line per negative score), a table of the cells and the
list of their files."""

from __future__ import annotations

import html
from typing import Any, List, Optional, Tuple

import gradio as gr
import pandas as pd

from lumina import validation as V
from lumina.app.endpoints import Studio
from lumina.app.form import MAX_GRID_SIDE, size_choices
from lumina.app.results import MEASURED_MOTION_NOTE, motion_plot
from lumina.app.ui.common import Number, Slider, prompt_and_seed, wire_job, wire_stop

MOTION_COLUMNS = ["motion", "negative", "measured", "video"]
NEGATIVE_NOTE = (
    "**Motion score** (columns): how much the video should move. **Negative score** (rows): a motion the guidance "
    "steers *away* from, the way a negative prompt steers away from words. A negative score far below the motion "
    "score pushes towards more movement; one above it pushes towards calm. Until the switch time the negative "
    "score holds, then it follows the motion score, as in the paper's motion study."
)


def file_url(path, root: str = "") -> str:
    """The URL Gradio serves a file under an allowed path at: absolute when the server's `root` is known."""
    return f"{root}/gradio_api/file=" + html.escape(str(path), quote=True)


def root_url(request: Optional[gr.Request]) -> str:
    """The app's public root (behind a proxy too), without a trailing slash; "" outside a request."""
    from gradio import route_utils

    raw = getattr(request, "request", None) if request is not None else None
    if raw is None:
        return ""
    try:
        return route_utils.get_root_url(raw, route_path="/gradio_api/queue/join", root_path=None)
    except Exception:  # noqa: BLE001 - links fall back to the page's own root
        return ""


def motion_grid_html(cells, root: str = "") -> str:
    """The grid as a table: a column per motion score, a row per negative score, each cell a playable video (its
    contact sheet as the poster) with its full caption and a link to its file underneath."""
    if not cells:
        return ""
    positives = list(dict.fromkeys(c.positive for c in cells))
    negatives = list(dict.fromkeys(c.negative for c in cells))
    by_pair = {(c.positive, c.negative): c for c in cells}
    head = "".join(f"<th scope='col'>motion {p:g}</th>" for p in positives)
    rows = []
    for n in negatives:
        tds = []
        for p in positives:
            c = by_pair.get((p, n))
            if c is None:
                tds.append("<td></td>")
                continue
            poster = f" poster='{file_url(c.tiles, root)}'" if c.tiles else ""
            tds.append(f"<td><video src='{file_url(c.video, root)}'{poster} controls loop muted playsinline "
                       f"preload='metadata'></video><div class='cap'>{html.escape(c.label)}</div></td>")
        rows.append(f"<tr><th scope='row'>negative {n:g}</th>{''.join(tds)}</tr>")
    return (f"<div class='motion-grid'><table><thead><tr><th></th>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def motion_outputs(cells, status, root: str = "") -> List[Any]:
    """The grid (HTML, absolute links when `root` is known), the plot (PNG), the table, the videos' files and
    the status."""
    plot = motion_plot(cells, cells[0].video.replace(".mp4", ".plot.png")) if cells else None
    table = pd.DataFrame([{"motion": c.positive, "negative": c.negative,
                           "measured": None if c.measured is None else round(c.measured, 3),
                           "video": file_url(c.video, root)} for c in cells], columns=MOTION_COLUMNS)
    return [motion_grid_html(cells, root), plot, table, [c.video for c in cells] or None, status]


def build_motion_tab(studio: Studio, first_prompt: str) -> Tuple[gr.Dropdown, gr.Textbox, gr.Textbox]:
    """The tab and its events; returns what follows the Model dropdown: its resolution and its (positive,
    negative) scores."""
    d = studio.defaults_for_ui()
    grid_positive, grid_negative = studio.motion_grid_defaults()
    with gr.Tab("Motion", id="motion"):
        gr.Markdown("One prompt and seed over a grid of motion scores. The defaults are in this model's own "
                    "range, so measured motion should rise along a row. Press a tile to play it.")
        gr.Markdown(NEGATIVE_NOTE, elem_id="negative-note")
        gr.Markdown(MEASURED_MOTION_NOTE, elem_id="motion-note")
        m_prompt, m_seed = prompt_and_seed(first_prompt, "in every cell", "motion")
        with gr.Row():
            m_pos = gr.Textbox(value=grid_positive, label="Motion scores", elem_id="motion-positive",
                               info=f"the columns: comma separated, up to {MAX_GRID_SIDE}")
            m_neg = gr.Textbox(value=grid_negative, label="Negative scores",
                               info=f"the rows: comma separated, up to {MAX_GRID_SIDE}")
            m_until = Slider(0, 1, value=d["neg_motion_until"], step=0.01, label="Switch at t",
                             info="then the negative score follows the motion score")
        with gr.Row():
            m_steps = Slider(2, V.MAX_STEPS, value=d["steps"], step=1, label="Steps", elem_id="motion-steps",
                             info="few steps: noisy videos, and noise reads as motion")
            m_resolution = gr.Dropdown(size_choices(studio.model_defaults()), value=d["resolution"],
                                       label="Resolution", allow_custom_value=True, info="smaller: a faster grid")
            m_frames = Number(value=max(d["frames"], 8), label="Frames", precision=0, info="a multiple of 8")
        with gr.Row():
            m_run = gr.Button("Run grid", variant="primary", elem_id="motion-btn")
            m_stop = gr.Button("Stop", variant="stop", interactive=False, elem_id="motion-stop")
        m_status = gr.Textbox(label="Status", show_label=False, interactive=False, elem_id="motion-status",
                              placeholder="Press Run grid: one video per cell.")
        m_grid = gr.HTML(label="Grid", elem_id="motion-grid")
        with gr.Row():
            m_plot = gr.Image(label="Measured motion by motion score", type="filepath", interactive=False,
                              elem_id="motion-plot", min_width=300, buttons=["download"])
            m_table = gr.Dataframe(pd.DataFrame(columns=MOTION_COLUMNS), label="Cells", interactive=False,
                                   min_width=300, wrap=True, elem_id="motion-table")
        m_files = gr.File(label="Videos", file_count="multiple", interactive=False, elem_id="motion-files")

    wire_stop(studio, m_stop, m_status)

    def motion_grid(prompt, seed=0, positive=None, negative=None, neg_motion_until=None, steps=None, resolution=None,
                    frames=None, progress=gr.Progress(), request: gr.Request = None):
        """Render one prompt and seed over a grid of motion x negative scores (unset: the model's 3x3 grid)."""
        cells, state = studio.motion_grid(prompt=prompt, seed=seed, positive=positive, negative=negative,
                                          neg_motion_until=neg_motion_until, steps=steps, resolution=resolution,
                                          frames=frames, progress=progress, request=request)
        return motion_outputs(cells, state, root_url(request))

    m_inputs = [m_prompt, m_seed, m_pos, m_neg, m_until, m_steps, m_resolution, m_frames]
    outputs = [m_grid, m_plot, m_table, m_files, m_status]
    wire_job(studio, m_run, m_stop, motion_grid, m_inputs, outputs, m_status, "motion_grid",
             cleared=[m_grid, m_plot, m_table, m_files], show_progress_on=[m_status])
    return m_resolution, m_pos, m_neg
