"""Preprocess a folder of talking videos: ``python preprocess.py input=.. output=..``."""

import hydra
from omegaconf import DictConfig

from pdfgc.data.preprocess.runner import run
from pdfgc.errors import exit_on_user_error


@hydra.main(version_base="1.3", config_path="conf", config_name="preprocess")
def main(cfg: DictConfig) -> None:
    with exit_on_user_error():
        run(cfg)


if __name__ == "__main__":
    main()
