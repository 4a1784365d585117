"""Training steps/s of every stage: ``model=tiny`` (64 px) on the CPU, and ``model=official``
(224 px) on a GPU when there is one.

Each stage is built from the real configs (``conf/train.yaml``, ``stage=<name>``) and fitted
by a Lightning Trainer on one fixed random batch with every key of the data contract, kept on
the device, so the figure is the training step alone (D step, G step, logging) without data
loading. The official size runs with the VGG term on (random VGG19 weights: the same cost as
the real ones).

    python benchmarks/train.py [--steps 10] [--warmup 3] [--tiny-batch 8] [--threads N]
                               [--official-batch 16] [--precision 32-true] [--stages ...]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
import torchvision
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from pdfgc.train import build_module

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("identity", "trunk", "motion", "heads", "expression")


class StepTimer(pl.Callback):
    """Wall time of the training steps after the first ``warmup``."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.end, self.steps = warmup, 0.0, 0.0, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        if batch_idx + 1 == self.warmup:
            self.start = time.perf_counter()
        elif batch_idx + 1 > self.warmup:
            self.end, self.steps = time.perf_counter(), batch_idx + 1 - self.warmup


def random_batch(batch: int, size: int, window: int, negatives: int, identities: int,
                 device: torch.device) -> dict[str, torch.Tensor]:
    """One batch with the DataModule's keys and shapes, images in [-1, 1]."""
    gen = torch.Generator().manual_seed(0)

    def images(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, 3, size, size, generator=gen) * 2 - 1

    out = {k: images(batch) for k in ("source", "target", "target_motion", "target_motion2",
                                      "eye_anchor", "eye_positive", "eye_negative")}
    out |= {
        "mel": torch.rand(batch, 1, 80, 20, generator=gen),
        "mel_negatives": torch.rand(batch, negatives, 1, 80, 20, generator=gen),
        "window": images(batch, window),
        "window_mel": torch.rand(batch, window, 1, 80, 20, generator=gen),
        "pose": torch.randn(batch, 6, generator=gen),
        "blink": torch.rand(batch, generator=gen),
        "gaze": torch.rand(batch, 2, generator=gen) * 2 - 1,
        "gaze_known": torch.ones(batch, dtype=torch.bool),
        "landmarks": torch.rand(batch, 68, 2, generator=gen) * size,
        "identity": torch.randint(identities, (batch,), generator=gen),
    }
    return {k: v.to(device) for k, v in out.items()}


def random_vgg_file(folder: Path) -> Path:
    """A torchvision-layout VGG19 features file with random weights."""
    path = folder / "vgg19-random.pth"
    features = torchvision.models.vgg19(weights=None).features.state_dict()
    torch.save({f"features.{k}": v for k, v in features.items()}, path)
    return path


def stage_config(stage: str, model: str, vgg: Path | None) -> DictConfig:
    overrides = [f"stage={stage}", f"model={model}", "stage.init_from=null",
                 f"++loss.vgg_weights={vgg if vgg else 'null'}"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        return compose("train", overrides=overrides)


def steps_per_second(cfg: DictConfig, batch: int, device: torch.device, precision: str,
                     steps: int, warmup: int) -> float:
    """Fit the stage for ``warmup + steps`` steps on one batch; steps/s after warm-up."""
    module = build_module(cfg)
    data = random_batch(batch, cfg.model.image_size, cfg.data.emotion_window,
                        cfg.data.negatives, cfg.model.appearance.num_identities, device)
    timer = StepTimer(warmup)
    trainer = pl.Trainer(accelerator=device.type, devices=1, precision=precision,
                         max_steps=warmup + steps, limit_val_batches=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[timer])
    loader = DataLoader([data] * (warmup + steps), batch_size=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, train_dataloaders=loader)
    return timer.steps / (timer.end - timer.start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--tiny-batch", type=int, default=8)
    parser.add_argument("--official-batch", type=int, default=16)
    parser.add_argument("--precision", default="32-true", help="official size only")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU intra-op threads (default: PyTorch's, one per core)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_float32_matmul_precision("high")
    rows = []
    runs = [("tiny", torch.device("cpu"), args.tiny_batch, "32-true")]
    if torch.cuda.is_available():
        runs.append(("official", torch.device("cuda"), args.official_batch, args.precision))
    with tempfile.TemporaryDirectory() as tmp:
        for model, device, batch, precision in runs:
            vgg = random_vgg_file(Path(tmp)) if model == "official" else None
            for stage in args.stages:
                rate = steps_per_second(stage_config(stage, model, vgg), batch, device,
                                        precision, args.steps, args.warmup)
                rows.append((stage, model, device.type, batch, precision, rate))
                print(f"{stage:>10} {model:>8}: {rate:.2f} steps/s", flush=True)
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    print(f"\ntraining steps/s ({args.steps} steps after {args.warmup} warm-up; "
          f"{torch.get_num_threads()} CPU threads; GPU: {name})")
    print("| stage | model | device | batch | precision | steps/s | samples/s |\n"
          "|---|---|---|---|---|---|---|")
    for stage, model, device, batch, precision, rate in rows:
        print(f"| {stage} | {model} | {device} | {batch} | {precision} | {rate:.2f} | "
              f"{rate * batch:.1f} |")
    if not torch.cuda.is_available():
        print("model=official: skipped (no GPU)")


if __name__ == "__main__":
    main()
