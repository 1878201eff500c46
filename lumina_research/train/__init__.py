"""Training of the bundled tiny Lumina-Video model on the procedural world (CPU-sized recipe).

`python -m lumina_research.train all --out assets/lumina-video-tiny` trains the VAE, caches latents, caption
features and motion labels, trains the multi-scale Next-DiT and writes a diffusers-layout pipeline.
"""
