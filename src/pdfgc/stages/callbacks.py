"""Training callbacks and plugins: image grids every N steps, checkpoints that always hold
the final step, atomic checkpoint writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger
from pytorch_lightning.plugins.io import TorchCheckpointIO
from pytorch_lightning.utilities import rank_zero_only

from pdfgc.media import atomic_path
from pdfgc.networks.checkpoints import atomic_save


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
