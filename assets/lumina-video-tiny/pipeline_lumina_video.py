"""LuminaVideoPipeline for diffusers' custom-code loading: the code is the installed lumina package's
(pip install lumina-video-studio), so a saved model and the package never drift."""

from lumina.pipelines.pipeline_lumina_video import LuminaVideoPipeline  # noqa: F401
