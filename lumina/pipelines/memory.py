"""Memory modes: where weights live while a request runs, and whether they are 8-bit.

A mode is written as parts joined by "+": an offload tier (``none``, ``model-offload``,
``sequential-offload``, ``group-offload``), ``8bit`` (bitsandbytes int8 weights for the transformer blocks
and the text encoder), ``vae-tiling`` / ``vae-slicing``, or ``auto`` (chosen from free GPU memory and the
request's size). Combinations that cannot work are resolved or refused here, before any hook is set.
"""

from __future__ import annotations

import sys
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
            f"{plan.offload} does for every layer; use 'model-offload+8bit' (the 8-bit transformer and text encoder "
            f"stay on the GPU while the VAE is offloaded) or drop '8bit'"
        )
    if plan.quantize_8bit and plan.offload == "model-offload":
        return replace(plan, reason=plan.reason or "8-bit transformer and text encoder kept on the GPU; VAE offloaded")
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
                          reason="8-bit transformer and text encoder on the GPU, the VAE offloaded")
    return MemoryPlan("group-offload", vae_tiling=True, vae_slicing=True,
                      reason="blocks streamed from CPU memory one group at a time")


# Next-DiT layers kept in full precision under 8-bit: small, and the most sensitive (they map to and from the
# latent and carry the time and caption conditioning). A layer is skipped when a part of its dotted name is one of
# these, which is how bitsandbytes' `llm_int8_skip_modules` matches them too.
FULL_PRECISION_MODULES = ("all_x_embedder", "all_final_layer", "t_embedder", "motion_embedder", "cap_embedder",
                          "adaLN_modulation")
DENOISERS = ("transformer", "transformer_2")


def int8_config(library: str):
    """bitsandbytes LLM.int8 settings in diffusers' ("diffusers", for the denoisers) or transformers' form (the text
    encoder, whose quantizer keeps its own output heads in full precision)."""
    if library == "diffusers":
        from diffusers import BitsAndBytesConfig

        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=list(FULL_PRECISION_MODULES))
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_8bit=True)


def load_time_8bit(device_type: str, components):
    """8-bit at load time for a saved pipeline, by the libraries themselves: the text encoder through transformers'
    bitsandbytes quantizer, the denoisers through diffusers' on CUDA only (it refuses to start without a GPU; on a CPU
    apply_memory_mode swaps their layers after loading). `components`: the names the saved pipeline has.

    None where no present component loads quantized (a CPU run of a pipeline without a text encoder): diffusers
    refuses an empty mapping, and apply_memory_mode still swaps the denoisers' layers."""
    from diffusers import PipelineQuantizationConfig

    mapping = {"text_encoder": int8_config("transformers")} if "text_encoder" in components else {}
    if device_type == "cuda":
        mapping.update({name: int8_config("diffusers") for name in DENOISERS if name in components})
    return PipelineQuantizationConfig(quant_mapping=mapping) if mapping else None


def holds_8bit(module) -> bool:
    """Whether `module` has bitsandbytes int8 layers (loaded that way or swapped by quantize_8bit)."""
    bnb = sys.modules.get("bitsandbytes")  # no int8 layer exists before it is imported: plain runs never import it
    if bnb is None or not isinstance(module, torch.nn.Module):
        return False
    return any(isinstance(m, bnb.nn.Linear8bitLt) for m in module.modules())


def int8_layers(module) -> int:
    """How many bitsandbytes int8 layers `module` holds whose weight really is int8: what an 8-bit mode must leave
    (a Linear8bitLt keeping float weights, or a plain Linear, saves nothing)."""
    bnb = sys.modules.get("bitsandbytes")
    if bnb is None or not isinstance(module, torch.nn.Module):
        return 0
    return sum(isinstance(m, bnb.nn.Linear8bitLt) and m.weight.dtype == torch.int8 for m in module.modules())


def quantize_8bit(module: torch.nn.Module, skip=()) -> int:
    """Swap nn.Linear layers outside `skip` for bitsandbytes int8 ones, quantized on the device `module` is on;
    returns how many were swapped.

    Kept for components built in memory (random weights, the release's consolidated checkpoint, denoisers on a
    CPU), which no library quantizer loads. Move `module` to its compute device first: bitsandbytes quantizes a
    weight where it first goes from the CPU and keeps its scales beside it, where a later nn.Module.to does not reach.
    The model's config records the quantization, so a saved copy loads back as 8-bit.
    """
    import bitsandbytes as bnb
    from diffusers import ModelMixin

    swapped = 0
    for name, child in list(module.named_modules()):
        for attr, sub in list(child.named_children()):
            full = f"{name}.{attr}" if name else attr
            if isinstance(sub, torch.nn.Linear) and not set(full.split(".")) & set(skip):
                q = bnb.nn.Linear8bitLt(sub.in_features, sub.out_features, bias=sub.bias is not None,
                                        has_fp16_weights=False, threshold=6.0)
                q.weight = bnb.nn.Int8Params(sub.weight.data.to(torch.float16).cpu(), requires_grad=False,
                                             has_fp16_weights=False)
                if sub.bias is not None:
                    q.bias = torch.nn.Parameter(sub.bias.data.clone(), requires_grad=False)
                setattr(child, attr, q.to(sub.weight.device).train(sub.training))
                swapped += 1
    if isinstance(module, ModelMixin):
        module.register_to_config(quantization_config=int8_config("diffusers"))
    else:
        module.config.quantization_config = int8_config("transformers")
    return swapped


def quantization_devices(pipe, device=None) -> List[str]:
    """Every bitsandbytes 8-bit layer of `pipe` whose quantization state is not beside its weight, or (with
    `device`) whose weight is not on `device`; empty when all is well. One line each, "component.layer: what".

    bitsandbytes 0.50 keeps an int8 weight's row scales outside the parameter (weight.CB/weight.SCB until the layer's
    first forward, layer.state.CB/SCB after), and nn.Module.to moves only the parameter.
    """
    import bitsandbytes as bnb

    want = None if device is None else torch.device(device)
    problems = []
    for name, component in pipe.components.items():
        if not isinstance(component, torch.nn.Module):
            continue
        for layer_name, layer in component.named_modules():
            if not isinstance(layer, bnb.nn.Linear8bitLt):
                continue
            where = f"{name}.{layer_name}"
            weight = layer.weight
            if weight.dtype != torch.int8:
                problems.append(f"{where}: weight not quantized ({weight.dtype})")
            if want is not None and (weight.device.type != want.type or want.index not in (None, weight.device.index)):
                problems.append(f"{where}: weight on {weight.device}, not on {want}")
            state = {"weight.CB": getattr(weight, "CB", None), "weight.SCB": getattr(weight, "SCB", None),
                     "state.CB": layer.state.CB, "state.SCB": layer.state.SCB}
            if state["weight.SCB"] is None and state["state.SCB"] is None:
                problems.append(f"{where}: no row scales (weight.SCB and state.SCB are None)")
            problems += [f"{where}: {label} on {t.device}, weight on {weight.device}"
                         for label, t in state.items() if t is not None and t.device != weight.device]
    return problems


def relative_difference(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in fp32: how far a memory mode's latent is from the `none` run's."""
    out, ref = out.float(), ref.float()
    return ((out - ref).norm() / ref.norm()).item()


def mode_tolerance(plan: MemoryPlan) -> float:
    """The largest relative_difference from `none` a mode may give: offloading moves weights, not numbers (1e-3
    leaves room for kernels that differ by device placement); 8-bit weights round every projection (3%)."""
    return 0.03 if plan.quantize_8bit else 1e-3


def enable_model_offload(pipe, device) -> None:
    """diffusers' model offload (each model on `device` only while it runs), except for components with 8-bit layers:
    they stay on `device` throughout, outside the offload chain (LuminaVideoPipeline.to leaves them in place)."""
    held = [name for name, module in pipe.components.items() if holds_8bit(module)]
    pipe.model_cpu_offload_seq = "->".join(n for n in type(pipe).model_cpu_offload_seq.split("->") if n not in held)
    pipe._exclude_from_cpu_offload = held  # per pipeline: the class attribute is shared
    pipe.enable_model_cpu_offload(device=device)


def enable_group_offload(pipe, device) -> None:
    """Each denoiser's blocks streamed from CPU memory one at a time (diffusers' block-level group offload, the next
    block prefetched on a CUDA stream); the text encoder and VAE stay on `device`."""
    onload = torch.device(device)
    for net in pipe.denoisers.values():
        net.enable_group_offload(onload_device=onload, offload_device=torch.device("cpu"), offload_type="block_level",
                                 num_blocks_per_group=1, use_stream=onload.type == "cuda")
    for name in ("text_encoder", "vae"):
        if getattr(pipe, name) is not None:
            getattr(pipe, name).to(onload)


def apply_memory_mode(pipe, mode: str = "none", device: str = "cpu", tokens_per_step: int = 0) -> MemoryPlan:
    """Configure `pipe` for `mode` on `device` and return the plan that was applied.

    8-bit components (quantized here or at load time) stay on `device` in every mode: the pipeline's own `to`
    leaves them in place, and model offload moves only the others."""
    device_type = torch.device(device).type
    plan = parse_memory_mode(mode)
    if plan is None:
        free = torch.cuda.mem_get_info(torch.device(device))[0] if device_type == "cuda" else None
        plan = choose_plan(free, *estimate_bytes(pipe, tokens_per_step))
    plan = check_plan(plan, device_type)
    if plan.quantize_8bit:
        targets = {**pipe.denoisers, "text_encoder": pipe.text_encoder}
        for name, net in targets.items():
            if net is not None and not holds_8bit(net):
                quantize_8bit(net.to(device), FULL_PRECISION_MODULES if name in DENOISERS else ())
    if plan.offload == "none":
        pipe.to(device)
    elif plan.offload == "model-offload":
        enable_model_offload(pipe, device)
    elif plan.offload == "sequential-offload":
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        enable_group_offload(pipe, device)
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
