"""The perceptual losses (VGG19, and [ours] the project's own motion trunk), and what the
losses share: fixed networks."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from pdfgc.errors import PdfgcError
from pdfgc.networks.checkpoints import load_networks
from pdfgc.networks.perceptual import VGG_LAYER_ENDS, vgg19_blocks
from pdfgc.outside_weights import locate

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VGG_OPTION = "loss.vgg_weights"


class FrozenNetworkLoss(nn.Module):
    """Base of losses that hold a fixed pretrained network.

    After :meth:`freeze` the module stays in eval mode, its weights get no gradient, and they
    are kept out of ``state_dict`` (they come from their own file, not from training
    checkpoints); loading a state dict without them keeps the current weights.
    """

    def freeze(self) -> None:
        """Call at the end of ``__init__``, once the network holds its weights."""
        self.requires_grad_(False)
        self.eval()
        self._frozen_keys = list(self.state_dict())
        self.register_state_dict_post_hook(_drop_frozen_keys)
        self.register_load_state_dict_pre_hook(_fill_frozen_keys)

    def train(self, mode: bool = True) -> FrozenNetworkLoss:
        """Stay in eval mode whatever the parent module asks."""
        return super().train(False)


def _drop_frozen_keys(module: FrozenNetworkLoss, state_dict: dict[str, Any], prefix: str,
                      local_metadata: Any) -> None:
    for key in module._frozen_keys:
        state_dict.pop(prefix + key, None)


def _fill_frozen_keys(module: FrozenNetworkLoss, state_dict: dict[str, Any], prefix: str,
                      *args: Any) -> None:
    current = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    for key in module._frozen_keys:
        state_dict.setdefault(prefix + key, current[key])


class VGGPerceptualLoss(FrozenNetworkLoss):
    """Weighted L1 between VGG19 features (relu1_1 .. relu5_1) of a fake and a real image.

    ``weights`` is a local torchvision ``vgg19`` ImageNet state dict (``vgg19-dcbb9e9d.pth``;
    None: torch hub's cache), checked by :func:`pdfgc.outside_weights.locate`; nothing is
    downloaded. Images in [-1, 1] are mapped to ImageNet normalisation.
    """

    def __init__(self, weights: str | Path | None,
                 layer_weights: Sequence[float] = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)):
        super().__init__()
        if len(layer_weights) != len(VGG_LAYER_ENDS):
            raise PdfgcError(f"layer_weights={list(layer_weights)}: expected "
                             f"{len(VGG_LAYER_ENDS)} weights (relu1_1 .. relu5_1)")
        self.blocks = vgg19_blocks(locate("vgg19", weights, VGG_OPTION))
        self.layer_weights = tuple(float(w) for w in layer_weights)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1),
                             persistent=False)
        self.freeze()

    def _normalize(self, image: torch.Tensor) -> torch.Tensor:
        return ((image + 1) / 2 - self.mean) / self.std

    def forward(self, fake: torch.Tensor, real: torch.Tensor
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """fake, real (B, 3, H, W) in [-1, 1]; gradients flow into ``fake`` only."""
        x, y = self._normalize(fake), self._normalize(real.detach())
        loss = fake.new_zeros(())
        for weight, block in zip(self.layer_weights, self.blocks, strict=True):
            x = block(x)
            with torch.no_grad():
                y = block(y)
            loss = loss + weight * F.l1_loss(x, y)
        return loss, {"vgg": loss.detach()}


class TrunkPerceptualLoss(FrozenNetworkLoss):
    """[ours] A perceptual term that needs no outside weights: L1 between the features of a
    fake and a real image in the motion encoder's FAN trunk, frozen, as trained on the
    landmarks by the ``trunk`` stage (stem, hourglass and heatmap outputs; see
    :meth:`pdfgc.networks.motion.FAN.trunk_features`). Each layer's L1 is relative to the
    real image's mean absolute feature, so the layers count alike; the loss is their mean.

    ``weights`` is a pdfgc checkpoint (or released folder) holding a ``motion`` network of
    the ``motion`` config; only its trunk is used. Gradients flow into ``fake`` only.
    """

    def __init__(self, motion: DictConfig, weights: str | Path | None):
        super().__init__()
        if weights is None:
            raise PdfgcError("loss.trunk_perceptual needs loss.trunk_weights: a checkpoint with "
                             "the trained motion trunk (the trunk stage's last.ckpt)")
        nets = nn.ModuleDict({"motion": instantiate(motion)})
        load_networks(weights, nets, ["motion"])
        self.trunk = nets["motion"].model
        self.freeze()

    def forward(self, fake: torch.Tensor, real: torch.Tensor
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """fake, real (B, 3, H, W) in [-1, 1]."""
        with torch.no_grad():
            targets = self.trunk.trunk_features(real)
        layers = [F.l1_loss(x, y) / y.abs().mean().clamp_min(1e-8)
                  for x, y in zip(self.trunk.trunk_features(fake), targets, strict=True)]
        loss = torch.stack(layers).mean()
        return loss, {"trunk": loss.detach()}
