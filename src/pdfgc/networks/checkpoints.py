"""The one place that reads and writes network weights.

Two formats:

* the released layout: a folder with one state dict per network
  (``appearance_model.pth``, ``motion_model.pth``, ``audio_model.pth``,
  ``generator_model.pth``), whose keys equal our modules' at ``model=official``;
* this project's Lightning checkpoints (``*.ckpt``): the networks live under
  ``nets.<name>.`` in ``state_dict``.

Every failure is a one-line :class:`PdfgcError` naming the file and the first offending keys.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from pdfgc.errors import PdfgcError
from pdfgc.media import atomic_path

RELEASED_FILES = {
    "appearance": "appearance_model.pth",
    "motion": "motion_model.pth",
    "audio": "audio_model.pth",
    "generator": "generator_model.pth",
}
LIGHTNING_PREFIX = "nets."
SHOWN_KEYS = 3


def read_state_dict(path: str | Path, mmap: bool = False) -> dict[str, torch.Tensor]:
    """Load a checkpoint file on the CPU (``mmap``: tensors read only when used); a one-line
    error if it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise PdfgcError(f"{path}: checkpoint file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # torch raises several types for truncated / foreign files
        reason = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        raise PdfgcError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): "
                         f"{reason}") from None
    if not isinstance(state, Mapping):
        raise PdfgcError(f"{path}: holds a {type(state).__name__}, not a state dict")
    return dict(state)


def check_weights_path(path: str | Path) -> None:
    """Before anything is built: a one-line error unless ``path`` is a file (a pdfgc
    ``.ckpt``) or a folder holding the four released files."""
    path = Path(path)
    if path.is_dir():
        missing = [file for file in RELEASED_FILES.values() if not (path / file).is_file()]
        if missing:
            raise PdfgcError(f"{path}: a weights folder must hold the four released files; "
                             f"it lacks {', '.join(missing)}")
    elif not path.is_file():
        raise PdfgcError(f"{path}: weights not found (a pdfgc .ckpt or the folder of the "
                         "released .pth files)")


def check_state_dict(source: str, module: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Raise a one-line error listing missing, unexpected and mis-shaped keys, if any."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} vs model {tuple(v.shape)}"
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    problems = []
    for label, keys in (("shape mismatch", shapes), ("missing", missing),
                        ("unexpected", unexpected)):
        if keys:
            more = f" (+{len(keys) - SHOWN_KEYS} more)" if len(keys) > SHOWN_KEYS else ""
            problems.append(f"{label}: {', '.join(keys[:SHOWN_KEYS])}{more}")
    if problems:
        raise PdfgcError(f"{source}: does not match the configured model; " + "; ".join(problems))


def load_networks(path: str | Path, nets: nn.ModuleDict,
                  names: Iterable[str] | None = None) -> None:
    """Load weights into ``nets`` strictly, from a released folder or a Lightning ``.ckpt``."""
    path = Path(path)
    names = list(nets.keys() if names is None else names)
    if path.is_dir():
        for name in names:
            if name not in RELEASED_FILES:
                raise PdfgcError(f"{path}: the released layout has no {name} network")
            file = path / RELEASED_FILES[name]
            state = read_state_dict(file)
            check_state_dict(str(file), nets[name], state)
            nets[name].load_state_dict(state, strict=True)
        return
    state = read_state_dict(path)
    if "state_dict" not in state:
        raise PdfgcError(f"{path}: not a pdfgc Lightning checkpoint (no 'state_dict'); give the "
                         "folder of the four released .pth files instead")
    for name in names:
        prefix = f"{LIGHTNING_PREFIX}{name}."
        sub = {k[len(prefix):]: v for k, v in state["state_dict"].items() if k.startswith(prefix)}
        if not sub:
            raise PdfgcError(f"{path}: has no weights for the {name} network")
        check_state_dict(f"{path} [{name}]", nets[name], sub)
        nets[name].load_state_dict(sub, strict=True)


def atomic_save(obj: object, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_released(folder: str | Path, nets: nn.ModuleDict) -> None:
    """Write the four networks in the released layout (one ``*_model.pth`` each)."""
    for name, file in RELEASED_FILES.items():
        atomic_save(nets[name].state_dict(), Path(folder) / file)
