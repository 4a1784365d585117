"""Pixel reconstruction loss with an optional LPIPS term."""

from __future__ import annotations

import warnings
from pathlib import Path

import lpips
import torch
import torch.nn.functional as F
from torch import nn

from pdfgc.errors import PdfgcError
from pdfgc.losses.perceptual import FrozenNetworkLoss, load_strict, read_torchvision_features
from pdfgc.outside_weights import locate


def build_lpips(trunk: Path | None, linear_weights: str | Path | None = None) -> nn.Module:
    """LPIPS (AlexNet) built offline.

    The linear layers come from ``linear_weights`` or, if None, the file shipped inside the
    ``lpips`` package; the AlexNet trunk from ``trunk``, a torchvision ``alexnet`` state dict
    located by :func:`pdfgc.outside_weights.locate`, or stays random if ``trunk`` is None (as
    asked for by name, ``random``). Nothing is downloaded.
    """
    if linear_weights is not None and not Path(linear_weights).is_file():
        raise PdfgcError(f"{linear_weights}: LPIPS linear-layer weights not found")
    with warnings.catch_warnings():  # lpips calls torchvision's deprecated pretrained=False
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net="alex", pnet_rand=True, pretrained=True,
                            model_path=None if linear_weights is None else str(linear_weights),
                            verbose=False)
    if trunk is not None:
        features = read_torchvision_features(trunk)
        # lpips keeps torchvision's alexnet.features[i] as slice<k>.<i>: strip "slice<k>."
        torchvision_keys = {name: name.split(".", 1)[1] for name in model.net.state_dict()}
        trunk_state = {name: features[key] for name, key in torchvision_keys.items()
                       if key in features}
        load_strict(model.net, trunk_state, str(trunk))
    return model


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
