"""LuminaVideoPipeline: encode prompts -> Euler flow sampling with a patch schedule -> CogVideoX decode."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Union

import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.video_processor import VideoProcessor

from lumina.errors import GenerationInterrupted, InvalidRequestError, NonFiniteLatentsError
from lumina.media import write_json
from lumina.models.components import RELEASE_SPATIAL, RELEASE_TEMPORAL, latent_size, vae_compression
from lumina.models.transformer_nextdit import CaptionCache
from lumina.cache import ForwardCounter, StepCache
from lumina.pipelines.defaults import CONFIG_KEY, ModelDefaults
from lumina.pipelines.lora import LuminaVideoLoraLoaderMixin
from lumina.pipelines.memory import holds_8bit
from lumina.pipelines.vae_decode import decode_latents
from lumina.sampling import SampleConfig, euler_step, guide, initial_noise, plan
from lumina.sampling.schedule import TimeAware
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
    cache: Dict[str, Any] = field(default_factory=dict)


SMALL_LATENT_CELLS = 8 * 32 * 32  # latent frames x height x width decoded in one chunk on the CPU
OUTPUT_TYPES = ("np", "pt", "pil", "latent")

# The code a saved folder ships for diffusers' custom-code loading: module file -> the package module it re-exports.
# A re-export, not a copy: the pipeline needs the package's sampling and memory code anyway, and a copy would drift.
SHIPPED_CODE = {
    "pipeline_lumina_video": ("lumina.pipelines.pipeline_lumina_video", "LuminaVideoPipeline"),
    "transformer_nextdit": ("lumina.models.transformer_nextdit", "LuminaNextDiTVideo"),
}


class LuminaVideoPipeline(DiffusionPipeline, LuminaVideoLoraLoaderMixin):
    """Text-to-video with Lumina-Video's multi-scale Next-DiT.

    Any component but the transformer may be None when its inputs are given directly
    (`prompt_embeds`, `output_type="latent"`), which is how checkpoint parity is tested.

    `transformer_2`, optional, is a low-noise expert of the same class (as in diffusers' Wan 2.2 pipelines):
    steps at t >= `expert_from_t` use it. The trajectory of a video is settled at high noise and the details of
    its objects at low noise; a small model trained for the second alone can learn them without unlearning the
    first. The release has none.

    LoRAs load the diffusers way (`load_lora_weights`, `set_adapters`, `fuse_lora`, `unload_lora_weights`; see
    lumina.pipelines.lora): into `transformer`, or with `load_into_transformer_2=True` into the expert.
    """

    model_cpu_offload_seq = "text_encoder->transformer->transformer_2->vae"
    _callback_tensor_inputs = ["latents", "noise_pred", "prompt_embeds", "prompt_attention_mask",
                               "negative_prompt_embeds", "negative_prompt_attention_mask"]
    _optional_components = ["vae", "text_encoder", "tokenizer", "transformer_2"]

    def __init__(self, transformer, vae=None, text_encoder=None, tokenizer=None, transformer_2=None,
                 max_resolution: int = 960, expert_from_t: Optional[float] = None,
                 defaults: Optional[Dict[str, Any]] = None):
        super().__init__()
        if (transformer_2 is None) != (expert_from_t is None):
            raise InvalidRequestError("a low-noise expert needs both transformer_2 and expert_from_t (0 < t < 1)")
        if expert_from_t is not None and not 0.0 < expert_from_t < 1.0:
            raise InvalidRequestError(f"expert_from_t={expert_from_t}; allowed: 0 < t < 1 (0 noise, 1 data)")
        self.register_modules(transformer=transformer, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                              transformer_2=transformer_2)
        ModelDefaults.from_config(defaults, max_resolution).sample_config()  # refuse bad defaults when made
        self.register_to_config(max_resolution=max_resolution, expert_from_t=expert_from_t, defaults=defaults)
        self.video_processor = VideoProcessor(vae_scale_factor=self.vae_compression[1])
        self._interrupt = False
        self._guidance_scale = None
        self._num_timesteps = None
        self._current_timestep = None
        self.batched_guidance = True  # both CFG branches in one forward; memory modes that offload turn it off

    @property
    def defaults(self) -> ModelDefaults:
        """What this model was made for (size, frames, fps, sampling): the `defaults` entry of its config, else the
        release's. `pipe(prompt)` and the CLI and the app start from these."""
        return ModelDefaults.from_config(self.config.get(CONFIG_KEY), self.config.max_resolution)

    def set_defaults(self, defaults: ModelDefaults) -> None:
        """Record what this model was made for in its config, so that it is saved with it."""
        defaults.sample_config()
        self.register_to_config(max_resolution=defaults.max_resolution, defaults=defaults.to_config())

    @classmethod
    def load_config(cls, *args, **kwargs):
        """A saved folder names its shipped code files for `DiffusionPipeline.from_pretrained(dir,
        trust_remote_code=True)`; this class is that code, so it maps them back to its own modules and never runs
        the folder's files (no trust_remote_code needed)."""
        out = super().load_config(*args, **kwargs)
        config = out[0] if isinstance(out, tuple) else out
        if isinstance(config.get("_class_name"), list):
            config["_class_name"] = config["_class_name"][1]
        for entry in config.values():
            if isinstance(entry, list) and len(entry) == 2 and entry[0] in SHIPPED_CODE:
                entry[0] = SHIPPED_CODE[entry[0]][0]
        return out

    def save_pretrained(self, save_directory, *args, **kwargs):
        """diffusers' save, plus the code files its custom-code loading expects: `pipeline_lumina_video.py` beside
        model_index.json (named by its `_class_name`) and `transformer_nextdit.py` in each transformer's folder."""
        super().save_pretrained(save_directory, *args, **kwargs)
        ship_code(Path(save_directory))

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

    @property
    def guidance_scale(self) -> Optional[float]:
        """The guidance of the current step (the release's is time-aware). A step-end callback may set
        `pipe._guidance_scale`, as with diffusers' pipelines: the new value holds for the remaining steps."""
        return self._guidance_scale

    @property
    def do_classifier_free_guidance(self) -> bool:
        """Whether the current step runs the negative branch (guidance is truncated to 0 late in the release's runs)."""
        return bool(self._guidance_scale)

    @property
    def num_timesteps(self) -> Optional[int]:
        """Denoising steps (model evaluations per branch) of the current or last call."""
        return self._num_timesteps

    @property
    def current_timestep(self) -> Optional[float]:
        """The current step on diffusers' clock (1000 = noise, 0 = data; the flow time t runs the other way), which
        diffusers' step caches read."""
        return self._current_timestep

    @property
    def interrupt(self) -> bool:
        """Set by `request_interrupt()` (or `pipe._interrupt = True` in a callback): the call stops before its next
        step and raises GenerationInterrupted, since a half-denoised latent is noise, not a video to return."""
        return self._interrupt

    def request_interrupt(self) -> None:
        """Ask a running call to stop after its current step (e.g. from a UI stop button)."""
        self._interrupt = True

    def _velocities(self, net, x, step, pos, neg, both, captions, counter):
        """(v_pos, v_neg or None) of network `net` at one step, each forward in its cache context. With `both` the two
        guidance branches share one forward, negative first (diffusers' layout, which FasterCache reads), which halves
        the per-call overhead that dominates small models and coarse patch sizes. `captions` is that network's
        CaptionCache (each network projects the captions its own way)."""
        batch, device = x.shape[0], x.device
        t = torch.full((batch,), step.t, device=device)
        motion = torch.full((batch,), step.motion, device=device)
        caching = getattr(net, "is_cache_enabled", False)

        def run(name, hidden, timestep, embeds, motion_score):
            context = net.cache_context(name) if caching else contextlib.nullcontext()
            counter.count(hidden.shape[0], batch)
            with context:
                return net(hidden_states=hidden, timestep=timestep, encoder_hidden_states=embeds[0],
                           encoder_attention_mask=embeds[1], motion_score=motion_score, patch_size=step.patch,
                           caption_cache=captions, return_dict=False)[0]

        if not step.guided:
            return run("cond", x, t, pos, motion), None
        neg_motion = torch.full((batch,), step.neg_motion, device=device)
        if both is not None:
            v = run("uncond_cond", torch.cat([x, x]), t.repeat(2), both, torch.cat([neg_motion, motion]))
            return v[batch:], v[:batch]
        return run("cond", x, t, pos, motion), run("uncond", x, t, neg, neg_motion)

    def _texts(self, prompts: List[str]) -> List[str]:
        if self.text_encoder is None or self.tokenizer is None:
            raise InvalidRequestError("this pipeline has no text encoder: pass prompt_embeds and prompt_attention_mask")
        return [SYSTEM_PROMPT + p for p in prompts]

    def prompt_truncated(self, prompt: Union[str, List[str]]) -> bool:
        """Whether any prompt loses tokens to the 256-token limit."""
        texts = self._texts([prompt] if isinstance(prompt, str) else list(prompt))
        return any(len(ids) > MAX_PROMPT_TOKENS for ids in self.tokenizer(texts, truncation=False)["input_ids"])

    def _encode_text(self, prompts: List[str], device):
        """System prompt + prompts -> hidden_states[-2] and mask, right padded to a multiple of 8, at most 256 tokens."""
        tok = self.tokenizer(self._texts(prompts), padding=True, pad_to_multiple_of=8, max_length=MAX_PROMPT_TOKENS,
                             truncation=True, padding_side="right", return_tensors="pt")
        ids, mask = tok["input_ids"].to(device), tok["attention_mask"].to(device)
        with torch.no_grad():
            out = self.text_encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        return out.hidden_states[-2], mask

    def encode_prompt(self, prompt: Union[None, str, List[str]], negative_prompt: Union[None, str, List[str]] = None,
                      do_classifier_free_guidance: bool = True, num_videos_per_prompt: int = 1,
                      prompt_embeds: Optional[torch.Tensor] = None,
                      prompt_attention_mask: Optional[torch.Tensor] = None,
                      negative_prompt_embeds: Optional[torch.Tensor] = None,
                      negative_prompt_attention_mask: Optional[torch.Tensor] = None, device=None):
        """Both sides of the guidance as diffusers' pipelines return them: (prompt_embeds, prompt_attention_mask,
        negative_prompt_embeds, negative_prompt_attention_mask), each repeated per video; the negative pair is None
        without guidance. The system prompt + prompt -> the text encoder's hidden_states[-2], right padded to a multiple
        of 8, at most 256 tokens; the negative prompt defaults to "". Given embeddings are passed through."""
        device = device or self._execution_device
        if prompt_embeds is None:
            prompts = [prompt] if isinstance(prompt, str) else list(prompt)
            prompt_embeds, prompt_attention_mask = self._encode_text(prompts, device)
        if do_classifier_free_guidance and negative_prompt_embeds is None:
            neg = "" if negative_prompt is None else negative_prompt
            neg = [neg] * prompt_embeds.shape[0] if isinstance(neg, str) else list(neg)
            negative_prompt_embeds, negative_prompt_attention_mask = self._encode_text(neg, device)
        if not do_classifier_free_guidance:
            negative_prompt_embeds = negative_prompt_attention_mask = None

        def per_video(t):
            return None if t is None else t.repeat_interleave(num_videos_per_prompt, 0).to(device)

        return (per_video(prompt_embeds), per_video(prompt_attention_mask), per_video(negative_prompt_embeds),
                per_video(negative_prompt_attention_mask))

    def prepare_latents(self, batch, frames, height, width, dtype, device, generator, shared_noise: float = 0.0):
        """Starting noise; with a list of generators each video's comes from its own (as diffusers' randn_tensor)."""
        shape = (batch, self.transformer.config.in_channels, *self.latent_size(frames, height, width))
        if isinstance(generator, list):
            noise = torch.cat([initial_noise((1, *shape[1:]), g, shared_noise) for g in generator])
        else:
            noise = initial_noise(shape, generator, shared_noise)
        return noise.to(device=device, dtype=dtype)

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

    def denoise(self, x: torch.Tensor, steps, pos, neg, callback_on_step_end: Optional[Callable] = None,
                callback_on_step_end_tensor_inputs=("latents",)):
        """Euler steps of the flow ODE from noise `x` along the planned `steps` (each with its patch size, guidance
        and motion scores); returns the final latent, the log of what ran at each step and the forward counts.

        A step-end callback gets the tensors it asked for and may return new `latents` or prompt embeddings, or set
        `pipe._guidance_scale` (from the next step on). Step caches enabled on a denoiser start clean at each call and
        at each patch-size switch."""
        dtype = self.transformer.dtype
        captions = {id(net): CaptionCache() for net in self.denoisers.values()}
        for net in self.denoisers.values():
            if getattr(net, "is_cache_enabled", False):
                net._reset_stateful_cache()
        counter = ForwardCounter()
        self._interrupt = False
        self._num_timesteps = len(steps)
        override, both, patch_of, schedule_log = None, None, {}, []
        with self.progress_bar(total=len(steps)) as progress, counter.attached(self.denoisers.values()):
            for step in steps:
                if self.interrupt:
                    raise GenerationInterrupted(f"stopped by request after {step.index} of {len(steps)} steps")
                if override is not None:
                    step = dataclasses.replace(step, cfg=override)
                if step.guided and neg is None:
                    raise InvalidRequestError("a callback turned guidance on in a run planned without it, so no "
                                              "negative prompt was encoded: plan guidance > 0 for some step instead")
                self._guidance_scale, self._current_timestep = step.cfg, (1.0 - step.t) * 1000.0
                net = self.transformer_at(step.t)
                if patch_of.get(id(net), step.patch) != step.patch and getattr(net, "is_cache_enabled", False):
                    net._reset_stateful_cache()  # no residual computed at one patch size may serve another
                patch_of[id(net)] = step.patch
                if step.guided and self.batched_guidance and both is None:
                    both = pad_and_stack(neg, pos)  # negative first, as the forward batches them
                v_pos, v_neg = self._velocities(net, x.to(dtype), step, pos, neg, both if step.guided else None,
                                                captions[id(net)], counter)
                velocity = guide(v_pos.float(), None if v_neg is None else v_neg.float(), step.cfg, step.renorm)
                x = euler_step(x, velocity, step.dt)
                if (step.index + 1) % NAN_CHECK_EVERY == 0 or step.index == len(steps) - 1:
                    check_finite(x, step.index, dtype)
                schedule_log.append(
                    {"step": step.index, "t": round(step.t, 6), "patch": step.patch.name,
                     "expert": net is not self.transformer, "cfg": step.cfg,
                     "motion": step.motion, "neg_motion": step.neg_motion if step.guided else None}
                )
                if callback_on_step_end is not None:
                    tensors = {"latents": x, "noise_pred": velocity, "prompt_embeds": pos[0],
                               "prompt_attention_mask": pos[1], "negative_prompt_embeds": neg and neg[0],
                               "negative_prompt_attention_mask": neg and neg[1]}
                    out = callback_on_step_end(self, step.index, step.t,
                                               {k: tensors[k] for k in callback_on_step_end_tensor_inputs}) or {}
                    x = out.get("latents", x)
                    new_pos = (out.get("prompt_embeds", pos[0]), out.get("prompt_attention_mask", pos[1]))
                    new_neg = neg and (out.get("negative_prompt_embeds", neg[0]),
                                       out.get("negative_prompt_attention_mask", neg[1]))
                    if any(a is not b for a, b in zip(new_pos + (new_neg or ()), pos + (neg or ()))):
                        pos, neg, both = new_pos, new_neg, None
                    if self._guidance_scale != step.cfg:
                        override = float(self._guidance_scale or 0.0)
                progress.update()
        return x, schedule_log, counter

    @contextlib.contextmanager
    def step_cache(self, cache: Optional[StepCache], steps):
        """Enable `cache` on every denoiser for one call (diffusers' `enable_cache`, configured for this run's steps
        and clock) and disable it after; None leaves the denoisers as they are (a cache the user enabled stays)."""
        if cache is None:
            yield
            return
        nets = list(self.denoisers.values())
        for net in nets:
            if net.is_cache_enabled:
                raise InvalidRequestError(f"{type(net._cache_config).__name__} is already enabled on the transformer; "
                                          f"call pipe.transformer.disable_cache() or leave cache unset")
        config = cache.config(len(steps), lambda: self._current_timestep, self.defaults.mag_ratios,
                              self.batched_guidance, all(s.guided for s in steps))
        enabled = []
        try:
            for net in nets:
                net.enable_cache(config)
                enabled.append(net)
            yield
        finally:
            for net in enabled:
                net.disable_cache()

    def check_inputs(self, prompt, negative_prompt, height, width, num_frames, config: SampleConfig,
                     num_videos_per_prompt, prompt_embeds, prompt_attention_mask, negative_prompt_embeds,
                     negative_prompt_attention_mask, latents, generator, output_type,
                     callback_on_step_end_tensor_inputs) -> int:
        """Refuse what cannot run, before any work, saying what is allowed; returns the batch size (prompts x
        num_videos_per_prompt)."""
        if output_type not in OUTPUT_TYPES:
            raise InvalidRequestError(f"output_type={output_type!r}; allowed: {', '.join(OUTPUT_TYPES)}")
        if output_type != "latent" and self.vae is None:
            raise InvalidRequestError("this pipeline has no VAE: use output_type='latent'")
        if (prompt is None) == (prompt_embeds is None):
            raise InvalidRequestError("give either a prompt or prompt_embeds (with prompt_attention_mask), not both")
        if prompt is not None and not (isinstance(prompt, str) or (
                isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt))):
            raise InvalidRequestError(f"prompt must be a string or a non-empty list of strings, not {type(prompt).__name__}")
        if prompt_embeds is not None and prompt_attention_mask is None:
            raise InvalidRequestError("prompt_embeds needs prompt_attention_mask (1 = token, 0 = padding)")
        if negative_prompt_embeds is not None and negative_prompt_attention_mask is None:
            raise InvalidRequestError("negative_prompt_embeds needs negative_prompt_attention_mask")
        prompts = 1 if isinstance(prompt, str) else len(prompt) if prompt is not None else prompt_embeds.shape[0]
        if isinstance(negative_prompt, list) and len(negative_prompt) != prompts:
            raise InvalidRequestError(f"{len(negative_prompt)} negative prompts for {prompts} prompts; give one each "
                                      f"or a single string")
        if not (isinstance(num_videos_per_prompt, int) and not isinstance(num_videos_per_prompt, bool)
                and num_videos_per_prompt >= 1):
            raise InvalidRequestError(f"num_videos_per_prompt={num_videos_per_prompt!r}: must be a whole number >= 1")
        batch = prompts * num_videos_per_prompt
        if latents is None:
            check_size_and_frames(width, height, num_frames, self.config.max_resolution)
        else:
            check_latent_shape(tuple(latents.shape), self.transformer.config.in_channels, batch)
        if isinstance(generator, list) and len(generator) != batch:
            raise InvalidRequestError(f"{len(generator)} generators for {batch} videos ({prompts} prompts x "
                                      f"{num_videos_per_prompt} per prompt): give one generator, or one per video")
        bad_inputs = set(callback_on_step_end_tensor_inputs or ()) - set(self._callback_tensor_inputs)
        if bad_inputs:
            raise InvalidRequestError(f"callback tensor inputs {sorted(bad_inputs)}; allowed: {self._callback_tensor_inputs}")
        for net in self.denoisers.values():
            net.check_patch_sizes(config.patch_sizes_used())
        return batch

    @torch.no_grad()
    def __call__(
        self,
        prompt: Union[None, str, List[str]] = None,
        negative_prompt: Union[None, str, List[str]] = None,
        height: Optional[int] = None,
        width: Optional[int] = None,
        num_frames: Optional[int] = None,
        num_inference_steps: Optional[int] = None,
        patch_schedule: Optional[TimeAware] = None,
        guidance_scale: Optional[TimeAware] = None,
        motion_score: Optional[TimeAware] = None,
        negative_motion_score: Optional[TimeAware] = None,
        time_shift: Optional[float] = None,
        renorm: Optional[float] = None,
        shared_noise: Optional[float] = None,
        sample_config: Union[None, str, Mapping[str, Any], SampleConfig] = None,
        num_videos_per_prompt: int = 1,
        prompt_embeds: Optional[torch.Tensor] = None,
        prompt_attention_mask: Optional[torch.Tensor] = None,
        negative_prompt_embeds: Optional[torch.Tensor] = None,
        negative_prompt_attention_mask: Optional[torch.Tensor] = None,
        latents: Optional[torch.Tensor] = None,
        generator: Union[None, torch.Generator, List[torch.Generator]] = None,
        output_type: str = "np",
        return_dict: bool = True,
        callback_on_step_end: Optional[Callable] = None,
        callback_on_step_end_tensor_inputs: Optional[List[str]] = None,
        cache: Union[None, str, StepCache] = None,
    ):
        """Generate videos. Unset values come from the model's own defaults (`pipe.defaults`: its size, frames and
        tuned sampling), so `pipe(prompt, generator=torch.Generator().manual_seed(s))` gives the CLI's and the app's
        video for seed s.

        Values are typed: a time-aware value is a constant or `(v0, (t1, v1), ...)` (v1 from flow time t1 on; 0 =
        noise, 1 = data); schedule text such as "20, 0@0.2" is read by `lumina.syntax.parse_schedule`.
        `num_inference_steps` is the release's `step`: grid points of the flow ODE, so steps - 1 model evaluations
        per guidance branch (2..200). `patch_schedule`: a patch size ("1x2"), a name of the model's schedules
        ("multiscale": its tuned one) or a time-aware schedule of patch sizes. `sample_config` is the base the
        keyword settings override: a preset name, a release-format dict or a SampleConfig (default: the model's).
        `generator`: one for the whole batch, or a list with one per video (prompts x num_videos_per_prompt).
        `cache`: a step cache for this call ("fbc:0.1", "fast", a StepCache; see lumina.cache), or None.

        Returns frames as np (B, F, H, W, 3) in [0, 1], pt (B, F, 3, H, W), pil, or the final latent
        (B, 16, F', H', W') before the VAE scaling factor.
        """
        t_start = time.perf_counter()
        cache = StepCache.parse(cache)
        defaults = self.defaults
        if latents is None:
            height = defaults.height if height is None else height
            width = defaults.width if width is None else width
            num_frames = defaults.frames if num_frames is None else num_frames
        config = defaults.sample_config(
            sample_config, patch=patch_schedule, steps=num_inference_steps, cfg=guidance_scale, motion=motion_score,
            neg_motion=negative_motion_score, time_shift=time_shift, renorm=renorm, shared_noise=shared_noise)
        batch = self.check_inputs(prompt, negative_prompt, height, width, num_frames, config, num_videos_per_prompt,
                                  prompt_embeds, prompt_attention_mask, negative_prompt_embeds,
                                  negative_prompt_attention_mask, latents, generator, output_type,
                                  callback_on_step_end_tensor_inputs)
        steps = plan(config)
        device = self._execution_device
        dtype = self.transformer.dtype

        t0 = time.perf_counter()
        truncated = prompt is not None and self.prompt_truncated(prompt)
        prompt_embeds, prompt_attention_mask, negative_prompt_embeds, negative_prompt_attention_mask = \
            self.encode_prompt(prompt, negative_prompt, any(s.guided for s in steps), num_videos_per_prompt,
                               prompt_embeds, prompt_attention_mask, negative_prompt_embeds,
                               negative_prompt_attention_mask, device)
        t_encode = time.perf_counter() - t0

        if latents is None:
            latents = self.prepare_latents(batch, num_frames, height, width, dtype, device, generator,
                                           config.shared_noise)
        else:
            latents = latents.to(device=device, dtype=torch.float32)
        pos = (prompt_embeds.to(dtype), prompt_attention_mask)
        neg = None if negative_prompt_embeds is None else (negative_prompt_embeds.to(dtype),
                                                            negative_prompt_attention_mask)

        t0 = time.perf_counter()
        with self.step_cache(cache, steps):
            x, schedule_log, counter = self.denoise(latents.float(), steps, pos, neg, callback_on_step_end,
                                                    callback_on_step_end_tensor_inputs or ("latents",))
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
        return LuminaVideoPipelineOutput(frames=frames, schedule=schedule_log, timings=timings, prompt_truncated=truncated,
                                         cache=counter.summary(cache))


def pad_and_stack(first, second):
    """(embeds, mask) of two prompt batches in one, `first` first, padded to one length."""
    length = max(first[0].shape[1], second[0].shape[1])
    embeds = [F.pad(e, (0, 0, 0, length - e.shape[1])) for e in (first[0], second[0])]
    masks = [F.pad(m, (0, length - m.shape[1])) for m in (first[1], second[1])]
    return torch.cat(embeds), torch.cat(masks)


def check_finite(x: torch.Tensor, step: int, dtype: torch.dtype) -> None:
    """Stop before a NaN/inf latent turns into a black video presented as a result."""
    if not torch.isfinite(x).all():
        hint = " fp16 overflows in video DiTs; use bfloat16 or float32." if dtype == torch.float16 else ""
        raise NonFiniteLatentsError(f"the latent became NaN/inf at step {step + 1}; no video was written.{hint}")


def ship_code(folder: Path) -> None:
    """Write the code files of SHIPPED_CODE into a saved pipeline folder and name them in its model_index.json, as
    diffusers' custom-code loading (`trust_remote_code=True`) expects."""
    index_file = folder / "model_index.json"
    index = json.loads(index_file.read_text())
    modules = {module: name for name, (module, _) in SHIPPED_CODE.items()}
    for key, entry in list(index.items()):
        if key == "_class_name":
            index[key] = ["pipeline_lumina_video", entry if isinstance(entry, str) else entry[1]]
            target = folder
        elif isinstance(entry, list) and len(entry) == 2 and entry[0] in modules:
            index[key] = [modules[entry[0]], entry[1]]
            target = folder / key
        else:
            continue
        name = index[key][0]
        module, cls = SHIPPED_CODE[name]
        (target / f"{name}.py").write_text(
            f'"""{cls} for diffusers\' custom-code loading: the code is the installed lumina package\'s\n'
            f'(pip install lumina-video-studio), so a saved model and the package never drift."""\n\n'
            f"from {module} import {cls}  # noqa: F401\n")
    write_json(index_file, index)
