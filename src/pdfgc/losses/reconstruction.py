"""Pixel reconstruction loss with an optional LPIPS term."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

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
