"""LPIPS (AlexNet) between self-reconstructions and the real target frames.

Built offline by ``pdfgc.networks.perceptual.build_lpips``: the linear layers shipped in the
``lpips`` package, the AlexNet trunk from ``weights.lpips`` (torchvision's
``alexnet-owt-7be5be79.pth``; unset: torch hub's cache). ``weights.lpips=random`` asks for a
random trunk: its figure, ``lpips/random/self`` rather than ``lpips/alexnet/self``, only
compares runs evaluated the same way, not published numbers.
"""

from __future__ import annotations

from pdfgc.metrics.registry import (
    Metric,
    MetricContext,
    MetricResult,
    RunningMean,
    register,
)
from pdfgc.metrics.render import FrameBatch
from pdfgc.networks.perceptual import build_lpips


@register
class LPIPS(Metric):
    """``lpips/<trunk>/self``: mean LPIPS distance of each self-reconstruction to its target,
    ``<trunk>`` being ``alexnet`` or ``random``."""

    name = "lpips"
    stream = "frames"
    outside = {"lpips": "alexnet"}
    random_allowed = ("lpips",)

    def __init__(self, ctx: MetricContext):
        super().__init__(ctx)
        trunk = self.outside_file(ctx.weights, "lpips")
        self.trunk = "random" if trunk is None else "alexnet"
        self.net = build_lpips(trunk).to(ctx.device).eval().requires_grad_(False)
        self.mean = RunningMean()

    def update(self, batch: FrameBatch) -> None:
        self.mean.add(self.net(batch.fake, batch.data["target"]).flatten())

    def compute(self) -> MetricResult:
        return MetricResult({f"lpips/{self.trunk}/self": self.mean.value})
