"""LuminaV2APipeline: video (+ optional prompt) -> soundtrack of exactly the video's duration.

video frames --(visual_encoder @ visual_fps)--> visual tokens ─┐
video frames --(sync_encoder @ the video's fps)--> sync feats ──┤
video frames --(contact_detector)--> contact onset track ──────┼─> LuminaV2ATransformer velocity
prompt --(tokenizer, text_encoder)--> caption tokens ──────────┘      │ Euler + CFG (lumina.sampling)
                                                     audio latent <───┘
audio latent --(vae.decode)--> normalized log-mel --(vocoder | Griffin-Lim)--> 16 kHz waveform

Sampling uses the engine's ``plan`` / ``guide`` / ``euler_step`` with a ``SampleConfig``; guidance
follows the release's convention ``pos + cfg * (pos - neg)`` (cfg = 0: no negative pass), the negative
pass being the same model with video, sync and text replaced by their learned null embeddings.  A member with
``default_sync_guidance`` runs a third pass without the sync features, so that their own hits get a guidance of their
own (``__call__``'s ``sync_guidance_scale``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput

from lumina.errors import InvalidRequestError, ModelFilesError, NonFiniteLatentsError
from lumina.sampling import SampleConfig, euler_step, guide, plan
from lumina.v2a.contacts import onset_track
from lumina.v2a.audio import MelConfig, denormalize, fit_length, griffin_lim_vocoder, log_mel, normalize, pad_frames
from lumina.v2a.encoders import encode_sync, encode_visual, is_clip_vision, video_frames, visual_frame_indices

# Callers holding a whole clip read it at most this size on its short side (`lumina.media.read_video(short_side=)`):
# above what any encoder takes (CLIP's 224 px, the tiny encoders' 32 px, the impact track's 64 px), so they average
# nearly the same pixels (a smaller clip is untouched) for a fraction of the memory.
READ_SHORT_SIDE = 256

DEFAULT_MAX_SECONDS = 10.0


@dataclass
class LuminaV2APipelineOutput(BaseOutput):
    """audio: float32 (N,) at sample_rate, N = round(duration * sample_rate); mel: generated ln-mel (M, n_mels);
    contacts: the contact times (s) the hits were placed on (None for a model without an onset track)."""

    audio: np.ndarray
    sample_rate: int = 16000
    mel: Optional[torch.Tensor] = None
    contacts: Optional[np.ndarray] = None
    timings: Dict[str, float] = field(default_factory=dict)


class LuminaV2APipeline(DiffusionPipeline):
    """Video-to-audio with a Next-DiT over audio-latent, visual and text tokens (see lumina.v2a.model)."""

    model_cpu_offload_seq = "text_encoder->visual_encoder->sync_encoder->transformer->vae->vocoder"
    _optional_components = ["vocoder", "text_encoder", "tokenizer", "contact_detector"]

    def __init__(
        self,
        transformer,
        vae,
        sync_encoder,
        visual_encoder,
        vocoder=None,
        text_encoder=None,
        tokenizer=None,
        contact_detector=None,
        sample_rate: int = 16000,
        n_fft: int = 1024,
        hop_length: int = 256,
        n_mels: int = 128,
        fmin: float = 0.0,
        fmax: float = 8000.0,
        mel_norm_mean: float = -5.0,
        mel_norm_scale: float = 4.0,
        visual_fps: float = 8.0,
        max_seconds: float = DEFAULT_MAX_SECONDS,
        max_prompt_tokens: int = 77,
        default_steps: int = 16,
        default_guidance: float = 2.0,
        default_time_shift: float = 1.0,
        default_sync_guidance: Optional[float] = None,
        onset_delay: float = 0.0,
        text_encoder_source: Optional[str] = None,
    ):
        super().__init__()
        if vocoder is not None:  # the vocoder fixes the waveform's hop and rate: the mel must be made at its pace
            hop_length, sample_rate = vocoder_hop(vocoder), int(vocoder.config.sampling_rate)
        self.register_modules(transformer=transformer, vae=vae, sync_encoder=sync_encoder, visual_encoder=visual_encoder,
                              vocoder=vocoder, text_encoder=text_encoder, tokenizer=tokenizer,
                              contact_detector=contact_detector)
        self.register_to_config(
            sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, fmin=fmin, fmax=fmax,
            mel_norm_mean=mel_norm_mean, mel_norm_scale=mel_norm_scale, visual_fps=visual_fps,
            max_seconds=max_seconds, max_prompt_tokens=max_prompt_tokens, default_steps=default_steps,
            default_guidance=default_guidance, default_time_shift=default_time_shift,
            default_sync_guidance=default_sync_guidance, onset_delay=onset_delay, text_encoder_source=text_encoder_source,
        )
        self.check_parts()

    def check_parts(self) -> None:
        """Refuse parts that do not fit together (before any work), naming what to change."""
        problems = parts_mismatches(self.transformer, self.vae, self.sync_encoder, self.visual_encoder, self.vocoder,
                                    self.text_encoder, int(self.config.n_mels), self.contact_detector)
        if problems:
            raise ModelFilesError("the V2A pipeline's parts do not fit together: " + "; ".join(problems))

    # -- geometry ---------------------------------------------------------------------------------

    @property
    def mel_config(self) -> MelConfig:
        c = self.config
        return MelConfig(sample_rate=c.sample_rate, n_fft=c.n_fft, hop_length=c.hop_length, n_mels=c.n_mels,
                         fmin=c.fmin, fmax=c.fmax, norm_mean=c.mel_norm_mean, norm_scale=c.mel_norm_scale)

    @property
    def vae_downsample(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def vae_scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    def latent_frames(self, num_samples: int) -> int:
        return math.ceil(self.mel_config.num_frames(num_samples) / self.vae_downsample)

    def latent_times(self, n_latent: int) -> torch.Tensor:
        return latent_times(n_latent, self.vae_downsample, self.mel_config)

    def check_video(self, frames, fps) -> np.ndarray:
        """The frames as the encoders take them (uint8 kept, `video_frames`); refuses a bad fps or a clip longer
        than ``max_seconds``."""
        try:
            fps = float(fps)
        except (TypeError, ValueError):
            raise InvalidRequestError(f"fps={fps!r} is not a number") from None
        if not math.isfinite(fps) or fps <= 0:
            raise InvalidRequestError(f"fps={fps!r}: the frame rate must be a positive number")
        try:
            frames = video_frames(frames)
        except ValueError as err:
            raise InvalidRequestError(str(err)) from None
        if len(frames) == 0:
            raise InvalidRequestError("the video has no frames")
        seconds = len(frames) / fps
        limit = float(self.config.max_seconds)
        if seconds > limit + 1e-6:
            raise InvalidRequestError(
                f"the video is {seconds:.2f} s long ({len(frames)} frames at {fps:g} fps); Lumina-V2A makes sound "
                f"for at most {limit:g} s per call (max_seconds={limit:g}): trim the video or split it into parts"
            )
        return frames

    # -- conditions -------------------------------------------------------------------------------

    @torch.no_grad()
    def encode_prompt(self, prompt: Optional[str], device=None):
        """(features (1, L, D), mask (1, L)) of the prompt, or (None, None) for no prompt."""
        if prompt is None or not str(prompt).strip():
            return None, None
        if self.text_encoder is None or self.tokenizer is None:
            return None, None
        device = device or self._execution_device
        tok = self.tokenizer([str(prompt)], padding=True, truncation=True, max_length=self.config.max_prompt_tokens,
                             return_tensors="pt")
        ids, mask = tok["input_ids"].to(device), tok["attention_mask"].to(device)
        out = self.text_encoder(input_ids=ids, attention_mask=mask)
        return out.last_hidden_state, mask

    @torch.no_grad()
    def encode_video(self, frames: np.ndarray, fps: float, device=None) -> Dict[str, torch.Tensor]:
        """Visual tokens at visual_fps and sync features at the video's fps, each with its times (s)."""
        device = device or self._execution_device
        idx, vtimes = visual_frame_indices(len(frames), fps, self.config.visual_fps)
        visual = encode_visual(self.visual_encoder, frames[idx], self.transformer.config.visual_grid)
        sync = encode_sync(self.sync_encoder, frames)
        return {
            "visual": visual.unsqueeze(0).to(device),
            "visual_times": torch.as_tensor(vtimes, dtype=torch.float32, device=device),
            "sync": sync.unsqueeze(0).to(device),
            "sync_times": torch.arange(len(frames), dtype=torch.float32, device=device) / float(fps),
        }

    def encode_contacts(self, frames: np.ndarray, fps: float, n_latent: int, contacts=None):
        """(contact times (s), onset track (n_latent, onset_channels)), or (None, None) for a model without one.
        ``contacts`` given: those times (checked), else the contact detector's."""
        channels = int(self.transformer.config.onset_channels)
        if not channels:
            if contacts is not None:
                raise InvalidRequestError("this V2A model has no onset track: it cannot take contact times")
            return None, None
        if contacts is None:
            times = self.contact_detector.detect(frames, fps)
        else:
            try:
                times = np.asarray(contacts, dtype=np.float64).reshape(-1)
            except (TypeError, ValueError):
                raise InvalidRequestError(f"contacts={contacts!r}: give contact times as numbers of seconds, e.g. "
                                          "[0.5, 1.25] (lumina.syntax.parse_numbers reads them from text)") from None
            seconds = len(frames) / fps
            if not np.all(np.isfinite(times)) or np.any(times < 0) or np.any(times > seconds):
                raise InvalidRequestError(f"contact times must be seconds within the video (0 to {seconds:.2f}); got "
                                          f"{[round(float(x), 3) for x in times]}")
            times = np.sort(times)
        cfg = self.mel_config
        # onset_delay: a member that sounds its hits early (measured: mean offset of its hits) is given them that late
        track = onset_track(times + float(self.config.onset_delay), n_latent, self.vae_downsample, cfg.hop_length,
                            cfg.sample_rate)
        return times, track

    # -- audio latents ----------------------------------------------------------------------------

    @torch.no_grad()
    def encode_audio(self, wave) -> torch.Tensor:
        """Waveform (N,) at sample_rate -> scaled audio latent (1, C, T', F') (posterior mean)."""
        cfg = self.mel_config
        mel = pad_frames(normalize(log_mel(wave, cfg), cfg), self.vae_downsample, cfg)
        x = mel[None, None].to(device=self.vae.device, dtype=self.vae.dtype)
        return self.vae.encode(x).latent_dist.mode() * self.vae_scaling_factor

    def reconstruct(self, wave, griffin_lim_iters: int = 32) -> np.ndarray:
        """wave -> VAE -> vocoder: the best the decoding path can do (an upper bound for generated audio)."""
        return self.decode_latents(self.encode_audio(wave), len(wave), griffin_lim_iters)[0]

    # -- decoding ---------------------------------------------------------------------------------

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor, num_samples: int, griffin_lim_iters: int = 32):
        """Audio latent (1, C, T, F) -> (waveform float32 (num_samples,), ln-mel (M, n_mels))."""
        cfg = self.mel_config
        mel_norm = self.vae.decode(latents.to(self.vae.dtype) / self.vae_scaling_factor).sample
        n_mel = cfg.num_frames(num_samples)
        logmel = denormalize(mel_norm[0, 0, :n_mel].float(), cfg)
        if self.vocoder is not None:
            wave = self.vocoder(logmel.to(self.vocoder.dtype).unsqueeze(0)).reshape(-1).float()
            wave = fit_length(wave, num_samples)
        else:
            wave = griffin_lim_vocoder(logmel.cpu(), cfg, num_samples, griffin_lim_iters)
        return wave.cpu().numpy().astype(np.float32), logmel.cpu()

    # -- sampling ---------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        video,
        fps: float,
        prompt: Optional[str] = None,
        num_inference_steps: Optional[int] = None,
        guidance_scale: Optional[float] = None,
        time_shift: Optional[float] = None,
        renorm: float = -1.0,
        generator: Optional[torch.Generator] = None,
        latents: Optional[torch.Tensor] = None,
        griffin_lim_iters: int = 32,
        output_type: str = "np",
        return_dict: bool = True,
        contacts: Optional[Sequence[float]] = None,
        sync_guidance_scale: Optional[float] = None,
    ):
        """Sound for ``video`` (uint8 or float (T, H, W, 3) frames) at ``fps``.

        ``num_inference_steps`` counts grid points like the release's ``step`` (one fewer model
        evaluation); ``guidance_scale`` is the release's cfg (0 = unguided). output_type "np" returns the
        waveform, "latent" the final latent in ``audio``.  ``contacts``: contact times (s) to place the hits on instead
        of the detector's (a model with an onset track only); the times used come back in ``contacts``.
        ``sync_guidance_scale`` (a model with an onset track; default the member's ``default_sync_guidance``, None =
        ``guidance_scale``): the sync features' own guidance.  A third pass without them splits the guided velocity
        into ``guide(no_sync, neg, cfg) + (1 + sync_cfg) (pos - no_sync)``: the hits the onset track places keep the
        full guidance while the hits the sync features make on their own (out of their training world, mostly false)
        are not amplified with them.
        """
        t_start = time.perf_counter()
        if output_type not in ("np", "latent"):
            raise InvalidRequestError(f"output_type={output_type!r}; allowed: np, latent")
        frames = self.check_video(video, fps)
        fps = float(fps)
        c = self.config
        steps = num_inference_steps if num_inference_steps is not None else c.default_steps
        cfg_scale = float(guidance_scale if guidance_scale is not None else c.default_guidance)
        sync_cfg = sync_guidance_scale if sync_guidance_scale is not None else c.default_sync_guidance
        if sync_cfg is not None and not (isinstance(sync_cfg, (int, float)) and math.isfinite(sync_cfg) and sync_cfg >= 0):
            raise InvalidRequestError(f"sync_guidance_scale={sync_cfg!r}: give a number >= 0 (or None: the same as "
                                      "guidance_scale)")
        sync_cfg = None if sync_cfg is None else float(sync_cfg)
        shift = float(time_shift if time_shift is not None else c.default_time_shift)
        try:
            sample_config = SampleConfig(patch="1x2", steps=int(steps), time_shift=shift, renorm=renorm, cfg=cfg_scale,
                                         motion=0.0, neg_motion=0.0)
        except ValueError as err:
            raise InvalidRequestError(str(err)) from None
        device = self._execution_device
        dtype = self.transformer.dtype

        t0 = time.perf_counter()
        cond = self.encode_video(frames, fps, device)
        cap, cap_mask = self.encode_prompt(prompt, device)
        num_samples = int(round(len(frames) / fps * c.sample_rate))
        n_lat = self.latent_frames(num_samples)
        contact_times, onsets = self.encode_contacts(frames, fps, n_lat, contacts)
        t_encode = time.perf_counter() - t0

        tcfg = self.transformer.config
        shape = (1, tcfg.latent_channels, n_lat, tcfg.latent_freq)
        if latents is None:
            latents = torch.randn(shape, generator=generator, dtype=torch.float32, device="cpu")
        elif tuple(latents.shape) != shape:
            raise InvalidRequestError(f"latents have shape {tuple(latents.shape)}; this video needs {shape}")
        x = latents.to(device=device, dtype=torch.float32)
        audio_times = self.latent_times(n_lat).to(device)

        steps_plan = plan(sample_config)
        guided = any(s.guided for s in steps_plan)
        split_sync = guided and onsets is not None and sync_cfg is not None and sync_cfg != cfg_scale
        batch = 3 if split_sync else 2 if guided else 1

        def expand(v):
            return None if v is None else v.expand(batch, *v.shape[1:])

        drop = torch.tensor([False, True, False][:batch], device=device)
        sync = expand(cond["sync"]).to(dtype)
        if split_sync:  # zero sync features, as in training's sync dropout: hits from the onset track alone
            sync = sync * torch.tensor([1.0, 1.0, 0.0], device=device, dtype=dtype).view(-1, 1, 1)
        args = dict(visual=expand(cond["visual"]).to(dtype), visual_times=cond["visual_times"],
                    sync=sync, sync_times=cond["sync_times"], audio_times=audio_times,
                    cap_feats=expand(cap), cap_mask=expand(cap_mask), drop=drop,
                    onsets=None if onsets is None else onsets[None].to(device=device, dtype=dtype).expand(batch, -1, -1))
        t0 = time.perf_counter()
        for step in steps_plan:
            xin = x.to(dtype).expand(batch, *x.shape[1:])
            v = self.transformer(xin, torch.full((batch,), step.t, device=device), **args).float()
            if step.guided and split_sync:
                velocity = guide(v[2:], v[1:2], step.cfg, step.renorm) + (1.0 + sync_cfg) * (v[:1] - v[2:])
            elif step.guided:
                velocity = guide(v[:1], v[1:], step.cfg, step.renorm)
            else:
                velocity = v[:1]
            x = euler_step(x, velocity, step.dt)
        if not torch.isfinite(x).all():
            raise NonFiniteLatentsError("the audio latent became NaN/inf; no audio was produced")
        t_denoise = time.perf_counter() - t0

        t0 = time.perf_counter()
        if output_type == "latent":
            audio, mel = x, None
        else:
            audio, mel = self.decode_latents(x, num_samples, griffin_lim_iters)
        t_decode = time.perf_counter() - t0
        timings = {"encode": t_encode, "denoise": t_denoise, "decode": t_decode, "total": time.perf_counter() - t_start}
        self.maybe_free_model_hooks()
        if not return_dict:
            return (audio,)
        return LuminaV2APipelineOutput(audio=audio, sample_rate=int(c.sample_rate), mel=mel, contacts=contact_times,
                                       timings=timings)


def vocoder_hop(vocoder) -> int:
    """Waveform samples per mel frame of a HiFi-GAN vocoder (the product of its upsampling rates)."""
    return int(np.prod(vocoder.config.upsample_rates))


def parts_mismatches(transformer, vae, sync_encoder, visual_encoder, vocoder, text_encoder, n_mels: int,
                     contact_detector=None) -> List[str]:
    """What does not fit between the parts of a V2A pipeline, each with the change that fixes it ([] = all fit)."""
    t = transformer.config
    out: List[str] = []
    v = vae.config
    onset_channels = int(t.onset_channels)
    if onset_channels and onset_channels != 2 ** (len(v.block_out_channels) - 1):
        out.append(f"the transformer has onset_channels={onset_channels} but the VAE groups "
                   f"{2 ** (len(v.block_out_channels) - 1)} mel frames per latent frame: they must be equal")
    if onset_channels and contact_detector is None:
        out.append("the transformer reads a contact onset track (onset_channels) but the pipeline has no "
                   "contact_detector: add a lumina.v2a.contacts.V2AContactDetector")
    if v.in_channels != 1 or v.out_channels != 1:
        out.append(f"the VAE has {v.in_channels} input / {v.out_channels} output channels; a mel VAE has 1 and 1")
    if v.latent_channels != t.latent_channels:
        out.append(f"the VAE has latent_channels={v.latent_channels} but the transformer latent_channels="
                   f"{t.latent_channels}: build the transformer with latent_channels={v.latent_channels}")
    down = 2 ** (len(v.block_out_channels) - 1)
    if n_mels % down or n_mels // down != t.latent_freq:
        out.append(f"n_mels={n_mels} through the VAE's {down}x downsampling gives {n_mels / down:g} latent bins but the "
                   f"transformer has latent_freq={t.latent_freq}: use n_mels={t.latent_freq * down} or build the "
                   f"transformer with latent_freq={n_mels // down}")
    if vocoder is not None and int(vocoder.config.model_in_dim) != n_mels:
        out.append(f"the vocoder takes model_in_dim={vocoder.config.model_in_dim} mel bins but the pipeline makes "
                   f"n_mels={n_mels}: set n_mels={vocoder.config.model_in_dim} (and a VAE/transformer for it) or use a "
                   f"vocoder with model_in_dim={n_mels}")
    if is_clip_vision(visual_encoder):
        width = int(visual_encoder.config.hidden_size)
    else:
        width = int(visual_encoder.config.out_dim)
        if int(visual_encoder.config.grid) != t.visual_grid:
            out.append(f"the frame encoder makes a {visual_encoder.config.grid}x{visual_encoder.config.grid} grid but "
                       f"the transformer has visual_grid={t.visual_grid}")
    if width != t.visual_dim:
        out.append(f"the visual encoder makes {width}-dim features but the transformer has visual_dim={t.visual_dim}: "
                   f"build it with visual_dim={width}")
    if int(sync_encoder.config.out_dim) != t.sync_dim:
        out.append(f"the sync encoder makes {sync_encoder.config.out_dim}-dim features but the transformer has "
                   f"sync_dim={t.sync_dim}: build it with sync_dim={sync_encoder.config.out_dim}")
    if text_encoder is not None and int(text_encoder.config.hidden_size) != t.cap_feat_dim:
        out.append(f"the text encoder makes {text_encoder.config.hidden_size}-dim features but the transformer has "
                   f"cap_feat_dim={t.cap_feat_dim}: build it with cap_feat_dim={text_encoder.config.hidden_size}")
    return out


def latent_times(n_latent: int, downsample: int, cfg: MelConfig) -> torch.Tensor:
    """Centre time (s) of each audio-latent frame: the mean of its `downsample` mel frames' centres."""
    j = torch.arange(n_latent, dtype=torch.float64)
    return ((j * downsample + (downsample - 1) / 2.0) * cfg.hop_length / cfg.sample_rate).float()
