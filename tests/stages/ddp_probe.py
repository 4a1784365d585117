"""A test callback for the DDP tests: the first step's losses and gradients, written by rank
zero (losses averaged over the processes, gradients as DDP reduced them)."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.distributed as dist


class FirstStepProbe(pl.Callback):
    def __init__(self, path: str):
        self.path = Path(path)
        self.grads: dict[str, torch.Tensor] = {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if trainer.global_step == 0:
            self.grads |= {name: p.grad.detach().clone()
                           for name, p in pl_module.named_parameters() if p.grad is not None}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step != 1:
            return
        keys = sorted(k for k in trainer.callback_metrics if k.startswith("train/loss/"))
        values = torch.stack([trainer.callback_metrics[k].float() for k in keys])
        if trainer.world_size > 1:
            dist.all_reduce(values)
            values /= trainer.world_size
        if trainer.global_rank == 0:
            losses = dict(zip(keys, values.tolist(), strict=True))
            torch.save({"losses": losses, "grads": self.grads}, self.path)
