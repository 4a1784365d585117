"""The disentanglement matrix on synthetic data: what each learned code knows of each factor.

For every learned code of the target frames (``appearance``; the unified motion feature
``motion``; the motion encoder's heads ``lip``, ``pose``, ``eye``, ``expression``; and the
audio encoder's ``lip_audio``) a ridge probe is fitted to predict every true factor on the
frames of half the test clips, and its R² is measured on the other half (held-out clips).
A well disentangled model has a high R² on each head's own factors and a low one elsewhere,
and an appearance code that predicts no motion.

Each head is measured beside **the same head untrained**, in the same run: the trained motion
encoder with that head's layers re-initialised from a fixed seed (trunk and f_mot trained,
head random), and for ``lip_audio`` the whole audio encoder re-initialised. A random head
on f_mot already reads whatever f_mot holds linearly, so only the margin over it is learned.

The ridge penalty is chosen per factor over a grid by leave-one-clip-out error on the fitting
half (frames of a clip are near-duplicates: leaving out single frames picks penalties too
weak for new clips, and held-out R² far below zero). Figures, for each head code:

* ``probe/<code>/own``: mean R² over the head's own factors (``OWN_FACTORS``);
* ``probe/<code>/leak``: the largest R² over the factors outside the head's group
  (``LEAK_GROUPS``);
* ``probe/<code>/own_untrained``, ``probe/<code>/leak_untrained``: the same of the untrained
  head, and ``probe/<code>/learned`` = own - own_untrained;

and ``probe/<code>/mean`` (mean R² over all factors) for the appearance and motion codes. In
all of these an R² below 0 (worse than the test mean) counts as 0. Two "own" groups differ
from the factor groups, because the old definition could not be met even by the truth:

* pose: yaw, pitch, roll, tx and ty. The head's scale change tz is reported apart
  (``probe/pose/tz``): a probe on the exact 68 landmarks reads it at only 0.56.
* expression: each non-neutral emotion's one-hot times the emotion intensity
  (``WEIGHTED_EMOTIONS``, derived here from the true factors). Neutral's column would be
  constant 0 (neutral has intensity 0), so the four non-neutral ones. Even the renderer's
  exact landmark displacements read the old group (the one-hots and the intensity) at only
  0.89-0.91: a category at low intensity barely shows. The intensity is reported apart
  (``probe/expression/intensity``).

The whole matrix, unclipped, goes to the details, the printed report and a heatmap PNG
(trained and untrained side by side, one colour scale).
"""

from __future__ import annotations

from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from pdfgc.data.synthetic.factors import EMOTIONS, POSE_NAMES
from pdfgc.io import atomic_path
from pdfgc.metrics.registry import Metric, MetricContext, MetricResult, register
from pdfgc.metrics.render import FrameBatch
from pdfgc.metrics.tabulate import format_table, format_value

FACTOR_GROUPS = {  # the true factors of each group
    "mouth": ("mouth_open", "mouth_round"),
    "pose": POSE_NAMES,
    "eye": ("blink", "gaze_x", "gaze_y"),
    "emotion": ("emotion_intensity", *(f"emotion_{name}" for name in EMOTIONS)),
}
WEIGHTED_EMOTIONS = {f"{name}_x_intensity": f"emotion_{name}"  # probed column: its one-hot
                     for name in EMOTIONS if name != "neutral"}  # times emotion_intensity
LEAK_GROUPS = {**FACTOR_GROUPS, "emotion": (*FACTOR_GROUPS["emotion"], *WEIGHTED_EMOTIONS)}
OWN_FACTORS = {**FACTOR_GROUPS, "pose": ("yaw", "pitch", "roll", "tx", "ty"),
               "emotion": tuple(WEIGHTED_EMOTIONS)}
APART = {"pose": {"tz": "tz"}, "emotion": {"intensity": "emotion_intensity"}}  # key: factor
CODE_GROUPS = {"appearance": None, "motion": None, "lip": "mouth", "lip_audio": "mouth",
               "pose": "pose", "eye": "eye", "expression": "emotion"}
HEADS = tuple(code for code, group in CODE_GROUPS.items() if group is not None)
MOTION_HEADS = {"lip": "mouth", "pose": "pose", "eye": "eye", "expression": "emotion"}
UNTRAINED_SEED = 0
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


def probe_targets(factors: np.ndarray, names: list[str]) -> tuple[np.ndarray, list[str]]:
    """What the probes predict, (N, F + 4) and its column names: the true factors (N, F)
    named ``names``, then ``WEIGHTED_EMOTIONS`` (each non-neutral one-hot times the
    intensity)."""
    intensity = factors[:, names.index("emotion_intensity")]
    weighted = [factors[:, names.index(column)] * intensity
                for column in WEIGHTED_EMOTIONS.values()]
    return np.column_stack([factors, *weighted]), [*names, *WEIGHTED_EMOTIONS]


def reinitialised(module: nn.Module, seed: int, keep: nn.Module | None = None) -> nn.Module:
    """A copy of ``module`` whose layers start again from their random initialisation,
    drawn on the CPU from ``seed`` (the same on every device), all but ``keep``'s: that
    submodule is shared with ``module``, not copied."""
    kept = set() if keep is None else {id(layer) for layer in keep.modules()}
    copy = deepcopy(module, memo={} if keep is None else {id(keep): keep})
    device = next(module.parameters()).device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for layer in copy.modules():
            if id(layer) not in kept and hasattr(layer, "reset_parameters"):
                layer.cpu().reset_parameters()
                layer.to(device)
    return copy


class UntrainedHeads:
    """The untrained twins of the head codes: the motion encoder with its heads
    re-initialised (its trained trunk shared) and the audio encoder re-initialised whole,
    in the mode of ``nets`` (eval in evaluation)."""

    def __init__(self, nets: nn.ModuleDict, seed: int = UNTRAINED_SEED):
        self.motion = reinitialised(nets.motion, seed, keep=nets.motion.model)
        self.audio = reinitialised(nets.audio, seed)

    @torch.no_grad()
    def codes(self, feature: torch.Tensor, mel: torch.Tensor) -> dict[str, torch.Tensor]:
        """f_mot (B, F) and mel windows (B, 1, 80, 20) -> {code in ``HEADS``: (B, D)}."""
        heads = self.motion.heads(feature)
        return {"lip_audio": self.audio(mel)["mouth"],
                **{code: heads[out] for code, out in MOTION_HEADS.items()}}


def save_heatmap(r2: np.ndarray, r2_untrained: np.ndarray, factors: list[str],
                 path: Path) -> Path:
    """Write the R² matrices, trained (``CODE_GROUPS`` x factors) beside untrained
    (``HEADS`` x factors), as annotated heatmaps of one colour scale, atomically."""
    panels = {"trained": (r2, list(CODE_GROUPS)),
              "the same heads untrained (random init)": (r2_untrained, HEADS)}
    figure = Figure(figsize=(2.5 + 0.5 * (len(CODE_GROUPS) + len(HEADS)),
                             1.6 + 0.28 * len(factors)))
    axes = figure.subplots(1, 2, sharey=True,
                           gridspec_kw={"width_ratios": [len(CODE_GROUPS), len(HEADS)]})
    for ax, (title, (matrix, codes)) in zip(axes, panels.items(), strict=True):
        image = ax.imshow(np.clip(np.nan_to_num(matrix.T, nan=0.0), 0.0, 1.0), vmin=0.0,
                          vmax=1.0, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(codes)), codes, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(len(factors)), factors, fontsize=8)
        for (row, col), value in np.ndenumerate(matrix.T):
            text = "-" if np.isnan(value) else f"{value:.2f}" if value >= 0 else "<0"
            ax.text(col, row, text, ha="center", va="center", fontsize=6,
                    color="black" if value > 0.5 else "white")
        ax.set_title(title, fontsize=9)
    figure.suptitle("held-out R² of a ridge probe: code (column) -> true factor (row)",
                    fontsize=9)
    figure.colorbar(image, ax=axes, fraction=0.03)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=120, bbox_inches="tight")
    return path


@register
class Disentanglement(Metric):
    """Ridge probes from each learned code, and from each head untrained, to each true
    factor (see the module docstring)."""

    name = "disentanglement"
    stream = "frames"
    needs_factors = True

    def __init__(self, ctx: MetricContext, heatmap: str = HEATMAP,
                 untrained_seed: int = UNTRAINED_SEED):
        super().__init__(ctx)
        self.heatmap = ctx.output_dir / heatmap
        self.untrained_seed = untrained_seed
        self.untrained_heads: UntrainedHeads | None = None  # built from the first batch's model
        self.codes: dict[str, list[np.ndarray]] = {name: [] for name in CODE_GROUPS}
        self.untrained: dict[str, list[np.ndarray]] = {name: [] for name in HEADS}
        self.factors: list[np.ndarray] = []
        self.clips: list[np.ndarray] = []

    def update(self, batch: FrameBatch) -> None:
        if self.untrained_heads is None:
            self.untrained_heads = UntrainedHeads(batch.renderer.model.nets, self.untrained_seed)
        window_mel = batch.data["window_mel"]  # (B, K, 1, 80, 20): the target is the centre
        untrained = self.untrained_heads.codes(batch.probe_codes["motion"],
                                               window_mel[:, window_mel.shape[1] // 2])
        for name, code in batch.probe_codes.items():
            self.codes[name].append(_numpy(code))
        for name, code in untrained.items():
            self.untrained[name].append(_numpy(code))
        self.factors.append(_numpy(batch.data["factors"]))
        self.clips.append(batch.data["clip"].cpu().numpy())

    def compute(self) -> MetricResult:
        clips = np.concatenate(self.clips)
        factors, names = probe_targets(np.concatenate(self.factors), list(self.ctx.factor_names))
        fit = held_out_split(clips)

        def matrix(codes: dict[str, list[np.ndarray]]) -> np.ndarray:  # (codes, factors)
            return np.stack([probe_r2(x[fit], factors[fit], x[~fit], factors[~fit], clips[fit])
                             for x in map(np.concatenate, codes.values())])

        r2, r2_untrained = matrix(self.codes), matrix(self.untrained)
        save_heatmap(r2, r2_untrained, names, self.heatmap)
        details = {"probe/codes": list(CODE_GROUPS), "probe/factors": names,
                   "probe/r2": r2.tolist(), "probe/untrained_codes": list(HEADS),
                   "probe/r2_untrained": r2_untrained.tolist(),
                   "probe/heatmap": str(self.heatmap)}
        return MetricResult(summarise(r2, r2_untrained, names), details,
                            report(r2, r2_untrained, names))


def summarise(r2: np.ndarray, r2_untrained: np.ndarray, factor_names: list[str]
              ) -> dict[str, float]:
    """The headline figures of R² matrices whose rows follow ``CODE_GROUPS`` (trained) and
    ``HEADS`` (untrained) and whose columns are ``factor_names`` (see ``probe_targets``)."""
    r2, r2_untrained = np.clip(r2, 0.0, 1.0), np.clip(r2_untrained, 0.0, 1.0)
    names = np.array(factor_names)
    results = {}
    for row, (code, group) in zip(r2, CODE_GROUPS.items(), strict=True):
        if group is None:
            results[f"probe/{code}/mean"] = float(np.nanmean(row))
            continue
        own, other = np.isin(names, OWN_FACTORS[group]), ~np.isin(names, LEAK_GROUPS[group])
        untrained = r2_untrained[HEADS.index(code)]
        results.update({
            f"probe/{code}/own": float(np.nanmean(row[own])),
            f"probe/{code}/leak": float(np.nanmax(row[other])),
            f"probe/{code}/own_untrained": float(np.nanmean(untrained[own])),
            f"probe/{code}/leak_untrained": float(np.nanmax(untrained[other]))})
        results[f"probe/{code}/learned"] = (results[f"probe/{code}/own"]
                                            - results[f"probe/{code}/own_untrained"])
        for key, factor in APART.get(group, {}).items():
            results[f"probe/{code}/{key}"] = float(row[factor_names.index(factor)])
    return results


def report(r2: np.ndarray, r2_untrained: np.ndarray, factor_names: list[str]) -> str:
    """The R² matrices as a text table, one row per factor and one column per code, the
    untrained heads' columns last."""
    rows = [[name, *(format_value(v) for v in column)]
            for name, column in zip(factor_names, np.vstack([r2, r2_untrained]).T, strict=True)]
    header = ["factor", *CODE_GROUPS, *(f"{code} untrained" for code in HEADS)]
    return "held-out R² of ridge probes\n" + format_table(header, rows)


def _numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().double().cpu().numpy()
