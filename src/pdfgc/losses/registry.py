"""The loss terms by name: how each is built from the ``loss`` config (its weight and options)
and the ``model`` config. Adding a term is its module here plus its weight in ``conf/``."""

from __future__ import annotations

import logging
from collections.abc import Callable

from omegaconf import DictConfig
from torch import nn

from pdfgc.losses.contrastive import EyeTripletLoss, SymmetricInfoNCE
from pdfgc.losses.decorrelation import CodeDecorrelationLoss, DecorrelationLoss
from pdfgc.losses.gan import FeatureMatchingLoss, HingeGANLoss
from pdfgc.losses.landmarks import LandmarkHeatmapLoss
from pdfgc.losses.motion import MotionConsistencyLoss
from pdfgc.losses.perceptual import TrunkPerceptualLoss, VGGPerceptualLoss
from pdfgc.losses.reconstruction import FacePartsL1Loss, ReconstructionLoss
from pdfgc.losses.regression import MaskedRegression
from pdfgc.outside_weights import default_path

log = logging.getLogger(__name__)

TERMS: dict[str, Callable[[DictConfig, DictConfig], nn.Module]] = {
    "gan": lambda loss, model: HingeGANLoss(),
    "feature_matching": lambda loss, model: FeatureMatchingLoss(loss.fm_image_weight),
    "vgg": lambda loss, model: VGGPerceptualLoss(loss.vgg_weights),
    "trunk_perceptual": lambda loss, model: TrunkPerceptualLoss(model.motion, loss.trunk_weights),
    "l1": lambda loss, model: ReconstructionLoss(loss.lpips, loss.lpips_net),
    "face_parts": lambda loss, model: FacePartsL1Loss(loss.face_parts_margin),
    "motion": lambda loss, model: MotionConsistencyLoss(loss.motion_kind),
    "landmarks": lambda loss, model: LandmarkHeatmapLoss(
        loss.landmark_sigma, loss.landmark_coordinates, loss.landmark_extra_weight),
    "identity": lambda loss, model: nn.CrossEntropyLoss(),
    "lip": lambda loss, model: SymmetricInfoNCE(loss.temperature, loss.similarity,
                                                mse_weight=loss.lip_mse),
    "eye": lambda loss, model: EyeTripletLoss(loss.eye_margin),
    "blink": lambda loss, model: MaskedRegression(loss.blink_regression),
    "gaze": lambda loss, model: MaskedRegression(loss.regression),
    "pose": lambda loss, model: MaskedRegression(loss.regression),
    "decorrelation": lambda loss, model: DecorrelationLoss(
        loss.bank_size, model.codes.emotion, model.audio.feature_dim),
    "pose_decorrelation": lambda loss, model: CodeDecorrelationLoss(
        loss.pose_decorrelation_bank,
        {name: dim for name, dim in model.codes.items() if name != "appearance"}),
}
ADVERSARIAL_TERMS = ("gan", "feature_matching")  # need the discriminator, from gan_start on
RENDER_TERMS = ("l1", "face_parts", "vgg", "trunk_perceptual")  # need a render of the target
# a term whose weights file is null, and not in torch hub's cache either, is off
OPTIONAL_FILES = {"vgg": ("vgg_weights", "vgg19")}


def build_terms(loss: DictConfig, model: DictConfig) -> nn.ModuleDict:
    """The loss modules of the terms with a positive weight in ``loss``."""
    terms = {}
    for name, build in TERMS.items():
        if loss.get(name, 0) <= 0:
            continue
        option, network = OPTIONAL_FILES.get(name, (None, None))
        if option and loss.get(option) is None and not default_path(network).is_file():
            log.info("loss term %s is off: loss.%s is null and %s has no %s", name, option,
                     default_path(network).parent, default_path(network).name)
            continue
        terms[name] = build(loss, model)
    return nn.ModuleDict(terms)
