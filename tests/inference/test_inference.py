"""Inference: code composition, driver time lines, and infer.py end to end on the tiny model."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from pdfgc.errors import PdfgcError
from pdfgc.features import SAMPLE_RATE
from pdfgc.inference import model as inference_model
from pdfgc.inference import pipeline
from pdfgc.inference.model import (
    DEFAULT_EMOTION_WINDOW,
    Controls,
    Dials,
    Regression,
    TalkingHeadModel,
    apply_dials,
    compose_codes,
    gaussian_smooth,
    mean_smooth,
    trained_regression,
)
from pdfgc.inference.pipeline import driver_timeline
from pdfgc.media import probe_video, write_wav
from pdfgc.networks import build_networks
from pdfgc.networks.checkpoints import RELEASED_FILES, save_released

from conftest import ROOT, expected_frames, model_config, save_run_checkpoint


def infer(*overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run infer.py (model=tiny, no progress) in a subprocess, as a user would."""
    env = {**os.environ, "PDFGC_ROOT": str(cwd)}
    return subprocess.run(
        [sys.executable, str(ROOT / "infer.py"), "model=tiny", "progress=false", *overrides],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def sample_args(sample: Path, output: Path, *extra: str) -> list[str]:
    return [f"weights={sample / 'weights'}", f"audio={sample / 'speech.wav'}",
            f"appearance={sample / 'portrait.png'}", f"output={output}", *extra]


# --- codes -----------------------------------------------------------------------------------

def test_gaussian_smooth_matches_hand_computed_taps():
    x = torch.zeros(5, 1)
    x[2, 0] = 1.0
    g = np.exp(-0.5)
    taps = np.array([g, 1.0, g]) / (1 + 2 * g)
    np.testing.assert_allclose(gaussian_smooth(x)[:, 0].numpy(), [0, *taps, 0], atol=1e-6)
    # zero padding at the ends, as released: a constant sequence sags at both ends
    ones = gaussian_smooth(torch.ones(4, 1))[:, 0]
    assert ones[0] == pytest.approx(1 - taps[0]) and ones[1] == pytest.approx(1.0)


def test_mean_smooth_uses_two_frames_at_the_ends():
    x = torch.tensor([[0.0], [3.0], [6.0], [9.0]])
    np.testing.assert_allclose(mean_smooth(x)[:, 0].numpy(), [1.5, 3.0, 6.0, 7.5])
    assert mean_smooth(torch.tensor([[2.0]])).item() == 2.0


def test_mean_smooth_windows_are_centred_and_shrink_at_the_ends():
    x = torch.arange(6.0)[:, None] ** 2  # 0 1 4 9 16 25
    np.testing.assert_allclose(mean_smooth(x, 5)[:, 0].numpy(),
                               [5 / 3, 14 / 4, 30 / 5, 55 / 5, 54 / 4, 50 / 3], rtol=1e-6)
    # an even window starts size // 2 frames back, as the dataset's window does
    np.testing.assert_allclose(mean_smooth(x, 2)[:, 0].numpy(), [0, 0.5, 2.5, 6.5, 12.5, 20.5])
    codes = torch.randn(7, 4)
    assert torch.equal(mean_smooth(codes, 1), codes)
    released = (codes[:-2] + codes[1:-1] + codes[2:]) / 3  # the release's interior frames
    assert torch.equal(mean_smooth(codes)[1:-1], released)


def test_compose_codes_scales_and_switches():
    n = 4
    mouth, emotion = torch.ones(n, 3), torch.ones(n, 2)
    eye, pose = torch.arange(6.0).repeat(n, 1), torch.ones(n, 6)
    codes = compose_codes(mouth, emotion, eye, pose, Controls())
    assert codes.shape == (n, 3 + 2 + 6 + 6)
    assert codes[1, 0] == pytest.approx(1.5)                    # mouth x 1.5 (interior frame)
    assert codes[0, 3] == pytest.approx(1.2)                    # emotion x 1.2
    np.testing.assert_allclose(codes[0, 5:11].numpy(), np.arange(6.0) * 1.2, rtol=1e-6)
    no_blink = compose_codes(mouth, emotion, eye, pose, Controls(blink=False))[0, 5:11]
    np.testing.assert_allclose(no_blink.numpy(), [0, 0, 2.4, 3.6, 0, 0], rtol=1e-6)
    no_gaze = compose_codes(mouth, emotion, eye, pose, Controls(gaze=False))[0, 5:11]
    np.testing.assert_allclose(no_gaze.numpy(), [0, 1.2, 0, 0, 4.8, 6.0], rtol=1e-6)
    off = compose_codes(mouth, emotion, eye, pose,
                        Controls(mouth=False, emotion=False, pose=False))
    assert off[:, :5].abs().sum() == 0 and off[:, 11:].abs().sum() == 0


def test_trained_codes_are_raw_but_the_expression_is_the_window_mean():
    n = 6
    mouth, eye, pose = torch.randn(n, 3), torch.randn(n, 6), torch.randn(n, 6)
    emotion = torch.arange(float(n))[:, None].repeat(1, 2)
    codes = compose_codes(mouth, emotion, eye, pose, Controls(), emotion_window=3)
    assert torch.equal(codes[:, :3], mouth)          # no x 1.5, no smoothing
    assert torch.equal(codes[:, 5:11], eye)          # no x 1.2
    assert torch.equal(codes[:, 11:], pose)          # no pose smoothing
    np.testing.assert_allclose(codes[:, 3].numpy(), [0.5, 1, 2, 3, 4, 4.5])
    released = compose_codes(mouth, emotion, eye, pose, Controls())
    assert not torch.allclose(released[:, :3], mouth)
    off = compose_codes(mouth, emotion, eye, pose, Controls(blink=False, emotion=False), 3)
    assert off[:, 3:5].abs().sum() == 0 and off[:, [5, 6, 9, 10]].abs().sum() == 0


def test_the_loader_decides_how_codes_are_composed(tmp_path):
    torch.manual_seed(0)
    nets = build_networks(model_config("tiny"))
    save_released(tmp_path / "released", nets)
    save_run_checkpoint(tmp_path / "run.ckpt", nets, {"data": {"emotion_window": 3}})
    save_run_checkpoint(tmp_path / "bare.ckpt", nets)
    cfg = model_config("tiny")
    released = TalkingHeadModel.from_config(cfg, str(tmp_path / "released"))
    trained = TalkingHeadModel.from_config(cfg, str(tmp_path / "run.ckpt"))
    bare = TalkingHeadModel.from_config(cfg, str(tmp_path / "bare.ckpt"))
    assert released.emotion_window is None
    assert (trained.emotion_window, bare.emotion_window) == (3, DEFAULT_EMOTION_WINDOW)
    codes = {"mouth": torch.ones(4, 3), "emotion": torch.ones(4, 2), "eye": torch.ones(4, 6),
             "pose": torch.ones(4, 6)}
    assert released.compose(codes, Controls())[1, 0] == pytest.approx(1.5)
    assert trained.compose(codes, Controls())[1, 0] == 1.0  # a pdfgc G never saw the x 1.5


DEMO_REGRESSION = Regression(pose_scale=(0.032, 0.04, 0.0533, 10.0, 16.0, 16.0),
                             blink_dims=(0, 1, 4, 5), gaze_dims=(2, 3))


def test_dials_set_or_shift_the_regressed_quantities():
    torch.manual_seed(0)
    pose, eye = torch.randn(5, 6), torch.randn(5, 6)
    dials = Dials(pose="set", yaw=20.0, pitch=-10.0, eyes="set", blink=0.7, gaze_x=0.5,
                  gaze_y=-0.25)
    new_pose, new_eye = apply_dials(pose, eye, dials, DEMO_REGRESSION)
    # yaw 20 degrees is what the head regressed for a label of 20: 20 x pose_scale
    np.testing.assert_allclose(new_pose[:, 0].numpy(), 20 * 0.032, rtol=1e-6)
    np.testing.assert_allclose(new_pose[:, 1].numpy(), -10 * 0.04, rtol=1e-6)
    assert (new_pose[:, 2] == 0).all() and torch.equal(new_pose[:, 3:], pose[:, 3:])
    blink = list(DEMO_REGRESSION.blink_dims)
    np.testing.assert_allclose(new_eye[:, blink].mean(1).numpy(), 0.7, rtol=1e-5)
    # every blink dim moves by the same amount: the driver's pattern across them is kept
    shift = new_eye[:, blink] - eye[:, blink]
    assert torch.allclose(shift, shift[:, :1].expand_as(shift))
    assert torch.equal(new_eye[:, 2:4], torch.tensor([0.5, -0.25]).expand(5, 2))

    offset = Dials(pose="offset", yaw=20.0, eyes="offset", blink=0.1)
    new_pose, new_eye = apply_dials(pose, eye, offset, DEMO_REGRESSION)
    assert torch.allclose(new_pose[:, 0], pose[:, 0] + 20 * 0.032)
    assert torch.equal(new_pose[:, 1:], pose[:, 1:])
    assert torch.allclose(new_eye[:, blink].mean(1), eye[:, blink].mean(1) + 0.1)
    assert torch.equal(new_eye[:, 2:4], eye[:, 2:4])               # gaze offset 0

    assert all(torch.equal(a, b) for a, b in zip(apply_dials(pose, eye, Dials(), None),
                                                 (pose, eye), strict=True))
    with pytest.raises(PdfgcError, match="not regressed to head angles"):
        apply_dials(pose, eye, Dials(pose="set"), None)
    with pytest.raises(PdfgcError, match="blink or gaze"):
        apply_dials(pose, eye, Dials(eyes="offset"), Regression(pose_scale=(1.0,) * 6))
    with pytest.raises(PdfgcError, match="dials.pose"):
        apply_dials(pose, eye, Dials(pose="spin"), DEMO_REGRESSION)


def test_the_regression_is_read_from_the_heads_run_of_the_chain(tmp_path):
    """An expression checkpoint knows its heads only through stage.init_from; a moved run
    group is found beside the checkpoint. The released weights have no regression."""
    torch.manual_seed(0)
    nets = build_networks(model_config("tiny"))
    group = tmp_path / "moved"
    heads = {"stage": {"name": "heads", "pose_scale": list(DEMO_REGRESSION.pose_scale),
                       "blink_dims": [0, 1, 4, 5], "gaze_dims": [2, 3]},
             "loss": {"pose": 1.0, "blink": 1.0, "gaze": 0.0}}
    save_run_checkpoint(group / "heads" / "checkpoints" / "last.ckpt", nets, heads)
    expression = {"stage": {"name": "expression",
                            "init_from": "./gone/heads/checkpoints/last.ckpt"}}
    ckpt = save_run_checkpoint(group / "expression" / "checkpoints" / "last.ckpt", nets,
                               expression)
    found = trained_regression(ckpt)
    assert found == Regression(DEMO_REGRESSION.pose_scale, (0, 1, 4, 5), None)  # gaze off

    model = TalkingHeadModel.from_config(model_config("tiny"), str(ckpt))
    assert model.regression == found
    codes = {"mouth": torch.zeros(3, 32), "emotion": torch.zeros(3, 8),
             "eye": torch.zeros(3, 6), "pose": torch.zeros(3, 6)}
    yawed = model.compose(codes, Controls(), Dials(pose="set", yaw=30.0))
    pose_columns = slice(32 + 8 + 6, None)
    np.testing.assert_allclose(yawed[:, pose_columns][:, 0].numpy(), 30 * 0.032, rtol=1e-6)
    assert yawed[:, pose_columns][:, 1:].abs().sum() == 0

    save_released(tmp_path / "released", nets)
    released = TalkingHeadModel.from_config(model_config("tiny"), str(tmp_path / "released"))
    assert released.regression is None
    with pytest.raises(PdfgcError, match="head angles"):
        released.compose(codes, Controls(), Dials(pose="offset", yaw=5.0))
    assert trained_regression(save_run_checkpoint(tmp_path / "bare.ckpt", nets)) is None


# --- driver time lines ---------------------------------------------------------------------

def test_loop_skips_the_first_two_frames_and_wraps_to_frame_two():
    assert driver_timeline(7, 5, "loop").tolist() == [2, 3, 4, 2, 3, 4, 2]


def test_pingpong_and_hold():
    assert driver_timeline(8, 5, "pingpong").tolist() == [2, 3, 4, 3, 2, 3, 4, 3]
    assert driver_timeline(5, 4, "hold").tolist() == [2, 3, 3, 3, 3]


@pytest.mark.parametrize("policy", ["loop", "pingpong", "hold"])
@pytest.mark.parametrize("length", [1, 2, 3, 9])
def test_short_drivers_never_break(policy, length):
    line = driver_timeline(30, length, policy)
    assert len(line) == 30 and line.min() >= 0 and line.max() < length


def test_unknown_policy_is_a_user_error():
    with pytest.raises(PdfgcError, match="driver_policy"):
        driver_timeline(3, 3, "bounce")


# --- infer.py end to end -------------------------------------------------------------------

def test_infer_writes_synced_mp4_with_audio_and_config(sample_dir, tmp_path):
    out = tmp_path / "out" / "talk.mp4"
    result = infer(*sample_args(sample_dir, out, f"pose={sample_dir / 'driver.mp4'}",
                                f"eye={sample_dir / 'driver.mp4'}"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    info = probe_video(out)
    frames = expected_frames(sample_dir / "speech.wav")
    assert info["frames"] == frames
    assert info["fps"] == pytest.approx(25.0)
    assert (info["width"], info["height"]) == (64, 64)
    assert info["has_audio"]
    assert info["audio_seconds"] == pytest.approx(frames / 25, abs=0.1)
    configs = list(tmp_path.glob("outputs/infer/*/config.yaml"))
    assert len(configs) == 1 and "driver_policy: loop" in configs[0].read_text()


def rendered_motion(monkeypatch, tmp_path: Path, *overrides: str) -> list[torch.Tensor]:
    """The motion codes of every frame ``infer.py <overrides>`` rendered, run in this process
    with the render spied on, one (N, motion) tensor per output video."""
    seen: dict[int, list[torch.Tensor]] = {}
    original = TalkingHeadModel.render_frames

    def spy(model, appearance, motion_codes, chunk):
        seen[len(seen)] = [motion_codes]
        return original(model, appearance, motion_codes, chunk)

    monkeypatch.setattr(TalkingHeadModel, "render_frames", spy)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = compose("infer", overrides=["model=tiny", "progress=false",
                                          f"paths.output_dir={tmp_path}", *overrides])
    pipeline.run(cfg)
    return [torch.cat(codes) for codes in seen.values()]


def test_panel_and_controls(sample_dir, tmp_path, monkeypatch):
    on, off = (rendered_motion(monkeypatch, tmp_path, *sample_args(
        sample_dir, tmp_path / f"{name}.mp4", "panel=true", f"controls.all={name == 'on'}",
        "driver_policy=pingpong", "batch_size=3"))[0] for name in ("on", "off"))
    assert (probe_video(tmp_path / "off.mp4")["width"],
            probe_video(tmp_path / "off.mp4")["height"]) == (5 * 64, 64)
    assert on.abs().amax(dim=1).min() > 0  # every frame carries codes
    assert torch.count_nonzero(off) == 0  # controls.all=false switched every code off


def test_silent_audio_is_valid(sample_dir, tmp_path):
    write_wav(tmp_path / "silence.wav", np.zeros(SAMPLE_RATE, np.float32), SAMPLE_RATE)
    out = tmp_path / "silent.mp4"
    args = sample_args(sample_dir, out)
    args[1] = f"audio={tmp_path / 'silence.wav'}"
    result = infer(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert probe_video(out)["frames"] == expected_frames(tmp_path / "silence.wav")


def test_batch_mode_is_resumable_and_relative_to_the_jobs_file(sample_dir, tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    rows = [{"audio": str(sample_dir / "speech.wav"),
             "appearance": str(sample_dir / "portrait.png"), "output": f"batch/{i}.mp4",
             "eye": str(sample_dir / "driver.mp4"), "gaze": i == 0} for i in range(2)]
    jobs.write_text("\n".join(json.dumps(r) for r in rows))
    first = infer(f"weights={sample_dir / 'weights'}", f"jobs={jobs}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    done = tmp_path / "batch" / "0.mp4"
    stamp = done.stat().st_mtime_ns
    (tmp_path / "batch" / "1.mp4").unlink()
    second = infer(f"weights={sample_dir / 'weights'}", f"jobs={jobs}", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert done.stat().st_mtime_ns == stamp and (tmp_path / "batch" / "1.mp4").exists()


def test_csv_jobs(sample_dir, tmp_path, monkeypatch):
    jobs = tmp_path / "jobs.csv"
    speech, face = sample_dir / "speech.wav", sample_dir / "portrait.png"
    jobs.write_text("audio,appearance,output,pose,mouth\n"
                    f"{speech},{face},silent.mp4,,false\n{speech},{face},speaking.mp4,,true\n")
    silent, speaking = rendered_motion(monkeypatch, tmp_path, f"weights={sample_dir / 'weights'}",
                                       f"jobs={jobs}")
    assert (tmp_path / "silent.mp4").is_file() and (tmp_path / "speaking.mp4").is_file()
    mouth = model_config("tiny").codes.mouth  # the mouth code leads (mouth, emotion, eye, pose)
    assert torch.count_nonzero(silent[:, :mouth]) == 0  # the mouth=false column
    assert torch.count_nonzero(speaking[:, :mouth]) > 0
    assert torch.equal(silent[:, mouth:], speaking[:, mouth:])  # nothing else changed


def _bad_inputs(sample: Path, tmp: Path) -> dict[str, tuple[list[str], str]]:
    (tmp / "notes.txt").write_text("not media")
    (tmp / "corrupt.mp4").write_bytes(os.urandom(4096))
    write_wav(tmp / "empty.wav", np.zeros(0, np.float32), SAMPLE_RATE)
    cv2.imwrite(str(tmp / "tiny.png"), np.zeros((12, 12, 3), np.uint8))
    wrong = tmp / "wrong"
    wrong.mkdir()
    for f in (sample / "weights").iterdir():
        (wrong / f.name).write_bytes(f.read_bytes())
    torch.save({"model.conv1.weight": torch.zeros(1)}, wrong / "appearance_model.pth")
    return {
        "missing audio": ([f"audio={tmp / 'nope.wav'}"], "nope.wav"),
        "non-media audio": ([f"audio={tmp / 'notes.txt'}"], "notes.txt"),
        "zero-length audio": ([f"audio={tmp / 'empty.wav'}"], "empty.wav"),
        "corrupt driver": ([f"pose={tmp / 'corrupt.mp4'}"], "corrupt.mp4"),
        "image too small": ([f"appearance={tmp / 'tiny.png'}"], "too small"),
        "wrong checkpoint": ([f"weights={wrong}"], "appearance_model.pth"),
        "bad policy": (["driver_policy=bounce"], "driver_policy"),
        "audio too long": (["max_audio_seconds=1"], "at most 1 s"),
        "output under a file": ([f"output={tmp / 'notes.txt' / 'out.mp4'}"],
                                "a file stands in the way"),
        "output is a folder": ([f"output={tmp}"], "is a folder; name the .mp4"),
        "missing weights": ([f"weights={tmp / 'nope'}"], "weights not found"),
        "weights folder lacks files": ([f"weights={tmp}"], "it lacks appearance_model.pth"),
    }


def test_bad_input_is_one_line_exit_2_and_leaves_no_file(sample_dir, tmp_path):
    out = tmp_path / "never.mp4"
    for case, (override, needle) in _bad_inputs(sample_dir, tmp_path).items():
        args = sample_args(sample_dir, out)
        keys = {a.split("=")[0] for a in override}
        args = [a for a in args if a.split("=")[0] not in keys] + override
        result = infer(*args, cwd=tmp_path)
        assert result.returncode == 2, f"{case}: {result.stderr}"
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), f"{case}: {result.stderr}"
        assert needle in lines[0], case
        assert not out.exists() and not list(tmp_path.glob(".never*")), case


@pytest.mark.parametrize(("missing", "message"), [
    ("audio", "no such audio file"),
    ("appearance", "no such image file"),
    ("pose", "no such video file or frame folder"),
    (None, "appearance_model.pth: not a readable PyTorch checkpoint"),
])
def test_a_missing_input_is_reported_before_the_model_loads(sample_dir, tmp_path, missing,
                                                            message):
    """Weights that fail to load and a missing input: the input is what is reported, as every
    job's files are checked before the model loads (None: those weights' own error)."""
    weights = tmp_path / "unloadable"
    weights.mkdir()
    for name in RELEASED_FILES.values():
        (weights / name).write_bytes(b"not a checkpoint")
    gone = tmp_path / "gone"
    args = [a for a in sample_args(sample_dir, tmp_path / "never.mp4")[1:]
            if a.split("=")[0] != missing]
    args += [f"weights={weights}", *([f"{missing}={gone}"] if missing else [])]
    result = infer(*args, cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    expected = f"error: {gone}: {message}" if missing else message
    assert (lines[0] == expected) if missing else (expected in lines[0]), lines[0]


@pytest.mark.parametrize("kind", ["gray", "rgba"])
def test_grayscale_and_rgba_portraits(sample_dir, tmp_path, kind):
    face = cv2.imread(str(sample_dir / "portrait.png"))
    image = (cv2.cvtColor(face, cv2.COLOR_BGR2GRAY) if kind == "gray"
             else cv2.cvtColor(face, cv2.COLOR_BGR2BGRA))
    cv2.imwrite(str(tmp_path / "p.png"), image)
    args = sample_args(sample_dir, tmp_path / "o.mp4")
    args[2] = f"appearance={tmp_path / 'p.png'}"
    result = infer(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("native", [True, False])
def test_bf16_on_a_cpu_without_it_warns_and_names_fp32(monkeypatch, caplog, native):
    monkeypatch.setattr(inference_model, "cpu_has_native_bf16", lambda: native)
    model = TalkingHeadModel(build_networks(model_config("tiny")))
    cfg = OmegaConf.create({"batch_size": 2, "precision": "bf16", "device": "cpu"})
    with caplog.at_level(logging.WARNING, logger=inference_model.__name__):
        pipeline.Renderer(cfg, model)
    assert model.precision == "bf16"
    warned = [r.getMessage() for r in caplog.records if "bf16" in r.getMessage()]
    assert len(warned) == (0 if native else 1)
    assert native or "use precision=fp32" in warned[0]
