"""The Blocks layout: Generate, Compare scales and Motion explorer tabs wired to `Studio`'s endpoints."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import gradio as gr
import pandas as pd

from lumina import validation as V
from lumina.app.handlers import (
    COMPARE_SCHEDULES, CUSTOM, LENGTH_MODES, MAX_GRID_SIDE, SETTING_NAMES, SOUND_NOTE, Studio, _owner,
    frames_notice, load_examples, settings_caption, size_choices,
)
from lumina.app.state import default_model

HISTORY_SIZE = 24
QUEUE_SIZE = 16
HEAVY = dict(concurrency_id="studio", concurrency_limit=1)  # one model run at a time, across all tabs
LIGHT = dict(api_visibility="private", show_progress="hidden", concurrency_limit=None, trigger_mode="always_last")

CSS = """
#status, #compare-status, #motion-status {min-height: 2em}
.cell-label {font-size: 0.85em}
"""

INTRO = (
    "# Lumina-Video Studio\n"
    "Text to video with Lumina-Video's multi-scale Next-DiT and motion-score conditioning. "
    "Model: `{model}` · device: {device} · one video at a time (others wait in the queue)."
)


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


def compare_outputs(results, status) -> List[Any]:
    """Four (video, caption) slots in COMPARE_SCHEDULES order, the summary table and the status."""
    by_name = {r.schedule: r for r in results}
    videos, captions = [], []
    for name in COMPARE_SCHEDULES:
        r = by_name.get(name)
        videos.append(gr.update(value=r.video if r else None, label=name, visible=r is not None))
        captions.append(gr.update(value="  \n".join([f"**{name}**"] + r.details()) if r else "", visible=r is not None))
    table = pd.DataFrame([{
        "schedule": r.schedule, "wall time (s)": round(r.seconds, 3), f"time {r.reference}": round(r.relative, 3),
        "tokens per step": ", ".join(f"{k}: {v}" for k, v in r.tokens_per_step.items()),
        "measured motion": None if r.motion is None else round(r.motion, 3),
    } for r in results])
    return videos + captions + [table, status]


PLOT_COLUMNS = ["gap", "measured", "motion", "negative"]
GRID_ROW_PX = 225


def motion_outputs(cells, status, positive_count: int) -> List[Any]:
    """Gallery of contact sheets (row-major: negative score down, positive across), plot data, table, status,
    and the cells for click-to-play."""
    gallery = [(c.tiles or c.video, c.label) for c in cells]
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
                           "measured motion": None if c.measured is None else round(c.measured, 4)} for c in cells])
    cell_state = [{"video": c.video, "label": c.label} for c in cells]
    columns = max(1, positive_count)
    rows = -(-len(gallery) // columns)
    return [gr.update(value=gallery, columns=columns, height=rows * GRID_ROW_PX + 48), plot, table, status,
            cell_state]


def play_cell(cells, evt: gr.SelectData):
    if not cells or evt is None or evt.index is None or not 0 <= evt.index < len(cells):
        return gr.update()
    return gr.update(value=cells[evt.index]["video"], label=cells[evt.index]["label"])


def bundled_audio_fn():
    """Sound from the bundled V2A model when it is present (assets/lumina-v2a-tiny); None otherwise.

    The model (and its text encoder) loads on the first request for sound, not at start-up.
    """
    from lumina.v2a import TINY_V2A_DIR, audio_fn_for, load_v2a

    if not (TINY_V2A_DIR / "model_index.json").exists():
        return None

    @functools.lru_cache(maxsize=1)
    def loaded():
        return audio_fn_for(load_v2a(TINY_V2A_DIR))

    def audio_fn(frames, fps, prompt=None):
        return loaded()(frames, fps, prompt)

    return audio_fn


def build_demo(model: Optional[str] = None, outputs_dir=None, keep: int = 100, extra_models: Sequence[str] = (),
               studio: Optional[Studio] = None, queue_size: int = QUEUE_SIZE, **limits) -> gr.Blocks:
    """Load the model (failing early with a clear message) and lay out the app; `limits`: Studio's
    max_job_seconds and max_jobs_per_client."""
    if studio is None:
        studio = Studio(model or default_model(), outputs_dir or default_outputs_dir(), keep=keep,
                        extra_models=extra_models, audio_fn=bundled_audio_fn(), queue_size=queue_size, **limits)
    os.environ.setdefault("GRADIO_EXAMPLES_CACHE", str(studio.store.examples_cache(studio.holder.default)))
    d = studio.defaults_for_ui()
    md = studio.model_defaults()
    sizes = size_choices(md)
    schedules = studio.schedule_choices()
    examples = load_examples()
    first_prompt = examples[0][0] if examples else "a red circle moving right on a navy background"

    with gr.Blocks(title="Lumina-Video Studio", delete_cache=(3600, 24 * 3600)) as demo:
        gr.Markdown(INTRO.format(model=Path(studio.holder.default).name or studio.holder.default,
                                      device=studio.holder.device))
        with gr.Tabs():
            # ------------------------------------------------------------ Generate
            with gr.Tab("Generate", id="generate"):
                with gr.Row():
                    with gr.Column(scale=5):
                        prompt = gr.Textbox(label="Prompt", lines=2, placeholder=first_prompt, elem_id="prompt")
                        negative_prompt = gr.Textbox(label="Negative prompt", lines=1)
                        with gr.Row():
                            generate_btn = gr.Button("Generate", variant="primary", elem_id="generate-btn")
                            stop_btn = gr.Button("Stop", variant="stop", elem_id="stop-btn")
                        stop_note = gr.Markdown(elem_id="stop-note")
                        with gr.Accordion("Size and length", open=True):
                            with gr.Row():
                                resolution = gr.Dropdown(sizes, value=d["resolution"], label="Resolution",
                                                         allow_custom_value=True, scale=2,
                                                         info=f"sizes this model supports (max {md.max_resolution})")
                                custom_size = gr.Checkbox(value=False, label="Custom size", scale=1)
                            with gr.Row(visible=False) as custom_row:
                                width = gr.Number(value=d["width"], label="Width", precision=0, minimum=32)
                                height = gr.Number(value=d["height"], label="Height", precision=0, minimum=32)
                            size_note = gr.Markdown()
                            with gr.Row():
                                length_mode = gr.Radio(list(LENGTH_MODES), value=d["length_mode"], label="Length in")
                                duration = gr.Number(value=d["duration"], label="Duration (s)", minimum=0,
                                                     visible=d["length_mode"] == "seconds")
                                frames = gr.Number(value=d["frames"], label="Frames", precision=0, minimum=1,
                                                   visible=d["length_mode"] == "frames",
                                                   info="1 or a multiple of 8")
                                fps = gr.Number(value=d["fps"], label="FPS", precision=0,
                                                minimum=V.FPS_RANGE[0], maximum=V.FPS_RANGE[1])
                            length_note = gr.Markdown(frames_notice(d["length_mode"], d["duration"], d["frames"],
                                                                    d["fps"]))
                        with gr.Accordion("Sampling", open=False):
                            with gr.Row():
                                steps = gr.Slider(2, V.MAX_STEPS, value=d["steps"], step=1, label="Steps",
                                                  info="grid points; steps - 1 denoising evaluations")
                                time_shift = gr.Slider(0.1, 100, value=d["time_shift"], step=0.1, label="Time shift")
                                shared_noise = gr.Slider(*V.SHARED_NOISE_RANGE, value=d["shared_noise"], step=0.05,
                                                         label="Shared noise",
                                                         info="share of the starting noise common to all frames "
                                                              "(0 = independent, the release's): steadier, "
                                                              "but small motion scores move less")
                            with gr.Row():
                                guidance = gr.Slider(*V.GUIDANCE_RANGE, value=d["guidance"], step=0.5,
                                                     label="Guidance (CFG)")
                                guidance_until = gr.Slider(0, 1, value=d["guidance_until"], step=0.01,
                                                           label="Guidance until t",
                                                           info="CFG is truncated from this flow time on (1 = never)")
                        with gr.Accordion("Motion", open=True):
                            with gr.Row():
                                motion = gr.Slider(*V.MOTION_RANGE, value=d["motion"], step=0.5,
                                                   label="Motion score", info="-1 = no motion condition")
                                neg_motion = gr.Slider(*V.MOTION_RANGE, value=d["neg_motion"], step=0.5,
                                                       label="Negative motion score")
                                neg_motion_until = gr.Slider(0, 1, value=d["neg_motion_until"], step=0.01,
                                                             label="Negative score until t",
                                                             info="then the score on the right (release: 0.05)")
                                neg_motion_after = gr.Slider(*V.MOTION_RANGE, value=d["neg_motion_after"], step=0.5,
                                                             label="Negative score from t on",
                                                             info="release: 6; equal to the motion score, "
                                                                  "the gap acts early only")
                        with gr.Accordion("Scales (patch schedule)", open=True):
                            schedule = gr.Radio(schedules, value=d["schedule"], label="Patch schedule",
                                                info="multiscale = the model's multi-scale schedule "
                                                     "(release 960: 2x4, 2x2@0.03, 1x2@0.125)")
                            custom_schedule = gr.Textbox(value=d["custom_schedule"], label="Custom schedule",
                                                         visible=d["schedule"] == CUSTOM,
                                                         placeholder="2x4, 2x2@0.03, 1x2@0.125")
                            schedule_note = gr.Markdown(studio.check_schedule(d["schedule"], d["custom_schedule"]))
                        with gr.Row():
                            seed = gr.Number(value=d["seed"], label="Seed", precision=0, minimum=0,
                                             maximum=V.MAX_SEED)
                            randomize_seed = gr.Checkbox(value=False, label="Randomize seed",
                                                         info=f"0..{V.MAX_SEED}", elem_id="randomize-seed")
                        add_sound = gr.Checkbox(value=False, label="Add sound", interactive=studio.sound_available,
                                                info=None if studio.sound_available else SOUND_NOTE)
                        with gr.Row():
                            model = gr.Dropdown(studio.holder.choices, value=studio.holder.default, label="Model")
                            memory_mode = gr.Dropdown(studio.holder.memory_modes, value="none", label="Memory mode",
                                                      info="offload tiers need a CUDA GPU; '+' joins flags")
                    with gr.Column(scale=4):
                        video = gr.Video(label="Result", autoplay=True, loop=True, elem_id="result-video",
                                         interactive=False, buttons=["download"])
                        status = gr.Markdown(elem_id="status")
                        with gr.Row():
                            used_seed = gr.Number(label="Used seed", precision=0, interactive=False)
                            sidecar_file = gr.File(label="Settings JSON (sidecar)", interactive=False)
                        with gr.Accordion("Settings of this video (JSON)", open=False):
                            settings = gr.JSON(label="Settings")
                        if examples:
                            gr.Examples(examples, inputs=[prompt, seed],
                                        outputs=[video, sidecar_file, used_seed, settings, status],
                                        fn=lambda p, s: studio.generate(prompt=p, seed=s),
                                        cache_examples=True, cache_mode="lazy", label="Examples (cached on first use)")
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
            with gr.Tab("Compare scales", id="compare"):
                gr.Markdown("One prompt and seed rendered with several patch schedules. Coarser scales use fewer "
                            "tokens per step; the labels give wall time, time relative to 1x2, tokens per step "
                            "and the measured motion score.")
                with gr.Row():
                    c_prompt = gr.Textbox(value=first_prompt, label="Prompt", scale=3)
                    c_seed = gr.Number(value=0, label="Seed", precision=0, minimum=0, maximum=V.MAX_SEED, scale=1)
                with gr.Row():
                    c_schedules = gr.CheckboxGroup(
                        [s for s in COMPARE_SCHEDULES if s in schedules], label="Schedules",
                        value=[s for s in COMPARE_SCHEDULES if s in schedules])
                    c_steps = gr.Slider(2, V.MAX_STEPS, value=d["steps"], step=1, label="Steps")
                    c_resolution = gr.Dropdown(sizes, value=d["resolution"], label="Resolution",
                                               allow_custom_value=True)
                    c_frames = gr.Number(value=d["frames"], label="Frames", precision=0)
                with gr.Row():
                    c_run = gr.Button("Compare", variant="primary", elem_id="compare-btn")
                    c_stop = gr.Button("Stop", variant="stop")
                c_status = gr.Markdown(elem_id="compare-status")
                with gr.Row():
                    c_videos, c_captions = [], []
                    for name in COMPARE_SCHEDULES:
                        with gr.Column(min_width=160):
                            c_videos.append(gr.Video(label=name, autoplay=True, loop=True, interactive=False,
                                                     elem_classes="compare-video"))
                            c_captions.append(gr.Markdown(elem_classes="cell-label"))
                c_table = gr.Dataframe(label="Summary", interactive=False)

            # ------------------------------------------------------------ Motion explorer
            with gr.Tab("Motion explorer", id="motion"):
                gr.Markdown("A grid over positive x negative motion scores for one prompt and seed. Each cell is "
                            "labelled with the motion score measured on the result (Farneback flow, release "
                            "protocol); the plot shows requested gap (positive - negative) against measured motion.")
                with gr.Row():
                    m_prompt = gr.Textbox(value=first_prompt, label="Prompt", scale=3)
                    m_seed = gr.Number(value=0, label="Seed", precision=0, minimum=0, maximum=V.MAX_SEED, scale=1)
                with gr.Row():
                    m_pos = gr.Textbox(value="2, 6, 12", label="Positive motion scores",
                                       info=f"comma separated, up to {MAX_GRID_SIDE}")
                    m_neg = gr.Textbox(value="0, 2, 6", label="Negative motion scores",
                                       info=f"comma separated, up to {MAX_GRID_SIDE}")
                    m_until = gr.Slider(0, 1, value=d["neg_motion_until"], step=0.01, label="Negative score until t")
                with gr.Row():
                    m_steps = gr.Slider(2, V.MAX_STEPS, value=d["steps"], step=1, label="Steps")
                    m_resolution = gr.Dropdown(sizes, value=d["resolution"], label="Resolution",
                                               allow_custom_value=True)
                    m_frames = gr.Number(value=max(d["frames"], 8), label="Frames", precision=0)
                with gr.Row():
                    m_run = gr.Button("Run grid", variant="primary", elem_id="motion-btn")
                    m_stop = gr.Button("Stop", variant="stop")
                m_status = gr.Markdown(elem_id="motion-status")
                m_cells = gr.State([])
                with gr.Row():
                    m_gallery = gr.Gallery(label="Grid: rows = negative score, columns = positive score "
                                                 "(frames at 0, 1/3, 2/3, end; click a cell to play it)",
                                           columns=3, height="auto", allow_preview=False, object_fit="contain",
                                           elem_id="motion-grid", scale=3)
                    m_video = gr.Video(label="Selected cell", autoplay=True, loop=True, interactive=False,
                                       elem_id="motion-video", scale=2)
                with gr.Row():
                    m_plot = gr.ScatterPlot(None, x="gap", y="measured",  # (an empty DataFrame breaks updates)
                                            color="motion", x_title="requested gap (positive - negative)",
                                            y_title="measured motion score", color_title="positive score",
                                            title="Requested gap vs measured motion", height=320,
                                            elem_id="motion-plot")
                    m_table = gr.Dataframe(label="Cells", interactive=False)

        # ---------------------------------------------------------------- events
        gen_inputs = [prompt, negative_prompt, resolution, custom_size, width, height, length_mode, duration, frames,
                      fps, steps, guidance, guidance_until, time_shift, shared_noise, motion, neg_motion,
                      neg_motion_until, neg_motion_after, schedule, custom_schedule, seed, randomize_seed, add_sound,
                      model, memory_mode]
        assert len(gen_inputs) == len(SETTING_NAMES)
        gen_outputs = [video, sidecar_file, used_seed, settings, status]

        gen = generate_btn.click(studio.generate, gen_inputs, gen_outputs, api_name="generate",
                                 show_progress_on=[video, status], validator=studio.admission(len(gen_inputs)), **HEAVY)
        gen.success(add_history, [history_state, video, sidecar_file, settings], [history_state, history],
                    api_visibility="private", show_progress="hidden", queue=False)

        def stop(request: gr.Request = None):
            """Stop this session's running generation after its current step."""
            return studio.stop(_owner(request))

        for button in (stop_btn, c_stop, m_stop):
            button.click(stop, None, stop_note, api_name="stop" if button is stop_btn else False,
                         concurrency_limit=None, show_progress="hidden")

        def compare(prompt, seed, schedules, steps, resolution, frames, progress=gr.Progress(),
                    request: gr.Request = None):
            """Render one prompt and seed with each chosen patch schedule."""
            results, state = studio.compare(prompt=prompt, seed=seed, schedules=schedules, steps=steps,
                                            resolution=resolution, frames=frames, progress=progress, request=request)
            return compare_outputs(results, state)

        c_inputs = [c_prompt, c_seed, c_schedules, c_steps, c_resolution, c_frames]
        c_run.click(compare, c_inputs, c_videos + c_captions + [c_table, c_status], api_name="compare",
                    validator=studio.admission(len(c_inputs)), **HEAVY)

        def motion_grid(prompt, seed, positive, negative, neg_motion_until, steps, resolution, frames,
                        progress=gr.Progress(), request: gr.Request = None):
            """Render one prompt and seed over a grid of positive x negative motion scores."""
            cells, state = studio.motion_grid(prompt=prompt, seed=seed, positive=positive, negative=negative,
                                              neg_motion_until=neg_motion_until, steps=steps, resolution=resolution,
                                              frames=frames, progress=progress, request=request)
            return motion_outputs(cells, state, len(set(c.positive for c in cells)) or 3)

        m_inputs = [m_prompt, m_seed, m_pos, m_neg, m_until, m_steps, m_resolution, m_frames]
        m_run.click(motion_grid, m_inputs, [m_gallery, m_plot, m_table, m_status, m_cells], api_name="motion_grid",
                    validator=studio.admission(len(m_inputs)), **HEAVY)
        m_gallery.select(play_cell, [m_cells], [m_video], api_visibility="private", queue=False)

        # live checks and visibility
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

        def on_model(model):
            """Load another model and reset the settings to its defaults."""
            try:
                values = studio.defaults_for_ui(model)
                choices = size_choices(studio.model_defaults(model))
                schedule_choices = studio.schedule_choices(model)
            except Exception as err:  # noqa: BLE001 - shown to the user, the app keeps the old model
                raise gr.Error(str(err), print_exception=False) from None
            keep = {"prompt", "negative_prompt", "seed", "randomize_seed", "model", "memory_mode"}
            updates = []
            for name in SETTING_NAMES:
                if name in keep:
                    updates.append(gr.update())
                elif name == "resolution":
                    updates.append(gr.update(choices=choices, value=values[name]))
                elif name == "schedule":
                    updates.append(gr.update(choices=schedule_choices, value=values[name]))
                else:
                    updates.append(gr.update(value=values[name]))
            sizes_update = gr.update(choices=choices, value=values["resolution"])
            return updates + [sizes_update, sizes_update]

        model.input(on_model, [model], gen_inputs + [c_resolution, m_resolution], api_visibility="private", **HEAVY)

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
