"""How evaluation renders: the inference model's API applied to test batches and whole clips.

Both streams render exactly as ``infer.py`` does (:class:`TalkingHeadModel`'s encoders,
``compose``, which combines the codes as the loaded weights expect, and ``render``):

* a :class:`FrameBatch` renders each target frame from the appearance of its source frame
  (self-reconstruction) and, for cross-identity, of a partner sample of another identity;
  the mouth code comes from the audio, pose / eye / emotion from the target's own frames. The
  codes of the K-frame window around the target are composed as the sequence they are, so
  the temporal smoothing of inference applies (for a pdfgc checkpoint: the expression code
  averaged over the window, as in training), and the centre frame is rendered;
* a :class:`ClipSample` renders a whole clip: output frame ``k`` from mel window ``k`` and
  from the clip's frame ``k + 2`` as the pose / eye / emotion driver, so it is compared with
  real frame ``k + 2`` and the audio from ``2 / 25`` s on (the inference time line).

Parts only some metrics need (cross-identity renders, the codes the probes read) are made
on first use and kept, as are per-sample results several metrics share (``cache``).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cached_property

import numpy as np
import torch

from pdfgc.data.datasets import ClipIndex
from pdfgc.data.manifest import ClipRecord
from pdfgc.features import (
    FPS,
    LEAD_FRAMES,
    SAMPLE_RATE,
    audio_offset_samples,
    mel_windows,
    num_output_frames,
    prepare_images,
)
from pdfgc.inference.model import Controls, TalkingHeadModel
from pdfgc.media import FrameSource, load_audio
from pdfgc.networks.generator import MOTION_CODES

PER_FRAME_LABELS = ("landmarks", "pose", "blink", "gaze", "factors")
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640


def partner_indices(identity: torch.Tensor) -> torch.Tensor:
    """For each sample, the next one (cyclically) of another identity, or simply the next
    one when the whole batch is one identity; (B,) long."""
    b = identity.shape[0]
    ids = identity.tolist()
    partners = []
    for i in range(b):
        others = [(i + step) % b for step in range(1, b) if ids[(i + step) % b] != ids[i]]
        partners.append(others[0] if others else (i + 1) % b)
    return torch.tensor(partners, dtype=torch.long, device=identity.device)


class EvalRenderer:
    """Renders test samples with a :class:`TalkingHeadModel` on its device, ``chunk`` frames
    at a time; ``cross`` says whether cross-identity renders are made."""

    def __init__(self, model: TalkingHeadModel, chunk: int = 16, cross: bool = True,
                 controls: Controls | None = None):
        self.model = model
        self.device = next(model.parameters()).device
        self.chunk = chunk
        self.cross = cross
        self.controls = controls or Controls()

    def appearance(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-sample appearance of (B, 3, S, S) images: {"vector": (B, A), "map": (B, C, s, s)}."""
        parts = [self.model.encode_appearance(image[None]) for image in images]
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    def window_codes(self, window: torch.Tensor, window_mel: torch.Tensor
                     ) -> dict[str, torch.Tensor]:
        """Raw codes of K-frame windows: mouth from the mel windows, the rest from the frames.

        window (B, K, 3, S, S), window_mel (B, K, 1, 80, 20) -> {name: (B, K, D)}.
        """
        b, k = window.shape[:2]
        motion = self.chunked(self.model.encode_motion, window.flatten(0, 1))
        mouth = self.chunked(self.model.encode_audio, window_mel.flatten(0, 1))
        codes = {"mouth": mouth, **motion}
        # (B*K, D) -> (B, K, D)
        return {name: codes[name].reshape(b, k, -1) for name in MOTION_CODES}

    def render_windows(self, appearance: dict[str, torch.Tensor],
                       codes: dict[str, torch.Tensor]) -> torch.Tensor:
        """The centre frame of each window, (B, 3, S, S): every window's codes composed as
        the sequence they are, then rendered with that sample's appearance."""
        centre = codes["mouth"].shape[1] // 2
        motion = torch.stack([
            self.model.compose({name: codes[name][i] for name in MOTION_CODES},
                               self.controls)[centre]
            for i in range(codes["mouth"].shape[0])])
        return self.model.render(appearance, motion)

    def frame_batch(self, data: dict[str, torch.Tensor]) -> FrameBatch:
        """Render a batch of the DataModule (keys of ``pdfgc.data.datasets``)."""
        return FrameBatch(self, {k: v.to(self.device) for k, v in data.items()})

    def clip_sample(self, index: ClipIndex, clip: int, cross_clip: int | None,
                    crop: bool, max_frames: int | None = None) -> ClipSample:
        """Render record ``clip`` of ``index`` as inference would render its audio with its
        own frames as drivers; ``cross_clip`` gives the cross-identity appearance."""
        return ClipSample(self, index, clip, cross_clip, crop, max_frames)

    def render_clip(self, appearance: dict[str, torch.Tensor], codes: dict[str, torch.Tensor]
                    ) -> torch.Tensor:
        """Frames (N, 3, S, S) of whole-clip codes {name: (N, D)}, composed as inference does."""
        motion = self.model.compose(codes, self.controls)
        return torch.cat(list(self.model.render_frames(appearance, motion, self.chunk)))

    def chunks(self, n: int) -> Iterator[slice]:
        for start in range(0, n, self.chunk):
            yield slice(start, min(n, start + self.chunk))

    def chunked(self, encode, inputs: torch.Tensor):
        """Run ``encode`` over ``inputs`` in chunks; concatenates tensors or dicts of them."""
        parts = [encode(inputs[s]) for s in self.chunks(len(inputs))]
        if isinstance(parts[0], dict):
            return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        return torch.cat(parts)


class FrameBatch:
    """One rendered test batch. Images are (B, 3, S, S) in [-1, 1] on the model's device.

    ``data`` is the loader's batch (``target``, ``source``, labels, ``factors`` ...);
    ``fake`` renders each target from its own source; ``cross`` renders it with the
    appearance of ``cross_source`` (the source of ``partner``, another identity), or is None
    when cross-identity rendering is off.
    """

    def __init__(self, renderer: EvalRenderer, data: dict[str, torch.Tensor]):
        self.renderer = renderer
        self.data = data
        self.cache: dict = {}

    @cached_property
    def codes(self) -> dict[str, torch.Tensor]:
        """Raw render codes of the target's window, {name: (B, K, D)}."""
        return self.renderer.window_codes(self.data["window"], self.data["window_mel"])

    @cached_property
    def appearance(self) -> dict[str, torch.Tensor]:
        return self.renderer.appearance(self.data["source"])

    @cached_property
    def fake(self) -> torch.Tensor:
        return self.renderer.render_windows(self.appearance, self.codes)

    @cached_property
    def partner(self) -> torch.Tensor:
        return partner_indices(self.data["identity"])

    @cached_property
    def cross_source(self) -> torch.Tensor | None:
        return self.data["source"][self.partner] if self.renderer.cross else None

    @cached_property
    def cross(self) -> torch.Tensor | None:
        if self.cross_source is None:
            return None
        return self.renderer.render_windows(self.renderer.appearance(self.cross_source),
                                            self.codes)

    def swapped(self, name: str) -> torch.Tensor:
        """Self-reconstructions whose ``name`` code (mouth, pose, eye, emotion) comes from
        the partner sample's window instead (made once per batch)."""
        if ("swapped", name) not in self.cache:
            codes = {**self.codes, name: self.codes[name][self.partner]}
            self.cache[("swapped", name)] = self.renderer.render_windows(self.appearance, codes)
        return self.cache[("swapped", name)]

    @cached_property
    def probe_codes(self) -> dict[str, torch.Tensor]:
        """The learned codes of each target frame, (B, D) each: ``appearance`` (vector),
        ``motion`` (the unified feature), ``lip``, ``pose``, ``eye``, ``expression`` (the
        motion encoder's heads) and ``lip_audio`` (the audio encoder's mouth code)."""
        nets = self.renderer.model.nets
        with torch.no_grad():
            motion = nets.motion(self.data["target"])
            vector = nets.appearance(self.data["target"])["vector"]
        centre = self.codes["mouth"].shape[1] // 2
        return {"appearance": vector, "motion": motion["feature"], "lip": motion["mouth"],
                "lip_audio": self.codes["mouth"][:, centre], "pose": motion["pose"],
                "eye": motion["eye"], "expression": motion["emotion"]}

    def images(self, key: str) -> torch.Tensor | None:
        """``fake``, ``cross``, ``cross_source``, ``swapped_<code>`` (see :meth:`swapped`) or a
        key of ``data`` (``target``, ``source``)."""
        if key in ("fake", "cross", "cross_source"):
            return getattr(self, key)
        if key.startswith("swapped_"):
            return self.swapped(key.removeprefix("swapped_"))
        return self.data[key]


class ClipSample:
    """One test clip rendered whole (see :meth:`EvalRenderer.clip_sample`).

    ``real`` (N, 3, S, S) are the clip's frames 2 .. N + 1 (the drivers and the ground truth),
    ``fake`` the self-reconstruction, ``cross`` the same codes with another identity's
    appearance (None when off or without another identity); ``audio`` (N * 640,) float32 at
    16 kHz starts at the time of real frame 0; ``audio_codes`` (N, D) are the audio mouth
    codes; ``labels`` the clip's per-frame labels of the same N frames.
    """

    def __init__(self, renderer: EvalRenderer, index: ClipIndex, clip: int,
                 cross_clip: int | None, crop: bool, max_frames: int | None):
        self.renderer = renderer
        self.record: ClipRecord = index.records[clip]
        self.cache: dict = {}
        self._index, self._cross_clip, self._crop = index, cross_clip, crop
        labels = index.labels(clip)
        n = min(num_output_frames(len(labels["mel"])), self.record.frames - LEAD_FRAMES)
        n = n if max_frames is None else min(n, max_frames)
        self.labels = {k: labels[k][LEAD_FRAMES:LEAD_FRAMES + n]
                       for k in PER_FRAME_LABELS if k in labels}
        self.real = self._frames(clip, range(LEAD_FRAMES, LEAD_FRAMES + n))
        mel = torch.from_numpy(mel_windows(labels["mel"], 0, n)).to(renderer.device)
        self.audio_codes = renderer.chunked(renderer.model.encode_audio, mel)
        self.codes = {"mouth": self.audio_codes,
                      **renderer.chunked(renderer.model.encode_motion, self.real)}
        appearance = renderer.appearance(self._frames(clip, [0]))
        self.fake = renderer.render_clip(appearance, self.codes)
        start, length = audio_offset_samples(), n * SAMPLES_PER_FRAME
        samples = load_audio(index.video_path(clip), SAMPLE_RATE)[start:start + length]
        self.audio = np.pad(samples, (0, length - len(samples))).astype(np.float32)

    def __len__(self) -> int:
        return len(self.real)

    @cached_property
    def cross(self) -> torch.Tensor | None:
        if not self.renderer.cross or self._cross_clip is None:
            return None
        appearance = self.renderer.appearance(self._frames(self._cross_clip, [0]))
        return self.renderer.render_clip(appearance, self.codes)

    def images(self, key: str) -> torch.Tensor | None:
        """``real``, ``fake`` or ``cross``."""
        return getattr(self, key)

    def _frames(self, clip: int, indices) -> torch.Tensor:
        pixels = FrameSource(self._index.video_path(clip)).read(list(indices))  # (n, H, W, 3)
        prepared = prepare_images(pixels, self.renderer.model.image_size, self._crop)
        return torch.from_numpy(prepared).to(self.renderer.device)


def select_clips(index: ClipIndex, split: str, count: int | None
                 ) -> list[tuple[int, int | None]]:
    """Up to ``count`` clips of ``split`` taken round-robin over its identities, each with a
    clip of the next identity for cross-identity appearance (None with one identity)."""
    identities = index.identities(split)
    per_identity = [index.clips(split, name) for name in identities]
    order = [(n, clips[k]) for k in range(max(map(len, per_identity), default=0))
             for n, clips in enumerate(per_identity) if k < len(clips)]
    order = order if count is None else order[:count]
    pairs = []
    for n, clip in order:
        other = per_identity[(n + 1) % len(identities)][0] if len(identities) > 1 else None
        pairs.append((clip, other))
    return pairs
