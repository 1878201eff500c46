"""Pipelines. The export loads lazily, so `lumina.pipelines.defaults` (what a model was made for, read from its
config) is checked without importing diffusers."""

from lumina.lazy import lazy_exports

_EXPORTS = dict.fromkeys(["LuminaVideoPipeline", "LuminaVideoPipelineOutput"], "lumina.pipelines.pipeline_lumina_video")
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
