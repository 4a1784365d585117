"""Shared fixtures: composed configs and a small real sample (never downloads)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from pdfgc.features import mel_spectrogram, normalize_rms, num_output_frames
from pdfgc.io import atomic_save
from pdfgc.media import load_audio
from pdfgc.outside_weights import REGISTER
from pdfgc.samples import make_sample

ROOT = Path(__file__).resolve().parents[1]


def model_config(name: str):
    """The ``conf/model/<name>.yaml`` config, composed as Hydra would."""
    with initialize_config_dir(config_dir=str(ROOT / "conf" / "model"), version_base=None):
        return compose(name)


def save_run_checkpoint(path: Path, nets, hyper_parameters: dict | None = None) -> Path:
    """``nets`` as a pdfgc Lightning checkpoint (``nets.<name>.`` keys), with the run config
    ``hyper_parameters`` if given; returns ``path``."""
    state = {f"nets.{name}.{k}": v for name, net in nets.items()
             for k, v in net.state_dict().items()}
    extra = {} if hyper_parameters is None else {"hyper_parameters": hyper_parameters}
    atomic_save({"state_dict": state, **extra}, path)
    return path


def expected_frames(audio: Path) -> int:
    """The number of video frames the pipeline renders for ``audio``."""
    return num_output_frames(len(mel_spectrogram(normalize_rms(load_audio(audio)))))


@pytest.fixture(scope="module")
def any_torchvision_weights():
    """The register's sha256 check off for VGG19 and AlexNet: tests write random weights in
    torchvision's layout, whose hash cannot be the release's."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("vgg19", "alexnet"):
            patch.setitem(REGISTER, name, dataclasses.replace(REGISTER[name], sha256=""))
        yield


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> Path:
    """portrait.png, speech.wav, driver.mp4 and tiny random weights (released layout)."""
    return make_sample(tmp_path_factory.mktemp("sample"), model_config("tiny"))


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for tests of small networks: they gain little from two, and on a
    busy 2-core machine two threads per process stall each other (10x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
