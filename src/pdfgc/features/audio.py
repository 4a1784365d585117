"""Audio features of the released PD-FGC model: lws-style STFT, 80-band mel, 20-row windows."""

from functools import lru_cache

import librosa
import numpy as np

SAMPLE_RATE = 16000
HOP = 160
FFT_SIZE = 1280
N_MELS = 80
FPS = 25
MELS_PER_FRAME = SAMPLE_RATE // HOP // FPS  # 4
WINDOW_FRAMES = 20  # mel rows seen by one output frame (5 video frames)
LEAD_FRAMES = 2  # output frame k shows the audio of video frame k + 2
MIN_LEVEL_DB = -100.0
REF_LEVEL_DB = 20.0
MEL_FMIN, MEL_FMAX = 125.0, 7600.0


def normalize_rms(samples: np.ndarray, target: float = 0.1, floor: float = 1e-4) -> np.ndarray:
    """Scale ``samples`` to RMS ``target`` (RMS floored at ``floor``, so silence stays zero)."""
    samples = np.asarray(samples, dtype=np.float32)
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if samples.size else 0.0
    return samples * np.float32(target / max(floor, rms))


def lws_stft(samples: np.ndarray, fsize: int = FFT_SIZE, fshift: int = HOP) -> np.ndarray:
    """STFT exactly as ``lws.lws(fsize, fshift, mode="speech").stft`` computes it.

    Returns complex128 (M, fsize // 2 + 1) with M = (L + 2 * pad - fsize) // fshift + (1 if
    L % fshift == 0 else 2), pad = fsize - fshift, using lws's analysis window.
    """
    x = np.asarray(samples, dtype=np.float64)
    pad = fsize - fshift
    n_frames = (len(x) + 2 * pad - fsize) // fshift + (1 if len(x) % fshift == 0 else 2)
    tail = (n_frames - 1) * fshift + fsize - (len(x) + 2 * pad)
    padded = np.pad(x, (pad, pad + tail))
    frames = np.lib.stride_tricks.sliding_window_view(padded, fsize)[::fshift]  # (M, fsize)
    return np.fft.rfft(frames * _lws_window(fsize, fshift), axis=1)


def mel_spectrogram(samples: np.ndarray) -> np.ndarray:
    """Normalised log-mel spectrogram (T_mel, 80) float32 in [0, 1] of 16 kHz mono audio.

    Does not normalise loudness: call ``normalize_rms`` on the samples first, as the released
    model does.
    """
    magnitude = np.abs(lws_stft(samples))  # (T_mel, 641)
    mel = magnitude @ _mel_basis().T  # (T_mel, 80)
    db = 20.0 * np.log10(np.maximum(10.0 ** (MIN_LEVEL_DB / 20.0), mel)) - REF_LEVEL_DB
    return np.clip((db - MIN_LEVEL_DB) / -MIN_LEVEL_DB, 0.0, 1.0).astype(np.float32)


def num_output_frames(n_mel_frames: int) -> int:
    """Number of output video frames whose full 20-row mel window fits in ``n_mel_frames``."""
    return max(0, n_mel_frames // MELS_PER_FRAME - (WINDOW_FRAMES // MELS_PER_FRAME - 1))


def mel_windows(mel: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Network inputs (stop - start, 1, 80, 20) float32 for output frames start .. stop - 1.

    Output frame k sees mel rows [4k, 4k + 20), transposed to (80, 20).
    """
    total = num_output_frames(len(mel))
    if not 0 <= start <= stop <= total:
        raise IndexError(f"output frames [{start}, {stop}) out of range for {total} frames")
    if start == stop:
        return np.zeros((0, 1, N_MELS, WINDOW_FRAMES), dtype=np.float32)
    windows = np.lib.stride_tricks.sliding_window_view(mel, WINDOW_FRAMES, axis=0)  # (T-19, 80, 20)
    picked = windows[start * MELS_PER_FRAME : stop * MELS_PER_FRAME : MELS_PER_FRAME]
    return np.ascontiguousarray(picked[:, None], dtype=np.float32)


def audio_offset_samples() -> int:
    """Samples to trim from the audio start so that it lines up with output frame 0 (1280)."""
    return LEAD_FRAMES * SAMPLE_RATE // FPS


@lru_cache(maxsize=4)
def _lws_window(fsize: int, fshift: int) -> np.ndarray:
    """lws's "speech" analysis window: sqrt(2 * fshift / fsize) * sin(pi * (n + 0.5) / fsize)."""
    window = np.sqrt(2.0 * fshift / fsize) * np.sin(np.pi * (np.arange(fsize) + 0.5) / fsize)
    window.flags.writeable = False
    return window


@lru_cache(maxsize=1)
def _mel_basis() -> np.ndarray:
    """Slaney mel filterbank (80, 641), built once."""
    basis = librosa.filters.mel(
        sr=SAMPLE_RATE, n_fft=FFT_SIZE, n_mels=N_MELS, fmin=MEL_FMIN, fmax=MEL_FMAX
    )
    basis.flags.writeable = False
    return basis
