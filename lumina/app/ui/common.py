"""What every tab's builder uses: the queue settings of heavy and light events, number inputs whose values the app
checks itself, and the wiring of a job's Run and Stop buttons (never stuck: they come back after any end)."""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Dict, List, Optional, Sequence

import pandas as pd

import gradio as gr
from gradio.context import get_render_context, set_render_context

from lumina.app.endpoints import Studio
from lumina.app.jobs import owner_of

HEAVY = dict(concurrency_id="studio", concurrency_limit=1)  # one model run at a time, across all tabs
LIGHT = dict(api_visibility="private", show_progress="hidden", concurrency_limit=None, trigger_mode="always_last")
QUIET = dict(api_visibility="private", show_progress="hidden", queue=False)


def checked_by_the_app(component):
    """A number input (gr.Number, gr.Slider) that hands its value on as sent: Gradio's own check fails before the
    handler with "input component at index 10" (text, Infinity) or a bare range message, while the app's form
    checks every value by its field's name (`lumina.app.form`, `lumina.validation`) and says what is allowed."""
    component.preprocess = lambda payload: payload
    return component


def Number(*args, **kwargs) -> gr.Number:  # noqa: N802 (stands in for gr.Number)
    return checked_by_the_app(gr.Number(*args, **kwargs))


def Slider(*args, **kwargs) -> gr.Slider:  # noqa: N802 (stands in for gr.Slider)
    return checked_by_the_app(gr.Slider(*args, **kwargs))


def prompt_and_seed(first_prompt: str, where: str, tab: str):
    """The row the Compare and Motion tabs open with: one prompt and one seed shared by every clip `where`."""
    with gr.Row():
        prompt = gr.Textbox(value=first_prompt, label="Prompt", scale=3, info=f"the same prompt {where}",
                            elem_id=f"{tab}-prompt")
        seed = Number(value=0, label="Seed", precision=0, scale=1, info=f"the same starting noise {where}")
    return prompt, seed


def _started():
    return gr.update(interactive=False), gr.update(interactive=True)


def _ended():
    return gr.update(interactive=True), gr.update(interactive=False)


def failed(message: str) -> str:
    return f"✗ {message}"


def shown_in_the_page(fn: Callable, n_outputs: int, status: int, cleared: Optional[Dict[int, Any]] = None) -> Callable:
    """`fn` (an endpoint's UI handler, returning or yielding its outputs) for the browser: every update carries the
    Run and Stop buttons' state (unchanged while it runs, Run back and Stop off at its end), and an error, instead of
    failing the event (which leaves the buttons as they were: Gradio runs `.then` only after a success), ends it
    with the message in the tab's status, where the result appears, and the `cleared` outputs (index -> its empty
    value) emptied."""
    keep = [gr.skip(), gr.skip()]

    def error_outputs(err: Exception) -> List:
        out = [gr.skip()] * n_outputs
        for k, empty in (cleared or {}).items():
            out[k] = empty
        out[status] = failed(str(getattr(err, "message", err)))
        return out + list(_ended())

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def streamed(*args, **kwargs):
            try:
                for out in fn(*args, **kwargs):
                    yield list(out) + keep
            except Exception as err:  # noqa: BLE001 - endpoints raise gr.Error; anything else is shown the same way
                yield error_outputs(err)
                return
            yield [gr.skip()] * n_outputs + list(_ended())

        handler = streamed
    else:
        @functools.wraps(fn)
        def handler(*args, **kwargs):
            try:
                return list(fn(*args, **kwargs)) + list(_ended())
            except Exception as err:  # noqa: BLE001 - endpoints raise gr.Error; anything else is shown the same way
                return error_outputs(err)

    handler.__signature__ = inspect.signature(fn)
    return handler


def wire_job(studio: Studio, run_btn: gr.Button, stop_btn: gr.Button, fn: Callable, inputs: list, outputs: list,
             status: gr.Textbox, api_name: str, cleared: Sequence = (), **kwargs) -> gr.events.Dependency:
    """A tab's job: `fn` raises gr.Error on a mistake and returns (or yields) `outputs`; `cleared`: the outputs an
    error empties (a table gets its empty frame: None would break Gradio's tabs).

    Two events share it. The API endpoint `api_name` (a hidden trigger) runs `fn` as it is, so API callers get the
    error as an error with its message. The Run button disables itself and enables Stop at once, then runs `fn` in
    the page's way (`shown_in_the_page`), which always ends with Run back and Stop off; a job refused when it joins
    the queue (the admission's limits) never runs, so its failure puts the refusal in the status and the buttons
    back. Both join the one worker's queue through the runner's admission."""
    admission = admission_for(studio, len(inputs))
    current = get_render_context()
    set_render_context(run_btn.parent)  # beside the Run button, in its tab (re-entering the Row would move it)
    hidden = gr.Button(visible=False, elem_classes="api-only")
    set_render_context(current)
    hidden.click(fn, inputs, outputs, api_name=api_name, validator=admission, **HEAVY)
    ids = [id(c) for c in outputs]
    empty = {ids.index(id(c)): pd.DataFrame(columns=c.headers) if isinstance(c, gr.Dataframe) else None
             for c in cleared}
    page_fn = shown_in_the_page(fn, len(outputs), ids.index(id(status)), empty)
    started = run_btn.click(_started, None, [run_btn, stop_btn], **QUIET)
    event = started.then(page_fn, inputs, outputs + [run_btn, stop_btn], api_visibility="private",
                         validator=admission, **HEAVY, **kwargs)

    def refused(request: gr.Request = None):
        message = studio.runner.admission.refusals.pop(owner_of(request), "the job could not start")
        return [failed(message)] + list(_ended())

    event.failure(refused, None, [status, run_btn, stop_btn], **QUIET)
    return event


def admission_for(studio: Studio, n_inputs: int):
    """The validator of a job's event: Gradio calls it with the event's inputs and the request when the job joins
    the queue, before it waits; the runner's admission refuses a client at its limit, or any client when the queue
    is full (atomically: simultaneous joins cannot pass the limits)."""

    def admit(*args):
        # A refusal is raised as it is: Gradio answers the join with str() of it (a gr.Error's would be quoted).
        studio.runner.admission.admit(owner_of(args[-1]))
        return [None] * n_inputs  # no remark on any input

    P = inspect.Parameter
    admit.__signature__ = inspect.Signature(
        [P(f"input{i}", P.POSITIONAL_OR_KEYWORD) for i in range(n_inputs)]
        + [P("request", P.POSITIONAL_OR_KEYWORD, annotation=gr.Request)])
    admit.__annotations__ = {"request": gr.Request}
    return admit


def wire_stop(studio: Studio, button, box, api_name=False) -> None:
    """A tab's Stop button: stops this session's job and says so in the tab's status box."""

    def stop(request: gr.Request = None):
        """Stop this session's running job after its current step (a request without a session stops nothing)."""
        return studio.stop(owner_of(request))

    button.click(stop, None, box, api_name=api_name, concurrency_limit=None, show_progress="hidden", queue=False)
