"""Training callbacks and plugins: image grids every N steps, checkpoints that always hold
the final step, atomic checkpoint writes, the random states in checkpoints, a record of the
samples every step trained on, a run's loss curves."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytorch_lightning as pl
import torch
import torchvision
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger
from pytorch_lightning.plugins.io import TorchCheckpointIO
from pytorch_lightning.utilities import rank_zero_only

from pdfgc.io import append_jsonl, atomic_path, atomic_save


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images -> [0, 1], float32 on the CPU."""
    return ((images.detach().float().cpu() + 1) / 2).clamp(0, 1)


def image_grid(columns: Sequence[torch.Tensor]) -> torch.Tensor:
    """One row per sample, one column per (N, 3, H, W) tensor in [-1, 1] -> (3, H', W')."""
    tiles = torch.stack([to_unit(c) for c in columns], dim=1)  # (N, columns, 3, H, W)
    return torchvision.utils.make_grid(tiles.flatten(0, 1), nrow=len(columns), padding=2,
                                       pad_value=1.0)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Saves each checkpoint to a temporary sibling and renames it over the target, so a
    run killed mid-write (even ``kill -9``) leaves the previous ``last.ckpt`` intact.
    Remote (``scheme://``) paths keep Lightning's own fsspec writer."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path,
                        storage_options: Any | None = None) -> None:
        if "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
        else:
            atomic_save(checkpoint, path)


class FinalCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, plus a save of the step training stopped at.

    With ``every_n_train_steps`` alone, a run whose ``max_steps`` is not a multiple of it ends
    with ``last.ckpt`` at the last multiple (a demo stage of 700 steps kept the weights of
    step 500); here the final step is saved too, as ``<stage>-<step>.ckpt`` and ``last.ckpt``.
    """

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._should_skip_saving_checkpoint(trainer):
            candidates = self._monitor_candidates(trainer)
            self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)
        super().on_train_end(trainer, pl_module)


class RandomState(pl.Callback):
    """Puts the random states (Python, NumPy, torch CPU and CUDA) in every checkpoint and
    restores them when a resumed run starts training, so its draws from the global generators
    (dropout, say) continue those of the run it resumes (the generator's noise needs no state:
    it is drawn from the seed and the step). Every rank is seeded alike and draws as often, so
    rank zero's states, the ones saved, are every rank's."""

    def __init__(self):
        self.pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        kind, keys, *rest = np.random.get_state()  # as tensors and numbers: weights_only loads
        states = {"python": random.getstate(), "numpy": (kind, torch.from_numpy(keys), *rest),
                  "torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            states["cuda"] = torch.cuda.get_rng_state_all()
        return states

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.pending = state_dict

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.pending is None:
            return
        states, self.pending = self.pending, None
        random.setstate(states["python"])
        kind, keys, *rest = states["numpy"]
        np.random.set_state((kind, keys.numpy(), *rest))
        torch.set_rng_state(states["torch"])
        if "cuda" in states and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["cuda"])


class BatchRecord(pl.Callback):
    """Appends one JSON line per training step to ``path`` (rank zero's batch; None: off):
    the step and the ``clip``, ``frame`` and ``identity`` ids of its samples. A resumed run
    appends its own steps, so the file shows what every step of every attempt trained on."""

    def __init__(self, path: str | Path | None = None):
        self.path = None if path is None else Path(path)

    @rank_zero_only
    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                             batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        if self.path is None:
            return
        ids = {k: batch[k].tolist() for k in ("clip", "frame", "identity")}
        append_jsonl(self.path, {"step": trainer.global_step, "epoch": trainer.current_epoch,
                                 **ids})


class ImageLogger(pl.Callback):
    """Every ``every_n_steps`` training steps (and at the first), on rank zero: the grids of
    the module's ``log_images(batch)`` go to TensorBoard / W&B as ``train/image/<name>`` and
    to ``<folder>/<name>-<step>.png``."""

    def __init__(self, every_n_steps: int = 2000, max_images: int = 8,
                 folder: str | Path | None = None):
        self.every_n_steps = every_n_steps
        self.max_images = max_images
        self.folder = None if folder is None else Path(folder)

    @rank_zero_only
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        step = trainer.global_step
        if self.every_n_steps <= 0 or (step % self.every_n_steps and step != 1):
            return
        for name, grid in pl_module.log_images(batch, self.max_images).items():
            self.write(name, grid, step, trainer)

    def write(self, name: str, grid: torch.Tensor, step: int, trainer: pl.Trainer) -> None:
        """Send one (3, H, W) grid in [0, 1] to the loggers and the PNG folder."""
        image = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)  # (H, W, 3)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(f"train/image/{name}", grid, step)
            elif isinstance(logger, WandbLogger):
                logger.log_image(key=f"train/image/{name}", images=[image], step=step)
        if self.folder is not None:
            with atomic_path(self.folder / f"{name}-{step:07d}.png") as tmp:
                if not cv2.imwrite(str(tmp), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
                    raise OSError(f"{tmp}: could not write the image")


class LossCurves(pl.Callback):
    """The ``train/loss/*`` and ``val/loss/*`` values loggers get (at every logging step and
    validation), kept in checkpoints so a resumed run's curves start at the run's first step.
    At the end of fit (or when it stops on an error), rank zero draws them to ``path``, a PNG
    with a panel per term (train and val; log scale where all values are positive), and
    writes them beside it as JSON (``{key: [[step, value], ...]}``)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.history: dict[str, dict[int, float]] = {}

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """The checkpoint's history, plus the points up to its last step that it lacks from
        the JSON the run wrote: a validation runs after the checkpoint of its step is saved."""
        self.history = state_dict["history"]
        last = max((step for points in self.history.values() for step in points), default=-1)
        written = self.path.with_suffix(".json")
        for key, points in (json.loads(written.read_text()) if written.is_file() else {}).items():
            for step, value in points:
                if step <= last:
                    self.history.setdefault(key, {}).setdefault(step, value)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer._logger_connector.should_update_logs:  # as Lightning's LearningRateMonitor
            self.record(trainer, "train")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.record(trainer, "val")

    def record(self, trainer: pl.Trainer, split: str) -> None:
        """Keep the ``{split}/loss/*`` values of ``trainer.callback_metrics`` at the step the
        loggers get them at."""
        step = trainer.fit_loop.epoch_loop._batches_that_stepped  # the step loggers get
        for key, value in trainer.callback_metrics.items():
            if key.startswith(f"{split}/loss/"):
                self.history.setdefault(key, {})[step] = float(value)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.write()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        self.write()

    @rank_zero_only
    def write(self) -> None:
        """The PNG and its JSON, written atomically (nothing before a loss was logged)."""
        if not self.history:
            return
        from matplotlib.figure import Figure  # drawn with Agg, no GUI backend

        series = {key: sorted(points.items()) for key, points in sorted(self.history.items())}
        terms = sorted({key.split("/", 2)[2] for key in series}, key=lambda t: (t != "total", t))
        columns = min(3, len(terms))
        rows = math.ceil(len(terms) / columns)
        figure = Figure(figsize=(4 * columns, 3 * rows), layout="constrained")
        panels = figure.subplots(rows, columns, squeeze=False).ravel()
        for axes, term in zip(panels, terms, strict=False):
            values: list[float] = []
            for split in ("train", "val"):
                if points := series.get(f"{split}/loss/{term}"):
                    steps, split_values = zip(*points, strict=True)
                    axes.plot(steps, split_values, ".-", markersize=4, label=split)
                    values += split_values
            if all(value > 0 for value in values):
                axes.set_yscale("log")
            axes.set(title=term, xlabel="step")
            axes.legend()
        for axes in panels[len(terms):]:
            axes.remove()
        with atomic_path(self.path) as tmp:
            figure.savefig(tmp, dpi=100)
        with atomic_path(self.path.with_suffix(".json")) as tmp:
            tmp.write_text(json.dumps(series))
