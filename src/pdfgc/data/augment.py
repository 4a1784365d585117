"""Augmentation of the motion encoder's inputs: it changes appearance but keeps the motion.

Colour jitter and a random perspective warp as in the released configuration, plus the PC-AVS
extras (channel scaling, aspect squeeze / stretch, median blur, sharpening), each off at 0.
Every random choice comes from the generator passed in, so a sample's augmentation is fixed by
its seed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

import cv2
import numpy as np

from pdfgc.errors import PdfgcError

GREY = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # luma weights of RGB
SHARPEN_KERNEL = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], dtype=np.float32) / 13.0


@dataclass(frozen=True)
class MotionAugment:
    """Random appearance changes of a (3, S, S) image in [-1, 1].

    Args:
        brightness, contrast, saturation: factors drawn from [1 - v, 1 + v] (brightness
            scales, contrast blends with the mean grey, saturation with the grey image).
        hue: hue shift drawn from [-v, v] turns of the colour wheel. The four jitters run in a
            random order, as torchvision's ``ColorJitter``.
        perspective: each corner moves inward by up to this fraction of half the side, with
            probability ``perspective_p``; uncovered pixels are black.
        channel_scale: each RGB channel scaled by a factor from [1 - v, 1 + v].
        aspect: width scaled about the centre by a factor from [1 - v, 1 + v].
        median_blur_p: probability of a 3x3 median blur.
        sharpen_p: probability of sharpening (factor 2, torchvision's kernel).
    """

    brightness: float = 0.5
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.4
    perspective: float = 0.1
    perspective_p: float = 0.9
    channel_scale: float = 0.0
    aspect: float = 0.0
    median_blur_p: float = 0.0
    sharpen_p: float = 0.0

    @classmethod
    def from_config(cls, cfg: Mapping[str, float] | None) -> MotionAugment:
        """Build from a config mapping (options left out keep the released values);
        ``None`` switches every augmentation off."""
        if cfg is None:
            return cls(**{f.name: 0.0 for f in fields(cls)})
        unknown = sorted(set(cfg) - {f.name for f in fields(cls)})
        if unknown:
            raise PdfgcError(f"data.augment: unknown option(s) {unknown}")
        return cls(**{k: float(v) for k, v in cfg.items()})

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(3, S, S) float32 in [-1, 1] -> an augmented copy, same shape and range."""
        rgb = image.transpose(1, 2, 0) * 0.5 + 0.5  # (S, S, 3) in [0, 1]
        rgb = self._jitter(np.ascontiguousarray(rgb, dtype=np.float32), rng)
        if self.channel_scale > 0:
            scale = rng.uniform(1 - self.channel_scale, 1 + self.channel_scale, 3)
            rgb = np.clip(rgb * scale.astype(np.float32), 0.0, 1.0)
        rgb = self._warp(rgb, rng)
        if rng.random() < self.median_blur_p:
            rgb = cv2.medianBlur(rgb, 3)
        if rng.random() < self.sharpen_p:
            rgb = _sharpen(rgb)
        return np.ascontiguousarray((rgb * 2.0 - 1.0).transpose(2, 0, 1), dtype=np.float32)

    def _jitter(self, rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Brightness, contrast, saturation and hue, in a random order."""
        for op in rng.permutation(4):
            if op == 0 and self.brightness > 0:
                rgb = rgb * _factor(rng, self.brightness)
            elif op == 1 and self.contrast > 0:
                rgb = _blend(rgb, float((rgb @ GREY).mean()), _factor(rng, self.contrast))
            elif op == 2 and self.saturation > 0:
                rgb = _blend(rgb, (rgb @ GREY)[..., None], _factor(rng, self.saturation))
            elif op == 3 and self.hue > 0:
                rgb = _shift_hue(rgb, rng.uniform(-self.hue, self.hue))
            rgb = np.clip(rgb, 0.0, 1.0)
        return rgb

    def _warp(self, rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Aspect squeeze / stretch and the perspective warp, as one homography."""
        side = rgb.shape[0]
        matrix = np.eye(3)
        if self.aspect > 0:
            factor = rng.uniform(1 - self.aspect, 1 + self.aspect)
            centre = (side - 1) / 2
            matrix = np.array([[factor, 0, centre * (1 - factor)], [0, 1, 0], [0, 0, 1]])
        if self.perspective > 0 and rng.random() < self.perspective_p:
            matrix = _perspective(side, self.perspective, rng) @ matrix
        if np.array_equal(matrix, np.eye(3)):
            return rgb
        return cv2.warpPerspective(rgb, matrix, (side, side), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _factor(rng: np.random.Generator, strength: float) -> np.float32:
    return np.float32(rng.uniform(max(0.0, 1 - strength), 1 + strength))


def _blend(image: np.ndarray, other: np.ndarray | float, factor: np.float32) -> np.ndarray:
    return image * factor + other * (1 - factor)


def _shift_hue(rgb: np.ndarray, turns: float) -> np.ndarray:
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)  # float input: H in degrees [0, 360)
    hsv[..., 0] = np.mod(hsv[..., 0] + np.float32(turns * 360.0), 360.0)
    return np.clip(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB), 0.0, 1.0)


def _perspective(side: int, distortion: float, rng: np.random.Generator) -> np.ndarray:
    """Homography moving each corner inward by up to ``distortion`` of half the side."""
    far = side - 1
    corners = np.array([[0, 0], [far, 0], [far, far], [0, far]], dtype=np.float32)
    inward = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], dtype=np.float32)
    shift = rng.uniform(0, distortion * side / 2, (4, 2)).astype(np.float32)
    return cv2.getPerspectiveTransform(corners, corners + inward * shift)


def _sharpen(rgb: np.ndarray) -> np.ndarray:
    smooth = cv2.filter2D(rgb, -1, SHARPEN_KERNEL, borderType=cv2.BORDER_REPLICATE)
    return np.clip(2.0 * rgb - smooth, 0.0, 1.0)
