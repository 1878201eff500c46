"""Hugging Face ZeroGPU support: the `@spaces.GPU` wrapper and the GPU-time estimate it asks for.

On a ZeroGPU Space (SPACES_ZERO_GPU=true) every call to `run_generation` borrows a GPU for the duration
returned by `gpu_duration`, which is estimated from the request:

    seconds = OVERHEAD_SECONDS + sum over denoising steps of predicted forward seconds at that step's
              scale (lumina.costs: FLOPs from the transformer config / the device's throughput) x passes

made once per video by `lumina.app.jobs.JobRunner.plan` (the same figure as the job's cost limit), with a
margin, capped at ZEROGPU_MAX_SECONDS. Requests whose estimate exceeds the cap are refused before any GPU
is requested (`check_budget`). Elsewhere `spaces.GPU` returns the function unchanged, so nothing of
this costs anything locally.

ZeroGPU runs the decorated function in a forked worker and pickles its arguments, so
`run_generation` takes only plain values (a runner id, a model name, the planned video, a path) and finds
the loaded pipeline through `RUNNERS`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Optional, Sequence

try:  # `spaces` must be imported before anything initialises CUDA (lumina.app imports this first).
    import spaces

    _GPU = spaces.GPU
    from spaces.config import Config as _SpacesConfig

    ON_ZEROGPU = bool(_SpacesConfig.zero_gpu)
except ImportError:  # pragma: no cover - spaces is in requirements.txt
    spaces = None
    ON_ZEROGPU = False

    def _GPU(task=None, **_kwargs):
        return task if callable(task) else (lambda fn: fn)


from lumina.costs import load_fit, request_seconds
from lumina.errors import InvalidRequestError
from lumina.models.components import latent_size as release_latent_size

# Text encoding, VAE decoding, mp4 encoding and moving weights: paid once per video.
OVERHEAD_SECONDS = 20.0
# ZeroGPU refuses a single call that asks for more than this ("5 minutes at once").
ZEROGPU_MAX_SECONDS = 300
ZEROGPU_MIN_SECONDS = 15
SAFETY = 1.2
# The job runners of this process by id (lumina.app.jobs.JobRunner registers itself): a forked worker gets the id.
RUNNERS: Dict[int, Any] = {}


def estimate_seconds(transformer_config, req, latent_size: Callable[[int, int, int], tuple] = release_latent_size,
                     fit: Optional[Dict[str, float]] = None, steps: Optional[Sequence] = None) -> float:
    """Seconds for one video (before the margin and the cap): lumina.costs' prediction over `steps` (the request's
    step plan; made there when not given), with the request's step cache, plus the overhead.
    `latent_size`: (frames, height, width) -> latent size (the release VAE's; a pipeline says its own);
    `fit`: the throughput of the device that runs it (default: a CUDA GPU's)."""
    denoise, _ = request_seconds(transformer_config, req.config, latent_size(req.frames, req.height, req.width),
                                 fit or load_fit("cuda"), req.cache, steps)
    return OVERHEAD_SECONDS * (1.5 if req.audio else 1.0) + denoise


def duration_for(seconds: float) -> int:
    """The duration to ask ZeroGPU for: the estimate with a margin, within ZeroGPU's limits."""
    return int(min(ZEROGPU_MAX_SECONDS, max(ZEROGPU_MIN_SECONDS, math.ceil(seconds * SAFETY))))


def check_budget(seconds: float, enforce: Optional[bool] = None) -> None:
    """Refuse a video whose estimate (`JobRunner.plan`'s) cannot finish within one ZeroGPU call.

    Enforced only on ZeroGPU unless `enforce` says otherwise.
    """
    if (ON_ZEROGPU if enforce is None else enforce) and seconds * SAFETY > ZEROGPU_MAX_SECONDS:
        raise InvalidRequestError(
            f"this request needs about {seconds:.0f} s of GPU time but a ZeroGPU call may last at most "
            f"{ZEROGPU_MAX_SECONDS} s: use fewer frames, a smaller size, fewer steps or the multiscale schedule"
        )


def gpu_duration(runner_id: int, model: Optional[str], video, out_path: str, progress=None, label: str = "") -> int:
    """Dynamic duration for `spaces.GPU`, called with run_generation's arguments: the job's own estimate."""
    return duration_for(video.seconds)


@_GPU(duration=gpu_duration)
def run_generation(runner_id: int, model: Optional[str], video, out_path: str, progress=None,
                   label: str = "") -> Dict[str, Any]:
    """One video (`lumina.app.jobs.Video`) on the GPU (or CPU): progress per step, stoppable by its owner."""
    return RUNNERS[runner_id].render(model, video, out_path, progress=progress, label=label)


# The bundled V2A model is small: sound for a 10 s clip takes seconds on a GPU.
SOUND_SECONDS = 60


@_GPU(duration=SOUND_SECONDS)
def run_sound(model_dir: str, video: str, out_path: str, prompt: Optional[str], steps: Optional[int],
              seed: int) -> Dict[str, Any]:
    """Lumina-V2A's soundtrack for an uploaded video, muxed into `out_path` (lumina.v2a.cli.add_sound)."""
    from lumina.app.state import cached_v2a
    from lumina.v2a.cli import add_sound

    return add_sound(video, out_path, prompt=prompt, steps=steps, seed=seed, pipe=cached_v2a(model_dir))
