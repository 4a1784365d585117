"""D: the multi-scale PatchGAN discriminator (training only; not in the released files)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm


class PatchDiscriminator(nn.Module):
    """``n_layers`` 4x4 convs with spectral norm and instance norm, then a 1-channel map."""

    def __init__(self, base_channels: int, n_layers: int, in_channels: int = 3):
        super().__init__()
        blocks = [nn.Sequential(nn.Conv2d(in_channels, base_channels, 4, 2, 2),
                                nn.LeakyReLU(0.2))]
        channels = base_channels
        for n in range(1, n_layers):
            out = min(channels * 2, 512)
            stride = 1 if n == n_layers - 1 else 2
            blocks.append(nn.Sequential(
                spectral_norm(nn.Conv2d(channels, out, 4, stride, 2)),
                nn.InstanceNorm2d(out), nn.LeakyReLU(0.2)))
            channels = out
        blocks.append(nn.Sequential(nn.Conv2d(channels, 1, 4, 1, 2)))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every block's output; the last is the patch logit map."""
        features = []
        for block in self.blocks:
            x = block(x)
            features.append(x)
        return features


class MultiscaleDiscriminator(nn.Module):
    """``num_scales`` patch discriminators on the image and its 3x3-average-pooled copies."""

    def __init__(self, num_scales: int, base_channels: int, n_layers: int, in_channels: int = 3):
        super().__init__()
        self.scales = nn.ModuleList(
            PatchDiscriminator(base_channels, n_layers, in_channels) for _ in range(num_scales))

    def forward(self, image: torch.Tensor) -> list[list[torch.Tensor]]:
        """image (B, 3, H, W) -> per scale, the list of block outputs (logits last)."""
        outputs = []
        for i, disc in enumerate(self.scales):
            if i:
                image = F.avg_pool2d(image, 3, 2, 1, count_include_pad=False)
            outputs.append(disc(image))
        return outputs
