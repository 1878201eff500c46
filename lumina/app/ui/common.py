"""What every tab's builder uses: the queue settings of heavy and light events, the field-naming slider, the
Run/Stop wiring of a job."""

from __future__ import annotations

import gradio as gr

from lumina.app.endpoints import Studio, _owner

HEAVY = dict(concurrency_id="studio", concurrency_limit=1)  # one model run at a time, across all tabs
LIGHT = dict(api_visibility="private", show_progress="hidden", concurrency_limit=None, trigger_mode="always_last")


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


def prompt_and_seed(first_prompt: str, where: str):
    """The row the Compare and Motion tabs open with: one prompt and one seed shared by every clip `where`."""
    with gr.Row():
        prompt = gr.Textbox(value=first_prompt, label="Prompt", scale=3, info=f"the same prompt {where}")
        seed = gr.Number(value=0, label="Seed", precision=0, scale=1, info=f"the same starting noise {where}")
    return prompt, seed


def job_started():
    return gr.update(interactive=False), gr.update(interactive=True)


def job_ended():
    return gr.update(interactive=True), gr.update(interactive=False)


def running(run_btn, stop_btn, event_fn, inputs, outputs, **kwargs):
    """run_btn starts `event_fn`; Stop is enabled only while it runs."""
    started = run_btn.click(job_started, None, [run_btn, stop_btn], queue=False, api_visibility="private",
                            show_progress="hidden")
    event = started.then(event_fn, inputs, outputs, **HEAVY, **kwargs)
    event.then(job_ended, None, [run_btn, stop_btn], queue=False, api_visibility="private", show_progress="hidden")
    return event


def wire_stop(studio: Studio, button, box, api_name=False) -> None:
    """A tab's Stop button: stops this session's job and says so in the tab's status box."""

    def stop(request: gr.Request = None):
        """Stop this session's running job after its current step."""
        return studio.stop(_owner(request))

    button.click(stop, None, box, api_name=api_name, concurrency_limit=None, show_progress="hidden", queue=False)
