"""The data of a world scene: what the renderer draws and the captions describe (a module of its own, so that
neither of them imports the other)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SceneObject:
    """One shape; ``start`` is its normalized centre at t=0, ``direction`` a unit vector in pixels."""

    shape: str
    color: str
    size: str
    motion: str
    speed: float
    start: tuple[float, float]
    direction: tuple[float, float]

    @property
    def heading(self) -> str | None:
        """Compass name of a diagonal direction (e.g. ``"up-left"``), else ``None``."""
        if self.motion != "diagonal":
            return None
        return ("up" if self.direction[1] < 0 else "down") + "-" + ("left" if self.direction[0] < 0 else "right")


@dataclass(frozen=True)
class Scene:
    """Everything needed to render a clip: its seed, background and objects."""

    seed: int
    background: str
    objects: tuple[SceneObject, ...]

    def facts(self) -> dict:
        """The caption-level facts: what a prompt can ask for and an analyzer can check."""
        return {
            "background": self.background,
            "objects": [
                {"color": o.color, "shape": o.shape, "size": o.size, "motion": o.motion} for o in self.objects
            ],
        }
