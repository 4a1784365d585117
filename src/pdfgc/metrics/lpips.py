"""LPIPS (AlexNet) between self-reconstructions and the real target frames.

Built offline by ``pdfgc.losses.reconstruction.build_lpips``: the linear layers shipped in the
``lpips`` package, the AlexNet trunk from ``weights.lpips`` (torchvision's
``alexnet-owt-7be5be79.pth``). Without that file the trunk is random: the figure then only
compares runs evaluated the same way, not published numbers.
"""

from __future__ import annotations

import logging
import warnings

from pdfgc.losses.reconstruction import ALEXNET_FILE, build_lpips
from pdfgc.metrics.registry import Metric, MetricContext, MetricResult, RunningMean, register
from pdfgc.metrics.render import FrameBatch

log = logging.getLogger(__name__)


@register
class LPIPS(Metric):
    """``lpips/self``: mean LPIPS distance of each self-reconstruction to its target."""

    name = "lpips"
    stream = "frames"

    def __init__(self, ctx: MetricContext):
        super().__init__(ctx)
        trunk = ctx.weights.get("lpips")
        if trunk is None:
            log.warning("lpips: random AlexNet trunk (set weights.lpips to torchvision's %s "
                        "for figures comparable with published ones)", ALEXNET_FILE)
        with warnings.catch_warnings():  # the warning above says it in evaluation's terms
            warnings.simplefilter("ignore", UserWarning)
            self.net = build_lpips(trunk).to(ctx.device).eval().requires_grad_(False)
        self.mean = RunningMean()

    def update(self, batch: FrameBatch) -> None:
        self.mean.add(self.net(batch.fake, batch.data["target"]).flatten())

    def compute(self) -> MetricResult:
        return MetricResult({"lpips/self": self.mean.value})
