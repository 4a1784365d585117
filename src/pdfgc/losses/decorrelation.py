"""The [ours] decorrelation loss between expression codes and audio features."""

from __future__ import annotations

import torch
from torch import nn


def standardize(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Zero mean, unit variance per column of (N, D)."""
    return (x - x.mean(0)) / (x.std(0, unbiased=False) + eps)


class DecorrelationLoss(nn.Module):
    """Squared Frobenius norm of the cross-correlation of expression codes and audio features.

    Two queues hold the last ``bank_size`` expression codes and audio features (detached);
    the correlation is taken over the current batch plus the queues, so gradients flow
    through the current batch only. In training mode each call then enqueues the batch.
    The queues are not saved in checkpoints; they refill within ``bank_size / B`` steps.
    """

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
        correlation = standardize(a).T @ standardize(b) / len(a)  # (Da, Db)
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
