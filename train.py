"""Train a PD-FGC stage: ``python train.py stage=<identity|motion|heads|expression> ...``."""

import hydra
from omegaconf import DictConfig

from pdfgc.errors import exit_on_user_error
from pdfgc.train import run


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    with exit_on_user_error():
        return run(cfg)


if __name__ == "__main__":
    main()
