"""Fast paths give the same numbers as the plain SDPA path."""

import pytest
import torch

from tests.builders import random_transformer


def _inputs(dtype=torch.float32, device="cpu"):
    g = torch.Generator().manual_seed(0)
    x = [torch.randn(16, 2, 8, 8, generator=g), torch.randn(16, 4, 8, 12, generator=g)]
    cap = torch.randn(2, 6, 32, generator=g)
    mask = torch.tensor([[1] * 6, [1] * 3 + [0] * 3])
    return ([i.to(device, dtype) for i in x], torch.tensor([0.3, 0.8], device=device), cap.to(device, dtype),
            mask.to(device), torch.tensor([6.0, -1.0], device=device))


def test_compiled_repeated_blocks_match_eager():
    model = random_transformer()
    args = _inputs()
    with torch.no_grad():
        ref = model(*args, "2x2")
        model.compile_repeated_blocks(fullgraph=False, dynamic=True)
        out = model(*args, "2x2")
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="flash attention kernels need a CUDA GPU")
@pytest.mark.parametrize("backend", ["flash", "_native_flash", "_native_cudnn"])
def test_attention_backends_match_native(backend):
    """Unequal videos and caption masks go through the backend's varlen sibling where it takes no mask."""
    from diffusers.models.attention_dispatch import AttentionBackendName, _check_attention_backend_requirements

    try:
        _check_attention_backend_requirements(AttentionBackendName(backend))
    except Exception as err:  # noqa: BLE001 - not installed on this machine
        pytest.skip(f"{backend}: {err}")
    model = random_transformer().to("cuda", torch.bfloat16)
    args = _inputs(torch.bfloat16, "cuda")
    with torch.no_grad():
        native = model(*args, "1x2")
        model.set_attention_backend(backend)
        fast = model(*args, "1x2")
    for a, b in zip(fast, native):
        assert ((a.float() - b.float()).abs().max() / b.float().abs().max()).item() < 2e-2


def test_one_chunk_cpu_decoding_reconstructs_as_well_as_frame_chunks():
    from lumina.pipelines.loading import load_pipeline
    from lumina_research.train.data import ClipSpec, frames_to_tensor, render
    from lumina_research.train.losses import psnr

    pipe, _ = load_pipeline("tiny")
    vae = pipe.vae
    x = torch.stack([frames_to_tensor(render(seed, ClipSpec()).frames) for seed in (11, 12)])
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mean * pipe.vae_scaling_factor
        chunk = vae.num_latent_frames_batch_size
        assert chunk < z.shape[2]  # CogVideoX decodes 2 latent frames per call by default
        chunked = vae.decode(z / pipe.vae_scaling_factor).sample
        whole = pipe.decode_latents(z)
    assert vae.num_latent_frames_batch_size == chunk  # restored
    assert abs(psnr(whole, x) - psnr(chunked, x)) < 0.5
