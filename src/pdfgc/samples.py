"""A small, real sample to run inference on without downloads.

``python sample.py [folder=..]`` (``make sample``) writes:

* ``portrait.png``: the face of scikit-image's astronaut photograph (public domain);
* ``speech.wav``: a spoken sentence from espeak-ng, or a synthetic voiced signal when
  espeak-ng is not installed;
* ``driver.mp4``: 2 s of the portrait swaying (a pose / eye driver);
* ``weights/``: a randomly initialised ``model=tiny`` in the released four-file layout.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch
from omegaconf import DictConfig

from pdfgc.features import FPS, SAMPLE_RATE
from pdfgc.io import atomic_path
from pdfgc.media import VideoWriter, load_audio, write_wav
from pdfgc.networks import build_networks
from pdfgc.networks.checkpoints import save_released

FACE_BOX = (20, 130, 200)  # top, left, side of the astronaut's face in the 512x512 photo
SENTENCE = "The quick brown fox jumps over the lazy dog, and then it rests in the sun."


def portrait() -> np.ndarray:
    """The astronaut's face, 224x224 RGB uint8."""
    from skimage.data import astronaut

    top, left, side = FACE_BOX
    return cv2.resize(astronaut()[top: top + side, left: left + side], (224, 224),
                      interpolation=cv2.INTER_AREA)


def can_speak() -> bool:
    """Whether espeak-ng is installed (:func:`speak` needs it)."""
    return shutil.which("espeak-ng") is not None


def speak(text: str) -> np.ndarray:
    """``text`` spoken by espeak-ng; float32 mono at 16 kHz."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "--stdin", "-w", str(wav)], input=text, text=True,
                       check=True, capture_output=True)
        return load_audio(wav, SAMPLE_RATE)


def speech(seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    """A spoken sentence (espeak-ng) or, without it, a voiced signal with syllable-like
    amplitude modulation and pauses; float32 mono at 16 kHz."""
    if can_speak():
        return speak(SENTENCE)
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    pitch = 120 + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
    voice = sum(np.sin(h * phase) / h for h in range(1, 12))
    syllables = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) * (np.sin(2 * np.pi * 0.5 * t) > -0.5)
    signal = 0.3 * voice * syllables + 0.005 * rng.standard_normal(t.size)
    return signal.astype(np.float32)


def driver_frames(image: np.ndarray, seconds: float = 2.0) -> np.ndarray:
    """The portrait rotating and shifting gently: (N, H, W, 3) uint8."""
    h, w = image.shape[:2]
    frames = []
    for i in range(int(seconds * FPS)):
        phase = 2 * np.pi * i / (seconds * FPS)
        m = cv2.getRotationMatrix2D((w / 2, h / 2), 6 * np.sin(phase), 1.0)
        m[:, 2] += (4 * np.sin(phase), 3 * np.cos(phase))
        frames.append(cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REPLICATE))
    return np.stack(frames)


def tiny_weights(folder: Path, model_cfg: DictConfig, seed: int = 0) -> None:
    """Randomly initialised networks of ``model_cfg`` (``model=tiny`` as composed) in the
    released layout."""
    torch.manual_seed(seed)
    save_released(folder, build_networks(model_cfg))


def make_sample(folder: str | Path, model_cfg: DictConfig) -> Path:
    """Write the sample files into ``folder`` (``model_cfg``: see :func:`tiny_weights`);
    returns it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    image = portrait()
    with atomic_path(folder / "portrait.png") as tmp:
        cv2.imwrite(str(tmp), image[:, :, ::-1])
    write_wav(folder / "speech.wav", speech(), SAMPLE_RATE)
    with VideoWriter(folder / "driver.mp4", fps=FPS) as writer:
        writer.write(driver_frames(image))
    tiny_weights(folder / "weights", model_cfg)
    return folder

