"""Time-aware settings, the release presets and the schedule string syntax (reference §3).

A *time-aware* setting is a constant or ``(v0, (t1, v1), (t2, v2), ...)``: v0 while t < t1, v1 from
t1 on, and so on, with t the flow time (0 = noise, 1 = data). JSON lists are accepted like tuples.

Schedule strings (used by the CLI and the app) write the same thing compactly::

    VALUE[@T], VALUE@T, ...        e.g. "2x4, 2x2@0.03, 1x2@0.125"   or   "20, 0@0.2"

Entries are comma separated; each after the first names the time T (0 < T < 1, strictly increasing)
from which it applies. The names ``1x2``, ``2x2``, ``2x4`` and ``multiscale`` are shorthands for patch
schedules; ``multiscale`` is the release's f24F96R960 multi-scale schedule, unless a model's defaults
name their own (``ModelDefaults.patch_shorthands``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Tuple, Union

from lumina.patch import RELEASE_PATCH_SIZES, PatchSize, parse_patch_size
from lumina import validation as V

Number = Union[int, float]
TimeAware = Union[Any, Tuple]


def normalize_time_aware(value: Any, convert=lambda v: v, what: str = "setting") -> TimeAware:
    """Canonical tuple form of a time-aware value; lists (from JSON) become tuples.

    ``convert`` turns each stage's value into its type (a float, a patch size name) and raises
    ValueError for a bad one.
    """
    if isinstance(value, (list, tuple)) and not _is_scalar_pair(value):
        if not value:
            raise ValueError(f"{what}: an empty schedule has no value")
        result = [convert(value[0])]
        last_t = 0.0
        for item in value[1:]:
            if not (isinstance(item, (list, tuple)) and len(item) == 2):
                raise ValueError(f"{what}: stage {item!r} must be a pair (t, value)")
            t = float(item[0])
            if not (last_t < t < 1.0):
                raise ValueError(
                    f"{what}: switch time {t} must be in (0, 1) and larger than the previous one ({last_t})"
                )
            last_t = t
            result.append((t, convert(item[1])))
        return tuple(result) if len(result) > 1 else result[0]
    return convert(value)


def _is_scalar_pair(value) -> bool:
    """(1, 2) as a patch size is a single value, not a schedule."""
    return len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in value)


def stages(setting: TimeAware) -> List[Tuple[float, Any]]:
    """[(0.0, v0), (t1, v1), ...] for a canonical time-aware setting."""
    if isinstance(setting, tuple) and setting and isinstance(setting[-1], tuple):
        return [(0.0, setting[0])] + [(float(t), v) for t, v in setting[1:]]
    return [(0.0, setting)]


def value_at(setting: TimeAware, t: float):
    """Read a time-aware setting at flow time t."""
    current = None
    for t_switch, v in stages(setting):
        if t >= t_switch or current is None:
            current = v
    return current


def _as_float(what: str):
    def convert(v):
        if isinstance(v, bool) or not isinstance(v, (int, float, str)):
            raise ValueError(f"{what}: {v!r} is not a number")
        try:
            return float(v)
        except ValueError:
            raise ValueError(f"{what}: {v!r} is not a number") from None

    return convert


def _as_patch_name(v) -> str:
    """Patch sizes of the model family (1x2, 2x2, 2x4); a model may still support fewer."""
    ps = parse_patch_size(v)
    if ps not in RELEASE_PATCH_SIZES:
        raise ValueError(f"patch size {ps.name} is not one of {', '.join(p.name for p in RELEASE_PATCH_SIZES)}")
    return ps.name


_MULTI_960 = ("2x4", (0.03, "2x2"), (0.125, "1x2"))
_MULTI_512 = ("2x4", (0.075, "2x2"), (0.3, "1x2"))

PATCH_SHORTHANDS = {
    "1x2": "1x2",
    "2x2": "2x2",
    "2x4": "2x4",
    "multiscale": _MULTI_960,
}


def parse_schedule_string(text: str, kind: str = "patch",
                          shorthands: Optional[Dict[str, TimeAware]] = None) -> TimeAware:
    """Parse "v0, v1@t1, ..." into the tuple form; ``kind`` is "patch" or "number".

    ``shorthands`` names patch schedules (default ``PATCH_SHORTHANDS``): a model with its own tuned
    switch times passes its table, so that "multiscale" means that model's schedule."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"empty {kind} schedule; write e.g. " + ("'2x4, 2x2@0.03, 1x2@0.125'" if kind == "patch" else "'20, 0@0.2'"))
    stripped = text.strip().lower()
    table = PATCH_SHORTHANDS if shorthands is None else shorthands
    if kind == "patch" and stripped in table:
        return table[stripped]
    entries = [e.strip() for e in stripped.split(",")]
    convert = _as_patch_name if kind == "patch" else _as_float(f"{kind} schedule")
    parsed: List[Any] = []
    for i, entry in enumerate(entries):
        if not entry:
            raise ValueError(f"schedule {text!r}: entry {i + 1} is empty")
        value, _, at = entry.partition("@")
        if i == 0:
            if at and float(_as_float("switch time")(at)) != 0.0:
                raise ValueError(f"schedule {text!r}: the first entry applies from t=0; drop '@{at}'")
            parsed.append(value.strip())
        else:
            if not at:
                raise ValueError(f"schedule {text!r}: entry {entry!r} needs a switch time, e.g. '{value}@0.1'")
            parsed.append((_as_float("switch time")(at), value.strip()))
    try:
        return normalize_time_aware(parsed, convert, what=f"schedule {text!r}")
    except ValueError as err:
        allowed = ", ".join(p.name for p in RELEASE_PATCH_SIZES) if kind == "patch" else "numbers"
        raise ValueError(f"{err} (values: {allowed}; syntax: 'v0, v1@t1, v2@t2' with 0 < t1 < t2 < 1)") from None


def coerce_setting(value: Any, kind: str, shorthands: Optional[Dict[str, TimeAware]] = None) -> TimeAware:
    """Schedule strings are parsed; constants, tuples and JSON lists pass through (None = keep default)."""
    if isinstance(value, str):
        return parse_schedule_string(value, kind, shorthands)
    return value


def format_schedule(setting: TimeAware) -> str:
    """Inverse of parse_schedule_string: the tuple form written as a schedule string."""
    return ", ".join(_fmt(v) if i == 0 else f"{_fmt(v)}@{_fmt(t)}" for i, (t, v) in enumerate(stages(setting)))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def to_json_form(setting: TimeAware):
    """Lists instead of tuples, as the release's JSON configs write them."""
    if isinstance(setting, tuple):
        return [to_json_form(s) for s in setting]
    return setting


@dataclass(frozen=True)
class SampleConfig:
    """One sampling run in the release's terms; every value, and every stage of a time-aware one, is checked
    against its rule in lumina.validation when the config is made (so presets, the CLI, the app and the batch
    runner share one rule per value).

    ``steps`` keeps the release's ``step`` meaning: grid points, so steps - 1 model evaluations.
    ``shared_noise`` (key ``sharedNoise``, this project's; the release draws independent noise, 0) is the share
    of the starting noise's variance common to all latent frames (see ``initial_noise``).
    """

    patch: TimeAware = "1x2"
    steps: int = 70
    time_shift: float = 24.0
    renorm: float = 2.0
    cfg: TimeAware = (20.0, (0.2, 0.0))
    motion: TimeAware = 6.0
    neg_motion: TimeAware = (2.0, (0.05, 6.0))
    shared_noise: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "patch", normalize_time_aware(self.patch, _as_patch_name, "patch schedule P"))
        object.__setattr__(self, "cfg", normalize_time_aware(self.cfg, _as_float("cfg"), "cfg"))
        object.__setattr__(self, "motion", normalize_time_aware(self.motion, _as_float("motion"), "motion"))
        object.__setattr__(
            self, "neg_motion", normalize_time_aware(self.neg_motion, _as_float("negMotion"), "negMotion")
        )
        V.check_steps(self.steps)
        time_shift, renorm = _as_float("ts")(self.time_shift), _as_float("renorm")(self.renorm)
        V.check_time_shift(time_shift)
        V.check_renorm(renorm)
        object.__setattr__(self, "time_shift", time_shift)
        object.__setattr__(self, "renorm", renorm)
        V.check_stages("cfg", [v for _, v in stages(self.cfg)], *V.GUIDANCE_RANGE)
        V.check_stages("motion", [v for _, v in stages(self.motion)], *V.MOTION_RANGE)
        V.check_stages("negative motion", [v for _, v in stages(self.neg_motion)], *V.MOTION_RANGE)
        shared = _as_float("sharedNoise")(self.shared_noise)
        V.check_shared_noise(shared)
        object.__setattr__(self, "shared_noise", shared)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "SampleConfig":
        """Read the release's dict format (keys P, step, ts, renorm, cfg, motion, negMotion; and sharedNoise)."""
        known = {"P": "patch", "step": "steps", "ts": "time_shift", "renorm": "renorm", "cfg": "cfg",
                 "motion": "motion", "negMotion": "neg_motion", "sharedNoise": "shared_noise"}
        unknown = sorted(set(d) - set(known) - set(known.values()))
        if unknown:
            raise ValueError(f"unknown sample_config keys {unknown}; allowed: {sorted(known)}")
        kwargs = {known.get(k, k): v for k, v in d.items()}
        return cls(**kwargs)

    def to_dict(self) -> Dict[str, Any]:
        """The release's dict format, JSON-ready (``sharedNoise`` only where it is not the release's 0)."""
        d = {"P": to_json_form(self.patch), "step": self.steps, "ts": self.time_shift, "renorm": self.renorm,
             "cfg": to_json_form(self.cfg), "motion": to_json_form(self.motion),
             "negMotion": to_json_form(self.neg_motion)}
        return {**d, "sharedNoise": self.shared_noise} if self.shared_noise else d

    def replace(self, **changes) -> "SampleConfig":
        d = asdict(self)
        d.update({k: v for k, v in changes.items() if v is not None})
        return SampleConfig(**d)

    def patch_sizes_used(self) -> List[PatchSize]:
        return [parse_patch_size(n) for n in dict.fromkeys(v for _, v in stages(self.patch))]


PRESETS: Dict[str, SampleConfig] = {
    "f24F96R960": SampleConfig("1x2", 70, 24.0, 2.0, (20.0, (0.2, 0.0)), 6.0, (2.0, (0.05, 6.0))),
    "f24F96R960-MultiScale": SampleConfig(_MULTI_960, 70, 24.0, 2.0, (20.0, (0.2, 0.0)), 6.0, (2.0, (0.05, 6.0))),
    "f16F64R512": SampleConfig("1x2", 70, 8.0, -1.0, (12.0, (0.4, 0.0)), 6.0, (2.0, (0.05, 6.0))),
    "f16F64R512-MultiScale": SampleConfig(_MULTI_512, 70, 8.0, -1.0, (12.0, (0.4, 0.0)), 6.0, (2.0, (0.05, 6.0))),
}


def get_preset(name: str) -> SampleConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    return PRESETS[name]


def resolve_sample_config(value: Union[None, str, Dict[str, Any], SampleConfig]) -> SampleConfig:
    """A preset name, a release-format dict (or its JSON text) or a SampleConfig."""
    if value is None:
        return PRESETS["f24F96R960-MultiScale"]
    if isinstance(value, SampleConfig):
        return value
    if isinstance(value, str):
        if value.strip().startswith("{"):
            return SampleConfig.from_dict(json.loads(value))
        return get_preset(value)
    if isinstance(value, dict):
        return SampleConfig.from_dict(value)
    raise ValueError(f"sample_config must be a preset name, a dict or a SampleConfig, not {type(value).__name__}")
