"""What a model was made for (size, length, frame rate, sampling), kept in its pipeline config (model_index.json),
so that `pipe(prompt)`, the CLI and the app start from the same settings and give the same video for a seed."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

from lumina.errors import InvalidRequestError, ModelFilesError
from lumina.sampling.schedule import SampleConfig, TimeAware, get_preset
from lumina.settings import SETTINGS

# Patch schedules every model may name; "multiscale" is filled per model (ModelDefaults.named_schedules).
SINGLE_SCALES = ("1x2", "2x2", "2x4")
CONFIG_KEY = "defaults"
TINY_DIR = SETTINGS.assets / "lumina-video-tiny"
# The components of a LuminaVideoPipeline folder and the libraries their classes may come from (the shipped code
# files map back to this package's modules; the folder's own code never runs).
COMPONENTS = ("transformer", "transformer_2", "vae", "text_encoder", "tokenizer")
LIBRARIES = ("diffusers", "transformers", "pipeline_lumina_video", "transformer_nextdit")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


@dataclass(frozen=True)
class ModelDefaults:
    """A model's defaults; the release's unless its config says otherwise. ``sampling`` holds release-format
    overrides (ts, cfg, negMotion, P, ...) of its own preset, the settings a small model was tuned for."""

    width: int = 1248
    height: int = 704
    frames: int = 96
    fps: int = 24
    preset: str = "f24F96R960-MultiScale"
    max_resolution: int = 960
    steps: Optional[int] = None
    sampling: Optional[Dict[str, Any]] = None
    mag_ratios: Optional[List[float]] = None  # MagCache's, measured on this checkpoint (lumina.cache)

    def sample_config(self, preset: Union[None, str, Mapping[str, Any], SampleConfig] = None,
                      **overrides) -> SampleConfig:
        """The sampling of one run: `preset` (default: this model's own, with its tuning; another preset name keeps
        the release's settings; a release-format dict or a SampleConfig as given), then `overrides` (SampleConfig
        fields, typed; None keeps the preset's). A patch schedule may be one of `named_schedules()`."""
        if isinstance(preset, SampleConfig):
            base = preset
        elif isinstance(preset, Mapping):
            base = SampleConfig.from_dict(dict(preset))
        else:
            name = preset or self.preset
            base = get_preset(name)
            if self.sampling and name == self.preset:
                base = SampleConfig.from_dict({**base.to_dict(), **self.sampling})
            base = base.replace(steps=self.steps)
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if not overrides:
            return base  # a resolved config passes through as it is, not checked again
        patch = overrides.get("patch")
        if isinstance(patch, str):
            overrides["patch"] = self.named_schedules().get(patch.strip().lower(), patch)
        return base.replace(**overrides)

    def named_schedules(self) -> Dict[str, TimeAware]:
        """Patch schedules by name: the single scales, and "multiscale", this model's multi-scale preset's
        schedule at the switch times it was tuned for (the release tunes them per resolution: 960 and 512 differ)."""
        name = self.preset if self.preset.endswith("-MultiScale") else f"{self.preset}-MultiScale"
        return {**{s: s for s in SINGLE_SCALES}, "multiscale": self.sample_config(name).patch}

    def to_config(self) -> Dict[str, Any]:
        """The `defaults` entry of the pipeline config (max_resolution is a config entry of its own; unset optional
        entries are left out)."""
        return {k: v for k, v in asdict(self).items() if k != "max_resolution" and not (k == "mag_ratios" and v is None)}

    @classmethod
    def from_config(cls, entry: Optional[Mapping[str, Any]], max_resolution: int) -> "ModelDefaults":
        """From a pipeline config's entries (unknown keys refused). Whether they make a valid run is checked where they
        enter (`read`, the pipeline's constructor and `set_defaults`), not on every use."""
        known = {f.name for f in fields(cls)} - {"max_resolution"}
        entry = dict(entry or {})
        unknown = sorted(set(entry) - known)
        if unknown:
            raise InvalidRequestError(f"unknown model defaults {unknown}; allowed: {sorted(known)}")
        return cls(**entry, max_resolution=int(max_resolution))

    @classmethod
    def read(cls, folder: Path) -> "ModelDefaults":
        """A saved pipeline's defaults, from its model_index.json (checked by `read_model_index`), without loading
        any weights."""
        path = Path(folder) / "model_index.json"
        config = read_model_index(folder)
        try:
            defaults = cls.from_config(config.get(CONFIG_KEY), config.get("max_resolution", cls.max_resolution))
            defaults.sample_config()
            return defaults
        except (TypeError, ValueError) as err:
            raise ModelFilesError(f"{path}: not a valid pipeline config ({err})") from None


def model_folder(model: str) -> Path:
    """The local folder MODEL names ("tiny": the bundled one); a Hub id gives a path that does not exist."""
    if model == "tiny":
        if not (TINY_DIR / "model_index.json").exists():
            raise ModelFilesError(
                f"the bundled tiny model is missing from {TINY_DIR}; regenerate it with "
                f"`python -m lumina_research.train all` or pass --model DIR"
            )
        return TINY_DIR
    return Path(model)


def read_defaults(model: str) -> ModelDefaults:
    """MODEL's defaults without loading any weights (a diffusers folder's model_index.json, else the release's),
    so that a request, and the folder's layout, are checked before the model loads."""
    folder = model_folder(model)
    return ModelDefaults.read(folder) if (folder / "model_index.json").exists() else ModelDefaults()


def _malformed(path: Path, why: str) -> ModelFilesError:
    return ModelFilesError(f"{path}: not a valid pipeline config ({why})")


def read_model_index(folder) -> Dict[str, Any]:
    """A diffusers folder's model_index.json, checked before any library reads it: a JSON object (any depth of
    nesting refused in one line), each component it names a [library, class] pair from diffusers, transformers or
    this package's shipped code, and no component whose only weights are a pickle (this
    project never unpickles model files; safetensors are loaded instead)."""
    folder = Path(folder)
    path = folder / "model_index.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        why = "nested too deeply" if isinstance(err, RecursionError) else f"{type(err).__name__}: {err}"
        raise _malformed(path, why) from None
    if not isinstance(config, dict):
        raise _malformed(path, f"a JSON object naming the components is expected, not a {type(config).__name__}")
    for name in COMPONENTS:
        entry = config.get(name, [None, None])
        if entry == [None, None]:
            continue
        if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(e, str) for e in entry)
                and (entry[0] in LIBRARIES or entry[0].startswith("lumina."))):
            raise _malformed(path, f"{name!r} is {json.dumps(entry)[:80]}; a component is a pair "
                                   f"[library, class] with the library one of {', '.join(LIBRARIES)}, "
                                   f"e.g. [\"diffusers\", \"AutoencoderKLCogVideoX\"]")
        part = folder / name
        pickles = sorted(p.name for p in part.glob("*") if p.suffix.lower() in PICKLE_SUFFIXES) if part.is_dir() else []
        if pickles and not any(part.glob("*.safetensors")):
            raise ModelFilesError(
                f"{part / pickles[0]}: {name}'s weights are a pickle file, which this project never loads (unpickling "
                f"can run code); save them as .safetensors (safetensors.torch.save_file) and remove the pickle")
    return config
