"""Data throughput beside the training step it must outpace.

Makes two temporary datasets, 8 train identities x 2 clips each: synthetic talking heads at
64 px (``pdfgc.data.synthetic``) and real-photo clips at 224 px (the astronaut portrait
swaying, with speech, written by the test suite's fixture helper). Prints the samples/s of
the DataModule's train loader (``data=synthetic`` settings at 64 px, ``data=voxceleb2`` at
224 px) with 0 and 2 workers, and of a proxy training step: forward and backward of the
appearance encoder, motion encoder and generator (``model=tiny`` at 64 px, ``model=official``
at 224 px), an L1 loss and an Adam step.

    python benchmarks/data.py [--batches 8] [--workers 2 4] [--device cuda]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig

from pdfgc.data.manifest import write_manifest
from pdfgc.data.synthetic.generate import generate_dataset
from pdfgc.features import SAMPLE_RATE, mel_spectrogram, normalize_rms
from pdfgc.networks import build_networks
from pdfgc.samples import driver_frames, portrait, speech

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from test_datamodule import write_clip  # noqa: E402  (the tests' dataset fixture helper)

SETTINGS = {64: ("synthetic", "tiny"), 224: ("voxceleb2", "official")}  # data, model configs
CODE_ORDER = ("mouth", "emotion", "eye", "pose")  # style = [appearance | these]


def write_portrait_dataset(root: Path, identities: int, clips: int, seconds: float) -> None:
    """224 px: ``identities`` x ``clips`` train clips and one val clip, each a shifted portrait."""
    base = driver_frames(portrait(), seconds)  # (N, 224, 224, 3)
    mel = mel_spectrogram(normalize_rms(np.resize(speech(), int(seconds * SAMPLE_RATE))))
    records = []
    for n in range(identities * clips + 1):
        frames = np.roll(base, (7 * n) % 30 - 15, axis=2)
        split = "val" if n == identities * clips else "train"
        identity = f"id{n // clips:03d}"
        records.append(write_clip(root, f"{identity}/{n:03d}", identity, split, frames, mel))
    write_manifest(root, records)


def make_dataset(root: Path, size: int, seconds: float) -> None:
    """Synthetic talking heads at 64 px, portrait clips at 224 px; 8 x 2 train clips each."""
    if size == 64:
        generate_dataset(root, num_identities=10, clips_per_identity=2, seconds=seconds,
                         image_size=size, val_identities=1, test_identities=1, workers=2)
    else:
        write_portrait_dataset(root, identities=8, clips=2, seconds=seconds)


def data_config(name: str, root: Path, workers: int) -> DictConfig:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = compose(overrides=[f"+data={name}", "+paths=default"])
    cfg.data.root, cfg.data.num_workers, cfg.data.generate = str(root), workers, None
    return cfg.data


def loader_rate(data_cfg, batches: int) -> float:
    """Samples/s of the train loader over a fresh epoch of ``batches`` batches per worker
    (worker start-up included; asking more of each worker than it prefetches)."""
    batches *= max(1, data_cfg.num_workers)
    dm = instantiate(data_cfg, samples_per_epoch={"train": batches * data_cfg.batch_size})
    dm.setup("fit")
    start = time.perf_counter()
    count = sum(len(batch["target"]) for batch in dm.train_dataloader())
    return count / (time.perf_counter() - start)


def step_rate(model: str, batch: int, device: torch.device, reps: int) -> float:
    """Samples/s of forward + backward + Adam of appearance, motion and generator."""
    with initialize_config_dir(config_dir=str(ROOT / "conf" / "model"), version_base=None):
        cfg = compose(model)
    torch.manual_seed(0)
    nets = build_networks(cfg, ("appearance", "motion", "generator")).to(device).train()
    optimizer = torch.optim.Adam(nets.parameters(), lr=1e-4, betas=(0.0, 0.99))
    size = cfg.image_size
    source, target = (torch.rand(batch, 3, size, size, device=device) * 2 - 1 for _ in "st")

    def step() -> None:
        appearance, motion = nets.appearance(source), nets.motion(target)
        style = torch.cat([appearance["vector"], *(motion[k] for k in CODE_ORDER)], dim=1)
        loss = (nets.generator(style, appearance["map"]) - target).abs().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up
    _sync(device)
    start = time.perf_counter()
    for _ in range(reps):
        step()
    _sync(device)
    return batch * reps / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=8,
                        help="timed loader batches per worker")
    parser.add_argument("--workers", type=int, nargs="+", default=[2],
                        help="worker counts to time besides 0")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--step-batch", type=int, nargs=2, default=None, metavar=("B64", "B224"),
                        help="proxy step batches (default: the data configs' batch sizes on "
                             "GPU, 16 and 4 on CPU)")
    parser.add_argument("--reps", type=int, default=2, help="timed proxy steps")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each clip")
    args = parser.parse_args()
    device = torch.device(args.device)
    workers = sorted({0, *args.workers})
    step_batch = dict(zip(SETTINGS, args.step_batch or ((16, 32) if device.type == "cuda"
                                                         else (16, 4)), strict=True))
    print(f"device: {device}, torch threads: {torch.get_num_threads()}, "
          f"clips of {args.seconds:.1f} s")

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size, (data_name, model_name) in SETTINGS.items():
            root = Path(tmp) / str(size)
            start = time.perf_counter()
            make_dataset(root, size, args.seconds)
            print(f"{size} px dataset written in {time.perf_counter() - start:.1f} s")
            loader = {w: loader_rate(data_config(data_name, root, w), args.batches)
                      for w in workers}
            step = step_rate(model_name, step_batch[size], device, args.reps)
            rows.append((size, data_name, model_name, loader, step))

    print(f"\nsamples/s{'':30s}" + "".join(f"{f'{w} workers':>11s}" for w in workers)
          + f"{'train step':>12s}{'workers needed':>16s}")
    for size, data_name, model_name, loader, step in rows:
        needed = math.ceil(step / loader[0])  # the in-process rate is one worker's rate
        print(f"{size:3d} px, data={data_name}, model={model_name}".ljust(39)
              + "".join(f"{loader[w]:11.1f}" for w in workers) + f"{step:12.1f}{needed:16d}")
    print(f"train step: proxy, batches {step_batch[64]} and {step_batch[224]}, on {device}; "
          "workers needed: train step / the 0-worker loader rate")


if __name__ == "__main__":
    main()
