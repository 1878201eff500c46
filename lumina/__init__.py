"""Lumina-Video Studio: Lumina-Video's multi-scale Next-DiT as a diffusers-style library, CLI and app.

Exports load lazily, so the motion scorer (`lumina.motion`) does not pay for torch and diffusers.
"""

from lumina.lazy import lazy_exports

_EXPORTS = {
    "LuminaNextDiTVideo": "lumina.models",
    "load_official_transformer": "lumina.models",
    "LuminaVideoPipeline": "lumina.pipelines",
    "LuminaVideoPipelineOutput": "lumina.pipelines",
    "PRESETS": "lumina.sampling",
    "SampleConfig": "lumina.sampling",
    "PatchSize": "lumina.patch",
    "parse_patch_size": "lumina.patch",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
