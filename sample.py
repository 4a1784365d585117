"""The built-in sample (``make sample``): ``python sample.py [folder=outputs/sample]``."""

import hydra
from omegaconf import DictConfig

from pdfgc.errors import exit_on_user_error
from pdfgc.samples import make_sample


@hydra.main(version_base="1.3", config_path="conf", config_name="sample")
def main(cfg: DictConfig) -> None:
    with exit_on_user_error():
        print(make_sample(cfg.folder, cfg.model))


if __name__ == "__main__":
    main()
