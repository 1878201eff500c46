from lumina.pipelines.pipeline_lumina_video import LuminaVideoPipeline, LuminaVideoPipelineOutput

__all__ = ["LuminaVideoPipeline", "LuminaVideoPipelineOutput"]
