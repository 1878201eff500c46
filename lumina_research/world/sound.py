"""A soundtrack that follows the picture, so audio-visual alignment can be learned and checked.

Each object hums a continuous tone: its pitch names its colour (one pitch class per
colour, 220-880 Hz) and its timbre names its shape (harmonic recipe).  Every wall bounce
adds a short percussive click (a ~30 ms decaying noise burst) at the bounce time.
``soundtrack`` mixes the same tones and clicks for any list of objects and contact times
(lumina_research.world.scenes uses it for its varied training scenes).
"""

from __future__ import annotations

import numpy as np

from .render import Clip, Truth
from .vocabulary import COLORS

# Nine distinct pitch classes (A C E G B D F F# G#) spread over 220-880 Hz.
COLOR_PITCH_HZ = {
    "red": 220.00,      # A3
    "orange": 261.63,   # C4
    "yellow": 329.63,   # E4
    "green": 392.00,    # G4
    "cyan": 493.88,     # B4
    "blue": 587.33,     # D5
    "purple": 698.46,   # F5
    "pink": 739.99,     # F#5
    "white": 830.61,    # G#5
}
assert set(COLOR_PITCH_HZ) == set(COLORS)

# (harmonic number, amplitude) lists: sine, odd-harmonic square, triangle, sawtooth.
_TIMBRES = {
    "circle": [(1, 1.0)],
    "square": [(n, 1.0 / n) for n in (1, 3, 5, 7, 9)],
    "triangle": [(n, (-1) ** k / n ** 2) for k, n in enumerate((1, 3, 5, 7, 9))],
    "star": [(n, 1.0 / n) for n in range(1, 9)],
}

TONE_GAIN = 0.25
HIT_GAIN = 0.8
HIT_SECONDS = 0.03
HIT_DECAY_SECONDS = 0.006
FADE_SECONDS = 0.01
PEAK = 0.9


def _tone(freq: float, shape: str, t: np.ndarray, sample_rate: int) -> np.ndarray:
    """Sum of the shape's harmonics below 0.45 * sample_rate, scaled to unit peak-ish level."""
    partials = [(n, a) for n, a in _TIMBRES[shape] if n * freq < 0.45 * sample_rate]
    wave = sum(a * np.sin(2.0 * np.pi * n * freq * t) for n, a in partials)
    return wave / sum(abs(a) for _, a in partials)


def render_sound(source: Clip | Truth, *, sample_rate: int = 16000, seconds: float | None = None) -> np.ndarray:
    """float32 mono waveform for a clip (or its truth), peak <= 0.9; ``seconds`` defaults to the clip's."""
    truth = source.truth if isinstance(source, Clip) else source
    if seconds is None:
        seconds = truth.seconds
    tones = [(COLOR_PITCH_HZ[obj.color], obj.shape, None) for obj in truth.objects]
    return soundtrack(tones, [time for time, _ in truth.bounces], seconds, truth.seed, sample_rate=sample_rate)


def soundtrack(tones, hits, seconds: float, seed: int, *, sample_rate: int = 16000, hit_gains=None) -> np.ndarray:
    """Tones plus a percussive click at each hit time: float32 mono, peak <= 0.9.

    ``tones``: (frequency Hz, timbre shape, gain) per sounding object, gain None (always on) or an array of
    per-sample gains (e.g. how much of the object is in view); ``hits``: contact times in seconds;
    ``hit_gains``: one loudness factor per hit (default 1).
    """
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    out = np.zeros(n)
    for freq, shape, gain in tones:
        tone = TONE_GAIN * _tone(freq, shape, t, sample_rate)
        out += tone if gain is None else tone * np.asarray(gain, dtype=np.float64)[:n]
    fade = min(int(FADE_SECONDS * sample_rate), n // 2)
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        out[:fade] *= ramp
        out[n - fade:] *= ramp[::-1]
    rng = np.random.default_rng([seed, 2])
    hit_len = int(HIT_SECONDS * sample_rate)
    envelope = np.exp(-np.arange(hit_len) / (HIT_DECAY_SECONDS * sample_rate))
    for k, time in enumerate(hits):
        start = int(round(time * sample_rate))
        if start >= n:
            continue
        stop = min(n, start + hit_len)
        gain = HIT_GAIN * (1.0 if hit_gains is None else float(hit_gains[k]))
        out[start:stop] += gain * envelope[:stop - start] * rng.uniform(-1.0, 1.0, stop - start)
    peak = np.max(np.abs(out)) if n else 0.0
    if peak > PEAK:
        out *= PEAK / peak
    return out.astype(np.float32)
