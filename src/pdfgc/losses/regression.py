"""Regression of labels that may be missing (pose, blink, gaze)."""

from __future__ import annotations

import torch
from torch import nn

from pdfgc.errors import check_choice

KINDS = ("l1", "mse")


class MaskedRegression(nn.Module):
    """Mean L1 or squared error over the known targets only.

    A target is ignored where it is NaN or where ``mask`` (broadcast from the leading
    dimensions, e.g. (B,) for (B, 2) targets) is false. No known target gives a zero loss.
    """

    whole_batch = True  # couples the batch's samples: gathered across processes

    def __init__(self, kind: str = "l1"):
        super().__init__()
        self.kind = check_choice("kind", kind, KINDS)

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """pred and target of one shape; mask bool of target's leading dimensions or None."""
        valid = ~torch.isnan(target)
        if mask is not None:
            valid = valid & mask.bool().reshape(mask.shape + (1,) * (target.dim() - mask.dim()))
        target = torch.where(valid, target, pred.detach())  # NaNs never enter the graph
        error = pred - target
        error = error.abs() if self.kind == "l1" else error.square()
        count = valid.sum()
        loss = (error * valid).sum() / count.clamp_min(1)
        return loss, {self.kind: loss.detach(), "known": count.float() / valid.numel()}
