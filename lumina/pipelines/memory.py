"""Memory modes: where weights live while a request runs, and whether they are 8-bit.

A mode is written as parts joined by "+": an offload tier (``none``, ``model-offload``,
``sequential-offload``, ``group-offload``), ``8bit`` (bitsandbytes int8 weights for the transformer blocks
and the text encoder), ``vae-tiling`` / ``vae-slicing``, or ``auto`` (chosen from free GPU memory and the
request's size). Combinations that cannot work are resolved or refused here, before any hook is set.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import List, Optional, Tuple

import torch

from lumina.errors import InvalidRequestError

OFFLOAD_TIERS = ("none", "model-offload", "sequential-offload", "group-offload")
FLAGS = ("8bit", "vae-tiling", "vae-slicing")
GIB = 1024**3


@dataclass(frozen=True)
class MemoryPlan:
    offload: str = "none"
    quantize_8bit: bool = False
    vae_tiling: bool = False
    vae_slicing: bool = False
    reason: str = ""

    @property
    def name(self) -> str:
        parts = [self.offload] + [f for f, on in zip(FLAGS, (self.quantize_8bit, self.vae_tiling, self.vae_slicing)) if on]
        return "+".join(parts)


def modes_for(device_type: str) -> List[str]:
    """The modes offered in menus for a device (any other valid combination is accepted too)."""
    if device_type == "cuda":
        return ["auto", "none", "model-offload+vae-tiling", "model-offload+8bit+vae-tiling", "group-offload+vae-tiling",
                "sequential-offload+vae-tiling", "8bit"]
    return ["none", "8bit", "none+vae-tiling"]


def parse_memory_mode(text: str) -> Optional[MemoryPlan]:
    """None for "auto"; otherwise the plan the parts describe."""
    parts = [p.strip().lower().replace("_", "-") for p in str(text).split("+") if p.strip()]
    if parts == ["auto"]:
        return None
    allowed = ", ".join(OFFLOAD_TIERS + FLAGS + ("auto",))
    unknown = [p for p in parts if p not in OFFLOAD_TIERS + FLAGS]
    tiers = [p for p in parts if p in OFFLOAD_TIERS]
    if not parts or unknown or len(tiers) > 1:
        raise InvalidRequestError(
            f"memory mode {text!r}: use one offload tier and any flags joined by '+', e.g. "
            f"'model-offload+8bit+vae-tiling'; parts: {allowed}"
        )
    return MemoryPlan(offload=tiers[0] if tiers else "none", quantize_8bit="8bit" in parts,
                      vae_tiling="vae-tiling" in parts, vae_slicing="vae-slicing" in parts)


def check_plan(plan: MemoryPlan, device_type: str) -> MemoryPlan:
    """Refuse what cannot run; resolve what can (8-bit weights stay on the GPU under model offload)."""
    if plan.offload != "none" and device_type != "cuda":
        raise InvalidRequestError(
            f"memory mode {plan.name!r}: {plan.offload} moves weights between CPU and a CUDA GPU, and this run is on "
            f"{device_type}; on a CPU use 'none' (optionally '+8bit' or '+vae-tiling')"
        )
    if plan.quantize_8bit and plan.offload in ("sequential-offload", "group-offload"):
        raise InvalidRequestError(
            f"memory mode {plan.name!r}: 8-bit bitsandbytes weights cannot be moved to the CPU, which "
            f"{plan.offload} does for every layer; use 'model-offload+8bit' (the 8-bit transformer stays on the GPU "
            f"while the text encoder and VAE are offloaded) or drop '8bit'"
        )
    if plan.quantize_8bit and plan.offload == "model-offload":
        return replace(plan, reason=plan.reason or "8-bit transformer kept on the GPU; text encoder and VAE offloaded")
    return plan


def estimate_bytes(pipe, tokens_per_step: int, dtype_bytes: int = 2) -> Tuple[int, int, int]:
    """(transformer weights, other weights, activations) for one request, in bytes (a low-noise expert counts
    with the transformer: both denoise on the GPU)."""
    def size(module):
        return 0 if module is None else sum(p.numel() for p in module.parameters()) * dtype_bytes

    cfg = pipe.transformer.config
    # ~24 live (tokens x dim) buffers per block pass, both guidance branches in one pass (batched_guidance)
    activations = 2 * tokens_per_step * cfg.dim * dtype_bytes * 24
    return sum(size(m) for m in pipe.denoisers.values()), size(pipe.text_encoder) + size(pipe.vae), activations


def choose_plan(free_bytes: Optional[int], transformer: int, others: int, activations: int) -> MemoryPlan:
    """The lightest mode that fits, with 10% headroom; CPU runs (free_bytes None) use none."""
    if free_bytes is None:
        return MemoryPlan(reason="no CUDA GPU: weights stay in CPU memory")
    budget = free_bytes * 0.9
    if transformer + others + activations <= budget:
        return MemoryPlan(reason="everything fits on the GPU")
    if transformer + activations <= budget:
        return MemoryPlan("model-offload", vae_tiling=True, reason="text encoder and VAE offloaded while idle")
    if transformer // 2 + activations <= budget:
        return MemoryPlan("model-offload", quantize_8bit=True, vae_tiling=True,
                          reason="8-bit transformer on the GPU, other models offloaded")
    return MemoryPlan("group-offload", vae_tiling=True, vae_slicing=True,
                      reason="blocks streamed from CPU memory one group at a time")


def quantize_8bit(module: torch.nn.Module, skip=("x_embedder", "final_layer", "embedder", "embeddings")) -> int:
    """Swap nn.Linear layers for bitsandbytes int8 ones (LLM.int8); returns how many were swapped.

    Embedders and output heads stay in full precision: they are small and the most sensitive.
    """
    import bitsandbytes as bnb

    swapped = 0
    for name, child in list(module.named_modules()):
        for attr, sub in list(child.named_children()):
            full = f"{name}.{attr}" if name else attr
            if isinstance(sub, torch.nn.Linear) and not any(s in full for s in skip):
                q = bnb.nn.Linear8bitLt(sub.in_features, sub.out_features, bias=sub.bias is not None,
                                        has_fp16_weights=False, threshold=6.0)
                q.weight = bnb.nn.Int8Params(sub.weight.data.to(torch.float16).cpu(), requires_grad=False,
                                             has_fp16_weights=False)
                if sub.bias is not None:
                    q.bias = torch.nn.Parameter(sub.bias.data.clone(), requires_grad=False)
                setattr(child, attr, q.to(sub.weight.device if sub.weight.device.type != "meta" else "cpu"))
                swapped += 1
    return swapped


def apply_memory_mode(pipe, mode: str = "none", device: str = "cpu", tokens_per_step: int = 0) -> MemoryPlan:
    """Configure `pipe` for `mode` on `device` and return the plan that was applied."""
    device_type = torch.device(device).type
    plan = parse_memory_mode(mode)
    if plan is None:
        free = torch.cuda.mem_get_info(torch.device(device))[0] if device_type == "cuda" else None
        plan = choose_plan(free, *estimate_bytes(pipe, tokens_per_step))
    plan = check_plan(plan, device_type)
    if plan.quantize_8bit:
        for net in pipe.denoisers.values():
            quantize_8bit(net)
        if pipe.text_encoder is not None:
            quantize_8bit(pipe.text_encoder)
    if plan.offload == "none":
        pipe.to(device)
    elif plan.offload == "model-offload":
        if plan.quantize_8bit:
            for name, net in pipe.denoisers.items():
                net.to(device)
                pipe._exclude_from_cpu_offload.append(name)
        pipe.enable_model_cpu_offload(device=device)
    elif plan.offload == "sequential-offload":
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        for net in pipe.denoisers.values():
            net.enable_group_offload(
                onload_device=torch.device(device), offload_device=torch.device("cpu"), offload_type="block_level",
                num_blocks_per_group=1, use_stream=True,
            )
        for name in ("text_encoder", "vae"):
            if getattr(pipe, name) is not None:
                getattr(pipe, name).to(device)
    pipe.batched_guidance = plan.offload == "none"  # offloading is for tight memory: one branch at a time
    if pipe.vae is not None:
        (pipe.vae.enable_tiling if plan.vae_tiling else pipe.vae.disable_tiling)()
        (pipe.vae.enable_slicing if plan.vae_slicing else pipe.vae.disable_slicing)()
    return plan


def release_memory() -> None:
    """Return freed activations to the system between requests (and cached CUDA blocks to the driver)."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def misplaced_quantization_state(pipe) -> List[str]:
    """8-bit weights whose quantization state (bitsandbytes' CB/SCB) is not on the weight's own device: the cause of
    'Expected a cuda device, but got: cpu' at the first int8 matmul. Empty when every state sits with its weight."""
    misplaced = []
    for component in ("transformer", "transformer_2", "text_encoder"):
        module = getattr(pipe, component, None)
        for name, param in ([] if module is None else module.named_parameters()):
            for attr in ("CB", "SCB"):
                state = getattr(param, attr, None)
                if isinstance(state, torch.Tensor) and state.device != param.device:
                    misplaced.append(f"{component}.{name}.{attr} on {state.device}, weight on {param.device}")
    return misplaced
