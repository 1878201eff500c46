"""Loading a Lumina-V2A pipeline folder, and the sound callback `generate_video` takes."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import torch

from lumina.errors import ModelFilesError
from lumina.settings import SETTINGS
from lumina.v2a.model import LuminaV2ATransformer  # noqa: F401  (diffusers loads a component's class only from
from lumina.v2a.pipeline import LuminaV2APipeline  # an imported module: the transformer's, the encoders')

TINY_V2A_DIR = SETTINGS.assets / "lumina-v2a-tiny"


def _resolve(path: Union[str, Path]) -> Path:
    """A relative path missing here is taken from the folder that holds the assets (the checkout by default)."""
    p = Path(path)
    base = SETTINGS.assets.parent
    if not p.is_absolute() and not p.exists() and (base / p).exists():
        p = base / p
    return p


def load_v2a(path: Union[str, Path] = "assets/lumina-v2a-tiny", device: str = "cpu",
             dtype: torch.dtype = torch.float32, text: bool = True) -> LuminaV2APipeline:
    """Load a V2A pipeline directory (diffusers layout).

    A model trained with MiniLM captions stores ``text_encoder_source: "minilm"`` instead of the 90 MB
    encoder; it is attached here from the installed package (``text=False`` or a missing package: the
    model runs video-only, which it was also trained for).
    """
    folder = _resolve(path)
    if not (folder / "model_index.json").exists():
        hint = " (train it with `python -m lumina_research.train v2a --world 1600 --out assets/lumina-v2a-tiny`)" \
            if folder.resolve() == TINY_V2A_DIR.resolve() else ""
        raise ModelFilesError(f"no V2A model at {folder}: model_index.json is missing{hint}")
    pipe = LuminaV2APipeline.from_pretrained(str(folder), dtype=dtype)  # weights may be stored in float16
    source = pipe.config.get("text_encoder_source") if hasattr(pipe.config, "get") else None
    if text and pipe.text_encoder is None and source:
        try:
            from lumina.models.components import load_text_encoder

            tokenizer, encoder = load_text_encoder(source)
        except Exception as err:  # noqa: BLE001 - video-only still works
            warnings.warn(f"V2A text encoder {source!r} unavailable ({err}); prompts are ignored")
        else:
            pipe.register_modules(text_encoder=encoder, tokenizer=tokenizer)
            pipe.check_parts()
    pipe.set_progress_bar_config(disable=True)
    if str(device) != "cpu" or dtype != torch.float32:  # the attached text encoder follows too
        pipe = pipe.to(device=device, dtype=dtype)
    return pipe


def audio_fn_for(pipeline: LuminaV2APipeline, num_inference_steps: Optional[int] = None,
                 guidance_scale: Optional[float] = None, seed: int = 0) -> Callable:
    """The ``audio_fn(frames, fps, prompt) -> float32 waveform at 16 kHz`` that ``generate_video`` calls
    (a pipeline whose vocoder runs at another rate is resampled to 16 kHz)."""
    from lumina.v2a.audio import SAMPLE_RATE, resample_audio

    def audio_fn(frames, fps, prompt=None) -> np.ndarray:
        gen = torch.Generator("cpu").manual_seed(seed)
        out = pipeline(frames, fps, prompt=prompt, num_inference_steps=num_inference_steps,
                       guidance_scale=guidance_scale, generator=gen)
        wave = resample_audio(out.audio, out.sample_rate, SAMPLE_RATE)
        return wave[: int(round(len(frames) / float(fps) * SAMPLE_RATE))]

    return audio_fn
