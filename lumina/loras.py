"""LoRAs as a request names them: a safetensors file and a scale, checked once, before any model loads.

Loading them is diffusers' and peft's work (lumina.pipelines.lora); this module imports neither torch nor peft, so
the command line and the app refuse a missing or unsafe file at their edge, and the sidecar records what was used.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Tuple

from lumina import validation as V
from lumina.errors import InvalidRequestError

LORA_SCALE_RANGE = (-4.0, 4.0)  # 0: no effect, 1: as trained; negative scales push away from the LoRA
DIFFUSERS_WEIGHT_NAME = "pytorch_lora_weights.safetensors"  # what diffusers' save_lora_weights writes
SHA_DIGITS = 16
EXAMPLE = "style.safetensors:0.8"


@dataclass(frozen=True)
class Lora:
    """A LoRA file and the scale it is applied at. `check_lora` fills `sha256` (its first 16 hex digits): it names
    the adapter, so a file loaded once is reused whatever path names it, and the sidecar records it."""

    path: str
    scale: float = 1.0
    sha256: str = ""

    @property
    def adapter_name(self) -> str:
        if not self.sha256:
            raise InvalidRequestError(f"LoRA {self.path}: not checked yet (lumina.loras.check_loras fills its sha256)")
        return f"lora_{self.sha256}"


def lora_file(path) -> Path:
    """The safetensors file PATH names: the file itself, or in a folder diffusers' pytorch_lora_weights.safetensors,
    else its only .safetensors file. Pickled files (.bin, .pt, .ckpt) are refused: loading one can run code."""
    p = Path(path).expanduser()
    if p.is_dir():
        if (p / DIFFUSERS_WEIGHT_NAME).is_file():
            return p / DIFFUSERS_WEIGHT_NAME
        found = sorted(f for f in p.glob("*.safetensors") if f.is_file())
        if len(found) != 1:
            raise InvalidRequestError(
                f"LoRA folder {str(path)!r} holds {len(found)} .safetensors files"
                f"{' (' + ', '.join(f.name for f in found[:4]) + ')' if found else ''}; name the file itself")
        return found[0]
    if not p.is_file():
        raise InvalidRequestError(f"LoRA {str(path)!r}: no such file or folder; write PATH or PATH:SCALE, "
                                  f"e.g. {EXAMPLE}")
    if p.suffix.lower() != ".safetensors":
        raise InvalidRequestError(f"LoRA {str(path)!r}: only .safetensors files are read (a pickled .bin, .pt or "
                                  f".ckpt file can run code when it is loaded); convert it to safetensors first")
    return p


def _check_header(file: Path, header: bytes, rest: bytes) -> None:
    """A safetensors file starts with the length of its JSON header, which names the tensors; a LoRA's names all
    say "lora" (diffusers' own test of a LoRA checkpoint)."""
    size = int.from_bytes(header, "little") if len(header) == 8 else -1
    try:
        table = json.loads(rest[:size]) if 0 < size <= len(rest) else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        table = None
    if not isinstance(table, dict):
        raise InvalidRequestError(f"LoRA {str(file)!r} is not a safetensors file (its header does not read)")
    names = [k for k in table if k != "__metadata__"]
    other = next((n for n in names if "lora" not in n), None)
    if not names or other is not None:
        raise InvalidRequestError(
            f"LoRA {str(file)!r} holds {f'weights that are not LoRA factors (e.g. {other!r})' if names else 'no tensors'}"
            f": is it a full model? A LoRA holds MODULE.lora_A.weight and MODULE.lora_B.weight for each layer it adapts")


@functools.lru_cache(maxsize=32)
def _digest(file: str, mtime_ns: int, size: int) -> str:
    """The first SHA_DIGITS hex digits of a LoRA file's sha256, after checking its header; cached while the file is
    unchanged (a batch names the same LoRA on every line)."""
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        header = f.read(8)
        length = int.from_bytes(header, "little") if len(header) == 8 else 0
        rest = f.read(min(length, 100 * 1024**2))  # a header is a few KB; the cap keeps a garbage length cheap
        _check_header(Path(file), header, rest)
        digest.update(header + rest)
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:SHA_DIGITS]


def check_lora(lora: Lora) -> Lora:
    """The LoRA with its scale checked, its path resolved to the file and its sha256 computed; a file that is no
    safetensors LoRA is refused here. Whether it fits the model is checked when it loads."""
    scale = V.as_float("LoRA scale", lora.scale)
    V.check_stages("LoRA scale", [scale], *LORA_SCALE_RANGE)
    file = lora_file(lora.path)
    stat = file.stat()
    return replace(lora, path=str(file), scale=scale, sha256=_digest(str(file), stat.st_mtime_ns, stat.st_size))


def check_loras(loras: Iterable[Lora]) -> Tuple[Lora, ...]:
    """Each LoRA checked (check_lora); the same file twice is refused (give it once, at the scale wanted)."""
    loras = tuple(loras)
    odd = next((lora for lora in loras if not isinstance(lora, Lora)), None)
    if odd is not None:
        raise InvalidRequestError(f"LoRA {odd!r}: give Lora(path, scale) values (lumina.syntax.parse_lora reads "
                                  f"'PATH[:SCALE]', e.g. {EXAMPLE!r})")
    checked = tuple(check_lora(lora) for lora in loras)
    seen = {}
    for lora in checked:
        if lora.sha256 in seen:
            raise InvalidRequestError(f"LoRA {lora.path} is given twice (the same file as {seen[lora.sha256]}); "
                                      f"give it once, with the scale you want")
        seen[lora.sha256] = lora.path
    return checked
