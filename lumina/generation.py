"""One generation request -> mp4 + JSON sidecar. Shared by the CLI, the batch runner and the app."""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Tuple, Union

from lumina import parallel
from lumina import validation as V
from lumina.cache import StepCache
from lumina.errors import InvalidRequestError
from lumina.loras import Lora, check_loras
from lumina.media import check_sidecar_target, write_pair
from lumina.pipelines.defaults import ModelDefaults
from lumina.sampling.schedule import SampleConfig, TimeAware
from lumina.syntax import format_schedule

if TYPE_CHECKING:  # requests are resolved and checked without importing torch or diffusers
    from lumina.pipelines.pipeline_lumina_video import LuminaVideoPipeline


@dataclass(frozen=True)
class GenerationRequest:
    """What a user asks for, in typed values (the edge has parsed any text); None means "the model's default".

    `schedule` is a patch schedule (a patch size name, a name of the model's schedules such as "multiscale", or the
    time-aware tuple form); `motion`, `neg_motion` and `cfg` are numbers or time-aware tuples.
    `steps` is the release's `step` (grid points): steps - 1 denoising evaluations. `loras`: LoRA files and the
    scale of each (lumina.syntax.parse_lora reads "PATH[:SCALE]").
    """

    prompt: str
    negative_prompt: str = ""
    width: Optional[int] = None
    height: Optional[int] = None
    frames: Optional[int] = None
    fps: Optional[int] = None
    preset: Optional[str] = None
    schedule: Optional[TimeAware] = None
    motion: Optional[TimeAware] = None
    neg_motion: Optional[TimeAware] = None
    cfg: Optional[TimeAware] = None
    steps: Optional[int] = None
    time_shift: Optional[float] = None
    renorm: Optional[float] = None
    shared_noise: Optional[float] = None
    seed: Optional[int] = None
    audio: bool = False
    loras: Tuple[Lora, ...] = ()
    cache: Optional[StepCache] = None


@dataclass(frozen=True)
class ResolvedRequest:
    """A request with every default filled in and every value checked: what the budget check, the model holder
    and `generate_video` take as given."""

    prompt: str
    negative_prompt: str
    width: int
    height: int
    frames: int
    fps: int
    seed: int
    audio: bool
    config: SampleConfig
    loras: Tuple[Lora, ...] = ()  # checked: each file's path, scale and sha256 (recorded in the sidecar)
    cache: Optional[StepCache] = None

    def to_dict(self) -> Dict[str, Any]:
        """The sidecar's "request" (the sampling settings are its "sample_config"; the cache its label)."""
        out = {k: v for k, v in asdict(self).items() if k not in ("config", "cache")}
        return {**out, "cache": self.cache.label if self.cache else "none"}


def resolve_request(req: GenerationRequest, defaults: ModelDefaults) -> ResolvedRequest:
    """Fill defaults (only where a value is None: a zero is a value, and is refused), draw a seed if none, and
    check everything, the sampling settings included, before any model work starts. The one place a request's
    values are validated: sizes, frames, fps and seed here, each sampling value (and every stage of a time-aware
    one) in SampleConfig, the LoRA files and scales in lumina.loras."""
    prompt = V.check_prompt(req.prompt)
    negative_prompt = V.check_negative_prompt(req.negative_prompt)
    if not isinstance(req.audio, bool):
        raise InvalidRequestError(f"audio={req.audio!r}: must be true or false")
    pick = lambda name: getattr(defaults, name) if getattr(req, name) is None else getattr(req, name)  # noqa: E731
    width, height, frames, fps = pick("width"), pick("height"), pick("frames"), pick("fps")
    seed = random.randint(0, V.MAX_SEED) if req.seed is None else req.seed
    V.check_seed(seed)
    V.check_fps(fps)
    V.check_size(width, height, defaults.max_resolution)
    V.check_frames(frames)
    config = defaults.sample_config(
        req.preset, patch=req.schedule, steps=req.steps, cfg=req.cfg, motion=req.motion, neg_motion=req.neg_motion,
        time_shift=req.time_shift, renorm=req.renorm, shared_noise=req.shared_noise)
    return ResolvedRequest(prompt, negative_prompt, width, height, frames, fps, seed, req.audio, config,
                           loras=check_loras(req.loras), cache=req.cache)


def run_pipeline(pipe: "LuminaVideoPipeline", req: ResolvedRequest, output_type: str,
                 callback_on_step_end: Optional[Callable] = None):
    """The pipeline call of a request, with its LoRAs (and no others: `use_loras`) and step cache. The other
    processes of a context-parallel launch run it with output_type="latent": they take their share of every step,
    and neither decode nor write."""
    import torch

    pipe.use_loras(req.loras)
    return pipe(
        prompt=req.prompt,
        negative_prompt=req.negative_prompt,
        width=req.width,
        height=req.height,
        num_frames=req.frames,
        sample_config=req.config,
        generator=torch.Generator("cpu").manual_seed(req.seed),
        output_type=output_type,
        callback_on_step_end=callback_on_step_end,
        cache=req.cache,
    )


def generate_video(
    pipe: LuminaVideoPipeline,
    req: ResolvedRequest,
    out_path: Union[str, Path],
    callback_on_step_end: Optional[Callable] = None,
    audio_fn: Optional[Callable] = None,
    on_phase: Optional[Callable[[str], None]] = None,
    overwrite_sidecar: bool = False,
) -> Dict[str, Any]:
    """Run the pipeline (`run_pipeline`), write OUT.mp4 and OUT.json (every setting, seed, per-step schedule,
    timings) as one pair (`lumina.media.write_pair`: the sidecar records its video's size and sha256); returns the
    sidecar.

    `on_phase(name)` is told when the work after decoding starts ("adding sound", "writing mp4").
    `overwrite_sidecar`: replace an OUT.json this project did not write (refused otherwise)."""
    check_sidecar_target(out_path, overwrite_sidecar)  # before the work, not after it
    t_start = time.perf_counter()
    config = req.config
    out = run_pipeline(pipe, req, "np", callback_on_step_end)
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
    if on_phase is not None:
        on_phase("writing mp4")
    timings["total"] = time.perf_counter() - t_start  # up to the write: the sidecar is written with its video
    sidecar = {
        "request": req.to_dict(),
        "sample_config": config.to_dict(),
        "patch_schedule": format_schedule(config.patch),
        "schedule": out.schedule,
        "prompt_truncated": out.prompt_truncated,
        "cache": out.cache,
        "memory": getattr(getattr(pipe, "memory_plan", None), "name", "none"),
        "parallel": parallel.describe(pipe.transformer),
        "tokens_per_step": {
            s: pipe.transformer.num_tokens(pipe.latent_size(req.frames, req.height, req.width), s)
            for s in sorted({row["patch"] for row in out.schedule})
        },
        "timings": {k: round(v, 4) for k, v in timings.items()},
    }
    return write_pair(out_path, frames, req.fps, sidecar, audio=audio, overwrite_sidecar=overwrite_sidecar)
