"""Read any audio (or the audio track of a video) as mono float32; write 16-bit wav."""

import os
from pathlib import Path

import av
import librosa
import numpy as np
import soundfile

from pdfgc.errors import PdfgcError
from pdfgc.io import atomic_path


def load_audio(path: str | os.PathLike, sample_rate: int = 16000) -> np.ndarray:
    """Decode the first audio stream of ``path`` to float32 mono at ``sample_rate``.

    Works for any container FFmpeg reads (wav, mp3, m4a, the audio of an mp4). Channels are
    averaged as ``librosa.to_mono`` does and the rate converted with soxr_hq, so a wav gives
    the same samples as ``librosa.load(path, sr=sample_rate)``. Silence is valid; a missing
    or unreadable file, no audio stream or zero samples raise PdfgcError.
    """
    path = Path(path)
    if not path.is_file():
        raise PdfgcError(f"{path}: no such audio file")
    channels, native_rate = _decode_audio(path)  # (C, N) float32
    mono = np.mean(channels, axis=0) if len(channels) > 1 else channels[0]
    if native_rate != sample_rate:
        mono = librosa.resample(
            mono, orig_sr=native_rate, target_sr=sample_rate, res_type="soxr_hq"
        )
    return mono.astype(np.float32, copy=False)


def write_wav(path: str | os.PathLike, samples: np.ndarray, sample_rate: int) -> None:
    """Write float samples in [-1, 1] (clipped) as a 16-bit PCM wav, atomically."""
    clipped = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    with atomic_path(path) as tmp:
        soundfile.write(tmp, clipped, sample_rate, subtype="PCM_16", format="WAV")


def _decode_audio(path: Path) -> tuple[np.ndarray, int]:
    """Decode the first audio stream to ((C, N) float32 in [-1, 1], native sample rate)."""
    to_float = av.AudioResampler(format="fltp")  # keeps the native layout and rate
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise PdfgcError(f"{path}: has no audio stream")
            stream = container.streams.audio[0]
            frames = []
            for frame in container.decode(stream):
                frames.extend(to_float.resample(frame))
            frames.extend(to_float.resample(None))
    except av.FFmpegError as err:
        raise PdfgcError(f"{path}: not a readable audio file ({_reason(err)})") from err
    chunks = [frame.to_ndarray() for frame in frames]
    if sum(chunk.shape[1] for chunk in chunks) == 0:
        raise PdfgcError(f"{path}: audio stream has no samples")
    return np.concatenate(chunks, axis=1), frames[0].sample_rate


def _reason(err: Exception) -> str:
    """A one-line reason for a decoder error."""
    reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return " ".join(str(reason).split())
