"""One video over several processes: diffusers' context parallelism (Ulysses or ring attention).

Every process holds the whole model and runs the whole pipeline; the video's tokens are split between the processes
where the transformer's blocks start and gathered after its final layer (`LuminaNextDiTVideo._cp_plan`), so every
process ends each step with the same latent. Launch one process per GPU with `torchrun` (or `python -m
torch.distributed.run`); the CLI's `--parallel ulysses|ring` does what this module offers, in this order:
`check_launch` (before any work), `process_group` (around the work), `enable` (after the model loads).
"""

from __future__ import annotations

import contextlib
import os
from typing import Dict, Iterator, Optional

from lumina.errors import InvalidRequestError

MODES = ("ulysses", "ring")
LAUNCH_HINT = "torchrun --nproc_per_node N -m lumina generate ... --parallel ulysses"


def launched_processes() -> int:
    """Processes of this torchrun launch (its WORLD_SIZE); 1 when started plainly."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's rank in the launch (0 when started plainly): rank 0 alone writes files."""
    return int(os.environ.get("RANK", "0"))


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise InvalidRequestError(f"--parallel {mode!r}: use one of {', '.join(MODES)}")
    return mode


def check_cache(mode: Optional[str], cache) -> None:
    """Refuse a step cache that decides per process: First-Block Cache and MagCache skip by each process's own
    share of the residuals, so two processes could disagree and wait for each other forever. The others (taylorseer,
    pab, faster) decide by the step count alone, the same in every process."""
    from lumina.cache import ADAPTIVE_SKIP_SHARE

    if mode is not None and cache is not None and cache.method in ADAPTIVE_SKIP_SHARE:
        raise InvalidRequestError(f"--cache {cache.label} with --parallel: {cache.method} decides from each process's "
                                  f"share of the video, so processes could disagree; use taylorseer, pab or faster")


def check_launch(mode: Optional[str], device: str, memory: str = "none", compile_blocks: bool = False) -> str:
    """Refuse a launch that cannot split one video, before any work; returns this process's device.

    Under a launch of N > 1 processes `mode` must be given (else each process would write the same video), and it
    needs a launch; on CUDA each process takes the GPU of its LOCAL_RANK."""
    processes = launched_processes()
    if mode is None:
        if processes > 1:
            raise InvalidRequestError(f"this is a launch of {processes} processes: add --parallel ulysses|ring to "
                                      f"split one video over them, or start a single process")
        return device
    check_mode(mode)
    import torch  # here, not at the top: a plain single-process run is checked without torch

    if processes < 2:
        raise InvalidRequestError(f"--parallel {mode} splits one video over the processes of a distributed launch "
                                  f"and this is a single process; start it as `{LAUNCH_HINT}` with N >= 2")
    if memory != "none" or compile_blocks:
        raise InvalidRequestError("--parallel runs with --memory none and without --compile: every process holds "
                                  "the whole model (the video's tokens are what is split), and offloading or "
                                  "compiling under it is untested")
    dev = torch.device(device)
    if dev.type == "cpu":
        return "cpu"
    if dev.type != "cuda" or dev.index is not None:
        raise InvalidRequestError(f"--device {device!r} with --parallel: use cpu, or cuda (each process takes the "
                                  f"GPU of its LOCAL_RANK)")
    local = int(os.environ.get("LOCAL_WORLD_SIZE", processes))
    gpus = torch.cuda.device_count()
    if local > gpus:
        raise InvalidRequestError(f"{local} processes on this machine but {gpus} GPU(s): launch at most "
                                  f"--nproc_per_node {gpus}")
    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"


@contextlib.contextmanager
def process_group(mode: Optional[str], device: str) -> Iterator[None]:
    """Inside: this process has joined the launch's process group (gloo on the CPU; nccl on CUDA, this process's GPU
    made current first), left again on the way out. Nothing without a `mode`."""
    if mode is None:
        yield
        return
    import torch
    import torch.distributed as dist

    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        dist.init_process_group("nccl", device_id=dev)
    else:
        dist.init_process_group("gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def check_heads(heads: int, mode: str, degree: int) -> None:
    """Ulysses attention gives each process heads / degree whole heads (ring attention has no such limit)."""
    if mode == "ulysses" and heads % degree:
        raise InvalidRequestError(f"Ulysses attention gives each process n_heads / N heads; this model has {heads} "
                                  f"heads, which {degree} processes do not divide: launch a divisor of {heads} "
                                  f"processes, or use --parallel ring")


def enable(pipe, mode: str) -> None:
    """Split the video over all processes of the started group with `mode` attention, in every denoiser of `pipe`.

    diffusers' `*_anything` modes cut token counts that do not divide by the process count (shares differ by one
    token), so every patch size of a multi-scale schedule splits."""
    import torch.distributed as dist
    from diffusers import ContextParallelConfig
    from torch.distributed.device_mesh import init_device_mesh

    check_mode(mode)
    degree = dist.get_world_size()
    for net in pipe.denoisers.values():
        check_heads(net.config.n_heads, mode, degree)
        shape = (1, degree) if mode == "ulysses" else (degree, 1)
        config = ContextParallelConfig(
            **({"ulysses_degree": degree, "ulysses_anything": True} if mode == "ulysses"
               else {"ring_degree": degree, "ring_anything": True}),
            mesh=init_device_mesh(net.device.type, shape, mesh_dim_names=("ring", "ulysses")))
        with _device_count_on_cpu():
            net.enable_parallelism(config=config)
    pipe.set_progress_bar_config(disable=rank() != 0)


def describe(model) -> Optional[Dict[str, object]]:
    """How `model` splits each video ({"mode", "degree"}, for the sidecar), or None when it runs whole."""
    cp = getattr(model._parallel_config, "context_parallel_config", None)
    if cp is None:
        return None
    return {"mode": "ring" if cp.ring_degree > 1 else "ulysses", "degree": model.parallel_degree}


@contextlib.contextmanager
def _device_count_on_cpu() -> Iterator[None]:
    """diffusers 0.42.1's `enable_parallelism` takes `rank % torch.accelerator.device_count()`, which is 0 on a
    machine without an accelerator: count the CPU as one device there, for that call only."""
    import torch

    if torch.accelerator.current_accelerator() is not None:
        yield
        return
    count = torch.accelerator.device_count
    torch.accelerator.device_count = lambda: 1
    try:
        yield
    finally:
        torch.accelerator.device_count = count
