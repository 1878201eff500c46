"""Resolve a user's MODEL argument to a ready pipeline and its sensible defaults.

MODEL is "tiny" (the bundled offline model in assets/), a diffusers-layout directory
(model_index.json), a release directory (consolidated.00-of-01.*) or a Hub id of the release.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from lumina.errors import LuminaError, ModelFilesError
from lumina.models.components import (RELEASE_TEXT_ENCODER, RELEASE_VAE, load_release_vae, load_text_encoder,
                                      materialize_packaged_weights)
from lumina.models.loading import WEIGHT_FILES, load_official_transformer
from lumina.pipelines.memory import apply_memory_mode, check_plan, int8_config, load_time_8bit, parse_memory_mode
from lumina.pipelines.defaults import TINY_DIR, ModelDefaults, model_folder, read_defaults, read_model_index
from lumina.pipelines.pipeline_lumina_video import LuminaVideoPipeline

__all__ = ["TINY_DIR", "load_pipeline", "model_folder", "read_defaults"]  # the light three live in .defaults


def load_pipeline(
    model: str = "tiny",
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    text_encoder: str = RELEASE_TEXT_ENCODER,
    vae: str = RELEASE_VAE,
    memory: str = "none",
    compile_blocks: bool = False,
) -> Tuple[LuminaVideoPipeline, ModelDefaults]:
    """Load MODEL, then place it on `device` according to the memory mode (see lumina.pipelines.memory).

    An explicit 8-bit mode quantizes at load time where a library quantizer can (apply_memory_mode swaps the rest).
    Unreadable model files (malformed JSON, truncated weights) raise ModelFilesError naming the file's problem."""
    from safetensors import SafetensorError

    device_type = torch.device(device).type
    plan = parse_memory_mode(memory)
    quantize_on = device_type if plan is not None and check_plan(plan, device_type).quantize_8bit else None
    try:
        pipe, defaults = _load(model, dtype, text_encoder, vae, quantize_on)
    except LuminaError:
        raise
    except (OSError, ValueError, SafetensorError) as err:
        raise ModelFilesError(f"model {model}: its files could not be read ({type(err).__name__}: "
                              f"{str(err).strip().splitlines()[0] if str(err).strip() else 'no details'})") from None
    tokens = pipe.transformer.num_tokens(pipe.latent_size(defaults.frames, defaults.height, defaults.width), "1x2")
    pipe.memory_plan = apply_memory_mode(pipe, memory, device, tokens_per_step=tokens)
    if compile_blocks:
        for net in pipe.denoisers.values():
            net.compile_repeated_blocks(fullgraph=False, dynamic=True)
    return pipe, defaults


def _load(model: str, dtype: torch.dtype, text_encoder: str, vae: str,
          quantize_on: Optional[str] = None) -> Tuple[LuminaVideoPipeline, ModelDefaults]:
    """`quantize_on`: the device type an 8-bit pipeline will run on, None for full precision."""
    folder = model_folder(model)
    if (folder / "model_index.json").exists():
        index = read_model_index(folder)
        materialize_packaged_weights(folder)
        present = [name for name, entry in index.items() if isinstance(entry, list) and entry[0] is not None]
        quantization = None if quantize_on is None else load_time_8bit(quantize_on, present)
        pipe = LuminaVideoPipeline.from_pretrained(str(folder), dtype=dtype, quantization_config=quantization,
                                                   use_safetensors=True)
        return pipe, pipe.defaults
    if folder.exists() and not any((folder / f).exists() for f in WEIGHT_FILES):
        raise ModelFilesError(
            f"{folder} holds neither a diffusers pipeline (model_index.json) nor release weights ({', '.join(WEIGHT_FILES)})"
        )
    transformer = load_official_transformer(model, dtype=dtype)
    quantization = None if quantize_on is None else int8_config("transformers")
    tokenizer, encoder = load_text_encoder(text_encoder, dtype=dtype, quantization_config=quantization)
    pipe = LuminaVideoPipeline(transformer=transformer, vae=load_release_vae(vae, dtype), text_encoder=encoder,
                               tokenizer=tokenizer)
    return pipe, ModelDefaults()
