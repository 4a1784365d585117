"""Control accuracy on any data: does the render follow its pose and eye drivers?

Both read dlib landmarks of the 224 px frames (:mod:`pdfgc.metrics.landmarks`) and measure
the render and its driver the same way, so detector bias cancels:

* ``pose``: head pose by the PnP fit that labels real data (``pdfgc.face.geometry``);
  the mean absolute yaw / pitch / roll difference in degrees between each render and the
  real frame that drove its pose: for self-reconstructions, cross-identity renders, and
  pose swaps (a self-reconstruction whose pose code comes from another clip's frame);
* ``blink``: per clip, the Pearson correlation between the eye aspect ratio of the rendered
  frames and of the driving frames, averaged over clips.
"""

from __future__ import annotations

import numpy as np

from pdfgc.face.geometry import eye_aspect_ratio, head_pose
from pdfgc.metrics.landmarks import DETECT_SIZE, sample_landmarks
from pdfgc.metrics.registry import Metric, MetricContext, MetricResult, RunningMean, register
from pdfgc.metrics.render import ClipSample, FrameBatch

ANGLES = ("yaw", "pitch", "roll")
MIN_CORRELATION_FRAMES = 3


def head_angles(marks: np.ndarray) -> np.ndarray:
    """Yaw, pitch, roll (N, 3) in degrees of 224 px landmarks (N, 68, 2); NaN rows where the
    landmarks are missing."""
    angles = np.full((len(marks), 3), np.nan)
    found = np.isfinite(marks).all(axis=(1, 2))
    if found.any():
        angles[found] = head_pose(marks[found], DETECT_SIZE)[:, :3]
    return angles


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two series over the frames where both are known; NaN when
    fewer than 3 such frames or either is constant."""
    known = np.isfinite(a) & np.isfinite(b)
    a, b = a[known], b[known]
    if len(a) < MIN_CORRELATION_FRAMES or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


@register
class PoseError(Metric):
    """``pose/error_deg``, ``pose/error_deg_cross`` and ``pose/error_deg_swap``: mean absolute
    angle error (degrees) of renders against the real frame whose pose code drove them."""

    name = "pose"
    stream = "frames"
    MODES = {"self": "fake", "cross": "cross", "swap": "swapped_pose"}

    def __init__(self, ctx: MetricContext):
        super().__init__(ctx)
        self.errors = {mode: [RunningMean() for _ in ANGLES] for mode in self.MODES}

    def update(self, batch: FrameBatch) -> None:
        real = head_angles(sample_landmarks(batch, "target"))
        drivers = {"swap": real[batch.partner.cpu().numpy()]}
        for mode, key in self.MODES.items():
            if batch.images(key) is None:
                continue
            driver = drivers.get(mode, real)
            error = np.abs(head_angles(sample_landmarks(batch, key)) - driver)  # (B, 3)
            for mean, column in zip(self.errors[mode], error.T, strict=True):
                mean.add(column)

    def compute(self) -> MetricResult:
        results, details = {}, {}
        for mode, means in self.errors.items():
            if not means[0].updates:
                continue
            suffix = "" if mode == "self" else f"_{mode}"
            results[f"pose/error_deg{suffix}"] = float(np.mean([m.value for m in means]))
            details[f"pose/{mode}"] = {a: m.value for a, m in zip(ANGLES, means, strict=True)}
        return MetricResult(results, details)


@register
class BlinkAgreement(Metric):
    """``blink/corr`` and ``blink/corr_cross``: per-clip correlation of the rendered and the
    driving frames' eye aspect ratio, averaged over clips."""

    name = "blink"
    stream = "clips"
    MODES = {"self": "fake", "cross": "cross"}

    def __init__(self, ctx: MetricContext):
        super().__init__(ctx)
        self.corr = {mode: RunningMean() for mode in self.MODES}

    def update(self, clip: ClipSample) -> None:
        driver = eye_aspect_ratio(sample_landmarks(clip, "real"))
        for mode, key in self.MODES.items():
            if clip.images(key) is not None:
                rendered = eye_aspect_ratio(sample_landmarks(clip, key))
                self.corr[mode].add(correlation(rendered, driver))

    def compute(self) -> MetricResult:
        return MetricResult({f"blink/corr{'' if mode == 'self' else '_' + mode}": mean.value
                             for mode, mean in self.corr.items() if mean.updates})
