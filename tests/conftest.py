"""Shared fixtures: composed configs and a small real sample (never downloads)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from pdfgc.samples import make_sample

ROOT = Path(__file__).resolve().parents[1]


def model_config(name: str):
    """The ``conf/model/<name>.yaml`` config, composed as Hydra would."""
    with initialize_config_dir(config_dir=str(ROOT / "conf" / "model"), version_base=None):
        return compose(name)


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> Path:
    """portrait.png, speech.wav, driver.mp4 and tiny random weights (released layout)."""
    return make_sample(tmp_path_factory.mktemp("sample"))
