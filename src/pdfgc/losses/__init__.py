"""The training losses of PD-FGC; each a small module whose forward returns (loss, logs).

``logs`` maps short names to detached scalars; the training stage prefixes them.
"""

from pdfgc.losses.contrastive import EyeTripletLoss, SymmetricInfoNCE
from pdfgc.losses.decorrelation import CodeDecorrelationLoss, DecorrelationLoss
from pdfgc.losses.gan import FeatureMatchingLoss, HingeGANLoss
from pdfgc.losses.landmarks import LandmarkHeatmapLoss
from pdfgc.losses.motion import MotionConsistencyLoss
from pdfgc.losses.perceptual import TrunkPerceptualLoss, VGGPerceptualLoss
from pdfgc.losses.reconstruction import FacePartsL1Loss, ReconstructionLoss
from pdfgc.losses.regression import MaskedRegression

__all__ = [
    "CodeDecorrelationLoss",
    "DecorrelationLoss",
    "EyeTripletLoss",
    "FacePartsL1Loss",
    "FeatureMatchingLoss",
    "HingeGANLoss",
    "LandmarkHeatmapLoss",
    "MaskedRegression",
    "MotionConsistencyLoss",
    "ReconstructionLoss",
    "SymmetricInfoNCE",
    "TrunkPerceptualLoss",
    "VGGPerceptualLoss",
]
