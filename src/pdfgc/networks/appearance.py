"""E_app: the appearance encoder, a ResNeXt trunk (torchvision layout under ``model.``).

Outputs the pooled identity vector and, through a 1x1 conv, the feature map the generator
starts from. ``fc`` classifies identities for the optional identity pre-training stage.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Bottleneck(nn.Module):
    """ResNeXt bottleneck: 1x1 reduce, grouped 3x3, 1x1 expand (x4), residual."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int, groups: int,
                 width_per_group: int):
        super().__init__()
        width = int(planes * width_per_group / 64) * groups
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


DOWNSAMPLES = (8, 16, 32)  # total strides of the trunk


class ResNeXt(nn.Module):
    """ResNeXt trunk with torchvision's module names; ``imagenet_classes`` keeps its ``fc``.

    ``downsample`` is the trunk's total stride: 32 as in torchvision (and the release); 16
    drops the stem's max-pool, 8 also the last stage's stride (no parameter changes), so a
    small image keeps a feature map of useful size.
    """

    def __init__(self, layers: list[int], planes: list[int], stem: int, groups: int,
                 width_per_group: int, imagenet_classes: int, downsample: int = 32):
        super().__init__()
        if downsample not in DOWNSAMPLES:
            raise ValueError(f"appearance.downsample must be one of {DOWNSAMPLES}, "
                             f"not {downsample}")
        self.conv1 = nn.Conv2d(3, stem, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1) if downsample > 16 else nn.Identity()
        channels = stem
        for i, (blocks, p) in enumerate(zip(layers, planes, strict=True)):
            stride = 1 if i == 0 or (downsample == 8 and i == len(layers) - 1) else 2
            stage = []
            for j in range(blocks):
                stage.append(Bottleneck(channels, p, stride if j == 0 else 1, groups,
                                        width_per_group))
                channels = p * Bottleneck.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
        self.out_channels = channels
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        if imagenet_classes:
            self.fc = nn.Linear(channels, imagenet_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> last feature map (B, C, H/downsample, W/downsample)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class AppearanceEncoder(nn.Module):
    """E_app: image -> identity vector (B, D) and appearance map (B, map_channels, s, s)."""

    def __init__(self, layers: list[int], planes: list[int], stem: int, groups: int,
                 width_per_group: int, map_channels: int, map_size: int, num_identities: int,
                 imagenet_classes: int = 0, downsample: int = 32):
        super().__init__()
        self.model = ResNeXt(layers, planes, stem, groups, width_per_group, imagenet_classes,
                             downsample)
        self.conv1x1 = nn.Conv2d(self.model.out_channels, map_channels, 1)
        self.fc = nn.Linear(self.model.out_channels, num_identities)
        self.map_size = map_size

    @property
    def vector_dim(self) -> int:
        return self.model.out_channels

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """image (B, 3, H, W) in [-1, 1] -> {"vector": (B, D), "map": (B, C, s, s)}."""
        features = self.model(image)  # (B, D, H/downsample, W/downsample)
        vector = torch.flatten(self.model.avgpool(features), 1)
        appearance_map = F.adaptive_avg_pool2d(self.conv1x1(features), self.map_size)
        return {"vector": vector, "map": appearance_map}

    def classify(self, vector: torch.Tensor) -> torch.Tensor:
        """Identity logits (B, num_identities) from the pooled vector."""
        return self.fc(vector)
