"""Image pre-processing of the released PD-FGC model: resize, crop the face box, to [-1, 1]."""

from collections.abc import Sequence

import cv2
import numpy as np
import torch

OFFICIAL_SIZE = 224
CROP_ROWS = slice(0, 192)  # of the 224x224 resize: drops the bottom 32 rows
CROP_COLS = slice(16, 208)  # and 16 columns on each side


def crop_face(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 of any size -> (224, 224, 3) uint8, as the released model crops faces.

    Resize to 224x224, keep rows 0..191 and columns 16..207, resize back to 224x224 (both
    resizes bilinear, cv2's default).
    """
    square = cv2.resize(img, (OFFICIAL_SIZE, OFFICIAL_SIZE), interpolation=cv2.INTER_LINEAR)
    box = np.ascontiguousarray(square[CROP_ROWS, CROP_COLS])  # (192, 192, 3)
    return cv2.resize(box, (OFFICIAL_SIZE, OFFICIAL_SIZE), interpolation=cv2.INTER_LINEAR)


def face_pixels(img: np.ndarray, size: int = OFFICIAL_SIZE, crop: bool = True) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (size, size, 3) uint8: the pixels the network sees.

    With ``crop`` the face box is cut as in ``crop_face``; without it the whole image is used.
    The result is then resized to ``size`` (INTER_AREA) unless it already has that size.
    """
    face = crop_face(img) if crop else img
    if face.shape[:2] != (size, size):
        face = cv2.resize(face, (size, size), interpolation=cv2.INTER_AREA)
    return face


def pixels_to_input(pixels: torch.Tensor) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 in [-1, 1], computed where ``pixels`` live.

    The result is a channels-last view (no copy of the layout)."""
    return (pixels.float() / 255.0 * 2.0 - 1.0).permute(0, 3, 1, 2)


def prepare_image(img: np.ndarray, size: int = OFFICIAL_SIZE, crop: bool = True) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (3, size, size) float32 in [-1, 1] network input
    (``face_pixels`` then ``pixels_to_input``)."""
    scaled = pixels_to_input(torch.from_numpy(face_pixels(img, size, crop)[None]))[0]
    return np.ascontiguousarray(scaled.numpy())


def prepare_images(
    imgs: np.ndarray | Sequence[np.ndarray], size: int = OFFICIAL_SIZE, crop: bool = True
) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB -> (N, 3, size, size) float32 in [-1, 1]."""
    return np.stack([prepare_image(img, size=size, crop=crop) for img in imgs])


def to_uint8(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] (tensor or array) -> (N, H, W, 3) uint8, clamped and rounded.

    A tensor is converted where it lives (on a GPU, only the uint8 frames are copied back)."""
    if isinstance(images, torch.Tensor):
        pixels = (images.detach().float().clamp(-1.0, 1.0) + 1.0) / 2.0 * 255.0
        return pixels.round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy()
    pixels = (np.clip(images, -1.0, 1.0) + 1.0) / 2.0 * 255.0
    return np.ascontiguousarray(np.rint(pixels).astype(np.uint8).transpose(0, 2, 3, 1))


def crop_points(points: np.ndarray, src_size: int, size: int = OFFICIAL_SIZE,
                crop: bool = True) -> np.ndarray:
    """Map (..., 2) pixel coordinates (x, y) of a square ``src_size`` frame to model pixels.

    Follows ``prepare_image``: the crop rule of ``crop_face`` (if ``crop``), then the resize to
    ``size``. Pixel centres sit at integer coordinates, as cv2's resizes treat them.
    """
    xy = np.asarray(points, dtype=np.float32) + 0.5  # pixel edges: what resizes scale
    if crop:
        corner = np.array([CROP_COLS.start, CROP_ROWS.start], dtype=np.float32)
        box = CROP_ROWS.stop - CROP_ROWS.start  # side of the cut box, 192
        xy = (xy * (OFFICIAL_SIZE / src_size) - corner) * (size / box)
    else:
        xy = xy * (size / src_size)
    return xy - 0.5
