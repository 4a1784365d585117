"""Stage 1: appearance / motion disentanglement.

E_app(source) gives the appearance vector and map; the FAN trunk of E_mot on an augmented
copy of the target (or on the target itself, ``motion_input``) gives f_mot; G0 renders the
target from [appearance | f_mot].
"""

from __future__ import annotations

import torch

from pdfgc.errors import check_choice
from pdfgc.networks import STAGE1_GENERATOR
from pdfgc.stages.base import Batch, StageModule

# motion_input -> (the image f_mot is built from, the other copy the motion term compares)
MOTION_INPUTS = {"augmented": ("target_motion", "target_motion2"),
                 "target": ("target", "target_motion")}


class MotionStage(StageModule):
    """G0 reconstructs the target; ``motion`` makes f_mot agree on two augmentations;
    ``landmarks`` makes the trunk's heatmaps find the target's landmarks.

    Args:
        motion_input: ``augmented`` (as released: f_mot of a colour-jittered, perspective-warped
            copy of the target, while G0 renders the unwarped target) or ``target`` (f_mot of
            the target itself; the landmark term then reuses its heatmaps) [ours].
        **kwargs: see :class:`StageModule`.

    A frozen trunk (``stage.freeze`` of its layers, after the ``trunk`` stage) builds no
    autograd graph: its parameters and the images need no gradient, so each trunk pass
    costs a forward only.
    """

    generator_name = STAGE1_GENERATOR
    swappable = ("motion",)

    def __init__(self, *args, motion_input: str = "augmented", **kwargs):
        super().__init__(*args, **kwargs)
        self.motion_input = check_choice("stage.motion_input", motion_input,
                                         tuple(MOTION_INPUTS))

    def render(self, batch: Batch) -> dict:
        fan = self.nets.motion.model
        appearance = self.nets.appearance(batch["source"])
        heatmaps = fan.heatmaps(batch[MOTION_INPUTS[self.motion_input][0]])
        codes = {"appearance": appearance["vector"], "motion": fan.motion_feature(heatmaps)}
        return {"codes": codes, "map": appearance["map"], "heatmaps": heatmaps,
                "fake": self.synthesize(codes, appearance["map"])}

    def losses(self, batch: Batch, out: dict) -> dict[str, torch.Tensor]:
        fan = self.nets.motion.model
        losses = self.image_losses(batch, out["fake"])
        if self.has_term("motion"):
            other = fan(batch[MOTION_INPUTS[self.motion_input][1]])
            losses["motion"] = self.term("motion", out["codes"]["motion"], other)
        if self.has_term("landmarks"):
            target = batch["target"]
            heatmaps = out["heatmaps"] if self.motion_input == "target" else fan.heatmaps(target)
            losses["landmarks"] = self.term("landmarks", heatmaps, batch["landmarks"],
                                            target.shape[-1])
        return losses
