"""LuminaVideoPipeline: encode prompts -> Euler flow sampling with a patch schedule -> CogVideoX decode."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Union

import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.video_processor import VideoProcessor

from lumina.models.components import RELEASE_SPATIAL, RELEASE_TEMPORAL, latent_size
from lumina.errors import GenerationInterrupted, InvalidRequestError, NonFiniteLatentsError
from lumina.models.components import vae_compression
from lumina.models.transformer_nextdit import CaptionCache
from lumina.pipelines.memory import holds_8bit
from lumina.pipelines.vae_decode import decode_latents
from lumina.sampling import (SampleConfig, coerce_setting, euler_step, guide, initial_noise, plan,
                             resolve_sample_config)
from lumina.validation import check_latent_shape, check_size_and_frames

SYSTEM_PROMPT = (
    "You are an assistant designed to generate high-quality videos with the highest degree of image-text "
    "alignment based on user prompts. <Prompt Start> "
)
MAX_PROMPT_TOKENS = 256
RELEASE_VAE_SCALING = 1.15258426
NAN_CHECK_EVERY = 8


@dataclass
class LuminaVideoPipelineOutput(BaseOutput):
    """frames: the video (np/pt/pil) or the final latent; schedule: what ran at each step."""

    frames: Any
    schedule: List[Dict[str, Any]] = field(default_factory=list)
    timings: Dict[str, float] = field(default_factory=dict)
    prompt_truncated: bool = False


SMALL_LATENT_CELLS = 8 * 32 * 32  # latent frames x height x width decoded in one chunk on the CPU


class LuminaVideoPipeline(DiffusionPipeline):
    """Text-to-video with Lumina-Video's multi-scale Next-DiT.

    Any component but the transformer may be None when its inputs are given directly
    (`prompt_embeds`, `output_type="latent"`), which is how checkpoint parity is tested.

    `transformer_2`, optional, is a low-noise expert of the same class (as in diffusers' Wan 2.2 pipelines):
    steps at t >= `expert_from_t` use it. The trajectory of a video is settled at high noise and the details of
    its objects at low noise; a small model trained for the second alone can learn them without unlearning the
    first. The release has none.
    """

    model_cpu_offload_seq = "text_encoder->transformer->transformer_2->vae"
    _callback_tensor_inputs = ["latents"]
    _optional_components = ["vae", "text_encoder", "tokenizer", "transformer_2"]

    def __init__(self, transformer, vae=None, text_encoder=None, tokenizer=None, transformer_2=None,
                 max_resolution: int = 960, expert_from_t: Optional[float] = None):
        super().__init__()
        if (transformer_2 is None) != (expert_from_t is None):
            raise InvalidRequestError("a low-noise expert needs both transformer_2 and expert_from_t (0 < t < 1)")
        if expert_from_t is not None and not 0.0 < expert_from_t < 1.0:
            raise InvalidRequestError(f"expert_from_t={expert_from_t}; allowed: 0 < t < 1 (0 noise, 1 data)")
        self.register_modules(transformer=transformer, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                              transformer_2=transformer_2)
        self.register_to_config(max_resolution=max_resolution, expert_from_t=expert_from_t)
        self.video_processor = VideoProcessor(vae_scale_factor=self.vae_compression[1])
        self._interrupt = False
        self.batched_guidance = True  # both CFG branches in one forward; memory modes that offload turn it off

    @property
    def vae_compression(self) -> tuple:
        """(video frames a latent frame, pixels a latent cell per axis) of the VAE; the release's without one."""
        return vae_compression(self.vae.config) if self.vae is not None else (RELEASE_TEMPORAL, RELEASE_SPATIAL)

    def latent_size(self, frames: int, height: int, width: int) -> tuple:
        """(latent frames, height, width) of a video through this pipeline's VAE."""
        return latent_size(frames, height, width, *self.vae_compression)

    @property
    def vae_scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor) if self.vae is not None else RELEASE_VAE_SCALING

    def to(self, *args, **kwargs):
        """DiffusionPipeline.to, except that components with bitsandbytes 8-bit layers stay where they were quantized:
        nn.Module.to moves an int8 weight but not the row scales bitsandbytes keeps beside it (see
        lumina.pipelines.memory.quantization_devices). Model offload calls this too, and so keeps them in place."""
        held = {name: module for name, module in self.components.items() if holds_8bit(module)}
        for name in held:
            object.__setattr__(self, name, None)
        try:
            return super().to(*args, **kwargs)
        finally:
            for name, module in held.items():
                object.__setattr__(self, name, module)

    @property
    def denoisers(self) -> Dict[str, Any]:
        """The transformer and, if present, the low-noise expert, by component name (memory modes treat both)."""
        expert = self.transformer_2
        return {"transformer": self.transformer, **({"transformer_2": expert} if expert is not None else {})}

    def transformer_at(self, t: float):
        """The network that denoises at time t: the low-noise expert from `expert_from_t` on, if there is one."""
        expert = self.transformer_2
        return expert if expert is not None and t >= self.config.expert_from_t else self.transformer

    def _velocities(self, net, x, step, pos, neg, both, captions):
        """(v_pos, v_neg or None) of network `net` at one step; with `both` the two guidance branches share one
        forward, which halves the per-call overhead that dominates small models and coarse patch sizes.
        `captions` is that network's CaptionCache (each network projects the captions its own way)."""
        batch, device = x.shape[0], x.device
        t = torch.full((batch,), step.t, device=device)
        motion = torch.full((batch,), step.motion, device=device)
        if not step.guided:
            return net(x, t, *pos, motion, step.patch, captions), None
        neg_motion = torch.full((batch,), step.neg_motion, device=device)
        if both is not None:
            v = net(torch.cat([x, x]), t.repeat(2), *both, torch.cat([motion, neg_motion]), step.patch, captions)
            return v[:batch], v[batch:]
        return (net(x, t, *pos, motion, step.patch, captions),
                net(x, t, *neg, neg_motion, step.patch, captions))

    def interrupt(self) -> None:
        """Ask a running call to stop after its current step (e.g. from a UI stop button)."""
        self._interrupt = True

    def encode_prompt(self, prompt: Union[str, List[str]], device=None):
        """System prompt + prompt -> hidden_states[-2], right padded to a multiple of 8, at most 256 tokens.

        Returns (embeds, mask, truncated) where truncated says whether any prompt lost tokens.
        """
        if self.text_encoder is None or self.tokenizer is None:
            raise InvalidRequestError("this pipeline has no text encoder: pass prompt_embeds and prompt_attention_mask")
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        texts = [SYSTEM_PROMPT + p for p in prompts]
        device = device or self._execution_device
        full = self.tokenizer(texts, padding=False, truncation=False)["input_ids"]
        truncated = any(len(ids) > MAX_PROMPT_TOKENS for ids in full)
        tok = self.tokenizer(
            texts,
            padding=True,
            pad_to_multiple_of=8,
            max_length=MAX_PROMPT_TOKENS,
            truncation=True,
            padding_side="right",
            return_tensors="pt",
        )
        ids, mask = tok["input_ids"].to(device), tok["attention_mask"].to(device)
        with torch.no_grad():
            out = self.text_encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        return out.hidden_states[-2], mask, truncated

    def prepare_latents(self, batch, frames, height, width, dtype, device, generator, shared_noise: float = 0.0):
        shape = (batch, self.transformer.config.in_channels, *self.latent_size(frames, height, width))
        return initial_noise(shape, generator, shared_noise).to(device=device, dtype=dtype)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Latent -> video in [-1, 1], (B, C, F, H, W), through `vae_decode.decode_latents`: diffusers' decode
        (and tiling) with memory that stays flat as latent frames grow (diffusers#10035, #10091).

        Small latents on the CPU are decoded in one temporal chunk instead of CogVideoX's 2-latent-frame
        chunks: the larger convolutions take oneDNN's fast path (about 3x faster for the tiny model). Group
        norms then see all frames at once, so pixels differ slightly, not the quality (reconstruction PSNR
        within 0.5 dB, tested); large latents keep the memory-saving chunks.
        """
        small = latents.device.type == "cpu" and latents[0, 0].numel() <= SMALL_LATENT_CELLS
        z = latents.to(self.vae.dtype) / self.vae_scaling_factor
        return decode_latents(self.vae, z, chunk=latents.shape[2] if small else None)

    def enable_vae_tiling(self):
        self.vae.enable_tiling()

    @torch.no_grad()
    def __call__(
        self,
        prompt: Union[None, str, List[str]] = None,
        negative_prompt: Union[None, str, List[str]] = None,
        height: Optional[int] = None,
        width: Optional[int] = None,
        num_frames: Optional[int] = None,
        sample_config: Union[None, str, Dict[str, Any], SampleConfig] = None,
        num_inference_steps: Optional[int] = None,
        patch_schedule=None,
        guidance_scale=None,
        motion_score=None,
        negative_motion_score=None,
        time_shift: Optional[float] = None,
        renorm: Optional[float] = None,
        shared_noise: Optional[float] = None,
        prompt_embeds: Optional[torch.Tensor] = None,
        prompt_attention_mask: Optional[torch.Tensor] = None,
        negative_prompt_embeds: Optional[torch.Tensor] = None,
        negative_prompt_attention_mask: Optional[torch.Tensor] = None,
        latents: Optional[torch.Tensor] = None,
        generator: Optional[torch.Generator] = None,
        output_type: str = "np",
        return_dict: bool = True,
        callback_on_step_end: Optional[Callable] = None,
        callback_on_step_end_tensor_inputs: Optional[List[str]] = None,
    ):
        """Generate videos.

        `sample_config` is a preset name, a release-format dict or a SampleConfig; the keyword settings
        after it override its fields (`num_inference_steps` is the release's `step`: grid points, so one
        fewer model evaluation per branch). Returns frames as np (B, F, H, W, 3) in [0, 1], pt
        (B, F, 3, H, W), pil, or the final latent (B, 16, F', H', W') before the VAE scaling factor.
        """
        t_start = time.perf_counter()
        if output_type not in ("np", "pt", "pil", "latent"):
            raise InvalidRequestError(f"output_type={output_type!r}; allowed: np, pt, pil, latent")
        if output_type != "latent" and self.vae is None:
            raise InvalidRequestError("this pipeline has no VAE: use output_type='latent'")
        config = resolve_sample_config(sample_config).replace(
            steps=num_inference_steps, patch=coerce_setting(patch_schedule, "patch"),
            cfg=coerce_setting(guidance_scale, "cfg"), motion=coerce_setting(motion_score, "motion"),
            neg_motion=coerce_setting(negative_motion_score, "negMotion"), time_shift=time_shift, renorm=renorm,
            shared_noise=shared_noise,
        )
        steps = plan(config)
        supported = {p.name for p in self.transformer.supported_patch_sizes()}
        unknown = sorted({s.patch.name for s in steps} - supported)
        if unknown:
            raise InvalidRequestError(
                f"patch sizes {unknown} are not in this model; it supports {sorted(supported)}"
            )
        device = self._execution_device
        dtype = self.transformer.dtype
        callback_inputs = callback_on_step_end_tensor_inputs or ["latents"]
        bad_inputs = set(callback_inputs) - set(self._callback_tensor_inputs)
        if bad_inputs:
            raise InvalidRequestError(f"callback tensor inputs {sorted(bad_inputs)}; allowed: {self._callback_tensor_inputs}")

        t0 = time.perf_counter()
        truncated = False
        if prompt_embeds is None:
            if prompt is None:
                raise InvalidRequestError("give a prompt or prompt_embeds with prompt_attention_mask")
            prompt_embeds, prompt_attention_mask, truncated = self.encode_prompt(prompt, device)
        elif prompt_attention_mask is None:
            raise InvalidRequestError("prompt_embeds needs prompt_attention_mask (1 = token, 0 = padding)")
        batch = prompt_embeds.shape[0]
        needs_negative = any(s.guided for s in steps)
        if needs_negative and negative_prompt_embeds is None:
            neg = negative_prompt if negative_prompt is not None else ""
            neg = [neg] * batch if isinstance(neg, str) else neg
            negative_prompt_embeds, negative_prompt_attention_mask, _ = self.encode_prompt(neg, device)
        elif negative_prompt_embeds is not None and negative_prompt_attention_mask is None:
            raise InvalidRequestError("negative_prompt_embeds needs negative_prompt_attention_mask")
        t_encode = time.perf_counter() - t0

        if latents is None:
            check_size_and_frames(width, height, num_frames, self.config.max_resolution)
            latents = self.prepare_latents(batch, num_frames, height, width, dtype, device, generator,
                                           config.shared_noise)
        else:
            check_latent_shape(tuple(latents.shape), self.transformer.config.in_channels, batch)
            latents = latents.to(device=device, dtype=torch.float32)
        pos = (prompt_embeds.to(device, dtype), prompt_attention_mask.to(device))
        neg = (
            (negative_prompt_embeds.to(device, dtype), negative_prompt_attention_mask.to(device))
            if needs_negative else None
        )

        both = pad_and_stack(pos, neg) if needs_negative and self.batched_guidance else None
        captions = {id(net): CaptionCache() for net in self.denoisers.values()}

        self._interrupt = False
        t0 = time.perf_counter()
        x = latents.float()
        schedule_log = []
        with self.progress_bar(total=len(steps)) as progress:
            for step in steps:
                if self._interrupt:
                    raise GenerationInterrupted(f"stopped by request after {step.index} of {len(steps)} steps")
                net = self.transformer_at(step.t)
                v_pos, v_neg = self._velocities(net, x.to(dtype), step, pos, neg, both, captions[id(net)])
                x = euler_step(x, guide(v_pos.float(), None if v_neg is None else v_neg.float(), step.cfg, step.renorm), step.dt)
                if (step.index + 1) % NAN_CHECK_EVERY == 0 or step.index == len(steps) - 1:
                    check_finite(x, step.index, dtype)
                schedule_log.append(
                    {"step": step.index, "t": round(step.t, 6), "patch": step.patch.name,
                     "expert": net is not self.transformer, "cfg": step.cfg,
                     "motion": step.motion, "neg_motion": step.neg_motion if step.guided else None}
                )
                if callback_on_step_end is not None:
                    cb_out = callback_on_step_end(self, step.index, step.t, {"latents": x})
                    x = (cb_out or {}).get("latents", x)
                progress.update()
        t_denoise = time.perf_counter() - t0

        t0 = time.perf_counter()
        if output_type == "latent":
            frames = x
        else:
            video = self.decode_latents(x)
            frames = self.video_processor.postprocess_video(video.float(), output_type=output_type)
        t_decode = time.perf_counter() - t0
        timings = {"encode": t_encode, "denoise": t_denoise, "decode": t_decode, "total": time.perf_counter() - t_start}
        self.maybe_free_model_hooks()
        if not return_dict:
            return (frames,)
        return LuminaVideoPipelineOutput(frames=frames, schedule=schedule_log, timings=timings, prompt_truncated=truncated)


def pad_and_stack(pos, neg):
    """(embeds, mask) of the positive then the negative prompts in one batch, padded to one length."""
    length = max(pos[0].shape[1], neg[0].shape[1])
    embeds = [F.pad(e, (0, 0, 0, length - e.shape[1])) for e in (pos[0], neg[0])]
    masks = [F.pad(m, (0, length - m.shape[1])) for m in (pos[1], neg[1])]
    return torch.cat(embeds), torch.cat(masks)


def check_finite(x: torch.Tensor, step: int, dtype: torch.dtype) -> None:
    """Stop before a NaN/inf latent turns into a black video presented as a result."""
    if not torch.isfinite(x).all():
        hint = " fp16 overflows in video DiTs; use bfloat16 or float32." if dtype == torch.float16 else ""
        raise NonFiniteLatentsError(f"the latent became NaN/inf at step {step + 1}; no video was written.{hint}")
