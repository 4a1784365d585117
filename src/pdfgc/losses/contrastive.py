"""Contrastive terms: symmetric InfoNCE for lip sync and the eye triplet loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pdfgc.errors import check_choice

SIMILARITIES = ("inv_euclidean", "cosine")


class SymmetricInfoNCE(nn.Module):
    """Lip-sync InfoNCE between visual mouth codes and audio features, in both directions.

    Both sides are L2-normalised; the similarity is 1 / Euclidean distance (released) or the
    cosine, divided by ``temperature``. Item i's video and audio are the positive pair; the
    other items of the batch are negatives, and for video -> audio also the item's own
    ``audio_negatives`` (other times of its clip, other clips). With ``detach`` (released),
    audio -> video sees a detached video feature and video -> audio a detached audio
    feature, so each direction trains one side. ``mse_weight`` adds
    ``MSE(audio, video.detach())`` on the raw features. The two directions are averaged: the
    released weights (100 per direction, MSE 1) are a term weight of 200 with mse_weight 0.005.
    """

    whole_batch = True  # couples the batch's samples: gathered across processes

    def __init__(self, temperature: float = 0.07, similarity: str = "inv_euclidean",
                 detach: bool = True, mse_weight: float = 0.0, eps: float = 1e-6):
        super().__init__()
        self.temperature = temperature
        self.similarity = check_choice("similarity", similarity, SIMILARITIES)
        self.detach = detach
        self.mse_weight = mse_weight
        self.eps = eps

    def _logits(self, cosine: torch.Tensor) -> torch.Tensor:
        """Cosine of unit vectors -> similarity / temperature."""
        if self.similarity == "cosine":
            return cosine / self.temperature
        squared_distance = (2 - 2 * cosine).clamp_min(self.eps ** 2)  # |a - b|^2 of unit vectors
        return squared_distance.rsqrt() / self.temperature

    def _constant(self, x: torch.Tensor) -> torch.Tensor:
        return x.detach() if self.detach else x

    def forward(self, video: torch.Tensor, audio: torch.Tensor,
                audio_negatives: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """video (B, D), audio (B, D), audio_negatives (B, N, D) or None."""
        v, a = F.normalize(video, dim=-1), F.normalize(audio, dim=-1)
        cos_a2v = a @ self._constant(v).T  # (B, B): audio i against every video
        cos_v2a = v @ self._constant(a).T  # (B, B): video i against every audio
        if audio_negatives is not None:
            negatives = self._constant(F.normalize(audio_negatives, dim=-1))
            cos_v2a = torch.cat([cos_v2a, torch.einsum("bd,bnd->bn", v, negatives)], dim=1)
        target = torch.arange(len(v), device=v.device)
        logits_a2v, logits_v2a = self._logits(cos_a2v), self._logits(cos_v2a)
        a2v = F.cross_entropy(logits_a2v, target)
        v2a = F.cross_entropy(logits_v2a, target)
        loss = (a2v + v2a) / 2
        accuracy = torch.cat([logits_a2v.argmax(1) == target, logits_v2a.argmax(1) == target])
        logs = {"a2v": a2v.detach(), "v2a": v2a.detach(), "acc": accuracy.float().mean()}
        if self.mse_weight:
            mse = F.mse_loss(audio, video.detach())
            loss = loss + self.mse_weight * mse
            logs["mse"] = mse.detach()
        return loss, logs


class EyeTripletLoss(nn.Module):
    """Triplet margin loss on eye codes: the anchor (frame B with frame A's eyes pasted in)
    must be closer to A's code (positive) than to B's (negative) by ``margin``.

    With ``normalize`` the codes are compared on the unit sphere, so the margin cannot be met
    by merely scaling the codes up.
    """

    def __init__(self, margin: float = 0.2, normalize: bool = True):
        super().__init__()
        self.margin = margin
        self.normalize = normalize

    def forward(self, anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """anchor, positive, negative (B, D) codes."""
        if self.normalize:
            anchor, positive, negative = (F.normalize(x, dim=-1)
                                          for x in (anchor, positive, negative))
        d_pos = F.pairwise_distance(anchor, positive)
        d_neg = F.pairwise_distance(anchor, negative)
        loss = F.relu(d_pos - d_neg + self.margin).mean()
        logs = {"triplet": loss.detach(), "d_pos": d_pos.mean().detach(),
                "d_neg": d_neg.mean().detach(), "acc": (d_pos < d_neg).float().mean()}
        return loss, logs
