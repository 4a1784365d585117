"""The register of outside weights: where a file is looked for, how it is checked, the one-line
errors, random weights only by name, and the callers that use it."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
import torch
import torchvision
from omegaconf import OmegaConf

from pdfgc.errors import PdfgcError
from pdfgc.losses.registry import build_terms
from pdfgc.metrics.registry import MetricUnavailable, check_outside
from pdfgc.outside_weights import REGISTER, default_path, hub_cache, locate

from conftest import model_config


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """torch hub's cache in a fresh folder."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_a_given_path_is_used_and_a_missing_one_is_one_line_naming_file_source_and_option(
        tmp_path):
    given = tmp_path / "mine.model"
    with pytest.raises(PdfgcError) as err:
        locate("syncnet", given, "weights.syncnet")
    message = str(err.value)
    assert message.startswith(f"weights.syncnet: syncnet_v2.model not found ({given})")
    assert REGISTER["syncnet"].source in message and "\n" not in message
    given.write_bytes(b"any")  # no hash is published for this file: presence suffices here
    assert locate("syncnet", given, "weights.syncnet") == given


def test_without_a_path_the_file_is_looked_for_in_torch_hubs_cache(empty_hub):
    assert hub_cache() == empty_hub
    with pytest.raises(PdfgcError, match=f"not set, and not in {empty_hub}"):
        locate("syncnet", None, "weights.syncnet")
    empty_hub.mkdir(parents=True)
    (empty_hub / "syncnet_v2.model").write_bytes(b"any")
    assert locate("syncnet", None, "weights.syncnet") == empty_hub / "syncnet_v2.model"


def test_a_file_whose_release_name_carries_its_hash_is_checked_against_it(tmp_path,
                                                                           monkeypatch):
    impostor = tmp_path / "vgg19-dcbb9e9d.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, impostor)
    with pytest.raises(PdfgcError, match="its sha256 does not start with dcbb9e9d"):
        locate("vgg19", impostor, "loss.vgg_weights")
    prefix = hashlib.sha256(impostor.read_bytes()).hexdigest()[:8]
    monkeypatch.setitem(REGISTER, "vgg19", dataclasses.replace(REGISTER["vgg19"], sha256=prefix))
    assert locate("vgg19", impostor, "loss.vgg_weights") == impostor


def test_random_weights_only_where_allowed_and_only_by_name():
    assert locate("alexnet", "random", "loss.lpips_net", allow_random=True) is None
    with pytest.raises(PdfgcError, match="weights.inception=random: inception cannot run"):
        locate("inception", "random", "weights.inception")


def test_dlibs_files_come_from_their_package():
    for name in ("dlib_landmarks", "dlib_face"):
        path = locate(name, None, "backend=dlib")
        assert path.name == REGISTER[name].file and "face_recognition_models" in str(path)


def test_vgg_from_the_hub_cache_when_no_path_is_given_else_the_term_is_off(
        empty_hub, any_torchvision_weights):
    loss = OmegaConf.create({"vgg": 1.0, "vgg_weights": None})
    model = model_config("tiny")
    assert "vgg" not in build_terms(loss, model)
    empty_hub.mkdir(parents=True)
    torch.save(torchvision.models.vgg19(weights=None).state_dict(), default_path("vgg19"))
    assert "vgg" in build_terms(loss, model)


def test_evaluation_checks_each_metrics_weights_and_names_what_is_missing(empty_hub, tmp_path):
    weights = {"inception": str(tmp_path / "none.pth"), "syncnet": None, "lpips": None,
               "arcface": None}
    unavailable = check_outside(["psnr", "fid", "lse", "lpips", "csim"], weights,
                                skip_unavailable=True)
    assert sorted(unavailable) == ["fid", "lpips", "lse"]  # csim: dlib's, in its package
    assert "none.pth" in unavailable["fid"] and str(empty_hub) in unavailable["lse"]
    assert check_outside(["lpips"], {**weights, "lpips": "random"}) == {}
    with pytest.raises(MetricUnavailable, match="weights.arcface: arcface.pt not found"):
        check_outside(["csim"], {**weights, "arcface": str(tmp_path / "arcface.pt")})
