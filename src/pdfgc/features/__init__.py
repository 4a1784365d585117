"""Pre-processing of the released PD-FGC model: audio mel windows and face image crops."""

from pdfgc.features.audio import (
    FFT_SIZE,
    FPS,
    HOP,
    LEAD_FRAMES,
    MELS_PER_FRAME,
    N_MELS,
    SAMPLE_RATE,
    WINDOW_FRAMES,
    audio_offset_samples,
    lws_stft,
    mel_spectrogram,
    mel_windows,
    normalize_rms,
    num_output_frames,
)
from pdfgc.features.image import (
    OFFICIAL_SIZE,
    crop_face,
    prepare_image,
    prepare_images,
    to_uint8,
)

__all__ = [
    "FFT_SIZE",
    "FPS",
    "HOP",
    "LEAD_FRAMES",
    "MELS_PER_FRAME",
    "N_MELS",
    "OFFICIAL_SIZE",
    "SAMPLE_RATE",
    "WINDOW_FRAMES",
    "audio_offset_samples",
    "crop_face",
    "lws_stft",
    "mel_spectrogram",
    "mel_windows",
    "normalize_rms",
    "num_output_frames",
    "prepare_image",
    "prepare_images",
    "to_uint8",
]
