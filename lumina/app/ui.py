"""The Blocks layout: Generate, Compare, Motion explorer and Sound tabs wired to `Studio`'s endpoints."""

from __future__ import annotations

import functools
import html
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import gradio as gr
import pandas as pd

from lumina import validation as V
from lumina.app.handlers import (
    COMPARE_SCHEDULES, CUSTOM, LENGTH_MODES, MAX_GRID_SIDE, MEASURED_MOTION_NOTE, SETTING_NAMES, SOUND_NOTE,
    CompareState, Studio, _owner, frames_notice, load_examples, settings_caption, size_choices, vocabulary_text,
)
from lumina.app.state import cached_v2a, default_model

HISTORY_SIZE = 24
QUEUE_SIZE = 16
HEAVY = dict(concurrency_id="studio", concurrency_limit=1)  # one model run at a time, across all tabs
LIGHT = dict(api_visibility="private", show_progress="hidden", concurrency_limit=None, trigger_mode="always_last")

CSS = """
button[role="tab"] {padding-left: 10px; padding-right: 10px}
.cell-label {font-size: 0.85em}
#compare-panels > div {flex: 1 1 130px; min-width: 120px}
.motion-grid {overflow-x: auto}
.motion-grid table {border-collapse: collapse; margin: 0 auto}
.motion-grid th {font-weight: 600; padding: 4px 6px; font-size: 0.9em; white-space: normal}
.motion-grid td {vertical-align: top; padding: 4px; width: 200px; max-width: 200px}
.motion-grid video {width: 100%; height: auto; display: block; background: #000}
.motion-grid .cap {font-size: 13px; line-height: 18px; white-space: normal; overflow-wrap: anywhere; padding-top: 2px}
"""

INTRO = (
    "# Lumina-Video Studio\n"
    "Text to video with Lumina-Video's multi-scale Next-DiT and motion scores · model `{model}` on {device} · "
    "one job at a time"
)

COMPARE_INTRO = (
    "One prompt and seed rendered with each patch schedule, after a short untimed warm-up run. Coarser patches "
    "mean fewer tokens per step, so faster denoising: each panel gives its denoising time (and its ratio to 1x2), "
    "the whole clip's time (text encoding, decoding and writing included), tokens per step and measured motion. "
    "**2x4 alone** runs every step at the coarsest scale: a speed floor, not a usable video (this model adds "
    "detail only at finer scales, so it comes out as coloured noise, and that flicker reads as high measured "
    "motion). **multiscale** starts at 2x4 and finishes at 1x2."
)


def Slider(*args, **kwargs) -> gr.Slider:  # noqa: N802 (stands in for gr.Slider)
    """gr.Slider whose range error names the field: Gradio's own ("Value 500 is greater than maximum value 200.")
    reaches an API caller without saying which of two dozen inputs it was. (Wrapped, not subclassed: Gradio
    writes a .pyi stub beside any module that subclasses a component.)"""
    slider = gr.Slider(*args, **kwargs)
    check = slider.preprocess

    def preprocess(payload):
        try:
            return check(payload)
        except gr.Error:
            low, high = slider.minimum, slider.maximum
            side = f"less than the minimum, {low:g}" if payload < low else f"more than the maximum, {high:g}"
            raise gr.Error(f"{slider.label}: {payload:g} is {side} (allowed {low:g} to {high:g})") from None

    slider.preprocess = preprocess
    return slider


def default_outputs_dir() -> Path:
    return Path(os.environ.get("LUMINA_OUTPUTS", "outputs"))


def _history_entries(history: Optional[List[Dict[str, Any]]]) -> List[Dict[str, Any]]:
    return [e for e in (history or []) if Path(e["video"]).exists()]


def _gallery(history) -> List:
    return [(e["video"], e["caption"]) for e in _history_entries(history)]


def add_history(history, video, sidecar, settings):
    """Put a finished video first in the session's history."""
    if not video or not settings:
        return history, _gallery(history)
    entry = {"video": video, "sidecar": sidecar, "caption": settings_caption(settings), "settings": settings}
    history = ([entry] + list(history or []))[:HISTORY_SIZE]
    return history, _gallery(history)


def select_history(history, evt: gr.SelectData):
    entries = _history_entries(history)
    if evt is None or evt.index is None or not 0 <= evt.index < len(entries):
        return None, None, gr.update(interactive=False)
    entry = entries[evt.index]
    return entry, entry["settings"], gr.update(interactive=True)


def reuse_settings(entry):
    """The Generate tab's inputs as they were for a history entry (its seed fixed, randomize off)."""
    if not entry:
        raise gr.Error("select a video in the history first")
    ui = entry["settings"]["ui"]
    # entries made before these settings used the positive score after the switch and independent noise
    ui = {"neg_motion_after": ui.get("motion"), "shared_noise": 0.0, **ui}
    return [ui.get(name) for name in SETTING_NAMES]


COMPARE_COLUMNS = ["schedule", "denoise (s)", "denoise vs 1x2", "whole clip (s)", "tokens per step",
                   "measured motion"]
MOTION_COLUMNS = ["positive", "negative", "requested gap", "measured motion"]


def compare_table(results) -> pd.DataFrame:
    return pd.DataFrame([{
        "schedule": r.schedule, "denoise (s)": round(r.denoise, 3), "denoise vs 1x2": round(r.relative, 3),
        "whole clip (s)": round(r.seconds, 3),
        "tokens per step": ", ".join(f"{k}: {v}" for k, v in r.tokens_per_step.items()),
        "measured motion": None if r.motion is None else round(r.motion, 3),
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
    """Load the model (failing early with a clear message), render the examples once, and lay out the app;
    `limits`: Studio's max_job_seconds and max_jobs_per_client."""
    if studio is None:
        studio = Studio(model or default_model(), outputs_dir or default_outputs_dir(), keep=keep,
                        extra_models=extra_models, audio_fn=bundled_audio_fn(), v2a_dir=bundled_v2a_dir(),
                        queue_size=queue_size, **limits)
    d = studio.defaults_for_ui()
    md = studio.model_defaults()
    sizes = size_choices(md)
    schedules = studio.schedule_choices()
    examples = studio.example_results(load_examples())
    first_prompt = examples[0]["prompt"] if examples else "a red circle moving right on a navy background"
    vocab = vocabulary_text(studio.vocabulary())
    grid_positive, grid_negative = studio.motion_grid_defaults()

    with gr.Blocks(title="Lumina-Video Studio", delete_cache=(3600, 24 * 3600)) as demo:
        gr.Markdown(INTRO.format(model=Path(studio.holder.default).name or studio.holder.default,
                                 device=studio.holder.device))
        with gr.Tabs():
            # ------------------------------------------------------------ Generate
            with gr.Tab("Generate", id="generate"):
                with gr.Row():
                    with gr.Column(scale=5, min_width=300):
                        prompt = gr.Textbox(value=first_prompt, label="Prompt", lines=2, elem_id="prompt",
                                            info=vocab or "describe the video")
                        prompt_notice = gr.Markdown(studio.prompt_notice(first_prompt), elem_id="prompt-notice")
                        with gr.Row():
                            generate_btn = gr.Button("Generate", variant="primary", elem_id="generate-btn",
                                                     min_width=100)
                            stop_btn = gr.Button("Stop", variant="stop", interactive=False, elem_id="stop-btn",
                                                 min_width=100)
                        video = gr.Video(label="Result", autoplay=True, loop=True, elem_id="result-video",
                                         interactive=False, buttons=["download"], height=300)
                        status = gr.Textbox(label="Status", show_label=False, interactive=False, lines=1, max_lines=4,
                                            elem_id="status", placeholder="Press Generate: the result appears here.")
                        with gr.Row(visible=False) as details_row:
                            used_seed = gr.Number(label="Used seed", precision=0, interactive=False)
                            sidecar_file = gr.File(label="Settings JSON (sidecar)", interactive=False)
                        with gr.Accordion("Settings of this video (JSON)", open=False, visible=False) as details_acc:
                            settings = gr.JSON(label="Settings")
                    with gr.Column(scale=4, min_width=300):
                        gr.Markdown("**Examples**: click one to see its result and load its prompt and seed",
                                    visible=bool(examples))
                        example_gallery = gr.Gallery(
                            [(e["tiles"], e["prompt"]) for e in examples], label="Examples", show_label=False,
                            columns=3, rows=-(-len(examples) // 3), height="auto", allow_preview=False,
                            object_fit="contain", elem_id="examples", visible=bool(examples))
                        with gr.Accordion("Size and length", open=False):
                            with gr.Row():
                                resolution = gr.Dropdown(sizes, value=d["resolution"], label="Resolution",
                                                         allow_custom_value=True, scale=2,
                                                         info=f"sizes this model supports (max {md.max_resolution})")
                                custom_size = gr.Checkbox(value=False, label="Custom size", scale=1,
                                                          info="type width and height")
                            with gr.Row(visible=False) as custom_row:
                                width = gr.Number(value=d["width"], label="Width", precision=0,
                                                  info="multiples of 32")
                                height = gr.Number(value=d["height"], label="Height", precision=0,
                                                   info="multiples of 32")
                            size_note = gr.Markdown()
                            with gr.Row():
                                length_mode = gr.Radio(list(LENGTH_MODES), value=d["length_mode"], label="Length in",
                                                       info="give the length in seconds or in frames")
                                duration = gr.Number(value=d["duration"], label="Duration (s)",
                                                     visible=d["length_mode"] == "seconds",
                                                     info="rounded to whole frames")
                                frames = gr.Number(value=d["frames"], label="Frames", precision=0,
                                                   visible=d["length_mode"] == "frames",
                                                   info="1 (an image) or a multiple of 8")
                                fps = gr.Number(value=d["fps"], label="FPS", precision=0,
                                                info=f"frames per second, {V.FPS_RANGE[0]}..{V.FPS_RANGE[1]}")
                            length_note = gr.Markdown(frames_notice(d["length_mode"], d["duration"], d["frames"],
                                                                    d["fps"]))
                        with gr.Accordion("Sampling", open=False):
                            negative_prompt = gr.Textbox(label="Negative prompt", lines=1,
                                                         info="what the video should not show")
                            steps = Slider(2, V.MAX_STEPS, value=d["steps"], step=1, label="Steps",
                                              info="more steps: finer results, slower (steps - 1 model calls)")
                            time_shift = Slider(0.1, 100, value=d["time_shift"], step=0.1, label="Time shift",
                                                   info="higher spends more of the steps on the noisy start "
                                                        "(overall layout and motion), lower on fine detail")
                            shared_noise = Slider(*V.SHARED_NOISE_RANGE, value=d["shared_noise"], step=0.05,
                                                     label="Shared noise",
                                                     info="share of the starting noise common to all frames "
                                                          "(0 = independent, the release's): steadier, "
                                                          "but small motion scores move less")
                            guidance = Slider(*V.GUIDANCE_RANGE, value=d["guidance"], step=0.5,
                                                 label="Guidance (CFG)",
                                                 info="how strongly the prompt is followed (0 = not guided)")
                            guidance_until = Slider(0, 1, value=d["guidance_until"], step=0.01,
                                                       label="Guidance until t",
                                                       info="guidance stops at this flow time (1 = never)")
                        with gr.Accordion("Motion", open=False):
                            motion = Slider(*V.MOTION_RANGE, value=d["motion"], step=0.5, label="Motion score",
                                               info="how much should move; -1 = no motion condition")
                            neg_motion = Slider(*V.MOTION_RANGE, value=d["neg_motion"], step=0.5,
                                                   label="Negative motion",
                                                   info="guidance pushes away from this score; "
                                                        "below the motion score = more motion")
                            neg_motion_until = Slider(0, 1, value=d["neg_motion_until"], step=0.01,
                                                         label="Switch at t",
                                                         info="the negative score holds until this flow time "
                                                              "(1 = throughout; release 0.05)")
                            neg_motion_after = Slider(*V.MOTION_RANGE, value=d["neg_motion_after"], step=0.5,
                                                         label="Negative after the switch",
                                                         info="release: 6; equal to the motion score, "
                                                              "the gap acts early only")
                        with gr.Accordion("Scales (patch schedule)", open=False):
                            schedule = gr.Radio(schedules, value=d["schedule"], label="Patch schedule",
                                                info="multiscale: coarse patches early, fine late, fastest "
                                                     "for its quality; 1x2 is finest and slowest")
                            custom_schedule = gr.Textbox(value=d["custom_schedule"], label="Custom schedule",
                                                         visible=d["schedule"] == CUSTOM,
                                                         info="patch sizes with the flow time each starts at",
                                                         placeholder="2x4, 2x2@0.03, 1x2@0.125")
                            schedule_note = gr.Markdown(studio.check_schedule(d["schedule"], d["custom_schedule"]))
                        with gr.Accordion("Seed, sound and model", open=False):
                            with gr.Row():
                                seed = gr.Number(value=d["seed"], label="Seed", precision=0,
                                                 info="the same seed and settings give the same video")
                                randomize_seed = gr.Checkbox(value=False, label="Randomize seed",
                                                             info=f"draw a new seed (0..{V.MAX_SEED}) each time",
                                                             elem_id="randomize-seed")
                            add_sound = gr.Checkbox(value=False, label="Add sound",
                                                    interactive=studio.sound_available,
                                                    info="Lumina-V2A writes a soundtrack for the result (a few "
                                                         "seconds more)" if studio.sound_available else SOUND_NOTE)
                            with gr.Row():
                                model = gr.Dropdown(studio.holder.choices, value=studio.holder.default, label="Model",
                                                    info="one model is loaded at a time")
                                memory_mode = gr.Dropdown(studio.holder.memory_modes, value="none",
                                                          label="Memory mode",
                                                          info="GPU memory savers: 'vae tiling' decodes in tiles, "
                                                               "'model offload' keeps parts on the CPU; "
                                                               "'a + b' uses both; CPU: none")
                gr.Markdown("### History (this session)")
                history_state = gr.State([])
                selected = gr.State(None)
                with gr.Row():
                    history = gr.Gallery(label="History", columns=6, height=220, allow_preview=False, scale=3,
                                         object_fit="contain", fit_columns=False,
                                         elem_id="history")
                    with gr.Column(scale=2):
                        reuse_btn = gr.Button("Reuse these settings", interactive=False)
                        with gr.Accordion("Selected video's settings", open=False):
                            selected_settings = gr.JSON(label="Settings")

            # ------------------------------------------------------------ Compare scales
            with gr.Tab("Compare", id="compare"):
                gr.Markdown(COMPARE_INTRO)
                with gr.Row():
                    c_prompt = gr.Textbox(value=first_prompt, label="Prompt", scale=3,
                                          info="the same prompt for every schedule")
                    c_seed = gr.Number(value=0, label="Seed", precision=0, scale=1,
                                       info="the same starting noise for every schedule")
                with gr.Row():
                    c_schedules = gr.CheckboxGroup(
                        [s for s in COMPARE_SCHEDULES if s in schedules], label="Schedules",
                        value=[s for s in COMPARE_SCHEDULES if s in schedules], info="the patch schedules to render")
                    c_steps = Slider(2, V.MAX_STEPS, value=d["steps"], step=1, label="Steps",
                                        elem_id="compare-steps", info="the same for every schedule")
                    c_resolution = gr.Dropdown(sizes, value=d["resolution"], label="Resolution",
                                               allow_custom_value=True, info="larger: bigger speed differences")
                    c_frames = gr.Number(value=d["frames"], label="Frames", precision=0, info="1 or a multiple of 8")
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
                c_movie = gr.Video(label="Side by side (one mp4, labelled with schedule and denoising time)",
                                   interactive=False, loop=True, elem_id="compare-movie", buttons=["download"])
                c_table = gr.Dataframe(pd.DataFrame(columns=COMPARE_COLUMNS), label="Summary", interactive=False)

            # ------------------------------------------------------------ Motion explorer
            with gr.Tab("Motion", id="motion"):
                gr.Markdown("One prompt and seed over a grid of motion scores: columns are the positive score "
                            "(what to move like), rows the negative one (what guidance pushes away from). The "
                            "defaults are this model's own negative score with positives spread around its "
                            "default, so measured motion should rise along a row. Press a tile to play it.")
                gr.Markdown(MEASURED_MOTION_NOTE, elem_id="motion-note")
                with gr.Row():
                    m_prompt = gr.Textbox(value=first_prompt, label="Prompt", scale=3,
                                          info="the same prompt in every cell")
                    m_seed = gr.Number(value=0, label="Seed", precision=0, scale=1,
                                       info="the same starting noise in every cell")
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
                    m_resolution = gr.Dropdown(sizes, value=d["resolution"], label="Resolution",
                                               allow_custom_value=True, info="smaller: a faster grid")
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

            # ------------------------------------------------------------ Sound
            with gr.Tab("Sound", id="sound", visible=studio.v2a_dir is not None):
                gr.Markdown(f"Upload a video (up to {V.MAX_V2A_SECONDS:g} s, any frame rate) and Lumina-V2A writes "
                            "a soundtrack for it. The bundled tiny V2A model was trained on the shape world: each "
                            "colour has its pitch and bounces click, so it suits this app's videos best.")
                with gr.Row():
                    with gr.Column(min_width=300):
                        s_video = gr.Video(label=f"Video (up to {V.MAX_V2A_SECONDS:g} s)", sources=["upload"],
                                           elem_id="sound-input", height=300)
                        s_prompt = gr.Textbox(label="Prompt (optional)", info="describe the sound or the scene")
                        with gr.Row():
                            s_steps = Slider(2, V.MAX_STEPS, value=studio.sound_default_steps(), step=1,
                                                label="Steps", info="more steps: cleaner, slower")
                            s_seed = gr.Number(value=0, label="Seed", precision=0,
                                               info="the same seed gives the same sound")
                        s_run = gr.Button("Add sound", variant="primary", elem_id="sound-btn")
                        if examples:
                            gr.Examples([[examples[0]["video"]]], inputs=[s_video], label="Try a generated clip")
                    with gr.Column(min_width=300):
                        s_out = gr.Video(label="Video with sound", interactive=False, elem_id="sound-video",
                                         buttons=["download"], height=300)
                        s_status = gr.Textbox(label="Status", show_label=False, interactive=False,
                                              elem_id="sound-status")
                        s_wave = gr.Image(label="Waveform", type="filepath", interactive=False, elem_id="sound-wave")
                        s_settings = gr.JSON(label="Used settings")

        # ---------------------------------------------------------------- events
        gen_inputs = [prompt, negative_prompt, resolution, custom_size, width, height, length_mode, duration, frames,
                      fps, steps, guidance, guidance_until, time_shift, shared_noise, motion, neg_motion,
                      neg_motion_until, neg_motion_after, schedule, custom_schedule, seed, randomize_seed, add_sound,
                      model, memory_mode]
        assert len(gen_inputs) == len(SETTING_NAMES)
        gen_outputs = [video, sidecar_file, used_seed, settings, status]

        def job_started():
            return gr.update(interactive=False), gr.update(interactive=True)

        def job_ended():
            return gr.update(interactive=True), gr.update(interactive=False)

        def running(run_btn, stop_btn_, event_fn, inputs, outputs, **kwargs):
            """run_btn starts `event_fn`; Stop is enabled only while it runs."""
            started = run_btn.click(job_started, None, [run_btn, stop_btn_], queue=False, api_visibility="private",
                                    show_progress="hidden")
            event = started.then(event_fn, inputs, outputs, **HEAVY, **kwargs)
            event.then(job_ended, None, [run_btn, stop_btn_], queue=False, api_visibility="private",
                       show_progress="hidden")
            return event

        @functools.wraps(studio.generate)
        def generate(*args, **kwargs):
            result = studio.generate(*args, **kwargs)
            if result[0] is None:  # stopped: the previous result stays
                return gr.skip(), gr.skip(), gr.skip(), gr.skip(), result[-1]
            return result

        gen = running(generate_btn, stop_btn, generate, gen_inputs, gen_outputs, api_name="generate",
                      show_progress_on=[video], validator=studio.admission(len(gen_inputs)))
        gen.success(add_history, [history_state, video, sidecar_file, settings], [history_state, history],
                    api_visibility="private", show_progress="hidden", queue=False)
        gen.then(lambda v: [gr.update(visible=bool(v))] * 2, [video], [details_row, details_acc],
                 api_visibility="private", show_progress="hidden", queue=False)

        def stop(request: gr.Request = None):
            """Stop this session's running job after its current step."""
            return studio.stop(_owner(request))

        for button, box in ((stop_btn, status), (c_stop, c_status), (m_stop, m_status)):
            button.click(stop, None, box, api_name="stop" if button is stop_btn else False,
                         concurrency_limit=None, show_progress="hidden", queue=False)

        def show_example(evt: gr.SelectData):
            e = examples[evt.index]
            return (e["prompt"], e["seed"], False, e["video"], e["sidecar"], e["seed"], e["settings"], e["status"],
                    gr.update(visible=True), gr.update(visible=True))

        example_gallery.select(show_example, None, [prompt, seed, randomize_seed] + gen_outputs
                               + [details_row, details_acc], api_visibility="private", queue=False,
                               show_progress="hidden")

        def compare(prompt, seed, schedules, steps, resolution, frames, request: gr.Request = None):
            """Render one prompt and seed with each chosen patch schedule; panels fill as they finish."""
            shown: set = set()
            for state in studio.compare(prompt=prompt, seed=seed, schedules=schedules, steps=steps,
                                        resolution=resolution, frames=frames, request=request):
                yield compare_outputs(state, schedules or (), shown)

        c_inputs = [c_prompt, c_seed, c_schedules, c_steps, c_resolution, c_frames]
        running(c_run, c_stop, compare, c_inputs, c_videos + c_captions + [c_table, c_movie, c_status],
                api_name="compare", show_progress_on=[c_status], show_progress="minimal",
                validator=studio.admission(len(c_inputs)))

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

        def sound(video, prompt, steps, seed, progress=gr.Progress(), request: gr.Request = None):
            """Lumina-V2A's soundtrack for an uploaded video (up to 10 s)."""
            return studio.sound(video=video, prompt=prompt, steps=steps, seed=seed, progress=progress,
                                request=request)

        s_inputs = [s_video, s_prompt, s_steps, s_seed]
        s_run.click(sound, s_inputs, [s_out, s_wave, s_settings, s_status], api_name="v2a", show_progress_on=[s_out],
                    validator=studio.admission(len(s_inputs)), **HEAVY)

        # live checks and visibility
        prompt.change(studio.prompt_notice, [prompt, model], [prompt_notice], **LIGHT)

        def on_schedule(schedule, custom_schedule, model):
            return gr.update(visible=schedule == CUSTOM), studio.check_schedule(schedule, custom_schedule, model)

        gr.on([schedule.change, custom_schedule.change], on_schedule, [schedule, custom_schedule, model],
              [custom_schedule, schedule_note], **LIGHT)

        def on_size(custom_size, width, height, model):
            return (gr.update(visible=bool(custom_size)), gr.update(interactive=not custom_size),
                    studio.size_note(custom_size, width, height, model))

        gr.on([custom_size.change, width.change, height.change], on_size, [custom_size, width, height, model],
              [custom_row, resolution, size_note], **LIGHT)

        def on_length(length_mode, duration, frames, fps):
            return (gr.update(visible=length_mode == "seconds"), gr.update(visible=length_mode == "frames"),
                    frames_notice(length_mode, duration, frames, fps))

        gr.on([length_mode.change, duration.change, frames.change, fps.change], on_length,
              [length_mode, duration, frames, fps], [duration, frames, length_note], **LIGHT)

        def on_model(model, prompt):
            """Load another model and reset the settings to its defaults."""
            try:
                values = studio.defaults_for_ui(model)
                choices = size_choices(studio.model_defaults(model))
                schedule_choices = studio.schedule_choices(model)
                positive, negative = studio.motion_grid_defaults(model)
            except Exception as err:  # noqa: BLE001 - shown to the user, the app keeps the old model
                raise gr.Error(str(err), print_exception=False) from None
            keep = {"negative_prompt", "seed", "randomize_seed", "model", "memory_mode"}
            updates = []
            for name in SETTING_NAMES:
                if name in keep:
                    updates.append(gr.update())
                elif name == "prompt":
                    updates.append(gr.update(info=vocabulary_text(studio.vocabulary(model)) or "describe the video"))
                elif name == "resolution":
                    updates.append(gr.update(choices=choices, value=values[name]))
                elif name == "schedule":
                    updates.append(gr.update(choices=schedule_choices, value=values[name]))
                else:
                    updates.append(gr.update(value=values[name]))
            sizes_update = gr.update(choices=choices, value=values["resolution"])
            return updates + [sizes_update, sizes_update, positive, negative, studio.prompt_notice(prompt, model)]

        model.input(on_model, [model, prompt], gen_inputs + [c_resolution, m_resolution, m_pos, m_neg, prompt_notice],
                    api_visibility="private", **HEAVY)

        history.select(select_history, [history_state], [selected, selected_settings, reuse_btn],
                       api_visibility="private", queue=False)
        reuse_btn.click(reuse_settings, [selected], gen_inputs, api_visibility="private", queue=False)

        # In the browser the seed is randomized by default; API callers get the seed they pass.
        demo.load(None, None, [randomize_seed], js="() => true")

    demo.queue(default_concurrency_limit=1, max_size=queue_size)
    demo.studio = studio
    return demo


def launch_options(demo: gr.Blocks) -> Dict[str, Any]:
    """Extra keyword arguments for demo.launch(): CSS, the outputs folder as an allowed path, and error messages
    shown to API clients (never `"error": null`; the handlers' own errors carry no traceback)."""
    return {"css": CSS, "allowed_paths": [str(demo.studio.store.root)], "show_error": True}
