"""The [ours] landmark-heatmap term of stage 1: a stand-in for the pretrained FAN."""

from __future__ import annotations

import torch
from torch import nn

from pdfgc.errors import PdfgcError
from pdfgc.face.landmarks import NUM_LANDMARKS
from pdfgc.networks.motion import soft_argmax


def heatmap_points(points: torch.Tensor, size: int, image_size: int) -> torch.Tensor:
    """``points`` (..., 2) in pixels of an ``image_size`` image, in pixels of a ``size`` map
    (pixel centres map onto pixel centres)."""
    return (points + 0.5) * (size / image_size) - 0.5


def gaussian_heatmaps(points: torch.Tensor, size: int, image_size: int, sigma: float
                      ) -> torch.Tensor:
    """Heatmaps (B, N, size, size) with a unit Gaussian of ``sigma`` heatmap pixels at each
    of ``points`` (B, N, 2), given as x, y in pixels of an ``image_size`` image."""
    centres = heatmap_points(points, size, image_size)
    grid = torch.arange(size, device=points.device, dtype=points.dtype)
    dx = (grid[None, None, :] - centres[..., :1]) ** 2  # (B, N, size) along x
    dy = (grid[None, None, :] - centres[..., 1:]) ** 2  # along y
    return torch.exp(-(dy[..., :, None] + dx[..., None, :]) / (2 * sigma**2))


class LandmarkHeatmapLoss(nn.Module):
    """Make the motion trunk's landmark heatmaps peak at the labelled landmarks (one map each:
    the 68 iBUG points, and for the synthetic data the two pupils after them).

    The released motion encoder starts from a pretrained face-alignment network (FAN), so
    its unified motion feature holds the face's geometry from the first step; trained from
    scratch it does not, and the generator learns to ignore it. This term gives the trunk
    that start from the landmarks every dataset carries. It is the squared error over the
    heatmaps relative to the targets' energy, so a map of zeros scores 1, plus
    ``coordinate_weight`` times the mean distance (heatmap pixels) from each map's soft-argmax
    to its landmark: the squared error changes little when a sigma-1 peak is off by a
    fraction of a heatmap pixel, and at 64 px a whole blink moves the lids by less than one.
    The points after the 68 iBUG ones (the pupils) weigh ``extra_weight`` each in both parts.
    """

    def __init__(self, sigma: float = 1.0, coordinate_weight: float = 0.0,
                 extra_weight: float = 1.0):
        super().__init__()
        if extra_weight <= 0:
            raise PdfgcError(f"loss.landmark_extra_weight must be positive, got {extra_weight}")
        self.sigma, self.coordinate_weight = sigma, coordinate_weight
        self.extra_weight = extra_weight

    def forward(self, heatmaps: torch.Tensor, points: torch.Tensor, image_size: int
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """heatmaps (B, N, h, w); points (B, N, 2) in pixels of the ``image_size`` image."""
        if heatmaps.shape[1] != points.shape[1]:
            raise PdfgcError(f"the motion trunk draws {heatmaps.shape[1]} landmark heatmaps but "
                             f"the data labels {points.shape[1]} landmarks: set "
                             f"model.motion.num_landmarks={points.shape[1]}")
        points = points.to(heatmaps.dtype)
        target = gaussian_heatmaps(points, heatmaps.shape[-1], image_size, self.sigma)
        weight = torch.ones(points.shape[1], dtype=heatmaps.dtype, device=heatmaps.device)
        weight[NUM_LANDMARKS:] = self.extra_weight  # the points after the iBUG 68
        map_weight = weight[:, None, None]
        loss = (map_weight * (heatmaps - target) ** 2).sum() / (map_weight * target**2).sum()
        if not self.coordinate_weight:
            return loss, {}
        distance = (soft_argmax(heatmaps) - heatmap_points(points, heatmaps.shape[-1], image_size)
                    ).norm(dim=-1)
        distance = (distance * weight).sum() / (len(distance) * weight.sum())
        return loss + self.coordinate_weight * distance, {"heatmap": loss.detach(),
                                                          "distance": distance.detach()}
