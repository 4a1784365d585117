"""The progressive training stages: one LightningModule each, sharing :mod:`.base`."""

from pdfgc.stages.base import StageModule
from pdfgc.stages.expression import ExpressionStage
from pdfgc.stages.heads import HeadsStage
from pdfgc.stages.identity import IdentityStage
from pdfgc.stages.motion import MotionStage
from pdfgc.stages.trunk import TrunkStage

__all__ = ["ExpressionStage", "HeadsStage", "IdentityStage", "MotionStage", "StageModule",
           "TrunkStage"]
