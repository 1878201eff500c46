"""Audio side of V2A: log-mel spectrograms, their inversion (Griffin-Lim), onsets and pitch.

One ``MelConfig`` describes the spectrogram every V2A component shares (VAE input, vocoder input,
training targets).  The default is the tiny member's: 16 kHz, n_fft 1024, hop 256 (62.5 frames/s),
128 slaney mel bins over 0-8 kHz, magnitude mel, natural log.  ``normalize``/``denormalize`` map the
log-mel to the VAE's roughly unit range with two fixed constants.  (128 rather than 64 bins: below 1 kHz a
64-bin slaney mel is ~47 Hz wide, more than the semitones of the world's A3/C4 tones, and Griffin-Lim of the
true 64-bin mel already names the wrong pitch class for them.)

The Griffin-Lim fallback vocoder first turns the mel back into a linear magnitude spectrogram by
non-negative least squares (multiplicative updates, which keep tonal energy concentrated instead of
smearing it over the mel band the way a pseudo-inverse does), then runs Griffin-Lim with
``torch.stft``.  Onset detection (spectral flux) and dominant pitch class live here too: the sync
encoder's auxiliary target and the evaluation both use them.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction
from dataclasses import asdict, dataclass
from typing import Dict, List, Tuple

import numpy as np
import torch
from scipy.signal import find_peaks, resample_poly

SAMPLE_RATE = 16000
PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


@dataclass(frozen=True)
class MelConfig:
    sample_rate: int = SAMPLE_RATE
    n_fft: int = 1024
    hop_length: int = 256
    n_mels: int = 128
    fmin: float = 0.0
    fmax: float = 8000.0
    log_floor: float = 1e-5
    norm_mean: float = -5.0   # normalized = (ln mel - mean) / scale
    norm_scale: float = 4.0

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    def num_frames(self, num_samples: int) -> int:
        """Mel frames torch.stft(center=True) gives for a waveform of num_samples."""
        return num_samples // self.hop_length + 1

    def to_dict(self) -> Dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict) -> "MelConfig":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@functools.lru_cache(maxsize=8)
def mel_basis(cfg: MelConfig) -> torch.Tensor:
    """(n_mels, n_fft/2+1) slaney filterbank (librosa's default), from transformers.audio_utils."""
    from transformers.audio_utils import mel_filter_bank

    fb = mel_filter_bank(cfg.n_fft // 2 + 1, cfg.n_mels, cfg.fmin, cfg.fmax, cfg.sample_rate,
                         norm="slaney", mel_scale="slaney")
    return torch.from_numpy(fb.T.astype(np.float32)).contiguous()


@functools.lru_cache(maxsize=8)
def _window(n: int) -> torch.Tensor:
    return torch.hann_window(n)


def stft_magnitude(wave: torch.Tensor, cfg: MelConfig) -> torch.Tensor:
    """(..., N) float -> (..., n_fft/2+1, frames) magnitude."""
    spec = torch.stft(wave.float(), cfg.n_fft, cfg.hop_length, window=_window(cfg.n_fft).to(wave.device),
                      center=True, return_complex=True)
    return spec.abs()


def log_mel(wave, cfg: MelConfig = MelConfig()) -> torch.Tensor:
    """Waveform (N,) or (B, N) -> natural-log magnitude mel (B?, frames, n_mels)."""
    wave = torch.as_tensor(np.asarray(wave, dtype=np.float32) if not torch.is_tensor(wave) else wave)
    mag = stft_magnitude(wave, cfg)
    mel = torch.matmul(mel_basis(cfg).to(mag.device), mag)
    return torch.log(mel.clamp(min=cfg.log_floor)).transpose(-1, -2).contiguous()


def normalize(logmel: torch.Tensor, cfg: MelConfig) -> torch.Tensor:
    return (logmel - cfg.norm_mean) / cfg.norm_scale


def denormalize(x: torch.Tensor, cfg: MelConfig) -> torch.Tensor:
    return x * cfg.norm_scale + cfg.norm_mean


def pad_frames(mel: torch.Tensor, multiple: int, cfg: MelConfig) -> torch.Tensor:
    """Normalized mel (..., M, n_mels) with time padded by silence (the log floor) to a multiple of `multiple`."""
    pad = (-mel.shape[-2]) % multiple
    if not pad:
        return mel
    floor = (math.log(cfg.log_floor) - cfg.norm_mean) / cfg.norm_scale
    return torch.cat([mel, torch.full((*mel.shape[:-2], pad, mel.shape[-1]), floor, dtype=mel.dtype,
                                      device=mel.device)], dim=-2)


def mel_to_linear(logmel: torch.Tensor, cfg: MelConfig, iters: int = 60) -> torch.Tensor:
    """ln-mel (frames, n_mels) -> linear magnitude (n_fft/2+1, frames) by NNLS multiplicative updates."""
    fb = mel_basis(cfg).to(logmel.device)                      # (M, K)
    mel = torch.exp(logmel.float()).T                           # (M, frames)
    mel = torch.where(mel <= cfg.log_floor * 1.0001, torch.zeros_like(mel), mel)
    fbt = fb.T                                                  # (K, M)
    s = fbt @ mel / (fbt.sum(1, keepdim=True) + 1e-8)           # start: back-projection
    num = fbt @ mel
    for _ in range(iters):
        s = s * num / (fbt @ (fb @ s) + 1e-10)
    return s


def griffin_lim(magnitude: torch.Tensor, cfg: MelConfig, num_samples: int, iters: int = 32,
                seed: int = 0) -> torch.Tensor:
    """Fast Griffin-Lim (momentum 0.99) for a (n_fft/2+1, frames) magnitude -> (num_samples,) waveform."""
    window = _window(cfg.n_fft).to(magnitude.device)
    need = cfg.n_fft // cfg.hop_length + 2  # torch.stft's reflect padding needs a signal longer than n_fft/2
    if magnitude.shape[-1] < need:
        magnitude = torch.nn.functional.pad(magnitude, (0, need - magnitude.shape[-1]))
    gen = torch.Generator().manual_seed(seed)
    angles = torch.exp(2j * math.pi * torch.rand(magnitude.shape, generator=gen)).to(magnitude.device)
    length = (magnitude.shape[-1] - 1) * cfg.hop_length
    prev = torch.zeros_like(angles)
    wave = None
    for _ in range(iters):
        wave = torch.istft(magnitude * angles, cfg.n_fft, cfg.hop_length, window=window, center=True, length=length)
        rebuilt = torch.stft(wave, cfg.n_fft, cfg.hop_length, window=window, center=True, return_complex=True)
        accel = rebuilt - 0.99 * prev
        angles = accel / accel.abs().clamp(min=1e-8)
        prev = rebuilt
    wave = torch.istft(magnitude * angles, cfg.n_fft, cfg.hop_length, window=window, center=True, length=length)
    return fit_length(wave, num_samples)


def fit_length(wave: torch.Tensor, n: int) -> torch.Tensor:
    if wave.shape[-1] >= n:
        return wave[..., :n]
    return torch.nn.functional.pad(wave, (0, n - wave.shape[-1]))


def griffin_lim_vocoder(logmel: torch.Tensor, cfg: MelConfig, num_samples: int, iters: int = 32) -> torch.Tensor:
    """The fallback vocoder: ln-mel (frames, n_mels) -> waveform (num_samples,), peak <= 0.95."""
    wave = griffin_lim(mel_to_linear(logmel, cfg), cfg, num_samples, iters)
    peak = wave.abs().max()
    return wave * (0.95 / peak) if peak > 0.95 else wave


def resample_audio(wave: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Waveform at `rate` -> float32 at `target` (polyphase): a vocoder's or a video's rate to the models' 16 kHz."""
    if rate == target:
        return wave.astype(np.float32)
    frac = Fraction(target, int(rate)).limit_denominator(1000)
    return resample_poly(wave, frac.numerator, frac.denominator).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# onsets and pitch (numpy, used by the sync encoder's target and by lumina_research.eval.v2a)

ONSET_HOP = 128  # 8 ms at 16 kHz
ONSET_N_FFT = 512


def onset_envelope(wave: np.ndarray, sample_rate: int = SAMPLE_RATE, hop: int = ONSET_HOP,
                   n_fft: int = ONSET_N_FFT) -> Tuple[np.ndarray, np.ndarray]:
    """Spectral flux (half-wave rectified rise of log magnitude) and its frame times in seconds.

    The flux of frame i compares (centred) frame i with frame i-1.  Log compression makes a sharp onset's
    flux peak as soon as it enters the leading half of a window, so each flux value is dated a quarter
    window after its frame's centre (measured bias on the world's clicks: about 1 ms).
    """
    w = torch.as_tensor(np.asarray(wave, dtype=np.float32))
    spec = torch.stft(w, n_fft, hop, window=torch.hann_window(n_fft), center=True, return_complex=True).abs()
    logs = torch.log1p(100.0 * spec)
    flux = torch.relu(logs[:, 1:] - logs[:, :-1]).mean(0).numpy()
    flux = np.concatenate([[0.0], flux])
    times = (np.arange(len(flux)) * hop + n_fft / 4) / sample_rate
    return flux.astype(np.float32), times


def detect_onsets(wave: np.ndarray, sample_rate: int = SAMPLE_RATE, min_gap: float = 0.06,
                  rel_threshold: float = 0.3, k_mad: float = 4.0) -> np.ndarray:
    """Onset times (s) by peak picking on the spectral flux with an adaptive threshold.

    A peak counts when it exceeds median + k_mad * MAD of the flux and rel_threshold of the largest
    peak, and no stronger peak lies within min_gap seconds.
    """
    wave = np.asarray(wave, dtype=np.float32)
    if wave.size < 1024 or not np.any(wave):
        return np.zeros(0)
    flux, times = onset_envelope(wave, sample_rate)
    # Frames whose window runs past either end are partly the signal mirrored (stft's reflect padding): a peak there
    # is the mirror's corner, not a sound (it put an "onset" at the very end of ~40% of generated clips).
    centres = np.arange(len(flux)) * ONSET_HOP
    whole = (centres >= ONSET_N_FFT // 2) & (centres + ONSET_N_FFT // 2 <= wave.size)
    flux, times = flux[whole], times[whole]
    med = np.median(flux)
    mad = np.median(np.abs(flux - med)) + 1e-9
    floor = max(med + k_mad * 1.4826 * mad, rel_threshold * float(flux.max()))
    distance = max(1, int(round(min_gap * sample_rate / ONSET_HOP)))
    peaks, _ = find_peaks(flux, height=floor, distance=distance)
    return times[peaks]


def pitch_class_of(freq: float) -> int:
    """Index into PITCH_CLASSES of the nearest equal-tempered note (A4 = 440 Hz)."""
    return int(round(12 * math.log2(freq / 440.0)) + 9) % 12


def chroma_profile(wave: np.ndarray, sample_rate: int = SAMPLE_RATE, fmin: float = 150.0,
                   fmax: float = 1000.0, n_fft: int = 8192) -> np.ndarray:
    """Energy per pitch class (12,) of the spectral peaks between fmin and fmax, summed over the clip.

    Welch-averaged power spectrum; every spectral peak's power goes to its nearest pitch class, so a
    tone counts once at its fundamental (harmonics above fmax are ignored, those inside add to their
    own classes with their smaller power).
    """
    wave = np.asarray(wave, dtype=np.float64)
    if wave.size < n_fft:
        wave = np.pad(wave, (0, n_fft - wave.size))
    hop = n_fft // 4
    win = np.hanning(n_fft)
    frames = np.lib.stride_tricks.sliding_window_view(wave, n_fft)[::hop] * win
    power = (np.abs(np.fft.rfft(frames, axis=1)) ** 2).mean(0)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    band = (freqs >= fmin) & (freqs <= fmax)
    chroma = np.zeros(12)
    idx = np.nonzero(band)[0]
    peaks, _ = find_peaks(power[idx])
    for p in idx[peaks]:
        # parabolic interpolation of the peak's frequency
        a, b, c = np.log(power[p - 1] + 1e-20), np.log(power[p] + 1e-20), np.log(power[p + 1] + 1e-20)
        denom = a - 2 * b + c
        shift = 0.5 * (a - c) / denom if denom != 0 else 0.0
        f = (p + float(np.clip(shift, -0.5, 0.5))) * sample_rate / n_fft
        chroma[pitch_class_of(f)] += power[p]
    return chroma


def dominant_pitch_classes(wave: np.ndarray, k: int = 1, sample_rate: int = SAMPLE_RATE) -> List[int]:
    """The k pitch classes with the most tonal energy (strongest first); [] for silence."""
    chroma = chroma_profile(wave, sample_rate)
    if chroma.sum() <= 0:
        return []
    return [int(i) for i in np.argsort(-chroma)[:k]]
