"""Lumina-V2A: sound for a video with a Next-DiT over audio-latent, visual and text tokens.

    from lumina.v2a import load_v2a, audio_fn_for
    pipe = load_v2a()                                  # assets/lumina-v2a-tiny
    audio = pipe(frames, fps=24).audio                 # float32 at 16 kHz, the video's duration
    generate_video(..., audio_fn=audio_fn_for(pipe))   # sound for text-to-video results

Exports load lazily, so `python -m lumina v2a` checks its arguments before torch and diffusers are imported.
"""

from lumina.lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["TINY_V2A_DIR", "audio_fn_for", "load_v2a"], "lumina.v2a.loading"),
    **dict.fromkeys(["V2AFrameEncoder", "V2ASyncEncoder"], "lumina.v2a.encoders"),
    "LuminaV2ATransformer": "lumina.v2a.model",
    **dict.fromkeys(["LuminaV2APipeline", "LuminaV2APipelineOutput"], "lumina.v2a.pipeline"),
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
