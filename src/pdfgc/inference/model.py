"""The network-level API of inference: encode the appearance, the drivers and the audio,
combine the codes the way the loaded weights expect, and render batches of frames.

How per-frame codes become the generator's motion style depends on where the weights came
from (:attr:`TalkingHeadModel.emotion_window`, set by the loader): the released weights get
the release's post-processing (scaled and smoothed codes), a pdfgc checkpoint the codes its
G was trained on (stage 3: raw mouth, eye and pose codes, the expression code averaged over
a K-frame window). Evaluation and ``infer.py`` both compose through the model. A pdfgc
checkpoint whose heads were regressed to head angles, blink and gaze
(:attr:`TalkingHeadModel.regression`) can also be given those quantities directly
(:class:`Dials`).

No media I/O here: inputs are tensors, prepared by :mod:`pdfgc.features`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from pdfgc.errors import PdfgcError, check_choice
from pdfgc.io import read_state_dict
from pdfgc.networks import build_networks
from pdfgc.networks.checkpoints import check_weights_path, load_networks
from pdfgc.networks.generator import MOTION_CODES
from pdfgc.networks.motion import GAZE_DIMS

log = logging.getLogger(__name__)

MOUTH_SCALE = 1.5          # audio mouth codes are amplified ...
MOUTH_SMOOTH_SIGMA = 1.0   # ... then smoothed by a 3-tap Gaussian over time
EYE_SCALE = 1.2
EMOTION_SCALE = 1.2
POSE_SMOOTH_FRAMES = 3     # the release's centred mean over the head pose codes
DEFAULT_EMOTION_WINDOW = 5  # data.emotion_window's default: the expression stage's K
DEFAULT_NOISE_SEED = 20202001
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # autocast dtypes
DIAL_MODES = ("driver", "set", "offset")
ANGLES = ("yaw", "pitch", "roll")  # the first three of the pose label, in degrees


@dataclass(frozen=True)
class Controls:
    """Which factors follow their driver; a disabled factor gets its neutral (zero) code."""

    mouth: bool = True
    blink: bool = True
    gaze: bool = True
    emotion: bool = True
    pose: bool = True


@dataclass(frozen=True)
class Regression:
    """What the heads of a pdfgc checkpoint were regressed to, in its heads run
    (:func:`trained_regression`); None where a quantity was not regressed.

    ``pose_scale``: the pose code regressed (yaw, pitch, roll in degrees, tx, ty, tz) times
    these; ``blink_dims``: the eye code dims regressed to eye closure (0 open,
    1 closed); ``gaze_dims``: the two eye code dims that regressed the pupil offset (x, y in
    [-1, 1], > 0 to the image right / down).
    """

    pose_scale: tuple[float, ...] | None = None
    blink_dims: tuple[int, ...] | None = None
    gaze_dims: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Dials:
    """Head angles, blink and gaze given as numbers, for weights with a :class:`Regression`.

    ``pose`` (yaw, pitch, roll, in degrees) and ``eyes`` (blink, gaze_x, gaze_y, in the
    regressed units) each take a mode of ``DIAL_MODES``: ``driver`` leaves the driver's codes
    as they are, ``set`` gives the values over the whole clip, ``offset`` adds them to the
    driver's.
    """

    pose: str = "driver"
    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0
    eyes: str = "driver"
    blink: float = 0.0
    gaze_x: float = 0.0
    gaze_y: float = 0.0


def apply_dials(pose: torch.Tensor, eye: torch.Tensor, dials: Dials,
                regression: Regression | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame pose and eye codes (N, D) with ``dials`` applied in the units the heads
    were regressed to: the angles become pose dims 0-2 (degrees x ``pose_scale``); blink moves
    every blink dim by the same amount, so that their mean is (or moves by) the value; gaze
    becomes the gaze dims. Raises a :class:`PdfgcError` where the weights have no such
    meaning."""
    for group in ("pose", "eyes"):
        check_choice(f"dials.{group}", getattr(dials, group), DIAL_MODES)
    regression = regression or Regression()
    if dials.pose != "driver":
        if regression.pose_scale is None:
            raise PdfgcError("these weights' pose code was not regressed to head angles; "
                             "numeric pose needs a pdfgc checkpoint whose heads stage had "
                             "loss.pose > 0")
        angles = pose.new_tensor([getattr(dials, a) for a in ANGLES])
        pose = pose.clone()
        pose[:, :3] = _dial(pose[:, :3], angles * pose.new_tensor(regression.pose_scale[:3]),
                            dials.pose)
    if dials.eyes != "driver":
        if regression.blink_dims is None and regression.gaze_dims is None:
            raise PdfgcError("these weights' eye code was not regressed to blink or gaze; "
                             "numeric eyes need a pdfgc checkpoint whose heads stage had "
                             "loss.blink or loss.gaze > 0")
        eye = eye.clone()
        if regression.blink_dims is not None:
            dims = list(regression.blink_dims)
            mean = eye[:, dims].mean(dim=1, keepdim=True)
            eye[:, dims] += _dial(mean, eye.new_tensor(dials.blink), dials.eyes) - mean
        if regression.gaze_dims is not None:
            dims = list(regression.gaze_dims)
            eye[:, dims] = _dial(eye[:, dims], eye.new_tensor([dials.gaze_x, dials.gaze_y]),
                                 dials.eyes)
    return pose, eye


def _dial(codes: torch.Tensor, value: torch.Tensor, mode: str) -> torch.Tensor:
    """``value`` over every frame (``set``) or added to each frame's codes (``offset``)."""
    return value.expand_as(codes) if mode == "set" else codes + value


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


def saved_config(ckpt: str | Path) -> dict:
    """The run config saved in a pdfgc checkpoint's ``hyper_parameters`` ({} if none); read
    once per process for a given file version (the loader, the dials and the app all ask)."""
    path = Path(ckpt).resolve()
    if not path.is_file():
        read_state_dict(path)  # its one-line error
    stat = path.stat()  # a rewritten file (a new inode, time or size) is read again
    return dict(_saved_config(path, stat.st_ino, stat.st_mtime_ns, stat.st_size))


@lru_cache(maxsize=32)
def _saved_config(path: Path, inode: int, mtime_ns: int, size: int) -> dict:
    params = read_state_dict(path, mmap=True).get("hyper_parameters") or {}
    return dict(params.get("cfg", params))


def trained_emotion_window(ckpt: str | Path) -> int:
    """K of the expression window a pdfgc checkpoint's G was trained with: ``data.emotion_window``
    of the run config saved in its ``hyper_parameters``, else ``DEFAULT_EMOTION_WINDOW``."""
    window = (saved_config(ckpt).get("data") or {}).get("emotion_window")
    if window is None:
        log.info("%s: no data.emotion_window saved with it; composing with K = %d", ckpt,
                 DEFAULT_EMOTION_WINDOW)
        return DEFAULT_EMOTION_WINDOW
    return int(window)


def trained_regression(ckpt: str | Path) -> Regression | None:
    """What the heads of a pdfgc checkpoint were regressed to: the settings of the heads run
    in its chain (this checkpoint's own, or the earlier stage's its ``stage.init_from``
    names, followed back). None when no heads run is found or it regressed nothing."""
    path, seen = Path(ckpt), set()
    while path is not None and path not in seen:
        seen.add(path)
        cfg = saved_config(path)
        stage = cfg.get("stage") or {}
        if stage.get("name") == "heads":
            return _heads_regression(stage, cfg.get("loss") or {})
        path = _earlier_checkpoint(path, stage.get("init_from"))
    return None


def _heads_regression(stage: Mapping, loss: Mapping) -> Regression | None:
    """The :class:`Regression` of a heads run's ``stage`` and ``loss`` settings."""
    def regressed(term: str, key: str) -> tuple | None:
        on = (loss.get(term) or 0) > 0 and stage.get(key) is not None
        return tuple(stage[key]) if on else None

    found = Regression(regressed("pose", "pose_scale"), regressed("blink", "blink_dims"),
                       regressed("gaze", "gaze_dims"))
    return None if found == Regression() else found


def _earlier_checkpoint(ckpt: Path, init_from: str | None) -> Path | None:
    """The checkpoint a stage started from: as recorded, else the same stage's file beside
    this run (``<group>/<stage>/checkpoints/<file>``: a run group moved, or run from
    another folder); None if neither is a file."""
    if not init_from:
        return None
    recorded, parents = Path(init_from), ckpt.resolve().parents
    if recorded.is_file():
        return recorded
    beside = parents[2].joinpath(*recorded.parts[-3:]) if len(parents) > 2 else None
    return beside if beside is not None and beside.is_file() else None


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX-BF16), as far as Linux's
    ``/proc/cpuinfo`` says; elsewhere assumed so. Without it bf16 is emulated: on an AVX2
    host the benchmark's bf16 matmul ran at 0 GFLOP/s and its bf16 pass did not finish in ten
    minutes."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return True
    flags = cpuinfo.read_text().split()
    return "avx512_bf16" in flags or "amx_bf16" in flags


class TalkingHeadModel(nn.Module):
    """Appearance, motion and audio encoders plus the generator, in eval mode.

    ``fast`` (default) runs the fast modulated convolution on channels-last (NHWC) tensors;
    ``fast=False`` is the plain released formulation (per-sample grouped convolutions, NCHW),
    kept as the reference. ``compile`` wraps each network in ``torch.compile``.
    ``emotion_window`` says how :meth:`compose` combines codes (see :func:`compose_codes`):
    None for the released weights, K for a pdfgc checkpoint trained with a K-frame window.
    ``regression`` says what the pose and eye codes mean numerically, for :class:`Dials`.
    Every encoder and the generator run at the model's ``precision`` (:meth:`set_precision`;
    autocast, results in float32), so inference and evaluation render alike, and
    :meth:`render_frames` is the one loop that renders frames from codes.
    """

    def __init__(self, nets: nn.ModuleDict, noise_seed: int = DEFAULT_NOISE_SEED,
                 fast: bool = True, compile: bool = False, emotion_window: int | None = None,
                 regression: Regression | None = None):
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
        self.regression = regression
        self.run = {name: torch.compile(net, dynamic=False) if compile else net
                    for name, net in self.nets.items()}
        self.precision = "fp32"

    def set_precision(self, precision: str) -> TalkingHeadModel:
        """Run at ``precision`` (fp32, bf16, fp16: autocast) from now on; bf16 on a CPU
        without bf16 instructions warns once, naming the faster choice."""
        self.precision = check_choice("precision", precision, tuple(PRECISIONS))
        device = next(self.parameters()).device
        if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
            log.warning("precision=bf16: this CPU has no bf16 instructions (AVX512-BF16 or "
                        "AMX), so bf16 is emulated and many times slower; use precision=fp32")
        return self

    def autocast(self):
        """The autocast context of the model's precision on its device."""
        dtype = PRECISIONS[self.precision]
        device = next(self.parameters()).device
        return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)

    @classmethod
    def from_config(cls, model_cfg: DictConfig, weights: str | None,
                    noise_seed: int = DEFAULT_NOISE_SEED, compile: bool = False
                    ) -> TalkingHeadModel:
        """Build the ``model=`` networks and load ``weights``: a released folder (codes
        composed as released) or a pdfgc ``.ckpt`` (codes composed as its G was trained, and
        its heads' :class:`Regression`); None keeps the random weights, composed as
        released. A missing ``weights`` path is reported before the networks are built."""
        if weights is not None:
            check_weights_path(weights)
        nets = build_networks(model_cfg)
        window = regression = None
        if weights is not None:
            load_networks(weights, nets)
            if not Path(weights).is_dir():
                window = trained_emotion_window(weights)
                regression = trained_regression(weights)
        return cls(nets, noise_seed, compile=compile, emotion_window=window,
                   regression=regression)

    def compose(self, codes: Mapping[str, torch.Tensor], controls: Controls,
                dials: Dials | None = None) -> torch.Tensor:
        """Whole-sequence codes {mouth, emotion, eye, pose: (N, D)} -> motion styles (N, M),
        with ``dials`` applied (:func:`apply_dials`) and composed the way these weights
        expect (:func:`compose_codes`)."""
        mouth, emotion, eye, pose = (codes[name] for name in MOTION_CODES)
        if dials is not None:
            pose, eye = apply_dials(pose, eye, dials, self.regression)
        return compose_codes(mouth, emotion, eye, pose, controls, self.emotion_window)

    def to(self, *args, **kwargs) -> TalkingHeadModel:  # keep the noise maps on the device
        super().to(*args, **kwargs)
        device = next(self.parameters()).device
        self.noise = [n.to(device) for n in self.noise]
        return self

    @torch.no_grad()
    def encode_appearance(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3, H, W) reference images -> their mean {"vector": (1, D), "map": (1, C, s, s)}."""
        with self.autocast():
            out = self.run["appearance"](self._layout(images))
        return {k: v.float().mean(dim=0, keepdim=True) for k, v in out.items()}

    @torch.no_grad()
    def encode_motion(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3, H, W) driver frames -> {"pose", "eye", "emotion"} codes, (B, D) each."""
        with self.autocast():
            out = self.run["motion"](self._layout(frames))
        return {k: out[k].float() for k in ("pose", "eye", "emotion")}

    @torch.no_grad()
    def encode_audio(self, mel_windows: torch.Tensor) -> torch.Tensor:
        """(B, 1, 80, 20) mel windows -> audio mouth codes (B, D)."""
        with self.autocast():
            return self.run["audio"](mel_windows)["mouth"].float()

    @torch.no_grad()
    def render(self, appearance: dict[str, torch.Tensor], motion_codes: torch.Tensor
               ) -> torch.Tensor:
        """appearance (from encode_appearance) + (B, motion) codes -> frames (B, 3, H, W)."""
        b = motion_codes.shape[0]
        style = torch.cat([appearance["vector"].expand(b, -1), motion_codes], dim=1)
        appearance_map = self._layout(appearance["map"].expand(b, -1, -1, -1))
        with self.autocast():
            return self.run["generator"](style, appearance_map, self.noise).float()

    def render_frames(self, appearance: dict[str, torch.Tensor], motion_codes: torch.Tensor,
                      chunk: int) -> Iterator[torch.Tensor]:
        """The frames of (N, motion) codes (from :meth:`compose`), ``chunk`` at a time:
        (n, 3, H, W) each, in order."""
        for start in range(0, len(motion_codes), chunk):
            yield self.render(appearance, motion_codes[start:start + chunk])

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        """NHWC on the fast path: oneDNN (CPU) and cuDNN run convolutions fastest on it."""
        return x.contiguous(memory_format=self.memory_format)
