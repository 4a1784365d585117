"""The network-level API of inference: encode the appearance, the drivers and the audio,
combine the codes the way the released model does, and render batches of frames.

No file I/O here: inputs are tensors, prepared by :mod:`pdfgc.features`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from pdfgc.networks import build_networks
from pdfgc.networks.checkpoints import load_networks

MOUTH_SCALE = 1.5          # audio mouth codes are amplified ...
MOUTH_SMOOTH_SIGMA = 1.0   # ... then smoothed by a 3-tap Gaussian over time
EYE_SCALE = 1.2
EMOTION_SCALE = 1.2
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


def mean_smooth(codes: torch.Tensor) -> torch.Tensor:
    """Centred 3-frame mean of (N, D) codes; the two end frames average 2 frames."""
    padded = F.pad(codes.t()[None], (1, 1))[0]  # (D, N + 2)
    sums = padded[:, :-2] + padded[:, 1:-1] + padded[:, 2:]
    counts = torch.full((codes.shape[0],), 3.0, dtype=codes.dtype, device=codes.device)
    counts[0] = counts[-1] = 2.0
    if codes.shape[0] == 1:
        counts[0] = 1.0
    return (sums / counts).t()


def compose_codes(mouth: torch.Tensor, emotion: torch.Tensor, eye: torch.Tensor,
                  pose: torch.Tensor, controls: Controls) -> torch.Tensor:
    """Scale, smooth and switch the per-frame codes into the motion part of the style.

    All inputs are whole sequences (N, D) so that smoothing sees every neighbour.
    Returns (N, mouth + emotion + eye + pose) in the generator's order.
    """
    mouth = gaussian_smooth(mouth * MOUTH_SCALE)
    pose = mean_smooth(pose)
    eye = eye * EYE_SCALE
    emotion = emotion * EMOTION_SCALE
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


class TalkingHeadModel(nn.Module):
    """Appearance, motion and audio encoders plus the generator, in eval mode.

    ``fast`` (default) runs the fast modulated convolution on channels-last (NHWC) tensors;
    ``fast=False`` is the plain released formulation (per-sample grouped convolutions, NCHW),
    kept as the reference. ``compile`` wraps each network in ``torch.compile``.
    """

    def __init__(self, nets: nn.ModuleDict, noise_seed: int = DEFAULT_NOISE_SEED,
                 fast: bool = True, compile: bool = False):
        super().__init__()
        self.nets = nets.eval().requires_grad_(False)
        self.memory_format = torch.channels_last if fast else torch.contiguous_format
        for name in ("appearance", "motion"):  # the generator's 5-D weights stay as they are
            self.nets[name].to(memory_format=self.memory_format)
        self.nets.generator.set_impl("fast" if fast else "reference")
        self.image_size = self.nets.generator.image_size
        self.noise_seed = noise_seed
        self.noise = self.nets.generator.make_noise(noise_seed)
        self.run = {name: torch.compile(net, dynamic=False) if compile else net
                    for name, net in self.nets.items()}

    @classmethod
    def from_config(cls, model_cfg: DictConfig, weights: str | None,
                    noise_seed: int = DEFAULT_NOISE_SEED, compile: bool = False
                    ) -> TalkingHeadModel:
        """Build the ``model=`` networks and load ``weights`` (released folder or ``.ckpt``)."""
        nets = build_networks(model_cfg)
        if weights is not None:
            load_networks(weights, nets)
        return cls(nets, noise_seed, compile=compile)

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
