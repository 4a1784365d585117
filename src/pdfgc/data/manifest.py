"""The dataset contract shared by the synthetic generator, preprocessing and the DataModule.

A dataset is a folder with ``manifest.jsonl`` (one :class:`ClipRecord` per line) and, per
clip, an mp4 (frames at the stored size, 25 fps, with its 16 kHz audio track) and a label
file ``<clip>.npz`` holding per-frame arrays:

==============  ==================  ======================================================
key             shape               meaning
==============  ==================  ======================================================
landmarks       (N, L, 2) float32   iBUG 68-point landmarks (synthetic data: L = 70, then the
                                    two pupils), pixels of the stored frames (x, y)
pose            (N, 6) float32      yaw, pitch, roll (degrees), tx, ty, tz (face-size units)
blink           (N,) float32        eye closure in [0, 1] (1 = closed; from the eye aspect
                                    ratio for real data)
gaze            (N, 2) float32      pupil offset x, y in [-1, 1]; NaN where unknown
eye_boxes       (N, 2, 4) float32   left / right eye box x0, y0, x1, y1 in pixels
mel             (T_mel, 80) float32 the released mel spectrogram of the clip's audio
factors         (N, F) float32      synthetic data only: the true factors, named by
factor_names    (F,) str            ``factor_names``
==============  ==================  ======================================================
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from pdfgc.errors import PdfgcError
from pdfgc.io import atomic_path, read_jsonl, write_jsonl

MANIFEST = "manifest.jsonl"
LABEL_KEYS = ("landmarks", "pose", "blink", "gaze", "eye_boxes", "mel")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ClipRecord:
    """One clip of a dataset; paths are relative to the dataset folder."""

    clip: str          # unique id, e.g. "id00012/21Uxsk56VDQ/00001"
    identity: str      # speaker / synthetic identity id
    video: str         # mp4 path
    labels: str        # npz path
    frames: int        # video frames
    split: str         # train | val | test
    source: str        # "synthetic" or the name of the source corpus
    image_size: int    # side of the stored square frames


def write_manifest(root: str | Path, records: list[ClipRecord]) -> Path:
    """Write ``manifest.jsonl`` atomically (sorted by clip id, so it is deterministic)."""
    path = Path(root) / MANIFEST
    write_jsonl(path, [asdict(r) for r in sorted(records, key=lambda r: r.clip)])
    return path


def read_manifest(root: str | Path) -> list[ClipRecord]:
    """Read a dataset's manifest; a one-line error if it is missing or malformed."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise PdfgcError(f"{path}: no manifest; generate or preprocess the dataset first")
    names = {f.name for f in fields(ClipRecord)}
    records = []
    for number, row in enumerate(read_jsonl(path), 1):
        try:
            records.append(ClipRecord(**{k: row[k] for k in names}))
        except (KeyError, TypeError) as err:
            raise PdfgcError(f"{path}: record {number} is not a clip record ({err})") from None
    return records


def write_labels(path: str | Path, **arrays: np.ndarray) -> None:
    """Write a clip's label arrays to an npz, atomically; the :data:`LABEL_KEYS` are required."""
    missing = [k for k in LABEL_KEYS if k not in arrays]
    if missing:
        raise ValueError(f"labels lack {missing}")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def read_labels(path: str | Path) -> dict[str, np.ndarray]:
    """Read a clip's label arrays (all of them, into memory)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as err:
        raise PdfgcError(f"{path}: unreadable label file ({err})") from None
