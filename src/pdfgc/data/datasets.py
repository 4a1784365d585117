"""Training samples from a dataset folder of the manifest contract (``pdfgc.data.manifest``).

:class:`ClipIndex` is built once from ``manifest.jsonl``; :class:`TalkingHeadDataset` turns an
index ``i`` into one training sample. Sample ``i`` of epoch ``e`` is a pure function of
``(seed, e, i)``: its random generator is seeded with exactly these, so the samples do not
depend on the number of workers, and a ``DistributedSampler`` splitting the indices over ranks
gives every rank its own part of the same epoch. Call ``set_epoch`` (the DataModule does it
through a callback) to move to the next epoch's samples; the epoch lives in shared memory, so
persistent workers see it.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from pdfgc.data.augment import MotionAugment
from pdfgc.data.manifest import LABEL_KEYS, MANIFEST, SPLITS, ClipRecord, read_labels, read_manifest
from pdfgc.errors import PdfgcError, check_choice
from pdfgc.features import (
    LEAD_FRAMES,
    N_MELS,
    OFFICIAL_SIZE,
    WINDOW_FRAMES,
    mel_windows,
    num_output_frames,
    prepare_images,
)
from pdfgc.features.image import crop_points
from pdfgc.media import FrameSource

log = logging.getLogger(__name__)

PER_FRAME_KEYS = ("landmarks", "pose", "blink", "gaze", "eye_boxes")
NEGATIVE_GAP = 5  # same-clip negative mel windows are at least this many frames away
MAX_DRAWS = 64  # draws of one sample that may hit unreadable clips before giving up
SKIP_SLOTS = 64  # per-worker slots of the shared skip counter
SOURCES = ("clip", "identity")  # where the source (appearance) frame is drawn from


class UnreadableClip(Exception):
    """A clip whose video or labels cannot be used; the dataset draws another sample."""

    def __init__(self, clip: int, reason: str):
        super().__init__(reason)
        self.clip, self.reason = clip, reason


class ClipIndex:
    """The clips of a dataset grouped by split and identity, with their labels on demand.

    Built once from the manifest; every lookup is a dict or tuple access. Label files are read
    on first use and kept in a per-process LRU of ``label_cache`` clips; a clip found
    unreadable is remembered and fails fast afterwards.
    """

    def __init__(self, root: str | Path, records: Sequence[ClipRecord], label_cache: int = 1024):
        self.root = Path(root)
        self.records = tuple(records)
        self.label_cache = label_cache
        groups: dict[str, dict[str, list[int]]] = {}
        for i, record in enumerate(self.records):
            groups.setdefault(record.split, {}).setdefault(record.identity, []).append(i)
        self._groups = {split: {name: tuple(ids) for name, ids in sorted(by_id.items())}
                        for split, by_id in groups.items()}
        self._split_clips = {split: tuple(i for ids in by_id.values() for i in ids)
                             for split, by_id in self._groups.items()}
        self._labels: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()
        self._unreadable: dict[int, str] = {}

    @classmethod
    def from_manifest(cls, root: str | Path, label_cache: int = 1024) -> ClipIndex:
        """Read ``root/manifest.jsonl`` (a one-line error if it is missing or malformed)."""
        return cls(root, read_manifest(root), label_cache)

    def identities(self, split: str) -> tuple[str, ...]:
        """Sorted identity ids of ``split``."""
        return tuple(self._groups.get(split, {}))

    def clips(self, split: str, identity: str | None = None) -> tuple[int, ...]:
        """Record indices of ``split`` (of one identity, if given)."""
        if identity is None:
            return self._split_clips.get(split, ())
        return self._groups[split][identity]

    def video_path(self, clip: int) -> Path:
        return self.root / self.records[clip].video

    def labels(self, clip: int) -> dict[str, np.ndarray]:
        """The label arrays of record ``clip``; :class:`UnreadableClip` if they are unusable."""
        if clip in self._unreadable:
            raise UnreadableClip(clip, self._unreadable[clip])
        if clip in self._labels:
            self._labels.move_to_end(clip)
            return self._labels[clip]
        labels = self._read_labels(clip)
        self._labels[clip] = labels
        if len(self._labels) > self.label_cache:
            self._labels.popitem(last=False)
        return labels

    def mark_unreadable(self, clip: int, reason: str) -> bool:
        """Remember that ``clip`` is unusable; True the first time (in this process)."""
        new = clip not in self._unreadable
        self._unreadable[clip] = reason
        self._labels.pop(clip, None)
        return new

    def _read_labels(self, clip: int) -> dict[str, np.ndarray]:
        record = self.records[clip]
        try:
            labels = read_labels(self.root / record.labels)
        except PdfgcError as err:
            raise UnreadableClip(clip, str(err)) from None
        missing = [k for k in LABEL_KEYS if k not in labels]
        if missing:
            raise UnreadableClip(clip, f"{record.labels}: labels lack {missing}")
        lengths = {k: len(labels[k]) for k in (*PER_FRAME_KEYS, "factors") if k in labels}
        if set(lengths.values()) != {record.frames}:
            raise UnreadableClip(clip, f"{record.labels}: label lengths {lengths} differ from "
                                       f"the manifest's {record.frames} frames")
        if labels["mel"].ndim != 2 or labels["mel"].shape[1] != N_MELS:
            raise UnreadableClip(clip, f"{record.labels}: mel has shape {labels['mel'].shape}")
        return labels

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_labels": OrderedDict()}


class FrameStore:
    """Decodes frames of clips, per process: an LRU of open readers and, if ``cache_mb`` > 0,
    an LRU of whole decoded clips up to that many megabytes (for small datasets)."""

    def __init__(self, readers: int = 8, cache_mb: float = 0.0):
        self.max_readers = max(1, readers)
        self.cache_bytes = int(cache_mb * 2**20)
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._readers: OrderedDict[Path, FrameSource] = OrderedDict()
        self._clips: OrderedDict[Path, np.ndarray] = OrderedDict()
        self._cached_bytes = 0

    def read(self, path: Path, indices: Sequence[int]) -> np.ndarray:
        """Frames ``indices`` of the video at ``path``, (N, H, W, 3) uint8 RGB.

        Raises PdfgcError for an unreadable video and IndexError for frames it lacks.
        """
        if os.getpid() != self._pid:  # a forked worker must not share the parent's decoders
            self._reset()
        if self.cache_bytes:
            return self._clip(path)[list(indices)]
        return self._reader(path).read(indices)

    def _reader(self, path: Path) -> FrameSource:
        if path in self._readers:
            self._readers.move_to_end(path)
            return self._readers[path]
        reader = FrameSource(path)
        self._readers[path] = reader
        if len(self._readers) > self.max_readers:
            self._readers.popitem(last=False)
        return reader

    def _clip(self, path: Path) -> np.ndarray:
        if path in self._clips:
            self._clips.move_to_end(path)
            return self._clips[path]
        reader = self._reader(path)
        frames = reader.read(range(len(reader)))  # (N, H, W, 3)
        if frames.nbytes <= self.cache_bytes:
            self._clips[path] = frames
            self._cached_bytes += frames.nbytes
            while self._cached_bytes > self.cache_bytes:
                self._cached_bytes -= self._clips.popitem(last=False)[1].nbytes
        return frames

    def __getstate__(self) -> dict:
        return {"max_readers": self.max_readers, "cache_bytes": self.cache_bytes}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset()


class TalkingHeadDataset(Dataset):
    """Identity-balanced training samples of one split, a pure function of (seed, epoch, index).

    Sample ``i`` draws an identity uniformly, one of its clips, and a target frame ``t`` whose
    ``emotion_window`` (K) frames centred on it all have a full mel window (video frame ``t``
    uses mel rows ``[4 (t - 2), 4 (t - 2) + 20)``, the released alignment). Keys, images
    (3, S, S) in [-1, 1] through the released crop rule:

    - ``source``: a random other frame of the clip (``source="clip"``, as released) or a
      random frame of another clip of the same speaker (``source="identity"``, where the
      speaker has one: what stays constant within a clip, such as its emotion, cannot then
      reach the target through the appearance code), ``target``, and ``target_motion``,
      ``target_motion2``: two independent :class:`MotionAugment` copies of the target;
    - ``mel`` (1, 80, 20) of the target, ``mel_negatives`` (N, 1, 80, 20): half (rounded up)
      from the same clip at least 5 frames away, the rest from other clips of the split;
    - ``window`` (K, 3, S, S) and ``window_mel`` (K, 1, 80, 20): frames ``t - K // 2`` on;
    - ``eye_anchor`` (another frame of the target's clip, with the target's eye boxes
      pasted in), ``eye_positive`` (the target), ``eye_negative`` (that other frame: the
      source when ``source="clip"``); augmented only with ``eye_augment``. Always of the
      target's clip, whatever ``source``: pasted into a frame of another clip the eyes sat
      2.4 px from that frame's (0.9 px within a clip; a whole blink moves the lids about
      as far), so the triplet could be met by encoding where the eyes are, i.e. the pose;
    - labels of the target: ``pose`` (6,), ``blink`` (), ``gaze`` (2,) (NaN if unknown),
      ``gaze_known`` (), ``landmarks`` (L, 2) in model pixels (L = 68, 70 with the
      synthetic data's pupils); ``identity`` (index into ``identities``), ``clip`` (index
      into ``index.records``), ``frame`` (t); with synthetic
      data ``factors`` (F,) and ``window_factors`` (K, F), named by ``factor_names``.

    A clip that cannot be read is skipped with a warning, counted in ``skipped``, and the
    sample is drawn again from the next seed; it never ends an epoch.
    ``samples_per_epoch`` defaults to the number of clips in the split.
    """

    def __init__(
        self,
        root: str | Path | ClipIndex,
        split: str,
        image_size: int = OFFICIAL_SIZE,
        crop: bool = True,
        samples_per_epoch: int | None = None,
        seed: int = 2021,
        emotion_window: int = 5,
        negatives: int = 4,
        augment: Mapping[str, float] | None = None,
        eye_augment: bool = False,
        cache_mb: float = 0.0,
        readers: int = 8,
        source: str = "clip",
    ):
        self.index = root if isinstance(root, ClipIndex) else ClipIndex.from_manifest(root)
        check_choice("split", split, SPLITS)
        self.identities = self.index.identities(split)
        if not self.identities:
            raise PdfgcError(f"{self.index.root / MANIFEST}: no clips in split {split!r}")
        if emotion_window < 1 or negatives < 0 or image_size < 1:
            raise PdfgcError(f"data: need emotion_window >= 1, negatives >= 0 and image_size "
                             f">= 1, got {emotion_window}, {negatives}, {image_size}")
        check_choice("data.source", source, SOURCES)
        self.split, self.image_size, self.crop, self.seed = split, image_size, crop, seed
        self.source = source
        self.window, self.negatives, self.eye_augment = emotion_window, negatives, eye_augment
        self.augment = MotionAugment.from_config(augment)
        self.samples_per_epoch = samples_per_epoch or len(self.index.clips(split))
        self.frames = FrameStore(readers, cache_mb)
        self.factor_names = self._factor_names()
        clips = self.index.clips(split)
        self._position = {clip: n for n, clip in enumerate(clips)}
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self._skipped = torch.zeros(SKIP_SLOTS, dtype=torch.int64).share_memory_()

    def __len__(self) -> int:
        return self.samples_per_epoch

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose samples the indices map to (seen by running workers too)."""
        self._epoch.fill_(int(epoch))

    @property
    def skipped(self) -> int:
        """Draws that hit an unreadable clip, summed over all workers."""
        return int(self._skipped.sum())

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        epoch = self.epoch
        for attempt in range(MAX_DRAWS):
            rng = np.random.default_rng([self.seed, epoch, int(index), attempt])
            try:
                return self._sample(rng)
            except UnreadableClip as bad:
                self._skip(bad)
        raise PdfgcError(f"{self.index.root}: {MAX_DRAWS} draws in a row hit unreadable clips "
                         f"in split {self.split!r}")

    def _skip(self, bad: UnreadableClip) -> None:
        if self.index.mark_unreadable(bad.clip, bad.reason):
            log.warning("skipping clip %s: %s", self.index.records[bad.clip].clip, bad.reason)
        worker = get_worker_info()
        self._skipped[0 if worker is None else (worker.id + 1) % SKIP_SLOTS] += 1

    def _sample(self, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        identity = int(rng.integers(len(self.identities)))
        clips = self.index.clips(self.split, self.identities[identity])
        clip = clips[rng.integers(len(clips))]
        labels = self.index.labels(clip)
        first, stop = self._target_range(clip, labels)
        t = int(rng.integers(first, stop))
        window = np.arange(t - self.window // 2, t - self.window // 2 + self.window)
        negatives = self._negative_mels(rng, clip, labels["mel"], t)
        augment_rngs = rng.spawn(5)
        other = _other_frame(rng, self.index.records[clip].frames, t)
        images, size = self._images(clip, [other, *window])
        other_img, window_img = images[0], images[1:]  # frame B of the eye triplet
        others = [c for c in clips if c != clip] if self.source == "identity" else []
        source_img = other_img
        if others:
            source_clip = others[rng.integers(len(others))]
            source_img = self._images(source_clip, [int(rng.integers(
                self.index.records[source_clip].frames))])[0][0]
        target_img = window_img[self.window // 2]
        sample = {
            "source": source_img,
            "target": target_img,
            "target_motion": self.augment(target_img, augment_rngs[0]),
            "target_motion2": self.augment(target_img, augment_rngs[1]),
            "mel": _mel_window(labels["mel"], t),
            "mel_negatives": negatives,
            "window": window_img,
            "window_mel": mel_windows(labels["mel"], window[0] - LEAD_FRAMES,
                                      window[-1] + 1 - LEAD_FRAMES),
            **self._eye_triplet(target_img, other_img, labels["eye_boxes"][t], size,
                                augment_rngs[2:]),
            **self._labels(clip, labels, t, window, size),
        }
        tensors = {k: torch.from_numpy(np.asarray(v)) for k, v in sample.items()}
        ids = {"identity": identity, "clip": clip, "frame": t}
        return tensors | {k: torch.tensor(v, dtype=torch.int64) for k, v in ids.items()}

    def _target_range(self, clip: int, labels: dict[str, np.ndarray]) -> tuple[int, int]:
        """Target frames [first, stop) whose whole K-frame window has mel windows."""
        with_mel = min(self.index.records[clip].frames,
                       num_output_frames(len(labels["mel"])) + LEAD_FRAMES)
        first = LEAD_FRAMES + self.window // 2
        stop = with_mel - (self.window - 1) // 2
        if stop <= first:
            raise UnreadableClip(clip, f"too short for a {self.window}-frame window with audio")
        return first, stop

    def _negative_mels(self, rng: np.random.Generator, clip: int, mel: np.ndarray,
                       t: int) -> np.ndarray:
        """(N, 1, 80, 20): same-clip windows at least NEGATIVE_GAP frames from t, other clips."""
        frames = np.arange(num_output_frames(len(mel))) + LEAD_FRAMES  # video frame of window k
        far = frames[np.abs(frames - t) >= NEGATIVE_GAP]
        split_clips = self.index.clips(self.split)
        same = self.negatives - self.negatives // 2 if len(split_clips) > 1 else self.negatives
        if far.size == 0:
            same = 0
        if same < self.negatives and len(split_clips) == 1:
            raise UnreadableClip(clip, "no mel window far enough for a negative")
        windows = [_mel_window(mel, int(u)) for u in rng.choice(far, same)] if same else []
        for _ in range(self.negatives - same):
            pick = int(rng.integers(len(split_clips) - 1))
            other = split_clips[pick + (pick >= self._position[clip])]  # any clip but this one
            other_mel = self.index.labels(other)["mel"]
            if num_output_frames(len(other_mel)) == 0:
                raise UnreadableClip(other, "audio shorter than one mel window")
            k = int(rng.integers(num_output_frames(len(other_mel))))
            windows.append(_mel_window(other_mel, k + LEAD_FRAMES))
        if not windows:
            return np.zeros((0, 1, N_MELS, WINDOW_FRAMES), dtype=np.float32)
        return np.stack(windows)

    def _images(self, clip: int, frames: list[int]) -> tuple[np.ndarray, int]:
        """(len(frames), 3, S, S) network images of a clip's frames, and the stored side."""
        wanted = sorted(set(frames))  # one forward pass through the video
        try:
            pixels = self.frames.read(self.index.video_path(clip), wanted)  # (n, H, W, 3)
        except (PdfgcError, IndexError) as err:
            raise UnreadableClip(clip, str(err)) from None
        prepared = prepare_images(pixels, self.image_size, self.crop)
        return prepared[[wanted.index(f) for f in frames]], pixels.shape[2]

    def _eye_triplet(self, frame_a: np.ndarray, frame_b: np.ndarray, boxes_a: np.ndarray,
                     stored: int, rngs: Sequence[np.random.Generator]) -> dict[str, np.ndarray]:
        """Anchor: frame B with A's eye boxes pasted in; positive A; negative B."""
        boxes = crop_points(boxes_a.reshape(-1, 2), stored, self.image_size, self.crop)
        triplet = {"eye_anchor": paste_boxes(frame_b, frame_a, boxes.reshape(-1, 4)),
                   "eye_positive": frame_a, "eye_negative": frame_b}
        if self.eye_augment:
            triplet = {k: self.augment(v, r) for (k, v), r in zip(triplet.items(), rngs,
                                                                  strict=True)}
        return triplet

    def _labels(self, clip: int, labels: dict[str, np.ndarray], t: int, window: np.ndarray,
                stored: int) -> dict[str, np.ndarray]:
        """The target's labels (landmarks in model pixels) and the window's factors."""
        gaze = labels["gaze"][t].astype(np.float32)
        out = {
            "pose": labels["pose"][t].astype(np.float32),
            "blink": np.float32(labels["blink"][t]),
            "gaze": gaze,
            "gaze_known": np.bool_(np.isfinite(gaze).all()),
            "landmarks": crop_points(labels["landmarks"][t], stored, self.image_size, self.crop),
        }
        if self.factor_names:
            if "factors" not in labels:
                raise UnreadableClip(clip, f"{self.index.records[clip].labels}: no factors")
            factors = labels["factors"].astype(np.float32)
            out |= {"factors": factors[t], "window_factors": factors[window]}
        return out

    def _factor_names(self) -> tuple[str, ...]:
        """Names of the synthetic factors (from the split's first clip), () for real data."""
        first = self.index.clips(self.split)[0]
        try:
            names = self.index.labels(first).get("factor_names")
        except UnreadableClip:
            return ()
        return () if names is None else tuple(str(n) for n in names)


def paste_boxes(base: np.ndarray, patch: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Copy of ``base`` (C, H, W) with the pixels of ``patch`` inside ``boxes`` (n, 4).

    Boxes are x0, y0, x1, y1 in pixel coordinates; every pixel they touch is pasted.
    """
    out = base.copy()
    height, width = base.shape[1:]
    for x0, y0, x1, y1 in boxes:
        cols = slice(max(0, int(np.floor(x0))), min(width, int(np.ceil(x1)) + 1))
        rows = slice(max(0, int(np.floor(y0))), min(height, int(np.ceil(y1)) + 1))
        out[:, rows, cols] = patch[:, rows, cols]
    return out


def _mel_window(mel: np.ndarray, frame: int) -> np.ndarray:
    """(1, 80, 20) mel window of video frame ``frame``: rows [4 (frame - 2), ... + 20)."""
    return mel_windows(mel, frame - LEAD_FRAMES, frame - LEAD_FRAMES + 1)[0]


def _other_frame(rng: np.random.Generator, frames: int, t: int) -> int:
    """A uniform frame in [0, frames) other than ``t`` (``t`` itself for a 1-frame clip)."""
    if frames == 1:
        return t
    pick = int(rng.integers(frames - 1))
    return pick + (pick >= t)
