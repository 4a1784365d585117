"""Training callbacks and plugins: image grids every N steps, checkpoints that always hold
the final step, atomic checkpoint writes, the random states in checkpoints, a record of the
samples every step trained on."""

from __future__ import annotations

import json
import random
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


class RandomState(pl.Callback):
    """Puts the random states (Python, NumPy, torch CPU and CUDA) in every checkpoint and
    restores them when a resumed run starts training, so its noise draws continue those of
    the run it resumes. Every rank is seeded alike and draws alike, so rank zero's states,
    the ones saved, are every rank's."""

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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": trainer.global_step, "epoch": trainer.current_epoch,
                                **ids}) + "\n")


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
