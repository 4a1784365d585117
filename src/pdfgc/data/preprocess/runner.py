"""Turn a folder of talking videos (VoxCeleb2 or any) into a pdfgc dataset.

Per clip: decode (resampled to 25 fps by timestamps), track 68 landmarks, align to the
template, write ``clips/<clip>.mp4`` (aligned frames with the clip's 16 kHz audio) and then
``clips/<clip>.npz`` (the labels); a clip is done when both exist, and a failure removes what
it wrote. Clips are split over shards (clip i of the sorted list goes to shard
i % num_shards) and processed by a pool of workers, each with its own detector. A shard writes
``manifest.<split>.shard-<i>-of-<n>.jsonl`` when it finishes and keeps
``rejected.<split>.shard-<i>-of-<n>.jsonl`` (clip, video, reason, detail) up to date; the merge
step joins every finished shard into ``manifest.jsonl`` and ``rejected.jsonl``.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import cv2
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from pdfgc.data.manifest import ClipRecord, write_labels, write_manifest
from pdfgc.data.preprocess.align import (
    clip_transforms,
    resize_transforms,
    transform_points,
    warp_frames,
)
from pdfgc.data.preprocess.labels import clip_labels
from pdfgc.errors import PdfgcError, check_choice
from pdfgc.face.landmarks import (
    DETECTORS,
    NUM_LANDMARKS,
    FrameFaces,
    LandmarkDetector,
    build_detector,
    face_sizes,
    fill_gaps,
    keyframes,
    smooth,
)
from pdfgc.features import FPS, SAMPLE_RATE
from pdfgc.io import read_jsonl, save_config, write_jsonl
from pdfgc.media import FrameSource, VideoWriter, load_audio

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov")
LAYOUTS = {"voxceleb2": "voxceleb2", "flat": "videos"}  # layout -> the records' source
SPLITS = {"dev": "train", "test": "test"}  # corpus split -> the records' split
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640
CLIPS = "clips"
FLUSH_EVERY = 100  # clips between two rewrites of a shard's rejection list

NO_FACE, SEVERAL_FACES, SMALL_FACE = "no face", "several faces", "face too small"
TOO_SHORT, NO_AUDIO, UNREADABLE, FAILED = "too short", "no audio", "unreadable", "failed"


@dataclass(frozen=True)
class ClipJob:
    """One source video to turn into one clip of the dataset."""

    clip: str  # clip id, the output path under clips/ without suffix
    identity: str
    video: str  # absolute path of the source video
    split: str  # the record's split: train | val | test
    source: str  # the record's source corpus


@dataclass(frozen=True)
class ClipOptions:
    """How a clip is processed; the values come from ``conf/preprocess.yaml``."""

    image_size: int
    min_frames: int
    min_face: float
    max_bad_fraction: float
    detect_every: int
    smooth_landmarks: int
    smooth_shift: int
    align: bool
    crf: int
    chunk: int

    @classmethod
    def from_config(cls, cfg: DictConfig) -> ClipOptions:
        return cls(**{f.name: cfg[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class Rejection:
    """A clip left out of the dataset, and why."""

    clip: str
    video: str
    reason: str
    detail: str


class Rejected(Exception):
    """Raised while processing a clip that does not qualify (one of the reasons above)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def run(cfg: DictConfig) -> None:
    """Process one shard of ``cfg.input`` into ``cfg.output`` and merge when asked
    (``merge=true`` only merges; ``merge=auto`` merges after a run with one shard)."""
    _check_config(cfg)
    output = Path(cfg.output)
    if cfg.merge is True:
        merge(output)
        return
    jobs = plan(cfg)[cfg.shard :: cfg.num_shards]
    tag = f"{cfg.split}.shard-{cfg.shard}-of-{cfg.num_shards}"
    save_config(cfg, output / f"config.{tag}.yaml")
    opts = ClipOptions.from_config(cfg)
    rejected_path = output / f"rejected.{tag}.jsonl"
    records, rejected, todo = _resume(jobs, output, opts, rejected_path, cfg.retry_rejected)
    log.info("%s: %d clips, %d already done or rejected", tag, len(jobs), len(jobs) - len(todo))
    backend = (cfg.backend, OmegaConf.to_container(cfg.backends[cfg.backend]) or {})
    bar = tqdm(total=len(todo), desc=f"preprocess {tag}", unit="clip", disable=not cfg.progress)
    for outcome in _outcomes(todo, backend, opts, output, cfg.workers):
        if isinstance(outcome, Rejection):
            rejected.append(outcome)
        else:
            records.append(outcome)
        bar.update()
        bar.set_postfix(kept=len(records), rejected=len(rejected))
        if bar.n % FLUSH_EVERY == 0:
            write_jsonl(rejected_path, _by_clip(rejected))
    bar.close()
    write_jsonl(rejected_path, _by_clip(rejected))
    write_jsonl(output / f"manifest.{tag}.jsonl", _by_clip(records))
    log.info("%s: %d clips kept, %d rejected (%s)", tag, len(records), len(rejected),
             _reason_counts(rejected))
    if cfg.merge == "auto" and cfg.num_shards == 1:
        merge(output)


def _check_config(cfg: DictConfig) -> None:
    """One-line errors for options that cannot work."""
    for key in ("output",) if cfg.merge is True else ("input", "output"):
        if not cfg[key]:
            raise PdfgcError(f"{key}=... is required (a folder)")
    check_choice("backend", cfg.backend, DETECTORS)
    check_choice("layout", cfg.layout, LAYOUTS)
    check_choice("split", cfg.split, SPLITS)
    check_choice("merge", cfg.merge, ("auto", True, False))
    checks = {
        "num_shards": cfg.num_shards >= 1,
        "shard": 0 <= cfg.shard < cfg.num_shards,
        "val_fraction": 0 <= cfg.val_fraction < 1,
        "image_size": cfg.image_size >= 32 and cfg.image_size % 2 == 0,
    }
    for key, ok in checks.items():
        if not ok:
            raise PdfgcError(f"{key}={cfg[key]}: invalid (see conf/preprocess.yaml)")


def plan(cfg: DictConfig) -> list[ClipJob]:
    """Every video under ``cfg.input`` as a job, sorted by clip id."""
    root, output = Path(cfg.input), Path(cfg.output).resolve()
    jobs: dict[str, ClipJob] = {}
    for path in find_videos(root, exclude=output):
        clip, identity = clip_id(path, root, cfg.layout)
        if clip in jobs:
            raise PdfgcError(f"{path}: clip id {clip} also belongs to {jobs[clip].video}")
        split = record_split(identity, cfg.split, cfg.val_fraction)
        jobs[clip] = ClipJob(clip, identity, str(path.resolve()), split, LAYOUTS[cfg.layout])
    return [jobs[clip] for clip in sorted(jobs)]


def find_videos(root: Path, exclude: Path | None = None) -> list[Path]:
    """Video files under ``root``, recursively and sorted; hidden files and anything under
    ``exclude`` (the output folder) are skipped."""
    if not root.is_dir():
        raise PdfgcError(f"{root}: input is not a folder")
    videos = sorted(
        p for p in root.rglob("*")
        if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file() and not p.name.startswith(".")
        and not (exclude is not None and exclude in p.resolve().parents)
    )
    if not videos:
        raise PdfgcError(f"{root}: no videos ({', '.join(VIDEO_EXTENSIONS)}) found")
    return videos


def clip_id(path: Path, root: Path, layout: str) -> tuple[str, str]:
    """(clip id, identity) of a video: voxceleb2 is ``<identity>/<video>/<clip>``; flat uses
    the path under ``root`` as the id and the parent folder's name as the identity."""
    relative = path.relative_to(root).with_suffix("")
    if layout == "voxceleb2":
        if len(relative.parts) != 3:
            raise PdfgcError(f"{path}: layout=voxceleb2 expects <identity>/<video>/<clip>"
                             f"{path.suffix} under {root}")
        return relative.as_posix(), relative.parts[0]
    return relative.as_posix(), path.resolve().parent.name


def record_split(identity: str, split: str, val_fraction: float) -> str:
    """test for the corpus' test split; otherwise val for the identities whose hash falls
    below ``val_fraction`` (speaker-disjoint and stable), train for the rest."""
    if SPLITS[split] == "test":
        return "test"
    digest = hashlib.sha1(identity.encode()).digest()
    return "val" if int.from_bytes(digest[:8], "big") / 2**64 < val_fraction else "train"


def clip_paths(output: Path, clip: str) -> tuple[Path, Path]:
    """Where a clip's video and labels go."""
    base = output / CLIPS / clip
    return base.with_name(base.name + ".mp4"), base.with_name(base.name + ".npz")


def _resume(jobs: list[ClipJob], output: Path, opts: ClipOptions, rejected_path: Path,
            retry_rejected: bool) -> tuple[list[ClipRecord], list[Rejection], list[ClipJob]]:
    """Split a shard's jobs into clips done before, clips rejected before (kept unless
    ``retry_rejected``) and the jobs still to do."""
    before = {} if retry_rejected or not rejected_path.is_file() else {
        row["clip"]: Rejection(**row) for row in read_jsonl(rejected_path)}
    records, rejected, todo = [], [], []
    for job in jobs:
        video, labels = clip_paths(output, job.clip)
        if video.is_file() and labels.is_file():
            with np.load(labels) as data:
                records.append(_record(job, output, len(data["blink"]), opts.image_size))
        elif job.clip in before:
            rejected.append(before[job.clip])
        else:
            todo.append(job)
    return records, rejected, todo


def _record(job: ClipJob, output: Path, frames: int, image_size: int) -> ClipRecord:
    video, labels = clip_paths(output, job.clip)
    return ClipRecord(clip=job.clip, identity=job.identity,
                      video=video.relative_to(output).as_posix(),
                      labels=labels.relative_to(output).as_posix(), frames=frames,
                      split=job.split, source=job.source, image_size=image_size)


def _outcomes(jobs: list[ClipJob], backend: tuple[str, dict], opts: ClipOptions, output: Path,
              workers: int) -> Iterator[ClipRecord | Rejection]:
    """Process jobs in this process (``workers`` <= 1) or a pool; yields as clips finish."""
    if not jobs:
        return
    if workers <= 1:
        detector = build_detector(backend[0], **backend[1])
        for job in jobs:
            yield attempt(job, opts, detector, output)
        return
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        futures = [pool.submit(_work, job, backend, opts, output) for job in jobs]
        for future in as_completed(futures):
            yield future.result()
    finally:
        pool.shutdown(cancel_futures=True)


_WORKER_DETECTOR: LandmarkDetector | None = None


def _work(job: ClipJob, backend: tuple[str, dict], opts: ClipOptions, output: Path
          ) -> ClipRecord | Rejection:
    """A pool worker's task; the worker builds its detector on its first clip."""
    global _WORKER_DETECTOR
    if _WORKER_DETECTOR is None:
        cv2.setNumThreads(1)
        torch.set_num_threads(1)
        _WORKER_DETECTOR = build_detector(backend[0], **backend[1])
    return attempt(job, opts, _WORKER_DETECTOR, output)


def attempt(job: ClipJob, opts: ClipOptions, detector: LandmarkDetector, output: Path
            ) -> ClipRecord | Rejection:
    """Process one clip; a clip that fails for any reason becomes a :class:`Rejection`
    (KeyboardInterrupt and the like still stop the run)."""
    try:
        return process_clip(job, opts, detector, output)
    except Rejected as err:
        return Rejection(job.clip, job.video, err.reason, err.detail)
    except PdfgcError as err:
        return Rejection(job.clip, job.video, UNREADABLE, str(err))
    except Exception as err:
        log.warning("%s: failed", job.video, exc_info=True)
        return Rejection(job.clip, job.video, FAILED, f"{type(err).__name__}: {err}")


def process_clip(job: ClipJob, opts: ClipOptions, detector: LandmarkDetector, output: Path
                 ) -> ClipRecord:
    """Decode, track, align and label one video; write its mp4 and npz; raise
    :class:`Rejected` when it does not qualify."""
    source = FrameSource(job.video)
    try:
        audio = load_audio(job.video, SAMPLE_RATE)
    except PdfgcError as err:
        raise Rejected(NO_AUDIO, str(err)) from None
    indices = resample_indices(len(source), source.fps)[: len(audio) // SAMPLES_PER_FRAME]
    if len(indices) < opts.min_frames:
        raise Rejected(TOO_SHORT, f"{len(indices)} frames with audio at {FPS} fps, "
                                  f"fewer than min_frames={opts.min_frames}")
    marks = track(source, detector, indices, opts)
    if opts.align:
        transforms = clip_transforms(marks, opts.image_size, opts.smooth_shift)
    else:
        height, width = source.read(indices[:1]).shape[1:3]
        transforms = resize_transforms(len(indices), width, height, opts.image_size)
    audio = audio[: len(indices) * SAMPLES_PER_FRAME]
    labels = clip_labels(transform_points(transforms, marks), audio, opts.image_size)
    video_path, labels_path = clip_paths(output, job.clip)
    with VideoWriter(video_path, fps=FPS, audio=audio, sample_rate=SAMPLE_RATE,
                     crf=opts.crf) as writer:
        for part in _chunks(len(indices), opts.chunk):
            frames = source.read(indices[part])
            writer.write(warp_frames(frames, transforms[part], opts.image_size))
    try:
        write_labels(labels_path, **labels)
    except BaseException:
        video_path.unlink(missing_ok=True)
        raise
    return _record(job, output, len(indices), opts.image_size)


def resample_indices(n: int, fps: float) -> np.ndarray:
    """Source frame shown at each 25 fps output time k / 25, for ``n`` frames at ``fps``."""
    count = int(np.ceil(n * FPS / fps - 1e-6))
    shown = np.floor(np.arange(count) * fps / FPS + 1e-6).astype(np.int64)
    return np.minimum(shown, n - 1)


def track(source: FrameSource, detector: LandmarkDetector, indices: np.ndarray,
          opts: ClipOptions) -> np.ndarray:
    """Landmarks (N, 68, 2) of frames ``indices``, in source pixels: detected on every
    ``detect_every``-th frame, checked, gaps interpolated, smoothed over time."""
    keys = keyframes(len(indices), opts.detect_every)
    faces: list[FrameFaces] = []
    for part in _chunks(len(keys), opts.chunk):
        picked = indices[keys[part]]
        faces += detector.detect(source.read(picked), source.path, picked)
    problem = face_problem(faces, opts.min_face, opts.max_bad_fraction)
    if problem:
        raise Rejected(*problem)
    missing = np.full((NUM_LANDMARKS, 2), np.nan, dtype=np.float32)
    marks = np.stack([missing if f.landmarks is None else f.landmarks for f in faces])
    return smooth(fill_gaps(keys, marks, len(indices)), opts.smooth_landmarks)


def face_problem(faces: list[FrameFaces], min_face: float, max_bad_fraction: float
                 ) -> tuple[str, str] | None:
    """(reason, detail) when the detections do not make a usable clip: more than
    ``max_bad_fraction`` of the frames with several faces or with none, or a median face
    size below ``min_face`` pixels."""
    n = len(faces)
    several = sum(f.count > 1 for f in faces)
    found = [f.landmarks for f in faces if f.landmarks is not None]
    if several > max_bad_fraction * n:
        return SEVERAL_FACES, f"{several} of {n} detected frames show more than one face"
    if not found or n - len(found) > max_bad_fraction * n:
        return NO_FACE, f"no face in {n - len(found)} of {n} detected frames"
    size = float(np.median(face_sizes(np.stack(found))))
    if size < min_face:
        return SMALL_FACE, f"median face size {size:.0f} px, below min_face={min_face}"
    return None


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


SHARD_FILE = re.compile(r"^(?P<kind>manifest|rejected)\.(?P<split>[^.]+)"
                        r"\.shard-(?P<shard>\d+)-of-(?P<num>\d+)\.jsonl$")


def merge(output: Path) -> list[ClipRecord]:
    """Join every finished shard into ``manifest.jsonl`` and ``rejected.jsonl``; a one-line
    error names unfinished shards or a clip listed by two shards."""
    groups: dict[tuple[str, int], dict[str, list[Path]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(Path(output).glob("*.shard-*-of-*.jsonl")):
        match = SHARD_FILE.match(path.name)
        if match:
            key = (match["split"], int(match["num"]))
            groups[key][match["kind"]].append(path)
    if not any(group["manifest"] for group in groups.values()):
        raise PdfgcError(f"{output}: no finished shard manifests to merge; run the shards first")
    records, owner = [], {}
    for (split, num), group in sorted(groups.items()):
        if len(group["manifest"]) < num:
            raise PdfgcError(f"{output}: {num - len(group['manifest'])} of {num} shards "
                             f"(split={split}) have not finished; run them before merging")
        for path in group["manifest"]:
            for row in read_jsonl(path):
                record = ClipRecord(**row)
                if record.clip in owner:
                    raise PdfgcError(f"{path}: clip {record.clip} is also in {owner[record.clip]}"
                                     "; delete the shard files of the older run")
                owner[record.clip] = path.name
                records.append(record)
    rejected = [Rejection(**row) for group in groups.values()
                for path in group["rejected"] for row in read_jsonl(path)]
    write_manifest(output, records)
    write_jsonl(Path(output) / "rejected.jsonl", _by_clip(rejected))
    log.info("%s: manifest of %d clips, %d rejected (%s)", output, len(records), len(rejected),
             _reason_counts(rejected))
    return records


def _reason_counts(rejected: list[Rejection]) -> str:
    counts = Counter(r.reason for r in rejected)
    return ", ".join(f"{reason} {count}" for reason, count in sorted(counts.items())) or "none"


def _by_clip(items: list[ClipRecord] | list[Rejection]) -> list[dict]:
    """Records or rejections as JSON-lines rows, sorted by clip."""
    return [asdict(item) for item in sorted(items, key=lambda item: item.clip)]
