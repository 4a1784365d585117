"""Read images, driving videos and frame folders; write H.264 mp4 with an optional AAC track."""

import math
import os
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import cv2
import decord
import numpy as np

from pdfgc.errors import PdfgcError
from pdfgc.io import atomic_path
from pdfgc.media.audio import _reason

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
FOLDER_FPS = 25.0
AAC_FRAME_SIZE = 1024  # samples per AAC frame

# Colour (grey expanded to BGR, alpha dropped), bit depth kept, EXIF orientation applied.
_IMREAD_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB.

    Greyscale is expanded to three channels, an alpha channel is dropped (not composited),
    16-bit images are scaled to 8 bits, and the EXIF orientation of photos is applied.
    """
    path = Path(path)
    if not path.is_file():
        raise PdfgcError(f"{path}: no such image file")
    try:
        img = cv2.imread(str(path), _IMREAD_FLAGS)  # (H, W, 3) BGR, uint8 or uint16
    except cv2.error as err:
        raise PdfgcError(f"{path}: not a readable image ({_reason(err)})") from err
    if img is None:
        raise PdfgcError(f"{path}: not a readable image")
    if img.dtype == np.uint16:
        img = np.round(img / 257.0).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise PdfgcError(f"{path}: unsupported pixel type {img.dtype}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class FrameSource:
    """Driving frames from a video file (decord) or a folder of images (sorted by name).

    Nothing is decoded up front: ``read`` decodes only the frames asked for. ``fps`` is the
    video's average rate, or 25 for a folder.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._files: list[Path] = []
        self._video: decord.VideoReader | None = None
        if self.path.is_dir():
            self._files = _list_frames(self.path)
            self.fps = FOLDER_FPS
        elif self.path.is_file():
            self._video = _open_video(self.path)
            self.fps = float(self._video.get_avg_fps())
            if not (math.isfinite(self.fps) and self.fps > 0):
                raise PdfgcError(f"{self.path}: video has no valid frame rate")
        else:
            raise PdfgcError(f"{self.path}: no such video file or frame folder")

    def __len__(self) -> int:
        return len(self._video) if self._video is not None else len(self._files)

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """Frames at ``indices`` as (N, H, W, 3) uint8 RGB; IndexError when out of range."""
        indices = [int(i) for i in indices]
        if not indices:
            raise ValueError("no frame indices given")
        bad = [i for i in indices if not 0 <= i < len(self)]
        if bad:
            raise IndexError(f"frame indices {bad[:5]} out of range for {len(self)} frames")
        if self._video is not None:
            return self._read_video(indices)
        return self._read_folder(indices)

    def _read_video(self, indices: list[int]) -> np.ndarray:
        try:
            return self._video.get_batch(indices).asnumpy()
        except (RuntimeError, decord.DECORDError) as err:
            raise PdfgcError(f"{self.path}: cannot decode frames ({_reason(err)})") from err

    def _read_folder(self, indices: list[int]) -> np.ndarray:
        frames = [read_image(self._files[i]) for i in indices]
        for i, frame in zip(indices, frames, strict=True):
            if frame.shape != frames[0].shape:
                raise PdfgcError(
                    f"{self._files[i]}: size {frame.shape[1]}x{frame.shape[0]} differs from "
                    f"{frames[0].shape[1]}x{frames[0].shape[0]} of the other frames"
                )
        return np.stack(frames)


def _list_frames(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by file name."""
    files = sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
        key=lambda p: p.name,
    )
    if not files:
        raise PdfgcError(f"{folder}: folder has no image frames ({', '.join(IMAGE_EXTENSIONS)})")
    return files


def _open_video(path: Path) -> decord.VideoReader:
    """Open ``path`` with decord, after PyAV has checked it (PyAV's errors read better)."""
    _require_video_stream(path)
    try:
        video = decord.VideoReader(str(path), ctx=decord.cpu(0))
    except (RuntimeError, decord.DECORDError) as err:
        raise PdfgcError(f"{path}: not a readable video (decord cannot open it)") from err
    if len(video) == 0:
        raise PdfgcError(f"{path}: video has no frames")
    return video


def _require_video_stream(path: Path) -> None:
    """Raise PdfgcError unless FFmpeg opens ``path`` and finds a video stream in it."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise PdfgcError(f"{path}: has no video stream")
    except av.FFmpegError as err:
        raise PdfgcError(f"{path}: not a readable video ({_reason(err)})") from err


KEYFRAME_INTERVAL = 25  # one keyframe a second: random access decodes at most 24 extra frames


class VideoWriter:
    """Stream RGB frames into an H.264 (yuv420p) mp4, with an optional mono AAC track.

    ``with VideoWriter(path, fps=25, audio=samples, sample_rate=16000) as w: w.write(frames)``
    Frames go to the encoder as they arrive; the audio is encoded on close. The file appears
    at ``path`` only when the block succeeds (see ``atomic_path``). ``deterministic``:
    the same bytes for the same frames on every run, by turning off x264's macroblock tree,
    which reads memory it never initialised (at 64 px the bytes changed with glibc's
    ``MALLOC_PERTURB_``, and 2-3 of the 496 demo clips differed between two generations).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float = 25.0,
        audio: np.ndarray | None = None,
        sample_rate: int | None = None,
        crf: int = 18,
        deterministic: bool = False,
    ) -> None:
        if not fps > 0:
            raise PdfgcError(f"{path}: frame rate must be positive, got {fps}")
        self.path = Path(path)
        self.fps = Fraction(fps).limit_denominator(10000)
        self.crf = crf
        self.deterministic = deterministic
        self.audio = None if audio is None else _check_audio(audio, sample_rate)
        self.sample_rate = sample_rate
        self.frames_written = 0
        self._container: av.container.OutputContainer | None = None
        self._video: av.VideoStream | None = None
        self._audio: av.AudioStream | None = None
        self._session: AbstractContextManager[VideoWriter] | None = None

    def __enter__(self) -> "VideoWriter":
        self._session = self._open()
        return self._session.__enter__()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        session, self._session = self._session, None
        return session.__exit__(exc_type, exc, tb)

    @contextmanager
    def _open(self) -> Iterator["VideoWriter"]:
        with atomic_path(self.path) as tmp:
            try:
                container = av.open(
                    str(tmp), mode="w", format="mp4", options={"movflags": "+faststart"}
                )
            except av.FFmpegError as err:
                raise PdfgcError(f"{self.path}: cannot write video ({_reason(err)})") from err
            self._container = container
            try:
                yield self
                self._finish()
            except av.FFmpegError as err:
                raise PdfgcError(f"{self.path}: cannot encode video ({_reason(err)})") from err
            finally:
                container.close()
                self._container = self._video = self._audio = None

    def write(self, frames: np.ndarray) -> None:
        """Encode one (H, W, 3) frame or a batch (N, H, W, 3) of uint8 RGB frames."""
        if self._container is None:
            raise RuntimeError("VideoWriter.write called outside its with-block")
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        self._check_frames(frames)
        if self._video is None:
            self._add_streams(height=frames.shape[1], width=frames.shape[2])
        for rgb in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = self.frames_written
            self._container.mux(self._video.encode(frame))
            self.frames_written += 1

    def _check_frames(self, frames: np.ndarray) -> None:
        if frames.ndim != 4 or frames.shape[3] != 3 or frames.dtype != np.uint8:
            raise PdfgcError(
                f"{self.path}: frames must be uint8 (N, H, W, 3), got {frames.dtype} {frames.shape}"
            )
        height, width = frames.shape[1:3]
        if height % 2 or width % 2:
            raise PdfgcError(f"{self.path}: frame size {width}x{height} must be even for H.264")
        if self._video is not None and (height, width) != (self._video.height, self._video.width):
            raise PdfgcError(
                f"{self.path}: frame size {width}x{height} differs from the first frame's "
                f"{self._video.width}x{self._video.height}"
            )

    def _add_streams(self, height: int, width: int) -> None:
        """Add the video (and audio) streams; all must exist before the first packet."""
        self._video = self._container.add_stream("libx264", rate=self.fps)
        self._video.width, self._video.height = width, height
        self._video.pix_fmt = "yuv420p"
        self._video.options = {"crf": str(self.crf)}
        if self.deterministic:
            self._video.options["x264-params"] = "no-mbtree=1"
        self._video.codec_context.gop_size = KEYFRAME_INTERVAL
        if self.audio is not None:
            self._audio = self._container.add_stream("aac", rate=self.sample_rate, layout="mono")

    def _finish(self) -> None:
        """Flush the video encoder and encode the whole audio track."""
        if self._video is None:
            raise PdfgcError(f"{self.path}: no frames were written")
        self._container.mux(self._video.encode(None))
        if self._audio is not None:
            for start in range(0, len(self.audio), AAC_FRAME_SIZE):
                chunk = self.audio[None, start : start + AAC_FRAME_SIZE]  # (1, n)
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
                frame.sample_rate, frame.pts = self.sample_rate, start
                self._container.mux(self._audio.encode(frame))
            self._container.mux(self._audio.encode(None))


def _check_audio(audio: np.ndarray, sample_rate: int | None) -> np.ndarray:
    """Validate a mono track: (N,) float32 clipped to [-1, 1] with a positive sample rate."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise PdfgcError(f"audio track must be mono (N,), got shape {audio.shape}")
    if sample_rate is None or sample_rate <= 0:
        raise PdfgcError(f"audio track needs a positive sample rate, got {sample_rate}")
    return np.ascontiguousarray(np.clip(audio, -1.0, 1.0))


def probe_video(path: str | os.PathLike) -> dict:
    """Decode ``path`` fully and report frames, fps, width, height, has_audio, audio_seconds."""
    path = Path(path)
    if not path.is_file():
        raise PdfgcError(f"{path}: no such video file")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise PdfgcError(f"{path}: has no video stream")
            video = container.streams.video[0]
            streams = [video, *container.streams.audio[:1]]
            frames, samples, rate = 0, 0, 1
            for frame in container.decode(*streams):
                if isinstance(frame, av.VideoFrame):
                    frames += 1
                else:
                    samples, rate = samples + frame.samples, frame.sample_rate
            return {
                "frames": frames,
                "fps": float(video.average_rate or 0.0),
                "width": video.codec_context.width,
                "height": video.codec_context.height,
                "has_audio": len(streams) > 1,
                "audio_seconds": samples / rate,
            }
    except av.FFmpegError as err:
        raise PdfgcError(f"{path}: not a readable video ({_reason(err)})") from err
