"""Render synthetic clips and write them as a dataset: mp4s, label files and the manifest.

Clip ``c`` of identity ``i`` lives at ``clips/syn<i>/<c>.mp4`` and ``.npz``; identities
``0 .. n - val - test - 1`` are the train split, the next ``val_identities`` the val split,
the last ``test_identities`` the test split; test speakers have ``test_clips_per_identity``
clips, the others ``clips_per_identity``. The settings are kept in ``generation.json``,
so a run resumes (finished clips are skipped) and a run with other settings starts afresh.
"""

from __future__ import annotations

import inspect
import json
import multiprocessing
import shutil
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from pdfgc.data.manifest import (
    MANIFEST,
    ClipRecord,
    read_labels,
    read_manifest,
    write_labels,
    write_manifest,
)
from pdfgc.data.synthetic.face import render_frame
from pdfgc.data.synthetic.factors import (
    EMOTIONS,
    FACTOR_NAMES,
    POSE_NAMES,
    Identity,
    factor_array,
    frame_factors,
    make_identity,
    motion_tracks,
)
from pdfgc.data.synthetic.speech import mouth_from_audio, synthesize_speech
from pdfgc.errors import PdfgcError
from pdfgc.face.geometry import eye_boxes
from pdfgc.features import FPS, SAMPLE_RATE, mel_spectrogram, normalize_rms
from pdfgc.io import atomic_path
from pdfgc.media import FrameSource, VideoWriter

GENERATION_FILE = "generation.json"
FORMAT_VERSION = 3  # bump when the files change, so stored datasets are regenerated
                    # (3: x264 without its macroblock tree, the same bytes on every run)
CLIP_STREAM = 2  # random-stream tag of clips (identities use factors.IDENTITY_STREAM)
MOTION_STREAMS = ("pose", "blink", "gaze", "emotion")
SHEET_PICKS = ("mouth_open", "blink", "yaw", "pitch", "gaze_x")  # contact-sheet frame choice
CELL_SIZE, CAPTION_ROWS = 128, 28  # contact-sheet cell: least image side, caption height


def render_clip(identity: Identity, seed: int | Sequence[int], seconds: float = 2.0,
                image_size: int = 64) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Render one clip in memory: frames (N, S, S, 3) uint8, audio (N * 640,) float32 at
    16 kHz, and the label arrays of ``pdfgc.data.manifest`` (factors and factor_names too).

    ``N = round(25 * seconds)``. Speech, pose, blink, gaze and emotion each come from their
    own random stream of ``seed``; the mouth follows the audio (``mouth_from_audio``).
    """
    n_frames = num_frames(seconds)
    streams = np.random.SeedSequence(seed).spawn(len(MOTION_STREAMS) + 1)
    audio = synthesize_speech(np.random.default_rng(streams[-1]), n_frames * SAMPLE_RATE // FPS)
    tracks = motion_tracks(dict(zip(MOTION_STREAMS, streams[:-1], strict=True)), n_frames)
    tracks["mouth_open"], tracks["mouth_round"] = mouth_from_audio(audio, n_frames)
    factors = factor_array(tracks)  # (N, F)
    drawn = [render_frame(identity, frame_factors(factors, i), image_size)
             for i in range(n_frames)]
    frames = np.stack([image for image, _ in drawn])
    landmarks = np.stack([points for _, points in drawn])  # (N, NUM_LANDMARKS, 2)
    labels = {
        "landmarks": landmarks,
        "pose": _columns(factors, POSE_NAMES),
        "blink": _columns(factors, ("blink",))[:, 0],
        "gaze": _columns(factors, ("gaze_x", "gaze_y")),
        "eye_boxes": eye_boxes(landmarks),
        "mel": mel_spectrogram(normalize_rms(audio)),
        "factors": factors,
        "factor_names": np.array(FACTOR_NAMES),
    }
    return frames, audio, labels


def num_frames(seconds: float) -> int:
    """Video frames of a clip of ``seconds`` at 25 fps; at least one, or a PdfgcError."""
    frames = int(round(seconds * FPS))
    if frames < 1:
        raise PdfgcError(f"seconds must give at least one frame at {FPS} fps, got {seconds}")
    return frames


def _columns(factors: np.ndarray, names: Sequence[str]) -> np.ndarray:
    return factors[:, [FACTOR_NAMES.index(name) for name in names]]


@dataclass(frozen=True)
class _ClipJob:
    """Everything a worker needs to write one clip."""

    root: str
    identity: int
    clip: int
    split: str
    seconds: float
    image_size: int
    seed: int

    def record(self) -> ClipRecord:
        name = f"syn{self.identity:04d}"
        stem = f"clips/{name}/{self.clip:03d}"
        return ClipRecord(clip=f"{name}/{self.clip:03d}", identity=name, video=f"{stem}.mp4",
                          labels=f"{stem}.npz", frames=num_frames(self.seconds),
                          split=self.split, source="synthetic", image_size=self.image_size)

    def done(self) -> bool:
        record = self.record()
        return all((Path(self.root) / p).is_file() for p in (record.video, record.labels))


def _write_clip(job: _ClipJob) -> ClipRecord:
    """Render a clip and write its mp4 (with audio) and label file, each atomically."""
    record = job.record()
    frames, audio, labels = render_clip(make_identity(job.identity, job.seed),
                                        (job.seed, CLIP_STREAM, job.identity, job.clip),
                                        job.seconds, job.image_size)
    root = Path(job.root)
    with VideoWriter(root / record.video, fps=FPS, audio=audio, sample_rate=SAMPLE_RATE,
                     deterministic=True) as out:
        out.write(frames)
    write_labels(root / record.labels, **labels)
    return record


def generate_dataset(root: str | Path, num_identities: int = 40, clips_per_identity: int = 8,
                     seconds: float = 2.0, image_size: int = 64, val_identities: int = 4,
                     test_identities: int = 4, seed: int = 0, workers: int = 2,
                     test_clips_per_identity: int | None = None) -> list[ClipRecord]:
    """Write a synthetic dataset into ``root`` and return its records (sorted by clip).

    ``test_clips_per_identity`` (default: ``clips_per_identity``) is the number of clips of
    each test speaker. Clips already on disk from a run with the same settings are skipped;
    with other settings the old clips are removed first. ``workers`` > 1 renders clips in
    that many processes.
    """
    settings = _settings(num_identities=num_identities, clips_per_identity=clips_per_identity,
                         seconds=seconds, image_size=image_size, val_identities=val_identities,
                         test_identities=test_identities, seed=seed,
                         test_clips_per_identity=test_clips_per_identity)
    if workers < 1:
        raise PdfgcError(f"workers must be at least 1, got {workers}")
    root = Path(root)
    _claim(root, settings)
    jobs = _jobs(root, settings)
    records = [job.record() for job in jobs if job.done()]
    todo = [job for job in jobs if not job.done()]
    with tqdm(total=len(jobs), initial=len(records), unit="clip", desc="synthetic clips") as bar:
        for record in _run(todo, workers):
            records.append(record)
            bar.update()
    write_manifest(root, records)
    return sorted(records, key=lambda r: r.clip)


def ensure_dataset(root: str | Path, **params) -> list[ClipRecord]:
    """The records of the dataset in ``root``, generating it first when its manifest is
    missing or it was made with other settings (``params`` as for ``generate_dataset``)."""
    bound = inspect.signature(generate_dataset).bind(root, **params)
    bound.apply_defaults()
    wanted = _settings(**{k: v for k, v in bound.arguments.items() if k not in ("root", "workers")})
    root = Path(root)
    if (root / MANIFEST).is_file() and _stored_settings(root) == wanted:
        return read_manifest(root)
    return generate_dataset(root, **params)


def _settings(**params) -> dict:
    """Validated generation settings, as stored in ``generation.json``."""
    n, val, test = params["num_identities"], params["val_identities"], params["test_identities"]
    if min(val, test) < 0 or n <= val + test:
        raise PdfgcError(f"num_identities ({n}) must exceed val_identities + test_identities "
                         f"({val} + {test}), both at least 0")
    if params["test_clips_per_identity"] is None:
        params["test_clips_per_identity"] = params["clips_per_identity"]
    for key in ("clips_per_identity", "test_clips_per_identity"):
        if params[key] < 1:
            raise PdfgcError(f"{key} must be at least 1, got {params[key]}")
    num_frames(params["seconds"])
    size = params["image_size"]
    if size < 16 or size % 2:
        raise PdfgcError(f"image_size must be an even number of at least 16, got {size}")
    return {**params, "seconds": float(params["seconds"]), "version": FORMAT_VERSION}


def _stored_settings(root: Path) -> dict | None:
    path = root / GENERATION_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _claim(root: Path, settings: dict) -> None:
    """Record the settings in ``root``; clips made with other settings are removed."""
    stored = _stored_settings(root)
    if stored is not None and stored != settings:
        shutil.rmtree(root / "clips", ignore_errors=True)
        (root / MANIFEST).unlink(missing_ok=True)
    with atomic_path(root / GENERATION_FILE) as tmp:
        tmp.write_text(json.dumps(settings, indent=2) + "\n")


def _jobs(root: Path, settings: dict) -> list[_ClipJob]:
    n = settings["num_identities"]
    first_val = n - settings["val_identities"] - settings["test_identities"]
    first_test = n - settings["test_identities"]
    splits = ["train" if i < first_val else "val" if i < first_test else "test"
              for i in range(n)]
    clips = {split: settings["clips_per_identity"] for split in ("train", "val")}
    clips["test"] = settings["test_clips_per_identity"]
    return [
        _ClipJob(root=str(root), identity=i, clip=c, split=split, seconds=settings["seconds"],
                 image_size=settings["image_size"], seed=settings["seed"])
        for i, split in enumerate(splits) for c in range(clips[split])
    ]


def _run(jobs: list[_ClipJob], workers: int) -> Iterator[ClipRecord]:
    """Yield the records of ``jobs`` as they finish, in worker processes when workers > 1."""
    if workers == 1 or len(jobs) < 2:
        yield from map(_write_clip, jobs)
        return
    # Workers fork from a fresh server process that has imported this module once: quick to
    # start, and safe even when the caller runs threads (a training loop, a data loader).
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_single_thread) as pool:
        futures = [pool.submit(_write_clip, job) for job in jobs]
        try:
            for future in as_completed(futures):
                yield future.result()
        finally:  # on an error or an interrupt, drop the clips not yet started
            for future in futures:
                future.cancel()


def _single_thread() -> None:
    """Worker set-up: one OpenCV thread each, the processes already share the cores."""
    cv2.setNumThreads(1)


def contact_sheet(root: str | Path, path: str | Path, rows: int = 4, cols: int = 8,
                  records: Sequence[ClipRecord] | None = None) -> Path:
    """Write a PNG grid of captioned sample frames of the dataset in ``root``.

    Cells go round the identities (so they vary) and, cell by cell, show the frame of the
    clip with the widest mouth, the fullest blink, the largest yaw, the largest pitch or the
    gaze furthest aside; the caption names the identity, emotion and factor values.
    """
    root = Path(root)
    records = list(records) if records is not None else read_manifest(root)
    if not records:
        raise PdfgcError(f"{root}: no clips to show")
    cells = [_sheet_cell(root, record, pick)
             for record, pick in zip(_spread(records, rows * cols), _cell_picks(rows * cols),
                                     strict=True)]
    grid = np.concatenate([np.concatenate(cells[r * cols:(r + 1) * cols], axis=1)
                           for r in range(rows)])
    path = Path(path)
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), grid[:, :, ::-1]):
            raise PdfgcError(f"{path}: cannot write the contact sheet")
    return path


def _cell_picks(count: int) -> list[str]:
    return [SHEET_PICKS[k % len(SHEET_PICKS)] for k in range(count)]


def _spread(records: Sequence[ClipRecord], count: int) -> list[ClipRecord]:
    """``count`` records taken round-robin over the identities (repeating if too few)."""
    by_identity: dict[str, list[ClipRecord]] = {}
    for record in sorted(records, key=lambda r: r.clip):
        by_identity.setdefault(record.identity, []).append(record)
    order = [clips[k] for k in range(max(map(len, by_identity.values())))
             for clips in by_identity.values() if k < len(clips)]
    return [order[k % len(order)] for k in range(count)]


def _sheet_cell(root: Path, record: ClipRecord, pick: str) -> np.ndarray:
    """One captioned cell (CELL_SIZE + CAPTION_ROWS, CELL_SIZE, 3): the clip's frame with
    the extreme value of factor ``pick``."""
    labels = read_labels(root / record.labels)
    names = [str(n) for n in labels["factor_names"]]
    factors = labels["factors"]
    index = int(np.argmax(np.abs(factors[:, names.index(pick)])))
    frame = FrameSource(root / record.video).read([index])[0]
    size = max(CELL_SIZE, record.image_size)
    image = cv2.resize(frame, (size, size), interpolation=cv2.INTER_CUBIC)
    row = dict(zip(names, factors[index], strict=True))
    emotion = max(EMOTIONS, key=lambda e: row[f"emotion_{e}"])
    lines = (f"{record.identity} {emotion} {row['emotion_intensity']:.1f}",
             f"y{row['yaw']:+.0f} p{row['pitch']:+.0f} m{row['mouth_open']:.1f} "
             f"b{row['blink']:.1f}")
    caption = np.full((CAPTION_ROWS, size, 3), 255, np.uint8)
    for k, text in enumerate(lines):
        cv2.putText(caption, text, (3, 11 + 13 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.36,
                    (20, 20, 20), 1, cv2.LINE_AA)
    return np.concatenate([image, caption])


def dataset_identities(root: Path) -> tuple[list[Identity], int]:
    """The identities of a synthetic dataset and its frame size, from its ``generation.json``."""
    path = root / GENERATION_FILE
    try:
        settings = json.loads(path.read_text())
        return ([make_identity(i, settings["seed"]) for i in range(settings["num_identities"])],
                settings["image_size"])
    except (OSError, json.JSONDecodeError, KeyError) as err:
        raise PdfgcError(f"{path}: unreadable synthetic-data settings ({err})") from None
