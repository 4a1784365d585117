"""Render a controllable talking head: ``python infer.py weights=... audio=... appearance=...``."""

import hydra
from omegaconf import DictConfig

from pdfgc.errors import exit_on_user_error
from pdfgc.inference.pipeline import run


@hydra.main(version_base="1.3", config_path="conf", config_name="infer")
def main(cfg: DictConfig) -> None:
    with exit_on_user_error():
        run(cfg)


if __name__ == "__main__":
    main()
