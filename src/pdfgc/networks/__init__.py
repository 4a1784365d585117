"""The networks of PD-FGC, one file each, and ``build_networks`` to make them from config."""

from __future__ import annotations

from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from pdfgc.errors import PdfgcError
from pdfgc.networks.appearance import DOWNSAMPLES

INFERENCE_NETWORKS = ("appearance", "motion", "audio", "generator")


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
    downsample = model_cfg.appearance.get("downsample", 32)
    if downsample not in DOWNSAMPLES:
        raise PdfgcError(f"model.appearance.downsample must be one of {DOWNSAMPLES}, "
                         f"not {downsample}")
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
