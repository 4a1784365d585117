"""The disentanglement matrix on synthetic data: what each learned code knows of each factor.

For every learned code of the target frames (``appearance``; the unified motion feature
``motion``; the motion encoder's heads ``lip``, ``pose``, ``eye``, ``expression``; and the
audio encoder's ``lip_audio``) a ridge probe is fitted to predict every true factor on the
frames of half the test clips, and its R² is measured on the other half (held-out clips).
A well disentangled model has a high R² on each head's own factors (``FACTOR_GROUPS``) and
a low one elsewhere, and an appearance code that predicts no motion.

The ridge penalty is chosen per factor over a grid by leave-one-clip-out error on the fitting
half (frames of a clip are near-duplicates: leaving out single frames picks penalties too
weak for new clips, and held-out R² far below zero). Figures:
``probe/<code>/own`` (mean R² over the code's own factors) and ``probe/<code>/leak`` (the
largest R² over the other factors); ``probe/<code>/mean`` (mean R² over all factors) for the
appearance and motion codes; in these an R² below 0 (worse than the test mean) counts as 0.
The whole matrix, unclipped, goes to the details, the printed report and a heatmap PNG.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from pdfgc.data.synthetic.factors import EMOTIONS, POSE_NAMES
from pdfgc.media import atomic_path
from pdfgc.metrics.registry import Metric, MetricContext, MetricResult, register
from pdfgc.metrics.render import FrameBatch
from pdfgc.metrics.tabulate import format_table, format_value

FACTOR_GROUPS = {
    "mouth": ("mouth_open", "mouth_round"),
    "pose": POSE_NAMES,
    "eye": ("blink", "gaze_x", "gaze_y"),
    "emotion": ("emotion_intensity", *(f"emotion_{name}" for name in EMOTIONS)),
}
CODE_GROUPS = {"appearance": None, "motion": None, "lip": "mouth", "lip_audio": "mouth",
               "pose": "pose", "eye": "eye", "expression": "emotion"}
RIDGE_ALPHAS = np.logspace(-5, 2, 15)  # per sample, on standardised codes
HEATMAP = "disentanglement.png"


@dataclass(frozen=True)
class RidgeProbe:
    """A linear read-out of standardised codes: ``((x - mean) / scale) @ coef + intercept``."""

    mean: np.ndarray       # (D,)
    scale: np.ndarray      # (D,)
    coef: np.ndarray       # (D, F)
    intercept: np.ndarray  # (F,)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.scale) @ self.coef + self.intercept


def fit_ridge(x: np.ndarray, y: np.ndarray, alphas: np.ndarray = RIDGE_ALPHAS,
              groups: np.ndarray | None = None) -> RidgeProbe:
    """Ridge regression of targets y (N, F) on codes x (N, D), each target with the penalty
    of ``alphas`` (times N) that predicts held-out samples best: by exact leave-one-out
    error, or, given ``groups`` (N,) such as each frame's clip, by leave-one-group-out error.
    Frames of one clip are near-duplicates, so leaving one frame out rewards a penalty too
    weak for a new clip; leaving its whole clip out does not."""
    alphas = np.asarray(alphas, dtype=float) * len(x)
    if groups is None or len(np.unique(groups)) < 2:
        errors = _leave_one_out_errors(x, y, alphas)
    else:
        errors = np.zeros((len(alphas), y.shape[1]))
        for group in np.unique(groups):
            held = groups == group
            fold = _standardised_svd(x[~held], y[~held])  # once per fold, for every penalty
            for i, alpha in enumerate(alphas):
                probe = _probe(fold, np.full(y.shape[1], alpha))
                errors[i] += np.sum((probe.predict(x[held]) - y[held]) ** 2, axis=0)
    return _probe(_standardised_svd(x, y), alphas[np.argmin(errors, axis=0)])


def _standardised_svd(x: np.ndarray, y: np.ndarray):
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    u, s, vt = np.linalg.svd((x - mean) / scale, full_matrices=False)  # u (N, r), vt (r, D)
    intercept = y.mean(axis=0)
    return mean, scale, u, s, vt, intercept, u.T @ (y - intercept)  # last: (r, F)


def _probe(decomposition: tuple, alpha: np.ndarray) -> RidgeProbe:
    """The ridge probe of a ``_standardised_svd`` with penalty ``alpha[j]`` (absolute) for
    target j."""
    mean, scale, _, s, vt, intercept, uty = decomposition
    coef = np.stack([vt.T @ (s / (s**2 + a) * uty[:, j]) for j, a in enumerate(alpha)], axis=1)
    return RidgeProbe(mean, scale, coef, intercept)  # coef (D, F)


def _leave_one_out_errors(x: np.ndarray, y: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """Exact leave-one-out mean squared error (A, F) of each penalty and target."""
    n = len(x)
    _, _, u, s, _, intercept, uty = _standardised_svd(x, y)
    errors = []
    for alpha in alphas:
        shrink = s**2 / (s**2 + alpha)  # (r,)
        fitted = u @ (shrink[:, None] * uty)
        leverage = 1.0 / n + (u**2) @ shrink  # hat-matrix diagonal, intercept included
        residual = (y - intercept - fitted) / np.maximum(1.0 - leverage, 1e-12)[:, None]
        errors.append(np.mean(residual**2, axis=0))
    return np.stack(errors)


def r2_scores(prediction: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Coefficient of determination (F,) of each column; NaN where y is constant."""
    total = np.sum((y - y.mean(axis=0)) ** 2, axis=0)
    residual = np.sum((y - prediction) ** 2, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, 1.0 - residual / total, np.nan)


def probe_r2(fit_x: np.ndarray, fit_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
             fit_groups: np.ndarray | None = None) -> np.ndarray:
    """Held-out R² (F,) of a ridge probe fitted on (fit_x, fit_y); see ``fit_ridge`` for
    ``fit_groups``."""
    return r2_scores(fit_ridge(fit_x, fit_y, groups=fit_groups).predict(test_x), test_y)


def held_out_split(clips: np.ndarray) -> np.ndarray:
    """Which samples fit the probes (True) and which test them: clips of even index against
    odd ones, or alternate samples when that leaves a side empty."""
    fit = clips % 2 == 0
    if fit.all() or not fit.any():
        fit = np.arange(len(clips)) % 2 == 0
    return fit


def save_heatmap(r2: np.ndarray, codes: list[str], factors: list[str], path: Path) -> Path:
    """Write the R² matrix (codes x factors) as an annotated heatmap PNG, atomically."""
    figure = Figure(figsize=(1.0 + 0.55 * len(factors), 1.4 + 0.45 * len(codes)))
    axes = figure.subplots()
    image = axes.imshow(np.clip(np.nan_to_num(r2, nan=0.0), 0.0, 1.0), vmin=0.0, vmax=1.0,
                        cmap="viridis", aspect="auto")
    axes.set_xticks(range(len(factors)), factors, rotation=60, ha="right", fontsize=8)
    axes.set_yticks(range(len(codes)), codes, fontsize=8)
    for (row, col), value in np.ndenumerate(r2):
        text = "-" if np.isnan(value) else f"{value:.2f}" if value >= 0 else "<0"
        axes.text(col, row, text, ha="center", va="center", fontsize=6,
                  color="black" if value > 0.5 else "white")
    axes.set_title("held-out R² of a ridge probe: learned code (row) -> true factor (column)",
                   fontsize=9)
    figure.colorbar(image, ax=axes, fraction=0.03)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=120)
    return path


@register
class Disentanglement(Metric):
    """Ridge probes from each learned code to each true factor (see the module docstring)."""

    name = "disentanglement"
    stream = "frames"
    needs_factors = True

    def __init__(self, ctx: MetricContext, heatmap: str = HEATMAP):
        super().__init__(ctx)
        self.heatmap = ctx.output_dir / heatmap
        self.codes: dict[str, list[np.ndarray]] = {name: [] for name in CODE_GROUPS}
        self.factors: list[np.ndarray] = []
        self.clips: list[np.ndarray] = []

    def update(self, batch: FrameBatch) -> None:
        for name, code in batch.probe_codes.items():
            self.codes[name].append(_numpy(code))
        self.factors.append(_numpy(batch.data["factors"]))
        self.clips.append(batch.data["clip"].cpu().numpy())

    def compute(self) -> MetricResult:
        factors, clips = np.concatenate(self.factors), np.concatenate(self.clips)
        fit = held_out_split(clips)
        names = list(self.ctx.factor_names)
        r2 = np.stack([probe_r2(x[fit], factors[fit], x[~fit], factors[~fit], clips[fit])
                       for x in (np.concatenate(self.codes[c]) for c in CODE_GROUPS)])
        save_heatmap(r2, list(CODE_GROUPS), names, self.heatmap)
        details = {"probe/codes": list(CODE_GROUPS), "probe/factors": names,
                   "probe/r2": r2.tolist(), "probe/heatmap": str(self.heatmap)}
        return MetricResult(summarise(r2, names), details, report(r2, names))


def summarise(r2: np.ndarray, factor_names: list[str]) -> dict[str, float]:
    """The headline figures of an R² matrix whose rows follow ``CODE_GROUPS``."""
    results = {}
    for row, (code, group) in zip(np.clip(r2, 0.0, 1.0), CODE_GROUPS.items(), strict=True):
        if group is None:
            results[f"probe/{code}/mean"] = float(np.nanmean(row))
            continue
        own = np.array([name in FACTOR_GROUPS[group] for name in factor_names])
        results[f"probe/{code}/own"] = float(np.nanmean(row[own]))
        results[f"probe/{code}/leak"] = float(np.nanmax(row[~own]))
    return results


def report(r2: np.ndarray, factor_names: list[str]) -> str:
    """The R² matrix as a text table, one row per factor and one column per code."""
    rows = [[name, *(format_value(v) for v in column)]
            for name, column in zip(factor_names, r2.T, strict=True)]
    return "held-out R² of ridge probes\n" + format_table(["factor", *CODE_GROUPS], rows)


def _numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().double().cpu().numpy()
