"""The Generate tab: the prompt, the result right under Generate, the examples, the settings in one closed "Advanced"
section and the session's history. Its inputs are GENERATE_SETTINGS, each drawn by its entry in FIELDS where its
Setting says (group and row)."""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import gradio as gr

from lumina import validation as V
from lumina.app.endpoints import Studio
from lumina.app.form import (
    CACHE_CHOICES, CUSTOM, GENERATE_SETTINGS, GROUPS, LENGTH_MODES, SOUND_NOTE, frames_notice, on_a_space,
    size_choices,
)
from lumina.app.results import settings_caption
from lumina.app.ui.common import HEAVY, LIGHT, QUIET, Number, Slider, wire_job, wire_stop
from lumina.app.vocabulary import vocabulary_text
from lumina.cache import FAST_CACHE

HISTORY_SIZE = 24

# The component of each Generate setting, in GENERATE_SETTINGS order: (the form's starting values, the studio,
# label=the setting's label) -> the component, drawn where the tab's layout asks for it.
FIELDS: Dict[str, Callable[..., gr.Component]] = {
    "prompt": lambda d, studio, **kw: gr.Textbox(
        value=d["prompt"], lines=2, elem_id="prompt",
        info=vocabulary_text(studio.vocabulary()) or "describe the video", **kw),
    "negative_prompt": lambda d, studio, **kw: gr.Textbox(lines=1, info="what the video should not show", **kw),
    "resolution": lambda d, studio, **kw: gr.Dropdown(
        size_choices(studio.model_defaults()), value=d["resolution"], allow_custom_value=True, scale=2,
        info=f"sizes this model supports (max {studio.model_defaults().max_resolution})", **kw),
    "custom_size": lambda d, studio, **kw: gr.Checkbox(value=d["custom_size"], scale=1, info="type width and height",
                                                       **kw),
    "width": lambda d, studio, **kw: Number(value=d["width"], precision=0, info="multiples of 32", **kw),
    "height": lambda d, studio, **kw: Number(value=d["height"], precision=0, info="multiples of 32", **kw),
    "length_mode": lambda d, studio, **kw: gr.Radio(list(LENGTH_MODES), value=d["length_mode"],
                                                    info="give the length in seconds or in frames", **kw),
    "duration": lambda d, studio, **kw: Number(value=d["duration"], visible=d["length_mode"] == "seconds",
                                                  info="rounded to whole frames", **kw),
    "frames": lambda d, studio, **kw: Number(value=d["frames"], precision=0, visible=d["length_mode"] == "frames",
                                                info="1 (an image) or a multiple of 8", **kw),
    "fps": lambda d, studio, **kw: Number(value=d["fps"], precision=0,
                                             info=f"frames per second, {V.FPS_RANGE[0]}..{V.FPS_RANGE[1]}", **kw),
    "steps": lambda d, studio, **kw: Slider(2, V.MAX_STEPS, value=d["steps"], step=1,
                                            info="points on the way from noise to the video (the progress counts them); more: finer, "
                                                 "slower", **kw),
    "guidance": lambda d, studio, **kw: Slider(*V.GUIDANCE_RANGE, value=d["guidance"], step=0.5,
                                               info="how strongly the prompt is followed (0 = not guided)", **kw),
    "guidance_until": lambda d, studio, **kw: Slider(0, 1, value=d["guidance_until"], step=0.01,
                                                     info="guidance stops at this flow time (1 = never)", **kw),
    "time_shift": lambda d, studio, **kw: Slider(0.1, 100, value=d["time_shift"], step=0.1,
                                                 info="higher spends more of the steps on the noisy start "
                                                      "(overall layout and motion), lower on fine detail", **kw),
    "shared_noise": lambda d, studio, **kw: Slider(*V.SHARED_NOISE_RANGE, value=d["shared_noise"], step=0.05,
                                                   info="share of the starting noise common to all frames "
                                                        "(0 = independent, the release's): steadier, "
                                                        "but small motion scores move less", **kw),
    "motion": lambda d, studio, **kw: Slider(*V.MOTION_RANGE, value=d["motion"], step=0.5,
                                             info="how much should move; -1 = no motion condition", **kw),
    "neg_motion": lambda d, studio, **kw: Slider(*V.MOTION_RANGE, value=d["neg_motion"], step=0.5,
                                                 info="guidance pushes away from this score; "
                                                      "below the motion score = more motion", **kw),
    "neg_motion_until": lambda d, studio, **kw: Slider(0, 1, value=d["neg_motion_until"], step=0.01,
                                                       info="the negative score holds until this flow time "
                                                            "(1 = throughout; release 0.05)", **kw),
    "neg_motion_after": lambda d, studio, **kw: Slider(*V.MOTION_RANGE, value=d["neg_motion_after"], step=0.5,
                                                       info="release: 6; equal to the motion score, "
                                                            "the gap acts early only", **kw),
    "schedule": lambda d, studio, **kw: gr.Radio(studio.schedule_choices(), value=d["schedule"],
                                                 info="multiscale: coarse patches early, fine late, fastest "
                                                      "for its quality; 1x2 is finest and slowest", **kw),
    "custom_schedule": lambda d, studio, **kw: gr.Textbox(value=d["custom_schedule"], visible=d["schedule"] == CUSTOM,
                                                          info="patch sizes with the flow time each starts at",
                                                          placeholder="2x4, 2x2@0.03, 1x2@0.125", **kw),
    "seed": lambda d, studio, **kw: Number(value=d["seed"], precision=0,
                                              info="the same seed and settings give the same video", **kw),
    "randomize_seed": lambda d, studio, **kw: gr.Checkbox(value=d["randomize_seed"],
                                                          info=f"draw a new seed (0..{V.MAX_SEED}) each time",
                                                          elem_id="randomize-seed", **kw),
    "add_sound": lambda d, studio, **kw: gr.Checkbox(value=d["add_sound"], interactive=studio.sound_available,
                                                     info="Lumina-V2A writes a soundtrack for the result (a few "
                                                          "seconds more)" if studio.sound_available else SOUND_NOTE,
                                                     **kw),
    "model": lambda d, studio, **kw: gr.Dropdown(studio.holder.choices, value=d["model"],
                                                 info="one model is loaded at a time", **kw),
    "memory_mode": lambda d, studio, **kw: gr.Dropdown(
        studio.holder.memory_modes, value=d["memory_mode"], interactive=len(studio.holder.memory_modes) > 1,
        info=("GPU memory savers: 'vae-tiling' decodes in tiles, 'model-offload' keeps parts on the CPU, '8bit' "
              "stores weights in 8 bits; 'auto' picks from the free memory") if len(studio.holder.memory_modes) > 1
        else f"on {studio.holder.device} there is no GPU memory to save: none", **kw),
    "cache": lambda d, studio, **kw: gr.Dropdown(
        CACHE_CHOICES, value=d["cache"], allow_custom_value=True,
        info=f"reuse work between denoising steps: 'fast' ({FAST_CACHE.label}) is about 0.5-0.6x the denoising time "
             f"at the same adherence (measured); or NAME:VALUE, e.g. taylorseer:4", **kw),
    "lora": lambda d, studio, **kw: gr.Textbox(value=d["lora"], visible=not on_a_space(), lines=1, max_lines=4,
                                               placeholder="style.safetensors:0.8",
                                               info="a LoRA file on this machine for this model, PATH or PATH:SCALE "
                                                    "(scale 1 if none); one a line", **kw),
}


@dataclass
class GenerateTab:
    """What `follow_model` needs of the built tab."""

    form: Dict[str, gr.Component]  # the settings' components, in GENERATE_SETTINGS order
    prompt_notice: gr.Markdown


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
    return [ui.get(name) for name in GENERATE_SETTINGS]


def _draw_advanced(field: Callable[[str], gr.Component], d: Dict[str, Any], studio: Studio) -> Dict[str, Any]:
    """Every setting with a group, under its group's heading in one closed "Advanced" section, side by side where
    they share a row; the live notes under their groups. Returns the notes and the custom-size row."""
    drawn: Dict[str, Any] = {}
    with gr.Accordion("Advanced", open=False, elem_id="advanced"):
        for group, title in GROUPS.items():
            gr.Markdown(f"**{title}**", elem_classes="group-title")
            names = [n for n, s in GENERATE_SETTINGS.items() if s.group == group]
            rows = list(dict.fromkeys(GENERATE_SETTINGS[n].row or n for n in names))
            for row in rows:
                members = [n for n in names if (GENERATE_SETTINGS[n].row or n) == row]
                if len(members) == 1:
                    field(members[0])
                    continue
                with gr.Row(visible=row != "custom" or bool(d["custom_size"])) as box:
                    for name in members:
                        field(name)
                drawn[f"row:{row}"] = box
            if group == "size":
                drawn["size_note"] = gr.Markdown()
                drawn["length_note"] = gr.Markdown(frames_notice(d["length_mode"], d["duration"], d["frames"],
                                                                 d["fps"]))
            elif group == "scales":
                drawn["schedule_note"] = gr.Markdown(studio.check_schedule(d["schedule"], d["custom_schedule"]))
    return drawn


def example_gallery_items(examples: Sequence[Dict[str, Any]]) -> List:
    return [(e["tiles"], e["prompt"]) for e in examples]


def build_generate_tab(demo: gr.Blocks, studio: Studio, examples: Sequence[Sequence[Any]],
                       first_prompt: str) -> GenerateTab:
    """The tab and its events; `examples`: [prompt, seed] pairs, shown as a gallery of the ones rendered so far
    (read again on every page load: they are rendered after the server starts)."""
    d = {**studio.defaults_for_ui(), "prompt": first_prompt}
    drawn: Dict[str, gr.Component] = {}

    def field(name: str) -> gr.Component:
        drawn[name] = FIELDS[name](d, studio, label=GENERATE_SETTINGS[name].label)
        return drawn[name]

    with gr.Tab("Generate", id="generate"):
        with gr.Row():
            with gr.Column(scale=5, min_width=300):
                prompt = field("prompt")
                prompt_notice = gr.Markdown(studio.prompt_notice(first_prompt), elem_id="prompt-notice")
                with gr.Row():
                    generate_btn = gr.Button("Generate", variant="primary", elem_id="generate-btn", min_width=100)
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
                examples_note = gr.Markdown("**Examples**: click one to see its result and load its prompt and seed",
                                            visible=bool(examples))
                shown_examples = gr.State([])
                refresh = gr.Timer(3.0, active=bool(examples))  # inside the tab: a Tabs holds only tabs
                example_gallery = gr.Gallery(
                    [], label="Examples", show_label=False, columns=3, rows=-(-len(examples) // 3), height="auto",
                    allow_preview=False, object_fit="contain", elem_id="examples", visible=bool(examples))
                notes = _draw_advanced(field, d, studio)
        gr.Markdown("### History (this session)")
        history_state = gr.State([])
        selected = gr.State(None)
        with gr.Row():
            history = gr.Gallery(label="History", columns=6, height=220, allow_preview=False, scale=3,
                                 object_fit="contain", fit_columns=False, elem_id="history")
            with gr.Column(scale=2):
                reuse_btn = gr.Button("Reuse these settings", interactive=False)
                with gr.Accordion("Selected video's settings", open=False):
                    selected_settings = gr.JSON(label="Settings")

    form = {name: drawn[name] for name in GENERATE_SETTINGS}  # API order (a setting left undrawn fails here)
    gen_inputs = list(form.values())
    gen_outputs = [video, sidecar_file, used_seed, settings, status]

    @functools.wraps(studio.generate)
    def generate(*args, **kwargs):
        result = studio.generate(*args, **kwargs)
        if result[0] is None:  # stopped: the previous result stays
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), result[-1]
        return result

    generate.__signature__ = inspect.signature(studio.generate)  # the bound method's: without `self`

    gen = wire_job(studio, generate_btn, stop_btn, generate, gen_inputs, gen_outputs, status, "generate",
                   show_progress_on=[video])
    gen.success(add_history, [history_state, video, sidecar_file, settings], [history_state, history], **QUIET)
    gen.then(lambda v: [gr.update(visible=bool(v))] * 2, [video], [details_row, details_acc], **QUIET)
    wire_stop(studio, stop_btn, status, api_name="stop")

    def load_examples_gallery():
        """The examples rendered so far; the timer looks again every few seconds until all are there."""
        shown = studio.example_results(examples)
        waiting = len(examples) - len(shown)
        note = "**Examples**: click one to see its result and load its prompt and seed"
        if waiting:
            note += f" ({waiting} more are being rendered for this model and appear here when ready)"
        return shown, example_gallery_items(shown), note, gr.Timer(active=waiting > 0)

    gallery_outputs = [shown_examples, example_gallery, examples_note, refresh]
    demo.load(load_examples_gallery, None, gallery_outputs, **QUIET)
    refresh.tick(load_examples_gallery, None, gallery_outputs, **QUIET)

    def show_example(shown, evt: gr.SelectData):
        e = shown[evt.index]
        return (e["prompt"], e["seed"], False, e["video"], e["sidecar"], e["seed"], e["settings"], e["status"],
                gr.update(visible=True), gr.update(visible=True))

    example_gallery.select(show_example, [shown_examples], [prompt, form["seed"], form["randomize_seed"]]
                           + gen_outputs + [details_row, details_acc], **QUIET)

    # live checks and visibility
    prompt.change(studio.prompt_notice, [prompt, form["model"]], [prompt_notice], **LIGHT)

    def on_schedule(schedule, custom_schedule, model):
        return gr.update(visible=schedule == CUSTOM), studio.check_schedule(schedule, custom_schedule, model)

    gr.on([form["schedule"].change, form["custom_schedule"].change], on_schedule,
          [form["schedule"], form["custom_schedule"], form["model"]], [form["custom_schedule"], notes["schedule_note"]],
          **LIGHT)

    def on_size(custom_size, width, height, model):
        return (gr.update(visible=bool(custom_size)), gr.update(interactive=not custom_size),
                studio.size_note(custom_size, width, height, model))

    gr.on([form["custom_size"].change, form["width"].change, form["height"].change], on_size,
          [form["custom_size"], form["width"], form["height"], form["model"]],
          [notes["row:custom"], form["resolution"], notes["size_note"]], **LIGHT)

    def on_length(length_mode, duration, frames, fps):
        return (gr.update(visible=length_mode == "seconds"), gr.update(visible=length_mode == "frames"),
                frames_notice(length_mode, duration, frames, fps))

    length = [form[name] for name in ("length_mode", "duration", "frames", "fps")]
    gr.on([c.change for c in length], on_length, length, [form["duration"], form["frames"], notes["length_note"]],
          **LIGHT)

    history.select(select_history, [history_state], [selected, selected_settings, reuse_btn], **QUIET)
    reuse_btn.click(reuse_settings, [selected], gen_inputs, **QUIET)
    return GenerateTab(form, prompt_notice)


def follow_model(studio: Studio, tab: GenerateTab, resolutions: Sequence[gr.Dropdown],
                 grid_scores: Sequence[gr.Textbox]) -> None:
    """The Model dropdown loads the chosen model and resets the settings to its defaults, and with them the other
    tabs' `resolutions` and the motion explorer's (positive, negative) `grid_scores`."""

    def on_model(model, prompt):
        """Load another model and reset the settings to its defaults."""
        try:
            values = studio.defaults_for_ui(model)
            choices = size_choices(studio.model_defaults(model))
            schedule_choices = studio.schedule_choices(model)
            positive, negative = studio.motion_grid_defaults(model)
        except Exception as err:  # noqa: BLE001 - shown to the user, the app keeps the old model
            raise gr.Error(str(err), print_exception=False) from None
        updates = []
        for name, setting in GENERATE_SETTINGS.items():
            if name == "prompt":
                updates.append(gr.update(info=vocabulary_text(studio.vocabulary(model)) or "describe the video"))
            elif not setting.reset_with_model:
                updates.append(gr.update())
            elif name == "resolution":
                updates.append(gr.update(choices=choices, value=values[name]))
            elif name == "schedule":
                updates.append(gr.update(choices=schedule_choices, value=values[name]))
            else:
                updates.append(gr.update(value=values[name]))
        sizes_update = gr.update(choices=choices, value=values["resolution"])
        return (updates + [sizes_update] * len(resolutions) + [positive, negative]
                + [studio.prompt_notice(prompt, model)])

    tab.form["model"].input(on_model, [tab.form["model"], tab.form["prompt"]],
                            list(tab.form.values()) + list(resolutions) + list(grid_scores) + [tab.prompt_notice],
                            api_visibility="private", **HEAVY)
