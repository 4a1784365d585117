"""E_aud: the audio encoder, a ResNet-SE34 over one (1, 80, 20) mel window with
self-attentive pooling over time, and a mouth embedding in the same space as the visual
mouth code."""

from __future__ import annotations

import torch
from torch import nn

N_MELS = 80


class SELayer(nn.Module):
    """Squeeze-and-excitation channel gate."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(channels, channels // reduction), nn.ReLU(inplace=True),
            nn.Linear(channels // reduction, channels), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x.mean(dim=(2, 3)))[:, :, None, None]


class SEBasicBlock(nn.Module):
    """conv-ReLU-BN, conv-BN, SE gate, residual, ReLU (the release's order)."""

    def __init__(self, in_channels: int, channels: int, stride: int, reduction: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.se = SELayer(channels, reduction)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn1(self.relu(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(out + residual)


class ResNetSE(nn.Module):
    """ResNet-SE over (B, 1, 80, T) mels; frequency shrinks 8x, then attentive pooling."""

    def __init__(self, layers: list[int], filters: list[int], reduction: int,
                 attention_dim: int, feature_dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(1, filters[0], 3, 1, 1)
        self.relu = nn.ReLU(inplace=True)
        self.bn1 = nn.BatchNorm2d(filters[0])
        channels = filters[0]
        for i, (blocks, f) in enumerate(zip(layers, filters, strict=True)):
            stride = 1 if i == 0 else 2
            stage = [SEBasicBlock(channels, f, stride, reduction)]
            stage += [SEBasicBlock(f, f, 1, reduction) for _ in range(blocks - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
            channels = f
        pooled = filters[-1] * (N_MELS // 8)
        self.attention = nn.Sequential(
            nn.Conv1d(pooled, attention_dim, 1), nn.ReLU(), nn.BatchNorm1d(attention_dim),
            nn.Conv1d(attention_dim, pooled, 1), nn.Softmax(dim=2))
        self.fc = nn.Linear(pooled, feature_dim)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """mel (B, 1, 80, T) -> (B, feature_dim)."""
        x = self.bn1(self.relu(self.conv1(mel)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, C, 10, T/8)
        x = x.reshape(x.shape[0], -1, x.shape[-1])  # (B, C*10, T/8)
        x = torch.sum(x * self.attention(x), dim=2)
        return self.fc(x)


class AudioEncoder(nn.Module):
    """E_aud: mel window (B, 1, 80, 20) -> {"feature": (B, 512), "mouth": (B, 500)}."""

    def __init__(self, layers: list[int], filters: list[int], se_reduction: int,
                 attention_dim: int, feature_dim: int, mouth_dim: int):
        super().__init__()
        self.model = ResNetSE(layers, filters, se_reduction, attention_dim, feature_dim)
        self.mouth_embed = nn.Sequential(nn.ReLU(), nn.Linear(feature_dim, mouth_dim))

    def forward(self, mel: torch.Tensor) -> dict[str, torch.Tensor]:
        feature = self.model(mel)
        return {"feature": feature, "mouth": self.mouth_embed(feature)}
