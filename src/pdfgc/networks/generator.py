"""G: the modulated (StyleGAN2 synthesis) generator.

It starts from the appearance encoder's feature map (``init_size`` squared, ``channels[0]``
channels) instead of a learned constant, doubles the resolution ``len(channels) - 1`` times,
and takes one style vector for every layer:
``[appearance | mouth | emotion | eye | pose]`` (2590 values at official size).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pdfgc.networks.layers import (
    SQRT2,
    Blur,
    EqualLinear,
    FusedLeakyReLU,
    ModulatedConv2d,
    NoiseInjection,
    PixelNorm,
    Upsample,
)

BLUR_TAPS = (1, 3, 3, 1)
# G's style: the appearance vector, then the motion codes in this order
MOTION_CODES = ("mouth", "emotion", "eye", "pose")


def suggest_memory_format(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) \
        else torch.contiguous_format


class StyledConv(nn.Module):
    """Modulated 3x3 conv, noise, bias and leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int, style_dim: int, upsample: bool = False):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, 3, style_dim, upsample=upsample,
                                    blur_taps=BLUR_TAPS)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channels)

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        if self.conv.impl == "reference":
            return self.activate(self.noise(self.conv(x, style), noise))
        # Fused epilogue, two passes over the output instead of five:
        # gain * lrelu(demod * y + w * noise + bias) = lrelu(gain * demod * y + gain * (...)),
        # since leaky ReLU commutes with a positive scale.
        out, demod = self.conv.forward_undemodulated(x, style)
        shift = (self.noise.weight * noise + self.activate.bias) * SQRT2  # (1, C, H, W)
        shift = shift.to(out.dtype).contiguous(memory_format=suggest_memory_format(out))
        scale = (demod * SQRT2).to(out.dtype)[:, :, None, None]
        return F.leaky_relu_(torch.addcmul(shift, out, scale), 0.2)


class ToRGB(nn.Module):
    """Modulated 1x1 conv to RGB (no demodulation), added to the upsampled skip image."""

    def __init__(self, in_channels: int, style_dim: int, upsample: bool = True):
        super().__init__()
        if upsample:
            self.upsample = Upsample(list(BLUR_TAPS))
        self.conv = ModulatedConv2d(in_channels, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor,
                skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x, style) + self.bias
        return out if skip is None else out + self.upsample(skip)


class ConstantInput(nn.Module):
    """A learned input map, used when no appearance map is given."""

    def __init__(self, channels: int, size: int):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.expand(batch, -1, -1, -1)


class Generator(nn.Module):
    """Renders images from an appearance map and a style vector.

    Args:
        image_size: output side; must equal ``init_size * 2 ** (len(channels) - 1)``.
        init_size: side of the input map (7 at official size).
        channels: channels at each resolution, from ``init_size`` up to ``image_size``.
        style_dim: length of the style vector.
        n_mlp: layers of the (optional) mapping network; kept so the released file loads.
        map_style: run the style through the mapping network first (off at inference).
    """

    def __init__(self, image_size: int, init_size: int, channels: list[int], style_dim: int,
                 n_mlp: int = 8, map_style: bool = False):
        super().__init__()
        if init_size * 2 ** (len(channels) - 1) != image_size:
            raise ValueError(f"generator: init_size {init_size} doubled {len(channels) - 1} "
                             f"times is not image_size {image_size}")
        self.image_size, self.init_size, self.style_dim = image_size, init_size, style_dim
        self.map_style = map_style
        self.style = nn.Sequential(PixelNorm(), *[
            EqualLinear(style_dim, style_dim, lr_mul=0.01, activate=True) for _ in range(n_mlp)])
        self.input = ConstantInput(channels[0], init_size)
        self.conv1 = StyledConv(channels[0], channels[0], style_dim)
        self.to_rgb1 = ToRGB(channels[0], style_dim, upsample=False)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        for c_in, c_out in zip(channels[:-1], channels[1:], strict=True):
            self.convs.append(StyledConv(c_in, c_out, style_dim, upsample=True))
            self.convs.append(StyledConv(c_out, c_out, style_dim))
            self.to_rgbs.append(ToRGB(c_out, style_dim))
        self.noises = nn.Module()
        for i, size in enumerate(self.noise_sizes()):
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, size, size))
        self.tanh = nn.Tanh()

    def noise_sizes(self) -> list[int]:
        """Side of the noise map of every styled conv, in order."""
        return [self.init_size * 2 ** ((i + 1) // 2) for i in range(1 + len(self.convs))]

    def make_noise(self, seed: int, device: torch.device | str = "cpu") -> list[torch.Tensor]:
        """Noise maps (1, 1, s, s) drawn from a generator seeded with ``seed``."""
        gen = torch.Generator().manual_seed(seed)
        return [torch.randn(1, 1, s, s, generator=gen).to(device) for s in self.noise_sizes()]

    def set_impl(self, impl: str) -> None:
        """Choose the formulation of the modulated convolutions and FIR resampling:
        ``"fast"`` or ``"reference"`` (the released one, see :mod:`pdfgc.networks.layers`)."""
        if impl not in ("fast", "reference"):
            raise ValueError(f"unknown modulated conv impl {impl!r}")
        for m in self.modules():
            if isinstance(m, ModulatedConv2d):
                m.impl = impl
            elif isinstance(m, (Blur, Upsample)):
                m.generic = impl == "reference"

    def forward(self, style: torch.Tensor, appearance_map: torch.Tensor | None = None,
                noise: list[torch.Tensor] | None = None) -> torch.Tensor:
        """style (B, style_dim), appearance_map (B, C0, s, s) -> image (B, 3, H, W) in [-1, 1].

        ``noise`` defaults to the maps stored with the weights (``noises.noise_i``).
        """
        if self.map_style:
            style = self.style(style)
        if noise is None:
            noise = [getattr(self.noises, f"noise_{i}") for i in range(len(self.convs) + 1)]
        x = self.input(style.shape[0]) if appearance_map is None else appearance_map
        x = self.conv1(x, style, noise[0])
        skip = self.to_rgb1(x, style)
        for i, to_rgb in enumerate(self.to_rgbs):
            x = self.convs[2 * i](x, style, noise[2 * i + 1])
            x = self.convs[2 * i + 1](x, style, noise[2 * i + 2])
            skip = to_rgb(x, style, skip)
        return self.tanh(skip)
