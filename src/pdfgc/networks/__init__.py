"""The networks of PD-FGC, one file each, and ``build_networks`` to make them from config."""

from __future__ import annotations

from collections.abc import Sequence

from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from pdfgc.errors import PdfgcError, check_choice
from pdfgc.networks.appearance import DOWNSAMPLES

INFERENCE_NETWORKS = ("appearance", "motion", "audio", "generator")
STAGE1_GENERATOR = "generator0"  # stage 1's G0: G with style [appearance | f_mot]
DISCRIMINATOR = "discriminator"


def build_networks(model_cfg: DictConfig, names: tuple[str, ...] = INFERENCE_NETWORKS
                   ) -> nn.ModuleDict:
    """Instantiate the named networks of a ``model=`` config into a ModuleDict."""
    style_dim = sum(model_cfg.codes.values())
    if model_cfg.generator.style_dim != style_dim:
        raise PdfgcError(f"model.generator.style_dim is {model_cfg.generator.style_dim} but the "
                         f"codes add up to {style_dim}")
    if model_cfg.codes.appearance != _appearance_dim(model_cfg):
        raise PdfgcError(f"model.codes.appearance is {model_cfg.codes.appearance} but the "
                         f"appearance encoder gives {_appearance_dim(model_cfg)}")
    check_choice("model.appearance.downsample", model_cfg.appearance.get("downsample", 32),
                 DOWNSAMPLES)
    return nn.ModuleDict({name: instantiate(model_cfg[name]) for name in names})


def check_image_size(model_cfg: DictConfig, data_cfg: DictConfig) -> None:
    """A one-line error unless the data is made at the image size the model's networks
    take; checked before any data is read or network built."""
    if data_cfg.image_size != model_cfg.image_size:
        raise PdfgcError(f"data.image_size={data_cfg.image_size} does not match "
                         f"model={model_cfg.name} ({model_cfg.image_size} px); set "
                         f"data.image_size={model_cfg.image_size}")


def _appearance_dim(model_cfg: DictConfig) -> int:
    return model_cfg.appearance.planes[-1] * 4


def build_training_networks(model: DictConfig, names: Sequence[str]) -> nn.ModuleDict:
    """The named networks of ``model`` in that order, ``generator0`` included (G with style
    [appearance | f_mot], stage 1's generator)."""
    known = (*(n for n in model if n in INFERENCE_NETWORKS or n == DISCRIMINATOR),
             STAGE1_GENERATOR)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise PdfgcError(f"stage.networks: unknown network {unknown[0]!r}; choose from "
                         f"{', '.join(known)}")
    nets = build_networks(model, tuple(n for n in names if n != STAGE1_GENERATOR))
    if STAGE1_GENERATOR in names:
        style_dim = model.codes.appearance + model.motion.feature_dim
        nets[STAGE1_GENERATOR] = instantiate(model.generator, style_dim=style_dim)
    return nn.ModuleDict({name: nets[name] for name in names})
