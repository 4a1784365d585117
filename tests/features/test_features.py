"""Tests of pdfgc.features: the released PD-FGC audio and image pre-processing."""

import cv2
import librosa
import numpy as np
import pytest
import torch

from pdfgc.features import (
    LEAD_FRAMES,
    MELS_PER_FRAME,
    N_MELS,
    SAMPLE_RATE,
    WINDOW_FRAMES,
    audio_offset_samples,
    crop_face,
    lws_stft,
    mel_spectrogram,
    mel_windows,
    normalize_rms,
    num_output_frames,
    prepare_image,
    prepare_images,
    to_uint8,
)


def _speechlike(n: int, seed: int = 0) -> np.ndarray:
    """A few harmonics plus noise, roughly speech-loud."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SAMPLE_RATE
    tone = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((180, 360, 900, 2500), 1))
    return (0.2 * tone + 0.05 * rng.standard_normal(n)).astype(np.float32)


@pytest.mark.parametrize("length", [1, 159, 160, 1279, 1280, 1281, 16000, 16001, 23457])
def test_lws_stft_matches_lws(length: int) -> None:
    lws = pytest.importorskip("lws")
    x = _speechlike(length, seed=length).astype(np.float64)
    expected = lws.lws(1280, 160, mode="speech").stft(x)
    got = lws_stft(x)
    assert got.shape == expected.shape == (got.shape[0], 641)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_lws_window_formula() -> None:
    lws = pytest.importorskip("lws")
    from pdfgc.features.audio import _lws_window

    np.testing.assert_allclose(
        _lws_window(1280, 160), lws.lws(1280, 160, mode="speech").awin, rtol=0, atol=1e-12
    )


def test_mel_spectrogram_matches_reference() -> None:
    lws = pytest.importorskip("lws")
    x = normalize_rms(_speechlike(SAMPLE_RATE + 777))
    magnitude = np.abs(lws.lws(1280, 160, mode="speech").stft(x.astype(np.float64))).T
    basis = librosa.filters.mel(sr=16000, n_fft=1280, n_mels=80, fmin=125, fmax=7600)
    db = 20 * np.log10(np.maximum(1e-5, basis @ magnitude)) - 20
    expected = np.clip((db + 100) / 100, 0, 1).T
    got = mel_spectrogram(x)
    assert got.dtype == np.float32 and got.shape == expected.shape == (112, N_MELS)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    assert 0.2 < got.mean() < 0.9


def test_normalize_rms() -> None:
    x = _speechlike(8000) * 7
    y = normalize_rms(x)
    assert y.dtype == np.float32
    assert np.sqrt(np.mean(y.astype(np.float64) ** 2)) == pytest.approx(0.1, rel=1e-5)
    silence = normalize_rms(np.zeros(8000, dtype=np.float32))
    assert np.all(silence == 0) and not np.isnan(silence).any()
    quiet = np.full(100, 1e-6, dtype=np.float32)  # RMS below the floor: scaled by 0.1 / 1e-4
    np.testing.assert_allclose(normalize_rms(quiet), 1e-3, rtol=1e-5)


def test_mel_of_silence_is_zero() -> None:
    mel = mel_spectrogram(normalize_rms(np.zeros(SAMPLE_RATE, dtype=np.float32)))
    assert mel.shape == (107, N_MELS)  # L / 160 + 7 rows (lws pads both ends)
    assert np.all(mel == 0)


def test_frame_constants() -> None:
    assert MELS_PER_FRAME == 4 and WINDOW_FRAMES == 20 and LEAD_FRAMES == 2
    assert audio_offset_samples() == 1280


@pytest.mark.parametrize(
    ("n_mel", "expected"),
    [(0, 0), (15, 0), (19, 0), (20, 1), (23, 1), (24, 2), (101, 21), (400, 96)],
)
def test_num_output_frames(n_mel: int, expected: int) -> None:
    assert num_output_frames(n_mel) == expected


def test_mel_windows_indexing() -> None:
    n_rows = 101
    mel = np.repeat(np.arange(n_rows, dtype=np.float32)[:, None], N_MELS, axis=1)  # row r == r
    total = num_output_frames(n_rows)
    windows = mel_windows(mel, 0, total)
    assert windows.shape == (total, 1, N_MELS, WINDOW_FRAMES) and windows.dtype == np.float32
    for k in range(total):
        expected = np.broadcast_to(np.arange(4 * k, 4 * k + 20, dtype=np.float32), (N_MELS, 20))
        np.testing.assert_array_equal(windows[k, 0], expected)
    assert windows[-1, 0, 0, -1] == 4 * (total - 1) + 19 <= n_rows - 1
    np.testing.assert_array_equal(mel_windows(mel, 3, 7), windows[3:7])
    assert mel_windows(mel, 5, 5).shape == (0, 1, N_MELS, WINDOW_FRAMES)
    assert mel_windows(mel[:10], 0, 0).shape == (0, 1, N_MELS, WINDOW_FRAMES)
    with pytest.raises(IndexError):
        mel_windows(mel, 0, total + 1)


def _position_image(height: int = 300, width: int = 260) -> np.ndarray:
    """Red encodes the row, green the column, blue is constant."""
    rows = np.linspace(0, 255, height)[:, None].repeat(width, axis=1)
    cols = np.linspace(0, 255, width)[None, :].repeat(height, axis=0)
    return np.stack([rows, cols, np.full_like(rows, 77)], axis=-1).round().astype(np.uint8)


def test_crop_face_matches_cv2_by_hand() -> None:
    img = _position_image()
    square = cv2.resize(img, (224, 224))
    expected = cv2.resize(square[:192, 16:208].copy(), (224, 224))
    got = crop_face(img)
    assert got.shape == (224, 224, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)
    # the crop trims the bottom: the last rows come from row ~191 of the 224 resize
    assert abs(int(got[-1, 112, 0]) - int(square[191, 112, 0])) <= 2
    assert got[-1, 112, 0] < square[-1, 112, 0] - 20
    # and 16 columns each side
    assert abs(int(got[100, 0, 1]) - int(square[100, 16, 1])) <= 2
    assert abs(int(got[100, -1, 1]) - int(square[100, 207, 1])) <= 2


def test_prepare_image_range_and_shape() -> None:
    img = _position_image()
    x = prepare_image(img)
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    assert x.min() >= -1 and x.max() <= 1
    np.testing.assert_allclose(x, crop_face(img).transpose(2, 0, 1) / 255 * 2 - 1, atol=1e-6)
    small = prepare_image(img, size=64)
    assert small.shape == (3, 64, 64)
    assert np.all(small[2] == pytest.approx(77 / 255 * 2 - 1, abs=1e-6))
    whole = prepare_image(img, size=64, crop=False)
    assert whole.shape == (3, 64, 64)
    assert whole[0, -1].mean() > small[0, -1].mean()  # uncropped keeps the bottom rows


def test_prepare_images_batch() -> None:
    imgs = np.stack([_position_image(), 255 - _position_image()])
    batch = prepare_images(imgs, size=96, crop=True)
    assert batch.shape == (2, 3, 96, 96) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch[1], prepare_image(imgs[1], size=96))


def test_to_uint8_round_trip() -> None:
    imgs = np.random.default_rng(0).integers(0, 256, (2, 32, 48, 3), dtype=np.uint8)
    x = imgs.transpose(0, 3, 1, 2).astype(np.float32) / 255 * 2 - 1
    np.testing.assert_array_equal(to_uint8(x), imgs)
    np.testing.assert_array_equal(to_uint8(torch.from_numpy(x)), imgs)
    clipped = to_uint8(np.array([-3.0, 3.0], dtype=np.float32).reshape(1, 1, 1, 2).repeat(3, 1))
    np.testing.assert_array_equal(clipped[0, 0, :, 0], [0, 255])
