"""Training objectives: how a batch of sequences becomes (input tokens, targets) and how a history
becomes the input whose last position is read out at inference.

Sequences arrive as a left-padded int64 matrix of tokens (item index + 1, 0 = padding), already
cut to the batch's longest sequence. Targets are 0-based item indices, -1 where no loss is taken.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

ObjectiveName = Literal["shifted", "masked"]


class ShiftedSequence:
    """SASRec: causal attention; input = sequence without its last item, target = sequence without
    its first, loss at every real position."""

    causal = True
    extra = 1  # training rows hold max_len + 1 tokens: max_len inputs and their next items

    def __init__(self, max_len: int) -> None:
        self.max_len = max_len

    def make_batch(self, tokens: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        inputs, nxt = tokens[:, :-1], tokens[:, 1:]
        targets = np.where((inputs > 0) & (nxt > 0), nxt - 1, -1)
        return inputs, targets

    def inference_tokens(self, history: np.ndarray) -> np.ndarray:
        return history[-self.max_len :] + 1


class MaskedItem:
    """BERT4Rec: bidirectional attention; each real item is replaced by [MASK] with probability
    ``mask_prob`` (a sequence with none masked gets its last item masked, which is also the
    inference-time pattern) and the loss is taken at masked positions. At inference a [MASK] is
    appended to the history."""

    causal = False
    extra = 0

    def __init__(self, max_len: int, mask_prob: float, mask_token: int) -> None:
        if not 0.0 < mask_prob < 1.0:
            raise ValueError(f"mask_prob must be in (0, 1), got {mask_prob}")
        self.max_len = max_len
        self.mask_prob = mask_prob
        self.mask_token = mask_token

    def make_batch(self, tokens: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        real = tokens > 0
        masked = (rng.random(tokens.shape) < self.mask_prob) & real
        masked[~masked.any(axis=1), -1] = True
        inputs = np.where(masked, self.mask_token, tokens)
        targets = np.where(masked, tokens - 1, -1)
        return inputs, targets

    def inference_tokens(self, history: np.ndarray) -> np.ndarray:
        return np.append(history[-(self.max_len - 1) :] + 1, self.mask_token)


Objective = ShiftedSequence | MaskedItem
