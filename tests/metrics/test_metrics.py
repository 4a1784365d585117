"""Evaluation metrics on inputs with known answers, and ``evaluate.py`` end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import default_collate
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
from torchvision.models.inception import Inception3

from pdfgc.data.datasets import TalkingHeadDataset
from pdfgc.data.synthetic import FACTOR_NAMES, generate_dataset, make_identity, render_frame
from pdfgc.data.synthetic.factors import EMOTIONS
from pdfgc.errors import PdfgcError
from pdfgc.evaluate import run
from pdfgc.face.landmarks import MOUTH
from pdfgc.features import prepare_image
from pdfgc.inference.model import TalkingHeadModel
from pdfgc.io import atomic_save
from pdfgc.metrics import tabulate
from pdfgc.metrics.disentanglement import (
    CODE_GROUPS,
    HEADS,
    Disentanglement,
    UntrainedHeads,
    fit_ridge,
    probe_r2,
    probe_targets,
)
from pdfgc.metrics.fid import FID, uint8_images
from pdfgc.metrics.identity import DlibEmbedder, cosine
from pdfgc.metrics.landmarks import detect_landmarks, detection_images, landmark_distance
from pdfgc.metrics.lpips import LPIPS
from pdfgc.metrics.oracle import FactorOracle, OracleControl, random_frames, train_oracle
from pdfgc.metrics.psnr_ssim import PSNR, SSIM, Sharpness
from pdfgc.metrics.registry import (
    MetricContext,
    MetricUnavailable,
    build_metrics,
    list_metrics,
    metric_class,
)
from pdfgc.metrics.render import EvalRenderer, partner_indices
from pdfgc.metrics.syncnet import SyncNet, SyncNetScorer, load_syncnet, mfcc, sync_score
from pdfgc.metrics.transfer import GROUPS, GroundTruth, Transfer, gaussian_blur
from pdfgc.networks import build_networks
from pdfgc.networks.checkpoints import RELEASED_FILES, save_released
from pdfgc.samples import portrait

from conftest import ROOT, model_config

ALL_METRICS = ["blink", "csim", "disentanglement", "fid", "lmd", "lpips", "lse", "oracle",
               "own_sync", "pose", "psnr", "sharpness", "ssim", "transfer"]
DATA = {"num_identities": 4, "clips_per_identity": 2, "seconds": 1.0, "image_size": 64,
        "val_identities": 1, "test_identities": 2, "seed": 0}


def context(tmp_path: Path, **kw) -> MetricContext:
    return MetricContext(device=torch.device("cpu"), output_dir=tmp_path,
                         cache_dir=tmp_path / "cache", data_key="test", **kw)


class StubBatch:
    """The parts of a FrameBatch the image metrics read."""

    def __init__(self, target, fake, source=None, cross=None, cross_source=None, **data):
        self.data = {"target": target, "source": target if source is None else source, **data}
        self.fake, self.cross, self.cross_source = fake, cross, cross_source
        self.cache: dict = {}

    def images(self, key):
        return getattr(self, key) if key in ("fake", "cross", "cross_source") else self.data[key]


def smooth_images(n: int, seed: int = 0, size: int = 32) -> torch.Tensor:
    """(n, 3, size, size) in [-1, 1]: random low-frequency patterns."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=g) * 2 - 1
    return nn.functional.interpolate(coarse, size=(size, size), mode="bilinear",
                                     align_corners=False)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    generate_dataset(root, workers=1, **DATA)
    return root


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    save_released(folder, build_networks(model_config("tiny")))
    return folder


# ----------------------------------------------------------------------------- registry

def test_registry_lists_every_metric_and_rejects_unknown_names(tmp_path):
    assert list_metrics() == ALL_METRICS
    with pytest.raises(PdfgcError) as err:
        metric_class("fdi")
    assert "metric='fdi': expected one of" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(PdfgcError, match="metric='nope': expected one of"):
        build_metrics(["psnr", "nope"], context(tmp_path))


def test_unavailable_metrics_fail_clearly_or_are_skipped(tmp_path):
    ctx = context(tmp_path, weights={"inception": str(tmp_path / "missing.pth")})
    with pytest.raises(MetricUnavailable) as err:
        build_metrics(["fid"], ctx)
    assert "missing.pth" in str(err.value) and "\n" not in str(err.value)
    metrics, skipped = build_metrics(["psnr", "fid", "oracle"], ctx, skip_unavailable=True)
    assert [m.name for m in metrics] == ["psnr"]
    assert "missing.pth" in skipped["fid"] and "data=synthetic" in skipped["oracle"]


# ----------------------------------------------------------------------------- image quality

def test_identical_images_score_perfectly_and_different_ones_worse(tmp_path):
    real = smooth_images(6, size=64)
    other = smooth_images(6, seed=1, size=64)
    scores = {}
    for name, fake in (("same", real.clone()), ("other", other)):
        metrics = [PSNR(context(tmp_path)), SSIM(context(tmp_path)),
                   LPIPS(context(tmp_path, weights={"lpips": "random"}))]
        for metric in metrics:
            metric.update(StubBatch(real, fake))
        scores[name] = {k: v for m in metrics for k, v in m.compute().results.items()}
    assert scores["same"]["psnr/self"] == float("inf")
    assert scores["same"]["ssim/self"] == pytest.approx(1.0, abs=1e-5)
    assert scores["same"]["lpips/random/self"] == pytest.approx(0.0, abs=1e-6)
    assert np.isfinite(scores["other"]["psnr/self"]) and scores["other"]["psnr/self"] < 20
    assert scores["other"]["ssim/self"] < 0.9
    assert scores["other"]["lpips/random/self"] > 0.01


def test_copying_the_source_is_the_yardstick_of_psnr_and_ssim(tmp_path):
    target = smooth_images(6, size=64)
    source = (0.8 * target + 0.2 * smooth_images(6, seed=1, size=64)).clamp(-1, 1)
    scores = {}
    for name, fake in (("copy", source.clone()), ("exact", target.clone()),
                       ("blurred copy", gaussian_blur(source, 2.0))):
        metrics = [PSNR(context(tmp_path)), SSIM(context(tmp_path))]
        for metric in metrics:
            metric.update(StubBatch(target, fake, source=source))
        scores[name] = {k: v for m in metrics for k, v in m.compute().results.items()}
    copy = scores["copy"]
    assert copy["psnr/self"] == copy["psnr/source"] and copy["psnr/over_source"] == 0.0
    assert copy["ssim/over_source"] == pytest.approx(0.0, abs=1e-6)
    assert np.isfinite(copy["psnr/source"]) and copy["ssim/source"] < 1
    assert scores["exact"]["psnr/over_source"] == float("inf")
    assert scores["exact"]["ssim/over_source"] > 0.05
    assert scores["blurred copy"]["psnr/over_source"] < 0
    assert scores["blurred copy"]["ssim/over_source"] < 0
    assert "sharpness/over_source" not in Sharpness(context(tmp_path)).compute().results


def test_sharpness_is_one_for_the_target_and_falls_with_blur(tmp_path):
    detail = torch.randn(6, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    real = (smooth_images(6, size=64) + 0.2 * detail).clamp(-1, 1)
    blurred = gaussian_blur(real, 2.0)
    scores = {}
    for name, fake in (("same", real.clone()), ("blurred", blurred), ("flat", real * 0)):
        metric = Sharpness(context(tmp_path))
        metric.update(StubBatch(real, fake))
        scores[name] = metric.compute().results["sharpness/self"]
    assert scores["same"] == pytest.approx(1.0)
    assert 0.0 < scores["blurred"] < 0.3
    assert scores["flat"] == 0.0


class TinyFeatures(nn.Module):
    """A small fixed feature network in place of Inception (uint8 in, 8 features out)."""

    num_features = 8

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 5)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(images.float() / 127.5 - 1)).mean(dim=(2, 3))


def test_fid_is_zero_for_the_same_images_and_caches_real_statistics(tmp_path):
    real = smooth_images(64)
    same = FID(context(tmp_path), feature=TinyFeatures())
    same.update(StubBatch(real, real.clone(), cross=(real * 0.5 + 0.4).clamp(-1, 1)))
    results = same.compute().results
    assert results["fid/self"] == pytest.approx(0.0, abs=1e-3)
    assert results["fid/cross"] > 100 * max(results["fid/self"], 1e-6)
    assert len(list((tmp_path / "cache").glob("fid-real-test-*.pt"))) == 1

    cached = FID(context(tmp_path), feature=TinyFeatures())
    assert cached.cached
    cached.update(StubBatch(torch.zeros_like(real), real.clone()))  # real images unused now
    assert cached.compute().results["fid/self"] == pytest.approx(0.0, abs=1e-3)


def random_inception_file(path: Path) -> Path:
    """A randomly initialised FID Inception in torch-fidelity's layout (torchvision's
    Inception3 with 1008 classes and no auxiliary head has the same keys and shapes), its
    convolutions scaled so that features stay of order one and differ between images."""
    torch.manual_seed(0)
    net = Inception3(num_classes=1008, aux_logits=False, init_weights=False)
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight)
        elif isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
            nn.init.uniform_(module.bias, -0.1, 0.1)
    torch.save(net.state_dict(), path)
    return path


def test_fid_features_equal_torch_fidelitys_extractor_on_the_same_weights_file(tmp_path):
    path = random_inception_file(tmp_path / "inception.pth")
    fid = FID(context(tmp_path, weights={"inception": str(path)}))
    reference = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], str(path)).eval()
    for seed, size in ((0, 64), (1, 299)):
        images = uint8_images(smooth_images(2, seed=seed, size=size))
        with torch.no_grad():
            ours, theirs = fid.fids["self"].inception(images), reference(images)[0]
        assert ours.shape == (2, 2048)
        assert (ours - theirs).abs().max() < 1e-4
        assert (ours[0] - ours[1]).abs().max() > 0.01  # distinct images, distinct features

    real = smooth_images(4, seed=2, size=64)
    fid.update(StubBatch(real, real.clone()))
    assert fid.compute().results["fid/self"] == pytest.approx(0.0, abs=1e-3)


def test_inception_weights_missing_unreadable_or_foreign_fail_in_one_line(tmp_path):
    ctx = context(tmp_path, weights={"inception": str(tmp_path / "none.pth")})
    with pytest.raises(MetricUnavailable, match=r"weights.inception: .* not found \(.*none.pth\)"):
        FID(ctx)
    (tmp_path / "corrupt.pth").write_bytes(b"not a checkpoint")
    torch.save({"fc.weight": torch.zeros(3)}, tmp_path / "foreign.pth")
    for name, message in (("corrupt.pth", "corrupt.pth: not a readable PyTorch checkpoint"),
                          ("foreign.pth", "size mismatch for fc.weight")):
        with pytest.raises(PdfgcError) as err:
            FID(context(tmp_path, weights={"inception": str(tmp_path / name)}))
        assert message in str(err.value) and "\n" not in str(err.value)
    assert "foreign.pth: not the FID Inception layout of torch-fidelity" in str(err.value)


# ----------------------------------------------------------------------------- lip sync

def test_offset_search_recovers_a_known_shift():
    g = torch.Generator().manual_seed(0)
    video = torch.randn(80, 32, generator=g)
    for shift in (-4, 0, 3, 15):
        audio = torch.roll(video, -shift, dims=0)  # audio[j] = video[j + shift]
        audio[len(audio) - max(shift, 0):] = torch.randn(max(shift, 0), 32, generator=g)
        audio[:max(-shift, 0)] = torch.randn(max(-shift, 0), 32, generator=g)
        score = sync_score(video, audio)
        assert score.offset == shift
        assert score.confidence > 1.0 and score.distance < 2.0


def test_syncnet_runs_on_clips_and_loads_syncnet_python_state_dicts(tmp_path):
    torch.manual_seed(0)
    net = SyncNet()
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "syncnet_v2.model")  # as syncnet_python's file: no counters
    loaded = load_syncnet(tmp_path / "syncnet_v2.model")
    assert torch.equal(loaded.netfclip[3].weight, net.netfclip[3].weight)
    scorer = SyncNetScorer(loaded, torch.device("cpu"), batch=4)
    frames = (np.random.default_rng(0).random((11, 224, 224, 3)) * 255).astype(np.uint8)
    samples = np.random.default_rng(1).standard_normal(11 * 640).astype(np.float32) * 0.1
    count = scorer.windows(len(frames), len(samples))
    assert count == 6
    video = scorer.video_features(frames, count)
    audio = scorer.audio_features(samples, count)
    assert video.shape == audio.shape == (6, 1024)
    score = sync_score(video, audio)
    assert -15 <= score.offset <= 15 and score.confidence >= 0
    with pytest.raises(PdfgcError, match="checkpoint file not found"):
        load_syncnet(tmp_path / "absent.model")


def test_mfcc_rates_and_energy_coefficient():
    rng = np.random.default_rng(0)
    samples = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    coefficients = mfcc(samples)
    assert coefficients.shape == (99, 13)  # 1 + ceil((16000 - 400) / 160) frames
    louder = mfcc(2 * samples)  # c0 is the log energy: + log 4; the rest are scale-free
    np.testing.assert_allclose(louder[:, 0] - coefficients[:, 0], np.log(4.0), atol=1e-9)
    np.testing.assert_allclose(louder[:, 1:], coefficients[:, 1:], atol=1e-9)


# ----------------------------------------------------------------------------- probes

def test_a_perfect_probe_scores_one_and_a_shuffled_one_about_zero():
    rng = np.random.default_rng(0)
    factors = rng.standard_normal((600, 5))
    codes = factors @ rng.standard_normal((5, 24)) + 0.01 * rng.standard_normal((600, 24))
    fit, test = slice(0, 300), slice(300, 600)
    perfect = probe_r2(codes[fit], factors[fit], codes[test], factors[test])
    assert perfect.min() > 0.99
    shuffled = rng.permutation(300)
    chance = probe_r2(codes[fit][shuffled], factors[fit], codes[test], factors[test])
    assert abs(chance.mean()) < 0.05 and np.abs(chance).max() < 0.25
    probe = fit_ridge(codes[fit], factors[fit])
    assert probe.coef.shape == (24, 5)


def test_leave_one_clip_out_penalty_does_not_overfit_near_duplicate_frames():
    """Ten near-identical frames a clip, factors constant per clip: leaving one frame out
    picks a penalty that memorises clips (held-out R² far below 0); leaving the clip out
    reads a truly linear factor as well and the unreadable ones at about 0."""
    rng = np.random.default_rng(0)
    clips = np.repeat(np.arange(80), 10)
    codes = rng.standard_normal((80, 32))[clips] + 0.05 * rng.standard_normal((800, 32))
    factors = rng.standard_normal((80, 3))[clips]
    factors[:, 0] = codes[:, 0] + 0.1 * rng.standard_normal(800)
    fit = clips % 2 == 0
    by_frame = probe_r2(codes[fit], factors[fit], codes[~fit], factors[~fit])
    by_clip = probe_r2(codes[fit], factors[fit], codes[~fit], factors[~fit], clips[fit])
    assert by_frame[0] > 0.95 and by_clip[0] > 0.95
    assert by_frame[1:].max() < -1.0
    assert np.abs(by_clip[1:]).max() < 0.25


def synthetic_probe_data(n: int = 160, frames_per_clip: int = 4, seed: int = 0):
    """True factors (n, F) shaped like the synthetic data's (one emotion and intensity per
    clip, neutral at intensity 0), their clip ids, and the weighted emotion columns."""
    rng = np.random.default_rng(seed)
    clips = np.arange(n) // frames_per_clip
    factors = rng.uniform(-1, 1, (n, len(FACTOR_NAMES)))
    emotion = rng.integers(len(EMOTIONS), size=clips.max() + 1)[clips]
    intensity = np.where(emotion == 0, 0.0, rng.uniform(0.3, 1.0, clips.max() + 1)[clips])
    first = FACTOR_NAMES.index("emotion_neutral")
    factors[:, first:first + len(EMOTIONS)] = np.eye(len(EMOTIONS))[emotion]
    factors[:, FACTOR_NAMES.index("emotion_intensity")] = intensity
    weighted = np.eye(len(EMOTIONS))[emotion][:, 1:] * intensity[:, None]  # (n, 4)
    return factors, clips, weighted


def test_probe_targets_add_the_intensity_weighted_emotions():
    factors, _, weighted = synthetic_probe_data()
    targets, names = probe_targets(factors, list(FACTOR_NAMES))
    assert names == [*FACTOR_NAMES, "happy_x_intensity", "sad_x_intensity",
                     "angry_x_intensity", "surprised_x_intensity"]
    np.testing.assert_array_equal(targets[:, :len(FACTOR_NAMES)], factors)
    np.testing.assert_array_equal(targets[:, len(FACTOR_NAMES):], weighted)


def test_untrained_heads_are_reinitialised_on_the_shared_trained_trunk():
    torch.manual_seed(1)
    nets = build_networks(model_config("tiny")).eval()
    before = {k: v.clone() for k, v in nets.state_dict().items()}
    untrained = UntrainedHeads(nets)
    again = UntrainedHeads(nets)
    assert untrained.motion.model is nets.motion.model  # the trained trunk, not a copy
    for head in ("to_mouth", "headpose_embed", "to_eye", "emo_embed"):
        assert not torch.equal(untrained.motion.get_submodule(head)[-1].weight,
                               nets.motion.get_submodule(head)[-1].weight)
    assert all(torch.equal(v, before[k]) for k, v in nets.state_dict().items())
    feature = torch.randn(5, 256)
    mel = torch.rand(5, 1, 80, 20)
    codes, codes_again = untrained.codes(feature, mel), again.codes(feature, mel)
    assert set(codes) == set(HEADS)
    assert codes["lip"].shape == (5, 32) and codes["expression"].shape == (5, 8)
    assert all(torch.equal(codes[k], codes_again[k]) for k in HEADS)  # a fixed seed
    trained = nets.motion.heads(feature)
    assert not torch.allclose(codes["lip"], trained["mouth"])
    assert not torch.allclose(codes["lip_audio"], nets.audio(mel)["mouth"])


def test_disentanglement_matrix_beside_untrained_heads_and_heatmap(tmp_path):
    """f_mot holds yaw, so even a random head on it reads yaw; the trained codes read their
    own factors only: lip the mouth, pose yaw .. ty (not tz), expression the weighted
    emotions."""
    rng = np.random.default_rng(0)
    factors, clips, weighted = synthetic_probe_data()
    n = len(factors)
    yaw = factors[:, [FACTOR_NAMES.index("yaw")]]
    own = {"lip": factors[:, [FACTOR_NAMES.index(f) for f in ("mouth_open", "mouth_round")]],
           "pose": factors[:, [FACTOR_NAMES.index(f) for f in ("yaw", "pitch", "roll", "tx",
                                                               "ty")]],
           "expression": weighted}
    codes = {name: rng.standard_normal((n, 6)) for name in CODE_GROUPS}  # noise ...
    for name, x in own.items():  # ... but these read their own factors
        codes[name] = x @ rng.standard_normal((x.shape[1], 6))
    codes["motion"] = 3 * yaw @ rng.standard_normal((1, 256)) + rng.standard_normal((n, 256))
    torch.manual_seed(0)
    nets = build_networks(model_config("tiny")).eval()
    renderer = SimpleNamespace(model=SimpleNamespace(nets=nets))
    metric = Disentanglement(context(tmp_path, factor_names=FACTOR_NAMES))
    for start in range(0, n, 40):
        part = slice(start, start + 40)
        batch = StubBatch(torch.zeros(1), None, factors=torch.from_numpy(factors[part]),
                          clip=torch.from_numpy(clips[part]),
                          window_mel=torch.rand(40, 3, 1, 80, 20))
        batch.renderer = renderer
        batch.probe_codes = {k: torch.from_numpy(v[part]).float() for k, v in codes.items()}
        metric.update(batch)
    out = metric.compute()
    results = out.results
    assert results["probe/lip/own"] > 0.9 and results["probe/lip/leak"] < 0.2
    assert results["probe/pose/own"] > 0.9 and results["probe/pose/tz"] < 0.2
    assert results["probe/expression/own"] > 0.9
    assert results["probe/expression/intensity"] > 0.3  # read through the weighted columns
    assert results["probe/eye/own"] < 0.2 and results["probe/appearance/mean"] < 0.1
    for code in HEADS:
        assert results[f"probe/{code}/learned"] == pytest.approx(
            results[f"probe/{code}/own"] - results[f"probe/{code}/own_untrained"])
    assert results["probe/lip/leak_untrained"] > 0.5  # a random head reads f_mot's yaw
    assert results["probe/lip/learned"] > 0.8
    assert results["probe/lip_audio/own_untrained"] < 0.2  # random audio, random mels
    r2 = np.array(out.details["probe/r2"])
    r2_untrained = np.array(out.details["probe/r2_untrained"])
    names = out.details["probe/factors"]
    assert r2.shape == (len(CODE_GROUPS), len(FACTOR_NAMES) + 4)
    assert r2_untrained.shape == (len(HEADS), len(names))
    yaw_column = names.index("yaw")
    assert r2[list(CODE_GROUPS).index("lip"), yaw_column] < 0.2
    assert r2_untrained[HEADS.index("lip"), yaw_column] > 0.5
    image = cv2.imread(str(tmp_path / "disentanglement.png"))
    assert image is not None and image.shape[0] > 100 and image.shape[1] > image.shape[0] / 2
    assert "mouth_open" in out.report and "lip untrained" in out.report
    assert "happy_x_intensity" in out.report


# ----------------------------------------------------------------------------- oracle

@pytest.fixture(scope="module")
def oracle_setup():
    """A briefly trained small oracle, and held-out frames of its identities."""
    identities = [make_identity(i) for i in range(6)]
    images, factors = random_frames(identities, 900, 64, crop=True, size=32, seed=0)
    oracle = train_oracle(images, factors, FACTOR_NAMES, steps=250, batch_size=32, lr=3e-3,
                          width=16)
    held_images, held_factors = random_frames(identities, 96, 64, crop=True, size=64, seed=1)
    return oracle, held_images.float(), held_factors


def test_the_oracle_reads_factors_better_than_chance(oracle_setup):
    oracle, images, factors = oracle_setup
    assert oracle.r2[FACTOR_NAMES.index("yaw")] > 0.5  # measured on its held-out frames
    with torch.no_grad():
        error = ((oracle(images) - factors).abs() / oracle.range).mean(0)
    chance = ((oracle.mean - factors).abs() / oracle.range).mean(0)
    for name in ("yaw", "pitch", "roll", "tx"):
        i = FACTOR_NAMES.index(name)
        assert error[i] < 0.75 * chance[i], name
    assert error.mean() < chance.mean()


def test_a_random_generator_scores_worse_than_ground_truth_on_the_oracle(oracle_setup, tmp_path):
    oracle, images, factors = oracle_setup
    torch.manual_seed(0)
    model = TalkingHeadModel(build_networks(model_config("tiny")))
    metric = OracleControl(context(tmp_path, factor_names=FACTOR_NAMES), oracle=oracle)
    renderer = EvalRenderer(model, chunk=16)
    g = torch.Generator().manual_seed(0)
    for part in (slice(0, 8), slice(8, 16)):
        target = images[part]
        data = {"target": target, "source": target.flip(0), "factors": factors[part],
                "window": target[:, None].expand(-1, 3, -1, -1, -1),
                "window_mel": torch.rand(8, 3, 1, 80, 20, generator=g),
                "identity": torch.arange(8)}
        metric.update(renderer.frame_batch(data))
    out = metric.compute()
    results = out.results
    assert results["oracle/real_error"] < results["oracle/recon_error"]
    assert results["oracle/real_error"] < results["oracle/chance_error"]
    assert "yaw" not in out.details["oracle/unreliable"]  # figures use factors read well
    assert np.isfinite(results["oracle/pose/error"])
    assert results["oracle/mouth/leakage"] >= 0  # how far the (reliable) pose factors moved
    assert not any(k.startswith("control/") for k in results)  # those are transfer's


def test_oracle_leakage_is_the_largest_other_factor_moved(tmp_path):
    """An oracle that reads factors off (B, F) "images" as they are: a mouth swap that moves
    one pose factor by 0.3 of its range leaks 0.3, however many other factors stay put."""
    oracle = FactorOracle(FACTOR_NAMES)
    oracle.r2.fill_(1.0)  # every factor reliable; range 1
    oracle.forward = lambda images: images
    truth = torch.rand(4, len(FACTOR_NAMES), generator=torch.Generator().manual_seed(0))
    yaw = FACTOR_NAMES.index("yaw")

    class Batch:
        data = {"target": truth, "factors": truth}
        fake, partner = truth, torch.tensor([1, 0, 3, 2])

        @staticmethod
        def swapped(group):
            moved = truth.clone()
            moved[:, yaw] += 0.3 if group == "mouth" else 0.0
            return moved

    metric = OracleControl(context(tmp_path, factor_names=FACTOR_NAMES), oracle=oracle)
    metric.update(Batch())
    results = metric.compute().results
    assert results["oracle/mouth/leakage"] == pytest.approx(0.3)
    assert results["oracle/pose/leakage"] == pytest.approx(0.0)


# ----------------------------------------------------------------------------- transfer

@pytest.fixture(scope="module")
def transfer_setup(tiny_data):
    """A test batch of the tiny dataset, the random tiny model's renderer, and the batch's
    ground truth frames (T0 under None, Th under each group)."""
    dataset = TalkingHeadDataset(tiny_data, "test", image_size=64, emotion_window=3,
                                 negatives=0, samples_per_epoch=8)
    data = default_collate([dataset[i] for i in range(8)])
    torch.manual_seed(0)
    renderer = EvalRenderer(TalkingHeadModel(build_networks(model_config("tiny"))), chunk=8)
    truth = GroundTruth(tiny_data, dataset.factor_names, 64, crop=True)
    return {"root": tiny_data, "names": dataset.factor_names, "data": data,
            "renderer": renderer, "truth": truth.swaps(renderer.frame_batch(data))}


def transfer_results(setup, tmp_path, fake=None, swapped=None) -> dict[str, float]:
    """The transfer metric on the batch, its renders replaced by ``fake`` (R0) and
    ``swapped(group)`` (Rg) where given."""
    batch = setup["renderer"].frame_batch(setup["data"])
    if fake is not None:
        batch.fake = fake
    if swapped is not None:
        batch.swapped = swapped
    metric = Transfer(context(tmp_path, factor_names=setup["names"], data_root=setup["root"]))
    metric.update(batch)
    return metric.compute().results


def test_the_ground_truth_is_the_dataset_frame_of_the_right_speaker(transfer_setup):
    truth, target = transfer_setup["truth"], transfer_setup["data"]["target"]
    own = (truth[None] - target).abs().mean()
    other = (truth[None].roll(1, 0) - target).abs().mean()
    assert own < 0.05 < other  # only the mp4's compression separates it from the data
    for group in GROUPS:  # each swap changes the frame
        assert (truth[group] - truth[None]).abs().mean() > 1e-3, group


def test_a_render_that_ignores_the_swap_transfers_nothing(transfer_setup, tmp_path):
    fake = transfer_setup["renderer"].frame_batch(transfer_setup["data"]).fake
    results = transfer_results(transfer_setup, tmp_path, fake=fake, swapped=lambda g: fake)
    for group in GROUPS:
        assert abs(results[f"control/{group}/transfer"]) < 1e-9
        assert results[f"control/{group}/leakage"] < 1e-9
        assert results[f"control/{group}/error"] == pytest.approx(
            results[f"control/{group}/error_nocontrol"])


def test_a_perfect_render_transfers_all_and_leaks_nothing(transfer_setup, tmp_path):
    truth = transfer_setup["truth"]
    results = transfer_results(transfer_setup, tmp_path, fake=truth[None],
                               swapped=truth.__getitem__)
    for group in GROUPS:
        assert results[f"control/{group}/transfer"] == pytest.approx(1.0, abs=1e-6)
        assert results[f"control/{group}/leakage"] < 1e-6
        assert results[f"control/{group}/error"] < 1e-9
        assert results[f"control/{group}/error_nocontrol"] > 1e-3


def test_a_render_that_moves_the_wrong_group_leaks(transfer_setup, tmp_path):
    truth = transfer_setup["truth"]
    wrong = dict(zip(GROUPS, GROUPS[1:] + GROUPS[:1], strict=True))  # mouth moves pose ...
    results = transfer_results(transfer_setup, tmp_path, fake=truth[None],
                               swapped=lambda group: truth[wrong[group]])
    for group in GROUPS:
        assert results[f"control/{group}/transfer"] == pytest.approx(0.0, abs=1e-6)
        assert results[f"control/{group}/leakage"] == pytest.approx(1.0, abs=1e-6)


def test_the_random_model_is_scored_with_every_figure(transfer_setup, tmp_path):
    results = transfer_results(transfer_setup, tmp_path)
    assert set(results) == {f"control/{g}/{k}" for g in GROUPS
                            for k in ("transfer", "leakage", "error", "error_nocontrol")}
    assert all(np.isfinite(v) for v in results.values())


def test_gaussian_blur_keeps_constants_and_spreads_a_point():
    flat = torch.full((1, 3, 16, 16), 0.7)
    assert torch.allclose(gaussian_blur(flat, 1.5), flat)
    point = torch.zeros(1, 1, 16, 16)
    point[0, 0, 8, 8] = 1.0
    blurred = gaussian_blur(point, 1.0)
    assert blurred.sum() == pytest.approx(1.0) and blurred[0, 0, 8, 8] < 0.2
    assert torch.equal(gaussian_blur(point, 0.0), point)


def test_partners_are_of_another_identity_when_there_is_one():
    assert partner_indices(torch.tensor([0, 0, 1, 1])).tolist() == [2, 2, 0, 0]
    assert partner_indices(torch.tensor([5, 5, 5])).tolist() == [1, 2, 0]


# ----------------------------------------------------------------------------- identity, LMD

def test_csim_of_a_face_with_itself_is_one_and_with_another_face_lower():
    photo = portrait()
    cartoon, _ = render_frame(make_identity(3), None, 224)
    brighter = np.clip(photo.astype(np.int16) + 25, 0, 255).astype(np.uint8)
    images = torch.from_numpy(np.stack([prepare_image(p, 224, crop=False)
                                        for p in (photo, brighter, cartoon)]))
    faces = detection_images(images)
    marks = detect_landmarks(faces)
    assert np.isfinite(marks[0]).all()
    embeddings = DlibEmbedder().embed(faces, marks)
    same, bright, other = cosine(embeddings[[0, 0, 0]], embeddings)
    assert same == pytest.approx(1.0, abs=1e-6)
    assert bright > 0.95
    assert other < bright - 0.05


def test_landmark_distances():
    rng = np.random.default_rng(0)
    marks = rng.uniform(0, 224, (5, 68, 2))
    np.testing.assert_array_equal(landmark_distance(marks, marks.copy()), 0.0)
    moved = marks.copy()
    moved[:, MOUTH] += [3.0, 4.0]
    assert landmark_distance(moved, marks, MOUTH) == pytest.approx([5.0] * 5)
    assert landmark_distance(moved, marks) == pytest.approx([5.0 * 20 / 68] * 5)
    moved[2] = np.nan
    assert np.isnan(landmark_distance(moved, marks)[2])


# ----------------------------------------------------------------------------- evaluate.py

def evaluate_config(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("evaluate", overrides=list(overrides))


def test_evaluate_recovers_the_data_settings_saved_with_a_checkpoint(tiny_data, tmp_path):
    torch.manual_seed(0)
    nets = build_networks(model_config("tiny"))
    run_dir = tmp_path / "train_run"
    state = {f"nets.{name}.{k}": v for name, net in nets.items()
             for k, v in net.state_dict().items()}
    atomic_save({"state_dict": state}, run_dir / "checkpoints" / "last.ckpt")
    trained = evaluate_config("model=tiny", "data=synthetic", f"data.root={tiny_data}",
                              "data.generate=null")
    OmegaConf.save({"model": trained.model, "data": trained.data}, run_dir / "config.yaml",
                   resolve=True)
    cfg = evaluate_config(f"ckpt={run_dir / 'checkpoints' / 'last.ckpt'}",  # model official,
                          "eval.metrics=[psnr,ssim]", "batch_size=4", "max_batches=1",
                          "num_workers=0", "progress=false", f"paths.root_dir={tmp_path}",
                          f"paths.output_dir={tmp_path / 'eval'}")  # no data=: both saved
    record = run(cfg)
    assert record["data"] == str(tiny_data) and record["model"] == "tiny"
    assert record["frames"] == 4 and set(record["results"]) == {
        f"{name}/{kind}" for name in ("psnr", "ssim") for kind in ("self", "source", "over_source")}
    lines = (tmp_path / "eval" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["results"] == pytest.approx(record["results"])


def test_evaluate_needs_data_settings_for_released_weights(tiny_weights, tmp_path):
    cfg = evaluate_config(f"ckpt={tiny_weights}", "model=tiny",
                          f"paths.output_dir={tmp_path}")
    with pytest.raises(PdfgcError) as err:
        run(cfg)
    assert "no data settings" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(("changes", "message"), [
    ({"ckpt": "{tmp}/gone.ckpt"}, "{tmp}/gone.ckpt: weights not found"),
    ({"data.image_size": 32}, "data.image_size=32 does not match model=tiny (64 px); set "
                              "data.image_size=64"),
    ({"data.root": "{tmp}/none", "data.generate": "null"}, "{tmp}/none/manifest.jsonl: no "
                                                           "manifest"),
    ({"eval.metrics": "[fid]", "weights.inception": "{tmp}/gone.pth"},
     "weights.inception: weights-inception-2015-12-05-6726825d.pth not found ({tmp}/gone.pth)"),
    ({"data.root": "{data}", "data.generate": "null"}, "unloadable/appearance_model.pth: not "
                                                       "a readable PyTorch checkpoint"),
])
def test_evaluate_checks_its_inputs_before_making_data_or_loading_the_model(
        tiny_data, tmp_path, changes, message):
    """Paths and sizes are checked before synthetic data is generated (its root stays
    absent) and before the model loads: its weights would fail to load, which the last case
    shows."""
    unloadable = tmp_path / "unloadable"
    unloadable.mkdir()
    for name in RELEASED_FILES.values():
        (unloadable / name).write_bytes(b"not a checkpoint")
    settings = {"ckpt": unloadable, "model": "tiny", "data": "synthetic",
                "data.root": "{tmp}/fresh", "eval.metrics": "[psnr]", "num_workers": 0,
                "progress": "false", "paths.root_dir": tmp_path,
                "paths.output_dir": tmp_path / "eval", **changes}
    cfg = evaluate_config(*(f"{key}={value}".format(tmp=tmp_path, data=tiny_data)
                            for key, value in settings.items()))
    with pytest.raises(PdfgcError) as err:
        run(cfg)
    assert message.format(tmp=tmp_path) in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "fresh").exists()


def test_evaluate_py_end_to_end_on_released_tiny_weights(tiny_data, tiny_weights, tmp_path):
    out = tmp_path / "eval"
    command = [sys.executable, str(ROOT / "evaluate.py"), f"ckpt={tiny_weights}", "model=tiny",
               "data=synthetic", f"data.root={tiny_data}", "data.generate=null",
               "data.emotion_window=3", "eval=offline", "eval.options.oracle.frames=200",
               "eval.options.oracle.steps=10", "batch_size=4", "max_batches=2", "max_clips=2",
               "clip_frames=8", "num_workers=0", "progress=false", f"paths.root_dir={tmp_path}",
               "weights.lpips=random", f"hydra.run.dir={out}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # see the one_thread fixture
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["frames"] == 8 and record["clips"] == 2 and record["skipped"] == {}
    for key in ("psnr/self", "ssim/self", "lpips/random/self", "csim/dlib/self",
                "csim/dlib/cross",
                "own_sync/c", "own_sync/c_real", "probe/pose/own", "probe/pose/learned",
                "oracle/real_error", "oracle/pose/leakage", "lmd/detected", "pose/error_deg",
                "blink/corr"):
        assert key in record["results"], key
    assert cv2.imread(str(out / "disentanglement.png")) is not None
    assert (out / "config.yaml").is_file()
    assert list((tmp_path / "data" / ".cache").glob("oracle-*.pt"))
    assert "probe/pose/own" in done.stdout and "held-out R²" in done.stdout

    bad = subprocess.run([*command[:2], f"ckpt={tiny_weights}", "model=tiny", "data=synthetic",
                          f"data.root={tiny_data}", "data.generate=null", "eval.metrics=[fdi]",
                          f"hydra.run.dir={tmp_path / 'bad'}"],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith(
        "error: metric='fdi': expected one of")


# ----------------------------------------------------------------------------- tabulate

def test_tabulate_prints_runs_side_by_side(tmp_path, capsys):
    for name, fid in (("a", 12.5), ("b", 9.25)):
        (tmp_path / name).mkdir()
        lines = [{"results": {"fid/self": 99.0}},
                 {"results": {"fid/self": fid, "psnr/self": float("inf"),
                              "lmd/mouth": float("nan")}}]
        (tmp_path / name / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n"
                                                               for r in lines))
    tabulate.main([str(tmp_path / "a"), str(tmp_path / "b" / "metrics.jsonl")])
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].split() == ["metric", "a", "b"]
    assert rows[2].split() == ["fid/self", "12.5", "9.25"]
    assert rows[3].split() == ["psnr/self", "inf", "inf"] and rows[4].split()[1] == "-"
    tabulate.main(["--all", "--metrics", "fid", "--markdown", str(tmp_path / "a")])
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].replace(" ", "") == "|metric|a#0|a#1|" and len(rows) == 3
    with pytest.raises(SystemExit) as exit_info:
        tabulate.main([str(tmp_path / "missing")])
    assert exit_info.value.code == 2
    assert "no evaluation results here" in capsys.readouterr().err
