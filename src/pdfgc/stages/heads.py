"""Stage 2: the fine-grained motion heads on the frozen FAN trunk.

Lip: symmetric InfoNCE between the visual mouth code and the audio encoder's (the audio
encoder trains here). Eye: triplet on the eye codes, plus blink and gaze regression on the
eye code's blink and gaze dimensions. Pose: regression of the pose code to the pose label.
[ours, an extension] ``pose_decorrelation`` keeps the pose out of the lip and eye codes.
Optionally (``loss.l1``, ``vgg`` or ``trunk_perceptual`` > 0, with a ``generator`` in
``stage.networks`` initialised from a checkpoint that has one) the heads also train through
that frozen generator by rebuilding the target, as the authors' earlier code did.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pdfgc.errors import PdfgcError
from pdfgc.losses.registry import RENDER_TERMS
from pdfgc.networks.generator import MOTION_CODES
from pdfgc.networks.motion import BLINK_DIMS, GAZE_DIMS
from pdfgc.stages.base import Batch, StageModule


class HeadsStage(StageModule):
    """Lip, eye and pose heads of E_mot, and E_aud.

    Args:
        pose_scale: multiplies the pose label (yaw, pitch, roll in degrees, tx, ty, tz)
            into the range of the pose code.
        blink_dims, gaze_dims: the eye code's blink and gaze dimensions (released: gaze is
            2 and 3, blink the rest); each blink dim regresses the eye closure (their mean
            alone left three free directions, which took up pitch), gaze the two values.
        **kwargs: see :class:`StageModule`.
    """

    swappable = MOTION_CODES

    def __init__(self, *args, pose_scale: Sequence[float] = (1 / 30,) * 3 + (1.0,) * 3,
                 blink_dims: Sequence[int] = BLINK_DIMS, gaze_dims: Sequence[int] = GAZE_DIMS,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.register_buffer("pose_scale", torch.tensor(list(pose_scale)), persistent=False)
        self.blink_dims, self.gaze_dims = list(blink_dims), list(gaze_dims)
        self.renders = any(self.has_term(n) for n in RENDER_TERMS)
        if self.renders and self.generator_name not in self.nets:
            raise PdfgcError(f"loss.{' / '.join(RENDER_TERMS)} train the heads through a "
                             "frozen generator: add generator to stage.networks and "
                             "init_from a checkpoint that has one")

    def render(self, batch: Batch) -> dict:
        b = len(batch["target"])
        images = torch.cat([batch[k] for k in
                            ("target", "eye_anchor", "eye_positive", "eye_negative")])
        motion = self.nets.motion(images)  # every code for 4B images
        codes = {k: v[:b] for k, v in motion.items()}
        mels = torch.cat([batch["mel"], batch["mel_negatives"].flatten(0, 1)])
        audio = self.nets.audio(mels)["mouth"]  # (B + B * N, D)
        out = {"motion": codes, "eye_triplet": motion["eye"][b:].chunk(3),
               "audio_mouth": audio[:b], "audio_negatives": audio[b:].unflatten(0, (b, -1))}
        if self.renders:
            appearance = self.nets.appearance(batch["source"])
            out["codes"] = {"appearance": appearance["vector"],
                            **{k: codes[k] for k in MOTION_CODES}}
            out["map"] = appearance["map"]
            out["fake"] = self.synthesize(out["codes"], appearance["map"])
        return out

    def losses(self, batch: Batch, out: dict) -> dict[str, torch.Tensor]:
        codes, losses = out["motion"], {}
        if self.has_term("lip"):
            losses["lip"] = self.term("lip", codes["mouth"], out["audio_mouth"],
                                      out["audio_negatives"])
        if self.has_term("eye"):
            losses["eye"] = self.term("eye", *out["eye_triplet"])
        if self.has_term("blink"):
            blink = codes["eye"][:, self.blink_dims]
            losses["blink"] = self.term("blink", blink,
                                        batch["blink"][:, None].expand_as(blink))
        if self.has_term("gaze"):
            losses["gaze"] = self.term("gaze", codes["eye"][:, self.gaze_dims], batch["gaze"],
                                       batch["gaze_known"])
        if self.has_term("pose"):
            losses["pose"] = self.term("pose", codes["pose"], batch["pose"] * self.pose_scale)
        if self.has_term("pose_decorrelation"):
            losses["pose_decorrelation"] = self.term(
                "pose_decorrelation", {k: codes[k] for k in ("mouth", "eye")},
                {"pose": codes["pose"]})
        if self.renders:
            losses |= self.image_losses(batch, out["fake"])
        return losses
