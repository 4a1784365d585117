"""The web app (``make app``): ``python app.py [port=..] [weights=<folder|.ckpt>] [device=..]``."""

import hydra
from omegaconf import DictConfig

from pdfgc.app import serve


@hydra.main(version_base="1.3", config_path="conf", config_name="app")
def main(cfg: DictConfig) -> None:
    serve(cfg)


if __name__ == "__main__":
    main()
