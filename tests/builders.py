"""Small random components of the real classes, built by the tests themselves (no downloads)."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKLCogVideoX
from transformers import AutoTokenizer, BertConfig, BertModel

from lumina import LuminaNextDiTVideo, LuminaVideoPipeline
from lumina.models.components import minilm_dir, tiny_vae_config
from lumina.pipelines.defaults import ModelDefaults


def random_transformer(cap_feat_dim: int = 32, seed: int = 0, dim: int = 64, n_layers: int = 2) -> LuminaNextDiTVideo:
    torch.manual_seed(seed)
    model = LuminaNextDiTVideo(dim=dim, n_layers=n_layers, n_heads=4, n_kv_heads=2, cap_feat_dim=cap_feat_dim,
                               multiple_of=32)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model.eval()


def random_pipeline(seed: int = 0, vae_levels: int = 4, vae_temporal: int = 4) -> LuminaVideoPipeline:
    """Real classes at toy sizes: Next-DiT, CogVideoX VAE (4 blocks: 8x spatial, 3: 4x; `vae_temporal` frames a
    latent frame), a 2-layer BERT with MiniLM's tokenizer."""
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir()))
    encoder = BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                   num_attention_heads=2, intermediate_size=64, max_position_embeddings=512)).eval()
    vae_cfg = tiny_vae_config()
    vae_cfg.update(block_out_channels=(8,) * vae_levels, norm_num_groups=4,
                   down_block_types=("CogVideoXDownBlock3D",) * vae_levels,
                   up_block_types=("CogVideoXUpBlock3D",) * vae_levels, temporal_compression_ratio=vae_temporal)
    vae = AutoencoderKLCogVideoX(**vae_cfg).eval()
    return LuminaVideoPipeline(transformer=random_transformer(32, seed), vae=vae, text_encoder=encoder,
                               tokenizer=tokenizer, max_resolution=128)


def save_random_pipeline(folder: Path, seed: int = 0, text_encoder: bool = True) -> Path:
    """`text_encoder=False`: saved without text encoder and tokenizer (it then takes prompt_embeds)."""
    pipe = random_pipeline(seed)
    if not text_encoder:
        pipe = LuminaVideoPipeline(transformer=pipe.transformer, vae=pipe.vae, max_resolution=128)
    pipe.set_defaults(ModelDefaults(width=64, height=64, frames=8, fps=8, max_resolution=128, steps=4))
    pipe.save_pretrained(str(folder))
    return folder
