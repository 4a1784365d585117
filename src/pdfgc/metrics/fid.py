"""FID between real target frames and rendered frames (self-reconstruction and cross-identity).

torchmetrics' ``FrechetInceptionDistance`` with our own feature network: the TensorFlow FID
Inception-v3 (the 2015-12-05 graph) in torch-fidelity's / pytorch-fid's layout, read from a
local file (``weights-inception-2015-12-05-6726825d.pth`` of torch-fidelity, or pytorch-fid's
``pt_inception-2015-12-05-6726825d.pth``: the same tensors). Images are resized to 299 with
TensorFlow 1's bilinear rule and scaled by (x - 128) / 128, as both libraries do.

The real images' feature statistics are cached in ``cache_dir`` under the hash of the data
settings and of the feature network's weights, so later evaluations skip the real pass.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchvision.models.inception import BasicConv2d, Inception3, InceptionE

from pdfgc.features import to_uint8
from pdfgc.metrics.registry import (
    Metric,
    MetricContext,
    MetricResult,
    register,
    weights_file,
)
from pdfgc.metrics.render import FrameBatch
from pdfgc.networks.checkpoints import atomic_save, check_state_dict, read_state_dict

log = logging.getLogger(__name__)

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_SOURCE = ("torch-fidelity's v0.2.0 release file " + INCEPTION_FILE
                    + ", or pytorch-fid's pt_inception-2015-12-05-6726825d.pth")
INPUT_SIZE = 299
TF_POOLED_BLOCKS = ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                    "Mixed_6e", "Mixed_7b")
REAL_STATES = ("real_features_sum", "real_features_cov_sum", "real_features_num_samples")


def resize_bilinear_tf1(x: torch.Tensor, size: int) -> torch.Tensor:
    """TensorFlow 1's ``resize_bilinear`` (align_corners=False) of (B, C, H, W) to size².

    Output pixel i samples input position i * in / out (no half-pixel shift, unlike
    ``F.interpolate``), clamped at the last row / column.
    """
    def axis(n_in: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pos = torch.arange(size, dtype=torch.float64, device=x.device) * (n_in / size)
        low = pos.floor().long().clamp(max=n_in - 1)
        high = (low + 1).clamp(max=n_in - 1)
        return low, high, (pos - low).to(x.dtype)

    y0, y1, fy = axis(x.shape[-2])
    x0, x1, fx = axis(x.shape[-1])
    rows = x[..., y0, :] + (x[..., y1, :] - x[..., y0, :]) * fy[:, None]  # (B, C, size, W)
    return rows[..., x0] + (rows[..., x1] - rows[..., x0]) * fx


class _TFAveragePool(BasicConv2d):
    """The pool branch's conv, fed TensorFlow's 3x3 average pool: torchvision's blocks count
    the zero padding in the average, TensorFlow's graph does not; this undoes the difference."""

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        ones = pooled.new_ones(1, 1, *pooled.shape[-2:])
        share = F.avg_pool2d(ones, kernel_size=3, stride=1, padding=1)  # real pixels / 9
        return super().forward(pooled / share)


class _MaxPoolInceptionE(InceptionE):
    """The last block of the FID graph pools its fourth branch with a 3x3 max, not an average."""

    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = super()._forward(x)
        outputs[-1] = self.branch_pool(F.max_pool2d(x, kernel_size=3, stride=1, padding=1))
        return outputs


class InceptionFeatures(nn.Module):
    """The FID Inception-v3: uint8 images (B, 3, H, W) -> pool3 features (B, 2048) float32.

    ``weights`` is the local file (a one-line error naming it when absent or mismatched);
    None leaves the network randomly initialised (tests).
    """

    num_features = 2048

    def __init__(self, weights: str | Path | None):
        super().__init__()
        self.net = Inception3(num_classes=1008, aux_logits=False, init_weights=False)
        for name in TF_POOLED_BLOCKS:
            conv = getattr(self.net, name).branch_pool.conv
            getattr(self.net, name).branch_pool = _TFAveragePool(
                conv.in_channels, conv.out_channels, kernel_size=1)
        self.net.Mixed_7c = _MaxPoolInceptionE(2048)
        if weights is not None:
            state = read_state_dict(weights)
            check_state_dict(str(weights), self.net, state)
            self.net.load_state_dict(state)
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> InceptionFeatures:  # always frozen batch norm
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = resize_bilinear_tf1(images.float(), INPUT_SIZE)
        x = (x - 128.0) / 128.0
        for name, layer in self.net.named_children():
            if name == "dropout":  # pool3 is the average pool's output, before dropout and fc
                break
            x = layer(x)
        return torch.flatten(x, 1)


def uint8_images(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> uint8 (B, 3, H, W) on the same device."""
    return torch.from_numpy(to_uint8(images)).permute(0, 3, 1, 2).to(images.device)


def network_hash(net: nn.Module) -> str:
    """A short hash of a network's weights (names cached statistics)."""
    digest = hashlib.sha1()
    for name, tensor in net.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


@register
class FID(Metric):
    """``fid/self`` (self-reconstructions) and ``fid/cross`` (cross-identity renders) against
    the real target frames. ``feature`` replaces the Inception network (tests)."""

    name = "fid"
    stream = "frames"

    def __init__(self, ctx: MetricContext, feature: nn.Module | None = None):
        super().__init__(ctx)
        if feature is None:
            feature = InceptionFeatures(weights_file(ctx, "inception", "the FID Inception "
                                                    "weights", INCEPTION_SOURCE))
        feature = feature.to(ctx.device)
        self.fids = {mode: FrechetInceptionDistance(feature=feature).to(ctx.device)
                     for mode in ("self", "cross")}
        self.cache_file = ctx.cache_dir / f"fid-real-{ctx.data_key}-{network_hash(feature)}.pt"
        self.cached = self.cache_file.is_file()
        if self.cached:
            stats = torch.load(self.cache_file, map_location=ctx.device, weights_only=True)
            self._set_real(stats)
            log.info("fid: real statistics from %s", self.cache_file)

    def update(self, batch: FrameBatch) -> None:
        if not self.cached:
            self.fids["self"].update(uint8_images(batch.data["target"]), real=True)
        self.fids["self"].update(uint8_images(batch.fake), real=False)
        if batch.cross is not None:
            self.fids["cross"].update(uint8_images(batch.cross), real=False)

    def compute(self) -> MetricResult:
        real = {k: getattr(self.fids["self"], k) for k in REAL_STATES}
        if not self.cached:
            atomic_save({k: v.cpu() for k, v in real.items()}, self.cache_file)
            self.cached = True
        self._set_real(real)
        results = {f"fid/{mode}": float(fid.compute())
                   for mode, fid in self.fids.items() if int(fid.fake_features_num_samples) > 1}
        return MetricResult(results)

    def _set_real(self, stats: dict[str, torch.Tensor]) -> None:
        for fid in self.fids.values():
            for key in REAL_STATES:
                setattr(fid, key, stats[key].clone().to(self.ctx.device))
