"""Release checkpoint layout: formats, compile prefixes, strict keys, safe unpickling, offline Hub ids."""

import argparse
import os
import shutil
import time

import pytest
import torch
from safetensors.torch import load_file, save_file

from lumina import load_official_transformer
from lumina.errors import ModelFilesError
from lumina.models.loading import load_model_args


def _copy_as(golden_dir, tmp_path, transform=lambda sd: sd, fmt="safetensors"):
    sd = transform(load_file(golden_dir / "checkpoint" / "consolidated.00-of-01.safetensors"))
    if fmt == "safetensors":
        save_file(sd, tmp_path / "consolidated.00-of-01.safetensors")
    else:
        torch.save(sd, tmp_path / "consolidated.00-of-01.pth")
    shutil.copy(golden_dir / "checkpoint" / "model_args.pth", tmp_path / "model_args.pth")
    return tmp_path


def _same_weights(a, b):
    return all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_pth_and_orig_mod_keys_load_to_the_same_model(golden_dir, tmp_path):
    ref = load_official_transformer(golden_dir / "checkpoint", dtype=torch.float32)
    (tmp_path / "pth").mkdir()
    pth_dir = _copy_as(golden_dir, tmp_path / "pth", fmt="pth")
    from_pth = load_official_transformer(pth_dir, dtype=torch.float32)
    (tmp_path / "compiled").mkdir()
    comp_dir = _copy_as(golden_dir, tmp_path / "compiled", lambda sd: {"_orig_mod." + k: v for k, v in sd.items()})
    from_compiled = load_official_transformer(comp_dir, dtype=torch.float32)
    assert _same_weights(ref, from_pth) and _same_weights(ref, from_compiled)
    assert ref.config.n_kv_heads == 2 and ref.config.cap_feat_dim == 64 and ref.config.ffn_dim == 512
    assert from_compiled.config.all_patch_size == [2, 2, 4] and from_compiled.config.all_f_patch_size == [1, 2, 2]


def test_bf16_load(golden_dir):
    model = load_official_transformer(golden_dir / "checkpoint", dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16


def test_mismatched_keys_are_named(golden_dir, tmp_path):
    def damage(sd):
        sd = dict(sd)
        sd.pop("layers.1.attention.gate")
        sd["layers.0.attention.extra"] = torch.zeros(3)
        return sd

    _copy_as(golden_dir, tmp_path, damage)
    with pytest.raises(ModelFilesError, match=r"missing keys: \['layers.1.attention.gate'\].*unexpected keys: \['layers.0.attention.extra'\]"):
        load_official_transformer(tmp_path, dtype=torch.float32)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/lumina_pwned",))


def test_tampered_model_args_is_refused(tmp_path):
    path = tmp_path / "model_args.pth"
    torch.save(argparse.Namespace(model="x", evil=_Evil()), path)
    with pytest.raises(ModelFilesError, match="refused"):
        load_model_args(path)
    assert not os.path.exists("/tmp/lumina_pwned")


def test_namespace_model_args_loads(golden_dir):
    args = load_model_args(golden_dir / "checkpoint" / "model_args.pth")
    assert isinstance(args, argparse.Namespace) and args.rope_theta == 256.0


def test_hub_id_offline_fails_fast_with_instructions(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ModelFilesError, match="download"):
        load_official_transformer("Alpha-VLLM/Lumina-Video-f24R960")
    assert time.perf_counter() - start < 10


def test_not_a_checkpoint_directory(tmp_path):
    with pytest.raises(ModelFilesError, match="consolidated"):
        load_official_transformer(tmp_path)


def test_model_defaults_apply_tuned_sampling_to_their_own_preset_only(tmp_path):
    from lumina.generation import GenerationRequest, sample_config_for
    from lumina.pipelines.loading import ModelDefaults
    from lumina.sampling import get_preset

    d = ModelDefaults(preset="f24F96R960-MultiScale", steps=30, sampling={"ts": 4.0, "cfg": 6.0, "motion": -1.0})
    d.write(tmp_path)
    d = ModelDefaults.read(tmp_path)  # survives the JSON round trip
    own = d.sample_config()
    release = get_preset("f24F96R960-MultiScale")
    assert (own.steps, own.time_shift, own.cfg, own.motion) == (30, 4.0, 6.0, -1.0)
    assert own.patch == release.patch and own.neg_motion == release.neg_motion  # the rest is the preset's
    other = d.sample_config("f16F64R512")
    assert other.replace(steps=70) == get_preset("f16F64R512") and other.steps == 30
    # a request's own values still win over the tuned ones
    req = sample_config_for(GenerationRequest(prompt="x", cfg=2.0, motion=8.0), d)
    assert (req.cfg, req.motion, req.time_shift) == (2.0, 8.0, 4.0)


def test_multiscale_names_each_models_own_schedule(tmp_path):
    """"multiscale" is the model's multi-scale preset at its tuned switch times, wherever it is written."""
    from lumina.app.handlers import check_schedule_text, ui_defaults
    from lumina.generation import GenerationRequest, sample_config_for
    from lumina.pipelines.loading import ModelDefaults
    from lumina.sampling import get_preset

    release_960 = get_preset("f24F96R960-MultiScale").patch
    assert ModelDefaults().patch_shorthands()["multiscale"] == release_960
    assert ModelDefaults(preset="f16F64R512").patch_shorthands()["multiscale"] == ("2x4", (0.075, "2x2"), (0.3, "1x2"))
    tuned = ModelDefaults(preset="f24F96R960-MultiScale", sampling={"P": ["2x4", [0.05, "2x2"], [0.15, "1x2"]]})
    tuned.write(tmp_path)
    tuned = ModelDefaults.read(tmp_path)
    want = ("2x4", (0.05, "2x2"), (0.15, "1x2"))
    assert tuned.patch_shorthands()["multiscale"] == want and tuned.sample_config().patch == want
    assert sample_config_for(GenerationRequest(prompt="x", schedule="multiscale"), tuned).patch == want
    assert sample_config_for(GenerationRequest(prompt="x", schedule="multiscale"), ModelDefaults()).patch == release_960
    assert ui_defaults(tuned)["schedule"] == "multiscale"
    assert "`2x4, 2x2@0.05, 1x2@0.15`" in check_schedule_text("multiscale", shorthands=tuned.patch_shorthands())


def test_tiny_text_encoder_is_written_from_its_package_and_checked(tmp_path):
    """The repository keeps a sha256 reference instead of MiniLM's 45 MB; loading writes the exact bytes the tiny
    model was trained with from the installed package, and refuses a package that gives other weights."""
    import json

    from transformers import AutoModel

    from lumina.models.components import PACKAGED_WEIGHTS, materialize_packaged_weights
    from lumina.pipelines.loading import TINY_DIR

    (tmp_path / "text_encoder").mkdir()
    for name in ("config.json", PACKAGED_WEIGHTS):
        shutil.copy(TINY_DIR / "text_encoder" / name, tmp_path / "text_encoder" / name)
    materialize_packaged_weights(tmp_path)
    encoder = AutoModel.from_pretrained(str(tmp_path / "text_encoder"))
    assert sum(p.numel() for p in encoder.parameters()) > 22_000_000
    assert [p.name for p in (tmp_path / "text_encoder").iterdir() if p.name.endswith(".tmp")] == []

    marker = tmp_path / "text_encoder" / PACKAGED_WEIGHTS
    spec = json.loads(marker.read_text())
    marker.write_text(json.dumps({**spec, "sha256": "0" * 64}))
    (tmp_path / "text_encoder" / "model.safetensors").unlink()
    with pytest.raises(ModelFilesError, match="differ from the ones"):
        materialize_packaged_weights(tmp_path)
    assert not (tmp_path / "text_encoder" / "model.safetensors").exists()
