"""Align a clip's frames as PC-AVS did: a similarity transform to a face template.

The template (:data:`pdfgc.face.geometry.TEMPLATE`) puts the mean eye centres at (87, 59) and
(137, 59) and the inner-mouth centre at (112, 120) of a 224 image (scaled for other sizes).
Scale and rotation are the clip's median, so head roll stays visible (it is part of the pose);
the translation is fitted per frame and smoothed over time, so the face stays centred without
jitter. Transforms are (N, 2, 3) affine matrices mapping source pixels to output pixels, as
``cv2.warpAffine`` takes them.
"""

from __future__ import annotations

import cv2
import numpy as np

from pdfgc.face.geometry import TEMPLATE
from pdfgc.face.landmarks import INNER_MOUTH, LEFT_EYE, RIGHT_EYE, smooth
from pdfgc.features import OFFICIAL_SIZE


def anchors(marks: np.ndarray) -> np.ndarray:
    """The three alignment points of landmarks (N, 68, 2): image-left eye centre, image-right
    eye centre, inner-mouth centre -> (N, 3, 2)."""
    parts = (RIGHT_EYE, LEFT_EYE, INNER_MOUTH)
    return np.stack([marks[:, part].mean(axis=1) for part in parts], axis=1)


def template(size: int) -> np.ndarray:
    """The template's three points (3, 2) for a ``size`` image."""
    return TEMPLATE * (size / OFFICIAL_SIZE)


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (N, 2, 3) taking points src (N, K, 2) onto dst (K, 2).

    Closed form: with centred points, x' = a x - b y and y' = b x + a y where
    a = sum(s . d) / sum(|s|^2) and b = sum(s x d) / sum(|s|^2).
    """
    s = src - src.mean(axis=1, keepdims=True)  # (N, K, 2)
    d = dst - dst.mean(axis=0)  # (K, 2)
    norm = np.sum(s**2, axis=(1, 2))
    a = np.sum(s[..., 0] * d[:, 0] + s[..., 1] * d[:, 1], axis=1) / norm
    b = np.sum(s[..., 0] * d[:, 1] - s[..., 1] * d[:, 0], axis=1) / norm
    linear = np.stack([np.stack([a, -b], -1), np.stack([b, a], -1)], axis=1)  # (N, 2, 2)
    shift = dst.mean(axis=0) - np.einsum("nij,nj->ni", linear, src.mean(axis=1))
    return np.concatenate([linear, shift[..., None]], axis=2)


def clip_transforms(marks: np.ndarray, size: int = OFFICIAL_SIZE, window: int = 9) -> np.ndarray:
    """Per-frame transforms (N, 2, 3) aligning landmarks (N, 68, 2) to the template: the
    clip's median scale and rotation, and the per-frame best shift smoothed over ``window``
    frames."""
    src, dst = anchors(marks), template(size)
    fits = fit_similarity(src, dst)
    scale = np.median(np.hypot(fits[:, 0, 0], fits[:, 1, 0]))
    angle = np.median(np.arctan2(fits[:, 1, 0], fits[:, 0, 0]))
    linear = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    shift = dst.mean(axis=0) - src.mean(axis=1) @ linear.T  # (N, 2)
    shift = smooth(shift, window)
    return np.concatenate([np.broadcast_to(linear, (len(marks), 2, 2)), shift[..., None]], axis=2)


def resize_transforms(n: int, width: int, height: int, size: int = OFFICIAL_SIZE) -> np.ndarray:
    """Transforms (n, 2, 3) that only resize ``width`` x ``height`` frames to ``size``
    (pixel centres kept), for sources already cropped, like VoxCeleb2's own clips."""
    sx, sy = size / width, size / height
    matrix = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5]])
    return np.repeat(matrix[None], n, axis=0)


def transform_points(transforms: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply transforms (N, 2, 3) to points (N, K, 2) -> (N, K, 2) float32."""
    moved = np.einsum("nij,nkj->nki", transforms[:, :, :2], points) + transforms[:, None, :, 2]
    return moved.astype(np.float32)


def warp_frames(frames: np.ndarray, transforms: np.ndarray, size: int = OFFICIAL_SIZE
                ) -> np.ndarray:
    """Warp frames (N, H, W, 3) uint8 by transforms (N, 2, 3) into (N, size, size, 3) uint8,
    bilinear, the border replicated."""
    return np.stack([
        cv2.warpAffine(frame, matrix, (size, size), flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REPLICATE)
        for frame, matrix in zip(frames, transforms, strict=True)
    ])
