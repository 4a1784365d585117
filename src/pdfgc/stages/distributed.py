"""Several training processes as one: the loss terms that couple a batch's samples, and batch
norm, see the batch of every process (DDP on GPUs, or gloo on CPUs).

A term computed over each process's own batch (contrastive negatives, correlations over the
batch, a masked mean, the decorrelation bank) is not the term of the whole batch. :func:`gather`
joins the processes' tensors along the batch, so every process computes the whole batch's
term; its backward sums every process's gradient for a process's own samples, and DDP's
average of the processes' gradients then gives exactly the one-process gradient.
:class:`GlobalBatchNorm` does the same for batch norm's statistics (torch's ``SyncBatchNorm``
runs on GPUs only).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def world_size() -> int:
    """The number of processes training together (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather(tree: Any) -> Any:
    """Every tensor in ``tree`` (nested mappings and sequences; None kept) joined along its
    first dimension across processes, in rank order; gradients flow back to each process's
    own part. The tree itself on one process."""
    if world_size() == 1:
        return tree
    if isinstance(tree, torch.Tensor):
        if tree.requires_grad:
            return torch.cat(dist_nn.all_gather(tree), dim=0)
        parts = [torch.empty_like(tree) for _ in range(world_size())]
        dist.all_gather(parts, tree.contiguous())
        return torch.cat(parts, dim=0)
    if isinstance(tree, Mapping):
        return {key: gather(value) for key, value in tree.items()}
    if isinstance(tree, Sequence) and not isinstance(tree, str):
        return type(tree)(gather(value) for value in tree)
    return tree


class GlobalBatchNorm(_BatchNorm):
    """Batch norm whose training statistics are those of all processes' batches together;
    on one process (or in eval mode) exactly ``nn.BatchNorm``."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {input.dim()}-D")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and world_size() > 1):
            return super().forward(input)
        dims = [0, *range(2, input.dim())]
        shape = [1, -1] + [1] * (input.dim() - 2)
        count = torch.tensor(float(input.numel() // input.shape[1]), device=input.device)
        dist.all_reduce(count)
        mean = dist_nn.all_reduce(input.sum(dims)) / count
        centred = input - mean.reshape(shape)
        var = dist_nn.all_reduce(centred.square().sum(dims)) / count
        if self.track_running_stats and self.num_batches_tracked is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = (1 / float(self.num_batches_tracked) if self.momentum is None
                          else self.momentum)
                self.running_mean.lerp_(mean.to(self.running_mean), factor)
                unbiased = var * count / (count - 1).clamp_min(1)
                self.running_var.lerp_(unbiased.to(self.running_var), factor)
        out = centred * torch.rsqrt(var + self.eps).reshape(shape)
        if self.affine:
            out = out * self.weight.reshape(shape) + self.bias.reshape(shape)
        return out


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every batch norm layer replaced by a :class:`GlobalBatchNorm` holding the
    same parameters, statistics and mode (state-dict keys unchanged)."""
    if isinstance(module, _BatchNorm) and not isinstance(module, GlobalBatchNorm):
        converted = GlobalBatchNorm(module.num_features, module.eps, module.momentum,
                                    module.affine, module.track_running_stats)
        for name, value in [*module.named_parameters(recurse=False),
                            *module.named_buffers(recurse=False)]:
            setattr(converted, name, value)
        return converted.train(module.training)
    for name, child in module.named_children():
        setattr(module, name, convert_batchnorm(child))
    return module
