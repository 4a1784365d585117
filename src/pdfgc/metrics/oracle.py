"""An oracle that reads the true factors off synthetic frames, and the control-accuracy and
leakage benchmark it makes possible (an option for long runs: ``transfer`` scores control
against the renderer's ground truth without training anything).

:class:`FactorOracle` is a small CNN regressing every factor of a frame (standardised
targets). It is trained on frames drawn by the synthetic renderer for the dataset's own
identities with every factor sampled independently over the ranges its clips use
(``random_factors`` of the synthetic data), so that it cannot read one factor from another
one's cues, as it could from clips whose factors happen to co-vary. It is a measuring
instrument, not a model under test, so the test identities are among them. Trained once per
dataset, renderer and settings, it is cached in ``cache_dir``.

On each test batch the ``oracle`` metric reads:

* real target frames: the oracle's own error (its floor, ``oracle/real_error``), next to
  the error of always guessing the training mean (``oracle/chance_error``);
* self-reconstructions: ``oracle/recon_error``, and the lip-sync error in mouth-opening
  units, ``oracle/lipsync_error`` = mean |mouth_open read from the render - true mouth_open|
  (the mouth is driven by the audio);
* per-factor swaps: the mouth, pose, eye or emotion code is taken from another clip (the
  partner sample) and the rest kept. ``oracle/<group>/error`` is the error of the swapped
  group's factors against the partner's true values; ``oracle/<group>/leakage`` how far the
  other groups' factors moved from the unswapped render: the largest of them (a swap that
  moves one other factor cannot hide behind many that stay).

Errors are mean absolute differences as a fraction of each factor's range in the training set.
An instrument must be accurate to measure with: every figure is averaged over the factors the
oracle reads well (held-out R² of at least ``MIN_R2`` after training); the others are listed
in the details (``oracle/unreliable``), with every factor's R² (``oracle/r2``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from pdfgc.data.synthetic import (
    FACTOR_NAMES,
    Identity,
    random_factors,
    render_frame,
)
from pdfgc.data.synthetic.generate import FORMAT_VERSION, dataset_identities
from pdfgc.errors import PdfgcError
from pdfgc.features import prepare_image
from pdfgc.io import atomic_save
from pdfgc.metrics.disentanglement import FACTOR_GROUPS, r2_scores
from pdfgc.metrics.registry import Metric, MetricContext, MetricResult, digest, register
from pdfgc.metrics.render import FrameBatch

log = logging.getLogger(__name__)

ORACLE_SIZE = 64
GRID = 4  # side of the oracle's last feature map
MIN_R2 = 0.5  # a factor the oracle reads with a lower held-out R² is left out of the figures
HOLDOUT = 0.1  # share of the training frames kept to measure the oracle's R²
ORACLE_FORMAT = 1  # bump when the network or its training changes: cached oracles retrain
TRAIN_NOISE = 0.03  # std of the pixel noise added to training images (robustness to renders)


class FactorOracle(nn.Module):
    """Frames (B, 3, S, S) in [-1, 1] -> factors (B, F) in their own units.

    On a ``size`` resize: a full-resolution convolution, four stride-2 ones (GroupNorm,
    LeakyReLU), then a linear layer on the 4 x 4 map, which keeps where things are (gaze,
    head position). Buffers hold the training factors' mean / std (targets are
    standardised), their range (``low``, ``high``) and the held-out R² of each factor after
    training (``r2``).
    """

    def __init__(self, factor_names: Sequence[str], size: int = ORACLE_SIZE, width: int = 32):
        super().__init__()
        self.factor_names = tuple(factor_names)
        self.size, self.width = size, width
        channels = [width // 2, width, 2 * width, 4 * width, 4 * width]
        layers: list[nn.Module] = [nn.Conv2d(3, channels[0], 3, padding=1), nn.LeakyReLU(0.2),
                                   nn.Conv2d(channels[0], channels[0], 3, padding=1),
                                   nn.LeakyReLU(0.2)]
        for cin, cout in zip(channels, channels[1:], strict=False):
            layers += [nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.GroupNorm(8, cout),
                       nn.LeakyReLU(0.2)]
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(GRID), nn.Flatten())
        self.head = nn.Linear(channels[-1] * GRID**2, len(factor_names))
        for name in ("mean", "low", "r2"):
            self.register_buffer(name, torch.zeros(len(factor_names)))
        for name in ("std", "high"):
            self.register_buffer(name, torch.ones(len(factor_names)))

    @property
    def range(self) -> torch.Tensor:
        """Each factor's range in the training set (1 where it never varied)."""
        spread = self.high - self.low
        return torch.where(spread > 0, spread, torch.ones_like(spread))

    def standardised(self, images: torch.Tensor) -> torch.Tensor:
        """The network's output: standardised factors (B, F)."""
        if images.shape[-1] != self.size:
            images = F.interpolate(images.float(), size=(self.size, self.size), mode="bilinear",
                                   antialias=True, align_corners=False)
        return self.head(self.features(images.float()))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.standardised(images) * self.std + self.mean


def train_oracle(images: torch.Tensor, factors: torch.Tensor, factor_names: Sequence[str],
                 steps: int = 3000, batch_size: int = 64, lr: float = 2e-3, width: int = 32,
                 seed: int = 0, device: torch.device | str = "cpu",
                 progress: bool = False) -> FactorOracle:
    """Fit a :class:`FactorOracle` to images (N, 3, S, S) in [-1, 1] (any float dtype) and
    their factors (N, F) with Adam and a cosine schedule, holding out the last ``HOLDOUT``
    of them to measure its R² per factor; returns it in eval mode."""
    torch.manual_seed(seed)
    oracle = FactorOracle(factor_names, images.shape[-1], width).to(device)
    held = max(1, int(len(images) * HOLDOUT))
    images, held_images = images[:-held], images[-held:]
    factors, held_factors = factors[:-held].float(), factors[-held:].float()
    oracle.mean.copy_(factors.mean(0))
    oracle.std.copy_(factors.std(0).clamp(min=1e-3))
    oracle.low.copy_(factors.min(0).values)
    oracle.high.copy_(factors.max(0).values)
    targets = ((factors.to(device) - oracle.mean) / oracle.std)
    optimiser = torch.optim.Adam(oracle.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, max(1, steps))
    generator = torch.Generator().manual_seed(seed)
    oracle.train()
    for _ in tqdm(range(steps), desc="oracle", unit="step", disable=not progress):
        pick = torch.randint(len(images), (batch_size,), generator=generator)
        x = images[pick].to(device).float()
        x = x + TRAIN_NOISE * torch.randn_like(x)
        loss = F.mse_loss(oracle.standardised(x), targets[pick.to(device)])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
    oracle.eval().requires_grad_(False)
    with torch.no_grad():
        predicted = torch.cat([oracle(held_images[s].to(device).float()).cpu()
                               for s in _batches(held, batch_size)])
    oracle.r2.copy_(torch.from_numpy(np.nan_to_num(
        r2_scores(predicted.double().numpy(), held_factors.double().numpy()), nan=0.0)))
    return oracle


def _batches(n: int, size: int) -> list[slice]:
    return [slice(start, start + size) for start in range(0, n, size)]


def random_frames(identities: Sequence[Identity], count: int, image_size: int, crop: bool,
                  size: int = ORACLE_SIZE, seed: int = 0, progress: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` frames drawn at ``image_size`` (cycling over ``identities``, factors from
    ``random_factors``) and prepared as network images: (N, 3, size, size) float16 in
    [-1, 1], and their factors (N, F) in ``FACTOR_NAMES`` order."""
    rng = np.random.default_rng(seed)
    images, factors = [], []
    for k in tqdm(range(count), desc="oracle frames", unit="frame", disable=not progress):
        drawn = random_factors(rng)
        image, _ = render_frame(identities[k % len(identities)], drawn, image_size)
        images.append(torch.from_numpy(prepare_image(image, size, crop)).half())
        factors.append([drawn[name] for name in FACTOR_NAMES])
    return torch.stack(images), torch.tensor(factors, dtype=torch.float32)


def load_or_train_oracle(ctx: MetricContext, frames: int = 20000, **options) -> FactorOracle:
    """The oracle of the synthetic dataset ``ctx.data_root``, trained on ``frames`` random
    frames with ``options`` (keyword arguments of :func:`train_oracle`); from the cache, or
    trained now and cached."""
    if ctx.data_root is None:
        raise PdfgcError("the factor oracle needs the dataset folder")
    identities, image_size = dataset_identities(ctx.data_root)
    key = digest({"identities": [asdict(i) for i in identities], "image_size": image_size,
                  "crop": ctx.crop, "frames": frames, "train": options,
                  "format": ORACLE_FORMAT, "renderer": FORMAT_VERSION})
    path = ctx.cache_dir / f"oracle-{key}.pt"
    if path.is_file():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        oracle = FactorOracle(saved["factor_names"], saved["size"], saved["width"])
        oracle.load_state_dict(saved["state_dict"])
        log.info("oracle: loaded %s", path)
        return oracle.to(ctx.device).eval().requires_grad_(False)
    log.info("oracle: training on %d random frames of the identities of %s", frames,
             ctx.data_root)
    images, factors = random_frames(identities, frames, image_size, ctx.crop,
                                    seed=options.get("seed", 0), progress=ctx.progress)
    oracle = train_oracle(images, factors, FACTOR_NAMES, device=ctx.device,
                          progress=ctx.progress, **options)
    atomic_save({"factor_names": list(FACTOR_NAMES), "size": oracle.size, "width": oracle.width,
                 "state_dict": oracle.state_dict()}, path)
    return oracle


@register
class OracleControl(Metric):
    """Oracle errors, lip-sync error in mouth units, and per-factor control accuracy and
    leakage (see the module docstring). Options: ``frames`` and those of
    :func:`train_oracle`; ``oracle`` gives a ready one (tests)."""

    name = "oracle"
    stream = "frames"
    needs_factors = True

    def __init__(self, ctx: MetricContext, oracle: FactorOracle | None = None, **options):
        super().__init__(ctx)
        self.oracle = oracle if oracle is not None else load_or_train_oracle(ctx, **options)
        if self.oracle.factor_names != tuple(ctx.factor_names):
            raise PdfgcError("oracle: its factors differ from the data's: "
                             f"{self.oracle.factor_names} vs {tuple(ctx.factor_names)}")
        names = self.oracle.factor_names
        self.reliable = self.oracle.r2.cpu().numpy() >= MIN_R2
        self.groups = {g: np.array([n in members for n in names])
                       for g, members in FACTOR_GROUPS.items()}
        self.mouth = names.index("mouth_open")
        self.errors: dict[str, list[np.ndarray]] = {}
        if not self.reliable.all():
            log.warning("oracle: left out of the figures, read with R² < %s: %s", MIN_R2,
                        ", ".join(n for n, ok in zip(names, self.reliable, strict=True) if not ok))

    def _add(self, key: str, values: torch.Tensor) -> None:
        self.errors.setdefault(key, []).append(values.detach().double().cpu().numpy())

    @torch.no_grad()
    def update(self, batch: FrameBatch) -> None:
        truth = batch.data["factors"].float()
        scale = self.oracle.range
        fake = self.oracle(batch.fake)
        self._add("real", (self.oracle(batch.data["target"]) - truth).abs() / scale)
        self._add("chance", (self.oracle.mean - truth).abs() / scale)
        self._add("recon", (fake - truth).abs() / scale)
        self._add("lipsync", (fake[:, self.mouth] - truth[:, self.mouth]).abs())
        for group in FACTOR_GROUPS:
            swapped = self.oracle(batch.swapped(group))
            self._add(f"{group}/error", (swapped - truth[batch.partner]).abs() / scale)
            self._add(f"{group}/moved", (swapped - fake).abs() / scale)

    def compute(self) -> MetricResult:
        mean = {k: np.concatenate(v).mean(axis=0) for k, v in self.errors.items()}  # (F,)
        ok = self.reliable
        results = {f"oracle/{k}_error": _mean(mean[k][ok]) for k in ("real", "chance", "recon")}
        results["oracle/lipsync_error"] = float(mean["lipsync"]) if ok[self.mouth] else np.nan
        names = self.oracle.factor_names
        details = {f"oracle/{k}_error": dict(zip(names, mean[k].tolist(), strict=True))
                   for k in ("real", "chance", "recon")}
        details["oracle/r2"] = dict(zip(names, self.oracle.r2.tolist(), strict=True))
        details["oracle/unreliable"] = [n for n, good in zip(names, ok, strict=True) if not good]
        for group, own in self.groups.items():
            others = mean[f"{group}/moved"][~own & ok]
            results[f"oracle/{group}/error"] = _mean(mean[f"{group}/error"][own & ok])
            results[f"oracle/{group}/leakage"] = float(others.max()) if others.size else np.nan
            details[f"oracle/{group}/moved"] = dict(zip(names, mean[f"{group}/moved"].tolist(),
                                                        strict=True))
        return MetricResult(results, details)


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else float("nan")
