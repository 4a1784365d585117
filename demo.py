"""The main job (``make demo``): ``python demo.py [run_group=..] [train_overrides=[..]]``."""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from pdfgc.demo import run
from pdfgc.errors import exit_on_user_error


@hydra.main(version_base="1.3", config_path="conf", config_name="demo")
def main(cfg: DictConfig) -> None:
    with exit_on_user_error():
        run(cfg, Path(__file__).resolve().parent)  # where train.py, evaluate.py, infer.py are


if __name__ == "__main__":
    main()
