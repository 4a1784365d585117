"""Pixel reconstruction losses: L1 with an optional LPIPS term, and L1 on the face parts."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pdfgc.errors import PdfgcError
from pdfgc.face.landmarks import LEFT_EYE, MOUTH, RIGHT_EYE
from pdfgc.losses.perceptual import FrozenNetworkLoss
from pdfgc.networks.perceptual import build_lpips
from pdfgc.outside_weights import locate


class ReconstructionLoss(FrozenNetworkLoss):
    """``L1(fake, real) + lpips_weight * LPIPS(fake, real)`` on images in [-1, 1].

    ``lpips_net`` is a local torchvision AlexNet state dict for the LPIPS trunk (None: torch
    hub's cache; ``random``: a random trunk, for tests); ``lpips_linear`` overrides the
    packaged linear layers.
    """

    def __init__(self, lpips_weight: float = 0.0, lpips_net: str | Path | None = None,
                 lpips_linear: str | Path | None = None):
        super().__init__()
        self.lpips_weight = lpips_weight
        self.lpips = None
        if lpips_weight:
            trunk = locate("alexnet", lpips_net, "loss.lpips_net", allow_random=True)
            self.lpips = build_lpips(trunk, lpips_linear)
        self.freeze()

    def forward(self, fake: torch.Tensor, real: torch.Tensor
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """fake, real (B, 3, H, W) in [-1, 1]."""
        l1 = F.l1_loss(fake, real)
        if self.lpips is None:
            return l1, {"l1": l1.detach()}
        perceptual = self.lpips(fake, real).mean()
        loss = l1 + self.lpips_weight * perceptual
        return loss, {"l1": l1.detach(), "lpips": perceptual.detach()}


FACE_PARTS = (RIGHT_EYE, LEFT_EYE, MOUTH)


def face_parts_mask(landmarks: torch.Tensor, size: int, margin: float) -> torch.Tensor:
    """(B, L, 2) landmarks in pixels -> (B, 1, size, size) float mask, 1 inside the box of
    each eye and of the mouth, each box grown by ``margin`` x ``size`` pixels on every side."""
    grid = torch.arange(size, device=landmarks.device, dtype=landmarks.dtype) + 0.5
    inside = torch.zeros(landmarks.shape[0], size, size, dtype=torch.bool,
                         device=landmarks.device)
    for part in FACE_PARTS:
        points = landmarks[:, part]
        low = points.amin(1) - margin * size  # (B, 2): x0, y0
        high = points.amax(1) + margin * size
        columns = (grid >= low[:, :1]) & (grid <= high[:, :1])  # (B, W)
        rows = (grid >= low[:, 1:]) & (grid <= high[:, 1:])  # (B, H)
        inside |= rows[:, :, None] & columns[:, None, :]
    return inside[:, None].to(landmarks.dtype)


class FacePartsL1Loss(nn.Module):
    """[ours] Pixel L1 inside the eye and mouth boxes of the target's landmarks (mean over
    those pixels), beside the whole-image L1: at 64 px the eyes and mouth are a few percent of
    the image, so the whole-image L1 hardly asks G to draw them."""

    def __init__(self, margin: float = 0.05):
        super().__init__()
        if margin < 0:
            raise PdfgcError(f"loss.face_parts_margin must be 0 or more, got {margin}")
        self.margin = margin

    def forward(self, fake: torch.Tensor, real: torch.Tensor, landmarks: torch.Tensor
                ) -> torch.Tensor:
        """fake, real (B, 3, H, W); landmarks (B, L, 2) of ``real`` in its pixels."""
        mask = face_parts_mask(landmarks, real.shape[-1], self.margin)
        return ((fake - real).abs() * mask).sum() / (mask.sum() * real.shape[1]).clamp(min=1)
