"""The metric registry: one class per metric, looked up by name.

A metric reads one stream of rendered test samples (see :mod:`pdfgc.metrics.render`):

* ``frames``: batches of the DataModule's test (or val) loader, each target frame rendered
  from its source frame's appearance and its own codes (:class:`FrameBatch`);
* ``clips``: whole test clips rendered the way ``infer.py`` renders a video
  (:class:`ClipSample`).

``update`` is called once per batch or clip, ``compute`` once at the end; it returns headline
figures (``results``, keyed ``<metric>/<name>``, shown in tables) and larger ``details``
(matrices, per-factor figures) that only go to the JSON lines.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from pdfgc.errors import PdfgcError, check_choice
from pdfgc.outside_weights import locate

log = logging.getLogger(__name__)

STREAMS = ("frames", "clips")
METRIC_MODULES = ("control", "disentanglement", "fid", "identity", "landmarks", "lpips",
                  "oracle", "own_sync", "psnr_ssim", "syncnet", "transfer")


class MetricUnavailable(PdfgcError):
    """A metric cannot run here: its outside weights are missing, or the data lacks what it
    measures (true factors). ``skip_unavailable`` turns it into a warning."""


@dataclass
class MetricContext:
    """What every metric may need to know about the evaluation it is part of."""

    device: torch.device
    output_dir: Path                 # the evaluation run's folder (figures go here)
    cache_dir: Path                  # cached statistics and the oracle
    data_key: str                    # hash of the data settings (names cached real statistics)
    factor_names: tuple[str, ...] = ()   # the true factors (synthetic data), () for real data
    data_root: Path | None = None    # the dataset folder (the oracle trains on its train split)
    crop: bool = True                # whether the data applies the released crop rule
    weights: Mapping[str, str | None] = field(default_factory=dict)  # outside weight files
    progress: bool = False


@dataclass
class MetricResult:
    """Headline figures (``results``), JSON-able ``details`` and an optional text ``report``
    printed after the summary table (a matrix, say)."""

    results: dict[str, float]
    details: dict[str, Any] = field(default_factory=dict)
    report: str = ""


class Metric(ABC):
    """One metric: accumulates over a stream, then computes its figures once."""

    name: ClassVar[str]
    stream: ClassVar[str]           # "frames" or "clips"
    needs_factors: ClassVar[bool] = False
    # outside networks: {weights.<key>: its name in pdfgc.outside_weights.REGISTER}
    outside: ClassVar[Mapping[str, str]] = {}
    random_allowed: ClassVar[tuple[str, ...]] = ()  # keys that may be ``random``, by name

    @classmethod
    def outside_for(cls, weights: Mapping[str, str | None]) -> Mapping[str, str]:
        """The outside networks this metric needs with these ``weights`` settings."""
        return cls.outside

    @classmethod
    def outside_file(cls, weights: Mapping[str, str | None], key: str) -> Path | None:
        """The checked file ``weights.<key>`` names for this metric (see
        :func:`pdfgc.outside_weights.locate`; None for ``random`` where allowed); a
        :class:`MetricUnavailable` saying what is missing or wrong."""
        try:
            return locate(cls.outside_for(weights)[key], weights.get(key), f"weights.{key}",
                          allow_random=key in cls.random_allowed)
        except PdfgcError as err:
            raise MetricUnavailable(str(err)) from None

    def __init__(self, ctx: MetricContext):
        if self.needs_factors and not ctx.factor_names:
            raise MetricUnavailable(f"metric {self.name} needs data with true factors "
                                    "(data=synthetic)")
        self.ctx = ctx

    @abstractmethod
    def update(self, sample: Any) -> None:
        """Accumulate one :class:`FrameBatch` or :class:`ClipSample` (see ``stream``)."""

    @abstractmethod
    def compute(self) -> MetricResult:
        """The figures over everything seen."""


METRICS: dict[str, type[Metric]] = {}


def register(cls: type[Metric]) -> type[Metric]:
    """Class decorator adding a metric to the registry under its ``name``."""
    if cls.stream not in STREAMS:
        raise ValueError(f"{cls.__name__}.stream must be one of {STREAMS}")
    METRICS[cls.name] = cls
    return cls


def _import_all() -> None:
    for module in METRIC_MODULES:
        importlib.import_module(f"pdfgc.metrics.{module}")


def list_metrics() -> list[str]:
    """Names of every metric, sorted."""
    _import_all()
    return sorted(METRICS)


def metric_class(name: str) -> type[Metric]:
    """The metric registered as ``name``; a one-line error listing the known ones."""
    _import_all()
    return METRICS[check_choice("metric", name, list_metrics())]


def build_metrics(names: Iterable[str], ctx: MetricContext,
                  options: Mapping[str, Mapping[str, Any]] | None = None,
                  skip_unavailable: bool = False) -> tuple[list[Metric], dict[str, str]]:
    """Instantiate the named metrics with their ``options``.

    Returns the metrics and, with ``skip_unavailable``, the skipped ones with the reason
    (otherwise a :class:`MetricUnavailable` propagates).
    """
    names = list(names)
    classes = [metric_class(name) for name in names]  # every name checked before any work
    options = dict(options or {})
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise PdfgcError(f"options given for metrics not evaluated: {', '.join(unknown)}")
    metrics, skipped = [], {}
    for cls in classes:
        try:
            metrics.append(cls(ctx, **dict(options.get(cls.name) or {})))
        except MetricUnavailable as err:
            if not skip_unavailable:
                raise
            skipped[cls.name] = str(err)
            log.warning("skipping metric %s: %s", cls.name, err)
        except TypeError as err:
            raise PdfgcError(f"bad options for metric {cls.name}: {err}") from None
    return metrics, skipped


def check_outside(names: Iterable[str], weights: Mapping[str, str | None],
                  skip_unavailable: bool = False) -> dict[str, str]:
    """Check the outside weights of the named metrics before any heavy work: the metrics
    that cannot run and why, with ``skip_unavailable`` (else the first error is raised)."""
    unavailable = {}
    for name in names:
        cls = metric_class(name)
        try:
            for key in cls.outside_for(weights):
                cls.outside_file(weights, key)
        except MetricUnavailable as err:
            if not skip_unavailable:
                raise
            unavailable[name] = str(err)
            log.warning("skipping metric %s: %s", name, err)
    return unavailable



def digest(settings: Any) -> str:
    """A short stable hash of JSON-able settings (names cache files)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


class RunningMean:
    """Mean of values added batch by batch, ignoring NaN; NaN when nothing was added.

    ``count`` counts the values used, ``updates`` the calls to ``add`` (NaN ones included).
    """

    def __init__(self) -> None:
        self.total, self.count, self.updates = 0.0, 0, 0

    def add(self, values: torch.Tensor | np.ndarray | float) -> None:
        if isinstance(values, torch.Tensor):
            values = values.detach().double().cpu().numpy()
        values = np.asarray(values, dtype=np.float64).ravel()
        values = values[~np.isnan(values)]
        self.updates += 1
        self.total += float(values.sum())
        self.count += values.size

    @property
    def value(self) -> float:
        return self.total / self.count if self.count else float("nan")
