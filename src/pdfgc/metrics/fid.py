"""FID between real target frames and rendered frames (self-reconstruction and cross-identity).

torchmetrics' ``FrechetInceptionDistance`` with torch-fidelity's FID Inception-v3 (the
TensorFlow 2015-12-05 graph), read from a local file (``weights-inception-2015-12-05-6726825d.pth``
of torch-fidelity, or pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``: the same tensors).
Images are resized to 299 with TensorFlow 1's bilinear rule, as torch-fidelity does (not
torchmetrics' default antialiased resize).

The real images' feature statistics are cached in ``cache_dir`` under the hash of the data
settings and of the feature network's weights, so later evaluations skip the real pass.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance, NoTrainInceptionV3

from pdfgc.errors import PdfgcError
from pdfgc.features import to_uint8
from pdfgc.io import atomic_save, read_state_dict
from pdfgc.metrics.registry import (
    Metric,
    MetricContext,
    MetricResult,
    register,
)
from pdfgc.metrics.render import FrameBatch

log = logging.getLogger(__name__)

REAL_STATES = ("real_features_sum", "real_features_cov_sum", "real_features_num_samples")


def inception_features(path: Path) -> NoTrainInceptionV3:
    """torch-fidelity's FID Inception-v3 from the local file ``path``: uint8 (B, 3, H, W) ->
    pool3 features (B, 2048); a one-line error when the file is unreadable or another layout."""
    try:
        net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                 feature_extractor_weights_path=str(path), antialias=False)
    except Exception as err:
        read_state_dict(path)  # the one-line error of a corrupt or truncated file, if so
        if not isinstance(err, RuntimeError):
            raise
        # else another layout: load_state_dict's header, then one line per problem
        problems = "; ".join(line.strip()[:100] for line in str(err).splitlines()[1:])
        raise PdfgcError(f"{path}: not the FID Inception layout of torch-fidelity: "
                         f"{problems}") from None
    net.num_features = 2048  # torchmetrics then needs no trial image to learn the width
    return net


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
    outside = {"inception": "inception"}

    def __init__(self, ctx: MetricContext, feature: nn.Module | None = None):
        super().__init__(ctx)
        if feature is None:
            feature = inception_features(self.outside_file(ctx.weights, "inception"))
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
