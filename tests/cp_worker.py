"""One rank of tests/test_parallel.py's launch (`python -m torch.distributed.run --nproc_per_node 2 -m
tests.cp_worker OUT`): every case under both modes in one launch, since each process start costs seconds.

Each rank saves its final latents to OUT/rank{R}.safetensors as "{mode}/{case}", and the message the model gave for a
batch of videos of two sizes to OUT/rank{R}.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from lumina import parallel
from lumina.errors import InvalidRequestError
from tests.builders import random_pipeline

# Tokens per patch size: the 1x2 case 48 (latent 2x8x12); the multiscale case 2x4: 9, 2x2: 36, 1x2: 72 (latent
# 2x12x12). Sizes of a pipeline are multiples of 32, so only 2x4 can give an odd count; `forward_case` gives 45 at 1x2.
CASES = {
    "1x2": dict(width=96, height=64, num_frames=8, patch_schedule="1x2", num_inference_steps=4),
    "multiscale": dict(width=96, height=96, num_frames=8, patch_schedule="multiscale", num_inference_steps=8),
}


def run_case(pipe, case: str):
    """The case's final latent and its per-step log (seed 0, guided, a negative prompt)."""
    out = pipe("a red circle moving right", negative_prompt="blurry", generator=torch.Generator().manual_seed(0),
               output_type="latent", **CASES[case])
    return out.frames, out.schedule


def forward_case(model) -> torch.Tensor:
    """One transformer forward at 1x2 over 45 tokens (latent 3x6x10), a batch of two, seeded inputs."""
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(2, 16, 3, 6, 10, generator=g)
    cap = torch.randn(2, 5, model.config.cap_feat_dim, generator=g)
    with torch.no_grad():
        return model(latents, torch.tensor([0.3, 0.7]), cap, torch.tensor([[1] * 5, [1] * 3 + [0] * 2]),
                     torch.tensor([6.0, -1.0]), "1x2")


def unequal_batch_message(model) -> str:
    latents = [torch.randn(16, 2, 6, 10), torch.randn(16, 2, 6, 8)]
    cap = torch.randn(2, 5, model.config.cap_feat_dim)
    try:
        model(latents, torch.full((2,), 0.5), cap, torch.ones(2, 5), torch.full((2,), 6.0), "1x2")
    except InvalidRequestError as err:
        return str(err)
    return "accepted"


def main(out: Path) -> None:
    latents, messages = {}, {}
    with parallel.process_group("ulysses", "cpu"):
        for mode in parallel.MODES:
            pipe = random_pipeline(0)
            parallel.enable(pipe, mode)
            for case in CASES:
                latents[f"{mode}/{case}"] = run_case(pipe, case)[0].contiguous()
            latents[f"{mode}/forward"] = forward_case(pipe.transformer)
            messages[mode] = unequal_batch_message(pipe.transformer)
    rank = parallel.rank()
    save_file(latents, str(out / f"rank{rank}.safetensors"))
    (out / f"rank{rank}.json").write_text(json.dumps(messages))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
