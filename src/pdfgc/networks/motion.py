"""E_mot: the motion encoder. A one-stack FAN (face-alignment hourglass) whose landmark
heatmaps are squeezed into the 512-d unified motion feature ``f_mot``, and four heads that
pull one motion each out of it: mouth (E_lip), head pose (E_pose), eye (E_eye) and
emotion (E_exp).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pdfgc.errors import PdfgcError

# the released eye code: dims 2 and 3 are gaze, the others blink (how the heads stage regresses
# them and how inference switches them)
GAZE_DIMS = (2, 3)
BLINK_DIMS = (0, 1, 4, 5)


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False)


class ConvBlock(nn.Module):
    """FAN's pre-activation block: three 3x3 convs (out/2, out/4, out/4) concatenated."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        half, quarter = out_channels // 2, out_channels // 4
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = conv3x3(in_channels, half)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv2 = conv3x3(half, quarter)
        self.bn3 = nn.BatchNorm2d(quarter)
        self.conv3 = conv3x3(quarter, quarter)
        self.downsample = None
        if in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.BatchNorm2d(in_channels), nn.ReLU(True),
                nn.Conv2d(in_channels, out_channels, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out1 = self.conv1(F.relu(self.bn1(x)))
        out2 = self.conv2(F.relu(self.bn2(out1)))
        out3 = self.conv3(F.relu(self.bn3(out2)))
        residual = x if self.downsample is None else self.downsample(x)
        return torch.cat((out1, out2, out3), 1) + residual


class HourGlass(nn.Module):
    """Recursive hourglass of the given depth (module names ``b1_d``, ``b2_d``, ``b3_d``,
    ``b2_plus_1``), bilinear upsampling on the way back up."""

    def __init__(self, depth: int, channels: int, dropout: float):
        super().__init__()
        self.depth = depth
        self.dropout = nn.Dropout(dropout)
        self._build(depth, channels)

    def _build(self, level: int, channels: int) -> None:
        self.add_module(f"b1_{level}", ConvBlock(channels, channels))
        self.add_module(f"b2_{level}", ConvBlock(channels, channels))
        if level > 1:
            self._build(level - 1, channels)
        else:
            self.add_module(f"b2_plus_{level}", ConvBlock(channels, channels))
        self.add_module(f"b3_{level}", ConvBlock(channels, channels))

    def _level(self, level: int, x: torch.Tensor) -> torch.Tensor:
        up = self.dropout(self._modules[f"b1_{level}"](x))
        low = self._modules[f"b2_{level}"](F.max_pool2d(x, 2, stride=2))
        if level > 1:
            low = self._level(level - 1, low)
        else:
            low = self._modules[f"b2_plus_{level}"](low)
        low = self._modules[f"b3_{level}"](low)
        return up + F.interpolate(low, size=up.shape[2:], mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._level(self.depth, x)


class FAN(nn.Module):
    """One-stack FAN trunk -> landmark heatmaps -> unified motion feature.

    ``width`` is the stem's channel count (64 in the release); the blocks use 2x and the
    hourglass 4x that. Heatmaps are at image_size / 4; a stride-2 conv to ``squeeze_channels``
    maps (1 in the release), a ReLU (leaky with ``squeeze_slope`` > 0) and a linear layer turn
    them into ``feature_dim`` values. With ``coordinates`` (off in the release) the linear
    layer gives all but the last 2 x ``num_landmarks`` values, and those are each heatmap's
    soft-argmax (x, y), scaled to [-1, 1] and then multiplied by ``coordinate_scale``: the
    face's geometry in a form that does not depend on who the face is. A landmark's motion
    spans a few hundredths of [-1, 1], so the tiny model scales by half the heatmap's side
    (heatmap pixels from its centre), to the spread of the learned values beside them.
    """

    def __init__(self, image_size: int, width: int, hourglass_depth: int, num_landmarks: int,
                 feature_dim: int, dropout: float, squeeze_channels: int = 1,
                 squeeze_slope: float = 0.0, coordinates: bool = False,
                 coordinate_scale: float = 1.0):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = ConvBlock(width, 2 * width)
        self.conv3 = ConvBlock(2 * width, 2 * width)
        self.conv4 = ConvBlock(2 * width, 4 * width)
        self.m0 = HourGlass(hourglass_depth, 4 * width, dropout)
        self.top_m_0 = ConvBlock(4 * width, 4 * width)
        self.conv_last0 = nn.Conv2d(4 * width, 4 * width, 1)
        self.bn_end0 = nn.BatchNorm2d(4 * width)
        self.l0 = nn.Conv2d(4 * width, num_landmarks, 1)
        self.bn5 = nn.BatchNorm2d(num_landmarks)
        self.conv6 = nn.Conv2d(num_landmarks, squeeze_channels, 3, 2, 1)
        learned = feature_dim - 2 * num_landmarks * coordinates
        if learned < 1:
            raise PdfgcError(f"model.motion.feature_dim ({feature_dim}) must exceed the "
                             f"{2 * num_landmarks} landmark coordinates it ends with")
        self.fc = nn.Linear(squeeze_channels * (image_size // 8) ** 2, learned)
        self.squeeze_slope, self.coordinates = squeeze_slope, coordinates
        self.coordinate_scale = coordinate_scale

    def trunk_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) -> the trunk's stem, hourglass and heatmap outputs, all at H/4:
        (B, 4 width, ...), (B, 4 width, ...) and the landmark heatmaps (B, num_landmarks, ...)."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(self.conv2(x), 2)
        stem = self.conv4(self.conv3(x))
        hourglass = self.top_m_0(self.m0(stem))
        x = F.relu(self.bn_end0(self.conv_last0(hourglass)))
        return [stem, hourglass, self.l0(x)]

    def heatmaps(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> landmark heatmaps (B, num_landmarks, H/4, W/4)."""
        return self.trunk_features(x)[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> f_mot (B, feature_dim)."""
        return self.motion_feature(self.heatmaps(x))

    def motion_feature(self, heatmaps: torch.Tensor) -> torch.Tensor:
        """Landmark heatmaps (B, num_landmarks, h, w) -> f_mot (B, feature_dim): the squeeze
        conv, the linear layer and (with ``coordinates``) the soft-argmax landmarks."""
        x = self.conv6(F.relu(self.bn5(heatmaps)))  # (B, squeeze, H/8, W/8)
        feature = self.fc(F.leaky_relu(torch.flatten(x, 1), self.squeeze_slope))
        if not self.coordinates:
            return feature
        points = soft_argmax(heatmaps) / (heatmaps.shape[-1] - 1) * 2 - 1
        return torch.cat([feature, self.coordinate_scale * points.flatten(1)], 1)


def soft_argmax(heatmaps: torch.Tensor, sharpness: float = 10.0) -> torch.Tensor:
    """Each heatmap's expected position (B, N, 2) as x, y in heatmap pixels, under a softmax
    of ``sharpness`` times the map (B, N, h, w). A unit peak then holds all but about 1 % of
    the mass of a 16 x 16 map, so noise elsewhere barely moves the estimate; the price is a
    bias of up to a quarter pixel towards pixel centres for a Gaussian peak of sigma 1."""
    weights = torch.softmax(sharpness * heatmaps.flatten(2), -1).unflatten(2, heatmaps.shape[2:])
    xs = torch.arange(heatmaps.shape[-1], device=heatmaps.device, dtype=heatmaps.dtype)
    ys = torch.arange(heatmaps.shape[-2], device=heatmaps.device, dtype=heatmaps.dtype)
    return torch.stack([(weights.sum(2) * xs).sum(-1), (weights.sum(3) * ys).sum(-1)], -1)


def head(dim: int) -> nn.Sequential:
    """Linear-ReLU-BatchNorm1d-Linear: one factor's hidden feature from f_mot."""
    return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.BatchNorm1d(dim), nn.Linear(dim, dim))


def embed(dim: int, out_dim: int) -> nn.Sequential:
    """ReLU-Linear: a factor's code from its hidden feature."""
    return nn.Sequential(nn.ReLU(), nn.Linear(dim, out_dim))


class MotionEncoder(nn.Module):
    """E_mot: FAN trunk (``model``) plus the mouth, head-pose, eye and emotion heads."""

    FACTORS = ("mouth", "pose", "eye", "emotion")

    def __init__(self, image_size: int, width: int, hourglass_depth: int, num_landmarks: int,
                 feature_dim: int, mouth_dim: int, pose_dim: int, eye_dim: int,
                 emotion_dim: int, dropout: float = 0.5, squeeze_channels: int = 1,
                 squeeze_slope: float = 0.0, coordinates: bool = False,
                 coordinate_scale: float = 1.0):
        super().__init__()
        self.model = FAN(image_size, width, hourglass_depth, num_landmarks, feature_dim, dropout,
                         squeeze_channels, squeeze_slope, coordinates, coordinate_scale)
        self.to_mouth, self.mouth_embed = head(feature_dim), embed(feature_dim, mouth_dim)
        self.to_headpose, self.headpose_embed = head(feature_dim), embed(feature_dim, pose_dim)
        self.to_eye, self.eye_embed = head(feature_dim), embed(feature_dim, eye_dim)
        self.to_emo, self.emo_embed = head(feature_dim), embed(feature_dim, emotion_dim)

    def heads(self, feature: torch.Tensor) -> dict[str, torch.Tensor]:
        """f_mot (B, F) -> codes {"mouth", "pose", "eye", "emotion"} (B, 500 / 6 / 6 / 30)."""
        return {
            "mouth": self.mouth_embed(self.to_mouth(feature)),
            "pose": self.headpose_embed(self.to_headpose(feature)),
            "eye": self.eye_embed(self.to_eye(feature)),
            "emotion": self.emo_embed(self.to_emo(feature)),
        }

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """image (B, 3, H, W) in [-1, 1] -> {"feature": f_mot, and the four codes}."""
        feature = self.model(image)
        return {"feature": feature, **self.heads(feature)}
