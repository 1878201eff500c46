"""Many prompts over many processes: `accelerate launch -m lumina batch PROMPTS --out DIR`.

Each process (accelerate's PartialState: one GPU each, or a single CPU process) takes its share of the
list; finished outputs (an mp4 and the sidecar that describes it, `lumina.media.read_sidecar`) are skipped, so an
interrupted batch resumes where it stopped.
"""

from __future__ import annotations

import json
import re
from dataclasses import fields, replace
from pathlib import Path
from typing import List, Tuple

from lumina.cache import StepCache
from lumina.errors import InvalidRequestError
from lumina.generation import GenerationRequest
from lumina.loras import Lora
from lumina.pipelines.defaults import ModelDefaults
from lumina.syntax import parse_loras, parse_setting

SCHEDULE_FIELDS = {"schedule": "patch", "motion": "number", "neg_motion": "number", "cfg": "number"}


def read_prompts(path, defaults: ModelDefaults) -> List[GenerationRequest]:
    """A text file (one prompt a line) or JSON lines with GenerationRequest fields ("prompt" required); schedule
    fields may be text ("20, 0@0.2", "multiscale": the model's) or the JSON list form, "loras" a list of
    "PATH[:SCALE]"."""
    allowed = {f.name for f in fields(GenerationRequest)}
    requests = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("{"):
            try:
                item = json.loads(line)
            except json.JSONDecodeError as err:
                raise InvalidRequestError(f"{path}:{n}: not valid JSON ({err.msg})") from None
            unknown = sorted(set(item) - allowed)
            if unknown or "prompt" not in item:
                raise InvalidRequestError(f"{path}:{n}: needs 'prompt'; unknown keys {unknown}; allowed {sorted(allowed)}")
            try:
                for name, kind in SCHEDULE_FIELDS.items():
                    if name in item:
                        item[name] = parse_setting(item[name], kind, defaults.named_schedules(), name)
                if "cache" in item:
                    item["cache"] = StepCache.parse(item["cache"])
                if "loras" in item:
                    item["loras"] = parse_loras(item["loras"])
            except ValueError as err:
                raise InvalidRequestError(f"{path}:{n}: {err}") from None
            requests.append(GenerationRequest(**item))
        else:
            requests.append(GenerationRequest(prompt=line))
    return requests


def output_name(index: int, prompt: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:40] or "clip"
    return f"{index:05d}-{slug}.mp4"


def run_batch(prompts_file, out_dir, model: str = "tiny", device: str = None, memory: str = "none",
              seed: int = 0, loras: Tuple[Lora, ...] = ()) -> List[Path]:
    """Generate this process's share; returns the outputs it wrote (skipped ones excluded). `loras`: for the lines
    that name none. Every line, the model folder and the output folder are checked before torch is imported."""
    from lumina.generation import generate_video, resolve_request
    from lumina.media import check_sidecar_target, read_sidecar, sweep_partials
    from lumina.pipelines.defaults import read_defaults
    from lumina.validation import check_device, check_output_path

    defaults = read_defaults(model)
    requests = read_prompts(prompts_file, defaults)
    for i, req in enumerate(requests):  # every line checked before the model loads
        req = req if req.seed is not None else replace(req, seed=seed + i)
        try:
            requests[i] = resolve_request(req if req.loras else replace(req, loras=loras), defaults)
        except ValueError as err:
            raise InvalidRequestError(f"{prompts_file}: prompt {i + 1}: {err}") from None
        if requests[i].audio:
            raise InvalidRequestError(
                f"{prompts_file}: prompt {i + 1}: \"audio\": true is not available in a batch (it loads no V2A "
                f"model); add sound to its videos afterwards with `python -m lumina v2a --video IN --out OUT`")
    out_dir = Path(out_dir)
    check_output_path(out_dir / output_name(0, "clip"), option="--out")
    out_dir.mkdir(parents=True, exist_ok=True)
    sweep_partials(out_dir)  # a pair killed between its two renames is completed, not made again
    todo = [(i, r) for i, r in enumerate(requests) if read_sidecar(out_dir / output_name(i, r.prompt)) is None]
    for i, r in todo:  # a stale or half-written pair is made again; someone else's JSON file is not replaced
        check_sidecar_target(out_dir / output_name(i, r.prompt))
    import torch
    from accelerate import PartialState

    from lumina.pipelines.loading import load_pipeline

    state = PartialState(cpu=not torch.cuda.is_available())
    written = []
    with state.split_between_processes(todo) as mine:
        if not mine:
            return written
        device = check_device(device or str(state.device))
        dtype = torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
        pipe, _ = load_pipeline(model, dtype=dtype, device=device, memory=memory)
        pipe.set_progress_bar_config(disable=True)
        for i, req in mine:
            path = out_dir / output_name(i, req.prompt)
            generate_video(pipe, req, path)
            written.append(path)
            print(f"[process {state.process_index}] wrote {path}", flush=True)
    return written
