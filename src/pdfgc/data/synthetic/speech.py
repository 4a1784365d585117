"""Speech-like audio and the mouth it drives.

``synthesize_speech`` strings syllables into phrases separated by pauses. A syllable is a
vowel: harmonics of a gliding pitch (90-230 Hz) whose amplitudes follow a glottal 1/h roll-off
shaped by a cascade of three formant resonances (the vowel's F1-F3), under a raised-cosine
envelope; some syllables start with a short fricative hiss. The result is scaled to RMS 0.1
(``normalize_rms``), the level the released model normalises to, so the stored audio is
what the model hears.

``mouth_from_audio`` is the one deterministic map from audio to lips. For video frame ``i``
it looks at the audio around ``t = i / 25`` s:

* ``mouth_open = clip((rms - 0.01) / (0.22 - 0.01), 0, 1)``, ``rms`` taken over a 50 ms
  Hann window centred on ``t``: silence closes the mouth, loud (open) vowels open it wide;
* ``mouth_round = voicing * sum_v w_v * rounding_v``: the 40 ms spectrum at ``t`` is
  reduced to log band energies (12 bands, 200-4000 Hz, mean removed), ``w`` is a softmax over
  the vowels of minus the squared distance to each vowel's template (the same features of
  the vowel synthesised steadily), ``rounding_v`` the vowel's lip rounding (u 1, o 0.75, e
  0.1, a and i 0) and ``voicing = clip((rms - 0.01) / 0.02, 0, 1)``, so silence gives 0.

The released model's output frame ``k`` is drawn from the mel window centred on video frame
``k + 2`` (``pdfgc.features.mel_windows``), so video frame ``i`` pairs with window ``i - 2``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from pdfgc.features import FPS, SAMPLE_RATE, normalize_rms

# name: (F1, F2, F3) in Hz, lip rounding, loudness (open vowels are louder)
VOWELS = {
    "a": ((730.0, 1090.0, 2440.0), 0.0, 1.0),
    "e": ((530.0, 1840.0, 2480.0), 0.1, 0.85),
    "i": ((270.0, 2290.0, 3010.0), 0.0, 0.7),
    "o": ((570.0, 840.0, 2410.0), 0.75, 0.85),
    "u": ((300.0, 870.0, 2240.0), 1.0, 0.65),
}
BANDWIDTHS = np.array([80.0, 100.0, 140.0])  # formant bandwidths, Hz
MAX_HARMONIC_HZ = 4500.0
SILENCE_RMS, LOUD_RMS, VOICED_RMS = 0.01, 0.22, 0.03
OPEN_WINDOW = 800  # samples (50 ms) for the loudness
SPECTRUM_WINDOW = 640  # samples (40 ms) for the vowel spectrum
BAND_EDGES = np.geomspace(200.0, 4000.0, 13)  # 12 bands
TEMPLATE_SHARPNESS = 4.0  # softmax temperature of the vowel match (1 / units of feature^2)


def synthesize_speech(rng: np.random.Generator, n_samples: int) -> np.ndarray:
    """``n_samples`` of 16 kHz speech-like audio at RMS 0.1 (float32, peaks within +-1)."""
    plan = _syllable_plan(rng, n_samples / SAMPLE_RATE)
    t = np.arange(n_samples) / SAMPLE_RATE
    envelope = np.zeros(n_samples)
    formants = np.tile(np.array(VOWELS["a"][0]), (n_samples, 1))  # (T, 3)
    hiss = np.zeros(n_samples)
    for start, stop, vowel, gain, fricative in plan:
        envelope += gain * VOWELS[vowel][2] * _raised_cosine(t, start, stop)
        formants[t >= start] = VOWELS[vowel][0]
        if fricative:
            hiss += 0.25 * gain * _raised_cosine(t, start - 0.07, start + 0.01)
    formants = _moving_average(formants, int(0.03 * SAMPLE_RATE))  # co-articulation
    pitch = _pitch_track(rng, t)
    voice = _harmonics(pitch, formants) * envelope
    noise = _bandpass_noise(rng, n_samples) * hiss + 1e-4 * rng.standard_normal(n_samples)
    audio = normalize_rms(voice + noise)
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def vowel_sound(vowel: str, seconds: float = 0.4, pitch_hz: float = 140.0) -> np.ndarray:
    """A steady vowel at the level of a loud syllable (RMS about 0.15), float32."""
    n = int(seconds * SAMPLE_RATE)
    sound = _harmonics(np.full(n, pitch_hz), np.tile(VOWELS[vowel][0], (n, 1)))
    return (0.15 * sound / np.sqrt(np.mean(sound ** 2))).astype(np.float32)


def mouth_from_audio(audio: np.ndarray, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Mouth opening and rounding (each (n_frames,) float32 in [0, 1]) of video frames
    0 .. n_frames - 1, frame i from the audio around i / 25 s (see the module docstring)."""
    centres = (np.arange(n_frames) * SAMPLE_RATE) // FPS
    loud = _windows(audio, centres, OPEN_WINDOW)  # (N, 800)
    hann = np.hanning(OPEN_WINDOW)
    rms = np.sqrt(np.sum((loud * hann) ** 2, axis=1) / np.sum(hann ** 2))
    opening = np.clip((rms - SILENCE_RMS) / (LOUD_RMS - SILENCE_RMS), 0.0, 1.0)
    voicing = np.clip((rms - SILENCE_RMS) / (VOICED_RMS - SILENCE_RMS), 0.0, 1.0)
    features = _band_features(_windows(audio, centres, SPECTRUM_WINDOW))  # (N, 12)
    templates, rounding = _vowel_templates()
    distance = np.sum((features[:, None] - templates[None]) ** 2, axis=2)  # (N, vowels)
    logits = -TEMPLATE_SHARPNESS * (distance - distance.min(axis=1, keepdims=True))
    weights = np.exp(logits) / np.sum(np.exp(logits), axis=1, keepdims=True)
    return opening.astype(np.float32), (voicing * (weights @ rounding)).astype(np.float32)


def _syllable_plan(rng: np.random.Generator, seconds: float) -> list[tuple]:
    """(start, stop, vowel, gain, fricative) per syllable: phrases of 2-6 syllables, pauses
    of 0.15-0.6 s between phrases, the first phrase within the first 0.3 s."""
    plan, time = [], rng.uniform(0.0, 0.3)
    while time < seconds:
        for _ in range(int(rng.integers(2, 7))):
            length = rng.uniform(0.12, 0.3)
            vowel = str(rng.choice(list(VOWELS)))
            plan.append((time, time + length, vowel, rng.uniform(0.55, 1.0), rng.random() < 0.3))
            time += length + rng.uniform(0.02, 0.06)
        time += rng.uniform(0.15, 0.6)
    return plan


def _raised_cosine(t: np.ndarray, start: float, stop: float, ramp: float = 0.035) -> np.ndarray:
    """1 inside [start, stop] with raised-cosine ramps of ``ramp`` s inside the edges."""
    rise = np.clip((t - start) / ramp, 0.0, 1.0)
    fall = np.clip((stop - t) / ramp, 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * np.minimum(rise, fall))


def _moving_average(x: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average along axis 0 (edges repeat the end values)."""
    padded = np.pad(x, ((width // 2, width - 1 - width // 2), (0, 0)), mode="edge")
    cumsum = np.cumsum(np.pad(padded, ((1, 0), (0, 0))), axis=0)
    return (cumsum[width:] - cumsum[:-width]) / width


def _pitch_track(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """Pitch in Hz: a speaker level in 90-230 Hz, a slow intonation swing and slight jitter."""
    base = rng.uniform(90.0, 230.0)
    swing = 0.12 * np.sin(2 * np.pi * rng.uniform(0.3, 1.0) * t + rng.uniform(0, 2 * np.pi))
    vibrato = 0.01 * np.sin(2 * np.pi * 5.5 * t)
    return base * (1.0 + swing + vibrato)


def _harmonics(pitch: np.ndarray, formants: np.ndarray) -> np.ndarray:
    """Voiced source (pitch (T,)) filtered by three cascaded formant resonances (T, 3)."""
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE  # (T,)
    n_harmonics = int(MAX_HARMONIC_HZ // pitch.min())
    h = np.arange(1, n_harmonics + 1)[:, None]  # (H, 1)
    freq = h * pitch[None]  # (H, T)
    gain = 1.0 / h * (freq < MAX_HARMONIC_HZ)
    for k in range(3):
        f_k = formants[None, :, k]
        gain = gain * f_k ** 2 / np.sqrt((f_k ** 2 - freq ** 2) ** 2 + (BANDWIDTHS[k] * freq) ** 2)
    return np.sum(gain * np.sin(h * phase[None]), axis=0)


def _bandpass_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """White noise restricted to 2.5-6 kHz (a fricative hiss), unit-ish RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freq = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    spectrum[(freq < 2500) | (freq > 6000)] = 0
    return np.fft.irfft(spectrum, n) * np.sqrt(SAMPLE_RATE / 2 / 3500)


def _windows(audio: np.ndarray, centres: np.ndarray, width: int) -> np.ndarray:
    """(len(centres), width) slices of ``audio`` centred on ``centres`` (zero beyond ends)."""
    beyond = max(0, int(centres.max(initial=0)) - len(audio))
    padded = np.pad(np.asarray(audio, dtype=np.float64), (width, width + beyond))
    starts = centres + width - width // 2
    return padded[starts[:, None] + np.arange(width)[None]]


def _band_features(windows: np.ndarray) -> np.ndarray:
    """Log energies of 12 bands (200-4000 Hz) of Hann-windowed slices, mean removed."""
    spectrum = np.abs(np.fft.rfft(windows * np.hanning(windows.shape[1]), n=2048)) ** 2
    freq = np.fft.rfftfreq(2048, 1.0 / SAMPLE_RATE)
    band = np.digitize(freq, BAND_EDGES) - 1  # -1 or 12 outside
    energy = np.stack([spectrum[:, band == b].sum(axis=1) for b in range(12)], axis=1)
    logs = np.log10(energy + 1e-10)
    return logs - logs.mean(axis=1, keepdims=True)


@lru_cache(maxsize=1)
def _vowel_templates() -> tuple[np.ndarray, np.ndarray]:
    """Band features of each vowel (averaged over three pitches) and the vowels' rounding."""
    templates = []
    for vowel in VOWELS:
        sounds = [vowel_sound(vowel, 0.2, pitch) for pitch in (110.0, 150.0, 200.0)]
        windows = np.stack([s[1000: 1000 + SPECTRUM_WINDOW] for s in sounds])
        templates.append(_band_features(windows).mean(axis=0))
    rounding = np.array([VOWELS[v][1] for v in VOWELS])
    return np.stack(templates), rounding
