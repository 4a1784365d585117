"""The Lightning DataModule of every stage: VoxCeleb2 crops or the synthetic talking heads.

Both datasets follow the manifest contract (``pdfgc.data.manifest``); synthetic data is
generated in ``prepare_data`` when ``generate`` is set and the folder has none yet.

Epochs, DDP and resume: sample ``i`` of epoch ``e`` is fixed by ``(seed, e, i)`` (see
``pdfgc.data.datasets``), so the loaders do not shuffle. Training batches come from
:class:`StepSampler`: step ``b`` of an epoch is samples ``[b*B*W, (b+1)*B*W)`` whatever the
number of processes ``W``, each rank taking its own block of ``B``, and a run resumed mid-epoch
starts at the step its checkpoint stopped at. The training set moves to the next epoch's
samples through :class:`DataEpochCallback`, which ``setup`` adds to the trainer (once) for you.
Validation and test loaders are sequential; under DDP Lightning gives each rank its share.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from pdfgc.data.datasets import ClipIndex, TalkingHeadDataset
from pdfgc.data.manifest import SPLITS
from pdfgc.errors import PdfgcError

STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",),
                "predict": ()}


class DataEpochCallback(pl.Callback):
    """Moves the DataModule's training set to the trainer's epoch when an epoch starts."""

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule = trainer.datamodule
        if isinstance(datamodule, VoxCeleb2DataModule):
            datamodule.set_epoch(trainer.current_epoch)


class StepSampler(DistributedSampler):
    """The training order of one process: at step ``b`` of an epoch, rank ``r`` of ``W`` takes
    samples ``b*B*W + r*B ... + B - 1``, so the ranks together see exactly the batch of one
    process with batch ``B*W``. The first pass starts at step ``start_step`` (a resumed run's
    position in its epoch); later epochs start at 0. An incomplete last step is dropped.

    A ``DistributedSampler``, so Lightning keeps it under DDP instead of replacing it.
    """

    def __init__(self, dataset: Dataset, batch_size: int, num_replicas: int = 1, rank: int = 0,
                 start_step: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        self.batch_size = batch_size
        self.steps = len(dataset) // (batch_size * num_replicas)
        if self.steps == 0:
            raise PdfgcError(
                f"data.samples_per_epoch.train={len(dataset)} is less than one step: "
                f"{batch_size} (data.batch_size) x {num_replicas} processes")
        self.start_step = start_step

    def __len__(self) -> int:
        return self.steps * self.batch_size

    def __iter__(self):
        start, self.start_step = self.start_step, 0
        per_step = self.batch_size * self.num_replicas
        firsts = (b * per_step + self.rank * self.batch_size for b in range(start, self.steps))
        return iter([i for first in firsts for i in range(first, first + self.batch_size)])


class VoxCeleb2DataModule(pl.LightningDataModule):
    """Train / val / test loaders of :class:`TalkingHeadDataset` over a manifest's splits.

    Args:
        root: dataset folder (``manifest.jsonl``, mp4s, label npzs).
        image_size, crop: network image side and whether the released crop rule applies.
        batch_size, num_workers: per loader; workers persist between epochs.
        samples_per_epoch: ``{"train": n, "val": n, "test": n}``; a missing or null entry
            means one sample per clip of that split.
        seed: fixes every sample (training samples also depend on the epoch; validation and
            test samples are the same every time).
        emotion_window, negatives, augment, eye_augment, cache_mb, readers, source: passed to
            :class:`TalkingHeadDataset` (``augment``: :class:`MotionAugment` options, those
            left out at the released values; null for no augmentation).
        generate: synthetic data only, the keyword arguments of
            ``pdfgc.data.synthetic.generate.ensure_dataset`` (called in ``prepare_data``).
    """

    def __init__(
        self,
        root: str | Path,
        image_size: int = 224,
        crop: bool = True,
        batch_size: int = 32,
        num_workers: int = 8,
        samples_per_epoch: Mapping[str, int | None] | None = None,
        seed: int = 2021,
        emotion_window: int = 5,
        negatives: int = 4,
        augment: Mapping[str, float] | None = None,
        eye_augment: bool = False,
        cache_mb: float = 0.0,
        readers: int = 8,
        source: str = "clip",
        generate: Mapping | None = None,
    ):
        super().__init__()
        if batch_size < 1:
            raise PdfgcError(f"data.batch_size must be at least 1, got {batch_size}")
        self.save_hyperparameters(logger=False)
        self.root = Path(root)
        self.batch_size, self.num_workers = batch_size, num_workers
        self.samples_per_epoch = dict(samples_per_epoch or {})
        self.generate = dict(generate) if generate else None
        self.dataset_options = {
            "image_size": image_size, "crop": crop, "seed": seed,
            "emotion_window": emotion_window, "negatives": negatives,
            "augment": None if augment is None else dict(augment),
            "eye_augment": eye_augment, "cache_mb": cache_mb, "readers": readers,
            "source": source,
        }
        self.index: ClipIndex | None = None
        self.datasets: dict[str, TalkingHeadDataset] = {}

    def prepare_data(self) -> None:
        """Generate the synthetic dataset if ``generate`` is set and it is not there yet."""
        if self.generate is not None:
            from pdfgc.data.synthetic.generate import ensure_dataset  # only synthetic data

            ensure_dataset(self.root, **self.generate)

    def setup(self, stage: str | None = None) -> None:
        """Read the manifest once and build the datasets ``stage`` needs (all for None)."""
        for split in STAGE_SPLITS[stage] if stage else SPLITS:
            self.dataset(split)
        trainer = self.trainer
        if stage == "fit" and trainer is not None and not any(
                isinstance(c, DataEpochCallback) for c in trainer.callbacks):
            trainer.callbacks.append(DataEpochCallback())

    def dataset(self, split: str) -> TalkingHeadDataset:
        """The dataset of ``split``, built on first use (a one-line error if it is empty)."""
        if split not in self.datasets:
            if self.index is None:
                self.index = ClipIndex.from_manifest(self.root)
            self.datasets[split] = TalkingHeadDataset(
                self.index, split, samples_per_epoch=self.samples_per_epoch.get(split),
                **self.dataset_options)
        return self.datasets[split]

    def set_epoch(self, epoch: int) -> None:
        """Make the training loader yield epoch ``epoch``'s samples."""
        self.dataset("train").set_epoch(epoch)

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        world, rank = (1, 0) if trainer is None else (trainer.world_size, trainer.global_rank)
        sampler = StepSampler(self.dataset("train"), self.batch_size, world, rank)
        if trainer is not None:
            epoch = trainer.current_epoch
            if trainer.fit_loop.epoch_loop.restarting:  # resumed: continue where it stopped
                done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
                if done < sampler.steps:
                    sampler.start_step = done
                else:  # saved at the end of its epoch (the first batch is fetched before
                    epoch += 1  # the next epoch's start sets it)
            self.set_epoch(epoch)
        return self._loader("train", sampler, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def _loader(self, split: str, sampler: StepSampler | None = None,
                drop_last: bool = False) -> DataLoader:
        return DataLoader(
            self.dataset(split),
            batch_size=self.batch_size,
            sampler=sampler,  # no shuffling: sample i is already drawn from (seed, epoch, i)
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            drop_last=drop_last,
            # its own generator: starting an epoch's iterator draws no number from the global
            # one, whose draws (the generator's noise) a resumed run must continue exactly
            generator=torch.Generator().manual_seed(self.dataset_options["seed"]),
        )
