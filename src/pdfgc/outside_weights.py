"""The register of outside weights: every pretrained network pdfgc uses but does not train,
its file, where to get it, and how a file is checked.

Nothing is ever downloaded. :func:`locate` looks for a network's file at the path an option
gives, then (with no path) in torch hub's cache (``$TORCH_HOME/hub/checkpoints``, where
torchvision and face-alignment keep theirs), checks it, and returns it, or raises a one-line
error naming the file, where to get it and the option that sets it. Callers run it before any
heavy work. A file whose release name carries the start of its sha256 (torchvision's) is
checked against it; the others are checked by their tensor names and shapes when loaded.
``random`` in place of a path asks for a randomly initialised network by name, where a caller
allows it (the LPIPS trunk, for tests); the figure it gives is then marked.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch

from pdfgc.errors import PdfgcError

RANDOM = "random"


@dataclass(frozen=True)
class OutsideWeights:
    """One outside network: its release file, where to get it, and the start of the file's
    sha256 where the release guarantees it ("" otherwise)."""

    file: str
    source: str
    sha256: str = ""
    package: str = ""  # a Python package that ships the file (in its ``models`` folder)


REGISTER = {
    "inception": OutsideWeights(
        "weights-inception-2015-12-05-6726825d.pth",
        "torch-fidelity's v0.2.0 release, or pytorch-fid's pt_inception-2015-12-05-6726825d.pth "
        "(the same tensors)"),
    "alexnet": OutsideWeights(
        "alexnet-owt-7be5be79.pth", "torchvision's AlexNet ImageNet weights", "7be5be79"),
    "vgg19": OutsideWeights(
        "vgg19-dcbb9e9d.pth", "torchvision's VGG19 ImageNet weights", "dcbb9e9d"),
    "syncnet": OutsideWeights(
        "syncnet_v2.model", "joonson/syncnet_python's download_model.sh"),
    "arcface": OutsideWeights(
        "arcface.pt", "any TorchScript ArcFace taking (B, 3, 112, 112) RGB in [-1, 1]"),
    "s3fd": OutsideWeights(
        "s3fd-619a316812.pth", "face-alignment's S3FD detector (adrianbulat.com)"),
    "fan": OutsideWeights(
        "2DFAN4-11f355bf06.pth.tar", "face-alignment's 2D-FAN-4 (adrianbulat.com)"),
    "dlib_landmarks": OutsideWeights(
        "shape_predictor_68_face_landmarks.dat", "pip install face-recognition-models",
        package="face_recognition_models"),
    "dlib_face": OutsideWeights(
        "dlib_face_recognition_resnet_model_v1.dat", "pip install face-recognition-models",
        package="face_recognition_models"),
}


def hub_cache() -> Path:
    """torch hub's checkpoint folder, where a file is looked for when no path is given."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def locate(name: str, path: str | Path | None, option: str, allow_random: bool = False
           ) -> Path | None:
    """The checked file of outside network ``name``: ``path`` (set by ``option``) or, when
    that is None, the file in its package or torch hub's cache. None for ``random`` where
    ``allow_random``. A one-line :class:`PdfgcError` says what is missing or wrong."""
    entry = REGISTER[name]
    if path is not None and str(path) == RANDOM:
        if not allow_random:
            raise PdfgcError(f"{option}={RANDOM}: {name} cannot run on random weights")
        return None
    candidate = Path(path) if path is not None else default_path(name)
    if not candidate.is_file():
        where = "not found" if path is not None else f"not set, and not in {candidate.parent}"
        hint = f", or {option}={RANDOM}" if allow_random else ""
        raise PdfgcError(f"{option}: {entry.file} {where} ({candidate}); get it from "
                         f"{entry.source} and set {option}=<file>{hint}")
    if entry.sha256 and not sha256(candidate).startswith(entry.sha256):
        raise PdfgcError(f"{option}: {candidate} is not {entry.file} (its sha256 does not "
                         f"start with {entry.sha256}); get it from {entry.source}")
    return candidate


def default_path(name: str) -> Path:
    """Where ``name``'s file is looked for without a path: its package, or the hub cache."""
    entry = REGISTER[name]
    if entry.package:
        spec = importlib.util.find_spec(entry.package)
        if spec is not None and spec.origin is not None:
            return Path(spec.origin).parent / "models" / entry.file
    return hub_cache() / entry.file


@cache
def _sha256(path: Path, size: int, mtime: float) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def sha256(path: Path) -> str:
    """The file's sha256, computed once per process for a given size and time."""
    stat = path.stat()
    return _sha256(path.resolve(), stat.st_size, stat.st_mtime)
