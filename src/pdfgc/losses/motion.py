"""The [ours] motion-consistency loss of stage 1."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pdfgc.losses.perceptual import check_choice

KINDS = ("cosine", "l1")


class MotionConsistencyLoss(nn.Module):
    """Make the motion features of two differently augmented copies of a frame agree:
    ``1 - cosine`` or L1, averaged over the batch; both sides receive gradients."""

    def __init__(self, kind: str = "cosine"):
        super().__init__()
        self.kind = check_choice("kind", kind, KINDS)

    def forward(self, f1: torch.Tensor, f2: torch.Tensor
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """f1, f2 (B, F) motion features."""
        cosine = F.cosine_similarity(f1, f2, dim=-1)
        loss = (1 - cosine).mean() if self.kind == "cosine" else F.l1_loss(f1, f2)
        return loss, {"mot": loss.detach(), "cos": cosine.mean().detach()}
