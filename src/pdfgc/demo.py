"""The main job: train every stage on the synthetic data, evaluate, render, summarise.

``python demo.py`` (``make demo``) composes ``conf/demo.yaml`` and runs, each as its own
process with its own progress and resolved config: ``train.py experiment=demo stage=<s>`` for
every stage (a finished stage resumes and stops at once), ``evaluate.py eval=demo`` on the
last stage's checkpoint, and ``infer.py`` rendering a held-out speaker's portrait driven by
four other held-out clips (lips by one's speech; pose, eyes and emotion by three more), and
``strip.png``, a few of its frames. It ends with a table of the figures against ``targets``,
each beside its yardstick (what doing nothing scores), and the ``context`` figures to read
them by, also written as ``summary.json``.
"""

from __future__ import annotations

import json
import math
import platform
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf

from pdfgc.data.datasets import ClipIndex
from pdfgc.errors import PdfgcError
from pdfgc.features import SAMPLE_RATE
from pdfgc.inference.pipeline import FACTORS
from pdfgc.io import atomic_path, read_jsonl, save_config
from pdfgc.media import FrameSource, load_audio, write_wav
from pdfgc.metrics.tabulate import format_table, format_value

SUMMARY = "summary.json"
STRIP = "strip.png"
PANEL = ("portrait", "result", *(f"{factor}\ndriver" for factor in FACTORS))  # infer's panel


def run_step(name: str, script: str, overrides: list[str], repo: Path) -> float:
    """Run ``python <repo>/<script> <overrides>`` in the foreground; its seconds. A failed
    step ends the demo with its name (the step printed its own error above)."""
    print(f"\n=== {name}: python {script} {' '.join(overrides)}", flush=True)
    started = time.time()
    if subprocess.run([sys.executable, str(repo / script), *overrides], cwd=repo).returncode:
        raise PdfgcError(f"demo step '{name}' failed (see above)")
    return time.time() - started


def demo_inputs(index: ClipIndex, folder: Path, seconds: float) -> dict[str, str]:
    """infer.py's inputs from the test split, one speaker each, written into ``folder``:
    the first speaker's first frame as the portrait, the next ones' speech (clips joined
    up to ``seconds``), then a pose driver, an eye driver and the clip with the strongest
    emotion among the rest as the emotion driver."""
    clips = [index.clips("test", identity)[0] for identity in index.identities("test")]
    if not clips:
        raise PdfgcError(f"{index.root}: no test clips for the demo video")
    pick = [clips[k % len(clips)] for k in range(4)]
    rest = clips[4:] or clips

    def strength(clip: int) -> float:
        labels = index.labels(clip)
        names = [str(n) for n in labels.get("factor_names", [])]
        column = names.index("emotion_intensity") if "emotion_intensity" in names else None
        return 0.0 if column is None else float(labels["factors"][:, column].mean())

    portrait = FrameSource(index.video_path(pick[0])).read([0])[0]
    with atomic_path(folder / "portrait.png") as tmp:
        cv2.imwrite(str(tmp), cv2.cvtColor(portrait, cv2.COLOR_RGB2BGR))
    speech, k = [], 1
    while sum(len(s) for s in speech) < seconds * SAMPLE_RATE and k < 1 + len(clips):
        speech.append(load_audio(index.video_path(clips[k % len(clips)])))
        k += 1
    write_wav(folder / "speech.wav", np.concatenate(speech), SAMPLE_RATE)
    return {"appearance": str(folder / "portrait.png"), "audio": str(folder / "speech.wav"),
            "pose": str(index.video_path(pick[2])), "eye": str(index.video_path(pick[3])),
            "emotion": str(index.video_path(max(rest, key=strength)))}


def save_strip(video: Path, path: Path, count: int) -> Path:
    """``count`` frames of the panel video evenly spread over it, one row per time point,
    its columns (``PANEL``) and rows (seconds) labelled, as a PNG."""
    source = FrameSource(video)
    indices = np.linspace(0, len(source) - 1, count).round().astype(int)
    frames = source.read(indices)  # (count, H, W, 3), W = len(PANEL) * H
    height, width = frames.shape[1:3]
    figure = Figure(figsize=(1.0 + width / 50, 0.5 + count * height / 50))
    axes = figure.subplots()
    axes.imshow(np.concatenate(list(frames)), interpolation="nearest")
    axes.set_xticks((np.arange(len(PANEL)) + 0.5) * width / len(PANEL), PANEL, fontsize=8)
    axes.set_yticks((np.arange(count) + 0.5) * height,
                    [f"{i / source.fps:.1f} s" for i in indices], fontsize=8)
    axes.xaxis.tick_top()
    axes.tick_params(length=0)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=100, bbox_inches="tight")
    return path


def model_overrides(overrides: list[str]) -> list[str]:
    """Those of ``overrides`` that change the model (``model.*``), which infer.py needs too
    to build the network the checkpoint was trained as (evaluate.py reads the run's config)."""
    return [o for o in overrides if o.lstrip("+~").startswith("model.")]


def yardstick(figure: str, results: dict) -> str:
    """What doing nothing scores on a target ``figure``, to read its value by: for an image
    score of the self-reconstruction a render that copies its source frame (0 for the margin
    over it); for a probe's own or leak the same head untrained; for a control transfer or
    leakage a render that ignores the swap (0 on both), with the driven group's error against
    that render's; nothing for the others."""
    prefix, _, kind = figure.rpartition("/")
    if kind in ("self", "over_source") and f"{prefix}/source" in results:
        copy = format_value(results[f"{prefix}/source"])
        return f"copying the source {copy}" + (" (margin 0)" if kind == "over_source" else "")
    if prefix.startswith("probe/") and kind in ("own", "leak"):
        return f"untrained {format_value(results.get(f'{figure}_untrained'))}"
    if prefix.startswith("control/") and kind in ("transfer", "leakage"):
        error, nocontrol = (format_value(results.get(f"{prefix}/{key}"))
                            for key in ("error", "error_nocontrol"))
        return f"no-control 0; error {error} vs no-control {nocontrol}"
    return ""


def check_targets(results: dict, targets: DictConfig) -> list[dict]:
    """One row per target: figure, value, its yardstick, the bound and whether it is met."""
    rows = []
    for figure, bound in targets.items():
        value = results.get(figure)
        value = None if value is None or math.isnan(value) else value
        if "min" in bound:
            text, met = f">= {bound['min']}", value is not None and value >= bound["min"]
        else:
            text, met = f"<= {bound['max']}", value is not None and value <= bound["max"]
        rows.append({"figure": figure, "value": value, "yardstick": yardstick(figure, results),
                     "target": text, "met": bool(met)})
    return rows


def run(cfg: DictConfig, repo: Path) -> dict:
    """The whole demo (see the module docstring), running the mains in ``repo``; returns the
    summary it writes."""
    root = Path(cfg.paths.root_dir).resolve()
    out = Path(cfg.paths.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    common = [f"paths.root_dir={root}", f"paths.data_dir={Path(cfg.paths.data_dir).resolve()}"]
    seconds = {}
    for stage in cfg.stages:
        seconds[f"train {stage}"] = run_step(
            f"train {stage}", "train.py",
            [f"experiment={cfg.experiment}", f"stage={stage}", f"run_group={cfg.run_group}",
             *common, *cfg.train_overrides], repo)
    last = root / "outputs" / "train" / cfg.run_group / cfg.stages[-1]
    ckpt = last / "checkpoints" / "last.ckpt"
    run_cfg = OmegaConf.load(last / "config.yaml")
    results_file = out / "metrics.jsonl"
    seconds["evaluate"] = run_step(
        "evaluate", "evaluate.py",
        [f"ckpt={ckpt}", f"eval={cfg.eval}", f"results_file={results_file}",
         f"hydra.run.dir={out / 'evaluate'}", *common, *cfg.evaluate_overrides], repo)
    inputs = demo_inputs(ClipIndex.from_manifest(run_cfg.data.root), out, cfg.video_seconds)
    video = out / "demo.mp4"
    seconds["render"] = run_step(
        "render", "infer.py",
        [f"model={run_cfg.model.name}", f"weights={ckpt}", *(f"{k}={v}" for k, v in
                                                               inputs.items()),
         "panel=true", f"output={video}", f"hydra.run.dir={out / 'infer'}", *common,
         *model_overrides(cfg.train_overrides), *cfg.infer_overrides], repo)
    strip = save_strip(video, out / STRIP, cfg.strip_frames)

    record = read_jsonl(results_file)[-1]
    rows = check_targets(record["results"], cfg.targets)
    summary = {"targets": rows, "all_met": all(r["met"] for r in rows),
               "context": {k: record["results"].get(k) for k in cfg.context},
               "results": record["results"], "seconds": {k: round(v, 1)
                                                         for k, v in seconds.items()},
               "machine": machine(), "checkpoint": str(ckpt), "video": str(video),
               "strip": str(strip),
               "heatmap": record["details"].get("probe/heatmap"), "inputs": inputs}
    with atomic_path(out / SUMMARY) as tmp:
        tmp.write_text(json.dumps(json_safe(summary), indent=2))
    print("\n" + format_summary(summary, out))
    return summary


def machine() -> dict[str, str]:
    """What the figures were computed on: the CPU, the kernels PyTorch chose (AVX2 and AVX-512
    ones round differently, so they train apart) and the torch version."""
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in
             (cpuinfo.read_text().splitlines() if cpuinfo.is_file() else [])
             if line.startswith("model name")]
    return {"cpu": names[0] if names else platform.processor() or platform.machine(),
            "kernels": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__}


def json_safe(value):
    """``value`` with every non-finite float (NaN: a figure that could not be computed)
    replaced by None, so the JSON is standard."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def format_summary(summary: dict, out: Path) -> str:
    """The printed summary: the targets table, times and where the outputs are."""
    table = format_table(["figure", "value", "yardstick", "target", "met"],
                         [[r["figure"], format_value(r["value"]), r["yardstick"], r["target"],
                           "yes" if r["met"] else "NO"] for r in summary["targets"]])
    context = format_table(["context (no target)", "value"],
                           [[k, format_value(v)] for k, v in summary["context"].items()])
    met = sum(r["met"] for r in summary["targets"])
    times = ", ".join(f"{k} {v:.0f} s" for k, v in summary["seconds"].items())
    computed_on = ", ".join(f"{k} {v}" for k, v in summary["machine"].items())
    return "\n".join([
        f"demo: {met} of {len(summary['targets'])} targets met (held-out test speakers)",
        table, context, f"time: {times}",
        f"machine: {computed_on}", f"video: {summary['video']}",
        f"strip: {summary['strip']}",
        f"heatmap: {summary['heatmap']}", f"summary: {out / SUMMARY}"])

