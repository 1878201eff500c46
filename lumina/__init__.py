"""Lumina-Video Studio: Lumina-Video's multi-scale Next-DiT as a diffusers-style library, CLI and app."""

from lumina.models import LuminaNextDiTVideo, load_official_transformer
from lumina.patch import PatchSize, parse_patch_size
from lumina.pipelines import LuminaVideoPipeline, LuminaVideoPipelineOutput
from lumina.sampling import PRESETS, SampleConfig

__all__ = [
    "LuminaNextDiTVideo", "LuminaVideoPipeline", "LuminaVideoPipelineOutput", "PRESETS", "PatchSize",
    "SampleConfig", "load_official_transformer", "parse_patch_size",
]
