"""Lumina-Video Studio, the Gradio app: `build_demo(model=...)` returns the Blocks, ready to launch.

`zerogpu` is imported first so that `spaces` is loaded before anything can initialise CUDA.
"""

from lumina.app import zerogpu  # noqa: F401  (must stay first: imports `spaces`)
from lumina.app.endpoints import Studio
from lumina.app.ui import build_demo, launch_options

__all__ = ["Studio", "build_demo", "launch_options", "zerogpu"]
