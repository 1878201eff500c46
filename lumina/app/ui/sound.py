"""The Sound tab: Lumina-V2A's soundtrack for an uploaded video (shown only when a V2A model is present)."""

from __future__ import annotations

import gradio as gr

from lumina import validation as V
from lumina.app.endpoints import Studio
from lumina.app.ui.common import Number, Slider, wire_job, wire_stop


def build_sound_tab(studio: Studio) -> None:
    """The tab and its events."""
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
                    s_seed = Number(value=0, label="Seed", precision=0, info="the same seed gives the same sound")
                with gr.Row():
                    s_run = gr.Button("Add sound", variant="primary", elem_id="sound-btn")
                    s_stop = gr.Button("Stop", variant="stop", interactive=False, elem_id="sound-stop")
            with gr.Column(min_width=300):
                s_out = gr.Video(label="Video with sound", interactive=False, elem_id="sound-video",
                                 buttons=["download"], height=300)
                s_status = gr.Textbox(label="Status", show_label=False, interactive=False,
                                      elem_id="sound-status", placeholder="Press Add sound: the result appears here.")
                s_wave = gr.Image(label="Waveform", type="filepath", interactive=False, elem_id="sound-wave")
                s_settings = gr.JSON(label="Used settings")

    wire_stop(studio, s_stop, s_status)

    def sound(video, prompt=None, steps=None, seed=0, progress=gr.Progress(), request: gr.Request = None):
        """Lumina-V2A's soundtrack for an uploaded video (up to 10 s); the prompt is optional."""
        return studio.sound(video=video, prompt=prompt, steps=steps, seed=seed, progress=progress,
                            request=request)

    outputs = [s_out, s_wave, s_settings, s_status]
    wire_job(studio, s_run, s_stop, sound, [s_video, s_prompt, s_steps, s_seed], outputs, s_status, "v2a",
             cleared=[s_out, s_wave, s_settings], show_progress_on=[s_out])
