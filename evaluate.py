"""Evaluate a checkpoint: ``python evaluate.py ckpt=<.ckpt | released folder> eval=...``."""

import hydra
from omegaconf import DictConfig

from pdfgc.errors import exit_on_user_error
from pdfgc.evaluate import run


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    with exit_on_user_error():
        run(cfg)


if __name__ == "__main__":
    main()
