"""Training: build the DataModule, the stage module, callbacks, loggers and Trainer from the
composed ``conf/train.yaml``, fit, and return the metric a sweeper optimises.

``train.py`` at the top is the Hydra main; :func:`run` is what it calls.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import Logger, WandbLogger
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from pdfgc.errors import PdfgcError
from pdfgc.io import save_config, write_text
from pdfgc.networks import check_image_size

log = logging.getLogger(__name__)

LIGHTNING_CKPT_KEYS = ("last", "best", "hpc", "registry")  # ckpt_path words Lightning resolves
EXPECTED_WARNINGS = (
    r"Found \d+ module\(s\) in eval mode",  # frozen submodules, on purpose
    "Using ModelCheckpoint with manual optimization",  # we do save the post-step state
    "Checkpoint directory .* exists and is not empty",  # a resumed run's own folder
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # Lightning's call into torch
)
LIGHTNING_TIPS = "💡 Tip"  # Lightning's advertisement at every fit (the litlogger package)


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(LIGHTNING_TIPS)


logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_DropTips())


def wandb_offline() -> bool:
    """Whether the W&B logger runs offline: as ``WANDB_MODE`` says when set (offline, dryrun:
    yes; online, disabled: no, so that Lightning does not turn them into dryrun), else unless
    the user is logged in (``WANDB_API_KEY``, or the key ``wandb login`` stored in the netrc
    file, found as wandb finds it, for ``WANDB_BASE_URL``)."""
    if mode := os.environ.get("WANDB_MODE"):
        return mode in ("offline", "dryrun")
    if os.environ.get("WANDB_API_KEY"):
        return False
    from wandb.errors import AuthenticationError
    from wandb.sdk.lib import urls
    from wandb.sdk.lib.wbauth import read_netrc_auth

    try:
        return read_netrc_auth(host=os.environ.get("WANDB_BASE_URL", urls.DEFAULT_BASE_URL)) is None
    except AuthenticationError:  # a malformed stored key: wandb.init says what is wrong
        return False


def step_share(steps: int, share: float) -> int:
    """``share`` of a budget of ``steps``, rounded, at least 1: an LR schedule's step size
    that follows the budget (``${pdfgc.share:${trainer.max_steps},0.25}``)."""
    return max(1, round(int(steps) * float(share)))


OmegaConf.register_new_resolver("pdfgc.wandb_offline", wandb_offline, replace=True)
OmegaConf.register_new_resolver("pdfgc.share", step_share, replace=True)


def train(cfg: DictConfig) -> float | None:
    """Fit ``cfg.stage`` on ``cfg.data``; the value of ``cfg.optimized_metric`` at the end
    (None if it was never logged)."""
    check_image_size(cfg.model, cfg.data)  # before any data is generated or network built
    torch.set_float32_matmul_precision(cfg.matmul_precision)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    pl.seed_everything(cfg.seed, workers=True)
    save_config(cfg, Path(cfg.paths.output_dir) / "config.yaml")
    datamodule = build(cfg.data)
    module = build_module(cfg)
    module.save_hyperparameters(OmegaConf.to_container(cfg, resolve=True))  # in checkpoints
    callbacks = [build(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    ckpt_path = resume_path(cfg, callbacks)
    loggers = [build_logger(c, Path(cfg.paths.output_dir), resuming=ckpt_path is not None)
               for c in (cfg.get("logger") or {}).values() if c is not None]
    trainer = build(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    try:
        with warnings.catch_warnings():
            for message in EXPECTED_WARNINGS:
                warnings.filterwarnings("ignore", message)
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    finally:
        finish_wandb(loggers)
    metric = trainer.callback_metrics.get(cfg.optimized_metric)
    if metric is None:
        log.warning("optimized_metric %s was not logged", cfg.optimized_metric)
        return None
    return float(metric)


def build_module(cfg: DictConfig) -> pl.LightningModule:
    """The stage module of ``cfg.stage``, given the ``model`` and ``loss`` configs."""
    return build(cfg.stage, model=cfg.model, loss=cfg.loss, _recursive_=False)


def build(cfg: DictConfig, **kwargs):
    """``hydra.utils.instantiate``, letting a user error through as itself rather than
    wrapped in Hydra's InstantiationException: a :class:`PdfgcError`, or Lightning's
    MisconfigurationException (``trainer=gpu`` without a GPU, say) as one."""
    try:
        return instantiate(cfg, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        while cause is not None and not isinstance(cause, (PdfgcError,
                                                           MisconfigurationException)):
            cause = cause.__cause__
        if isinstance(cause, MisconfigurationException):
            raise PdfgcError(f"{cfg._target_}: {cause}") from None
        if cause is None:
            raise
        raise cause from None


def build_logger(cfg: DictConfig, run_dir: Path, resuming: bool) -> Logger:
    """The logger of ``cfg``. A W&B logger gets the run id stored in ``run_dir/wandb/run_id``
    when resuming, so a resumed run continues its W&B run (Lightning passes resume="allow"),
    else a new id, stored there."""
    if not issubclass(get_class(cfg._target_), WandbLogger):
        return build(cfg)
    from wandb.sdk.lib.runid import generate_id

    path = run_dir / "wandb" / "run_id"
    run_id = path.read_text().strip() if resuming and path.is_file() else generate_id()
    write_text(path, run_id)
    return build(cfg, id=run_id)


def run(cfg: DictConfig) -> float | None:
    """:func:`train` as a Hydra job. In a multirun a failed job is logged (its overrides and
    error) and returns NaN, so the sweep goes on; a single run raises."""
    try:
        return train(cfg)
    except Exception as err:
        if not in_multirun():
            raise
        overrides = " ".join(HydraConfig.get().overrides.task)
        if isinstance(err, PdfgcError):
            log.error("job failed [%s]: error: %s", overrides, err)
        else:
            log.exception("job failed [%s]", overrides)
        return math.nan


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def resume_path(cfg: DictConfig, callbacks: Sequence[pl.Callback]) -> str | None:
    """``cfg.ckpt_path`` if given; else, with ``cfg.resume``, the run folder's last.ckpt."""
    if cfg.ckpt_path is not None:
        if cfg.ckpt_path not in LIGHTNING_CKPT_KEYS and not Path(cfg.ckpt_path).is_file():
            raise PdfgcError(f"ckpt_path: {cfg.ckpt_path} not found")
        return str(cfg.ckpt_path)
    if not cfg.resume:
        return None
    for callback in callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.dirpath is not None:
            last = Path(callback.dirpath) / f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}.ckpt"
            if last.is_file():
                log.info("resuming from %s", last)
                return str(last)
    return None


def finish_wandb(loggers: Sequence[Logger]) -> None:
    """Close the W&B run, so the next job of a multirun starts its own."""
    if any(isinstance(logger, WandbLogger) for logger in loggers):
        import wandb

        if wandb.run is not None:
            wandb.finish()
