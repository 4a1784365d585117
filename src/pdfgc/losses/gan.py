"""Adversarial terms: the hinge GAN loss and discriminator feature matching."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

Logits = Sequence[torch.Tensor] | Sequence[Sequence[torch.Tensor]]


def scale_logits(outputs: Logits) -> list[torch.Tensor]:
    """Per scale, the logit map: takes the logits themselves or a discriminator's raw output
    (per scale, the list of block outputs with the logits last)."""
    return [out[-1] if isinstance(out, list | tuple) else out for out in outputs]


def _mean_over_scales(terms: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(terms).mean()


class HingeGANLoss(nn.Module):
    """Hinge GAN loss of a multi-scale discriminator, averaged over its scales."""

    def discriminator(self, real_logits: Logits, fake_logits: Logits
                      ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """D's loss: mean relu(1 - real) + mean relu(1 + fake); fakes should come detached."""
        real, fake = scale_logits(real_logits), scale_logits(fake_logits)
        loss_real = _mean_over_scales([F.relu(1 - r).mean() for r in real])
        loss_fake = _mean_over_scales([F.relu(1 + f).mean() for f in fake])
        loss = loss_real + loss_fake
        logs = {"d": loss.detach(), "d_real": loss_real.detach(), "d_fake": loss_fake.detach(),
                "real_score": _mean_over_scales([r.mean() for r in real]).detach(),
                "fake_score": _mean_over_scales([f.mean() for f in fake]).detach()}
        return loss, logs

    def generator(self, fake_logits: Logits) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """G's adversarial loss: -mean(fake logits)."""
        loss = -_mean_over_scales([f.mean() for f in scale_logits(fake_logits)])
        return loss, {"g": loss.detach()}

    def forward(self, fake_logits: Logits) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The generator's term (what a loop over weighted generator terms calls)."""
        return self.generator(fake_logits)


class FeatureMatchingLoss(nn.Module):
    """L1 between D's block outputs on real and fake images, plus a pixel L1.

    Per scale, every block output but the logits contributes ``L1(fake, real.detach())``; the
    scales are averaged, and ``image_weight * L1(fake_image, real_image)`` is added. The caller
    applies the overall weight (10 in the released setup).
    """

    def __init__(self, image_weight: float = 1.0):
        super().__init__()
        self.image_weight = image_weight

    def forward(self, real_features: Sequence[Sequence[torch.Tensor]],
                fake_features: Sequence[Sequence[torch.Tensor]],
                real_image: torch.Tensor, fake_image: torch.Tensor
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Both feature lists are D's raw outputs: per scale, the block outputs, logits last."""
        per_scale = [sum(F.l1_loss(f, r.detach()) for f, r in zip(fake[:-1], real[:-1],
                                                                    strict=True))
                     for real, fake in zip(real_features, fake_features, strict=True)]
        features = _mean_over_scales(per_scale)
        pixel = F.l1_loss(fake_image, real_image.detach())
        loss = features + self.image_weight * pixel
        return loss, {"feat": features.detach(), "pixel": pixel.detach()}
