"""LoRA for LuminaVideoPipeline, the diffusers way: `LuminaVideoLoraLoaderMixin` is diffusers' LoraBaseMixin (as its
CogVideoX and Wan loaders are), so `load_lora_weights`, `set_adapters`, `fuse_lora`/`unfuse_lora`,
`unload_lora_weights`, `delete_adapters` and `save_lora_weights` are diffusers' and peft's own code.

What this adds: safetensors only (never unpickled); the key forms a Lumina-Video LoRA comes in (diffusers'
`transformer.` prefix, the release code's `diffusion_model.`, peft's `base_model.model.`, or none: the module names
are the release's); and a check that a LoRA fits the transformer before peft sees it, so that a LoRA made for another
model is refused naming what does not fit, instead of peft skipping unknown layers with a warning or failing deep
inside on a size mismatch.

The low-noise expert (`transformer_2`) follows diffusers' Wan 2.2 loader: a LoRA goes into `transformer`, or with
`load_into_transformer_2=True` into the expert instead (an expert is a model of its own, often of another size, so a
LoRA is made for one or the other). Steps the expert denoises run without a LoRA loaded only into `transformer`.
"""

from __future__ import annotations

import os
import warnings
from typing import Dict, List, Optional, Sequence

import torch
from diffusers.loaders.lora_base import LoraBaseMixin, _fetch_state_dict
from diffusers.loaders.lora_pipeline import _LOW_CPU_MEM_USAGE_DEFAULT_LORA
from diffusers.loaders.peft import _SET_ADAPTER_SCALE_FN_MAPPING
from safetensors import SafetensorError

from lumina.errors import InvalidRequestError, ModelFilesError
from lumina.loras import Lora

TRANSFORMER = "transformer"
KEY_PREFIXES = ("transformer.", "diffusion_model.", "base_model.model.")  # diffusers, the release code, peft
LORA_PARTS = ("lora_A.weight", "lora_B.weight", "lora_B.bias")
HUB_OPTIONS = ("cache_dir", "force_download", "proxies", "local_files_only", "token", "revision", "subfolder")
SHOWN = 3  # examples a message names


def _one_weight_per_adapter(model, weights: List) -> List:
    """set_adapters' weights for LuminaNextDiTVideo: one number per adapter. diffusers expands dict weights into
    per-block scales for UNets only (its _SET_ADAPTER_SCALE_FN_MAPPING); for other classes a dict would fail deep
    inside on UNet block names, so it is refused here."""
    if any(isinstance(w, dict) for w in weights):
        raise InvalidRequestError(f"LoRA weights {weights}: give one number per adapter; per-block weights (dicts) "
                                  f"are for UNets. Per component, pass the pipeline a dict such as "
                                  f"{{'transformer': 0.8, 'transformer_2': 0.5}}")
    return weights


_SET_ADAPTER_SCALE_FN_MAPPING["LuminaNextDiTVideo"] = _one_weight_per_adapter


def as_transformer_keys(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Keys in diffusers' form, `transformer.<module>.lora_A.weight`, from any of KEY_PREFIXES or none."""
    out = {}
    for key, value in state_dict.items():
        prefix = next((p for p in KEY_PREFIXES if key.startswith(p)), "")
        out[TRANSFORMER + "." + key[len(prefix):]] = value
    return out


def check_lora_fits(state_dict: Dict[str, torch.Tensor], transformer: torch.nn.Module,
                    source: str = "this LoRA") -> None:
    """Refuse, saying what is wrong, a LoRA (keys in diffusers' form) that is not made of lora_A/lora_B factors of
    Linear layers of `transformer` with their sizes."""
    factors: Dict[str, Dict[str, tuple]] = {}
    odd = []
    for key, value in state_dict.items():
        module, _, part = key.removeprefix(TRANSFORMER + ".").partition(".lora_")
        if "lora_" + part not in LORA_PARTS:
            odd.append(key)
        factors.setdefault(module, {})["lora_" + part] = tuple(value.shape)
    if not state_dict:
        raise ModelFilesError(f"{source} holds no weights")
    if odd:
        raise ModelFilesError(
            f"{source} holds {len(odd)} tensor(s) that are not LoRA factors this loader reads (e.g. "
            f"{', '.join(odd[:SHOWN])}); a LoRA holds MODULE.lora_A.weight and MODULE.lora_B.weight (peft's form)")
    modules = dict(transformer.named_modules())
    linear = {name: getattr(m, "base_layer", m) for name, m in modules.items()}
    linear = {name: m for name, m in linear.items() if isinstance(m, torch.nn.Linear)}
    unknown = [name for name in factors if name not in linear]
    kind = type(transformer).__name__
    if unknown:
        raise ModelFilesError(
            f"{source} is not for this model: {len(unknown)} of the {len(factors)} layers it adapts are not Linear "
            f"layers of {kind} (e.g. {', '.join(unknown[:SHOWN])}); this model's are named like "
            f"layers.0.attention.wq and layers.0.feed_forward.w1")
    wrong = []
    for name, parts in factors.items():
        layer = linear[name]
        a, b, bias = parts.get("lora_A.weight"), parts.get("lora_B.weight"), parts.get("lora_B.bias")
        fits = (a is not None and b is not None and len(a) == 2 and len(b) == 2 and a[1] == layer.in_features
                and b[0] == layer.out_features and a[0] == b[1] and bias in (None, (layer.out_features,)))
        if not fits:
            wrong.append(f"{name} has lora_A {a} and lora_B {b}, this model needs (r, {layer.in_features}) and "
                         f"({layer.out_features}, r)")
    if wrong:
        raise ModelFilesError(f"{source} does not fit this model's sizes (made for another {kind}?): "
                              f"{'; '.join(wrong[:SHOWN])}" + (f"; and {len(wrong) - SHOWN} more" if len(wrong) > SHOWN
                                                               else ""))


class LuminaVideoLoraLoaderMixin(LoraBaseMixin):
    """Load LoRA layers into LuminaNextDiTVideo (`transformer`, or the low-noise expert `transformer_2`)."""

    _lora_loadable_modules = ["transformer", "transformer_2"]
    transformer_name = TRANSFORMER

    @classmethod
    def lora_state_dict(cls, pretrained_model_name_or_path_or_dict, **kwargs):
        """A LoRA's weights with keys in diffusers' form (and, with `return_lora_metadata=True`, the adapter metadata
        diffusers saves with them): a dict, a .safetensors file, a folder holding one, or a Hub id. Only safetensors
        are read; anything else is refused with ModelFilesError."""
        return_lora_metadata = kwargs.pop("return_lora_metadata", False)
        if kwargs.pop("use_safetensors", True) is False:
            raise ModelFilesError("only safetensors LoRAs are read (a pickled checkpoint can run code when loaded)")
        source = pretrained_model_name_or_path_or_dict
        weight_name = kwargs.pop("weight_name", None)
        if weight_name is not None and not str(weight_name).endswith(".safetensors"):
            raise ModelFilesError(f"LoRA {source}: {weight_name} is not a .safetensors file; only safetensors LoRAs "
                                  f"are read (a pickled checkpoint can run code when loaded)")
        if isinstance(source, (str, os.PathLike)) and str(source).startswith((".", "/", "~")) \
                and not os.path.exists(os.path.expanduser(source)):
            raise ModelFilesError(f"LoRA {source}: no such file or folder")
        try:
            state_dict, metadata = _fetch_state_dict(
                pretrained_model_name_or_path_or_dict=source, weight_name=weight_name,
                use_safetensors=True, allow_pickle=False,
                user_agent={"file_type": "attn_procs_weights", "framework": "pytorch"},
                **{name: kwargs.pop(name, False if name == "force_download" else None) for name in HUB_OPTIONS})
        except (OSError, ValueError, SafetensorError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ModelFilesError(f"LoRA {source}: not readable as a safetensors LoRA ({first}); give a .safetensors "
                                  f"file or a folder with one (pickled .bin/.pt files are not read)") from None
        state_dict = as_transformer_keys(state_dict)
        return (state_dict, metadata) if return_lora_metadata else state_dict

    def load_lora_weights(self, pretrained_model_name_or_path_or_dict, adapter_name: Optional[str] = None,
                          hotswap: bool = False, **kwargs):
        """Load a LoRA into `transformer` (with `load_into_transformer_2=True`: into the low-noise expert) as
        adapter `adapter_name` (default: diffusers' default_N). Refused with ModelFilesError when it does not fit."""
        into = "transformer_2" if kwargs.pop("load_into_transformer_2", False) else TRANSFORMER
        transformer = getattr(self, into, None)
        if transformer is None:
            raise InvalidRequestError(f"this pipeline has no {into} to load a LoRA into")
        low_cpu_mem_usage = kwargs.pop("low_cpu_mem_usage", _LOW_CPU_MEM_USAGE_DEFAULT_LORA)
        source = pretrained_model_name_or_path_or_dict
        if isinstance(source, dict):
            source = source.copy()
        kwargs["return_lora_metadata"] = True
        state_dict, metadata = self.lora_state_dict(source, **kwargs)
        self.load_lora_into_transformer(
            state_dict, transformer=transformer, adapter_name=adapter_name, metadata=metadata, _pipeline=self,
            low_cpu_mem_usage=low_cpu_mem_usage, hotswap=hotswap,
            _source="this LoRA" if isinstance(source, dict) else f"LoRA {source}")

    @classmethod
    def load_lora_into_transformer(cls, state_dict, transformer, adapter_name=None, _pipeline=None,
                                   low_cpu_mem_usage=False, hotswap: bool = False, metadata=None,
                                   _source: str = "this LoRA"):
        """diffusers' load_lora_adapter, after check_lora_fits."""
        check_lora_fits(state_dict, transformer, _source)
        if adapter_name is not None and adapter_name in getattr(transformer, "peft_config", {}) and not hotswap:
            raise InvalidRequestError(f"adapter name {adapter_name!r} is taken; load under another name, or "
                                      f"delete_adapters({adapter_name!r}) first")
        transformer.load_lora_adapter(
            state_dict, network_alphas=None, adapter_name=adapter_name, metadata=metadata, _pipeline=_pipeline,
            low_cpu_mem_usage=low_cpu_mem_usage, hotswap=hotswap)

    @classmethod
    def save_lora_weights(cls, save_directory, transformer_lora_layers=None, is_main_process: bool = True,
                          weight_name: Optional[str] = None, save_function=None, safe_serialization: bool = True,
                          transformer_lora_adapter_metadata: Optional[dict] = None):
        """Write `transformer_lora_layers` (peft's state dict of the adapter) as diffusers does:
        SAVE_DIRECTORY/pytorch_lora_weights.safetensors, keys prefixed `transformer.`, with the adapter metadata
        (its LoraConfig: rank, alpha, targets) so that it loads back with the same scaling."""
        if not transformer_lora_layers:
            raise InvalidRequestError("give transformer_lora_layers (e.g. peft's get_peft_model_state_dict)")
        cls._save_lora_weights(
            save_directory=save_directory, lora_layers={TRANSFORMER: transformer_lora_layers},
            lora_metadata={TRANSFORMER: transformer_lora_adapter_metadata}, is_main_process=is_main_process,
            weight_name=weight_name, save_function=save_function, safe_serialization=safe_serialization)

    def fuse_lora(self, components: Sequence[str] = ("transformer", "transformer_2"), lora_scale: float = 1.0,
                  safe_fusing: bool = False, adapter_names: Optional[List[str]] = None, **kwargs):
        """Merge the active LoRAs into the weights (sampling as fast as without one); `unfuse_lora` takes them out."""
        super().fuse_lora(components=list(components), lora_scale=lora_scale, safe_fusing=safe_fusing,
                          adapter_names=adapter_names, **kwargs)

    def unfuse_lora(self, components: Sequence[str] = ("transformer", "transformer_2"), **kwargs):
        super().unfuse_lora(components=list(components), **kwargs)

    def use_loras(self, loras: Sequence[Lora]) -> None:
        """Make exactly `loras` (checked by lumina.loras.check_loras) the LoRAs of `transformer`, each at its scale:
        one already loaded is kept, others are loaded, any other adapter is deleted, and with none the LoRA layers
        are removed (the base model again). The expert is left as it is. A LoRA that fails to load leaves the base
        model."""
        net = self.transformer
        wanted = {lora.adapter_name: lora for lora in loras}
        loaded = set(getattr(net, "peft_config", {}))
        try:
            if not wanted:
                if loaded:
                    net.unload_lora()
                return
            if loaded - set(wanted):
                net.delete_adapters(sorted(loaded - set(wanted)))
            for name, lora in wanted.items():
                if name not in loaded:
                    with warnings.catch_warnings():  # peft's caution at a second adapter: several are the point here
                        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
                        self.load_lora_weights(lora.path, adapter_name=name)
            net.set_adapters(list(wanted), [lora.scale for lora in wanted.values()])
        except BaseException:
            if getattr(net, "peft_config", None):
                net.unload_lora()
            raise
