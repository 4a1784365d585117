"""Control scored against the ground truth: on synthetic data, the renderer draws the frame
each code swap should produce.

On each test batch, for each group g of ``FACTOR_GROUPS`` (mouth, pose, eye, emotion):

* ``R0`` is the self-reconstruction and ``Rg`` the render whose g code comes from the
  partner sample (another speaker's clip), the other codes kept (:meth:`FrameBatch.swapped`);
* ``T0`` is the frame the synthetic renderer draws for the sample's speaker and true factors,
  ``Th`` the same with group h's factors taken from the partner: the frame a perfect swap of
  h gives (:class:`GroundTruth`, prepared as the dataset prepares its frames);
* after a Gaussian low-pass (``blur_sigma`` pixels at 64 px, scaled with the image size: the
  renders are blurrier than the truth), the movement ``d_g = Rg - R0`` is explained by the
  intended changes ``D_h = Th - T0`` of all four groups jointly, by least squares over every
  pixel of the test set: coefficients ``c[g, h]``.

Figures: ``control/<g>/transfer`` = ``c[g, g]``, the share of the intended change the render
made (0 for a render that ignores the swap, 1 for an exact one); ``control/<g>/leakage`` =
the largest ``|c[g, h]|`` over the other groups h; ``control/<g>/error`` = mean
``|blur(Rg) - blur(Tg)|`` and, the yardstick of a render that ignores the swap,
``control/<g>/error_nocontrol`` = mean ``|blur(R0) - blur(Tg)|`` (pixels in [0, 1]). The
details hold the whole coefficient matrix (``control/coefficients``, row g = swapped group).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pdfgc.data.manifest import read_manifest
from pdfgc.data.synthetic import render_frame
from pdfgc.data.synthetic.generate import dataset_identities
from pdfgc.errors import PdfgcError
from pdfgc.features import prepare_image
from pdfgc.metrics.disentanglement import FACTOR_GROUPS
from pdfgc.metrics.registry import Metric, MetricContext, MetricResult, register
from pdfgc.metrics.render import FrameBatch

GROUPS = tuple(FACTOR_GROUPS)  # mouth, pose, eye, emotion
BLUR_REFERENCE_SIZE = 64  # blur_sigma is in pixels of a frame this size
SYNTHETIC_PREFIX = "syn"  # synthetic identities are named syn<index>


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian low-pass of (B, C, H, W) images, ``sigma`` in pixels (0 returns
    them unchanged); the edges are reflected."""
    if sigma <= 0:
        return images
    radius = min(math.ceil(3 * sigma), min(images.shape[-2:]) - 1)
    x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    taps = torch.exp(-(x**2) / (2 * sigma**2))
    taps = taps / taps.sum()
    c = images.shape[1]
    out = F.pad(images, (radius,) * 4, mode="reflect")
    out = F.conv2d(out, taps.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(out, taps.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


class GroundTruth:
    """The synthetic renderer's frames for the clips of the dataset in ``root``, drawn for
    any factors and prepared at ``size`` px as the dataset prepares its frames."""

    def __init__(self, root: Path, factor_names: Sequence[str], size: int, crop: bool):
        identities, self.image_size = dataset_identities(root)
        self.factor_names, self.size, self.crop = tuple(factor_names), size, crop
        self.speakers = [identities[_synthetic_index(r.identity, root)]
                         for r in read_manifest(root)]

    def draw(self, clips: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
        """Frames (B, 3, size, size) in [-1, 1] of record indices ``clips`` (B,) (their
        speakers) with ``factors`` (B, F), on the CPU."""
        frames = []
        for clip, row in zip(clips.tolist(), factors.tolist(), strict=True):
            image, _ = render_frame(self.speakers[clip], dict(zip(self.factor_names, row,
                                                                  strict=True)), self.image_size)
            frames.append(torch.from_numpy(prepare_image(image, self.size, self.crop)))
        return torch.stack(frames)

    def swaps(self, batch: FrameBatch) -> dict[str | None, torch.Tensor]:
        """The true frames of a batch on its device: ``None`` for the sample's own factors
        (T0), each group for its factors taken from the partner sample (Th)."""
        factors = batch.data["factors"].float().cpu()
        partner = factors[batch.partner.cpu()]
        clips = batch.data["clip"].cpu()
        truth = {None: self.draw(clips, factors)}
        for group, members in FACTOR_GROUPS.items():
            columns = [i for i, name in enumerate(self.factor_names) if name in members]
            swapped = factors.clone()
            swapped[:, columns] = partner[:, columns]
            truth[group] = self.draw(clips, swapped)
        return {k: v.to(batch.data["target"].device) for k, v in truth.items()}


def _synthetic_index(name: str, root: Path) -> int:
    """The renderer's identity number of a synthetic speaker name (``syn0042`` -> 42)."""
    digits = name.removeprefix(SYNTHETIC_PREFIX)
    if not name.startswith(SYNTHETIC_PREFIX) or not digits.isdigit():
        raise PdfgcError(f"{root}: identity {name!r} is not a synthetic speaker "
                         f"({SYNTHETIC_PREFIX}<number>)")
    return int(digits)


@register
class Transfer(Metric):
    """Per-group control against the synthetic ground truth (see the module docstring).
    Option: ``blur_sigma`` (pixels at 64 px, default 1.0)."""

    name = "transfer"
    stream = "frames"
    needs_factors = True

    def __init__(self, ctx: MetricContext, blur_sigma: float = 1.0):
        super().__init__(ctx)
        if ctx.data_root is None:
            raise PdfgcError("metric transfer needs the synthetic dataset's folder")
        if blur_sigma < 0:
            raise PdfgcError(f"transfer: blur_sigma must be at least 0, not {blur_sigma}")
        self.blur_sigma = blur_sigma
        self.root = Path(ctx.data_root)
        self.truth: GroundTruth | None = None  # made for the model's image size on first use
        n = len(GROUPS)
        self.gram = np.zeros((n, n))    # sum <D_h, D_k>
        self.moved = np.zeros((n, n))   # row g: sum <D_h, d_g>
        self.error = np.zeros((2, n))   # sum |Rg - Tg|, sum |R0 - Tg|
        self.pixels = 0

    @torch.no_grad()
    def update(self, batch: FrameBatch) -> None:
        size = batch.fake.shape[-1]
        if self.truth is None or self.truth.size != size:
            self.truth = GroundTruth(self.root, self.ctx.factor_names, size, self.ctx.crop)
        sigma = self.blur_sigma * size / BLUR_REFERENCE_SIZE

        def blur(images: torch.Tensor) -> torch.Tensor:  # [-1, 1] -> [0, 1], low-passed
            return gaussian_blur(images.double() / 2 + 0.5, sigma)

        truth = {k: blur(v) for k, v in self.truth.swaps(batch).items()}
        intended = torch.stack([(truth[h] - truth[None]).flatten(1) for h in GROUPS])  # (4, B, P)
        self.gram += torch.einsum("hbp,kbp->hk", intended, intended).cpu().numpy()
        fake = blur(batch.fake)
        for g, group in enumerate(GROUPS):
            swapped = blur(batch.swapped(group))
            movement = (swapped - fake).flatten(1)
            self.moved[g] += torch.einsum("hbp,bp->h", intended, movement).cpu().numpy()
            self.error[0, g] += float((swapped - truth[group]).abs().sum())
            self.error[1, g] += float((fake - truth[group]).abs().sum())
        self.pixels += fake.numel()

    def compute(self) -> MetricResult:
        if not self.pixels:
            nan = float("nan")
            return MetricResult({f"control/{g}/{k}": nan for g in GROUPS
                                 for k in ("transfer", "leakage", "error", "error_nocontrol")})
        coefficients = np.linalg.lstsq(self.gram, self.moved.T, rcond=None)[0].T  # (g, h)
        errors = self.error / self.pixels
        results = {}
        for g, group in enumerate(GROUPS):
            others = np.delete(coefficients[g], g)
            results[f"control/{group}/transfer"] = float(coefficients[g, g])
            results[f"control/{group}/leakage"] = float(np.abs(others).max())
            results[f"control/{group}/error"] = float(errors[0, g])
            results[f"control/{group}/error_nocontrol"] = float(errors[1, g])
        details = {"control/coefficients": {
            group: dict(zip(GROUPS, coefficients[g].tolist(), strict=True))
            for g, group in enumerate(GROUPS)}}
        return MetricResult(results, details)
