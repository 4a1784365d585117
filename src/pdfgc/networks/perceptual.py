"""The frozen outside networks the losses and metrics compare images with: VGG19's feature
blocks and LPIPS (AlexNet), built offline from the local files that
:mod:`pdfgc.outside_weights` locates and checks."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import lpips
import torch
import torchvision
from torch import nn

from pdfgc.errors import PdfgcError
from pdfgc.io import check_state_dict, read_state_dict

# torchvision vgg19.features index just past relu1_1, relu2_1, relu3_1, relu4_1, relu5_1
VGG_LAYER_ENDS = (2, 7, 12, 21, 30)


def vgg19_blocks(weights: Path) -> nn.ModuleList:
    """VGG19's feature layers from a torchvision ``vgg19`` state dict, cut after relu1_1 ..
    relu5_1 into five blocks."""
    with torch.device("meta"):  # no time spent initialising weights about to be replaced
        features = torchvision.models.vgg19(weights=None).features
    load_strict(features, read_torchvision_features(weights), str(weights))
    starts = (0, *VGG_LAYER_ENDS[:-1])
    return nn.ModuleList(features[a:b] for a, b in zip(starts, VGG_LAYER_ENDS, strict=True))


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


def read_torchvision_features(path: Path) -> dict[str, torch.Tensor]:
    """The ``features.*`` weights of a torchvision classifier's state dict, prefix stripped."""
    prefix = "features."
    return {key.removeprefix(prefix): value for key, value in read_state_dict(path).items()
            if key.startswith(prefix)}


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``module`` (tensors assigned, so ``module`` may live on ``meta``);
    a one-line error naming ``source`` if any key is missing, extra or mis-shaped."""
    check_state_dict(source, module, state)
    module.load_state_dict(state, strict=True, assign=True)
