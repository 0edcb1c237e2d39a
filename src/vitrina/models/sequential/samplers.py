"""Negative samplers: a sampler proposes ``n`` items; the training loop decides how often it asks
(``negatives_per``: once per batch, once per sequence, or once per position, see
:func:`vitrina.models.sequential.training._negatives`).

Item ids here are 0-based catalogue indices. ``log_q`` is the log-probability that the sampler
proposes an item, used by the logQ correction of the sampled softmax.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

SamplerName = Literal["uniform", "in_batch", "mixed"]


@dataclass(frozen=True)
class Negatives:
    items: torch.Tensor  # (n,) int64 catalogue indices
    log_q: torch.Tensor  # (n,) float log proposal probability of each


class UniformSampler:
    """``n`` items uniformly from the whole catalogue (with replacement)."""

    def __init__(self, n_items: int) -> None:
        self.n_items = n_items

    def log_q(self, items: torch.Tensor) -> torch.Tensor:
        return torch.full(items.shape, -math.log(self.n_items), device=items.device)

    def sample(self, n: int, targets: torch.Tensor, gen: torch.Generator) -> Negatives:
        items = torch.randint(self.n_items, (n,), generator=gen).to(targets.device)
        return Negatives(items, self.log_q(items))


class InBatchSampler:
    """``n`` of the batch's own target items (positives of other positions), drawn without
    replacement (with replacement when ``n`` exceeds the batch's positions); they follow the
    target distribution, so ``log_q`` is the log of each item's share of training targets
    (``target_counts``)."""

    def __init__(self, target_counts: torch.Tensor) -> None:
        self.log_freq = torch.log(target_counts.double().clamp(min=1) / target_counts.sum()).float()

    def log_q(self, items: torch.Tensor) -> torch.Tensor:
        return self.log_freq.to(items.device)[items]

    def sample(self, n: int, targets: torch.Tensor, gen: torch.Generator) -> Negatives:
        if n <= len(targets):
            pick = torch.randperm(len(targets), generator=gen)[:n]
        else:
            pick = torch.randint(len(targets), (n,), generator=gen)
        pick = pick.to(targets.device)
        items = targets[pick]
        return Negatives(items, self.log_q(items))


class MixedSampler:
    """Half in-batch, half uniform (Yi et al. 2019 "mixed negative sampling"); ``log_q`` is the
    log of the 50/50 mixture of the two proposal distributions."""

    def __init__(self, n_items: int, target_counts: torch.Tensor) -> None:
        self.uniform = UniformSampler(n_items)
        self.in_batch = InBatchSampler(target_counts)

    def log_q(self, items: torch.Tensor) -> torch.Tensor:
        both = torch.stack([self.uniform.log_q(items), self.in_batch.log_q(items)])
        return torch.logsumexp(both, dim=0) - math.log(2.0)

    def sample(self, n: int, targets: torch.Tensor, gen: torch.Generator) -> Negatives:
        a = self.in_batch.sample(n // 2, targets, gen).items
        b = self.uniform.sample(n - len(a), targets, gen).items
        items = torch.cat([a, b])
        return Negatives(items, self.log_q(items))


Sampler = UniformSampler | InBatchSampler | MixedSampler


def build_sampler(name: SamplerName, n_items: int, target_counts: torch.Tensor) -> Sampler:
    if name == "uniform":
        return UniformSampler(n_items)
    if name == "in_batch":
        return InBatchSampler(target_counts)
    if name == "mixed":
        return MixedSampler(n_items, target_counts)
    raise ValueError(f"sampler must be one of uniform, in_batch, mixed; got {name!r}")
