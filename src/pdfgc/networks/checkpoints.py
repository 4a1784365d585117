"""Network weights in and out: the two loading paths and ``init_from``.

Two formats (the raw file reading and checking is :mod:`pdfgc.io`'s):

* the released layout: a folder with one state dict per network
  (``appearance_model.pth``, ``motion_model.pth``, ``audio_model.pth``,
  ``generator_model.pth``), whose keys equal our modules' at ``model=official``;
* this project's Lightning checkpoints (``*.ckpt``): the networks live under
  ``nets.<name>.`` in ``state_dict``.

A training stage starts from an earlier one's checkpoint through :func:`read_init_state` and
:func:`map_init_state` (renamed networks, the partial copy of style columns). Every failure is
a one-line :class:`PdfgcError` naming the file and the first offending keys.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from pdfgc.errors import PdfgcError
from pdfgc.io import SHOWN_KEYS, atomic_save, check_state_dict, read_state_dict

RELEASED_FILES = {
    "appearance": "appearance_model.pth",
    "motion": "motion_model.pth",
    "audio": "audio_model.pth",
    "generator": "generator_model.pth",
}
LIGHTNING_PREFIX = "nets."


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


def save_released(folder: str | Path, nets: nn.ModuleDict) -> None:
    """Write the four networks in the released layout (one ``*_model.pth`` each)."""
    for name, file in RELEASED_FILES.items():
        atomic_save(nets[name].state_dict(), Path(folder) / file)


def read_init_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``nets.<name>.`` tensors of a pdfgc ``.ckpt`` or of a released weights folder
    (``stage.init_from``)."""
    path = Path(path)
    if not path.exists():
        raise PdfgcError(f"stage.init_from: {path} not found; train the earlier stage first "
                         "(same run_group) or set stage.init_from=null")
    if path.is_dir():
        return {f"{LIGHTNING_PREFIX}{name}.{key}": value
                for name, file in RELEASED_FILES.items() if (path / file).is_file()
                for key, value in read_state_dict(path / file).items()}
    state = read_state_dict(path)
    if "state_dict" not in state:
        raise PdfgcError(f"stage.init_from: {path} is not a pdfgc Lightning checkpoint "
                         "(no 'state_dict')")
    return {k: v for k, v in state["state_dict"].items() if k.startswith(LIGHTNING_PREFIX)}


def map_init_state(own: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor],
                   init_map: Mapping[str, str], appearance_dim: int
                   ) -> tuple[dict[str, torch.Tensor], dict[str, list[str]],
                              dict[str, torch.Tensor]]:
    """What of ``state`` (``nets.<name>.`` keys) loads into networks whose state is ``own``.

    ``init_map`` renames source networks (``{generator0: generator}``). A tensor of another
    shape is left out (``mismatched``), except a 2-D style projection of a renamed network
    whose first dimension agrees: it gets the source's first ``appearance_dim`` columns,
    rescaled for the equalised learning rate's 1 / sqrt(inputs), and keeps its own in the rest
    (``partial``). Returns the tensors to load, the report (``missing``, ``unexpected``,
    ``mismatched``, ``partial``) and the source's other columns of each partial tensor.
    """
    sub = {}
    for key, value in state.items():
        net, rest = key[len(LIGHTNING_PREFIX):].split(".", 1)
        sub[f"{init_map.get(net, net)}.{rest}"] = value
    mapped = tuple(f"{net}." for net in init_map.values())
    mismatched = [k for k, v in sub.items() if k in own and own[k].shape != v.shape]
    partial = [k for k in mismatched if k.startswith(mapped) and own[k].ndim == 2 == sub[k].ndim
               and own[k].shape[0] == sub[k].shape[0]]
    columns = {}
    for key in partial:
        rescale = math.sqrt(own[key].shape[1] / sub[key].shape[1])
        columns[key] = sub[key][:, appearance_dim:]  # (out, source inputs - appearance_dim)
        sub[key] = torch.cat([sub[key][:, :appearance_dim] * rescale,
                              own[key][:, appearance_dim:]], dim=1)
    mismatched = [k for k in mismatched if k not in partial]
    report = {"missing": [k for k in own if k not in sub],
              "unexpected": [k for k in sub if k not in own], "mismatched": mismatched,
              "partial": partial}
    return {k: v for k, v in sub.items() if k not in mismatched}, report, columns


def summarize_keys(keys: Iterable[str]) -> str:
    """'net (n: a, b, c ...)' per network of dotted parameter names."""
    by_net: dict[str, list[str]] = {}
    for key in keys:
        net, rest = key.split(".", 1)
        by_net.setdefault(net, []).append(rest)
    parts = []
    for net, rest in by_net.items():
        more = " ..." if len(rest) > SHOWN_KEYS else ""
        parts.append(f"{net} ({len(rest)}: {', '.join(rest[:SHOWN_KEYS])}{more})")
    return "; ".join(parts) or "none"
