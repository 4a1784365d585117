"""LSE-C and LSE-D: lip-sync confidence and distance by SyncNet, computed as syncnet_python
(joonson/syncnet_python, ``SyncNetInstance.evaluate``) computes them.

* SyncNet: its architecture and state-dict names, so the public ``syncnet_v2.model`` loads
  from a local file (``weights.syncnet``; nothing is downloaded).
* Video: every window of 5 consecutive frames at 224 x 224, BGR, 0..255 (syncnet_python reads
  frames with OpenCV); our frames are face crops already, upscaled when the model is smaller.
* Audio: 13 MFCCs at 100 Hz as python_speech_features computes them by default (reimplemented
  here in numpy), 20 rows (0.2 s) per window, window ``i`` starting at row ``4 i``.
* Offset search: mean over windows of the distance between video window ``i`` and audio
  window ``i - offset`` for offsets -15..15 (missing audio windows count as zeros, as
  released); LSE-D is the smallest mean distance, LSE-C (confidence) the median minus it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.fft
import torch
import torch.nn.functional as F
from torch import nn

from pdfgc.features import FPS, SAMPLE_RATE
from pdfgc.io import check_state_dict, read_state_dict
from pdfgc.metrics.landmarks import sample_faces
from pdfgc.metrics.registry import (
    Metric,
    MetricContext,
    MetricResult,
    RunningMean,
    register,
)
from pdfgc.metrics.render import ClipSample

MAX_OFFSET = 15
VIDEO_WINDOW = 5          # frames per SyncNet video input
AUDIO_WINDOW = 20         # MFCC rows per SyncNet audio input (0.2 s)
MFCC_PER_FRAME = 4        # 100 Hz MFCC rows per 25 fps video frame
DISTANCE_EPS = 1e-6       # torch's pairwise_distance adds it to the difference
# python_speech_features.mfcc defaults
PREEMPHASIS, WINDOW, STEP, NFFT, FILTERS, CEPSTRA, LIFTER = 0.97, 400, 160, 512, 26, 13, 22
INT16_SCALE = 32768.0     # syncnet_python reads 16-bit PCM
SYNC_MODES = {"self": "fake", "real": "real", "cross": "cross"}  # mode -> ClipSample images


def _conv_block(conv: nn.Module, norm: nn.Module, pool: nn.Module | None = None) -> list[nn.Module]:
    """conv, norm, ReLU and an optional pool: the repeating unit of SyncNet's towers."""
    return [conv, norm, nn.ReLU(inplace=True), *([pool] if pool is not None else [])]


def _embedding_head(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, dim))


class SyncNet(nn.Module):
    """SyncNet's audio and lip towers (syncnet_python's ``S``), embeddings of ``dim``."""

    def __init__(self, dim: int = 1024):
        super().__init__()

        def conv2(cin, cout, pool=None, **kw):
            return _conv_block(nn.Conv2d(cin, cout, **kw), nn.BatchNorm2d(cout), pool)

        def conv3(cin, cout, pool=None, **kw):
            return _conv_block(nn.Conv3d(cin, cout, **kw), nn.BatchNorm3d(cout), pool)

        self.netcnnaud = nn.Sequential(
            *conv2(1, 64, nn.MaxPool2d(1, 1), kernel_size=3, padding=1),
            *conv2(64, 192, nn.MaxPool2d(3, stride=(1, 2)), kernel_size=3, padding=1),
            *conv2(192, 384, kernel_size=3, padding=1),
            *conv2(384, 256, kernel_size=3, padding=1),
            *conv2(256, 256, nn.MaxPool2d(3, stride=2), kernel_size=3, padding=1),
            *conv2(256, 512, kernel_size=(5, 4)),
        )
        self.netfcaud = _embedding_head(dim)
        self.netfclip = _embedding_head(dim)
        pool = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2))
        self.netcnnlip = nn.Sequential(
            *conv3(3, 96, pool, kernel_size=(5, 7, 7), stride=(1, 2, 2)),
            *conv3(96, 256, nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
                   kernel_size=(1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)),
            *conv3(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)),
            *conv3(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)),
            *conv3(256, 256, nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2)), kernel_size=(1, 3, 3),
                   padding=(0, 1, 1)),
            *conv3(256, 512, kernel_size=(1, 6, 6)),
        )

    def forward_audio(self, mfcc: torch.Tensor) -> torch.Tensor:
        """MFCC windows (B, 1, 13, 20) -> (B, dim)."""
        return self.netfcaud(self.netcnnaud(mfcc).flatten(1))  # (B, 512, 1, 1) -> (B, 512)

    def forward_video(self, frames: torch.Tensor) -> torch.Tensor:
        """5-frame windows (B, 3, 5, 224, 224), BGR 0..255 -> (B, dim)."""
        return self.netfclip(self.netcnnlip(frames).flatten(1))  # (B, 512, 1, 1, 1) -> (B, 512)


def load_syncnet(path) -> SyncNet:
    """SyncNet with the weights of a syncnet_python state-dict file, in eval mode."""
    net = SyncNet()
    state = read_state_dict(path)
    counters = {k: v for k, v in net.state_dict().items() if k.endswith("num_batches_tracked")}
    state = {**counters, **state}  # files of older torch lack batch-norm counters
    check_state_dict(str(path), net, state)
    net.load_state_dict(state)
    return net.eval().requires_grad_(False)


def _hz_to_mel(hz):
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel):
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


@lru_cache(maxsize=1)
def _mfcc_filters() -> np.ndarray:
    """python_speech_features' triangular mel filters (26, 257), 0 .. 8 kHz."""
    mels = np.linspace(_hz_to_mel(0.0), _hz_to_mel(SAMPLE_RATE / 2), FILTERS + 2)
    bins = np.floor((NFFT + 1) * _mel_to_hz(mels) / SAMPLE_RATE)
    bank = np.zeros((FILTERS, NFFT // 2 + 1))
    for j, (low, mid, high) in enumerate(zip(bins, bins[1:], bins[2:], strict=False)):
        rise, fall = np.arange(int(low), int(mid)), np.arange(int(mid), int(high))
        bank[j, rise] = (rise - low) / (mid - low)
        bank[j, fall] = (high - fall) / (high - mid)
    return bank


def mfcc(samples: np.ndarray) -> np.ndarray:
    """13 MFCCs (T, 13) at 100 Hz of 16 kHz audio in [-1, 1], as python_speech_features'
    ``mfcc`` with its defaults on 16-bit samples: pre-emphasis 0.97, 25 ms rectangular frames
    every 10 ms (the last zero-padded), 512-point power spectrum, 26 mel filters, log,
    orthonormal DCT-II, liftering 22, and c0 replaced by the log frame energy."""
    signal = np.asarray(samples, dtype=np.float64) * INT16_SCALE
    signal = np.append(signal[:1], signal[1:] - PREEMPHASIS * signal[:-1])
    count = 1 if len(signal) <= WINDOW else 1 + int(np.ceil((len(signal) - WINDOW) / STEP))
    signal = np.pad(signal, (0, (count - 1) * STEP + WINDOW - len(signal)))
    frames = signal[np.arange(WINDOW)[None] + STEP * np.arange(count)[:, None]]  # (T, 400)
    power = np.abs(np.fft.rfft(frames, NFFT)) ** 2 / NFFT  # (T, 257)
    eps = np.finfo(np.float64).eps
    energy = np.where(power.sum(axis=1) == 0, eps, power.sum(axis=1))
    bands = power @ _mfcc_filters().T
    bands = np.where(bands == 0, eps, bands)
    cepstra = scipy.fft.dct(np.log(bands), type=2, axis=1, norm="ortho")[:, :CEPSTRA]
    cepstra *= 1.0 + (LIFTER / 2.0) * np.sin(np.pi * np.arange(CEPSTRA) / LIFTER)
    cepstra[:, 0] = np.log(energy)
    return cepstra


@dataclass(frozen=True)
class SyncScore:
    """The result of an offset search: ``offset`` > 0 means video frame i matches the audio
    of frame i - offset (the sound comes first); ``distance`` is the smallest mean distance
    (LSE-D), ``confidence`` the median mean distance minus it (LSE-C)."""

    offset: int
    distance: float
    confidence: float


def sync_distances(video: torch.Tensor, audio: torch.Tensor, max_offset: int = MAX_OFFSET
                   ) -> torch.Tensor:
    """Distances (N, 2 m + 1) between video feature i (N, D) and audio feature
    i + j - m (N, D), zero features outside the clip, m = ``max_offset``."""
    padded = F.pad(audio, (0, 0, max_offset, max_offset))  # (N + 2m, D)
    windows = padded.unfold(0, 2 * max_offset + 1, 1)  # (N, D, 2m + 1)
    return (video[:, :, None] - windows + DISTANCE_EPS).norm(dim=1)


def sync_score(video: torch.Tensor, audio: torch.Tensor, max_offset: int = MAX_OFFSET
               ) -> SyncScore:
    """The offset search of syncnet_python over aligned features (N, D)."""
    mean = sync_distances(video.float(), audio.float(), max_offset).mean(dim=0)  # (2m + 1,)
    smallest, best = torch.min(mean, dim=0)
    return SyncScore(offset=max_offset - int(best), distance=float(smallest),
                     confidence=float(torch.median(mean) - smallest))


class SyncTally:
    """Sync scores of clips averaged per mode (self, real, cross)."""

    def __init__(self) -> None:
        self.means: dict[tuple[str, str], RunningMean] = {}

    def add(self, mode: str, score: SyncScore) -> None:
        for part, value in (("c", score.confidence), ("d", score.distance),
                            ("offset", abs(score.offset))):
            self.means.setdefault((mode, part), RunningMean()).add(value)

    def results(self, name: str) -> dict[str, float]:
        """``<name>/c``, ``/d`` and ``/offset`` (mean absolute offset, frames) of the
        self-reconstructions; ``/c_<mode>`` and ``/d_<mode>`` of the other modes."""
        return {f"{name}/{part}" if mode == "self" else f"{name}/{part}_{mode}": mean.value
                for (mode, part), mean in self.means.items()
                if mode == "self" or part != "offset"}


class SyncNetScorer:
    """SyncNet features of frames and audio, and their sync score, ``batch`` windows at once."""

    def __init__(self, net: SyncNet, device: torch.device, batch: int = 20,
                 max_offset: int = MAX_OFFSET):
        self.net = net.to(device)
        self.device, self.batch, self.max_offset = device, batch, max_offset

    @torch.no_grad()
    def video_features(self, faces: np.ndarray, count: int) -> torch.Tensor:
        """Features (count, D) of the 5-frame windows starting at frames 0 .. count - 1 of
        224 px RGB uint8 frames (N, 224, 224, 3)."""
        bgr = torch.from_numpy(faces[..., ::-1].copy()).to(self.device).float()
        clip = bgr.permute(3, 0, 1, 2)  # (3, N, 224, 224)
        features = []
        for start in range(0, count, self.batch):
            starts = range(start, min(count, start + self.batch))
            windows = torch.stack([clip[:, i:i + VIDEO_WINDOW] for i in starts])
            features.append(self.net.forward_video(windows))
        return torch.cat(features)

    @torch.no_grad()
    def audio_features(self, samples: np.ndarray, count: int) -> torch.Tensor:
        """Features (count, D) of the 0.2 s MFCC windows of frames 0 .. count - 1."""
        coefficients = torch.from_numpy(mfcc(samples).T.copy()).float().to(self.device)
        features = []
        for start in range(0, count, self.batch):
            windows = torch.stack([
                coefficients[None, :, MFCC_PER_FRAME * i:MFCC_PER_FRAME * i + AUDIO_WINDOW]
                for i in range(start, min(count, start + self.batch))])  # (b, 1, 13, 20)
            features.append(self.net.forward_audio(windows))
        return torch.cat(features)

    @staticmethod
    def windows(frames: int, samples: int) -> int:
        """Windows syncnet_python scores: the shorter of video and audio, minus 5 frames."""
        return min(frames, samples // (SAMPLE_RATE // FPS)) - VIDEO_WINDOW


@register
class LSE(Metric):
    """``lse/c``, ``lse/d`` (self-reconstructions), ``lse/offset`` (mean absolute offset,
    frames), and the same confidence and distance for the real clips (``_real``, the
    reference) and the cross-identity renders (``_cross``); averaged over clips."""

    name = "lse"
    stream = "clips"
    outside = {"syncnet": "syncnet"}

    def __init__(self, ctx: MetricContext, max_offset: int = MAX_OFFSET, batch: int = 20):
        super().__init__(ctx)
        net = load_syncnet(self.outside_file(ctx.weights, "syncnet"))
        self.scorer = SyncNetScorer(net, ctx.device, batch, max_offset)
        self.tally = SyncTally()

    def update(self, clip: ClipSample) -> None:
        count = SyncNetScorer.windows(len(clip), len(clip.audio))
        if count < 1:
            return
        audio = self.scorer.audio_features(clip.audio, count)
        for mode, key in SYNC_MODES.items():
            if clip.images(key) is None:
                continue
            video = self.scorer.video_features(sample_faces(clip, key), count)
            self.tally.add(mode, sync_score(video, audio, self.scorer.max_offset))

    def compute(self) -> MetricResult:
        return MetricResult(self.tally.results(self.name))
