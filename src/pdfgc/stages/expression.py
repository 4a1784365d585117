"""Stage 3: expression disentanglement and the final generator.

The expression code is E_exp's output averaged over a K-frame window (the average washes
out lip motion); the decorrelation term keeps speech out of it, and [ours, an extension]
``pose_decorrelation`` the pose and eye codes. The new generator G renders the centre frame
from [appearance | audio mouth | expression | eye | pose], the eye and pose codes from the
centre frame, the mouth code from its audio.
"""

from __future__ import annotations

import torch

from pdfgc.stages.base import Batch, StageModule


class ExpressionStage(StageModule):
    """G, E_exp (and whatever else the config leaves trainable) on self-reconstruction."""

    swappable = ("mouth", "emotion", "eye", "pose")

    def render(self, batch: Batch) -> dict:
        window = batch["window"]  # (B, K, 3, S, S)
        b, k = window.shape[:2]
        appearance = self.nets.appearance(batch["source"])
        motion = {name: code.unflatten(0, (b, k))  # (B, K, D)
                  for name, code in self.nets.motion(window.flatten(0, 1)).items()}
        centre = k // 2
        codes = {"appearance": appearance["vector"],
                 "mouth": self.nets.audio(batch["mel"])["mouth"],
                 "emotion": motion["emotion"].mean(1),
                 "eye": motion["eye"][:, centre],
                 "pose": motion["pose"][:, centre]}
        out = {"codes": codes, "map": appearance["map"], "video_mouth": motion["mouth"][:, centre],
               "fake": self.synthesize(codes, appearance["map"])}
        if self.has_term("decorrelation"):
            with torch.no_grad():  # the reference side: speech content of the same window
                audio = self.nets.audio(batch["window_mel"].flatten(0, 1))["feature"]
            out["window_audio"] = audio.unflatten(0, (b, k)).mean(1)
        return out

    def losses(self, batch: Batch, out: dict) -> dict[str, torch.Tensor]:
        losses = self.image_losses(batch["target"], out["fake"])
        if self.has_term("lip"):
            losses["lip"] = self.term("lip", out["video_mouth"], out["codes"]["mouth"])
        if self.has_term("decorrelation"):
            losses["decorrelation"] = self.term("decorrelation", out["codes"]["emotion"],
                                                out["window_audio"])
        if self.has_term("pose_decorrelation"):
            codes = out["codes"]
            losses["pose_decorrelation"] = self.term(
                "pose_decorrelation", {"emotion": codes["emotion"]},
                {"pose": codes["pose"], "eye": codes["eye"]})
        return losses
