"""The network-level API of inference: encode the appearance, the drivers and the audio,
combine the codes the way the loaded weights expect, and render batches of frames.

How per-frame codes become the generator's motion style depends on where the weights came
from (:attr:`TalkingHeadModel.emotion_window`, set by the loader): the released weights get
the release's post-processing (scaled and smoothed codes), a pdfgc checkpoint the codes its
G was trained on (stage 3: raw mouth, eye and pose codes, the expression code averaged over
a K-frame window). Evaluation and ``infer.py`` both compose through the model.

No media I/O here: inputs are tensors, prepared by :mod:`pdfgc.features`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from pdfgc.networks import build_networks
from pdfgc.networks.checkpoints import load_networks

log = logging.getLogger(__name__)

MOUTH_SCALE = 1.5          # audio mouth codes are amplified ...
MOUTH_SMOOTH_SIGMA = 1.0   # ... then smoothed by a 3-tap Gaussian over time
EYE_SCALE = 1.2
EMOTION_SCALE = 1.2
POSE_SMOOTH_FRAMES = 3     # the release's centred mean over the head pose codes
DEFAULT_EMOTION_WINDOW = 5  # data.emotion_window's default: the expression stage's K
CODES = ("mouth", "emotion", "eye", "pose")  # the generator's order of the motion codes
GAZE_DIMS = (2, 3)         # of the eye code; the other dims (0, 1, 4, 5) are blink
DEFAULT_NOISE_SEED = 20202001


@dataclass(frozen=True)
class Controls:
    """Which factors follow their driver; a disabled factor gets its neutral (zero) code."""

    mouth: bool = True
    blink: bool = True
    gaze: bool = True
    emotion: bool = True
    pose: bool = True


def gaussian_smooth(codes: torch.Tensor, sigma: float = MOUTH_SMOOTH_SIGMA) -> torch.Tensor:
    """3-tap Gaussian over time of (N, D) codes, zero-padded at both ends as released."""
    taps = torch.exp(-torch.tensor([-1.0, 0.0, 1.0]) ** 2 / (2 * sigma**2))
    taps = (taps / taps.sum()).to(codes)
    d = codes.shape[1]
    x = codes.t()[None]  # (1, D, N)
    return F.conv1d(x, taps.expand(d, 1, 3), padding=1, groups=d)[0].t()


def mean_smooth(codes: torch.Tensor, size: int = POSE_SMOOTH_FRAMES) -> torch.Tensor:
    """Centred ``size``-frame mean of (N, D) codes over time: frame i averages frames
    i - size // 2 .. i - size // 2 + size - 1 that exist (the window shrinks at the ends)."""
    n, before = codes.shape[0], size // 2
    pad = (before, size - 1 - before)
    padded = F.pad(codes.t()[None], pad)[0]  # (D, N + size - 1)
    ones = F.pad(torch.ones(1, n, dtype=codes.dtype, device=codes.device), pad)[0]
    sums = sum((padded[:, i:i + n] for i in range(1, size)), padded[:, :n])
    counts = sum((ones[i:i + n] for i in range(1, size)), ones[:n])
    return (sums / counts).t()


def compose_codes(mouth: torch.Tensor, emotion: torch.Tensor, eye: torch.Tensor,
                  pose: torch.Tensor, controls: Controls, emotion_window: int | None = None
                  ) -> torch.Tensor:
    """Combine and switch the per-frame codes into the motion part of the style.

    ``emotion_window`` None is the release's post-processing, tuned for its weights: mouth
    x 1.5 then a 3-tap Gaussian, eye and emotion x 1.2, pose a centred 3-frame mean. An int K
    gives the codes a pdfgc checkpoint's G was trained on: mouth, eye and pose raw, emotion
    the centred K-frame mean (:func:`mean_smooth`). All inputs are whole sequences (N, D), so
    that smoothing sees every neighbour. Returns (N, mouth + emotion + eye + pose) in the
    generator's order.
    """
    if emotion_window is None:
        mouth = gaussian_smooth(mouth * MOUTH_SCALE)
        pose = mean_smooth(pose)
        eye = eye * EYE_SCALE
        emotion = emotion * EMOTION_SCALE
    else:
        emotion = mean_smooth(emotion, emotion_window)
    if not controls.mouth:
        mouth = torch.zeros_like(mouth)
    if not controls.pose:
        pose = torch.zeros_like(pose)
    if not controls.emotion:
        emotion = torch.zeros_like(emotion)
    gaze = torch.zeros(eye.shape[1], dtype=torch.bool, device=eye.device)
    gaze[list(GAZE_DIMS)] = True
    eye = eye * torch.where(gaze, float(controls.gaze), float(controls.blink))
    return torch.cat([mouth, emotion, eye, pose], dim=1)


def trained_emotion_window(ckpt: str | Path) -> int:
    """K of the expression window a pdfgc checkpoint's G was trained with: ``data.emotion_window``
    of the run config saved in its ``hyper_parameters``, else ``DEFAULT_EMOTION_WINDOW``."""
    state = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
    params = state.get("hyper_parameters") or {}
    params = params.get("cfg", params)
    window = (params.get("data") or {}).get("emotion_window")
    if window is None:
        log.info("%s: no data.emotion_window saved with it; composing with K = %d", ckpt,
                 DEFAULT_EMOTION_WINDOW)
        return DEFAULT_EMOTION_WINDOW
    return int(window)


class TalkingHeadModel(nn.Module):
    """Appearance, motion and audio encoders plus the generator, in eval mode.

    ``fast`` (default) runs the fast modulated convolution on channels-last (NHWC) tensors;
    ``fast=False`` is the plain released formulation (per-sample grouped convolutions, NCHW),
    kept as the reference. ``compile`` wraps each network in ``torch.compile``.
    ``emotion_window`` says how :meth:`compose` combines codes (see :func:`compose_codes`):
    None for the released weights, K for a pdfgc checkpoint trained with a K-frame window.
    """

    def __init__(self, nets: nn.ModuleDict, noise_seed: int = DEFAULT_NOISE_SEED,
                 fast: bool = True, compile: bool = False, emotion_window: int | None = None):
        super().__init__()
        self.nets = nets.eval().requires_grad_(False)
        self.memory_format = torch.channels_last if fast else torch.contiguous_format
        for name in ("appearance", "motion"):  # the generator's 5-D weights stay as they are
            self.nets[name].to(memory_format=self.memory_format)
        self.nets.generator.set_impl("fast" if fast else "reference")
        self.image_size = self.nets.generator.image_size
        self.noise_seed = noise_seed
        self.noise = self.nets.generator.make_noise(noise_seed)
        self.emotion_window = emotion_window
        self.run = {name: torch.compile(net, dynamic=False) if compile else net
                    for name, net in self.nets.items()}

    @classmethod
    def from_config(cls, model_cfg: DictConfig, weights: str | None,
                    noise_seed: int = DEFAULT_NOISE_SEED, compile: bool = False
                    ) -> TalkingHeadModel:
        """Build the ``model=`` networks and load ``weights``: a released folder (codes
        composed as released) or a pdfgc ``.ckpt`` (codes composed as its G was trained);
        None keeps the random weights, composed as released."""
        nets = build_networks(model_cfg)
        window = None
        if weights is not None:
            load_networks(weights, nets)
            if not Path(weights).is_dir():
                window = trained_emotion_window(weights)
        return cls(nets, noise_seed, compile=compile, emotion_window=window)

    def compose(self, codes: Mapping[str, torch.Tensor], controls: Controls) -> torch.Tensor:
        """Whole-sequence codes {mouth, emotion, eye, pose: (N, D)} -> motion styles (N, M),
        composed the way these weights expect (:func:`compose_codes`)."""
        return compose_codes(*(codes[name] for name in CODES), controls, self.emotion_window)

    def to(self, *args, **kwargs) -> TalkingHeadModel:  # keep the noise maps on the device
        super().to(*args, **kwargs)
        device = next(self.parameters()).device
        self.noise = [n.to(device) for n in self.noise]
        return self

    @torch.no_grad()
    def encode_appearance(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3, H, W) reference images -> their mean {"vector": (1, D), "map": (1, C, s, s)}."""
        out = self.run["appearance"](self._layout(images))
        return {k: v.mean(dim=0, keepdim=True) for k, v in out.items()}

    @torch.no_grad()
    def encode_motion(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3, H, W) driver frames -> {"pose", "eye", "emotion"} codes, (B, D) each."""
        out = self.run["motion"](self._layout(frames))
        return {k: out[k] for k in ("pose", "eye", "emotion")}

    @torch.no_grad()
    def encode_audio(self, mel_windows: torch.Tensor) -> torch.Tensor:
        """(B, 1, 80, 20) mel windows -> audio mouth codes (B, D)."""
        return self.run["audio"](mel_windows)["mouth"]

    @torch.no_grad()
    def render(self, appearance: dict[str, torch.Tensor], motion_codes: torch.Tensor
               ) -> torch.Tensor:
        """appearance (from encode_appearance) + (B, motion) codes -> frames (B, 3, H, W)."""
        b = motion_codes.shape[0]
        style = torch.cat([appearance["vector"].expand(b, -1), motion_codes], dim=1)
        appearance_map = self._layout(appearance["map"].expand(b, -1, -1, -1))
        return self.run["generator"](style, appearance_map, self.noise)

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        """NHWC on the fast path: oneDNN (CPU) and cuDNN run convolutions fastest on it."""
        return x.contiguous(memory_format=self.memory_format)
