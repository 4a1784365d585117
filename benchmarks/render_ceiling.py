"""How good can a render get in N training steps? The demo's ceiling for its image targets.

E_app and G0 of ``experiment=demo`` (``model=tiny``; its optimiser at a constant rate, its
batch and data) are trained on the easiest form of the rendering task: rebuilding a frame
from that very frame (f_mot set to zero: no motion to learn) with pixel L1 alone. Every
``--every`` steps the held-out test speakers' frames are rebuilt, and PSNR and SSIM printed
beside copying the source frame (the demo's yardstick: another frame of the same clip). The
demo's chain has the harder task, rebuilding the target from its source frame through the
motion codes, in ``steps.motion + steps.expression`` steps of G (2,500; the plot marks
them): what this cannot reach in that many steps, the chain cannot be expected to.

    python benchmarks/render_ceiling.py [--steps 5000] [--every 500] [--batches 20]
                                        [--out outputs/bench/render_ceiling] [overrides ...]

Writes ``ceiling.json``, ``ceiling.png`` (PSNR and SSIM against steps) and the resolved
``config.yaml`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from matplotlib.figure import Figure
from omegaconf import OmegaConf
from tqdm import tqdm

from pdfgc.evaluate import build_datamodule
from pdfgc.io import atomic_path, save_config, write_text
from pdfgc.metrics.psnr_ssim import psnr, ssim
from pdfgc.networks import STAGE1_GENERATOR, build_training_networks

ROOT = Path(__file__).resolve().parents[1]


def rebuild(nets: torch.nn.ModuleDict, images: torch.Tensor) -> torch.Tensor:
    """G0's render of each image from its own appearance, with f_mot set to zero."""
    appearance = nets.appearance(images)
    generator = nets[STAGE1_GENERATOR]
    vector = appearance["vector"]
    motion = vector.new_zeros(len(images), generator.style_dim - vector.shape[1])
    return generator(torch.cat([vector, motion], dim=1), appearance["map"])


def mean_scores(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
    """Mean PSNR and SSIM over (image, target) batches."""
    return {name: torch.cat([score(image, target) for image, target in pairs]).mean().item()
            for name, score in (("psnr", psnr), ("ssim", ssim))}


@torch.no_grad()
def held_out_scores(nets: torch.nn.ModuleDict, batches: list[dict]) -> dict[str, float]:
    """Mean PSNR and SSIM of the rebuilt test frames against themselves."""
    nets.eval()
    scores = mean_scores([(rebuild(nets, b["target"]), b["target"]) for b in batches])
    nets.train()
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--every", type=int, default=500)
    parser.add_argument("--batches", type=int, default=20, help="held-out batches scored")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs/bench/render_ceiling")
    parser.add_argument("overrides", nargs="*", help="train.py overrides, e.g. seed=1")
    args = parser.parse_args()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = compose("train", overrides=["experiment=demo", "stage=motion",
                                          *args.overrides])
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.torch_threads)
    data = build_datamodule(cfg.data, OmegaConf.create())  # as evaluate.py reads the test set
    data.setup("fit")
    data.setup("test")
    test = []
    for batch in data.test_dataloader():
        test.append({k: batch[k] for k in ("target", "source")})
        if len(test) == args.batches:
            break
    copy = mean_scores([(b["source"], b["target"]) for b in test])
    nets = build_training_networks(cfg.model, ["appearance", STAGE1_GENERATOR]).train()
    optimizer = instantiate(cfg.stage.optimizer)(nets.parameters())
    used = {k: OmegaConf.to_container(node, resolve=True) for k, node in
            (("model", cfg.model), ("data", cfg.data), ("optimizer", cfg.stage.optimizer))}
    save_config({**used, "seed": cfg.seed, **{k: str(v) for k, v in vars(args).items()}},
                args.out / "config.yaml")
    curve, step, epoch = [], 0, 0
    with tqdm(total=args.steps, desc="rebuilding frames from themselves") as bar:
        while step < args.steps:
            data.set_epoch(epoch)
            epoch += 1
            for batch in data.train_dataloader():
                target = batch["target"]
                loss = (rebuild(nets, target) - target).abs().mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                bar.update()
                bar.set_postfix(l1=f"{loss.item():.3f}")
                if step % args.every == 0:
                    curve.append({"step": step, **held_out_scores(nets, test)})
                    bar.write(f"step {step}: PSNR {curve[-1]['psnr']:.2f} dB, "
                              f"SSIM {curve[-1]['ssim']:.3f}")
                if step == args.steps:
                    break
    budget = cfg.steps.motion + cfg.steps.expression
    result = {"copying_the_source": copy, "demo_generator_steps": budget, "curve": curve}
    write_text(args.out / "ceiling.json", json.dumps(result, indent=1))
    plot(result, args.out / "ceiling.png")
    print(f"\nrebuilding held-out frames from themselves (E_app + G0 of model={cfg.model.name}, "
          f"batch {cfg.data.batch_size}, {len(test) * cfg.data.batch_size} test frames)")
    print("| steps | PSNR (dB) | SSIM |\n|---|---|---|")
    for point in curve:
        print(f"| {point['step']} | {point['psnr']:.2f} | {point['ssim']:.3f} |")
    print(f"| copying the source frame | {copy['psnr']:.2f} | {copy['ssim']:.3f} |")
    print(f"the demo trains G for {budget} steps (steps.motion + steps.expression)")
    print(f"written to {args.out}")


def plot(result: dict, path: Path) -> None:
    """PSNR and SSIM against steps, with copying the source as a line."""
    steps = [p["step"] for p in result["curve"]]
    figure = Figure(figsize=(9, 3.5))
    axes = figure.subplots(1, 2)
    for ax, key, unit in zip(axes, ("psnr", "ssim"), (" (dB)", ""), strict=True):
        ax.plot(steps, [p[key] for p in result["curve"]], "o-", label="rebuilt from itself")
        ax.axhline(result["copying_the_source"][key], color="grey", ls="--",
                   label="copying the source frame")
        ax.axvline(result["demo_generator_steps"], color="tab:red", ls=":",
                   label="the demo's steps of G (stages 1 and 3)")
        ax.set_xlabel("training steps")
        ax.set_ylabel(key.upper() + unit)
    axes[0].legend()
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=100)


if __name__ == "__main__":
    main()
