"""The networks: released names and shapes, strict loading, clear checkpoint errors."""

from __future__ import annotations

import json

import pytest
import torch

from pdfgc.errors import PdfgcError
from pdfgc.io import atomic_save
from pdfgc.losses.landmarks import gaussian_heatmaps
from pdfgc.networks import build_networks
from pdfgc.networks.checkpoints import RELEASED_FILES, load_networks, save_released
from pdfgc.networks.layers import Blur, ModulatedConv2d, Upsample, make_blur_kernel, upfirdn2d
from pdfgc.networks.motion import FAN, soft_argmax

from conftest import ROOT, model_config

KEYS_JSON = ROOT / "tests" / "data" / "official_checkpoint_keys.json"


@pytest.fixture(scope="module")
def official():
    torch.manual_seed(0)
    return build_networks(model_config("official"))


@pytest.fixture()
def tiny():
    return build_networks(model_config("tiny"))


def test_official_names_and_shapes_equal_the_release(official):
    released = json.loads(KEYS_JSON.read_text())
    for name, file in RELEASED_FILES.items():
        ours = {k: list(v.shape) for k, v in official[name].state_dict().items()}
        assert ours == released[file.removesuffix(".pth")], name


def test_released_layout_round_trip_is_strict_and_exact(official, tmp_path):
    save_released(tmp_path, official)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(RELEASED_FILES.values())
    fresh = build_networks(model_config("official"))
    load_networks(tmp_path, fresh)
    for name in RELEASED_FILES:
        for (k, a), b in zip(official[name].state_dict().items(),
                             fresh[name].state_dict().values(), strict=True):
            assert torch.equal(a, b), f"{name}.{k}"


def test_lightning_checkpoint_loads_by_prefix(tiny, tmp_path):
    state = {f"nets.{n}.{k}": v for n, m in tiny.items() for k, v in m.state_dict().items()}
    atomic_save({"state_dict": state, "global_step": 3}, tmp_path / "last.ckpt")
    fresh = build_networks(model_config("tiny"))
    load_networks(tmp_path / "last.ckpt", fresh)
    w = "conv1.conv.weight"
    assert torch.equal(fresh.generator.state_dict()[w], tiny.generator.state_dict()[w])


def test_wrong_shapes_name_the_file_and_keys(tiny, official, tmp_path):
    save_released(tmp_path, tiny)
    with pytest.raises(PdfgcError) as err:
        load_networks(tmp_path, official)
    message = str(err.value)
    assert "appearance_model.pth" in message and "shape mismatch" in message
    assert "\n" not in message


def test_missing_truncated_and_foreign_files(tiny, tmp_path):
    save_released(tmp_path, tiny)
    (tmp_path / "audio_model.pth").unlink()
    with pytest.raises(PdfgcError, match="audio_model.pth: checkpoint file not found"):
        load_networks(tmp_path, tiny)
    save_released(tmp_path, tiny)
    motion = tmp_path / "motion_model.pth"
    motion.write_bytes(motion.read_bytes()[:1000])
    with pytest.raises(PdfgcError, match="motion_model.pth: not a readable PyTorch checkpoint"):
        load_networks(tmp_path, tiny)
    (tmp_path / "x.ckpt").write_text("hello")
    with pytest.raises(PdfgcError, match="x.ckpt: not a readable"):
        load_networks(tmp_path / "x.ckpt", tiny)


def test_missing_and_unexpected_keys_are_reported(tiny, tmp_path):
    state = tiny.generator.state_dict()
    state.pop("to_rgb1.bias")
    state["extra.weight"] = torch.zeros(1)
    save_released(tmp_path, tiny)
    torch.save(state, tmp_path / "generator_model.pth")
    with pytest.raises(PdfgcError, match=r"missing: to_rgb1.bias; unexpected: extra.weight"):
        load_networks(tmp_path, tiny)


@pytest.mark.parametrize("name", ["tiny", "official"])
def test_fast_modulated_conv_equals_reference(name):
    torch.manual_seed(1)
    cfg = model_config(name)
    gen = build_networks(cfg, names=("generator",)).generator.eval()
    for m in gen.modules():  # make the noise matter
        if m.__class__.__name__ == "NoiseInjection":
            m.weight.data.fill_(0.3)
    c0, s = cfg.generator.channels[0], cfg.generator.init_size
    style, fmap = torch.randn(2, cfg.generator.style_dim), torch.randn(2, c0, s, s)
    noise = gen.make_noise(7)
    with torch.no_grad():
        fast = gen(style, fmap, noise)
        gen.set_impl("reference")
        reference = gen(style, fmap, noise)
    assert fast.shape == (2, 3, cfg.image_size, cfg.image_size)
    assert (fast - reference).abs().max() < 1e-4


@pytest.mark.parametrize("up,down,pad", [(1, 1, (2, 2)), (2, 1, (2, 1)), (1, 2, (1, 1)),
                                          (2, 1, (-1, 2)), (1, 1, (0, -1))])
def test_generic_fir_resampling_equals_depthwise(up, down, pad):
    x = torch.randn(2, 5, 9, 9)
    kernel = make_blur_kernel([1, 3, 3, 1]) * up**2
    fast = upfirdn2d(x, kernel, up, down, pad)
    generic = upfirdn2d(x, kernel, up, down, pad, generic=True)
    size = (9 * up + sum(pad) - 4) // down + 1  # 4 taps
    assert fast.shape == generic.shape == (2, 5, size, size)
    assert torch.allclose(fast, generic, atol=1e-6)


def test_set_impl_switches_convolutions_and_resampling():
    gen = build_networks(model_config("tiny"), names=("generator",)).generator
    resamplers = [m for m in gen.modules() if isinstance(m, (Blur, Upsample))]
    assert resamplers and not any(m.generic for m in resamplers)
    gen.set_impl("reference")
    assert all(m.generic for m in resamplers)
    assert all(m.impl == "reference" for m in gen.modules() if isinstance(m, ModulatedConv2d))
    gen.set_impl("fast")
    assert not any(m.generic for m in resamplers)
    with pytest.raises(ValueError, match="unknown"):
        gen.set_impl("released")


@pytest.mark.parametrize("slope", [0.0, 0.2])
def test_motion_squeeze_maps_and_slope(slope):
    """f_mot comes from ``squeeze_channels`` maps; with every squeezed value negative the
    release's ReLU passes no gradient to the squeeze conv, a leaky one does."""
    torch.manual_seed(0)
    fan = FAN(64, width=8, hourglass_depth=1, num_landmarks=68, feature_dim=32, dropout=0.0,
              squeeze_channels=4, squeeze_slope=slope)
    assert fan.fc.in_features == 4 * 8 * 8
    fan.conv6.bias.data.fill_(-1e3)  # every unit below zero
    fan(torch.rand(2, 3, 64, 64)).sum().backward()
    assert (fan.conv6.weight.grad.abs().sum() > 0) == (slope > 0)


def test_soft_argmax_finds_sub_pixel_peaks():
    """The soft-argmax of a Gaussian peak is its centre to within a quarter pixel at any
    fractional position, and follows the peak as it moves."""
    points = torch.tensor([[[3.3, 12.6], [9.75, 4.1]]])  # x, y in heatmap pixels
    maps = gaussian_heatmaps(points, size=16, image_size=16, sigma=1.0)
    torch.testing.assert_close(soft_argmax(maps), points, atol=0.25, rtol=0)
    xs = torch.linspace(5.0, 6.0, 11)
    sweep = gaussian_heatmaps(torch.stack([xs, torch.full_like(xs, 8.0)], -1)[None], 16, 16, 1.0)
    assert (soft_argmax(sweep)[0, :, 0].diff() > 0).all()
    assert (soft_argmax(torch.zeros(1, 1, 16, 8)) == torch.tensor([3.5, 7.5])).all()


def test_motion_coordinates_end_f_mot():
    """With ``coordinates`` f_mot ends with each heatmap's soft-argmax in [-1, 1] times
    ``coordinate_scale`` (the linear layer gives the rest, unscaled), and a feature_dim too
    small to hold them is refused."""
    torch.manual_seed(0)
    fan = FAN(64, width=8, hourglass_depth=1, num_landmarks=68, feature_dim=160, dropout=0.0,
              coordinates=True).eval()
    assert fan.fc.out_features == 160 - 2 * 68
    image = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        feature, heatmaps = fan(image), fan.heatmaps(image)
    assert feature.shape == (2, 160)
    torch.testing.assert_close(feature[:, 24:], (soft_argmax(heatmaps) / 7.5 - 1).flatten(1))
    fan.coordinate_scale = 8.0  # heatmap pixels from the centre
    with torch.no_grad():
        torch.testing.assert_close(fan(image)[:, 24:], (soft_argmax(heatmaps) - 7.5).flatten(1)
                                   * 8 / 7.5)
        torch.testing.assert_close(fan(image)[:, :24], feature[:, :24])
    with pytest.raises(PdfgcError, match="must exceed the 136 landmark coordinates"):
        FAN(64, 8, 1, 68, feature_dim=136, dropout=0.0, coordinates=True)


def test_noise_is_seedable_and_changes_output():
    cfg = model_config("tiny")
    gen = build_networks(cfg, names=("generator",)).generator.eval()
    for m in gen.modules():
        if m.__class__.__name__ == "NoiseInjection":
            m.weight.data.fill_(0.5)
    c0, size = cfg.generator.channels[0], cfg.generator.init_size
    style, fmap = torch.randn(1, cfg.generator.style_dim), torch.randn(1, c0, size, size)
    with torch.no_grad():
        a, b = gen(style, fmap, gen.make_noise(1)), gen(style, fmap, gen.make_noise(1))
        c = gen(style, fmap, gen.make_noise(2))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_encoders_output_shapes():
    cfg = model_config("tiny")
    nets = build_networks(cfg).eval()
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        app, mot, aud = nets.appearance(x), nets.motion(x), nets.audio(torch.rand(3, 1, 80, 20))
    assert app["vector"].shape == (3, cfg.codes.appearance)
    assert app["map"].shape == (3, cfg.generator.channels[0], 8, 8)  # downsample 8 at 64 px
    assert {k: tuple(v.shape) for k, v in mot.items()} == {
        "feature": (3, 256), "mouth": (3, 32), "pose": (3, 6), "eye": (3, 6), "emotion": (3, 8)}
    assert aud["mouth"].shape == (3, cfg.codes.mouth)


@pytest.mark.parametrize("downsample", [8, 16, 32])
def test_appearance_trunk_stride_is_configurable_without_changing_parameters(downsample):
    cfg = model_config("tiny")
    released = build_networks(model_config("tiny"), names=("appearance",)).appearance
    cfg.appearance.downsample = downsample
    encoder = build_networks(cfg, names=("appearance",)).appearance.eval()
    assert {k: v.shape for k, v in encoder.state_dict().items()} == {
        k: v.shape for k, v in released.state_dict().items()}
    with torch.no_grad():
        features = encoder.model(torch.rand(1, 3, 64, 64))
    assert features.shape[-1] == 64 // downsample


def test_appearance_trunk_rejects_other_strides():
    cfg = model_config("tiny")
    cfg.appearance.downsample = 4
    with pytest.raises(PdfgcError, match="model.appearance.downsample=4: expected one of"):
        build_networks(cfg, names=("appearance",))


def test_inconsistent_style_dim_is_a_clear_error():
    cfg = model_config("tiny")
    cfg.generator.style_dim = 999
    with pytest.raises(PdfgcError, match="style_dim is 999"):
        build_networks(cfg)
