"""Training data from the procedural world: clips, captions, motion labels and cached encodings.

Everything expensive is computed once and cached with ``torch.save``:

* the *meta cache* (independent of the VAE): per clip seed its caption, the MiniLM caption
  features (the pipeline's exact prompt encoding: system prompt + caption -> hidden_states[-2])
  and the motion score from ``lumina.motion.motion_score``, plus the empty-prompt features used
  for caption dropout (classifier-free guidance);
* the *latent cache* (per VAE): VAE posterior means of every clip (16, F/4, H/8, W/8) and of its
  first frame encoded as a 1-frame video (16, 1, H/8, W/8), already multiplied by the VAE's
  ``scaling_factor`` so they are the DiT's data x1.

Clips are rendered deterministically from their seed, so the two caches always agree.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from lumina.pipelines.pipeline_lumina_video import MAX_PROMPT_TOKENS, SYSTEM_PROMPT
from lumina_research.train.losses import foreground_mask
from lumina_research.world.dataset import train_seed

WIDTH, HEIGHT, FRAMES, FPS = 128, 128, 16, 8
STILL_LABEL = 0.05  # motion scores below this: nothing moves (still clips measure ~1e-7, moving ones > 1)

# The world's only blue background is "navy"; some captions call it (dark) blue so prompts that
# say "blue background" land on it.  A caption-side augmentation: pixels are untouched.
_NAVY_SYNONYMS = ("navy", "navy", "blue", "dark blue")


@dataclass(frozen=True)
class ClipSpec:
    """What every training clip looks like."""

    width: int = WIDTH
    height: int = HEIGHT
    frames: int = FRAMES
    fps: int = FPS

    @property
    def seconds(self) -> float:
        return self.frames / self.fps


def render(seed: int, spec: ClipSpec = ClipSpec()):
    """The world clip of `seed`: a ``lumina_research.world.render.Clip`` (frames uint8 (T, H, W, 3))."""
    from lumina_research.world.render import render_clip, sample_scene

    scene = sample_scene(int(seed), seconds=spec.seconds)
    clip = render_clip(scene, width=spec.width, height=spec.height, fps=spec.fps, seconds=spec.seconds)
    if clip.frames.shape[0] != spec.frames:  # rounding of seconds * fps
        clip.frames = clip.frames[: spec.frames]
    return clip


def training_caption(scene) -> str:
    """The world's caption of `scene`, with "navy" sometimes written as "blue" / "dark blue".

    Read off the scene, not a rendered clip: captions for tens of thousands of clips cost no rendering."""
    from lumina_research.world.captions import scene_caption

    caption = scene_caption(scene)
    if "navy" in caption:
        word = _NAVY_SYNONYMS[np.random.default_rng([int(scene.seed), 7]).integers(len(_NAVY_SYNONYMS))]
        caption = caption.replace("navy", word)
    return caption


def frames_to_tensor(frames: np.ndarray, device=None) -> torch.Tensor:
    """uint8 (..., T, H, W, 3) -> float (..., 3, T, H, W) in [-1, 1], converted on `device` (moving uint8 is 4x
    cheaper than moving floats)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).to(device).float().div_(127.5).sub_(1.0)
    return x.movedim(-1, -4).contiguous()


# ----------------------------------------------------------------------------------------------
# text features


def load_minilm_for_training(device: str = "cpu"):
    """MiniLM-L6 with its weights rounded through fp16, exactly what the fp16 copy shipped in the
    tiny model's text_encoder/ gives when loaded in fp32. Where the MiniLM package is not installed (a
    borrowed GPU machine), that shipped copy is loaded instead: the same weights."""
    from lumina.errors import ModelFilesError
    from lumina.models.components import load_text_encoder

    try:
        tokenizer, encoder = load_text_encoder("minilm", dtype=torch.float32)
    except ModelFilesError:
        tokenizer, encoder = shipped_minilm()
    return tokenizer, encoder.half().float().eval().to(device)


def shipped_minilm():
    """(tokenizer, fp32 encoder) from the tiny model's tokenizer/ and fp16 text_encoder/ folders."""
    from transformers import AutoModel, AutoTokenizer

    from lumina.models.components import materialize_packaged_weights
    from lumina.pipelines.loading import TINY_DIR

    materialize_packaged_weights(TINY_DIR)
    return (AutoTokenizer.from_pretrained(str(TINY_DIR / "tokenizer")),
            AutoModel.from_pretrained(str(TINY_DIR / "text_encoder"), dtype=torch.float32).eval())


@torch.no_grad()
def encode_captions(captions: Sequence[str], tokenizer, encoder, batch: int = 64) -> List[torch.Tensor]:
    """Per caption the pipeline's prompt features (L_i, D) as fp16, padding tokens removed."""
    out: List[torch.Tensor] = []
    for i in range(0, len(captions), batch):
        texts = [SYSTEM_PROMPT + c for c in captions[i : i + batch]]
        tok = tokenizer(texts, padding=True, max_length=MAX_PROMPT_TOKENS, truncation=True,
                        padding_side="right", return_tensors="pt").to(encoder.device)
        hs = encoder(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"],
                     output_hidden_states=True).hidden_states[-2].cpu()
        for j, n in enumerate(tok["attention_mask"].sum(1).tolist()):
            out.append(hs[j, :n].half().clone())
    return out


def pad_features(feats: Sequence[torch.Tensor], multiple: int = 8, dtype: torch.dtype = torch.float32):
    """List of (L_i, D) -> (B, L, D) `dtype` right padded to a multiple of 8, and the mask (B, L)."""
    L = max(f.shape[0] for f in feats)
    L = -(-L // multiple) * multiple
    d = feats[0].shape[1]
    x = torch.zeros(len(feats), L, d, dtype=dtype)
    mask = torch.zeros(len(feats), L, dtype=torch.long)
    for i, f in enumerate(feats):
        x[i, : f.shape[0]] = f
        mask[i, : f.shape[0]] = 1
    return x, mask


# ----------------------------------------------------------------------------------------------
# motion scores


def _motion_worker(args):
    seed, spec = args
    import cv2

    from lumina.motion import motion_score

    cv2.setNumThreads(1)
    clip = render(seed, spec)
    return float(motion_score(clip.frames, spec.fps))


def motion_scores(seeds: Sequence[int], spec: ClipSpec, workers: int = 1) -> List[float]:
    with _mapper(workers) as run:
        return run(_motion_worker, [(int(s), spec) for s in seeds])


def _frames_worker(args) -> np.ndarray:
    seed, spec = args
    return render(seed, spec).frames


@contextmanager
def _mapper(workers: int):
    """An ordered map over jobs: in `workers` forked processes when there are several, else in this one."""
    if workers <= 1:
        yield lambda fn, jobs: [fn(j) for j in jobs]
        return
    import multiprocessing as mp

    with mp.get_context("fork").Pool(workers) as pool:
        yield lambda fn, jobs: pool.map(fn, jobs, chunksize=max(1, len(jobs) // (4 * workers)))


# ----------------------------------------------------------------------------------------------
# caches


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _grow_from(path: Path, seeds: Sequence[int], fits: Callable[[Dict], bool]) -> tuple:
    """The cache in `path`'s folder (same name stem, e.g. ``meta_*.pt``) that `fits` and shares the longest
    prefix of clip seeds with `seeds`, and that prefix's length: a larger dataset grows from a smaller
    one instead of re-rendering and re-encoding the clips it already has."""
    best, best_n = None, 0
    siblings = sorted(path.parent.glob(path.name.split("_")[0].removesuffix(".pt") + "*.pt"))
    for other in sorted(siblings, key=lambda p: p != path):  # the exact file first: usually it is the match
        cache = torch.load(other, map_location="cpu", weights_only=True)  # our own caches: tensors, str, numbers
        n = _common_prefix(cache.get("seeds", []), seeds) if fits(cache) else 0
        if n > best_n:
            best, best_n = cache, n
        if best is not None and best_n == len(seeds) == len(best["seeds"]):
            break  # an exact match: nothing can beat it
    return best, best_n


def build_motion_cache(path: Path, seeds: Sequence[int], spec: ClipSpec = ClipSpec(), workers: int = 1,
                       log: Callable[[str], None] = print) -> Dict:
    """Motion labels (``lumina.motion.motion_score``) of the clips of `seeds`, cached on their own: at ~0.2 s a
    clip of optical flow they are the costly part of the meta cache, and they depend on the clip alone, so a
    slow CPU can label clips ahead for a borrowed GPU machine that encodes captions and latents."""
    path = Path(path)
    seeds = [int(s) for s in seeds]
    old, k = _grow_from(path, seeds, lambda c: c.get("spec") == spec.__dict__) if path.parent.exists() else (None, 0)
    if old is not None and k == len(seeds):
        log(f"motion cache: all {k} labels reused from a cache of {len(old['seeds'])} clips")
        return dict(seeds=seeds, spec=spec.__dict__, motion=old["motion"][:k])
    t0 = time.time()
    motion = torch.tensor(motion_scores(seeds[k:], spec, workers), dtype=torch.float32)
    if k:
        motion = torch.cat([old["motion"][:k], motion])
    log(f"motion cache: {len(seeds) - k} clips scored in {time.time() - t0:.0f}s ({k} reused; "
        f"mean {motion.mean():.2f}, max {motion.max():.2f})")
    cache = dict(seeds=seeds, spec=spec.__dict__, motion=motion)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(cache, path)
    return cache


def build_meta_cache(path: Path, n_clips: int, seed0: int = 0, spec: ClipSpec = ClipSpec(), workers: int = 1,
                     device: str = "cpu", log: Callable[[str], None] = print) -> Dict:
    """Captions, caption features, empty-prompt features and motion scores of the first n training
    scenes of dataset seed0 (``train_seed``: even scene seeds, so never a ShapesBench scene)."""
    from lumina_research.world.render import sample_scene

    path = Path(path)
    seeds = [train_seed(seed0, i) for i in range(n_clips)]
    old, k = _grow_from(path, seeds, lambda c: c.get("spec") == spec.__dict__) if path.parent.exists() else (None, 0)
    if old is not None and k == len(old["seeds"]) == n_clips:
        log(f"meta cache: reusing {path}")
        return old
    motion = build_motion_cache(path.parent / f"motion_{seed0}_{n_clips}.pt", seeds, spec, workers, log)["motion"]
    t0 = time.time()
    new_seeds = seeds[k:]
    captions = [training_caption(sample_scene(s, seconds=spec.seconds)) for s in new_seeds]
    if new_seeds:
        tokenizer, encoder = load_minilm_for_training(device)
        feats = encode_captions(captions, tokenizer, encoder)
        empty = encode_captions([""], tokenizer, encoder)[0]
    else:
        feats, empty = [], old["empty"]
    log(f"meta cache: {len(new_seeds)} captions encoded in {time.time() - t0:.0f}s ({k} reused)")
    if k:
        captions, feats = old["captions"][:k] + captions, old["feats"][:k] + feats
    meta = dict(n_clips=n_clips, seed0=seed0, spec=spec.__dict__, seeds=seeds, captions=captions,
                feats=feats, empty=empty, motion=motion)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(meta, path)
    return meta


@torch.no_grad()
def encode_video_latents(vae, video: torch.Tensor) -> torch.Tensor:
    """(B, 3, T, H, W) in [-1, 1] -> scaled posterior means (B, 16, T', H/8, W/8)."""
    z = vae.encode(video).latent_dist.mean
    clear = getattr(vae, "_clear_fake_context_parallel_cache", None)
    if clear is not None:
        clear()
    return z * float(vae.config.scaling_factor)


def build_latent_cache(path: Path, vae, meta: Dict, spec: ClipSpec = ClipSpec(), n_video: Optional[int] = None,
                       batch: int = 8, workers: int = 1, log: Callable[[str], None] = print) -> Dict:
    """Video latents of the first `n_video` clips (n, 16, F/4, H/8, W/8) and first-frame image latents
    of every clip (N, 16, 1, H/8, W/8): images are ~5x cheaper to encode, so there are more of them.
    With each, the latent cells that objects touch (``video_masks`` / ``image_masks``, bool, 1 channel).
    Clips are rendered in `workers` processes and encoded on the VAE's device."""
    path = Path(path)
    sf = float(vae.config.scaling_factor)
    seeds = list(meta["seeds"])
    n_video = len(seeds) if n_video is None else min(n_video, len(seeds))
    tag = _vae_tag(vae)
    old, k = _grow_from(path, seeds, lambda c: c.get("vae_tag") == tag and abs(c["scaling_factor"] - sf) < 1e-9
                        and "video_masks" in c) if path.parent.exists() else (None, 0)
    k_video = min(k, n_video, old["videos"].shape[0]) if old is not None else 0
    if old is not None and k == len(old["seeds"]) == len(seeds) and k_video == n_video == old["videos"].shape[0]:
        log(f"latent cache: reusing {path}")
        return old
    t0 = time.time()
    vae = vae.eval()
    device = next(vae.parameters()).device
    videos, images, video_masks, image_masks = [], [], [], []
    if old is not None:
        videos, video_masks = [old["videos"][:k_video]], [old["video_masks"][:k_video]]
        images, image_masks = [old["images"][:k]], [old["image_masks"][:k]]
    start = k_video if k_video < n_video else k  # the first clip that still needs a video or image latent
    with _mapper(workers) as run:
        for i in range(start, len(seeds), batch):
            chunk = seeds[i : i + batch]
            frames = run(_frames_worker, [(int(s), spec) for s in chunk])
            x = frames_to_tensor(np.stack(frames), device)
            mask = foreground_mask(x)
            n_vid = max(0, min(len(chunk), n_video - i))
            if n_vid:
                z = encode_video_latents(vae, x[:n_vid])
                videos.append(z.half().cpu())
                video_masks.append(F.adaptive_max_pool3d(mask[:n_vid], z.shape[2:]).bool().cpu())
            first_new = max(0, k - i)  # clips before k have their image latents already
            if first_new < len(chunk):
                z = encode_video_latents(vae, x[first_new:, :, :1])
                images.append(z.half().cpu())
                image_masks.append(F.adaptive_max_pool3d(mask[first_new:, :, :1], z.shape[2:]).bool().cpu())
            if (i // batch) % 10 == 0:
                log(f"latent cache: {i + len(chunk)}/{len(seeds)} clips, {time.time() - t0:.0f}s ({k} reused)")
    cache = dict(seeds=seeds, scaling_factor=sf, vae_tag=tag,
                 videos=torch.cat(videos)[:n_video], images=torch.cat(images),
                 video_masks=torch.cat(video_masks)[:n_video], image_masks=torch.cat(image_masks))
    v, im = cache["videos"].float(), cache["images"].float()
    log(f"latent cache: videos {tuple(v.shape)} images {tuple(im.shape)} in {time.time() - t0:.0f}s; "
        f"scaled video latents mean {v.mean():.3f} std {v.std():.3f}, images mean {im.mean():.3f} std {im.std():.3f}")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(cache, path)
    return cache


def build_twin_cache(path: Path, vae, meta: Dict, latents: Dict, n_clips: int, spec: ClipSpec = ClipSpec(),
                     batch: int = 32, log: Callable[[str], None] = print, video: bool = False) -> Dict:
    """Shape stakes of the first `n_clips` clips: per ``SHAPE_SWAPS`` pairing, the clip's latent minus the
    latent of the same clip with every shape swapped, (n, K, 16, F', H/8, W/8) fp16; of the first frame
    alone (F' = 1, image batches) unless `video`. The clips' own latents come from `latents` (``build_latent_cache``);
    only the twins are rendered and encoded.

    The plain flow loss hardly rewards the shape word: a swapped shape moves the latents ~15x less than a
    mirrored direction (``python -m lumina_research.eval probe``). These directions let the loss weigh exactly that part."""
    from lumina_research.world.render import SHAPE_SWAPS, edited, render_clip, sample_scene

    path = Path(path)
    own = latents["videos" if video else "images"]
    seeds = list(meta["seeds"])[: min(n_clips, own.shape[0])]
    tag = _vae_tag(vae)
    if path.exists():
        cache = torch.load(path, map_location="cpu", weights_only=True)  # our own cache: tensors, str, numbers
        if cache.get("vae_tag") == tag and cache["seeds"] == seeds and cache.get("video", False) == video:
            log(f"twin cache: reusing {path}")
            return cache
    t0, out, device = time.time(), [], next(vae.parameters()).device
    seconds = spec.seconds if video else 1.0 / spec.fps
    clip = lambda scene: frames_to_tensor(render_clip(scene, width=spec.width, height=spec.height,  # noqa: E731
                                                      fps=spec.fps, seconds=seconds).frames, device)
    for i in range(0, len(seeds), batch):
        scenes = [sample_scene(int(s), seconds=spec.seconds) for s in seeds[i : i + batch]]
        x1 = own[i : i + len(scenes)].to(device).float()
        out.append(torch.stack([x1 - encode_video_latents(vae, torch.stack([clip(edited(s, "shape", m)) for s in scenes]))
                                for m in SHAPE_SWAPS], dim=1).half().cpu())
        if (i // batch) % 20 == 0:
            log(f"twin cache: {i + len(scenes)}/{len(seeds)} clips, {time.time() - t0:.0f}s")
    cache = dict(seeds=seeds, vae_tag=tag, video=video, directions=torch.cat(out))
    log(f"twin cache: {tuple(cache['directions'].shape)} in {time.time() - t0:.0f}s; "
        f"mean squared stake {cache['directions'].float().pow(2).mean():.4f}")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(cache, path)
    return cache


def _vae_tag(vae) -> str:
    """A cheap fingerprint of the encoder weights: a retrained VAE invalidates the latent cache, a
    fine-tuned decoder does not."""
    params = list(vae.encoder.parameters()) + (list(vae.quant_conv.parameters()) if vae.quant_conv else [])
    total = sum(float(p.detach().double().sum()) for p in params)
    return f"encoder:{total:.10e}"


class Batch(NamedTuple):
    """x1 (B, 16, F, h, w) float32, caption feats (B, L, D), their mask (B, L), motion labels (B,), the object
    mask of x1's cells (B, 1, F, h, w) or None, and shape stakes (B, K, 16, F, h, w) or None (batches of the
    kind, images or videos, the set has a twin cache for; zeros for clips past it)."""

    x1: torch.Tensor
    cap: torch.Tensor
    mask: torch.Tensor
    motion: torch.Tensor
    objects: Optional[torch.Tensor]
    stakes: Optional[torch.Tensor]


class TrainingSet:
    """Random batches for the DiT: videos or first-frame images, with captions and motion labels.

    Captions are held padded in one tensor (the empty prompt last) and every tensor can move to the GPU
    (``to``), so a batch is a few index operations wherever the model trains."""

    def __init__(self, meta: Dict, latents: Dict, rng: Optional[np.random.Generator] = None,
                 twins: Optional[Dict] = None, video_twins: Optional[Dict] = None):
        self.seeds: List[int] = meta["seeds"]
        feats = list(meta["feats"]) + [meta["empty"]]
        self.caps, cap_mask = pad_features(feats, dtype=torch.float16)
        self.cap_lengths = cap_mask.sum(1)
        self.motion: torch.Tensor = meta["motion"]
        self.videos: torch.Tensor = latents["videos"]
        self.images: torch.Tensor = latents["images"]
        self.video_masks: Optional[torch.Tensor] = latents.get("video_masks")
        self.image_masks: Optional[torch.Tensor] = latents.get("image_masks")
        self.stakes: Optional[torch.Tensor] = twins["directions"] if twins is not None else None
        self.video_stakes: Optional[torch.Tensor] = video_twins["directions"] if video_twins is not None else None
        self.rng = rng or np.random.default_rng(0)
        # clips in which nothing moves (the scorer measures ~0; their captions say every object is still)
        self.still: torch.Tensor = self.motion < STILL_LABEL
        self.moving_labels: torch.Tensor = self.motion[~self.still]
        if len(feats) - 1 != self.images.shape[0] or self.videos.shape[0] > self.images.shape[0]:
            raise ValueError("meta and latent caches hold different clips")
        for t in (twins, video_twins):
            if t is not None and t["seeds"] != self.seeds[: len(t["seeds"])]:
                raise ValueError("the twin cache holds other clips than the meta cache")

    def __len__(self) -> int:
        return self.videos.shape[0]

    def to(self, device) -> "TrainingSet":
        for name, value in vars(self).items():
            if isinstance(value, torch.Tensor):
                setattr(self, name, value.to(device))
        return self

    def batch(self, size: int, image: bool, caption_dropout: float = 0.1, motion_dropout: float = 0.1,
              still_relabel: float = 0.0) -> Batch:
        """A random batch of `size` videos or images (see ``Batch``), on the set's device.

        With probability `still_relabel` a still clip is labelled with the motion of a random moving clip,
        so that a caption saying "still" keeps the objects still whatever motion score is asked for."""
        source = self.images if image else self.videos
        masks = self.image_masks if image else self.video_masks
        on = lambda a: torch.as_tensor(a, device=source.device)  # noqa: E731
        idx = on(self.rng.integers(0, source.shape[0], size))
        x1 = source[idx].float()
        objects = masks[idx] if masks is not None else None
        rows = torch.where(on(self.rng.random(size) < caption_dropout), len(self.caps) - 1, idx)
        lengths = self.cap_lengths[rows]
        width = -(-int(lengths.max()) // 8) * 8  # the batch's longest caption, padded to a multiple of 8
        cap = self.caps[rows, :width].float()
        mask = (torch.arange(width, device=source.device)[None] < lengths[:, None]).long()
        if image:
            motion = torch.full((size,), -1.0, device=source.device)  # a still image carries no motion measurement
        else:
            motion = self.motion[idx].clone()
            relabel = self.still[idx] & on(self.rng.random(size) < still_relabel)
            if relabel.any():
                pick = self.rng.integers(0, len(self.moving_labels), int(relabel.sum()))
                motion[relabel] = self.moving_labels[on(pick)]
            motion[on(self.rng.random(size) < motion_dropout)] = -1.0
        pool, stakes = self.stakes if image else self.video_stakes, None
        if pool is not None:
            stakes = torch.zeros(size, *pool.shape[1:], device=source.device)
            known = idx < pool.shape[0]
            stakes[known] = pool[idx[known]].float()
        return Batch(x1, cap, mask, motion, objects, stakes)


def default_threads() -> int:
    return int(os.environ.get("LUMINA_TRAIN_THREADS", "2"))
