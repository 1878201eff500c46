"""The text users type, turned into typed values once, at the edge (CLI, batch files, the app's text boxes).

Everything inside (requests, SampleConfig, the pipeline) takes typed values: a time-aware value is a constant or
``(v0, (t1, v1), (t2, v2), ...)``. Schedule strings write the same thing compactly::

    VALUE[@T], VALUE@T, ...        e.g. "2x4, 2x2@0.03, 1x2@0.125"   or   "20, 0@0.2"

Entries are comma separated; each after the first names the flow time T (0 < T < 1, strictly increasing; 0 = noise,
1 = data) from which it applies. A patch schedule may also be a name the model gives a schedule: ``1x2``, ``2x2``,
``2x4`` and ``multiscale``, the model's own multi-scale schedule at its tuned switch times
(``ModelDefaults.named_schedules``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Mapping, Optional, Tuple

from lumina import validation as V
from lumina.errors import InvalidRequestError
from lumina.loras import EXAMPLE as LORA_EXAMPLE, Lora
from lumina.patch import RELEASE_PATCH_SIZES
from lumina.sampling.schedule import TimeAware, as_patch_name, normalize_time_aware, stages

EXAMPLE = {"patch": "'2x4, 2x2@0.03, 1x2@0.125'", "number": "'20, 0@0.2'"}


def parse_schedule(text: str, kind: str = "number", named: Optional[Mapping[str, TimeAware]] = None,
                   name: Optional[str] = None) -> TimeAware:
    """"v0, v1@t1, ..." -> the typed time-aware value; ``kind`` is "patch" or "number"; ``named``: the model's
    named patch schedules (a bare name is looked up there); ``name``: the setting's name for messages."""
    name = name or f"{kind} schedule"
    if not isinstance(text, str) or not text.strip():
        raise InvalidRequestError(f"empty {kind} schedule; write e.g. {EXAMPLE[kind]}")
    stripped = text.strip().lower()
    if kind == "patch" and named and stripped in named:
        return named[stripped]
    convert = as_patch_name if kind == "patch" else (lambda v: V.as_float(name, v))
    parsed: List[Any] = []
    for i, entry in enumerate(e.strip() for e in stripped.split(",")):
        if not entry:
            raise InvalidRequestError(f"schedule {text!r}: entry {i + 1} is empty")
        value, _, at = entry.partition("@")
        if i == 0:
            if at and V.as_float("switch time", at) != 0.0:
                raise InvalidRequestError(f"schedule {text!r}: the first entry applies from t=0; drop '@{at}'")
            parsed.append(value.strip())
        elif not at:
            raise InvalidRequestError(f"schedule {text!r}: entry {entry!r} needs a switch time, e.g. '{value}@0.1'")
        else:
            parsed.append((V.as_float("switch time", at), value.strip()))
    try:
        return normalize_time_aware(parsed, convert, what=f"schedule {text!r}")
    except ValueError as err:
        allowed = ", ".join(p.name for p in RELEASE_PATCH_SIZES) if kind == "patch" else "numbers"
        names = f" or a name: {', '.join(named)}" if kind == "patch" and named else ""
        raise InvalidRequestError(
            f"{err} (values: {allowed}; syntax: 'v0, v1@t1, v2@t2' with 0 < t1 < t2 < 1{names})") from None


def parse_setting(text: Optional[str], kind: str = "number", named: Optional[Mapping[str, TimeAware]] = None,
                  name: Optional[str] = None) -> Optional[TimeAware]:
    """A command-line or batch-file value: a number ("6"), a schedule ("20, 0@0.2"), a name, or None (unset).
    JSON lists (batch files) are the typed form already and pass through."""
    if text is None or isinstance(text, (int, float, list, tuple)) and not isinstance(text, bool):
        return text
    return parse_schedule(str(text), kind, named, name)


def format_schedule(setting: TimeAware) -> str:
    """The inverse of parse_schedule: a typed time-aware value written as a schedule string."""
    return ", ".join(_fmt(v) if i == 0 else f"{_fmt(v)}@{_fmt(t)}" for i, (t, v) in enumerate(stages(setting)))


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def parse_resolution(text: str) -> Tuple[int, int]:
    """'WxH' -> (W, H)."""
    parts = str(text).lower().replace(" ", "").split("x")
    if not (len(parts) == 2 and all(p.isdigit() for p in parts)):
        raise InvalidRequestError(f"resolution {text!r}: write it as WxH, e.g. 256x128")
    return int(parts[0]), int(parts[1])


def parse_numbers(name: str, text, most: int) -> List[float]:
    """'2, 6, 12' (or a number, or a list) -> [2.0, 6.0, 12.0]; 1..`most` values."""
    if isinstance(text, (list, tuple)):
        items: List[Any] = list(text)
    elif isinstance(text, (int, float)) and not isinstance(text, bool):
        items = [text]
    else:
        items = [p for p in str(text or "").replace(";", ",").split(",") if p.strip()]
    values = [V.as_float(name, item.strip() if isinstance(item, str) else item) for item in items]
    if not 1 <= len(values) <= most:
        raise InvalidRequestError(f"{name}: give 1 to {most} comma-separated numbers, got {len(values)}")
    return values



def parse_lora(text: str) -> Lora:
    """'PATH' or 'PATH:SCALE' -> Lora(PATH, SCALE) (scale 1 when none is given). A path that exists is taken whole,
    so a file whose name ends in ':2' is still read as a file."""
    text = str(text).strip()
    if not text:
        raise InvalidRequestError(f"empty LoRA; write PATH or PATH:SCALE, e.g. {LORA_EXAMPLE}")
    path, sep, scale = text.rpartition(":")
    if not sep or Path(text).expanduser().exists() or "/" in scale or "\\" in scale:
        return Lora(text)
    try:
        return Lora(path, V.as_float("scale", scale))
    except InvalidRequestError:
        raise InvalidRequestError(f"LoRA {text!r}: no such file, and {scale!r} after the last ':' is not a scale; "
                                  f"write PATH or PATH:SCALE, e.g. {LORA_EXAMPLE}") from None


def parse_loras(value) -> Tuple[Lora, ...]:
    """LoRAs as the edges give them: None or "" (none), text with one PATH[:SCALE] a line (the app), or a list of
    such strings (repeated --lora, a batch file's "loras")."""
    if value is None:
        return ()
    items = value.splitlines() if isinstance(value, str) else list(value)
    if not all(isinstance(item, str) for item in items):
        raise InvalidRequestError(f"LoRAs {value!r}: give PATH or PATH:SCALE strings, e.g. {LORA_EXAMPLE!r}")
    return tuple(parse_lora(item) for item in items if item.strip())
