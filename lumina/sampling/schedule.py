"""Time-aware settings, the release presets and SampleConfig (reference §3).

A *time-aware* setting is a constant or ``(v0, (t1, v1), (t2, v2), ...)``: v0 while t < t1, v1 from
t1 on, and so on, with t the flow time (0 = noise, 1 = data). JSON lists are accepted like tuples.
Text forms ("20, 0@0.2") are parsed at the edge, by lumina.syntax.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Tuple, Union

from lumina.patch import RELEASE_PATCH_SIZES, PatchSize, parse_patch_size
from lumina import validation as V
from lumina.errors import InvalidRequestError

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


def as_patch_name(v) -> str:
    """Patch sizes of the model family (1x2, 2x2, 2x4); a model may still support fewer."""
    if isinstance(v, str) and ("," in v or "@" in v):
        raise ValueError(f"patch size {v!r}: schedule text is read at the edge; pass the typed form, e.g. "
                         f"('2x4', (0.1, '1x2')), or lumina.syntax.parse_schedule")
    ps = parse_patch_size(v)
    if ps not in RELEASE_PATCH_SIZES:
        raise ValueError(f"patch size {ps.name} is not one of {', '.join(p.name for p in RELEASE_PATCH_SIZES)}")
    return ps.name


def _as_number(what: str):
    return lambda v: V.as_float(what, v)


# The release's multi-scale schedules (reference §3): switch times tuned per resolution.
_MULTI_960 = ("2x4", (0.03, "2x2"), (0.125, "1x2"))
_MULTI_512 = ("2x4", (0.075, "2x2"), (0.3, "1x2"))


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
        object.__setattr__(self, "patch", normalize_time_aware(self.patch, as_patch_name, "patch schedule P"))
        for name, what in (("cfg", "cfg"), ("motion", "motion"), ("neg_motion", "negative motion")):
            value = normalize_time_aware(getattr(self, name), _as_number(what), what)
            V.check_stages(what, [v for _, v in stages(value)], *V.RANGES[what])
            object.__setattr__(self, name, value)
        V.check_steps(self.steps)
        for name, what in (("time_shift", "time shift"), ("renorm", "renorm"), ("shared_noise", "shared noise")):
            value = V.as_float(what, getattr(self, name))
            V.check_stages(what, [value], *V.RANGES[what])
            object.__setattr__(self, name, value)

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
    if not isinstance(name, str) or name not in PRESETS:
        raise InvalidRequestError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    return PRESETS[name]
