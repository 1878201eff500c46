"""One generation request -> mp4 + JSON sidecar. Shared by the CLI, the batch runner and the app."""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

import torch

from lumina import validation as V
from lumina.errors import InvalidRequestError
from lumina.media import write_json, write_mp4
from lumina.pipelines.loading import ModelDefaults
from lumina.pipelines.pipeline_lumina_video import LuminaVideoPipeline
from lumina.sampling import SampleConfig, coerce_setting, format_schedule

Setting = Union[None, float, str]


@dataclass
class GenerationRequest:
    """What a user asks for; None means "the model's default" (from its preset and ModelDefaults).

    `schedule`, `cfg` and `neg_motion` take schedule strings ("2x4, 1x2@0.1", "20, 0@0.2") or plain values.
    `steps` is the release's `step` (grid points): steps - 1 denoising evaluations.
    """

    prompt: str
    negative_prompt: str = ""
    width: Optional[int] = None
    height: Optional[int] = None
    frames: Optional[int] = None
    fps: Optional[int] = None
    preset: Optional[str] = None
    schedule: Optional[str] = None
    motion: Setting = None
    neg_motion: Setting = None
    cfg: Setting = None
    steps: Optional[int] = None
    time_shift: Optional[float] = None
    renorm: Optional[float] = None
    shared_noise: Optional[float] = None
    seed: Optional[int] = None
    audio: bool = False


def sample_config_for(req: GenerationRequest, defaults: ModelDefaults) -> SampleConfig:
    """The model's preset with the request's settings; SampleConfig checks each value (every stage of a schedule)."""
    base = defaults.sample_config(req.preset)
    return base.replace(
        patch=coerce_setting(req.schedule, "patch", defaults.patch_shorthands()),
        steps=req.steps,
        cfg=coerce_setting(req.cfg, "cfg"),
        motion=coerce_setting(req.motion, "motion"),
        neg_motion=coerce_setting(req.neg_motion, "negMotion"),
        time_shift=req.time_shift,
        renorm=req.renorm,
        shared_noise=req.shared_noise,
    )


def resolve_request(req: GenerationRequest, defaults: ModelDefaults) -> GenerationRequest:
    """Fill defaults (only where a value is None: a zero is a value, and is refused), draw a seed if none, and
    validate everything, the sampling settings included, before any model work starts."""
    V.check_prompt(req.prompt)
    filled = GenerationRequest(**{**asdict(req)})
    for name in ("width", "height", "frames", "fps", "preset"):
        if getattr(req, name) is None:
            setattr(filled, name, getattr(defaults, name))
    filled.seed = random.randint(0, V.MAX_SEED) if req.seed is None else req.seed
    V.check_seed(filled.seed)
    V.check_fps(filled.fps)
    V.check_size(filled.width, filled.height, defaults.max_resolution)
    V.check_frames(filled.frames)
    sample_config_for(filled, defaults)
    return filled


def generate_video(
    pipe: LuminaVideoPipeline,
    defaults: ModelDefaults,
    req: GenerationRequest,
    out_path: Union[str, Path],
    callback_on_step_end: Optional[Callable] = None,
    audio_fn: Optional[Callable] = None,
    on_phase: Optional[Callable[[str], None]] = None,
) -> Dict[str, Any]:
    """Run the pipeline, write OUT.mp4 and OUT.json (every setting, seed, per-step schedule, timings).

    `on_phase(name)` is told when the work after decoding starts ("adding sound", "writing mp4")."""
    t_start = time.perf_counter()
    req = resolve_request(req, defaults)
    config = sample_config_for(req, defaults)
    generator = torch.Generator("cpu").manual_seed(req.seed)
    out = pipe(
        prompt=req.prompt,
        negative_prompt=req.negative_prompt,
        width=req.width,
        height=req.height,
        num_frames=req.frames,
        sample_config=config,
        generator=generator,
        output_type="np",
        callback_on_step_end=callback_on_step_end,
    )
    frames = out.frames[0]
    audio = None
    timings = dict(out.timings)
    if req.audio:
        if audio_fn is None:
            raise InvalidRequestError("sound was requested but no V2A model is loaded")
        t0 = time.perf_counter()
        if on_phase is not None:
            on_phase("adding sound")
        audio = audio_fn(frames, req.fps, req.prompt)
        timings["audio"] = time.perf_counter() - t0
    out_path = Path(out_path)
    if on_phase is not None:
        on_phase("writing mp4")
    write_mp4(out_path, frames, req.fps, audio=audio)
    timings["total"] = time.perf_counter() - t_start
    sidecar = {
        "video": out_path.name,
        "request": asdict(req),
        "sample_config": config.to_dict(),
        "patch_schedule": format_schedule(config.patch),
        "schedule": out.schedule,
        "prompt_truncated": out.prompt_truncated,
        "memory": getattr(getattr(pipe, "memory_plan", None), "name", "none"),
        "tokens_per_step": {
            s: pipe.transformer.num_tokens(pipe.latent_size(req.frames, req.height, req.width), s)
            for s in sorted({row["patch"] for row in out.schedule})
        },
        "timings": {k: round(v, 4) for k, v in timings.items()},
    }
    write_json(out_path.with_suffix(".json"), sidecar)  # after the video, so no sidecar names a missing video
    return sidecar
