"""The project's folders in one frozen object: the assets are not package data (training writes the tiny model next
to the checkout), so this is where they are located, once, and the one place to point the app elsewhere."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Settings:
    assets: Path         # $LUMINA_ASSETS: the bundled tiny models (lumina-video-tiny/, lumina-v2a-tiny/)
    examples_file: Path  # $LUMINA_EXAMPLES: the app's example prompts
    results: Path        # measured benchmark results (cost_model.json)

    @classmethod
    def from_env(cls) -> "Settings":
        return cls(assets=Path(os.environ.get("LUMINA_ASSETS", CHECKOUT / "assets")),
                   examples_file=Path(os.environ.get("LUMINA_EXAMPLES", CHECKOUT / "examples" / "prompts.json")),
                   results=CHECKOUT / "benchmarks" / "results")


SETTINGS = Settings.from_env()
