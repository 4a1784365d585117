"""Stage 1: appearance / motion disentanglement.

E_app(source) gives the appearance vector and map; the FAN trunk of E_mot on an augmented
copy of the target gives f_mot; G0 renders the target from [appearance | f_mot].
"""

from __future__ import annotations

import torch

from pdfgc.stages.base import STAGE1_GENERATOR, Batch, StageModule


class MotionStage(StageModule):
    """G0 reconstructs the target; ``motion`` makes f_mot agree on two augmentations;
    ``landmarks`` makes the trunk's heatmaps find the target's 68 landmarks."""

    generator_name = STAGE1_GENERATOR
    swappable = ("motion",)

    def render(self, batch: Batch) -> dict:
        appearance = self.nets.appearance(batch["source"])
        codes = {"appearance": appearance["vector"],
                 "motion": self.nets.motion.model(batch["target_motion"])}
        return {"codes": codes, "map": appearance["map"],
                "fake": self.synthesize(codes, appearance["map"])}

    def losses(self, batch: Batch, out: dict) -> dict[str, torch.Tensor]:
        losses = self.image_losses(batch["target"], out["fake"])
        if self.has_term("motion"):
            other = self.nets.motion.model(batch["target_motion2"])
            losses["motion"] = self.term("motion", out["codes"]["motion"], other)
        if self.has_term("landmarks"):
            target = batch["target"]
            losses["landmarks"] = self.term("landmarks", self.nets.motion.model.heatmaps(target),
                                            batch["landmarks"], target.shape[-1])
        return losses
