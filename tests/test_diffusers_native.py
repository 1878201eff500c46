"""The pipeline as a diffusers user meets it: loaded by its class or by DiffusionPipeline with the shipped code,
defaults from the model's own config, batches of prompts and videos, and the same video as the CLI and the app."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline

from lumina.errors import InvalidRequestError
from lumina.media import read_video, write_mp4
from lumina.pipelines import LuminaVideoPipeline
from lumina.pipelines.defaults import ModelDefaults
from lumina.pipelines.loading import TINY_DIR
from tests.builders import random_pipeline, save_random_pipeline

PROMPT = "a red circle moving right on a navy background"
SEED = 5


def seeded(seed: int = SEED) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_a_saved_pipeline_ships_its_code_and_its_defaults(tmp_path):
    folder = save_random_pipeline(tmp_path / "saved")
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline_lumina_video", "LuminaVideoPipeline"]
    assert index["transformer"] == ["transformer_nextdit", "LuminaNextDiTVideo"]
    assert (folder / "pipeline_lumina_video.py").is_file() and (folder / "transformer" / "transformer_nextdit.py").is_file()
    assert index["defaults"]["width"] == 64 and index["defaults"]["steps"] == 4
    with pytest.raises(ValueError, match="trust_remote_code=True"):  # diffusers' rule for code in a folder
        DiffusionPipeline.from_pretrained(str(folder))
    loaded = DiffusionPipeline.from_pretrained(str(folder), trust_remote_code=True)
    direct = LuminaVideoPipeline.from_pretrained(str(folder))  # its own class needs no remote code
    for pipe in (loaded, direct):
        assert type(pipe) is LuminaVideoPipeline
        assert pipe.defaults == ModelDefaults(width=64, height=64, frames=8, fps=8, max_resolution=128, steps=4)
    videos = [p("a red circle", generator=seeded(), output_type="latent").frames for p in (loaded, direct)]
    assert videos[0].shape == (1, 16, 2, 8, 8)  # 8 frames of 64x64 from the saved defaults
    torch.testing.assert_close(videos[0], videos[1], rtol=0, atol=0)


def test_num_videos_per_prompt_and_a_generator_per_video():
    pipe = random_pipeline()
    small = dict(height=64, width=64, num_frames=8, num_inference_steps=3, output_type="latent")
    batch = pipe(["a red circle", "a blue square"], num_videos_per_prompt=2,
                 generator=[seeded(s) for s in (1, 2, 3, 4)], **small).frames
    assert batch.shape[0] == 4
    alone = pipe("a blue square", generator=seeded(3), **small).frames  # video 3 is the 2nd prompt's first
    torch.testing.assert_close(batch[2:3], alone, rtol=1e-4, atol=1e-4)
    assert (batch[0] - batch[1]).abs().mean() > 0.1  # each video its own noise
    two = pipe("a red circle", num_videos_per_prompt=2, generator=seeded(1), **small).frames
    assert two.shape[0] == 2 and (two[0] - two[1]).abs().mean() > 0.1
    with pytest.raises(InvalidRequestError, match="2 generators for 4 videos"):
        pipe(["a", "b"], num_videos_per_prompt=2, generator=[seeded(1), seeded(2)], **small)


@pytest.fixture(scope="module")
def cli_video(tmp_path_factory):
    """The tiny model's video for PROMPT and SEED through the CLI, at the model's defaults."""
    out = tmp_path_factory.mktemp("cli") / "cli.mp4"
    proc = subprocess.run([sys.executable, "-m", "lumina", "generate", "--prompt", PROMPT, "--seed", str(SEED),
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def test_library_cli_and_app_give_the_same_video_for_a_seed(cli_video, tmp_path):
    """`pipe(prompt)` takes the tiny model's tuned sampling from its saved config, so both diffusers loaders, the
    CLI and the app's Generate defaults make one video per seed (compared after the same mp4 encoding)."""
    from lumina.app.form import build_request, ui_defaults
    from lumina.generation import generate_video
    from lumina.pipelines.loading import load_pipeline

    direct = LuminaVideoPipeline.from_pretrained(str(TINY_DIR))
    remote = DiffusionPipeline.from_pretrained(str(TINY_DIR), trust_remote_code=True)
    frames = [p(PROMPT, generator=seeded()).frames[0] for p in (direct, remote)]
    np.testing.assert_array_equal(frames[0], frames[1])
    defaults = direct.defaults
    assert frames[0].shape == (defaults.frames, defaults.height, defaults.width, 3)

    library_mp4 = tmp_path / "library.mp4"
    write_mp4(library_mp4, frames[0], defaults.fps)
    sidecar = json.loads(cli_video.with_suffix(".json").read_text())
    assert sidecar["sample_config"] == defaults.sample_config().to_dict()
    cli = read_video(cli_video)[0].astype(float)
    assert np.abs(read_video(library_mp4)[0] - cli).max() == 0

    pipe, model_defaults = load_pipeline("tiny")  # the app's model holder loads it this way
    job, _ = build_request({**ui_defaults(model_defaults, "tiny"), "prompt": PROMPT, "seed": SEED}, model_defaults)
    app_mp4 = tmp_path / "app.mp4"
    generate_video(pipe, job, app_mp4)
    assert np.abs(read_video(app_mp4)[0] - cli).max() == 0
    other = pipe(PROMPT, generator=seeded(SEED + 1)).frames[0]
    assert np.abs(other - frames[0]).mean() > 0.01  # another seed is another video: the check can fail


@pytest.mark.parametrize("doc, section", [("README.md", "## Python"), ("docs/usage.md", "## Python")])
def test_the_documented_python_runs(doc, section):
    """The Python a newcomer copies from the README and docs/usage.md runs as written, with the shapes it claims."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / doc).read_text()
    code = text.split(section, 1)[1].split("```python", 1)[1].split("```", 1)[0]
    scope: dict = {}
    exec(compile(code, f"{doc} {section}", "exec"), scope)
    if "videos" in scope:
        assert scope["videos"].shape == (4, 16, 128, 128, 3)
        assert scope["same"].defaults == scope["pipe"].defaults
    else:
        assert scope["video"].shape == (16, 128, 128, 3)
