"""Evaluate a checkpoint: ``python evaluate.py ckpt=... [data=...] eval=...``.

``ckpt`` is a pdfgc Lightning ``.ckpt`` or the folder of the four released files. The data
settings are the command line's ``data=`` if given, else those saved with the checkpoint's
training run (its ``config.yaml``, found next to the checkpoint or one folder up, or the
checkpoint's ``hyper_parameters``); the model settings are the run's, else ``model=``.

The networks are loaded into the inference model (:class:`TalkingHeadModel`) and the chosen
metrics (``eval.metrics``, see :mod:`pdfgc.metrics.registry`) read two streams, each made
only if a metric needs it: test (or val) batches of the DataModule, rendered by
:class:`FrameBatch`, and whole test clips, rendered by :class:`ClipSample`. The figures are
appended as one JSON line to ``results_file`` and printed as a table.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from pdfgc.data.datasets import UnreadableClip
from pdfgc.errors import PdfgcError, check_choice
from pdfgc.inference.model import TalkingHeadModel, saved_config
from pdfgc.io import read_jsonl, resolve_device, save_config, write_jsonl
from pdfgc.metrics.registry import (
    Metric,
    MetricContext,
    build_metrics,
    check_outside,
    digest,
)
from pdfgc.metrics.render import EvalRenderer, select_clips
from pdfgc.metrics.tabulate import format_table, format_value
from pdfgc.networks import check_image_size
from pdfgc.networks.checkpoints import check_weights_path

log = logging.getLogger(__name__)

SPLITS = ("test", "val")
RUN_CONFIGS = ("config.yaml", ".hydra/config.yaml")
# data settings that do not change which samples evaluation draws (left out of the cache
# key); source is one: evaluation always takes it from the target's clip
LOADER_ONLY = ("num_workers", "readers", "cache_mb", "augment", "negatives", "eye_augment",
               "batch_size", "source")


def saved_run_config(ckpt: Path) -> DictConfig | None:
    """The config of the training run that wrote ``ckpt``, or None.

    Looks for the run's ``config.yaml`` (or Hydra's ``.hydra/config.yaml``) in the
    checkpoint's folder and the one above (``<run>/checkpoints/last.ckpt``), then in a
    Lightning checkpoint's ``hyper_parameters`` (plain containers only). A released-weights
    folder is searched itself.
    """
    folders = [ckpt] if ckpt.is_dir() else [ckpt.parent, ckpt.parent.parent]
    for folder in folders:
        for name in RUN_CONFIGS:
            if (folder / name).is_file():
                log.info("run settings from %s", folder / name)
                return OmegaConf.load(folder / name)
    params = saved_config(ckpt) if ckpt.is_file() else {}
    if "data" in params or "model" in params:
        log.info("run settings from the hyper_parameters of %s", ckpt)
        return OmegaConf.create(params)
    return None


def resolve_settings(cfg: DictConfig, ckpt: Path) -> tuple[DictConfig, DictConfig]:
    """(model config, data config) of this evaluation (see the module docstring)."""
    saved = saved_run_config(ckpt)
    model = saved.model if saved is not None and saved.get("model") else cfg.model
    data = cfg.get("data")
    if data is None and saved is not None:
        data = saved.get("data")
    if data is None:
        raise PdfgcError(f"{ckpt}: no data settings saved with it; give data=synthetic or "
                         "data=voxceleb2 (and data.root=...)")
    return model, data


def build_datamodule(data_cfg: DictConfig, cfg: DictConfig):
    """The DataModule of ``data_cfg`` without the training-only inputs (augmented copies,
    negative mel windows), with the evaluation's batch size and workers if set. The source
    (appearance) frame is always another frame of the target's clip: self-reconstruction."""
    overrides = {"augment": None, "negatives": 0, "source": "clip"}
    for key in ("batch_size", "num_workers"):
        if cfg.get(key) is not None:
            overrides[key] = cfg[key]
    datamodule = instantiate(data_cfg, **overrides)
    datamodule.prepare_data()
    return datamodule


def data_key(data_cfg: DictConfig, cfg: DictConfig, root: Path, batch_size: int) -> str:
    """Hash of what fixes the evaluated real samples: data settings, split, sample count and
    the dataset's manifest (names cached real-data statistics)."""
    settings = OmegaConf.to_container(data_cfg, resolve=True)
    settings = {k: v for k, v in settings.items() if k not in LOADER_ONLY}
    manifest = (root / "manifest.jsonl").read_bytes()
    return digest({"data": settings, "split": cfg.split, "max_batches": cfg.max_batches,
                   "batch_size": batch_size, "manifest": manifest.hex()})


def save_run_config(cfg: DictConfig, model_cfg: DictConfig, data_cfg: DictConfig,
                    path: Path) -> None:
    """Write the evaluation's resolved config, with the model and data settings it used."""
    settings = OmegaConf.create({**OmegaConf.to_container(cfg, resolve=True),
                                 "model": model_cfg, "data": data_cfg})
    save_config(settings, path)


def stream_frames(metrics: list[Metric], loader, renderer: EvalRenderer, cfg: DictConfig
                  ) -> int:
    """Feed rendered test batches to the frame metrics; returns the number of frames."""
    total = len(loader) if cfg.max_batches is None else min(len(loader), cfg.max_batches)
    frames = 0
    for number, data in enumerate(tqdm(loader, total=total, desc="frames", unit="batch",
                                       disable=not cfg.progress)):
        if number == total:
            break
        batch = renderer.frame_batch(data)
        for metric in metrics:
            metric.update(batch)
        frames += len(data["target"])
    return frames


def stream_clips(metrics: list[Metric], dataset, renderer: EvalRenderer, cfg: DictConfig
                 ) -> int:
    """Feed whole rendered test clips to the clip metrics; returns the number of clips."""
    clips = 0
    for clip, other in tqdm(select_clips(dataset.index, cfg.split, cfg.max_clips),
                            desc="clips", unit="clip", disable=not cfg.progress):
        try:
            sample = renderer.clip_sample(dataset.index, clip, other, dataset.crop,
                                          cfg.clip_frames)
        except (UnreadableClip, PdfgcError) as err:
            log.warning("skipping clip %s: %s", dataset.index.records[clip].clip, err)
            continue
        for metric in metrics:
            metric.update(sample)
        clips += 1
    return clips


def run(cfg: DictConfig) -> dict:
    """Evaluate ``cfg.ckpt`` with the ``eval`` metrics; returns the record appended to
    ``results_file`` (time, checkpoint, data, counts, results, details)."""
    if not cfg.get("ckpt"):
        raise PdfgcError("ckpt= is required: a pdfgc .ckpt or the folder of the four released "
                         "PD-FGC files")
    check_choice("split", cfg.split, SPLITS)
    ckpt = Path(cfg.ckpt)
    check_weights_path(ckpt)
    started = time.time()
    model_cfg, data_cfg = resolve_settings(cfg, ckpt)
    check_image_size(model_cfg, data_cfg)
    unavailable = check_outside(cfg.eval.metrics, cfg.weights, cfg.eval.skip_unavailable)
    output_dir = Path(cfg.paths.output_dir)
    save_run_config(cfg, model_cfg, data_cfg, output_dir / "config.yaml")

    # the data (its root read, or generated) and the metrics' outside weights before the model
    device = resolve_device(cfg.device)
    datamodule = build_datamodule(data_cfg, cfg)
    dataset = datamodule.dataset(cfg.split)
    ctx = MetricContext(
        device=device, output_dir=output_dir, cache_dir=Path(cfg.cache_dir),
        data_key=data_key(data_cfg, cfg, datamodule.root, datamodule.batch_size),
        factor_names=tuple(dataset.factor_names), data_root=datamodule.root,
        crop=dataset.crop, weights=dict(cfg.weights), progress=cfg.progress)
    options = cfg.eval.get("options")
    options = {} if options is None else OmegaConf.to_container(options, resolve=True)
    names = [name for name in cfg.eval.metrics if name not in unavailable]
    metrics, skipped = build_metrics(names, ctx, {k: v for k, v in options.items()
                                                  if k not in unavailable},
                                     cfg.eval.skip_unavailable)
    skipped |= unavailable
    if not metrics:
        raise PdfgcError(f"no metric of eval={cfg.eval.name} can run here: {skipped}")

    model = TalkingHeadModel.from_config(model_cfg, str(ckpt), cfg.noise_seed).to(device)
    renderer = EvalRenderer(model, chunk=datamodule.batch_size, cross=cfg.cross_identity)
    by_stream = {s: [m for m in metrics if m.stream == s] for s in ("frames", "clips")}
    with torch.no_grad():
        frames = clips = 0
        if by_stream["frames"]:
            loader = getattr(datamodule, f"{cfg.split}_dataloader")()
            frames = stream_frames(by_stream["frames"], loader, renderer, cfg)
        if by_stream["clips"]:
            clips = stream_clips(by_stream["clips"], dataset, renderer, cfg)
        computed = [metric.compute() for metric in metrics]

    record = {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "ckpt": str(ckpt.resolve()), "model": model_cfg.get("name"),
        "data": str(datamodule.root), "split": cfg.split, "eval": cfg.eval.name,
        "frames": frames, "clips": clips, "skipped": skipped,
        "results": {k: v for c in computed for k, v in c.results.items()},
        "details": {k: v for c in computed for k, v in c.details.items()},
        "seconds": round(time.time() - started, 1),
    }
    results_file = Path(cfg.results_file)  # rewritten whole and atomically: no half line
    previous = read_jsonl(results_file) if results_file.is_file() else []
    write_jsonl(results_file, [*previous, record])
    print(summary(record, [c.report for c in computed if c.report]))
    log.info("results appended to %s", results_file)
    return record


def summary(record: dict, reports: list[str]) -> str:
    """The printed summary: what was evaluated, the figures, skipped metrics, reports."""
    head = (f"{record['ckpt']} on {record['data']} [{record['split']}]: "
            f"{record['frames']} frames, {record['clips']} clips")
    table = format_table(["metric", "value"],
                         [[k, format_value(v)] for k, v in record["results"].items()])
    skipped = [f"skipped {name}: {why}" for name, why in record["skipped"].items()]
    return "\n\n".join([head, table, *skipped, *reports])
