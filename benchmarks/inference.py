"""Inference speed at official size (224 px, three distinct drivers), random official weights.

Prints the matrix-multiply rate of this machine (measured now), each module's time and
achieved GFLOP/s per frame, the frames/s this gives with the fast and the reference
modulated convolution, and the end-to-end frames/s of ``infer.py``'s pipeline.

    python benchmarks/inference.py [--batch 8] [--frames 24] [--device cpu]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch.utils.flop_counter import FlopCounterMode

from pdfgc.features import FPS, SAMPLE_RATE
from pdfgc.inference.model import TalkingHeadModel
from pdfgc.inference.pipeline import Job, Renderer
from pdfgc.media import VideoWriter, probe_video, write_wav
from pdfgc.networks import build_networks
from pdfgc.samples import driver_frames, portrait, speech

CONF = Path(__file__).resolve().parents[1] / "conf"


def timed(fn, reps: int, device: torch.device) -> float:
    """Median seconds of ``fn()`` over ``reps`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def flops(fn) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def matmul_gflops(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 2048) -> float:
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device,
                                                                       dtype=dtype)
    return 2 * n**3 / timed(lambda: a @ b, 5, device) / 1e9


def module_table(model: TalkingHeadModel, batch: int, device: torch.device, reps: int):
    """Per-frame seconds and FLOPs of each module (motion counted once per driver)."""
    size = model.image_size
    images = torch.rand(batch, 3, size, size, device=device) * 2 - 1
    mels = torch.rand(batch, 1, 80, 20, device=device)
    appearance = model.encode_appearance(images[:1])
    codes = torch.randn(batch, model.nets.generator.style_dim - appearance["vector"].shape[1],
                        device=device)
    calls = {
        "appearance (once a video)": (lambda: model.encode_appearance(images[:1]), 1),
        "motion (per driver)": (lambda: model.encode_motion(images), batch),
        "audio": (lambda: model.encode_audio(mels), batch),
        "generator": (lambda: model.render(appearance, codes), batch),
    }
    rows = {}
    with torch.no_grad():
        for name, (fn, frames) in calls.items():
            rows[name] = (timed(fn, reps, device) / frames, flops(fn) / frames)
    return rows


def end_to_end(model: TalkingHeadModel, seconds: float, batch: int, device: str) -> float:
    """Frames/s of the whole pipeline (decode, encode, render, H.264) with three drivers."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        face = portrait()
        write_wav(tmp / "a.wav", speech()[: int(seconds * SAMPLE_RATE)], SAMPLE_RATE)
        drivers = []
        for i in range(3):  # three distinct clips
            with VideoWriter(tmp / f"d{i}.mp4", fps=FPS) as w:
                w.write(np.roll(driver_frames(face, seconds), 3 * i, axis=2))
            drivers.append(str(tmp / f"d{i}.mp4"))
        cv2.imwrite(str(tmp / "p.png"), face[:, :, ::-1])
        cfg = OmegaConf.create({"batch_size": batch, "precision": "fp32", "device": device,
                                "crop": True, "crf": 18, "panel": False, "progress": False,
                                "driver_policy": "loop"})
        job = Job(audio=str(tmp / "a.wav"), appearance=str(tmp / "p.png"),
                  output=str(tmp / "out.mp4"), pose=drivers[0], emotion=drivers[1], eye=drivers[2])
        renderer = Renderer(cfg, model)
        start = time.perf_counter()
        renderer.render(job)
        elapsed = time.perf_counter() - start
        return probe_video(job.output)["frames"] / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=1.5, help="audio for the end-to-end run")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)

    torch.manual_seed(0)
    with initialize_config_dir(config_dir=str(CONF / "model"), version_base=None):
        nets = build_networks(compose("official"))
    model = TalkingHeadModel(nets).to(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    peak = matmul_gflops(device)
    print(f"device: {device} ({name or platform.machine()}), threads: {torch.get_num_threads()}, "
          f"torch {torch.__version__}")
    print(f"matmul 2048x2048 fp32: {peak:.0f} GFLOP/s")

    results = {}
    for impl in ("fast", "reference"):
        model.nets.generator.set_impl(impl)
        results[impl] = module_table(model, args.batch, device, args.reps)
    model.nets.generator.set_impl("fast")

    print(f"\nper frame, batch {args.batch}:")
    print(f"{'module':28s} {'ms':>9s} {'GFLOP':>8s} {'GFLOP/s':>8s} {'of matmul':>9s}")
    for name, (sec, flop) in results["fast"].items():
        rate = flop / sec / 1e9
        print(f"{name:28s} {sec * 1e3:9.1f} {flop / 1e9:8.2f} {rate:8.1f} {rate / peak:9.0%}")
    sec_ref, flop_ref = results["reference"]["generator"]
    print(f"{'generator, reference impl':28s} {sec_ref * 1e3:9.1f} {flop_ref / 1e9:8.2f} "
          f"{flop_ref / sec_ref / 1e9:8.1f} {flop_ref / sec_ref / 1e9 / peak:9.0%}")

    def per_frame(rows):  # three drivers, appearance amortised away
        return 3 * rows["motion (per driver)"][0] + rows["audio"][0] + rows["generator"][0]

    flop_frame = sum(results["fast"][k][1] * (3 if "motion" in k else 1)
                     for k in ("motion (per driver)", "audio", "generator"))
    fast, reference = 1 / per_frame(results["fast"]), 1 / per_frame(results["reference"])
    print(f"\nmodel, three distinct drivers: {flop_frame / 1e9:.1f} GFLOP a frame")
    print(f"  fast:      {fast:.2f} frames/s ({flop_frame * fast / 1e9:.0f} GFLOP/s, "
          f"{flop_frame * fast / 1e9 / peak:.0%} of matmul)")
    print(f"  reference: {reference:.2f} frames/s; fast / reference = {fast / reference:.2f}x")
    fps = end_to_end(model, args.seconds, args.batch, args.device)
    print(f"end to end (infer pipeline, {args.seconds:.1f} s audio, H.264): {fps:.2f} frames/s")


if __name__ == "__main__":
    main()
