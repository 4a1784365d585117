"""PSNR, SSIM and sharpness of self-reconstructions against the real target frames.

All on images scaled to [0, 1]. PSNR is the mean of per-image ``10 log10(1 / MSE)``; an
image reconstructed exactly has infinite PSNR, and so then has the mean (written ``Infinity``
in the JSON lines). SSIM is torchmetrics' (11x11 Gaussian window, sigma 1.5), per image, then
averaged. Sharpness is the render's Laplacian energy over the target's, per image, then
averaged: 1 for a render as sharp as its target, near 0 for a blur (which PSNR rewards over
detail in the wrong place). Each is also given for the source frame itself (``/source``):
a render that copies its appearance input scores that, and it can be high, since the source
is another frame of the target's clip (PSNR and SSIM also as the margin over it,
``/over_source``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
import torch.nn.functional as F
from torchmetrics.functional.image import structural_similarity_index_measure

from pdfgc.metrics.registry import Metric, MetricContext, MetricResult, RunningMean, register
from pdfgc.metrics.render import FrameBatch


def unit_range(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images -> [0, 1], clamped."""
    return ((images.float() + 1.0) / 2.0).clamp(0.0, 1.0)


def psnr(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (B,) in dB of [-1, 1] images; inf where they are identical."""
    mse = (unit_range(fake) - unit_range(real)).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(1.0 / mse)


def ssim(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM (B,) of [-1, 1] images."""
    return structural_similarity_index_measure(unit_range(fake), unit_range(real),
                                               data_range=1.0, reduction="none")


LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def laplacian_energy(images: torch.Tensor) -> torch.Tensor:
    """Per-image mean squared Laplacian (B,) of [-1, 1] images, on their grey levels in [0, 1]."""
    grey = unit_range(images).mean(1, keepdim=True)
    kernel = LAPLACIAN.to(grey)[None, None]
    return F.conv2d(grey, kernel).pow(2).flatten(1).mean(1)


def sharpness(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Per-image Laplacian energy of ``fake`` over that of ``real`` (B,)."""
    return laplacian_energy(fake) / laplacian_energy(real).clamp_min(1e-12)


class _ImageScore(Metric):
    """``<name>/self``: the mean of a per-image score of self-reconstructions vs targets, and
    ``<name>/source``, the same score of the source frame itself: what a render that copies
    its appearance input, ignoring every motion code, scores (the yardstick). With
    ``margin``, also ``<name>/over_source``: self minus source, 0 for that copy."""

    stream = "frames"
    score: ClassVar[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]
    margin: ClassVar[bool] = True

    def __init__(self, ctx: MetricContext):
        super().__init__(ctx)
        self.mean = RunningMean()
        self.source_mean = RunningMean()

    def update(self, batch: FrameBatch) -> None:
        target = batch.data["target"]
        self.mean.add(self.score(batch.fake, target))
        self.source_mean.add(self.score(batch.data["source"], target))

    def compute(self) -> MetricResult:
        results = {f"{self.name}/self": self.mean.value,
                   f"{self.name}/source": self.source_mean.value}
        if self.margin:
            results[f"{self.name}/over_source"] = self.mean.value - self.source_mean.value
        return MetricResult(results)


@register
class PSNR(_ImageScore):
    """``psnr/self``: mean PSNR (dB) of self-reconstructions (and ``/source``, ``/over_source``)."""

    name = "psnr"
    score = staticmethod(psnr)


@register
class SSIM(_ImageScore):
    """``ssim/self``: mean SSIM of self-reconstructions (and ``/source``, ``/over_source``)."""

    name = "ssim"
    score = staticmethod(ssim)


@register
class Sharpness(_ImageScore):
    """``sharpness/self``: mean Laplacian energy of self-reconstructions over their targets'."""

    name = "sharpness"
    score = staticmethod(sharpness)
    margin = False  # a copy is as sharp as its target: sharpness/source is the yardstick
