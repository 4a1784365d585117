"""Inference speed at official size (224 px, three distinct drivers), random official weights.

Every figure is measured in the same run: this machine's matrix-multiply rate, each module's
time and achieved GFLOP/s per frame, frames/s of the fast path against the plain released
formulation (per-sample grouped convolutions, NCHW), bf16 against fp32 (speed and error),
the end-to-end frames/s of ``infer.py``'s pipeline, and its peak memory for 10 s and 60 s of
audio (``model=tiny``, so that the pipeline's own memory dominates).

    python benchmarks/inference.py [--batch 8] [--device cpu|cuda] [--compile]
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import subprocess
import sys
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
from pdfgc.inference.model import TalkingHeadModel, cpu_has_native_bf16
from pdfgc.inference.pipeline import Job, Renderer
from pdfgc.media import VideoWriter, probe_video, write_wav
from pdfgc.networks import build_networks
from pdfgc.samples import driver_frames, make_sample, portrait, speech

ROOT = Path(__file__).resolve().parents[1]
MODULES = ("appearance", "motion", "audio", "generator")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, reps: int, device: torch.device, statistic=np.median) -> float:
    """``statistic`` (median) of the seconds of ``fn()`` over ``reps`` runs after a warm-up."""
    fn()
    times = []
    for _ in range(reps):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return float(statistic(times))


def matmul_gflops(device: torch.device, dtype: torch.dtype, n: int = 2048) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / timed(lambda: a @ b, 10, device, statistic=np.min) / 1e9  # the peak


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def module_calls(model: TalkingHeadModel, batch: int, device: torch.device):
    """name -> (callable on one batch, frames it covers); inputs are fixed random tensors."""
    gen = torch.Generator().manual_seed(0)
    size = model.image_size
    images = (torch.rand(batch, 3, size, size, generator=gen) * 2 - 1).to(device)
    mels = torch.rand(batch, 1, 80, 20, generator=gen).to(device)
    appearance = model.encode_appearance(images[:1])
    motion_dim = model.nets.generator.style_dim - appearance["vector"].shape[1]
    codes = torch.randn(batch, motion_dim, generator=gen).to(device)
    return {
        "appearance": (lambda: model.encode_appearance(images[:1]), 1),
        "motion": (lambda: model.encode_motion(images), batch),
        "audio": (lambda: model.encode_audio(mels), batch),
        "generator": (lambda: model.render(appearance, codes), batch),
    }


def profile_modules(model, batch, device, reps, dtype=None) -> dict[str, tuple[float, float]]:
    """Per-frame seconds and FLOPs of each module."""
    rows = {}
    with torch.no_grad(), autocast(device, dtype):
        for name, (fn, frames) in module_calls(model, batch, device).items():
            counter = FlopCounterMode(display=False)
            with counter:
                fn()
            rows[name] = (timed(fn, reps, device) / frames, counter.get_total_flops() / frames)
    return rows


def frame_seconds(rows) -> float:
    """Seconds a frame with three distinct drivers (appearance amortised over the video)."""
    return 3 * rows["motion"][0] + rows["audio"][0] + rows["generator"][0]


def frame_flops(rows) -> float:
    return 3 * rows["motion"][1] + rows["audio"][1] + rows["generator"][1]


def low_precision_error(model, batch, device, dtype) -> tuple[float, float]:
    """PSNR (dB, images in [-1, 1]) and max abs difference of the generator's output."""
    fn, _ = module_calls(model, batch, device)["generator"]
    with torch.no_grad():
        ref = fn().float()
        with autocast(device, dtype):
            low = fn().float()
    mse = torch.mean((low - ref) ** 2).item()
    return 10 * np.log10(4.0 / max(mse, 1e-20)), (low - ref).abs().max().item()


def end_to_end(model: TalkingHeadModel, seconds: float, batch: int, device: torch.device,
               precision: str) -> float:
    """Frames/s of the whole pipeline (decode, encode, render, H.264) with three drivers,
    after one warm-up render (kernel selection, pinned buffers, thread pools)."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        face = portrait()
        write_wav(tmp / "a.wav", np.resize(speech(), int(seconds * SAMPLE_RATE)), SAMPLE_RATE)
        drivers = []
        for i in range(3):  # three distinct clips
            with VideoWriter(tmp / f"d{i}.mp4", fps=FPS) as w:
                w.write(np.roll(driver_frames(face, seconds), 3 * i, axis=2))
            drivers.append(str(tmp / f"d{i}.mp4"))
        cv2.imwrite(str(tmp / "p.png"), face[:, :, ::-1])
        cfg = OmegaConf.create({"batch_size": batch, "precision": precision, "crf": 18,
                                "device": str(device), "crop": True, "panel": False,
                                "progress": False})
        job = Job(audio=str(tmp / "a.wav"), appearance=str(tmp / "p.png"),
                  output=str(tmp / "out.mp4"), pose=drivers[0], emotion=drivers[1],
                  eye=drivers[2])
        renderer = Renderer(cfg, model)
        renderer.render(job)
        start = time.perf_counter()
        renderer.render(job)
        elapsed = time.perf_counter() - start
        return probe_video(job.output)["frames"] / elapsed


def peak_rss_mb(seconds: float, sample: Path, device: str) -> float:
    """Peak resident memory (VmHWM: this process image only; ru_maxrss would include the
    parent's peak from before exec) of ``infer.py model=tiny`` on ``seconds`` of audio."""
    audio = sample / f"speech_{seconds:.0f}s.wav"
    write_wav(audio, np.resize(speech(), int(seconds * SAMPLE_RATE)), SAMPLE_RATE)
    argv = [str(ROOT / "infer.py"), "model=tiny", "progress=false", f"device={device}",
            f"weights={sample / 'weights'}", f"audio={audio}",
            f"appearance={sample / 'portrait.png'}", f"pose={sample / 'driver.mp4'}",
            f"output={sample / 'out.mp4'}", f"hydra.run.dir={sample / 'run'}"]
    code = ("import atexit, pathlib, runpy, sys; atexit.register(lambda: print('MAXRSS', [l for l "
            "in pathlib.Path('/proc/self/status').read_text().splitlines() if l.startswith("
            "'VmHWM')][0].split()[1], file=sys.stderr)); "
            f"sys.argv = {argv!r}; runpy.run_path(sys.argv[0], run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                            text=True)
    kilobytes = [line.split()[1] for line in result.stderr.splitlines()
                 if line.startswith("MAXRSS")]
    return int(kilobytes[-1]) / 1024


def official_model(device: torch.device, fast: bool, compile: bool) -> TalkingHeadModel:
    torch.manual_seed(0)
    with initialize_config_dir(config_dir=str(ROOT / "conf" / "model"), version_base=None):
        nets = build_networks(compose("official"))
    return TalkingHeadModel(nets, fast=fast, compile=compile).to(device)


def print_table(rows, peak: float) -> None:
    print(f"  {'module':12s} {'ms/frame':>9s} {'GFLOP':>7s} {'GFLOP/s':>8s} {'of matmul':>9s}")
    for name, (sec, flop) in rows.items():
        rate = flop / sec / 1e9
        print(f"  {name:12s} {sec * 1e3:9.1f} {flop / 1e9:7.2f} {rate:8.1f} {rate / peak:9.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=None, help="default 8 (CPU), 32 (GPU)")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=1.0, help="audio for end to end")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile", action="store_true", help="torch.compile the networks")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    batch = args.batch or (32 if device.type == "cuda" else 8)
    # autocast precisions measured beside fp32: bf16 on a CPU that has it in hardware, bf16
    # and fp16 on a GPU
    lows = {"bf16": torch.bfloat16, **({"fp16": torch.float16} if device.type == "cuda" else {})}
    if device.type == "cpu" and not cpu_has_native_bf16():
        print("bf16: skipped, this CPU has no bf16 instructions (AVX512-BF16 or AMX); "
              "emulated it is many times slower than fp32")
        lows = {}

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    peak = matmul_gflops(device, torch.float32)
    peak_low = {key: matmul_gflops(device, dtype) for key, dtype in lows.items()}
    print(f"device: {device} ({name or platform.machine()}), threads {torch.get_num_threads()}, "
          f"torch {torch.__version__}, batch {batch}, compile {args.compile}")
    print("matmul 2048x2048: " + ", ".join(
        f"{key} {rate:.0f} GFLOP/s" for key, rate in {"fp32": peak, **peak_low}.items()))

    model = official_model(device, fast=True, compile=args.compile)
    fast = profile_modules(model, batch, device, args.reps)
    print("\nfast path, fp32, per frame:")
    print_table(fast, peak)
    fast_low = {key: profile_modules(model, batch, device, args.reps, dtype)
                for key, dtype in lows.items()}
    errors = {key: low_precision_error(model, batch, device, dtype) for key, dtype in lows.items()}
    plain = profile_modules(official_model(device, fast=False, compile=False), batch, device,
                            args.reps)
    print("plain released formulation, fp32, per frame:")
    print_table(plain, peak)

    flop = frame_flops(fast) / 1e9
    fps, fps_plain = 1 / frame_seconds(fast), 1 / frame_seconds(plain)
    print(f"\nmodel, three distinct drivers, {flop:.1f} GFLOP a frame:")
    print(f"  fp32 fast : {fps:6.2f} frames/s = {flop * fps:.0f} GFLOP/s = "
          f"{flop * fps / peak:.0%} of fp32 matmul; {fps / fps_plain:.2f}x the plain formulation")
    print(f"  fp32 plain: {fps_plain:6.2f} frames/s")
    for key, rows in fast_low.items():
        fps_low = 1 / frame_seconds(rows)
        psnr, max_abs = errors[key]
        print(f"  {key} fast : {fps_low:6.2f} frames/s = {flop * fps_low / peak_low[key]:.0%} of "
              f"{key} matmul; error vs fp32: PSNR {psnr:.1f} dB, max abs {max_abs:.3f}")
    for precision in ("fp32", *lows):
        e2e = end_to_end(model, args.seconds, batch, device, precision)
        print(f"end to end ({precision}, infer pipeline, {args.seconds:.0f} s audio, 3 drivers, "
              f"H.264): {e2e:.2f} frames/s")
    if not args.skip_memory:
        with tempfile.TemporaryDirectory() as tmp:
            sample = make_sample(tmp)
            short, long = (peak_rss_mb(s, sample, args.device) for s in (10, 60))
        print(f"peak RSS, model=tiny: 10 s audio {short:.0f} MB, 60 s audio {long:.0f} MB "
              f"(ratio {long / short:.2f})")


if __name__ == "__main__":
    main()
