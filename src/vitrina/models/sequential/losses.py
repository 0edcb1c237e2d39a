"""Losses over positive logits ``pos`` (n,), negative logits ``neg`` (n x m) and a bool ``keep``
(n x m) that drops accidental hits (a sampled negative equal to the position's positive).
Every loss is a mean over positions; ``FullSoftmax`` instead scores the whole catalogue.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

LossName = Literal["bce", "gbce", "sampled_softmax", "softmax"]


class BCE:
    """Binary cross-entropy: -log σ(s⁺) - Σ_j log(1 - σ(s⁻_j)) per position (SASRec with 1 negative)."""

    full_catalogue = False

    def __call__(
        self, pos: torch.Tensor, neg: torch.Tensor, keep: torch.Tensor, log_q: torch.Tensor
    ) -> torch.Tensor:
        return (-F.logsigmoid(pos) - (F.logsigmoid(-neg) * keep).sum(-1)).mean()


class GBCE:
    """gBCE (Petrov & Macdonald 2023): the positive term is -β log σ(s⁺), i.e. σ(s⁺) is raised to β
    to undo the overconfidence that sampling ``n`` of ``N - 1`` negatives causes.

    β = α (t (1 - 1/α) + 1/α) with α = n / (N - 1); t = 0 gives plain BCE, t = 1 gives β = α.
    """

    full_catalogue = False

    def __init__(self, t: float, n_negatives: int, n_items: int) -> None:
        alpha = n_negatives / max(1, n_items - 1)
        self.beta = alpha * (t * (1.0 - 1.0 / alpha) + 1.0 / alpha)

    def __call__(
        self, pos: torch.Tensor, neg: torch.Tensor, keep: torch.Tensor, log_q: torch.Tensor
    ) -> torch.Tensor:
        return (-self.beta * F.logsigmoid(pos) - (F.logsigmoid(-neg) * keep).sum(-1)).mean()


class SampledSoftmax:
    """Cross-entropy of the positive against itself + the negatives: -s⁺ + log(e^{s⁺} + Σ_j e^{s⁻_j}).

    With ``logq_correction`` every logit s becomes s - log q(item) (Yi et al. 2019), which makes the
    sampled softmax an unbiased-in-the-limit estimate of the full one for non-uniform samplers; for
    the uniform sampler it is a constant shift and changes nothing.
    """

    full_catalogue = False

    def __init__(self, logq_correction: bool) -> None:
        self.logq_correction = logq_correction

    def __call__(
        self, pos: torch.Tensor, neg: torch.Tensor, keep: torch.Tensor, log_q: torch.Tensor
    ) -> torch.Tensor:
        """``log_q``: (n x (1 + m)) log proposal probabilities of [positive, negatives]."""
        logits = torch.cat([pos[:, None], neg.masked_fill(~keep, float("-inf"))], dim=1)
        if self.logq_correction:
            logits = logits - log_q
        return (torch.logsumexp(logits, dim=1) - logits[:, 0]).mean()


class FullSoftmax:
    """Cross-entropy over the whole catalogue (logits n x n_items, targets n). ``label_smoothing``
    ε moves ε of the target's probability mass evenly over the catalogue (Szegedy et al. 2016)."""

    full_catalogue = True

    def __init__(self, label_smoothing: float = 0.0) -> None:
        self.label_smoothing = label_smoothing

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)


SampledLoss = BCE | GBCE | SampledSoftmax
Loss = SampledLoss | FullSoftmax


def build_loss(
    name: LossName,
    *,
    n_negatives: int,
    n_items: int,
    gbce_t: float,
    logq_correction: bool,
    label_smoothing: float = 0.0,
) -> Loss:
    if name == "bce":
        return BCE()
    if name == "gbce":
        return GBCE(gbce_t, n_negatives, n_items)
    if name == "sampled_softmax":
        return SampledSoftmax(logq_correction)
    if name == "softmax":
        return FullSoftmax(label_smoothing)
    raise ValueError(f"loss must be one of bce, gbce, sampled_softmax, softmax; got {name!r}")
