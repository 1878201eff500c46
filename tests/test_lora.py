"""LoRA, the diffusers way (issue 40, part 5): PeftAdapterMixin on the transformer, LuminaVideoLoraLoaderMixin on the
pipeline, `--lora PATH[:SCALE]` on the command line and the app's LoRA field.

LoRAs are made as diffusers' training scripts make them (a peft adapter, saved by `save_lora_weights` with its
LoraConfig) and checked against the same weights merged by hand, W + scale * (alpha / r) * B @ A, on a copy of the
transformer: fp32 latents of the small real pipeline of tests/builders.py.
"""

from __future__ import annotations

import copy
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model_state_dict
from safetensors.torch import save_file

from lumina import LuminaVideoPipeline
from lumina.cli import main
from lumina.errors import InvalidRequestError, ModelFilesError
from lumina.loras import Lora, check_lora, check_loras
from lumina.media import read_video
from lumina.pipelines.lora import as_transformer_keys
from lumina.syntax import parse_lora, parse_loras
from tests.builders import random_pipeline, random_transformer

FAST = dict(num_inference_steps=3, height=64, width=64, num_frames=8, output_type="latent")
TARGETS = ["wq", "wk", "wv", "wo", "w1", "w2", "w3"]  # attention and feed-forward Linear layers of every block
PROMPT = "a red circle moving right on a navy background"


def make_lora(transformer, folder: Path, seed: int = 0, r: int = 4, alpha: float = 8.0, targets=TARGETS):
    """A random LoRA for `transformer`, saved as diffusers does; returns (its file, its peft state dict, alpha/r)."""
    donor = copy.deepcopy(transformer)
    torch.manual_seed(seed)
    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, init_lora_weights=False)
    donor.add_adapter(config)
    state = {k: v * (0.2 if "lora_B" in k else 1.0) for k, v in get_peft_model_state_dict(donor).items()}
    LuminaVideoPipeline.save_lora_weights(folder, transformer_lora_layers=state,
                                          transformer_lora_adapter_metadata=config.to_dict())
    return folder / "pytorch_lora_weights.safetensors", state, alpha / r


def merged_by_hand(transformer, *loras):
    """A copy of `transformer` with each (state, alpha/r, scale) added into its weights: W += scale*(alpha/r)*B@A."""
    net = copy.deepcopy(transformer)
    modules = dict(net.named_modules())
    with torch.no_grad():
        for state, ratio, scale in loras:
            for key, a in state.items():
                if key.endswith(".lora_A.weight"):
                    name = key.removesuffix(".lora_A.weight")
                    modules[name].weight += scale * ratio * (state[name + ".lora_B.weight"] @ a)
    return net


def latents(pipe) -> torch.Tensor:
    pipe.set_progress_bar_config(disable=True)
    return pipe(PROMPT, generator=torch.Generator().manual_seed(0), **FAST).frames


def with_transformer(pipe, net) -> LuminaVideoPipeline:
    return LuminaVideoPipeline(transformer=net, vae=pipe.vae, text_encoder=pipe.text_encoder,
                               tokenizer=pipe.tokenizer, max_resolution=128)


def by_hand(pipe, base, *loras) -> torch.Tensor:
    """The latents of `pipe` with `base` (the transformer before any LoRA) merged by hand with `loras`."""
    return latents(with_transformer(pipe, merged_by_hand(base, *loras)))


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return float((a - b).abs().max()) <= 1e-5 * float(b.abs().max())


@pytest.fixture
def pipe():
    return random_pipeline()


@pytest.fixture(scope="module")
def base_latents():
    return latents(random_pipeline())


# ---------------------------------------------------------------- the loader: same video as the weights merged by hand

def test_a_saved_lora_loads_back_as_its_weights_merged_by_hand(pipe, base_latents, tmp_path):
    base = copy.deepcopy(pipe.transformer)
    file, state, ratio = make_lora(pipe.transformer, tmp_path)
    pipe.load_lora_weights(str(file), adapter_name="style")
    assert pipe.get_list_adapters() == {"transformer": ["style"]}
    with_lora = latents(pipe)
    assert float((with_lora - base_latents).abs().mean()) > 0.05  # the LoRA changes the video
    assert close(with_lora, by_hand(pipe, base, (state, ratio, 1.0)))

    pipe.set_adapters("style", 0.6)  # a weight: the same LoRA merged at 0.6
    assert close(latents(pipe), by_hand(pipe, base, (state, ratio, 0.6)))
    pipe.set_adapters("style", 0.0)  # scale 0: the base video
    assert torch.equal(latents(pipe), base_latents)

    pipe.set_adapters("style", 1.0)
    pipe.fuse_lora()  # merged into the weights by peft: the hand-merged video, now without LoRA layers at work
    assert pipe.num_fused_loras == 1 and close(latents(pipe), with_lora)
    pipe.unfuse_lora()  # the weights back to the base's (to rounding), the LoRA layers at work again
    assert pipe.num_fused_loras == 0 and close(latents(pipe), with_lora)
    torch.testing.assert_close(pipe.transformer.layers[0].attention.wq.base_layer.weight,
                               base.layers[0].attention.wq.weight)
    pipe.unload_lora_weights()  # the LoRA layers gone: the base model's modules and video
    assert not any("lora" in name for name, _ in pipe.transformer.named_modules())
    assert close(latents(pipe), base_latents)


def test_unloading_restores_the_base_video_exactly(pipe, base_latents, tmp_path):
    file, _, _ = make_lora(pipe.transformer, tmp_path)
    pipe.load_lora_weights(str(tmp_path))  # a folder: diffusers' pytorch_lora_weights.safetensors in it
    assert not torch.equal(latents(pipe), base_latents)
    pipe.unload_lora_weights()
    assert torch.equal(latents(pipe), base_latents)


def test_two_loras_with_weights_add_up(pipe, tmp_path):
    base = copy.deepcopy(pipe.transformer)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    file_a, state_a, ratio_a = make_lora(pipe.transformer, tmp_path / "a", seed=1)
    file_b, state_b, ratio_b = make_lora(pipe.transformer, tmp_path / "b", seed=2, r=2, alpha=2.0,
                                         targets=["wq", "wo", "adaLN_modulation.1"])
    pipe.load_lora_weights(str(file_a), adapter_name="a")
    pipe.load_lora_weights(str(file_b), adapter_name="b")
    pipe.set_adapters(["a", "b"], adapter_weights=[0.5, 1.5])
    assert close(latents(pipe), by_hand(pipe, base, (state_a, ratio_a, 0.5), (state_b, ratio_b, 1.5)))
    pipe.set_adapters(["b"], adapter_weights={"transformer": 0.5})  # per component, as diffusers takes it
    assert close(latents(pipe), by_hand(pipe, base, (state_b, ratio_b, 0.5)))
    with pytest.raises(InvalidRequestError, match="one number per adapter"):  # per-block dicts are UNet-only
        pipe.transformer.set_adapters(["a"], [{"layers.0": 0.5}])


def test_the_release_codes_key_form_loads_the_same(pipe, tmp_path):
    """Module names are the release's, so a LoRA written against the original code (`diffusion_model.` keys, no
    metadata: alpha = r) needs no conversion; peft's own prefix and bare module names read the same way."""
    _, state, _ = make_lora(pipe.transformer, tmp_path)
    key = "layers.1.feed_forward.w2.lora_B.weight"
    for prefix in ("transformer.", "diffusion_model.", "base_model.model.", ""):
        assert list(as_transformer_keys({prefix + key: state[key]})) == ["transformer." + key]
    save_file({f"diffusion_model.{k}": v for k, v in state.items()}, tmp_path / "original.safetensors")
    pipe.load_lora_weights(str(tmp_path / "original.safetensors"))
    assert close(latents(pipe), by_hand(pipe, random_pipeline().transformer, (state, 1.0, 1.0)))


def test_a_low_noise_expert_gets_a_lora_only_when_asked(pipe, base_latents, tmp_path):
    """diffusers' Wan 2.2 convention: a LoRA goes into `transformer`, or with load_into_transformer_2=True into the
    expert; steps at t >= expert_from_t are the expert's."""
    expert = random_transformer(32, seed=3)
    duo = LuminaVideoPipeline(transformer=pipe.transformer, vae=pipe.vae, text_encoder=pipe.text_encoder,
                              tokenizer=pipe.tokenizer, transformer_2=copy.deepcopy(expert), max_resolution=128,
                              expert_from_t=0.02)
    before = latents(duo)
    file, state, ratio = make_lora(expert, tmp_path)
    duo.load_lora_weights(str(file), adapter_name="detail", load_into_transformer_2=True)
    assert duo.get_list_adapters() == {"transformer_2": ["detail"]}
    by_hand = LuminaVideoPipeline(transformer=pipe.transformer, vae=pipe.vae, text_encoder=pipe.text_encoder,
                                  tokenizer=pipe.tokenizer, transformer_2=merged_by_hand(expert, (state, ratio, 1.0)),
                                  max_resolution=128, expert_from_t=0.02)
    with_lora = latents(duo)
    assert close(with_lora, latents(by_hand)) and not close(with_lora, before)
    duo.set_adapters("detail", {"transformer_2": 0.0})  # per component: the expert's LoRA at 0 is no LoRA
    assert torch.equal(latents(duo), before)
    duo.set_adapters("detail", {"transformer_2": 1.0})
    duo.use_loras([])  # the request-level switch manages `transformer` only: the expert keeps its LoRA
    assert duo.get_list_adapters() == {"transformer_2": ["detail"]} and torch.equal(latents(duo), with_lora)
    with pytest.raises(InvalidRequestError, match="no transformer_2"):
        pipe.load_lora_weights(str(file), load_into_transformer_2=True)


# ---------------------------------------------------------------- refused with a clear message, nothing left behind

def _renamed(state, old, new):
    return {k.replace(old, new): v for k, v in state.items()}


@pytest.mark.parametrize("case, words", [
    ("another size", "does not fit this model's sizes (made for another LuminaNextDiTVideo?): layers.0.attention.wk "
                     "has lora_A (4, 128) and lora_B (64, 4), this model needs (r, 64) and (32, r)"),
    ("another model", "is not for this model: 14 of the 14 layers it adapts are not Linear layers of "
                      "LuminaNextDiTVideo (e.g. layers.0.attn.to_q"),
    ("not a lora", "holds 1 tensor(s) that are not LoRA factors"),
    ("missing", "no such file or folder"),
])
def test_a_lora_that_does_not_fit_is_refused_naming_what_is_wrong(pipe, base_latents, tmp_path, case, words):
    _, state, _ = make_lora(pipe.transformer, tmp_path)
    file = tmp_path / "other.safetensors"
    if case == "another size":
        make_lora(random_transformer(32, dim=128), tmp_path / "big")
        file = tmp_path / "big" / "pytorch_lora_weights.safetensors"
    elif case == "another model":  # Lumina-Image 2.0's diffusers names for the same layers
        save_file(_renamed(_renamed(_renamed(state, "attention.wq", "attn.to_q"), "attention.", "attn."),
                           "feed_forward.w", "ff.linear_"), file)
    elif case == "not a lora":
        save_file({**state, "layers.0.attention.wq.weight": torch.zeros(64, 64)}, file)
    with pytest.raises(ModelFilesError) as err:
        pipe.load_lora_weights(str(file))
    assert words in str(err.value) and str(file) in str(err.value)
    assert not hasattr(pipe.transformer, "peft_config") and torch.equal(latents(pipe), base_latents)


def test_a_pickled_lora_is_never_unpickled(pipe, tmp_path):
    """A .bin LoRA whose unpickling would run code: refused by the loader and by the request check, and the code
    never runs."""
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    for name in ("pytorch_lora_weights.bin", "evil.safetensors"):
        (tmp_path / name).write_bytes(pickle.dumps({"transformer.layers.0.attention.wq.lora_A.weight": Payload()}))
    with pytest.raises(ModelFilesError, match="only safetensors LoRAs are read"):
        pipe.load_lora_weights(str(tmp_path), weight_name="pytorch_lora_weights.bin")
    with pytest.raises(ModelFilesError, match="pickled"):
        pipe.load_lora_weights(str(tmp_path / "evil.safetensors"))
    with pytest.raises(InvalidRequestError, match="only .safetensors files are read"):
        check_lora(Lora(str(tmp_path / "pytorch_lora_weights.bin")))
    with pytest.raises(InvalidRequestError, match="is not a safetensors file"):
        check_lora(Lora(str(tmp_path / "evil.safetensors")))
    assert not marker.exists()


# ---------------------------------------------------------------- the request side: PATH[:SCALE], checked once

def test_lora_text_is_parsed_once_at_the_edge(tmp_path):
    odd = tmp_path / "odd:2"  # a file whose name ends like a scale is still a file
    odd.write_bytes(b"")
    assert parse_lora("style.safetensors") == Lora("style.safetensors", 1.0)
    assert parse_lora(" dir/style.safetensors:0.8 ") == Lora("dir/style.safetensors", 0.8)
    assert parse_lora(str(odd)) == Lora(str(odd), 1.0) and parse_lora("C:\\loras\\x.safetensors").scale == 1.0
    assert parse_loras("a.safetensors:0.5\n\nb.safetensors") == (Lora("a.safetensors", 0.5), Lora("b.safetensors"))
    assert parse_loras(None) == () == parse_loras("") and parse_loras(["a:2"]) == (Lora("a", 2.0),)
    with pytest.raises(InvalidRequestError, match="'abc' after the last ':' is not a scale"):
        parse_lora("style.safetensors:abc")


def test_check_loras_resolves_hashes_and_refuses(pipe, tmp_path):
    file, _, _ = make_lora(pipe.transformer, tmp_path)
    checked = check_lora(Lora(str(tmp_path), 0.5))  # a folder: diffusers' file in it
    assert checked.path == str(file) and checked.scale == 0.5 and len(checked.sha256) == 16
    assert checked.adapter_name == f"lora_{checked.sha256}"
    copy_ = tmp_path / "copies" / "same.safetensors"
    copy_.parent.mkdir()
    shutil.copy(file, copy_)
    shutil.copy(file, copy_.parent / "again.safetensors")
    with pytest.raises(InvalidRequestError, match="holds 2 .safetensors files"):
        check_lora(Lora(str(copy_.parent)))
    with pytest.raises(InvalidRequestError, match=r"LoRA scale=9.0: must be a number in -4..4"):
        check_lora(Lora(str(file), 9))
    with pytest.raises(InvalidRequestError, match="is given twice"):  # the same file under another name
        check_loras([Lora(str(file)), Lora(str(copy_), 0.3)])
    save_file({"layers.0.attention.wq.weight": torch.zeros(2, 2)}, tmp_path / "model.safetensors")
    with pytest.raises(InvalidRequestError, match="is it a full model"):
        check_lora(Lora(str(tmp_path / "model.safetensors")))
    with pytest.raises(InvalidRequestError, match="no such file or folder"):
        check_lora(Lora(str(tmp_path / "nope.safetensors")))
    with pytest.raises(InvalidRequestError, match="give Lora.path, scale. values"):  # text is read at the edge
        check_loras([str(file)])


def test_use_loras_makes_exactly_the_requested_loras_active(pipe, base_latents, tmp_path):
    base = copy.deepcopy(pipe.transformer)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    file_a, state_a, ratio_a = make_lora(pipe.transformer, tmp_path / "a", seed=1)
    file_b, state_b, ratio_b = make_lora(pipe.transformer, tmp_path / "b", seed=2)
    a, b = check_loras([Lora(str(file_a), 0.5), Lora(str(file_b), 1.0)])
    pipe.use_loras([a])
    assert close(latents(pipe), by_hand(pipe, base, (state_a, ratio_a, 0.5)))
    pipe.use_loras([b, Lora(a.path, 2.0, a.sha256)])  # a kept (a new scale), b loaded
    assert sorted(pipe.transformer.peft_config) == sorted([a.adapter_name, b.adapter_name])
    assert close(latents(pipe), by_hand(pipe, base, (state_a, ratio_a, 2.0), (state_b, ratio_b, 1.0)))
    pipe.use_loras([b])  # a deleted
    assert list(pipe.transformer.peft_config) == [b.adapter_name]
    make_lora(random_transformer(32, dim=128), tmp_path / "big")
    big, = check_loras([Lora(str(tmp_path / "big"))])
    with pytest.raises(ModelFilesError, match="does not fit"):
        pipe.use_loras([b, big])  # a failure leaves the base model, not a half-applied set
    assert not getattr(pipe.transformer, "peft_config", None) and torch.equal(latents(pipe), base_latents)


# ---------------------------------------------------------------- the command line, batch files and the app

CLI_FAST = ["--resolution", "64x64", "--frames", "8", "--steps", "3", "--seed", "5"]


def test_generate_with_loras_records_them_in_the_sidecar(random_pipeline_dir, tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    lora_a = make_lora(random_transformer(32), tmp_path / "a", seed=1)[0]
    lora_b = make_lora(random_transformer(32), tmp_path / "b", seed=2)[0]
    plain, styled = tmp_path / "plain.mp4", tmp_path / "styled.mp4"
    generate = ["generate", "--model", str(random_pipeline_dir), "--prompt", PROMPT, *CLI_FAST]
    assert main([*generate, "--out", str(plain)]) == 0
    assert main([*generate, "--lora", f"{tmp_path / 'a'}:0.7", "--lora", str(lora_b), "--out", str(styled)]) == 0
    sidecar = json.loads(styled.with_suffix(".json").read_text())
    assert sidecar["request"]["loras"] == [
        {"path": str(lora_a), "scale": 0.7, "sha256": check_lora(Lora(str(lora_a))).sha256},
        {"path": str(lora_b), "scale": 1.0, "sha256": check_lora(Lora(str(lora_b))).sha256}]
    assert json.loads(plain.with_suffix(".json").read_text())["request"]["loras"] == []
    difference = np.abs(read_video(styled)[0].astype(float) - read_video(plain)[0]).mean()
    assert difference > 1.0  # the LoRA changed the video


@pytest.mark.parametrize("lora, words", [
    ("{tmp}/nope.safetensors:0.5", "no such file or folder"),
    ("{tmp}/lora:abc", "'abc' after the last ':' is not a scale"),
    ("{tmp}/lora:7", "LoRA scale=7.0: must be a number in -4..4"),
    ("{tmp}/weights.bin", "only .safetensors files are read"),
    ("{tmp}/other", "does not fit this model's sizes"),  # made for another size: refused once the model loads
])
def test_a_bad_lora_is_refused_with_exit_2_and_no_file_written(random_pipeline_dir, tmp_path, capsys, lora, words):
    make_lora(random_transformer(32), tmp_path / "lora")
    make_lora(random_transformer(32, dim=128), tmp_path / "other")
    (tmp_path / "weights.bin").write_bytes(b"not read")
    out = tmp_path / "clip.mp4"
    rc = main(["generate", "--model", str(random_pipeline_dir), "--prompt", PROMPT, *CLI_FAST,
               "--lora", lora.format(tmp=tmp_path), "--out", str(out)])
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # after the model's loading bars, where it loads
    assert rc == 2 and last.startswith("error: ") and words in last and "Traceback" not in err, err[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lora", "other", "weights.bin"]


def test_batch_lines_name_their_loras_and_are_checked_before_the_model_loads(tmp_path):
    from lumina.batch import read_prompts, run_batch
    from lumina.pipelines.defaults import ModelDefaults

    prompts = tmp_path / "p.txt"
    prompts.write_text('{"prompt": "x", "loras": ["a.safetensors:0.5", "b.safetensors"]}\n'
                       '{"prompt": "y", "loras": "c.safetensors:2"}\nplain\n')
    reqs = read_prompts(prompts, ModelDefaults())
    assert [r.loras for r in reqs] == [(Lora("a.safetensors", 0.5), Lora("b.safetensors")),
                                       (Lora("c.safetensors", 2.0),), ()]
    prompts.write_text("plain\n")  # `lumina batch --lora` gives the lines without one its LoRA, checked up front
    with pytest.raises(InvalidRequestError, match="prompt 1: LoRA 'nope.safetensors': no such file or folder"):
        run_batch(prompts, tmp_path / "out", model=str(tmp_path / "no-model"), loras=(Lora("nope.safetensors"),))
    assert not (tmp_path / "out").exists()


def test_the_app_takes_a_lora_on_local_runs_only(random_pipeline_dir, tmp_path, monkeypatch):
    pytest.importorskip("gradio")
    from lumina.app.endpoints import Studio
    from lumina.app.form import build_request, ui_defaults
    from lumina.app.ui.generate import FIELDS

    lora = make_lora(random_transformer(32), tmp_path / "lora")[0]
    studio = Studio(str(random_pipeline_dir), tmp_path / "outputs")
    _, sidecar, _, settings, _ = studio.generate(prompt=PROMPT, seed=3, steps=3, lora=f"{lora}:0.8")
    recorded, = json.loads(Path(sidecar).read_text())["request"]["loras"]
    assert recorded["path"] == str(lora) and recorded["scale"] == 0.8 and settings["ui"]["lora"] == f"{lora}:0.8"
    transformer = studio.holder.get()[0].transformer  # the served model runs with it, at its scale
    assert list(transformer.peft_config) == [f"lora_{recorded['sha256']}"]
    assert transformer.layers[0].attention.wq.scaling[f"lora_{recorded['sha256']}"] == 0.8 * 8 / 4

    defaults = studio.model_defaults()
    values = {**ui_defaults(defaults), "prompt": PROMPT, "lora": f"{lora}:0.8"}
    monkeypatch.setenv("SPACE_ID", "someone/lumina-video")
    with pytest.raises(InvalidRequestError, match="LoRAs are for local runs of the app"):
        build_request(values, defaults)
    field = FIELDS["lora"](ui_defaults(defaults), studio, label="LoRA")
    assert field.visible is False
