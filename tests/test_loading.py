"""Release checkpoint layout: formats, compile prefixes, strict keys, safe unpickling, offline Hub ids."""

import argparse
import json
import os
import shutil
import time

import pytest
import torch
from safetensors.torch import load_file, save_file

from lumina import load_official_transformer
from lumina.errors import ModelFilesError
from lumina.models.loading import load_model_args
from lumina.pipelines.memory import modes_for


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


def write_defaults(folder, defaults) -> None:
    """A pipeline config holding only `defaults` (what ModelDefaults.read needs; no weights)."""
    config = {"_class_name": "LuminaVideoPipeline", "max_resolution": defaults.max_resolution,
              "defaults": defaults.to_config()}
    (folder / "model_index.json").write_text(json.dumps(config))


def test_model_defaults_apply_tuned_sampling_to_their_own_preset_only(tmp_path):
    from lumina.generation import GenerationRequest, resolve_request
    from lumina.pipelines.defaults import ModelDefaults
    from lumina.sampling import get_preset

    d = ModelDefaults(preset="f24F96R960-MultiScale", steps=30, sampling={"ts": 4.0, "cfg": 6.0, "motion": -1.0})
    write_defaults(tmp_path, d)
    d = ModelDefaults.read(tmp_path)  # survives the JSON round trip
    own = d.sample_config()
    release = get_preset("f24F96R960-MultiScale")
    assert (own.steps, own.time_shift, own.cfg, own.motion) == (30, 4.0, 6.0, -1.0)
    assert own.patch == release.patch and own.neg_motion == release.neg_motion  # the rest is the preset's
    other = d.sample_config("f16F64R512")
    assert other.replace(steps=70) == get_preset("f16F64R512") and other.steps == 30
    # a request's own values still win over the tuned ones
    req = resolve_request(GenerationRequest(prompt="x", cfg=2.0, motion=8.0), d).config
    assert (req.cfg, req.motion, req.time_shift) == (2.0, 8.0, 4.0)


def test_multiscale_names_each_models_own_schedule(tmp_path):
    """"multiscale" is the model's multi-scale preset at its tuned switch times, wherever it is written."""
    from lumina.app.form import check_schedule_text, ui_defaults
    from lumina.generation import GenerationRequest, resolve_request
    from lumina.pipelines.defaults import ModelDefaults
    from lumina.sampling import get_preset
    from lumina.syntax import parse_schedule

    release_960 = get_preset("f24F96R960-MultiScale").patch
    assert ModelDefaults().named_schedules()["multiscale"] == release_960
    assert ModelDefaults(preset="f16F64R512").named_schedules()["multiscale"] == ("2x4", (0.075, "2x2"), (0.3, "1x2"))
    tuned = ModelDefaults(preset="f24F96R960-MultiScale", sampling={"P": ["2x4", [0.05, "2x2"], [0.15, "1x2"]]})
    write_defaults(tmp_path, tuned)
    tuned = ModelDefaults.read(tmp_path)
    want = ("2x4", (0.05, "2x2"), (0.15, "1x2"))
    assert tuned.named_schedules()["multiscale"] == want and tuned.sample_config().patch == want
    assert parse_schedule("multiscale", "patch", tuned.named_schedules()) == want  # the CLI's and batch files'
    assert resolve_request(GenerationRequest(prompt="x", schedule="multiscale"), tuned).config.patch == want
    assert resolve_request(GenerationRequest(prompt="x", schedule="multiscale"), ModelDefaults()).config.patch == release_960
    assert tuned.sample_config(patch="multiscale").patch == want  # the pipeline's patch_schedule="multiscale"
    assert ui_defaults(tuned)["schedule"] == "multiscale"
    assert "`2x4, 2x2@0.05, 1x2@0.15`" in check_schedule_text("multiscale", named=tuned.named_schedules())


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


FAST = dict(num_inference_steps=3, height=64, width=64, num_frames=8, output_type="latent")
TINY_8BIT_TOLERANCE = 0.08  # the random tiny pipeline samples at cfg 20, which amplifies 8-bit rounding: 5.4% measured


def _latent(pipe):
    return pipe("a red circle", generator=torch.Generator().manual_seed(0), **FAST).frames.cpu()


def test_8bit_load_quantizes_the_text_encoder_at_load_time(random_pipeline_dir):
    """transformers' bitsandbytes quantizer loads the text encoder as 8-bit (it runs on a CPU); diffusers' refuses
    to start without a GPU, so here the denoiser's layers are swapped after loading."""
    from lumina.pipelines.loading import load_pipeline
    from lumina.pipelines.memory import holds_8bit, quantization_devices, relative_difference

    ref = _latent(load_pipeline(str(random_pipeline_dir))[0])
    pipe, _ = load_pipeline(str(random_pipeline_dir), memory="8bit")
    assert pipe.text_encoder.is_loaded_in_8bit and holds_8bit(pipe.transformer)
    assert quantization_devices(pipe, "cpu") == []
    assert 0 < relative_difference(_latent(pipe), ref) < TINY_8BIT_TOLERANCE
    assert quantization_devices(pipe, "cpu") == []


def test_8bit_load_of_a_pipeline_without_text_encoder(tmp_path):
    """Nothing for a library quantizer on a CPU (diffusers refuses an empty mapping, which read as "its files could
    not be read"): it loads in full precision and the denoiser's layers are swapped; on CUDA only it is mapped."""
    from tests.builders import save_random_pipeline
    from lumina.pipelines.loading import load_pipeline
    from lumina.pipelines.memory import holds_8bit, load_time_8bit, quantization_devices, relative_difference

    present = ["transformer", "vae"]
    assert load_time_8bit("cpu", present) is None
    assert set(load_time_8bit("cuda", present).quant_mapping) == {"transformer"}
    folder = save_random_pipeline(tmp_path / "no-encoder", text_encoder=False)
    embeds, mask = torch.randn(2, 8, 32, generator=torch.Generator().manual_seed(0)), torch.ones(1, 8, dtype=torch.long)
    embeds = dict(prompt_embeds=embeds[:1], prompt_attention_mask=mask, negative_prompt_embeds=embeds[1:],
                  negative_prompt_attention_mask=mask)

    def latent(pipe):
        return pipe(**embeds, generator=torch.Generator().manual_seed(0), **FAST).frames

    ref = latent(load_pipeline(str(folder))[0])
    pipe, _ = load_pipeline(str(folder), memory="8bit")
    assert pipe.text_encoder is None and holds_8bit(pipe.transformer) and pipe.memory_plan.quantize_8bit
    assert quantization_devices(pipe, "cpu") == []
    assert 0 < relative_difference(latent(pipe), ref) < TINY_8BIT_TOLERANCE


def test_saved_8bit_pipeline_is_never_read_back_as_full_precision(random_pipeline_dir, tmp_path):
    """save_pretrained records the quantization in each model's config: the text encoder loads back identical (on
    any device), and the transformer goes back through diffusers' 8-bit loader, which needs a GPU (its round trip
    is tested on CUDA below), instead of reading int8 weights as floats."""
    from transformers import AutoModel

    from lumina import LuminaVideoPipeline
    from lumina.pipelines.loading import load_pipeline
    from lumina.pipelines.memory import FULL_PRECISION_MODULES

    pipe, _ = load_pipeline(str(random_pipeline_dir), memory="8bit")
    pipe.save_pretrained(str(tmp_path))
    encoder = AutoModel.from_pretrained(str(tmp_path / "text_encoder"))
    assert encoder.is_loaded_in_8bit
    ids = pipe.tokenizer(["a red circle"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(encoder(input_ids=ids).last_hidden_state, pipe.text_encoder(input_ids=ids).last_hidden_state)
    saved = json.loads((tmp_path / "transformer" / "config.json").read_text())["quantization_config"]
    assert saved["load_in_8bit"] and saved["llm_int8_skip_modules"] == list(FULL_PRECISION_MODULES)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="GPU"):
            LuminaVideoPipeline.from_pretrained(str(tmp_path))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="diffusers' bitsandbytes quantizer needs a CUDA GPU")
def test_saved_8bit_pipeline_loads_back_the_same_on_cuda(random_pipeline_dir, tmp_path):
    from lumina.pipelines.loading import load_pipeline
    from lumina.pipelines.memory import quantization_devices

    pipe, _ = load_pipeline(str(random_pipeline_dir), memory="8bit", device="cuda")
    assert pipe.transformer.is_loaded_in_8bit and pipe.text_encoder.is_loaded_in_8bit  # both quantized at load
    assert quantization_devices(pipe, "cuda") == []
    out = _latent(pipe)
    assert quantization_devices(pipe, "cuda") == []
    pipe.save_pretrained(str(tmp_path))
    back, _ = load_pipeline(str(tmp_path), memory="8bit", device="cuda")
    assert quantization_devices(back, "cuda") == []
    assert torch.equal(_latent(back), out)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("mode", [m for m in modes_for("cuda") if m not in ("auto", "none")])
def test_cuda_modes_match_none_and_keep_8bit_state_on_the_gpu(random_pipeline_dir, mode):
    from lumina.pipelines.loading import load_pipeline
    from lumina.pipelines.memory import mode_tolerance, quantization_devices, relative_difference

    ref = _latent(load_pipeline(str(random_pipeline_dir), device="cuda")[0])
    pipe, _ = load_pipeline(str(random_pipeline_dir), memory=mode, device="cuda")
    err = relative_difference(_latent(pipe), ref)
    assert quantization_devices(pipe, "cuda") == []
    assert err <= (TINY_8BIT_TOLERANCE if pipe.memory_plan.quantize_8bit else mode_tolerance(pipe.memory_plan)), err
