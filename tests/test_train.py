"""A few-step run of the whole training recipe at toy sizes: VAE, data caches, multi-scale DiT, assembly."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lumina.patch import parse_patch_size
from lumina.pipelines.defaults import ModelDefaults
from lumina.pipelines.pipeline_lumina_video import LuminaVideoPipeline
from lumina.sampling import shift_time
from lumina_research.train.budget import budgeted_steps
from lumina_research.train.data import (ClipSpec, TrainingSet, build_latent_cache, build_meta_cache, build_twin_cache, pad_features,
                               render)
from lumina_research.train.dit import DiTRecipe, load_init, make_transformer, train_dit
from lumina_research.train.losses import flow_loss, foreground_mask, interpolate, mask_weights, sample_t, stakes_from_t, vae_loss
from lumina_research.train.vae import VAERecipe, train_vae
from lumina_research.world.dataset import eval_seed

SPEC = ClipSpec(width=32, height=32, frames=8, fps=4)


def test_flow_loss_is_mse_plus_one_minus_cosine():
    v = torch.randn(3, 16, 2, 4, 4)
    loss, parts = flow_loss(v, v)
    assert loss.item() == pytest.approx(0.0, abs=1e-5)
    loss, parts = flow_loss(-v, v)  # opposite direction: cos term 2, mse 4 * mean(v^2)
    assert parts["cos"] == pytest.approx(2.0, abs=1e-5)
    assert loss.item() == pytest.approx(4 * v.pow(2).mean().item() + 2.0, rel=1e-4)
    # items of different shapes (images and videos) are averaged per item
    loss_list, _ = flow_loss([v[0], v[1, :, :1]], [v[0], v[1, :, :1]])
    assert loss_list.item() == pytest.approx(0.0, abs=1e-5)


def test_frame_difference_term_charges_errors_that_change_between_latent_frames():
    v = torch.randn(2, 16, 4, 4, 4)
    steady = torch.randn(2, 16, 1, 4, 4).expand_as(v)   # the same error in every latent frame
    loss, parts = flow_loss(v + steady, v, cos_weight=0.0, frame_diff_weight=1.0)
    assert parts["frame_diff"] == pytest.approx(0.0, abs=1e-6)
    assert loss.item() == pytest.approx(steady.pow(2).mean().item(), rel=1e-5)
    # an object held still for two latent frames, then jumping: its error changes only from frame 1 to frame 2
    held = torch.zeros_like(v)
    held[:, :, 2:] = 0.5
    _, parts = flow_loss(v + held, v, cos_weight=0.0, frame_diff_weight=1.0)
    assert parts["mse"] == pytest.approx(0.5 ** 2 / 2, rel=1e-5)
    assert parts["frame_diff"] == pytest.approx(0.5 ** 2 / 3, rel=1e-5)   # one of three frame steps
    # images (one latent frame) add nothing; mixed lists still average the video items
    _, parts = flow_loss([v[0, :, :1] + 1.0, v[1] + held[1]], [v[0, :, :1], v[1]], frame_diff_weight=1.0)
    assert parts["frame_diff"] == pytest.approx(0.5 ** 2 / 3, rel=1e-5)
    assert "frame_diff" not in flow_loss(v + held, v)[1]   # off by default: no extra work in the training loop


def test_stake_term_charges_the_error_along_each_stake_and_nothing_across():
    v = torch.randn(3, 16, 1, 4, 4)
    stakes = torch.zeros(3, 2, 16, 1, 4, 4)
    stakes[0, 0, 3, 0, 1, 1], stakes[0, 1, 5, 0, 2, 2] = 2.0, -0.5   # two directions, any length
    stakes[1, 0, 3, 0, 1, 1] = 1.0                                   # item 2: no twin (zeros)
    err = torch.zeros_like(v)
    err[0, 3, 0, 1, 1], err[0, 5, 0, 2, 2], err[0, 7, 0, 0, 0] = 0.3, 0.4, 9.0  # the 9.0 lies across both stakes
    err[1, 0, 0, 0, 0] = 1.0
    err[2, 3, 0, 1, 1] = 5.0
    loss, parts = flow_loss(v + err, v, cos_weight=0.0, stakes=stakes, stake_weight=2.0)
    assert parts["stake"] == pytest.approx((0.3 ** 2 + 0.4 ** 2) / 3, rel=1e-5)   # mean over the 3 items
    assert loss.item() == pytest.approx(err.pow(2).mean().item() + 2.0 * parts["stake"], rel=1e-5)
    assert "stake" not in flow_loss(v + err, v, stakes=stakes)[1]   # off unless weighted
    late = stakes_from_t(stakes, torch.tensor([0.1, 0.5, 0.9]), 0.3)   # item 0 is noisier than 0.3: its stakes go
    assert late[0].abs().sum() == 0 and torch.equal(late[1:], stakes[1:])
    assert flow_loss(v + err, v, cos_weight=0.0, stakes=late, stake_weight=2.0)[1]["stake"] == 0.0


def test_gradient_term_charges_blurred_edges_and_not_flat_offsets():
    target = -torch.ones(1, 3, 1, 16, 16)
    target[..., 4:12, 4:12] = 1.0                                    # a sharp square
    blurred = torch.nn.functional.avg_pool3d(target, (1, 3, 3), stride=1, padding=(0, 1, 1), count_include_pad=False)
    offset = target + 0.3                                            # every pixel off, no edge moved
    _, blur_parts = vae_loss(blurred, target, torch.zeros(1), gradient_weight=1.0)
    loss, offset_parts = vae_loss(offset, target, torch.zeros(1), gradient_weight=1.0)
    assert offset_parts["l1"] == pytest.approx(0.3, rel=1e-5) and offset_parts["gradient"] == pytest.approx(0.0, abs=1e-6)
    assert blur_parts["gradient"] > 0.05 and blur_parts["l1"] < offset_parts["l1"]   # less L1, yet the edge is charged
    assert loss.item() == pytest.approx(0.3 + 0.09, rel=1e-5)
    weights = torch.ones(1, 1, 1, 16, 16)
    weights[..., :8] = 3.0                                           # the left half's edges weigh 3x
    _, weighted = vae_loss(blurred, target, torch.zeros(1), weights=weights, gradient_weight=1.0)
    assert weighted["gradient"] == pytest.approx(2 * blur_parts["gradient"], rel=0.05)
    assert "gradient" not in vae_loss(blurred, target, torch.zeros(1))[1]   # off by default


def test_object_weights_find_the_objects_and_keep_the_mean():
    clip = render(3, SPEC)
    x = torch.from_numpy(clip.frames).float().div(127.5).sub(1).permute(3, 0, 1, 2)[None]
    mask = foreground_mask(x, grow=0)
    bg = torch.tensor(clip.frames[0, 0, 0]).float().div(127.5).sub(1)  # corner pixel of frame 0
    truth = (x[0] - bg[:, None, None, None]).abs().amax(0) > 0.1
    if clip.frames[0, 0, 0].tolist() != np.median(clip.frames.reshape(-1, 3), axis=0).astype(int).tolist():
        pytest.skip("an object covers the corner of this clip")
    assert torch.equal(mask[0, 0].bool(), truth)
    w = mask_weights(mask, 4.0)
    assert w.mean().item() == pytest.approx(1.0, abs=1e-5)
    assert w[mask.bool()].min() == pytest.approx(5 * w[~mask.bool()].max().item(), rel=1e-5)
    # the weighted MSE counts an error on an object cell 5x an error on the background
    v = torch.zeros(1, 16, *mask.shape[2:])
    on, off = v.clone(), v.clone()
    obj = mask[0, 0].nonzero()[0].tolist()
    bgc = (mask[0, 0] == 0).nonzero()[0].tolist()
    on[0, :, obj[0], obj[1], obj[2]] = 1.0
    off[0, :, bgc[0], bgc[1], bgc[2]] = 1.0
    l_on = flow_loss(on, v, cos_weight=0.0, weights=w)[0].item()
    l_off = flow_loss(off, v, cos_weight=0.0, weights=w)[0].item()
    assert l_on == pytest.approx(5 * l_off, rel=1e-5)


def test_time_sampling_follows_the_patch_shift():
    g = torch.Generator().manual_seed(0)
    t1 = sample_t(4000, 1.0, g)
    t4 = sample_t(4000, 4.0, g)
    assert 0 <= t1.min() and t1.max() <= 1 and 0 <= t4.min() and t4.max() <= 1
    assert t4.mean() < t1.mean() - 0.15  # a larger shift trains noisier times (t = 0 is noise)
    u = torch.tensor([0.5])
    assert shift_time(u, 4.0).item() == pytest.approx(0.2)
    x0, x1 = torch.zeros(1, 2), torch.ones(1, 2)
    assert torch.allclose(interpolate(x0, x1, torch.tensor([0.25])), torch.full((1, 2), 0.25))
    # a low-noise expert's times: the same shifted draw squeezed into [t_from, 1]
    g0, g1 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    low = sample_t(4000, 4.0, g0, t_from=0.3)
    assert 0.3 <= low.min() < 0.31 and low.max() <= 1
    torch.testing.assert_close(low, 0.3 + 0.7 * sample_t(4000, 4.0, g1))


def test_training_captions_come_from_the_scene_and_the_shipped_minilm_copy_gives_the_same_features():
    from lumina_research.train.data import encode_captions, load_minilm_for_training, shipped_minilm, training_caption
    from lumina_research.world.render import sample_scene

    scenes = [sample_scene(s, seconds=SPEC.seconds) for s in range(0, 40, 2)]
    captions = [training_caption(s) for s in scenes]
    for scene, caption in zip(scenes, captions):
        rendered = render(scene.seed, SPEC).caption
        assert caption == rendered or ("navy" in rendered and "blue" in caption and "navy" not in caption)
    assert any(c != render(s.seed, SPEC).caption for s, c in zip(scenes, captions))  # the synonyms do occur
    package = encode_captions(captions[:4], *load_minilm_for_training())
    shipped = encode_captions(captions[:4], *shipped_minilm())
    assert all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(package, shipped))


def test_the_committed_motion_labels_are_what_the_scorer_measures():
    from lumina_research.train.data import ClipSpec, motion_scores
    from lumina_research.world.dataset import train_seed

    path = max(Path(__file__).parents[1].glob("data/motion/motion_0_*.pt"), key=lambda p: int(p.stem.split("_")[2]))
    labels = torch.load(path, weights_only=True)
    n = int(path.stem.split("_")[2])
    assert labels["seeds"] == [train_seed(0, i) for i in range(n)] and labels["motion"].shape == (n,)
    assert labels["spec"] == ClipSpec().__dict__
    sample = [0, 1, n // 2, n - 1]
    again = motion_scores([labels["seeds"][i] for i in sample], ClipSpec())
    assert np.allclose(again, labels["motion"][sample].numpy(), rtol=1e-4, atol=1e-4)
    still = labels["motion"] < 0.05
    # a clear gap: nothing moves in still clips (~1e-7), the slowest small mover still measures over 0.1
    assert 0.03 < float(still.float().mean()) < 0.2 and float(labels["motion"][still].max()) < 1e-3
    assert float(labels["motion"][~still].min()) > 0.1


def test_caption_features_are_padded_to_multiples_of_eight():
    feats = [torch.ones(5, 4, dtype=torch.float16), torch.ones(11, 4, dtype=torch.float16)]
    x, mask = pad_features(feats)
    assert x.shape == (2, 16, 4) and mask.sum(1).tolist() == [5, 11]
    assert x.dtype == torch.float32 and x[0, 5:].abs().sum() == 0


def test_a_three_block_vae_compresses_4x_and_other_depths_are_refused():
    from lumina_research.train.vae import make_vae

    vae = make_vae(VAERecipe(block_out_channels=(8, 8, 8), norm_num_groups=4))
    with torch.no_grad():
        z = vae.encode(torch.zeros(1, 3, 8, 32, 32)).latent_dist.mean
    assert tuple(z.shape) == (1, 16, 2, 8, 8)  # 4x temporal as the release, 4x spatial
    for widths in [(8, 8), (8, 8, 8, 8, 8)]:
        with pytest.raises(ValueError, match="3 blocks .4x spatial compression. or 4"):
            make_vae(VAERecipe(block_out_channels=widths, norm_num_groups=4))


def test_a_2x_temporal_vae_keeps_twice_the_latent_frames_and_other_ratios_are_refused():
    from lumina_research.train.vae import make_vae

    vae = make_vae(VAERecipe(block_out_channels=(8, 8, 8, 8), norm_num_groups=4, temporal_compression=2))
    with torch.no_grad():
        z = vae.encode(torch.zeros(1, 3, 8, 32, 32)).latent_dist.mean
        assert vae.decode(z).sample.shape == (1, 3, 8, 32, 32)
    assert tuple(z.shape) == (1, 16, 4, 4, 4)
    for ratio in (1, 3, 8):
        with pytest.raises(ValueError, match="compresses time 4x .the release's. or 2x; got"):
            make_vae(VAERecipe(block_out_channels=(8, 8, 8, 8), norm_num_groups=4, temporal_compression=ratio))


def test_training_smoke_loss_drops_and_folder_loads(tmp_path, capsys):
    torch.set_num_threads(1)
    vae_recipe = VAERecipe(steps=2, batch=1, crop=16, frames=8, image_every=2, warmup=1, block_out_channels=(8, 8, 8, 8),
                           norm_num_groups=4, eval_clips=1, scale_clips=2)
    vae = train_vae(tmp_path / "vae", vae_recipe, spec=SPEC, log=lambda m: None)
    report = json.loads((tmp_path / "vae" / "train_report.json").read_text())
    assert np.isfinite(report["final_loss"]) and report["scaling_factor"] > 0
    assert report["latent_shape"] == [16, 2, 4, 4]  # 8 frames 32x32 -> 4x temporal, 8x spatial

    meta = build_meta_cache(tmp_path / "meta.pt", 6, seed0=0, spec=SPEC, log=lambda m: None)
    assert len(meta["feats"]) == 6 and meta["feats"][0].shape[1] == 384
    assert meta["motion"].shape == (6,) and torch.isfinite(meta["motion"]).all() and (meta["motion"] >= 0).all()
    assert meta["captions"][1] in render(meta["seeds"][1], SPEC).caption or "blue" in meta["captions"][1]
    held_out = {eval_seed(s, i) for s in (0, 1) for i in range(200)}
    assert not held_out & set(meta["seeds"]) and len(set(meta["seeds"])) == 6  # never a ShapesBench scene
    latents = build_latent_cache(tmp_path / "lat.pt", vae, meta, spec=SPEC, n_video=4, batch=4, log=lambda m: None)
    assert latents["videos"].shape == (4, 16, 2, 4, 4) and latents["images"].shape == (6, 16, 1, 4, 4)
    # a larger dataset grows from the cached clips (they are not re-encoded) and equals a fresh build
    logs = []
    grown_meta = build_meta_cache(tmp_path / "meta_8.pt", 8, seed0=0, spec=SPEC, log=logs.append)
    grown = build_latent_cache(tmp_path / "lat_8.pt", vae, grown_meta, spec=SPEC, n_video=8, batch=4, log=logs.append)
    assert any("(6 reused)" in m for m in logs if m.startswith("meta")) and any("(6 reused)" in m for m in logs)
    # motion labels live in a cache of their own: labelled ahead (here: a copy of the grown set's), a fresh
    # folder encodes captions and latents without scoring a clip again; two render workers give the same latents
    (tmp_path / "fresh").mkdir()
    (tmp_path / "fresh" / "motion_0_99.pt").write_bytes((tmp_path / "motion_0_8.pt").read_bytes())
    fresh_logs = []
    fresh_meta = build_meta_cache(tmp_path / "fresh" / "meta.pt", 8, seed0=0, spec=SPEC, log=fresh_logs.append)
    assert "motion cache: all 8 labels reused from a cache of 8 clips" in fresh_logs
    fresh = build_latent_cache(tmp_path / "fresh" / "lat.pt", vae, fresh_meta, spec=SPEC, n_video=8, batch=4,
                               workers=2, log=lambda m: None)
    assert grown_meta["captions"] == fresh_meta["captions"] and grown_meta["seeds"] == fresh_meta["seeds"]
    assert torch.allclose(grown_meta["motion"], fresh_meta["motion"])
    assert all(torch.equal(a, b) for a, b in zip(grown_meta["feats"], fresh_meta["feats"]))
    for key in ("videos", "images", "video_masks", "image_masks"):
        assert grown[key].shape == fresh[key].shape and torch.allclose(grown[key].float(), fresh[key].float(), atol=2e-3)
    assert build_meta_cache(tmp_path / "meta_5.pt", 5, seed0=0, spec=SPEC, log=logs.append)["seeds"] == meta["seeds"][:5]
    data = TrainingSet(meta, latents)
    from lumina_research.train.vae import DecoderRecipe, finetune_decoder

    scale = vae.config.scaling_factor
    vae = finetune_decoder(vae, latents["videos"], meta["seeds"][:4], tmp_path / "vae_dec",
                           DecoderRecipe(steps=2, batch=1, latent_crop=4), spec=SPEC, log=lambda m: None)
    assert vae.config.scaling_factor == scale  # the encoder and its latent scale are untouched
    assert "decoder_finetune" in json.loads((tmp_path / "vae_dec" / "train_report.json").read_text())
    x1, cap, mask, motion, objects, _ = data.batch(5, image=False, caption_dropout=0.0, motion_dropout=0.0)
    assert x1.shape == (5, 16, 2, 4, 4) and cap.shape[0] == 5 and (motion >= 0).all()
    assert objects.shape == (5, 1, 2, 4, 4) and objects.dtype == torch.bool
    for x, c, m in zip(x1, cap, mask):  # each item's own caption features, padded to the batch's multiple of 8
        i = next(i for i in range(4) if torch.equal(latents["videos"][i].float(), x))
        n = meta["feats"][i].shape[0]
        assert int(m.sum()) == n and torch.equal(c[:n], meta["feats"][i].float()) and not c[n:].any()
    assert cap.shape[1] % 8 == 0 and cap.shape[1] - 8 < int(mask.sum(1).max())
    _, empty_cap, empty_mask, *_ = data.batch(3, image=False, caption_dropout=1.0)
    assert (empty_mask.sum(1) == meta["empty"].shape[0]).all()
    assert torch.equal(empty_cap[:, : meta["empty"].shape[0]], meta["empty"].float()[None].expand(3, -1, -1))
    assert 0 < objects.float().mean() < 1  # objects touch some latent cells, the background the rest
    _, _, _, motion_img, objects_img, stakes = data.batch(3, image=True)
    assert (motion_img == -1).all() and objects_img.shape == (3, 1, 1, 4, 4) and stakes is None
    # shape twins: the first frame's latent minus the same frame with the shapes swapped, per pairing
    twins = build_twin_cache(tmp_path / "twins.pt", vae, meta, latents, 4, spec=SPEC, batch=3, log=lambda m: None)
    from lumina_research.world.render import SHAPE_SWAPS, edited, render_clip, sample_scene

    scene = sample_scene(meta["seeds"][2], seconds=SPEC.seconds)
    frame = lambda s: torch.from_numpy(render_clip(s, width=32, height=32, fps=SPEC.fps, seconds=1 / SPEC.fps).frames)  # noqa: E731
    twin = frame(edited(scene, "shape", SHAPE_SWAPS[1]))
    assert twin.shape == (1, 32, 32, 3) and not torch.equal(twin, frame(scene))
    assert (twin != frame(scene)).any(-1).float().mean() < 0.2   # only where the shapes differ
    from lumina_research.train.data import encode_video_latents, frames_to_tensor

    want = latents["images"][2].float() - encode_video_latents(vae, frames_to_tensor(twin.numpy())[None])[0]
    assert twins["directions"].shape == (4, 2, 16, 1, 4, 4)
    assert torch.allclose(twins["directions"][2, 1].float(), want, atol=1e-2) and want.abs().max() > 1e-3
    twin_data = TrainingSet(meta, latents, np.random.default_rng(1), twins=twins)
    x1, *_, stakes = twin_data.batch(40, image=True)
    idx = [next(i for i in range(6) if torch.equal(latents["images"][i].float(), x)) for x in x1]
    assert stakes.shape == (40, 2, 16, 1, 4, 4) and {i for i in idx} > {4, 5}
    for i, s in zip(idx, stakes):
        assert torch.equal(s, twins["directions"][i].float()) if i < 4 else not s.any()
    assert twin_data.batch(2, image=False).stakes is None   # videos carry no stakes without a video twin cache
    with pytest.raises(ValueError, match="twin cache holds other clips"):
        TrainingSet(meta, latents, twins={**twins, "seeds": [s + 1 for s in twins["seeds"]]})
    # video twins: the whole clip's latent minus the whole clip re-rendered with the shapes swapped
    video_twins = build_twin_cache(tmp_path / "video_twins.pt", vae, meta, latents, 3, spec=SPEC, batch=2, log=lambda m: None,
                                   video=True)
    clip = lambda s: render_clip(s, width=32, height=32, fps=SPEC.fps, seconds=SPEC.seconds).frames  # noqa: E731
    want = latents["videos"][2].float() - encode_video_latents(vae, frames_to_tensor(clip(edited(scene, "shape",
                                                                                                SHAPE_SWAPS[1])))[None])[0]
    assert video_twins["directions"].shape == (3, 2, 16, 2, 4, 4) and video_twins["video"]
    assert torch.allclose(video_twins["directions"][2, 1].float(), want, atol=1e-2) and want[:, 1:].abs().max() > 1e-3
    assert build_twin_cache(tmp_path / "video_twins.pt", vae, meta, latents, 3, spec=SPEC, log=logs.append, video=True)["video"]
    assert logs[-1].startswith("twin cache: reusing")
    both = TrainingSet(meta, latents, np.random.default_rng(2), twins=twins, video_twins=video_twins)
    x1, *_, stakes = both.batch(30, image=False)
    idx = [next(i for i in range(6) if torch.equal(latents["videos"][i].float(), x)) for x in x1]
    assert stakes.shape == (30, 2, 16, 2, 4, 4) and {i for i in idx} > {3}
    for i, s in zip(idx, stakes):
        assert torch.equal(s, video_twins["directions"][i].float()) if i < 3 else not s.any()
    assert both.batch(4, image=True).stakes.shape == (4, 2, 16, 1, 4, 4)   # images keep their own stakes

    recipe = DiTRecipe(steps=40, batch=2, lr=3e-3, warmup=2, dim=32, n_layers=1, n_heads=2, n_kv_heads=1,
                       multiple_of=16, save_every_minutes=100.0, stake_weight=0.01, image_prob=0.3)
    data = twin_data
    # a fixed probe batch: the same noise, times, captions and patch size before and after training
    g = torch.Generator().manual_seed(123)
    px1 = latents["videos"][:4].float()
    px0 = torch.randn(px1.shape, generator=g)
    pt = torch.rand(4, generator=g)
    pcap, pmask = pad_features([meta["feats"][i] for i in range(4)])
    pm = meta["motion"][:4]

    def probe_loss(model):
        with torch.no_grad():
            losses = [flow_loss(model(interpolate(px0, px1, pt), pt, pcap, pmask, pm, p), px1 - px0)[0].item()
                      for p in ("1x2", "2x2", "2x4")]
        return float(np.mean(losses))

    torch.manual_seed(recipe.seed)
    before = probe_loss(make_transformer(recipe).eval())
    model = train_dit(tmp_path / "transformer", data, recipe, log=lambda m: None)
    after = probe_loss(model)
    dit_report = json.loads((tmp_path / "transformer" / "train_report.json").read_text())
    assert dit_report["steps"] == 40 and np.isfinite(dit_report["loss_last100"])
    history = [json.loads(line) for line in (tmp_path / "transformer" / "train_history.jsonl").read_text().splitlines()]
    assert {("stake" in h) for h in history if h["image"]} == {True} and not any("stake" in h for h in history
                                                                                 if not h["image"])
    assert {p for p in dit_report["by_patch"]} & {"1x2-video", "2x2-video", "2x4-video"}
    assert after < before, (before, after)

    # the assembled folder loads through diffusers and generates
    from lumina_research.train.assemble import save_pipeline, tiny_defaults

    pipe = LuminaVideoPipeline(transformer=model, vae=vae, text_encoder=None, tokenizer=None, max_resolution=64)
    from lumina_research.train.data import load_minilm_for_training

    tokenizer, encoder = load_minilm_for_training()
    pipe.register_modules(text_encoder=encoder.half(), tokenizer=tokenizer)
    save_pipeline(pipe, tmp_path / "pipe", tiny_defaults(steps=3))
    loaded = LuminaVideoPipeline.from_pretrained(str(tmp_path / "pipe"), dtype=torch.float32)
    assert {p.name for p in loaded.transformer.supported_patch_sizes()} == {"1x2", "2x2", "2x4"}
    assert loaded.vae.config.scaling_factor == pytest.approx(report["scaling_factor"])
    defaults = ModelDefaults.read(tmp_path / "pipe")
    assert defaults.width == 128 and defaults.frames == 16 and defaults.steps == 3
    out = loaded("a red circle moving right on a navy background", height=32, width=32, num_frames=8,
                 sample_config=defaults.preset, num_inference_steps=3, generator=torch.Generator().manual_seed(0))
    assert out.frames.shape == (1, 8, 32, 32, 3) and np.isfinite(out.frames).all()
    assert [s["patch"] for s in out.schedule] == [parse_patch_size(s["patch"]).name for s in out.schedule]

    # the command line's DiT stage: caches of real world clips, a couple of steps, and the data record the
    # model card quotes (amounts and the motion labels' statistics)
    from lumina_research.train.__main__ import main

    assert main(["dit", "--vae", str(tmp_path / "vae"), "--out", str(tmp_path / "cli_dit"), "--cache",
                 str(tmp_path / "cache"), "--clips", "3", "--video-clips", "2", "--steps", "2", "--threads", "1",
                 "--dim", "64", "--layers", "1", "--frame-diff-weight", "0.5", "--shape-twins", "2",
                 "--stake-weight", "0.01", "--t-from", "0.4", "--shared-noise", "0.3", "--patch-shift", "2x4=12",
                 "--patch-probs", "2x4=2"]) in (0, None)
    info = json.loads((tmp_path / "cli_dit" / "data_info.json").read_text())
    assert info["shape_twins"] == 2 and (tmp_path / "cache" / "twins_2.pt").exists()
    with pytest.raises(SystemExit, match="needs --shape-twins"):
        main(["dit", "--vae", str(tmp_path / "vae"), "--out", str(tmp_path / "cli_dit2"), "--stake-weight", "0.01"])
    recipe_run = json.loads((tmp_path / "cli_dit" / "train_report.json").read_text())["recipe"]
    assert recipe_run["frame_diff_weight"] == 0.5 and recipe_run["t_from"] == 0.4 and recipe_run["shared_noise"] == 0.3
    assert recipe_run["patch_shift"] == {"1x2": 1.0, "2x2": 3.0, "2x4": 12.0}  # the others keep the paper's shifts
    assert recipe_run["patch_probs"] == {"1x2": 1.0, "2x2": 1.0, "2x4": 2.0}
    with pytest.raises(SystemExit):
        main(["dit", "--vae", str(tmp_path / "vae"), "--out", str(tmp_path / "cli_dit3"), "--patch-shift", "1x3=2"])
    assert "PATCH one of 1x2, 2x2, 2x4 and VALUE a number > 0" in capsys.readouterr().err
    # assembled with that transformer as the low-noise expert (here of itself): saved, loaded, on the card
    assert main(["assemble", "--vae", str(tmp_path / "vae"), "--dit", str(tmp_path / "cli_dit"), "--expert",
                 str(tmp_path / "cli_dit"), "--expert-from-t", "0.4", "--sample-steps", "3",
                 "--out", str(tmp_path / "duo")]) in (0, None)
    duo = LuminaVideoPipeline.from_pretrained(str(tmp_path / "duo"))
    assert duo.config.expert_from_t == 0.4 and duo.transformer_2.config.dim == 64
    card = (tmp_path / "duo" / "README.md").read_text()
    assert "`transformer_2/`: the low-noise expert, LuminaNextDiTVideo dim 64, 1 layers" in card and "t = 0.4 on" in card
    with pytest.raises(SystemExit, match="needs both transformer_2 and expert_from_t"):
        main(["assemble", "--vae", str(tmp_path / "vae"), "--dit", str(tmp_path / "cli_dit"), "--expert",
              str(tmp_path / "cli_dit"), "--out", str(tmp_path / "duo2")])
    meta = torch.load(tmp_path / "cache" / "meta_3.pt", weights_only=True)
    assert info["video_clips"] == 2 and info["image_latents"] == 3
    assert info["motion_labels"]["mean"] == pytest.approx(float(meta["motion"].mean()), abs=0.05)


def test_a_shallower_transformer_grows_in_depth_computing_the_same_function(tmp_path):
    torch.manual_seed(0)
    small = DiTRecipe(dim=32, n_layers=2, n_heads=2, n_kv_heads=1, multiple_of=16)
    saved = make_transformer(small).eval()
    with torch.no_grad():
        for param in saved.parameters():  # no zero-initialised gates: every saved block changes the output
            param.add_(0.05 * torch.randn_like(param))
    saved.save_pretrained(tmp_path / "small")
    grown = make_transformer(DiTRecipe(**{**small.__dict__, "n_layers": 5})).eval()
    assert "at layers [0, 2] of 5" in load_init(grown, str(tmp_path / "small"))
    x = torch.randn(2, 16, 2, 8, 8)
    t, cap, motion = torch.tensor([0.2, 0.7]), torch.randn(2, 8, 384), torch.tensor([3.0, -1.0])
    mask = torch.ones(2, 8, dtype=torch.bool)
    for patch in ("1x2", "2x2", "2x4"):
        want, got = saved(x, t, cap, mask, motion, patch), grown(x, t, cap, mask, motion, patch)
        assert want.abs().mean() > 0.1 and torch.allclose(got, want, atol=1e-5), patch
    # the new blocks are closed, not dead: their gates get gradient
    grown(x, t, cap, mask, motion, "1x2").square().mean().backward()
    assert all(grown.layers[i].adaLN_modulation[1].weight.grad.abs().sum() > 0 for i in (1, 3, 4))
    with pytest.raises(ValueError, match="fewer layers .*'dim': \\(32, 64\\)"):
        load_init(make_transformer(DiTRecipe(**{**small.__dict__, "dim": 64, "n_layers": 5})), str(tmp_path / "small"))


def test_budgeted_steps_warm_up_decay_and_stop_when_the_time_is_spent():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0)
    lrs = [opt.param_groups[0]["lr"] for _ in budgeted_steps(opt, 100, None, 1.0, 10)]
    assert len(lrs) == 100 and lrs[0] == pytest.approx(0.1) and max(lrs) == pytest.approx(lrs[9])
    assert lrs[-1] == pytest.approx(0.1, abs=0.01) and all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    spent = []
    steps = []
    for step in budgeted_steps(opt, 10**9, 1e-5, 1.0, 10, spent.append):  # 0.6 ms of budget
        steps.append(step)
        time.sleep(0.002)
    assert len(steps) <= 1 and spent == [len(steps)]


def test_still_clips_are_relabelled_with_moving_clips_motion_only_when_asked():
    n = 6
    meta = {"seeds": list(range(n)), "feats": [torch.full((3, 4), float(i)) for i in range(n)],
            "empty": torch.zeros(1, 4), "motion": torch.tensor([0.0, 1e-7, 5.0, 7.0, 9.0, 0.0])}
    latents = {"videos": torch.arange(n).float().view(n, 1, 1, 1, 1).half(), "images": torch.zeros(n, 1, 1, 1, 1)}
    data = TrainingSet(meta, latents, np.random.default_rng(0))
    assert data.still.tolist() == [True, True, False, False, False, True]
    x1, _, _, motion, _, _ = data.batch(400, image=False, caption_dropout=0.0, motion_dropout=0.0, still_relabel=0.0)
    assert torch.equal(motion, meta["motion"][x1.flatten().long()])  # labels follow their clips
    x1, _, _, motion, _, _ = data.batch(400, image=False, caption_dropout=0.0, motion_dropout=0.0, still_relabel=0.5)
    idx = x1.flatten().long()
    still, moving = data.still[idx], ~data.still[idx]
    assert torch.equal(motion[moving], meta["motion"][idx[moving]])  # moving clips keep their own label
    relabelled = still & (motion > 1.0)
    assert set(motion[relabelled].tolist()) <= {5.0, 7.0, 9.0}
    assert 0.35 < relabelled.sum() / still.sum() < 0.65  # about half of the still clips


def test_model_card_of_a_vae_only_fine_tuned_here_lists_its_decoder_rounds(tmp_path):
    """The shipped vae/ carries no training report; a decoder fine-tuned from it has only its decoder rounds."""
    import shutil

    from lumina_research.train.assemble import write_model_card

    tiny = Path(__file__).resolve().parents[1] / "assets" / "lumina-video-tiny"
    for part in ("vae", "transformer"):
        (tmp_path / part).mkdir()
        shutil.copy(tiny / part / "config.json", tmp_path / part / "config.json")
    d = {"recipe": {"lr": 3e-4, "batch": 4, "latent_crop": 6, "latent_frames": 2}, "steps": 3355, "seconds": 2717.0,
         "loss_first20": 0.334, "loss_last20": 0.305, "before": {"psnr_video": 23.66}, "after": {"psnr_video": 23.76}}
    write_model_card(tmp_path, {"decoder_finetune": d, "decoder_finetune_rounds": [d]}, None, None,
                     ModelDefaults.read(tiny))
    card = (tmp_path / "README.md").read_text()
    assert "decoder-only fine-tuning 1" in card and "3355 steps" in card and "PSNR 23.7 -> 23.8 dB" in card
    assert "- VAE:" not in card
