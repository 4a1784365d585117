"""The [ours] motion-consistency loss of stage 1."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pdfgc.errors import check_choice

KINDS = ("correlation", "cosine", "l1")


class MotionConsistencyLoss(nn.Module):
    """Make the motion features of two differently augmented copies of a frame agree;
    both sides receive gradients.

    ``correlation`` (default): ``1 -`` the Pearson correlation, over the batch, of each
    feature dimension between the two copies, averaged over dimensions. It cannot be met
    by a feature offset or scale: every dimension's variation across the batch must
    survive the augmentation. ``cosine``: ``1 - cosine`` of the batch-centred features per
    sample (plain cosine is met by a large offset shared by every feature, to which the
    encoder collapses within a hundred steps). ``l1``: mean absolute difference.
    """

    whole_batch = True  # couples the batch's samples: gathered across processes

    def __init__(self, kind: str = "correlation"):
        super().__init__()
        self.kind = check_choice("kind", kind, KINDS)

    def forward(self, f1: torch.Tensor, f2: torch.Tensor
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """f1, f2 (B, F) motion features of the two copies, B >= 2."""
        mean = torch.cat([f1, f2]).mean(dim=0, keepdim=True)
        c1, c2 = f1 - mean, f2 - mean
        cosine = F.cosine_similarity(c1, c2, dim=-1)
        correlation = F.cosine_similarity(c1 - c1.mean(0), c2 - c2.mean(0), dim=0)
        if self.kind == "correlation":
            loss = (1 - correlation).mean()
        elif self.kind == "cosine":
            loss = (1 - cosine).mean()
        else:
            loss = F.l1_loss(f1, f2)
        return loss, {"mot": loss.detach(), "cos": cosine.mean().detach(),
                      "corr": correlation.mean().detach()}
