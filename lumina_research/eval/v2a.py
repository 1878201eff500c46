"""V2A sync bench: do generated sounds hit when objects bounce, and sing the colour's pitch?

    python -m lumina_research.eval v2a [--set in-world|out-of-world] [--model assets/lumina-v2a-tiny] [--clips 24]
                                       [--fps 24] [--out docs/v2abench]

In-world (the default set): on held-out world clips with wall bounces (single bouncing object by default) the world's analyzer reads
bounce times and the object's colour from the *pixels*; the audio is then scored:

* onsets: spectral-flux onsets of the audio (lumina.v2a.audio.detect_onsets); for every bounce the
  nearest onset's offset; "within 1 frame" = share of bounces with an onset within 1 / fps; mean
  |offset| in ms; onset precision = share of onsets (after the first frame) within 1 / fps of a bounce,
  false onsets per second = the other onsets over the clips' duration;
* pitch: the dominant pitch class of the audio versus the pitch class of COLOR_PITCH_HZ[analyzer colour]
  of the main object (highest coverage; with k objects the colour's class must be among the top k).

Rows: the ground-truth soundtrack (render_sound: the metric's upper bound, should be ~100%), the
ground truth of another clip (shuffled: the metric's floor), the model's audio for the clip, and the
model's audio generated for a different clip's video (shuffled baseline).  Writes v2abench.json and
v2abench.md under --out and prints the table.

Out-of-world (``--set out-of-world``): clips of lumina_research.eval.outworld, a generator written apart from the
training renderers (other sprites, gravity with decaying bounces, colliding balls, the plain bouncing ball on a
flat background, 9-29.97 fps), scored on the same onset numbers against their exact contact times (no pitch:
their sprites have no colour rule); the reference soundtrack is a knock at each contact.  Writes
v2abench-out-of-world.json/.md.  Never tune anything on this set.

Out-of-world tuning (``--set out-of-world-tuning``): clips of lumina_research.eval.devworld, a third generator written
apart from the others (spinning polygons, floors, colliding rows, 8-30 fps), scored the same way: the set where a
choice about unfamiliar videos is made, so that the out-of-world set stays out of it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from lumina.media import write_json, write_text
from lumina.v2a.audio import PITCH_CLASSES, SAMPLE_RATE, detect_onsets, dominant_pitch_classes, pitch_class_of

HELD_OUT_SEED = 7_000_000
IN_WORLD, OUT_OF_WORLD, SCENES, TUNING = "in-world", "out-of-world", "scenes", "out-of-world-tuning"
SCENES_SEED = 8_000_000


def world_eval_clips(n: int, fps: float = 24.0, seconds: float = 4.0, size: int = 128, n_objects: int = 1,
                     seed0: int = HELD_OUT_SEED, max_tries: int = 4) -> List[Dict]:
    """Held-out bouncing clips whose bounces the analyzer finds: frames, fps, truth audio, analysis."""
    from lumina_research.train.v2a_data import world_clip
    from lumina_research.world.analyze import analyze

    clips: List[Dict] = []
    seed = seed0
    while len(clips) < n and seed < seed0 + n * max_tries:
        clip, wave = world_clip(seed, fps, seconds, size, n_objects=n_objects, motion="bouncing")
        seed += 1
        analysis = analyze(clip.frames, fps)
        bounces = sorted(t for o in analysis.objects for t in o.bounce_times)
        if not analysis.objects or not bounces:
            continue
        main = max(analysis.objects, key=lambda o: (o.coverage, o.size == "large"))
        clips.append(dict(seed=seed - 1, frames=clip.frames, fps=float(fps), caption=clip.caption, truth_audio=wave,
                          bounces=bounces, colors=[o.color for o in analysis.objects], main_color=main.color,
                          truth_colors=[o.color for o in clip.truth.objects],
                          truth_bounces=[t for t, _ in clip.truth.bounces]))
    return clips


def score_contacts(audio: np.ndarray, contacts: Sequence[float], fps: float, sample_rate: int = SAMPLE_RATE) -> Dict:
    """Onset numbers of one audio against one clip's contact (bounce) times (its onsets: detect_onsets)."""
    return score_onsets(detect_onsets(audio, sample_rate), contacts, fps, len(audio) / sample_rate)


def score_onsets(onsets: np.ndarray, contacts: Sequence[float], fps: float, seconds: float) -> Dict:
    """Onset times against one clip's contact times.

    For every contact the nearest onset's offset; a contact is met when that is within 1 / fps.  Onsets after the
    first frame are "late onsets"; those within 1 / fps of a contact are precise, the others false.
    """
    tol = 1.0 / fps
    onsets = np.asarray(onsets, dtype=np.float64)
    contacts = np.asarray(contacts, dtype=np.float64)
    offsets = []
    for b in contacts:
        offsets.append(float(onsets[np.argmin(np.abs(onsets - b))] - b) if len(onsets) else float("inf"))
    offsets_arr = np.asarray(offsets)
    hits = np.abs(offsets_arr) <= tol
    late = onsets[onsets > tol]
    precise = [bool(np.any(np.abs(contacts - o) <= tol)) for o in late]
    finite = offsets_arr[np.isfinite(offsets_arr)]
    return {
        "bounces": len(contacts), "onsets": int(len(onsets)), "hits": int(hits.sum()),
        "offsets_ms": [round(o * 1000, 1) if np.isfinite(o) else None for o in offsets_arr],
        "mean_abs_offset_ms": float(np.mean(np.abs(finite)) * 1000) if len(finite) else None,
        "mean_offset_hit_ms": float(np.mean(offsets_arr[hits]) * 1000) if hits.any() else None,
        "precise_onsets": int(sum(precise)), "late_onsets": len(late), "false_onsets": len(late) - int(sum(precise)),
        "seconds": float(seconds),
    }


def score_audio(audio: np.ndarray, bounces: Sequence[float], fps: float, main_color: Optional[str], n_colors: int = 1,
                sample_rate: int = SAMPLE_RATE) -> Dict:
    """Onset numbers (score_contacts) and, for a world clip (main_color given), the pitch of its main object."""
    from lumina_research.world.sound import COLOR_PITCH_HZ

    row = score_contacts(audio, bounces, fps, sample_rate)
    if main_color is None:
        return row
    expected = pitch_class_of(COLOR_PITCH_HZ[main_color])
    top = dominant_pitch_classes(audio, k=max(1, n_colors), sample_rate=sample_rate)
    row.update(expected_pitch=PITCH_CLASSES[expected], dominant_pitch=[PITCH_CLASSES[i] for i in top],
               pitch_correct=expected in top if n_colors > 1 else (bool(top) and top[0] == expected))
    return row


def summarize(rows: Sequence[Dict]) -> Dict:
    bounces = sum(r["bounces"] for r in rows)
    hits = sum(r["hits"] for r in rows)
    late = sum(r["late_onsets"] for r in rows)
    seconds = sum(r["seconds"] for r in rows)
    offs = [abs(o) for r in rows for o in r["offsets_ms"] if o is not None]
    hit_offs = [o for r in rows for o in r["offsets_ms"] if o is not None and abs(o) <= 1000.0 / r["fps"]]
    pitched = [r["pitch_correct"] for r in rows if "pitch_correct" in r]
    return {
        "clips": len(rows), "bounces": bounces,
        "onset_within_frame": hits / bounces if bounces else 0.0,
        "mean_abs_offset_ms": float(np.mean(offs)) if offs else None,
        "median_abs_offset_ms": float(np.median(offs)) if offs else None,
        "mean_offset_of_hits_ms": float(np.mean(hit_offs)) if hit_offs else None,
        "onset_precision": sum(r["precise_onsets"] for r in rows) / late if late else 0.0,
        "false_onsets_per_s": sum(r["false_onsets"] for r in rows) / seconds if seconds else 0.0,
        "pitch_correct": float(np.mean(pitched)) if pitched else None,
    }


DETECTOR_ROW = "contact detector alone (its times, no audio)"


def evaluate(clips: Sequence[Dict], generate=None, shuffle_shift: int = 1, reconstruct=None,
             truth_label: str = "ground truth (render_sound)", detect=None) -> Dict:
    """Score truth, shuffled truth and (if `generate(frames, fps, caption) -> audio`) model audio.

    A clip is a dict with frames, fps, seed, truth_audio, bounces (contact times) and, for world clips, main_color
    and colors (pitch is scored then).  ``reconstruct(wave) -> wave`` (the model's VAE + vocoder round trip) adds
    the decoding path's upper bound; ``detect(frames, fps) -> times`` (a model's contact detector) a row for its
    contact times themselves, the timing the model's hits are given.
    """
    n = len(clips)
    sources: Dict[str, List[Dict]] = {truth_label: [], "ground truth, shuffled": []}
    if reconstruct is not None:
        sources["ground truth through VAE + vocoder"] = []
    model_audio: List[np.ndarray] = []
    gen_seconds: List[float] = []
    if generate is not None:
        for c in clips:
            t0 = time.perf_counter()
            model_audio.append(np.asarray(generate(c["frames"], c["fps"], c.get("prompt"))))
            gen_seconds.append(time.perf_counter() - t0)
        sources["model"] = []
        sources["model, shuffled video"] = []
    for i, c in enumerate(clips):
        j = (i + shuffle_shift) % n
        if n > 1 and j == i:
            j = (i + 1) % n
        args = (c["bounces"], c["fps"], c.get("main_color"), len(c.get("colors", ())))
        audios = {truth_label: c["truth_audio"], "ground truth, shuffled": clips[j]["truth_audio"]}
        if reconstruct is not None:
            audios["ground truth through VAE + vocoder"] = reconstruct(c["truth_audio"])
        if generate is not None:
            audios["model"] = model_audio[i]
            audios["model, shuffled video"] = model_audio[j]
        for name, audio in audios.items():
            row = score_audio(audio, *args)
            row.update(seed=c["seed"], fps=c["fps"], source_seed=clips[j]["seed"] if "shuffled" in name else c["seed"])
            sources[name].append(row)
        if detect is not None:
            row = score_onsets(detect(c["frames"], c["fps"]), c["bounces"], c["fps"], len(c["frames"]) / c["fps"])
            sources.setdefault(DETECTOR_ROW, []).append({**row, "seed": c["seed"], "fps": c["fps"], "source_seed": c["seed"]})
    result = {"summary": {k: summarize(v) for k, v in sources.items()}, "rows": sources}
    if gen_seconds:
        seconds = [len(c["frames"]) / c["fps"] for c in clips]
        result["generation"] = {"mean_seconds": float(np.mean(gen_seconds)), "max_seconds": float(np.max(gen_seconds)),
                                "clip_seconds": float(np.mean(seconds))}
    return result


def _or_default(x) -> str:
    return "the model's default" if x is None else f"{x:g}"


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def markdown(result: Dict) -> str:
    meta = result.get("meta", {})
    if meta.get("set") == SCENES:
        title = (f"V2A sync bench, held-out varied scenes: {meta.get('clips', '?')} clips of "
                 f"lumina_research.world.scenes (the training distribution), {meta.get('seconds', '?')} s; "
                 f"model `{meta.get('model', '-')}`")
    elif meta.get("set") == TUNING:
        title = (f"V2A sync bench, out-of-world tuning set: {meta.get('clips', '?')} clips of "
                 f"lumina_research.eval.devworld ({meta.get('kinds', '?')}), 8-30 fps, {meta.get('seconds', '?')} s; "
                 f"model `{meta.get('model', '-')}`")
    elif meta.get("set") == OUT_OF_WORLD:
        title = (f"V2A sync bench, out of world: {meta.get('clips', '?')} held-out clips of lumina_research.eval.outworld "
                 f"({meta.get('kinds', '?')}), 9-29.97 fps, {meta.get('seconds', '?')} s; model `{meta.get('model', '-')}`")
    else:
        title = (f"V2A sync bench: {meta.get('clips', '?')} held-out world clips, {meta.get('fps', '?')} fps, "
                 f"{meta.get('seconds', '?')} s, {meta.get('objects', 1)} bouncing object(s); model `{meta.get('model', '-')}`")
    lines = [
        title, "",
        "| audio | clips | contacts | onset within 1 frame | mean abs offset (ms) | onset precision | false onsets / s "
        "| pitch correct |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in result["summary"].items():
        off = "-" if s["mean_abs_offset_ms"] is None else f"{s['mean_abs_offset_ms']:.0f}"
        lines.append(f"| {name} | {s['clips']} | {s['bounces']} | {_pct(s['onset_within_frame'])} | {off} | "
                     f"{_pct(s['onset_precision'])} | {s['false_onsets_per_s']:.2f} | {_pct(s['pitch_correct'])} |")
    if "generation" in result:
        g = result["generation"]
        lines += ["", f"Generation: {g['mean_seconds']:.2f} s mean, {g['max_seconds']:.2f} s max per "
                      f"{g['clip_seconds']:.1f} s clip ({_or_default(meta.get('steps'))} steps, cfg {_or_default(meta.get('cfg'))})."]
    return "\n".join(lines)


def _contact_clips(clips) -> List[Dict]:
    """Generated clips with exact contact times (outworld, devworld) in the form `evaluate` reads (no colours: pitch
    is not scored)."""
    return [dict(seed=c["seed"], frames=c["frames"], fps=c["fps"], truth_audio=c["truth_audio"], bounces=c["contacts"],
                 kind=c["kind"], caption="") for c in clips]


def out_of_world_eval_clips(n: int, seconds: float = 4.0) -> List[Dict]:
    """Held-out lumina_research.eval.outworld clips."""
    from lumina_research.eval.outworld import out_of_world_clips

    return _contact_clips(out_of_world_clips(n, seconds))


def tuning_eval_clips(n: int, seconds: float = 4.0) -> List[Dict]:
    """lumina_research.eval.devworld clips: the out-of-world tuning set."""
    from lumina_research.eval.devworld import dev_world_clips

    return _contact_clips(dev_world_clips(n, seconds))


def scene_eval_clips(n: int, seconds: float = 4.0, seed0: int = SCENES_SEED) -> List[Dict]:
    """Held-out varied scenes (lumina_research.world.scenes, half of them clean, as in training): the place to look
    at a change before the out-of-world set, which nothing is tuned on."""
    from lumina_research.world.scenes import CLEAN_SHARE, SCENE_FPS, render_scene

    clips = []
    for i in range(n):
        rng = np.random.default_rng([seed0 + i, 34])
        fps = float(rng.choice(SCENE_FPS))
        scene = render_scene(seed0 + i, fps, seconds, clean=bool(rng.random() < CLEAN_SHARE))
        clips.append(dict(seed=seed0 + i, frames=scene["frames"], fps=fps, truth_audio=scene["wave"],
                          bounces=scene["contacts"], caption=""))
    return clips


def run(model: Optional[str], clips: int, fps: float, seconds: float, objects: int, steps: Optional[int],
        cfg: Optional[float], prompt: bool, out: Optional[Path], seed: int = 0, size: int = 128,
        set_name: str = IN_WORLD) -> Dict:
    if set_name == OUT_OF_WORLD:
        data = out_of_world_eval_clips(clips, seconds)
    elif set_name == SCENES:
        data = scene_eval_clips(clips, seconds)
    elif set_name == TUNING:
        data = tuning_eval_clips(clips, seconds)
    else:
        data = world_eval_clips(clips, fps, seconds, size, objects)
    generate = reconstruct = detect = None
    if model:
        import torch

        from lumina.v2a import audio_fn_for, load_v2a

        torch.set_num_threads(max(1, torch.get_num_threads()))
        pipe = load_v2a(model)
        fn = audio_fn_for(pipe, steps, cfg, seed)
        reconstruct = pipe.reconstruct
        if pipe.contact_detector is not None:
            detect = pipe.contact_detector.detect
        generate = (lambda frames, f, caption: fn(frames, f, caption)) if prompt else (lambda frames, f, _: fn(frames, f, None))
        if prompt:
            for c in data:
                c["prompt"] = c["caption"]
    label = {OUT_OF_WORLD: "ground truth (knocks)", TUNING: "ground truth (taps)"}.get(set_name,
                                                                                     "ground truth (render_sound)")
    result = evaluate(data, generate, reconstruct=reconstruct, truth_label=label, detect=detect)
    result["meta"] = {"set": set_name, "model": model, "clips": len(data), "fps": fps, "seconds": seconds,
                      "objects": objects, "steps": steps, "cfg": cfg, "prompt": prompt, "seed": seed}
    if set_name in (OUT_OF_WORLD, TUNING):
        kinds = [c["kind"] for c in data]
        result["meta"].update(fps="9-29.97" if set_name == OUT_OF_WORLD else "8-30", objects=None,
                              kinds=", ".join(f"{kinds.count(k)} {k}" for k in sorted(set(kinds))))
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        stem = "v2abench" if set_name == IN_WORLD else f"v2abench-{set_name}"
        write_json(out / f"{stem}.json", result)
        write_text(out / f"{stem}.md", markdown(result) + "\n")
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lumina_research.eval v2a", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", default=IN_WORLD, choices=(IN_WORLD, SCENES, TUNING, OUT_OF_WORLD),
                   help="in-world: held-out world clips; scenes: held-out varied scenes (the training distribution); "
                        "out-of-world-tuning: lumina_research.eval.devworld clips (where choices about unfamiliar "
                        "videos are made); out-of-world: lumina_research.eval.outworld clips (contacts only, never "
                        "tuned on)")
    p.add_argument("--model", default="assets/lumina-v2a-tiny", help="V2A pipeline directory; 'none' = metric only")
    p.add_argument("--clips", type=int, default=24)
    p.add_argument("--fps", type=float, default=24.0, help="in-world clips' frame rate (out-of-world clips have their own)")
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--objects", type=int, default=1, help="in-world: bouncing objects per clip (1-3)")
    p.add_argument("--steps", type=int, help="sampling grid points (default: the model's)")
    p.add_argument("--cfg", type=float, help="guidance (default: the model's)")
    p.add_argument("--prompt", action="store_true", help="also give the clip's caption as prompt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="docs/v2abench")
    args = p.parse_args(argv)
    model = None if args.model.lower() == "none" else args.model
    result = run(model, args.clips, args.fps, args.seconds, args.objects, args.steps, args.cfg, args.prompt,
                 Path(args.out) if args.out else None, args.seed, set_name=args.set)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
