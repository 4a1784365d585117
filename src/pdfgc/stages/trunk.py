"""The trunk stage [ours]: the motion encoder's FAN trunk alone, on the landmarks.

The released motion encoder starts from a pretrained face-alignment network; this stage is
its stand-in: the trunk's heatmaps (hourglass and heatmap layers) learn the data's
landmarks, with no generator and no appearance encoder, one trunk pass a step. Stage 1
then starts from it with the trunk frozen (``conf/experiment/demo/motion.yaml``),
as the authors' earlier training code froze its pretrained FAN.
"""

from __future__ import annotations

import torch

from pdfgc.stages.base import Batch, StageModule


class TrunkStage(StageModule):
    """The trunk's heatmaps of the target find its labelled landmarks (``landmarks`` term)."""

    def render(self, batch: Batch) -> dict:
        return {"heatmaps": self.nets.motion.model.heatmaps(batch["target"])}

    def losses(self, batch: Batch, out: dict) -> dict[str, torch.Tensor]:
        return {"landmarks": self.term("landmarks", out["heatmaps"], batch["landmarks"],
                                       batch["target"].shape[-1])}
