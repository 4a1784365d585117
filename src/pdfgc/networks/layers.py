"""Building blocks of the StyleGAN2-style generator: equalised layers, FIR resampling,
modulated convolution and noise injection.

The modulated convolution has two formulations that compute the same function:

* ``reference``: the released one. Each sample gets its own weights
  ``w' = scale * w * s`` (demodulated per output channel) and the batch runs as one grouped
  convolution, and FIR resampling filters every channel as its own one-channel image (the
  release's generic routine). Kept as the ground truth the fast path is tested against.
* ``fast``: modulate the activations instead (``x * s``), run one convolution shared by the
  whole batch, and apply demodulation as a per-sample, per-channel scale on the output.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

SQRT2 = math.sqrt(2.0)


def make_blur_kernel(taps: list[int]) -> torch.Tensor:
    """Separable 2-D FIR kernel from 1-D taps, normalised to sum 1."""
    k = torch.tensor(taps, dtype=torch.float32)
    k = k[None, :] * k[:, None]
    return k / k.sum()


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1,
              pad: tuple[int, int] = (0, 0), generic: bool = False) -> torch.Tensor:
    """Upsample by zero insertion, pad, filter with ``kernel`` (per channel), downsample.

    ``pad`` is (before, after), applied to both spatial axes; negative values crop.
    ``generic`` filters every channel as its own one-channel image, as the release's generic
    routine does (the reference formulation; same output, slower than one depthwise conv).
    """
    b, c, h, w = x.shape
    if generic:
        out = upfirdn2d(x.reshape(b * c, 1, h, w), kernel, up, down, pad)
        return out.reshape(b, c, out.shape[2], out.shape[3])
    weight = torch.flip(kernel, [0, 1]).to(x.dtype)[None, None].expand(c, 1, -1, -1)
    p0, p1 = pad
    if up == 1 and p0 == p1 >= 0:  # plain blur: let the convolution pad, no copy
        return F.conv2d(x, weight, padding=p0, groups=c)[:, :, ::down, ::down]
    if up > 1:
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(b, c, h * up, w * up)
    x = F.pad(x, [max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)])
    if p0 < 0 or p1 < 0:
        x = x[:, :, max(-p0, 0): x.shape[2] - max(-p1, 0), max(-p0, 0): x.shape[3] - max(-p1, 0)]
    return F.conv2d(x, weight, groups=c)[:, :, ::down, ::down]


class Blur(nn.Module):
    """FIR low-pass filter with fixed padding (``kernel`` is saved with the weights)."""

    def __init__(self, taps: list[int], pad: tuple[int, int], upsample_factor: int = 1):
        super().__init__()
        self.register_buffer("kernel", make_blur_kernel(taps) * upsample_factor**2)
        self.pad = pad
        self.generic = False  # the reference formulation's resampling (see upfirdn2d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad, generic=self.generic)


class Upsample(nn.Module):
    """2x FIR upsampling (zero insertion followed by the blur kernel)."""

    def __init__(self, taps: list[int], factor: int = 2):
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_blur_kernel(taps) * factor**2)
        p = len(taps) - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)
        self.generic = False  # the reference formulation's resampling (see upfirdn2d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad, generic=self.generic)


def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor, slope: float = 0.2,
                     gain: float = SQRT2) -> torch.Tensor:
    """``leaky_relu(x + bias) * gain``."""
    return F.leaky_relu(x + bias, slope) * gain


class FusedLeakyReLU(nn.Module):
    """Bias, leaky ReLU (0.2) and a gain of sqrt(2); the bias has shape (1, C, 1, 1)."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_leaky_relu(x, self.bias)


class PixelNorm(nn.Module):
    """Normalise each vector to unit root-mean-square."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate (weights scaled at run time)."""

    def __init__(self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activate: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activate:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), self.bias * self.lr_mul)
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


def pointwise_conv(x: torch.Tensor, weight: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """1x1 convolution of x (B, in, H, W) with per-sample weights ``weight * s`` as one batched
    matrix product (no modulated copy of x). weight (out, in), s (B, in) -> (B, out, H, W)."""
    b, c, h, w = x.shape
    per_sample = (weight[None] * s[:, None, :]).to(x.dtype)  # (B, out, in)
    if x.is_contiguous(memory_format=torch.channels_last):
        out = torch.bmm(x.permute(0, 2, 3, 1).reshape(b, h * w, c), per_sample.transpose(1, 2))
        return out.reshape(b, h, w, -1).permute(0, 3, 1, 2)  # (B, out, H, W), channels last
    return torch.bmm(per_sample, x.reshape(b, c, h * w)).reshape(b, -1, h, w)


class ModulatedConv2d(nn.Module):
    """StyleGAN2 modulated (and optionally demodulated) convolution, optional 2x upsampling.

    ``impl`` selects the formulation (``"fast"`` or ``"reference"``); both give the same
    output within float rounding.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, style_dim: int,
                 demodulate: bool = True, upsample: bool = False,
                 blur_taps: tuple[int, ...] = (1, 3, 3, 1)):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = kernel_size
        self.demodulate = demodulate
        self.upsample = upsample
        self.scale = 1 / math.sqrt(in_channels * kernel_size**2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(
            torch.randn(1, out_channels, in_channels, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channels, bias_init=1.0)
        if upsample:
            factor = 2
            p = (len(blur_taps) - factor) - (kernel_size - 1)
            self.blur = Blur(list(blur_taps), pad=((p + 1) // 2 + factor - 1, p // 2 + 1),
                             upsample_factor=factor)
        self.impl = "fast"

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, k={self.kernel_size}, "
                f"upsample={self.upsample}, demodulate={self.demodulate}, impl={self.impl}")

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        if self.impl == "reference":
            return self._forward_reference(x, self.modulation(style))
        out, scale = self.forward_undemodulated(x, style)
        return out if scale is None else out * scale[:, :, None, None]

    def forward_undemodulated(self, x: torch.Tensor, style: torch.Tensor
                              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The fast formulation without its last step: returns the output before
        demodulation and the (B, out) demodulation scale (None when not demodulating), so a
        caller can fuse that scale into its own epilogue."""
        s = self.modulation(style)  # (B, in)
        weight = self.scale * self.weight[0]  # (out, in, k, k)
        if self.kernel_size == 1 and not self.upsample:
            out = pointwise_conv(x, weight[:, :, 0, 0], s)
        elif self.upsample:
            out = self.blur(F.conv_transpose2d(x * s[:, :, None, None].to(x.dtype),
                                               weight.transpose(0, 1).to(x.dtype), stride=2))
        else:
            out = F.conv2d(x * s[:, :, None, None].to(x.dtype), weight.to(x.dtype),
                           padding=self.padding)
        if not self.demodulate:
            return out, None
        w2 = weight.pow(2).sum(dim=(2, 3))  # (out, in)
        return out, torch.rsqrt(s.pow(2) @ w2.t() + 1e-8)

    def _forward_reference(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        k = self.kernel_size
        weight = self.scale * self.weight * s[:, None, :, None, None]  # (B, out, in, k, k)
        if self.demodulate:
            demod = torch.rsqrt(weight.pow(2).sum(dim=(2, 3, 4)) + 1e-8)  # (B, out)
            weight = weight * demod[:, :, None, None, None]
        x = x.reshape(1, b * c, h, w)
        if self.upsample:
            weight = weight.transpose(1, 2).reshape(b * c, self.out_channels, k, k)
            out = F.conv_transpose2d(x, weight, stride=2, groups=b)
            out = out.reshape(b, self.out_channels, out.shape[2], out.shape[3])
            return self.blur(out)
        weight = weight.reshape(b * self.out_channels, c, k, k)
        out = F.conv2d(x, weight, padding=self.padding, groups=b)
        return out.reshape(b, self.out_channels, h, w)


class NoiseInjection(nn.Module):
    """Adds ``weight * noise``; the noise map is an explicit input, so runs are reproducible."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return x + self.weight * noise
