"""Batch generation: split across accelerate processes, resumable, each output with its sidecar."""

import json
import os
import subprocess
import sys

import pytest

from lumina.batch import output_name, read_prompts
from lumina.errors import InvalidRequestError
from lumina.pipelines.defaults import ModelDefaults


def test_prompt_file_formats(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text('# comment\na red circle\n\n{"prompt": "a blue square", "seed": 4, "motion": 2}\n')
    reqs = read_prompts(f, ModelDefaults())
    assert [r.prompt for r in reqs] == ["a red circle", "a blue square"] and reqs[1].seed == 4
    f.write_text('{"prompt": "x", "schedule": "multiscale", "cfg": "20, 0@0.2", "motion": [2, [0.5, 6]]}\n')
    typed = read_prompts(f, ModelDefaults(preset="f16F64R512"))[0]  # parsed at the edge, with the model's names
    assert (typed.schedule, typed.cfg, typed.motion) == (("2x4", (0.075, "2x2"), (0.3, "1x2")), (20.0, (0.2, 0.0)),
                                                         [2, [0.5, 6]])
    f.write_text('{"prompt": "x", "colour": 1}\n')
    with pytest.raises(InvalidRequestError, match="unknown keys"):
        read_prompts(f, ModelDefaults())
    assert output_name(3, "A red Circle!") == "00003-a-red-circle.mp4"


def test_every_line_and_the_folder_checked_before_the_model_loads(tmp_path):
    """The model folder has no weights: a refusal naming a line (or the folder) shows nothing was loaded."""
    import shutil

    from lumina.batch import run_batch
    from lumina.pipelines.loading import TINY_DIR

    model = tmp_path / "model"
    model.mkdir()
    shutil.copy(TINY_DIR / "model_index.json", model / "model_index.json")
    prompts = tmp_path / "p.txt"
    prompts.write_text('a red circle\n{"prompt": "a blue square", "frames": 0}\n')
    with pytest.raises(InvalidRequestError, match=r"p.txt: prompt 2: frames=0"):
        run_batch(prompts, tmp_path / "out", model=str(model), device="cpu")
    prompts.write_text('{"prompt": "a blue square", "cfg": "4, nan@0.5"}\n')
    with pytest.raises(InvalidRequestError, match=r"p.txt:1: cfg=nan"):
        run_batch(prompts, tmp_path / "out", model=str(model), device="cpu")
    # every line is checked before any video is made: a later line's mistake stops the first line's video too
    for line, words in [('{"prompt": "x", "preset": ["a"]}', r"prompt 2: unknown preset \['a'\]; presets: f24F96R960"),
                        ('{"prompt": "x", "audio": true}', r'prompt 2: "audio": true is not available in a batch'),
                        ('{"prompt": "x", "audio": "yes"}', r"prompt 2: audio='yes': must be true or false"),
                        ('{"prompt": "x", "negative_prompt": "%s"}' % ("n" * 4001), "prompt 2: the negative prompt has 4001")]:
        prompts.write_text(f"a red circle\n{line}\n")
        with pytest.raises(InvalidRequestError, match=words):
            run_batch(prompts, tmp_path / "out", model=str(model), device="cpu")
    prompts.write_text("a red circle\n")
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(InvalidRequestError, match="is a file, not a folder"):
        run_batch(prompts, tmp_path / "taken", model=str(model), device="cpu")
    assert not (tmp_path / "out").exists()


def test_accelerate_two_processes_then_resume(random_pipeline_dir, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\na green star\na blue square\n")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "lumina", "batch", str(prompts), "--out", str(out),
           "--model", str(random_pipeline_dir), "--seed", "10"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # two CPU processes over gloo
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[process 0]" in proc.stdout and "[process 1]" in proc.stdout
    videos = sorted(out.glob("*.mp4"))
    assert len(videos) == 3
    seeds = [json.loads(v.with_suffix(".json").read_text())["request"]["seed"] for v in videos]
    assert seeds == [10, 11, 12]
    mtimes = [v.stat().st_mtime_ns for v in videos]
    again = subprocess.run([sys.executable, "-m", "lumina", "batch", str(prompts), "--out", str(out), "--model",
                            str(random_pipeline_dir)], capture_output=True, text=True, timeout=200)
    assert again.returncode == 0 and "0 new videos" in again.stdout
    assert [v.stat().st_mtime_ns for v in videos] == mtimes
