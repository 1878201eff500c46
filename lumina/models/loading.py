"""Loading the release's own checkpoint layout (consolidated weights + model_args.pth), safely.

The release ships no config: the architecture is read off the tensors. `model_args.pth` is a pickled
argparse.Namespace, so it is unpickled with weights_only=True and nothing but Namespace allowed.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Dict, Optional, Union

import torch

from lumina.errors import ModelFilesError
from lumina.models.transformer_nextdit import LuminaNextDiTVideo

WEIGHT_FILES = ("consolidated.00-of-01.safetensors", "consolidated.00-of-01.pth")
ARGS_FILE = "model_args.pth"
RELEASE_REPO_ID = "Alpha-VLLM/Lumina-Video-f24R960"


def load_model_args(path: Union[str, Path]) -> argparse.Namespace:
    """Unpickle model_args.pth allowing only argparse.Namespace (and plain values)."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            args = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a refusal
        raise ModelFilesError(
            f"{path}: refused to load model_args.pth: it must be a pickled argparse.Namespace with plain "
            f"values only ({str(err).splitlines()[0]})"
        ) from None
    if not isinstance(args, argparse.Namespace):
        raise ModelFilesError(f"{path}: expected an argparse.Namespace, found {type(args).__name__}")
    return args


def load_state_dict_file(path: Union[str, Path]) -> Dict[str, torch.Tensor]:
    """Read .safetensors or a tensors-only .pth, and strip torch.compile's `_orig_mod.` fragment."""
    path = str(path)
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        sd = load_file(path)
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001
            raise ModelFilesError(f"{path}: refused to load: not a tensors-only checkpoint ({err})") from None
    if not isinstance(sd, dict):
        raise ModelFilesError(f"{path}: expected a dict of tensors, found {type(sd).__name__}")
    return {k.replace("_orig_mod.", ""): v for k, v in sd.items()}


def infer_config(sd: Dict[str, torch.Tensor], args: Optional[argparse.Namespace] = None) -> dict:
    """Layer sizes from tensor shapes; scalar settings from model_args (release defaults otherwise)."""
    try:
        dim = sd["pad_token"].shape[0]
        n_layers = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"layers\.(\d+)\.", k)))
        n_heads = sd["layers.0.attention.gate"].shape[0]
        head_dim = dim // n_heads
        n_kv_heads = sd["layers.0.attention.wk.weight"].shape[0] // head_dim
        cap_feat_dim = sd["cap_embedder.0.weight"].shape[0]
        keys = sorted({k.split(".")[1] for k in sd if k.startswith("all_x_embedder.")})
        patch = [tuple(int(v) for v in key.split("-")) for key in keys]
        in_channels = sd[f"all_x_embedder.{keys[0]}.weight"].shape[1] // (patch[0][0] ** 2 * patch[0][1])
        ffn_dim = sd["layers.0.feed_forward.w1.weight"].shape[0]
    except (KeyError, ValueError, IndexError) as err:
        raise ModelFilesError(f"not a Lumina-Video Next-DiT checkpoint: cannot read its sizes ({err!r})") from None
    order = sorted(patch, key=lambda pf: (pf[0] * pf[0] * pf[1]))
    get = (lambda name, default: getattr(args, name, default)) if args is not None else (lambda n, d: d)
    return dict(
        dim=dim,
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        in_channels=in_channels,
        qk_norm="layers.0.attention.q_norm.weight" in sd,
        cap_feat_dim=cap_feat_dim,
        all_patch_size=[p for p, _ in order],
        all_f_patch_size=[f for _, f in order],
        rope_theta=float(get("rope_theta", 256.0)),
        t_scale=float(get("t_scale", 1000.0)),
        motion_scale=float(get("motion_scale", 20.0)),
        ffn_dim=ffn_dim,
    )


def resolve_release_files(path_or_repo_id: Union[str, Path]) -> Path:
    """A local directory as is; otherwise a Hub id fetched with huggingface_hub (HF_TOKEN honoured)."""
    local = Path(path_or_repo_id)
    if local.is_dir():
        return local
    repo_id = str(path_or_repo_id)
    if not re.match(r"^[\w.-]+/[\w.-]+$", repo_id):
        raise ModelFilesError(
            f"{repo_id!r} is neither a directory nor a Hub repository id (owner/name). Point it at a folder "
            f"holding {WEIGHT_FILES[0]} (or .pth) and {ARGS_FILE}."
        )
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(
                repo_id,
                allow_patterns=list(WEIGHT_FILES) + [ARGS_FILE],
                token=os.environ.get("HF_TOKEN"),
                etag_timeout=5,
            )
        )
    except Exception as err:  # noqa: BLE001 - offline, gated, missing: all need the same instructions
        raise ModelFilesError(
            f"could not fetch {repo_id!r} from the Hugging Face Hub ({type(err).__name__}). With no network, "
            f"download the repository elsewhere (`huggingface-cli download {repo_id} --local-dir DIR`), copy "
            f"DIR here and pass its path instead; gated repositories need HF_TOKEN set."
        ) from None


def load_official_transformer(
    path_or_repo_id: Union[str, Path] = RELEASE_REPO_ID,
    dtype: torch.dtype = torch.bfloat16,
    device: Union[str, torch.device] = "cpu",
) -> LuminaNextDiTVideo:
    """Build the transformer from a release directory or Hub id and load its weights strictly."""
    folder = resolve_release_files(path_or_repo_id)
    weights = next((folder / f for f in WEIGHT_FILES if (folder / f).exists()), None)
    if weights is None:
        raise ModelFilesError(f"{folder}: none of {', '.join(WEIGHT_FILES)} found")
    args = load_model_args(folder / ARGS_FILE) if (folder / ARGS_FILE).exists() else None
    sd = load_state_dict_file(weights)
    config = infer_config(sd, args)
    with torch.device("meta"):
        model = LuminaNextDiTVideo(**config)
    missing, unexpected = _key_mismatch(model, sd)
    if missing or unexpected:
        raise ModelFilesError(
            f"{weights}: weights do not match the inferred architecture; missing keys: {missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''}; unexpected keys: {unexpected[:10]}"
            f"{' ...' if len(unexpected) > 10 else ''}"
        )
    model.load_state_dict({k: v.to(dtype) for k, v in sd.items()}, strict=True, assign=True)
    return model.to(device=device).eval()


def _key_mismatch(model: torch.nn.Module, sd: Dict[str, torch.Tensor]):
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    wrong = sorted(f"{k} {tuple(sd[k].shape)} != {expected[k]}" for k in set(expected) & set(sd) if tuple(sd[k].shape) != expected[k])
    return missing + wrong, unexpected
