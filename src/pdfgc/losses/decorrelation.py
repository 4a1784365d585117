"""The [ours] decorrelation losses: expression codes against audio features (the paper's
L_decor, formula not published) and, an extension, each motion code against the others."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


def standardize(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Zero mean, unit variance per column of (N, D)."""
    return (x - x.mean(0)) / (x.std(0, unbiased=False) + eps)


def batch_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(Da, Db) Pearson correlation over the rows of a (N, Da) and b (N, Db)."""
    return standardize(a).T @ standardize(b) / len(a)


class DecorrelationLoss(nn.Module):
    """Squared Frobenius norm of the cross-correlation of expression codes and audio features.

    Two queues hold the last ``bank_size`` expression codes and audio features (detached);
    the correlation is taken over the current batch plus the queues, so gradients flow
    through the current batch only. In training mode each call then enqueues the batch.
    The queues are not saved in checkpoints; they refill within ``bank_size / B`` steps.
    """

    whole_batch = True  # couples the batch's samples: gathered across processes

    def __init__(self, bank_size: int, dim_a: int, dim_b: int):
        super().__init__()
        self.register_buffer("bank_a", torch.zeros(bank_size, dim_a), persistent=False)
        self.register_buffer("bank_b", torch.zeros(bank_size, dim_b), persistent=False)
        self.filled = 0
        self.cursor = 0

    def forward(self, expression: torch.Tensor, audio: torch.Tensor
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """expression (B, Da), audio (B, Db) -> sum of squared correlations over Da x Db."""
        a = torch.cat([expression, self.bank_a[:self.filled]])  # (B + filled, Da)
        b = torch.cat([audio, self.bank_b[:self.filled]])  # (B + filled, Db)
        correlation = batch_correlation(a, b)  # (Da, Db)
        loss = correlation.square().sum()
        if self.training:
            self.enqueue(expression, audio)
        logs = {"decor": loss.detach(), "max_corr": correlation.abs().max().detach(),
                "bank": loss.new_tensor(float(self.filled))}
        return loss, logs

    @torch.no_grad()
    def enqueue(self, expression: torch.Tensor, audio: torch.Tensor) -> None:
        """Write a batch over the oldest entries (keeping its last ``bank_size`` rows)."""
        size = len(self.bank_a)
        if not size:
            return
        expression, audio = expression[-size:], audio[-size:]
        rows = (self.cursor + torch.arange(len(expression), device=self.bank_a.device)) % size
        self.bank_a[rows] = expression.detach().to(self.bank_a.dtype)
        self.bank_b[rows] = audio.detach().to(self.bank_b.dtype)
        self.cursor = (self.cursor + len(expression)) % size
        self.filled = min(self.filled + len(expression), size)


class CodeDecorrelationLoss(nn.Module):
    """[ours, an extension of the paper's feature-level decorrelation] Keep one motion code
    out of another: the squared batch correlation between every dimension of a code and
    every dimension of a detached reference code, averaged over those dimension pairs and
    then over the (code, reference) pairs. The references get no gradient, so only the
    codes move away from them (the pose head is not pushed to forget what it reads).

    Over a batch of N independent codes the value is about 1 / N, not 0 (sampling noise).
    """

    whole_batch = True  # couples the batch's samples: gathered across processes

    def forward(self, codes: Mapping[str, torch.Tensor], references: Mapping[str, torch.Tensor]
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """codes and references {name: (B, D)}; logs ``<code>_<reference>`` per pair."""
        pairs = {f"{c}_{r}": batch_correlation(code, reference.detach()).square().mean()
                 for c, code in codes.items() for r, reference in references.items()}
        loss = torch.stack(list(pairs.values())).mean()
        return loss, {name: value.detach() for name, value in pairs.items()}
