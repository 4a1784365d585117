"""Tests of pdfgc.media: audio/image/video reading and mp4 writing."""

import os
import subprocess
import sys
from pathlib import Path

import cv2
import librosa
import numpy as np
import pytest
import soundfile

from pdfgc.errors import PdfgcError
from pdfgc.media import (
    FrameSource,
    VideoWriter,
    load_audio,
    probe_video,
    read_image,
    write_wav,
)

SR = 16000


def _tone(seconds: float, rate: int = SR, channels: int = 1) -> np.ndarray:
    """(N,) or (N, C) float32 sine sweep plus a little noise, amplitude ~0.3."""
    n = int(seconds * rate)
    t = np.arange(n) / rate
    rng = np.random.default_rng(n)
    chans = [0.3 * np.sin(2 * np.pi * (220 + 110 * c) * t) for c in range(channels)]
    out = np.stack(chans, axis=1) + 0.01 * rng.standard_normal((n, channels))
    return out[:, 0].astype(np.float32) if channels == 1 else out.astype(np.float32)


def _frames(n: int, height: int = 48, width: int = 64) -> np.ndarray:
    """(n, H, W, 3) uint8 smooth frames whose brightness grows with the frame index."""
    base = np.linspace(0, 60, width)[None, :, None] + np.linspace(0, 30, height)[:, None, None]
    levels = 40 + 150 * np.arange(n) / max(1, n - 1)
    frames = base[None] + levels[:, None, None, None] + np.array([0, 10, 20])
    return np.clip(frames, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def talking_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 40-frame 25 fps mp4 with a 1.6 s 16 kHz audio track."""
    path = tmp_path_factory.mktemp("video") / "talk.mp4"
    with VideoWriter(path, fps=25, audio=_tone(1.6), sample_rate=SR) as writer:
        writer.write(_frames(40)[:30])
        for frame in _frames(40)[30:]:
            writer.write(frame)
    return path


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # audioread, imported by librosa.load
def test_load_audio_matches_librosa(tmp_path: Path) -> None:
    path = tmp_path / "stereo.wav"
    soundfile.write(path, _tone(1.3, rate=44100, channels=2), 44100, subtype="PCM_16")
    got = load_audio(path)
    expected = librosa.load(path, sr=SR)[0]
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_load_audio_native_rate_and_silence(tmp_path: Path) -> None:
    path = tmp_path / "silence.wav"
    write_wav(path, np.zeros(8000, dtype=np.float32), SR)
    got = load_audio(path)
    assert got.shape == (8000,) and np.all(got == 0)


def test_write_wav_round_trip(tmp_path: Path) -> None:
    samples = _tone(0.5)
    path = tmp_path / "nested" / "out.wav"
    write_wav(path, samples, SR)
    info = soundfile.info(path)
    assert (info.samplerate, info.subtype, info.channels) == (SR, "PCM_16", 1)
    np.testing.assert_allclose(load_audio(path), samples, atol=1 / 2**14)


def test_load_audio_of_mp4(talking_mp4: Path) -> None:
    samples = load_audio(talking_mp4)
    assert samples.dtype == np.float32
    assert abs(len(samples) / SR - 1.6) < 0.1
    assert 0.15 < np.sqrt(np.mean(samples**2)) < 0.26  # a 0.3 sine has RMS 0.21


def _bad_audio_files(tmp_path: Path) -> dict[str, Path]:
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 20)
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros(0, dtype=np.float32), SR, subtype="PCM_16")
    zero_bytes = tmp_path / "zero_bytes.wav"
    zero_bytes.write_bytes(b"")
    silent_video = tmp_path / "silent_video.mp4"
    with VideoWriter(silent_video) as writer:
        writer.write(_frames(3))
    return {
        "missing": tmp_path / "missing.wav",
        "text": text,
        "empty": empty,
        "zero_bytes": zero_bytes,
        "silent_video": silent_video,
    }


def test_load_audio_errors(tmp_path: Path) -> None:
    for kind, path in _bad_audio_files(tmp_path).items():
        with pytest.raises(PdfgcError) as info:
            load_audio(path)
        message = str(info.value)
        assert path.name in message and "\n" not in message, kind


def test_read_image_conversions(tmp_path: Path) -> None:
    rgb = _frames(1, 20, 30)[0]
    cv2.imwrite(str(tmp_path / "gray.png"), rgb[..., 0])
    cv2.imwrite(str(tmp_path / "rgba.png"), np.dstack([rgb[..., ::-1], np.full((20, 30), 9)]))
    cv2.imwrite(str(tmp_path / "deep.png"), rgb[..., ::-1].astype(np.uint16) * 257)
    cv2.imwrite(str(tmp_path / "plain.png"), rgb[..., ::-1])
    for name in ("gray", "rgba", "deep", "plain"):
        img = read_image(tmp_path / f"{name}.png")
        assert img.shape == (20, 30, 3) and img.dtype == np.uint8, name
    np.testing.assert_array_equal(read_image(tmp_path / "gray.png"), rgb[..., [0, 0, 0]])
    for name in ("rgba", "deep", "plain"):
        np.testing.assert_array_equal(read_image(tmp_path / f"{name}.png"), rgb)


def test_read_image_applies_exif_orientation(tmp_path: Path) -> None:
    pil = pytest.importorskip("PIL.Image")
    img = pil.fromarray(np.zeros((40, 60, 3), dtype=np.uint8))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    img.save(tmp_path / "photo.jpg", exif=exif)
    assert read_image(tmp_path / "photo.jpg").shape == (60, 40, 3)


def test_read_image_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a png at all")
    for path in (tmp_path / "missing.png", junk, tmp_path):
        with pytest.raises(PdfgcError, match=path.name):
            read_image(path)


def test_frame_source_folder_sorted(tmp_path: Path) -> None:
    frames = _frames(3, 16, 24)
    # lexical order (a10 < a2 < b1) differs from the numeric order of the names
    for name, frame in zip(("a10.png", "a2.jpg", "b1.bmp"), frames, strict=True):
        cv2.imwrite(str(tmp_path / name), frame[..., ::-1])
    (tmp_path / "notes.txt").write_text("ignored")
    source = FrameSource(tmp_path)
    assert len(source) == 3 and source.fps == 25.0
    got = source.read([2, 0, 1])
    assert got.shape == (3, 16, 24, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got[1], frames[0])  # a10.png, lossless
    np.testing.assert_array_equal(got[0], frames[2])  # b1.bmp, lossless
    assert np.abs(got[2].astype(int) - frames[1]).mean() < 3  # a2.jpg, lossy
    with pytest.raises(IndexError):
        source.read([3])


def test_frame_source_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(PdfgcError, match="missing"):
        FrameSource(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("no frames here")
    with pytest.raises(PdfgcError, match=tmp_path.name):
        FrameSource(tmp_path)
    cv2.imwrite(str(tmp_path / "0.png"), np.zeros((8, 8, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "1.png"), np.zeros((8, 10, 3), np.uint8))
    with pytest.raises(PdfgcError, match="1.png"):
        FrameSource(tmp_path).read([0, 1])


def test_frame_source_video(talking_mp4: Path) -> None:
    source = FrameSource(talking_mp4)
    assert len(source) == 40 and source.fps == pytest.approx(25.0)
    got = source.read([0, 20, 39])
    assert got.shape == (3, 48, 64, 3) and got.dtype == np.uint8
    expected = _frames(40)[[0, 20, 39]].astype(float)
    np.testing.assert_allclose(got.mean(axis=(1, 2)), expected.mean(axis=(1, 2)), atol=4)
    assert np.abs(got - expected).mean() < 4


def test_frame_source_corrupt_video(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    with pytest.raises(PdfgcError, match="corrupt.mp4"):
        FrameSource(path)
    voice = tmp_path / "voice.wav"
    write_wav(voice, _tone(0.2), SR)
    with pytest.raises(PdfgcError, match="voice.wav: has no video stream"):
        FrameSource(voice)


def test_video_writer_round_trip(talking_mp4: Path) -> None:
    info = probe_video(talking_mp4)
    assert info["frames"] == 40 and info["fps"] == pytest.approx(25.0)
    assert (info["width"], info["height"]) == (64, 48)
    assert info["has_audio"] and abs(info["audio_seconds"] - 1.6) < 0.1
    assert sorted(p.name for p in talking_mp4.parent.iterdir()) == ["talk.mp4"]


def test_video_writer_without_audio(tmp_path: Path) -> None:
    path = tmp_path / "mute.mp4"
    with VideoWriter(path, fps=30) as writer:
        writer.write(_frames(5))
    info = probe_video(path)
    assert info["frames"] == 5 and info["fps"] == pytest.approx(30.0)
    assert not info["has_audio"] and info["audio_seconds"] == 0


def test_video_writer_failure_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    with pytest.raises(KeyError), VideoWriter(path, audio=_tone(0.5), sample_rate=SR) as writer:
        writer.write(_frames(4))
        raise KeyError("boom")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "frames",
    [
        np.zeros((2, 47, 64, 3), np.uint8),  # odd height
        np.zeros((45, 64, 3), np.uint8),  # odd height, single frame
        np.zeros((2, 48, 63, 3), np.uint8),  # odd width
        np.zeros((2, 48, 64, 3), np.float32),  # not uint8
        np.zeros((2, 48, 64), np.uint8),  # no channels
    ],
)
def test_video_writer_bad_frames(tmp_path: Path, frames: np.ndarray) -> None:
    path = tmp_path / "bad.mp4"
    with pytest.raises(PdfgcError, match="bad.mp4"), VideoWriter(path) as writer:
        writer.write(frames)
    assert list(tmp_path.iterdir()) == []


def test_video_writer_size_change_and_no_frames(tmp_path: Path) -> None:
    with pytest.raises(PdfgcError, match="differs"), VideoWriter(tmp_path / "a.mp4") as writer:
        writer.write(_frames(2, 48, 64))
        writer.write(_frames(2, 32, 64))
    with pytest.raises(PdfgcError, match="no frames"), VideoWriter(tmp_path / "b.mp4"):
        pass
    assert list(tmp_path.iterdir()) == []


def test_probe_video_errors(tmp_path: Path) -> None:
    wav = tmp_path / "voice.wav"
    write_wav(wav, _tone(0.2), SR)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 100)
    for path in (tmp_path / "missing.mp4", wav, junk):
        with pytest.raises(PdfgcError, match=path.name):
            probe_video(path)


def test_video_writer_bad_settings(tmp_path: Path) -> None:
    path = tmp_path / "bad.mp4"
    with pytest.raises(PdfgcError, match="frame rate"):
        VideoWriter(path, fps=0)
    with pytest.raises(PdfgcError, match="mono"):
        VideoWriter(path, audio=_tone(0.1, channels=2), sample_rate=SR)
    with pytest.raises(PdfgcError, match="sample rate"):
        VideoWriter(path, audio=_tone(0.1))
    odd_rate = VideoWriter(path, audio=_tone(0.1, rate=22000), sample_rate=22000)  # not for AAC
    with pytest.raises(PdfgcError, match="bad.mp4: cannot encode"), odd_rate as writer:
        writer.write(_frames(2))
    assert list(tmp_path.iterdir()) == []


def test_media_does_not_import_torch() -> None:
    code = "import sys, pdfgc.media; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


ENCODE_TWICE = """
import sys
from pdfgc.data.synthetic.generate import CLIP_STREAM, make_identity, render_clip
from pdfgc.media import VideoWriter
# a demo clip whose default encoding was seen to differ between two generations
frames, audio, _ = render_clip(make_identity(158, 0), (0, CLIP_STREAM, 158, 0), 2.0, 64)
with VideoWriter(sys.argv[1], audio=audio, sample_rate=16000,
                 deterministic=sys.argv[2] == "1") as writer:
    writer.write(frames)
"""


@pytest.mark.parametrize("deterministic", [True, False])
def test_deterministic_encoding_does_not_read_uninitialised_memory(tmp_path, deterministic):
    """glibc's MALLOC_PERTURB_ fills fresh memory with a given byte: x264's macroblock tree
    reads some of it, so the default encoding changes with it, the deterministic one not."""
    outputs = []
    for fill in ("165", "77"):
        out = tmp_path / f"{fill}.mp4"
        subprocess.run([sys.executable, "-c", ENCODE_TWICE, str(out), str(int(deterministic))],
                       check=True, env={**os.environ, "MALLOC_PERTURB_": fill})
        outputs.append(out.read_bytes())
    assert (outputs[0] == outputs[1]) == deterministic
