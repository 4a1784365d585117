"""The inference pipeline: media in, a talking-head mp4 out.

Time line: the audio gives N = T_mel // 4 - 4 output frames; frame k shows the audio around
video time k + 2, so the muxed audio starts 80 ms in and frame k plays at k / 25 s, in sync.
Every code sequence (audio mouth, and pose / emotion / eye from the drivers) is computed first
(a few hundred bytes a frame); frames are then rendered and encoded in chunks, so memory does
not grow with the audio's length.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from pdfgc.errors import PdfgcError, check_choice
from pdfgc.features import (
    FPS,
    SAMPLE_RATE,
    audio_offset_samples,
    face_pixels,
    mel_spectrogram,
    mel_windows,
    normalize_rms,
    num_output_frames,
    pixels_to_input,
    to_uint8,
)
from pdfgc.inference.model import Controls, Dials, TalkingHeadModel
from pdfgc.io import check_folder_free, read_jsonl, resolve_device, save_config
from pdfgc.media import FrameSource, VideoWriter, load_audio, read_image

log = logging.getLogger(__name__)

FACTORS = ("pose", "emotion", "eye")  # the driven factors, in the panel's order
DRIVER_POLICIES = ("loop", "pingpong", "hold")
SKIPPED_DRIVER_FRAMES = 2  # the release aligns drivers like the audio: their frames 0, 1 unused
MIN_IMAGE_SIDE = 32


@dataclass
class Job:
    """One video to render. Omitted drivers are neutral: the portrait itself drives them.

    ``driver_policy``: what a driver shorter than the audio does (:func:`driver_timeline`);
    ``dials``: numeric pose and eye values (:class:`Dials`); ``panel``: also write
    appearance | result | drivers side by side to this path.
    """

    audio: str
    appearance: str
    output: str
    pose: str | None = None
    emotion: str | None = None
    eye: str | None = None
    controls: Controls = field(default_factory=Controls)
    driver_policy: str = "loop"
    dials: Dials = field(default_factory=Dials)
    panel: str | None = None

    def check(self) -> None:
        """The cheap checks of the job's files, to run before the model loads: each input
        exists and is readable (a driver may be a frame folder), and no folder stands where
        an output goes nor a file where its folder must be. One-line errors."""
        _check_input(self.audio, "audio file")
        _check_input(self.appearance, "image file")
        for factor in FACTORS:
            if getattr(self, factor) is not None:
                _check_input(getattr(self, factor), "video file or frame folder", folder=True)
        for output in filter(None, (self.output, self.panel)):
            if Path(output).is_dir():
                raise PdfgcError(f"{output}: is a folder; name the .mp4 file to write")
            check_folder_free(output)


def _check_input(path: str, what: str, folder: bool = False) -> None:
    """A one-line error unless ``path`` is a readable file (or, with ``folder``, a folder)."""
    if Path(path).is_dir() and not folder:
        raise PdfgcError(f"{path}: is a folder, not the {what} expected")
    if not Path(path).exists():
        raise PdfgcError(f"{path}: no such {what}")
    if not os.access(path, os.R_OK):
        raise PdfgcError(f"{path}: cannot read the {what} (permission denied)")


def driver_timeline(num_frames: int, length: int, policy: str) -> np.ndarray:
    """Driver frame index for each output frame.

    The first two driver frames are skipped (as released) when the driver is long enough;
    past its end a driver loops back to frame 2 (``loop``), runs backwards and forwards
    (``pingpong``) or stays on its last frame (``hold``).
    """
    check_choice("driver_policy", policy, DRIVER_POLICIES)
    first = SKIPPED_DRIVER_FRAMES if length > SKIPPED_DRIVER_FRAMES else 0
    usable = length - first
    k = np.arange(num_frames)
    if policy == "loop":
        offset = k % usable
    elif policy == "hold":
        offset = np.minimum(k, usable - 1)
    else:
        period = max(2 * usable - 2, 1)
        offset = k % period
        offset = np.where(offset < usable, offset, period - offset)
    return first + offset


class Driver:
    """A driver clip (video or frame folder, or the still portrait) and its time line."""

    def __init__(self, source: FrameSource | np.ndarray, num_frames: int, policy: str):
        self.source = source
        self.timeline = driver_timeline(num_frames, len(source), policy)

    def frames(self, indices: np.ndarray) -> np.ndarray:
        """(len(indices), H, W, 3) uint8 frames of the clip."""
        if isinstance(self.source, np.ndarray):
            return self.source[indices]
        return self.source.read(indices.tolist())


class Renderer:
    """Renders jobs with one loaded model; see :func:`run` for the config it reads."""

    def __init__(self, cfg: DictConfig, model: TalkingHeadModel):
        self.cfg = cfg
        if cfg.batch_size < 1:
            raise PdfgcError(f"batch_size must be at least 1, not {cfg.batch_size}")
        self.device = resolve_device(cfg.device)
        self.model = model.to(self.device).set_precision(cfg.precision)
        self.size = model.image_size
        self.croppers = ThreadPoolExecutor(os.cpu_count() or 1)  # cv2 releases the GIL

    def _pixels(self, images: np.ndarray) -> torch.Tensor:
        """(N, H, W, 3) uint8 frames -> (N, size, size, 3) uint8 face pixels, cut in parallel
        into pinned memory on a GPU (so the copy to it can overlap the GPU's work)."""
        pixels = torch.empty((len(images), self.size, self.size, 3), dtype=torch.uint8,
                             pin_memory=self.device.type == "cuda")
        view = pixels.numpy()

        def cut(i: int) -> None:
            view[i] = face_pixels(images[i], self.size, self.cfg.crop)

        list(self.croppers.map(cut, range(len(images))))
        return pixels

    def _tensor(self, images: np.ndarray) -> torch.Tensor:
        """Network input on the device: the uint8 pixels are copied there, then scaled."""
        return pixels_to_input(self._pixels(images).to(self.device, non_blocking=True))

    def _chunks(self, n: int) -> Iterator[slice]:
        for start in range(0, n, self.cfg.batch_size):
            yield slice(start, min(start + self.cfg.batch_size, n))

    def _audio_codes(self, mel: np.ndarray, n: int) -> torch.Tensor:
        codes = []
        for s in self._chunks(n):
            windows = torch.from_numpy(mel_windows(mel, s.start, s.stop)).to(self.device)
            codes.append(self.model.encode_audio(windows))
        return torch.cat(codes)

    def _driver_codes(self, driver: Driver) -> dict[str, torch.Tensor]:
        """Codes of every frame on the driver's time line; each distinct frame encoded once."""
        distinct, inverse = np.unique(driver.timeline, return_inverse=True)
        parts: dict[str, list[torch.Tensor]] = {}
        for s in self._chunks(len(distinct)):
            out = self.model.encode_motion(self._tensor(driver.frames(distinct[s])))
            for k, v in out.items():
                parts.setdefault(k, []).append(v)
        index = torch.from_numpy(inverse).to(self.device)
        return {k: torch.cat(v)[index] for k, v in parts.items()}

    def render(self, job: Job, progress: Callable[[int, int], None] | None = None) -> Path:
        """Render one job to ``job.output`` (and ``job.panel``), written atomically; returns
        the output's path. ``progress(done, total)`` is called after each rendered chunk."""
        samples = load_audio(job.audio, SAMPLE_RATE)
        limit = self.cfg.get("max_audio_seconds")
        if limit is not None and len(samples) > limit * SAMPLE_RATE:
            raise PdfgcError(f"{job.audio}: audio is {len(samples) / SAMPLE_RATE:.1f} s long; "
                             f"at most {limit:g} s is rendered here (max_audio_seconds)")
        mel = mel_spectrogram(normalize_rms(samples))
        n = num_output_frames(len(mel))
        if n < 1:
            raise PdfgcError(f"{job.audio}: audio too short ({len(samples) / SAMPLE_RATE:.2f} s); "
                             f"at least {5 / FPS:.2f} s is needed")
        portrait = read_image(job.appearance)
        if min(portrait.shape[:2]) < MIN_IMAGE_SIDE:
            raise PdfgcError(f"{job.appearance}: image is {portrait.shape[1]}x{portrait.shape[0]},"
                             f" too small to hold a face (at least {MIN_IMAGE_SIDE} px a side)")
        drivers = self._open_drivers(job, portrait, n)
        appearance = self.model.encode_appearance(self._tensor(portrait[None]))

        codes = {"mouth": self._audio_codes(mel, n)}
        by_source: dict[int, dict[str, torch.Tensor]] = {}
        for factor in FACTORS:
            driver = drivers[factor]
            if id(driver) not in by_source:
                by_source[id(driver)] = self._driver_codes(driver)
            codes[factor] = by_source[id(driver)][factor]
        motion = self.model.compose(codes, job.controls, job.dials)

        offset = audio_offset_samples()
        track = samples[offset: offset + n * SAMPLE_RATE // FPS]
        still = self._pixels(portrait[None])[0].numpy()
        targets = {job.output: bool(self.cfg.panel)}  # path -> whether it gets the panel
        if job.panel is not None:
            targets[job.panel] = True
        chunks = list(self._chunks(n))
        rendered = self.model.render_frames(appearance, motion, self.cfg.batch_size)
        with ExitStack() as files, ThreadPoolExecutor(1) as encoder:
            writers = {files.enter_context(VideoWriter(path, fps=FPS, audio=track,
                                                       sample_rate=SAMPLE_RATE,
                                                       crf=self.cfg.crf)): gets_panel
                       for path, gets_panel in targets.items()}

            def write(frames: np.ndarray, panel: np.ndarray | None) -> None:
                for writer, gets_panel in writers.items():
                    writer.write(panel if gets_panel else frames)

            pending = None  # H.264 encoding of one chunk overlaps rendering of the next
            for done, (s, frames) in enumerate(tqdm(zip(chunks, rendered, strict=True),
                                                    total=len(chunks), unit="chunk",
                                                    desc=Path(job.output).name,
                                                    disable=not self.cfg.progress), 1):
                frames = to_uint8(frames)
                panel = (self._panel(frames, still, drivers, s) if any(targets.values())
                         else None)
                if pending is not None:
                    pending.result()
                pending = encoder.submit(write, frames, panel)
                if progress is not None:
                    progress(done, len(chunks))
            if pending is not None:
                pending.result()
        return Path(job.output)

    def _open_drivers(self, job: Job, portrait: np.ndarray, n: int) -> dict[str, Driver]:
        """One Driver per distinct source; an omitted factor is driven by the still portrait."""
        opened: dict[str | None, Driver] = {}
        for factor in FACTORS:
            path = getattr(job, factor)
            if path not in opened:
                source = portrait[None] if path is None else FrameSource(path)
                opened[path] = Driver(source, n, job.driver_policy)
        return {factor: opened[getattr(job, factor)] for factor in FACTORS}

    def _panel(self, frames: np.ndarray, still: np.ndarray, drivers: dict[str, Driver],
               s: slice) -> np.ndarray:
        """appearance | result | pose, emotion and eye drivers, side by side."""
        columns = [np.broadcast_to(still, frames.shape), frames]
        for factor in FACTORS:
            driver = drivers[factor]
            shown = driver.frames(driver.timeline[s])
            columns.append(self._pixels(shown).numpy())
        return np.concatenate(columns, axis=2)


def job_from_config(cfg: DictConfig) -> Job:
    """The single job described by the top-level ``audio=``, ``appearance=``... options."""
    for key in ("audio", "appearance"):
        if cfg.get(key) is None:
            raise PdfgcError(f"{key}= is required (or give jobs=<file.jsonl|csv>)")
    return Job(audio=cfg.audio, appearance=cfg.appearance, output=cfg.output, pose=cfg.pose,
               emotion=cfg.emotion, eye=cfg.eye, controls=controls_from_config(cfg.controls),
               driver_policy=cfg.driver_policy)


def controls_from_config(controls: DictConfig | dict) -> Controls:
    """``controls.all`` (if set) overrides every switch; otherwise each is read by name."""
    values = dict(controls)
    everything = values.pop("all", None)
    unknown = set(values) - set(Controls.__dataclass_fields__)
    if unknown:
        raise PdfgcError(f"unknown controls: {sorted(unknown)}; use mouth, blink, gaze, "
                         "emotion, pose, all")
    if everything is not None:
        values = dict.fromkeys(values, bool(everything))
    return Controls(**{k: bool(v) for k, v in values.items()})


def read_jobs(path: str, defaults: DictConfig) -> list[Job]:
    """Jobs from a JSONL or CSV file (columns: audio, appearance, output, pose, emotion, eye,
    and optionally any of the controls); relative paths are taken from the file's folder."""
    file = Path(path)
    if not file.is_file():
        raise PdfgcError(f"{path}: jobs file not found")
    if file.suffix == ".csv":
        rows = [{k: v or None for k, v in row.items()}
                for row in csv.DictReader(file.read_text().splitlines())]
    else:
        rows = read_jsonl(file)
    jobs = []
    for i, row in enumerate(rows, 1):
        missing = [k for k in ("audio", "appearance", "output") if not row.get(k)]
        if missing:
            raise PdfgcError(f"{path}: job {i} lacks {', '.join(missing)}")
        switches = dict(defaults.controls)
        switches.update({k: _truthy(row[k]) for k in (*Controls.__dataclass_fields__, "all")
                         if row.get(k) is not None})
        paths = {k: str(file.parent / row[k]) if row.get(k) else None
                 for k in ("audio", "appearance", "output", *FACTORS)}
        jobs.append(Job(**paths, controls=controls_from_config(switches),
                        driver_policy=defaults.driver_policy))
    return jobs


def _truthy(value: object) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes")


def run(cfg: DictConfig) -> list[Path]:
    """Render the job(s) of an ``infer.yaml`` config; batch jobs already done are skipped."""
    if cfg.weights is None:
        raise PdfgcError("weights= is required: the folder holding the four released PD-FGC "
                         "files (appearance_model.pth, motion_model.pth, audio_model.pth, "
                         "generator_model.pth) or a pdfgc .ckpt")
    jobs = read_jobs(cfg.jobs, cfg) if cfg.get("jobs") else [job_from_config(cfg)]
    todo = []
    for job in jobs:
        if cfg.get("jobs") and Path(job.output).exists():
            log.info("skip %s (already rendered)", job.output)
        else:
            job.check()  # every job's files, before the model loads
            todo.append(job)
    save_config(cfg, Path(cfg.paths.output_dir) / "config.yaml")
    if not todo:
        return []
    model = TalkingHeadModel.from_config(cfg.model, cfg.weights, cfg.noise_seed, cfg.compile)
    renderer = Renderer(cfg, model)
    written, failed = [], []
    for job in todo:
        try:
            written.append(renderer.render(job))
            log.info("wrote %s", job.output)
        except PdfgcError as err:
            if not cfg.get("jobs"):
                raise
            failed.append(f"{job.output}: {err}")
            log.error("job failed: %s", err)
    if failed:
        raise PdfgcError(f"{len(failed)} of {len(jobs)} jobs failed; first: {failed[0]}")
    return written
