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


class FeatureBank(nn.Module):
    """A queue of the last ``bank_size`` rows of several aligned features (row i of every one
    from the same sample), detached, as buffers ``bank_<name>``. Correlations over a batch
    plus the bank estimate the population's far better than over a batch of 8 alone (whose
    squared correlation of independent codes is already about 1 / 8), while gradients flow
    through the current batch only. The queue is in the module's state dict (so a resumed
    run continues with the bank it stopped with); a checkpoint saved without it (before
    banks were saved) loads with the bank empty, to refill within ``bank_size / B`` steps."""

    def __init__(self, bank_size: int, dims: Mapping[str, int]):
        super().__init__()
        for name, dim in dims.items():
            self.register_buffer(f"bank_{name}", torch.zeros(bank_size, dim))
        self.bank_size = bank_size
        self.filled = 0
        self.cursor = 0

    def get_extra_state(self) -> dict[str, int]:
        return {"filled": self.filled, "cursor": self.cursor}

    def set_extra_state(self, state: dict[str, int]) -> None:
        self.filled, self.cursor = int(state["filled"]), int(state["cursor"])

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        """As nn.Module's, but a state without the queue (an older checkpoint) leaves it
        empty instead of missing."""
        if not any(key.startswith(prefix) for key in state_dict):
            return
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                      missing_keys, unexpected_keys, error_msgs)

    def with_bank(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B + filled, D): ``x`` followed by the bank's rows of ``name``."""
        return torch.cat([x, getattr(self, f"bank_{name}")[:self.filled].to(x.dtype)])

    @torch.no_grad()
    def enqueue(self, **features: torch.Tensor) -> None:
        """Write a batch {name: (B, D)} over the oldest rows (keeping its last ``bank_size``);
        only in training mode."""
        if not (self.training and self.bank_size):
            return
        rows = None
        for name, x in features.items():
            x = x[-self.bank_size:]
            bank = getattr(self, f"bank_{name}")
            rows = (self.cursor + torch.arange(len(x), device=bank.device)) % self.bank_size
            bank[rows] = x.detach().to(bank.dtype)
        self.cursor = (self.cursor + len(rows)) % self.bank_size
        self.filled = min(self.filled + len(rows), self.bank_size)


class DecorrelationLoss(FeatureBank):
    """Squared Frobenius norm of the cross-correlation of expression codes and audio features.

    The correlation is taken over the current batch plus the last ``bank_size`` samples
    (:class:`FeatureBank` ``a``: expression, ``b``: audio); in training mode each call then
    enqueues the batch.
    """

    whole_batch = True  # couples the batch's samples: gathered across processes

    def __init__(self, bank_size: int, dim_a: int, dim_b: int):
        super().__init__(bank_size, {"a": dim_a, "b": dim_b})

    def forward(self, expression: torch.Tensor, audio: torch.Tensor
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """expression (B, Da), audio (B, Db) -> sum of squared correlations over Da x Db."""
        correlation = batch_correlation(self.with_bank("a", expression),
                                        self.with_bank("b", audio))  # (Da, Db)
        loss = correlation.square().sum()
        self.enqueue(a=expression, b=audio)
        logs = {"decor": loss.detach(), "max_corr": correlation.abs().max().detach(),
                "bank": loss.new_tensor(float(self.filled))}
        return loss, logs


class CodeDecorrelationLoss(FeatureBank):
    """[ours, an extension of the paper's feature-level decorrelation] Keep one motion code
    out of another: the squared correlation between every dimension of a code and every
    dimension of a detached reference code, averaged over those dimension pairs and then
    over the (code, reference) pairs. The references get no gradient, so only the codes move
    away from them (the pose head is not pushed to forget what it reads).

    With ``bank_size`` > 0 the correlations are over the batch plus the last ``bank_size``
    samples (:class:`FeatureBank`; ``dims`` sizes every code that may be passed): over a
    batch of N independent codes alone the value is about 1 / N, not 0 (sampling noise), and
    at N = 8 that noise is larger than the correlations the term is there to remove.
    """

    whole_batch = True  # couples the batch's samples: gathered across processes

    def __init__(self, bank_size: int = 0, dims: Mapping[str, int] | None = None):
        super().__init__(bank_size, dims if bank_size else {})

    def forward(self, codes: Mapping[str, torch.Tensor], references: Mapping[str, torch.Tensor]
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """codes and references {name: (B, D)}; logs ``<code>_<reference>`` per pair."""
        references = {r: reference.detach() for r, reference in references.items()}
        samples = {name: self.with_bank(name, x) if self.bank_size else x
                   for name, x in {**codes, **references}.items()}
        pairs = {f"{c}_{r}": batch_correlation(samples[c], samples[r]).square().mean()
                 for c in codes for r in references}
        self.enqueue(**codes, **references)
        loss = torch.stack(list(pairs.values())).mean()
        return loss, {name: value.detach() for name, value in pairs.items()}
