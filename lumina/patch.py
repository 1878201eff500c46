"""Patch sizes as the paper writes them: "FxP" = (frames per patch, pixels per patch side)."""

from __future__ import annotations

import re
from typing import NamedTuple, Tuple, Union


class PatchSize(NamedTuple):
    f: int
    p: int

    @property
    def name(self) -> str:
        """The paper's spelling, e.g. "1x2"."""
        return f"{self.f}x{self.p}"

    @property
    def key(self) -> str:
        """The release's module key, "{patch}-{f_patch}", e.g. "2-1"."""
        return f"{self.p}-{self.f}"

    @property
    def volume(self) -> int:
        """Latent positions folded into one token (cost shrinks by this factor)."""
        return self.f * self.p * self.p


RELEASE_PATCH_SIZES = (PatchSize(1, 2), PatchSize(2, 2), PatchSize(2, 4))
_PATTERN = re.compile(r"^\s*(\d+)\s*x\s*(\d+)\s*$")


def parse_patch_size(value: Union[str, PatchSize, Tuple[int, int]]) -> PatchSize:
    """Accept "1x2", (1, 2) or a PatchSize; refuse anything else with the allowed forms."""
    if isinstance(value, PatchSize):
        return value
    if isinstance(value, str):
        m = _PATTERN.match(value)
        if m:
            return PatchSize(int(m.group(1)), int(m.group(2)))
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return PatchSize(int(value[0]), int(value[1]))
    allowed = ", ".join(p.name for p in RELEASE_PATCH_SIZES)
    raise ValueError(f"patch size {value!r} is not of the form 'FxP' (frames x pixels), e.g. {allowed}")
