"""Preprocessing of real videos: landmarks, alignment, labels, the sharded resumable runner."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from pdfgc.data.manifest import read_labels, read_manifest
from pdfgc.data.preprocess import runner
from pdfgc.data.preprocess.align import anchors
from pdfgc.errors import PdfgcError
from pdfgc.face.geometry import (
    TEMPLATE,
    euler_to_matrix,
    project,
)
from pdfgc.media import FrameSource, VideoWriter, probe_video
from pdfgc.samples import driver_frames, portrait, speech

from conftest import ROOT

SIZE = 224
FACE_FRAMES = 30  # 1.2 s at 25 fps
EYES = TEMPLATE[:2]
SPEECH = functools.cache(speech)


def preprocess(input_dir: Path, output: Path, *overrides: str) -> None:
    """Run the runner on the real ``conf/preprocess.yaml`` with test-friendly overrides."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("preprocess", overrides=[
            f"input={input_dir}", f"output={output}", f"paths.output_dir={output}",
            "workers=1", "progress=false", "min_frames=10", *overrides])
    runner.run(cfg)


def write_video(path: Path, frames: np.ndarray, fps: float = 25.0, audio: bool = True) -> None:
    """An mp4 of ``frames`` with matching speech (or no audio track)."""
    samples = SPEECH()[: int(len(frames) / fps * 16000)] if audio else None
    path.parent.mkdir(parents=True, exist_ok=True)
    with VideoWriter(path, fps=fps, audio=samples, sample_rate=16000 if audio else None) as w:
        w.write(frames)


def face_frames(n: int = FACE_FRAMES) -> np.ndarray:
    """The astronaut swaying (6 degrees of roll at most), upscaled to 320 px."""
    big = cv2.resize(portrait(), (320, 320), interpolation=cv2.INTER_CUBIC)
    return driver_frames(big, FACE_FRAMES / 25)[:n]


def rejected(output: Path, name: str = "rejected.jsonl") -> dict[str, str]:
    rows = [json.loads(line) for line in (output / name).read_text().splitlines()]
    return {row["clip"]: row["reason"] for row in rows}


def eye_centres(marks: np.ndarray) -> np.ndarray:
    return anchors(marks)[:, :2]  # (N, 2, 2)


@pytest.fixture(scope="module")
def dlib_dataset(tmp_path_factory) -> Path:
    """One real face clip and six bad ones, preprocessed with dlib in one run."""
    pytest.importorskip("dlib")
    root = tmp_path_factory.mktemp("dlib")
    videos = root / "videos" / "speaker"
    faces = face_frames()
    write_video(videos / "talk.mp4", faces)
    write_video(videos / "flat.mp4", np.full((FACE_FRAMES, 224, 224, 3), 120, np.uint8))
    write_video(videos / "silent.mp4", faces, audio=False)
    write_video(videos / "short.mp4", faces[:6])
    write_video(videos / "pair.mp4", np.concatenate([faces, faces[:, :, ::-1]], axis=2))
    (videos / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    preprocess(root / "videos", root / "out", "backend=dlib", "layout=flat", "min_face=60")
    return root / "out"


def test_dlib_clip_is_aligned_and_labelled(dlib_dataset):
    (record,) = read_manifest(dlib_dataset)
    assert (record.clip, record.identity, record.split, record.source) == (
        "speaker/talk", "speaker", "train", "videos")
    assert record.frames == FACE_FRAMES and record.image_size == SIZE
    info = probe_video(dlib_dataset / record.video)
    assert (info["width"], info["height"], info["frames"], info["fps"]) == (224, 224, 30, 25)
    assert info["has_audio"] and info["audio_seconds"] == pytest.approx(1.2, abs=0.1)

    labels = read_labels(dlib_dataset / record.labels)
    n = FACE_FRAMES
    assert labels["landmarks"].shape == (n, 68, 2) and labels["pose"].shape == (n, 6)
    assert labels["blink"].shape == (n,) and labels["eye_boxes"].shape == (n, 2, 4)
    assert labels["gaze"].shape == (n, 2) and np.isnan(labels["gaze"]).all()
    assert labels["mel"].shape == (4 * n + 7, 80)  # the lws STFT of exactly n * 640 samples
    assert np.abs(eye_centres(labels["landmarks"]) - EYES).max() < 6
    assert np.abs(eye_centres(labels["landmarks"]).mean(0) - EYES).max() < 4
    yaw, pitch, roll = labels["pose"][:, :3].T
    assert np.abs(yaw).max() < 10 and np.abs(pitch).max() < 15
    # the driver rolls the head 6 sin(phase) degrees anticlockwise; roll > 0 is clockwise
    drive = -6 * np.sin(2 * np.pi * np.arange(n) / n)
    assert np.abs(roll - drive).max() < 2
    assert 0 <= labels["blink"].min() and labels["blink"].max() < 0.3  # eyes open throughout
    for box, eye in zip(labels["eye_boxes"].transpose(1, 0, 2), (slice(36, 42), slice(42, 48)),
                        strict=True):
        points = labels["landmarks"][:, eye]  # (N, 6, 2)
        assert np.all(box[:, None, :2] < points) and np.all(points < box[:, None, 2:])
    assert (dlib_dataset / "config.dev.shard-0-of-1.yaml").is_file()


def test_bad_videos_are_rejected_with_reasons(dlib_dataset):
    assert rejected(dlib_dataset) == {
        "speaker/flat": "no face", "speaker/silent": "no audio", "speaker/short": "too short",
        "speaker/corrupt": "unreadable", "speaker/pair": "several faces"}
    assert sorted(p.name for p in (dlib_dataset / "clips" / "speaker").iterdir()) == [
        "talk.mp4", "talk.npz"]


def cartoon_clip(path: Path, n: int, fps: float = 25.0, drift: float = 0.5) -> np.ndarray:
    """A drawn face whose landmarks are known (the mean face, yawing and drifting), with the
    landmarks in the sidecar ``<stem>.npz``; returns the landmarks (n, 68, 2)."""
    size = 192
    marks, frames = [], []
    for i in range(n):
        rotation = euler_to_matrix(4 * np.sin(i / 5), 3, 8)
        points = project(rotation, np.array([drift * i, 10.0, 600.0]), size) - [0, 20]
        frame = np.full((size, size, 3), 200, np.uint8)
        cv2.fillConvexPoly(frame, points[:17].astype(np.int32), (190, 150, 120))
        for eye in (points[36:42], points[42:48]):
            cv2.circle(frame, tuple(int(v * 16) for v in eye.mean(0)), 5 * 16, (20, 20, 20),
                       -1, cv2.LINE_AA, shift=4)
        cv2.fillPoly(frame, [points[60:68].astype(np.int32)], (120, 30, 40))
        marks.append(points)
        frames.append(frame)
    write_video(path, np.stack(frames), fps=fps)
    marks = np.asarray(marks, dtype=np.float32)
    np.savez(path.with_suffix(".npz"), landmarks=marks)
    return marks


@pytest.fixture()
def vox_input(tmp_path) -> Path:
    """VoxCeleb2 layout: three 25 fps clips and one 50 fps clip of two identities."""
    root = tmp_path / "vox"
    for clip in ("id00001/aaa/00001", "id00001/aaa/00002", "id00002/bbb/00001"):
        cartoon_clip(root / f"{clip}.mp4", 12)
    cartoon_clip(root / "id00002/ccc/00001.mp4", 24, fps=50)
    return root


def test_sidecar_alignment_maps_landmarks_to_the_template(vox_input, tmp_path):
    out = tmp_path / "out"
    preprocess(vox_input, out, "backend=sidecar", "smooth_shift=3")
    records = {r.clip: r for r in read_manifest(out)}
    assert records["id00002/ccc/00001"].frames == 12  # 24 frames at 50 fps -> 12 at 25 fps
    for record in records.values():
        marks = read_labels(out / record.labels)["landmarks"]
        assert np.abs(anchors(marks) - TEMPLATE).max() < 2.5
        first = FrameSource(out / record.video).read([0])[0]
        dark = np.argwhere(first[:90, :112].min(axis=2) < 60)[:, ::-1]  # (x, y) of the left eye
        assert np.abs(dark.mean(0) - eye_centres(marks)[0, 0]).max() < 1.5


def test_shards_are_disjoint_and_merge_gives_all(vox_input, tmp_path):
    out = tmp_path / "out"
    common = ("backend=sidecar", "num_shards=2", "val_fraction=0.5")
    preprocess(vox_input, out, *common, "shard=0", "workers=2")
    with pytest.raises(PdfgcError, match="1 of 2 shards"):
        runner.merge(out)
    preprocess(vox_input, out, *common, "shard=1")
    assert not (out / "manifest.jsonl").exists()  # several shards: merged on request only
    shards = [{json.loads(line)["clip"] for line in
               (out / f"manifest.dev.shard-{i}-of-2.jsonl").read_text().splitlines()}
              for i in range(2)]
    assert shards == [{"id00001/aaa/00001", "id00002/bbb/00001"},
                      {"id00001/aaa/00002", "id00002/ccc/00001"}]
    preprocess(vox_input, out, *common, "merge=true")
    records = read_manifest(out)
    assert {r.clip for r in records} == shards[0] | shards[1]
    for r in records:
        assert r.identity == r.clip.split("/")[0] and r.source == "voxceleb2"
        assert r.split == runner.record_split(r.identity, "dev", 0.5)


def test_split_by_identity_hash():
    ids = [f"id{i:05d}" for i in range(2000)]
    held = [runner.record_split(i, "dev", 0.1) for i in ids]
    assert set(held) == {"train", "val"} and abs(held.count("val") / 2000 - 0.1) < 0.03
    assert held == [runner.record_split(i, "dev", 0.1) for i in ids]
    assert {runner.record_split(i, "test", 0.1) for i in ids} == {"test"}


def test_resume_skips_done_clips(vox_input, tmp_path):
    out = tmp_path / "out"
    preprocess(vox_input, out, "backend=sidecar")
    clips = sorted((out / "clips").rglob("*.*"))
    mtimes = {p: p.stat().st_mtime_ns for p in clips}
    redo = out / "clips" / "id00001" / "aaa" / "00002.npz"
    redo.unlink()
    preprocess(vox_input, out, "backend=sidecar")
    assert sorted((out / "clips").rglob("*.*")) == clips
    changed = {p for p in clips if p.stat().st_mtime_ns != mtimes.get(p)}
    assert changed == {redo, redo.with_suffix(".mp4")}
    assert len(read_manifest(out)) == 4


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_a_failed_clip_leaves_no_files(tmp_path, monkeypatch, error):
    cartoon_clip(tmp_path / "in" / "one" / "clip.mp4", 12)

    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr(runner, "write_labels", broken)
    out = tmp_path / "out"
    if isinstance(error, KeyboardInterrupt):
        with pytest.raises(KeyboardInterrupt):
            preprocess(tmp_path / "in", out, "backend=sidecar", "layout=flat")
    else:
        preprocess(tmp_path / "in", out, "backend=sidecar", "layout=flat")
        assert rejected(out) == {"one/clip": "failed"}
    assert [p for p in (out / "clips").rglob("*") if p.is_file()] == []


def test_resample_indices_follow_timestamps():
    np.testing.assert_array_equal(runner.resample_indices(5, 25), [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(runner.resample_indices(10, 50), [0, 2, 4, 6, 8])
    np.testing.assert_array_equal(runner.resample_indices(6, 30), [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(runner.resample_indices(3, 12.5), [0, 0, 1, 1, 2, 2])


def test_cli_reports_bad_input_in_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "preprocess.py"), f"input={tmp_path / 'none'}",
         f"output={tmp_path / 'out'}", f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {tmp_path / 'none'}: input is not a folder"


