"""Per-frame labels of an aligned clip: head pose, blink, eye boxes, gaze (unknown) and mel.

The geometry (the pose convention, the PnP fit, the eye aspect ratio, the eye boxes) is
:mod:`pdfgc.face.geometry`'s; here it becomes the label arrays of the dataset contract.
"""

from __future__ import annotations

import numpy as np

from pdfgc.face.geometry import eye_aspect_ratio, eye_boxes, head_pose
from pdfgc.features import mel_spectrogram, normalize_rms

MIN_OPEN_EAR = 0.15  # floor of the open-eye reference, for clips whose eyes stay shut
OPEN_PERCENTILE = 90


def blink(marks: np.ndarray) -> np.ndarray:
    """Eye closure (N,) float32 in [0, 1], relative to the clip's open eyes:
    1 - EAR / max(90th percentile of the clip's EAR, 0.15), clipped."""
    ear = eye_aspect_ratio(marks)
    reference = max(float(np.percentile(ear, OPEN_PERCENTILE)), MIN_OPEN_EAR)
    return np.clip(1.0 - ear / reference, 0.0, 1.0).astype(np.float32)


def clip_labels(marks: np.ndarray, audio: np.ndarray, size: int) -> dict[str, np.ndarray]:
    """All label arrays of the dataset contract for landmarks (N, 68, 2) aligned in a ``size``
    crop and the clip's 16 kHz audio. Gaze is unknown for real videos (NaN); the eye boxes
    follow the synthetic data's rule (one :func:`~pdfgc.face.geometry.eye_boxes`), so eye
    triplets cut the same region from both."""
    return {
        "landmarks": marks.astype(np.float32),
        "pose": head_pose(marks, size),
        "blink": blink(marks),
        "gaze": np.full((len(marks), 2), np.nan, dtype=np.float32),
        "eye_boxes": eye_boxes(marks),
        "mel": mel_spectrogram(normalize_rms(audio)),
    }
