"""Stage 0 (optional): identity pre-training of E_app, cross-entropy over speakers."""

from __future__ import annotations

import torch

from pdfgc.stages.base import Batch, StageModule


class IdentityStage(StageModule):
    """E_app classifies the speaker of the source frame (``identity`` term)."""

    def render(self, batch: Batch) -> dict:
        appearance = self.nets.appearance(batch["source"])
        return {"logits": self.nets.appearance.classify(appearance["vector"])}

    def losses(self, batch: Batch, out: dict) -> dict[str, torch.Tensor]:
        labels = batch["identity"]
        self._logs["identity/acc"] = (out["logits"].argmax(1) == labels).float().mean()
        return {"identity": self.term("identity", out["logits"], labels)}
