"""Training objectives: how a batch of sequences becomes (input tokens, targets) and how a history
becomes the input whose last position is read out at inference.

Sequences arrive as a left-padded int64 matrix of tokens (item index + 1, 0 = padding), already
cut to the batch's longest sequence. Targets are 0-based item indices, -1 where no loss is taken.

Times (for blocks with time channels) come as a matrix aligned with the tokens. Each objective
turns them into *key* times (the time of each input token) and *query* times (the time each
position asks from). By default no position ever sees the time of the event it predicts: a
shifted position asks from its own (last seen) event's time, a [MASK] token carries the time of
the nearest unmasked event. With ``request_time`` the query time is the predicted event's time
(serving knows it as the time of the request; offline it is the held-out event's time).
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

    def __init__(self, max_len: int, request_time: bool = False) -> None:
        self.max_len = max_len
        self.request_time = request_time

    def make_batch(self, tokens: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        inputs, nxt = tokens[:, :-1], tokens[:, 1:]
        targets = np.where((inputs > 0) & (nxt > 0), nxt - 1, -1)
        return inputs, targets

    def inference_tokens(self, history: np.ndarray) -> np.ndarray:
        return history[-self.max_len :] + 1

    def batch_times(
        self, times: np.ndarray, inputs: np.ndarray, targets: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(key, query) times of ``make_batch``'s inputs from the rows' event ``times``: a position's
        query time is its own event's time, or with ``request_time`` its target's."""
        key = times[:, :-1]
        return key, (times[:, 1:] if self.request_time else key)

    def inference_times(self, times: np.ndarray, request: int | None) -> tuple[np.ndarray, np.ndarray]:
        """(key, query) times of ``inference_tokens``; ``request`` is used only with ``request_time``."""
        key = np.asarray(times[-self.max_len :], dtype=np.int64)
        if not self.request_time:
            return key, key
        return key, np.append(key[1:], _request(request, key))


def _request(request: int | None, key: np.ndarray) -> int:
    """The request time, or the latest event's when none is given."""
    if request is not None:
        return int(request)
    return int(key[-1]) if len(key) else 0


def _fill_from_known(times: np.ndarray, known: np.ndarray) -> np.ndarray:
    """``times`` where ``known``; elsewhere the time of the nearest known token before (else after)
    in the same row, 0 if the row has none."""
    n = times.shape[1]
    cols = np.arange(n)
    before = np.maximum.accumulate(np.where(known, cols, -1), axis=1)
    after = np.minimum.accumulate(np.where(known, cols, n)[:, ::-1], axis=1)[:, ::-1]
    src = np.where(before >= 0, before, after)
    filled = np.where(src < n, np.take_along_axis(times, np.minimum(src, n - 1), axis=1), 0)
    return np.where(known, times, filled)


class MaskedItem:
    """BERT4Rec: bidirectional attention; each real item is replaced by [MASK] with probability
    ``mask_prob`` (a sequence with none masked gets its last item masked, which is also the
    inference-time pattern) and the loss is taken at masked positions. At inference a [MASK] is
    appended to the history."""

    causal = False
    extra = 0

    def __init__(self, max_len: int, mask_prob: float, mask_token: int, request_time: bool = False) -> None:
        if not 0.0 < mask_prob < 1.0:
            raise ValueError(f"mask_prob must be in (0, 1), got {mask_prob}")
        self.max_len = max_len
        self.mask_prob = mask_prob
        self.mask_token = mask_token
        self.request_time = request_time

    def make_batch(self, tokens: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        real = tokens > 0
        masked = (rng.random(tokens.shape) < self.mask_prob) & real
        masked[~masked.any(axis=1), -1] = True
        inputs = np.where(masked, self.mask_token, tokens)
        targets = np.where(masked, tokens - 1, -1)
        return inputs, targets

    def inference_tokens(self, history: np.ndarray) -> np.ndarray:
        return np.append(history[-(self.max_len - 1) :] + 1, self.mask_token)

    def batch_times(
        self, times: np.ndarray, inputs: np.ndarray, targets: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """A [MASK]'s time is the nearest unmasked event's (its own only with ``request_time``);
        every position asks from its own token's time."""
        if not self.request_time:
            times = _fill_from_known(times, (inputs > 0) & (targets < 0))
        return times, times

    def inference_times(self, times: np.ndarray, request: int | None) -> tuple[np.ndarray, np.ndarray]:
        """The appended [MASK] carries the latest event's time (the request's with ``request_time``)."""
        key = np.asarray(times[-(self.max_len - 1) :], dtype=np.int64)
        key = np.append(key, _request(request if self.request_time else None, key))
        return key, key


Objective = ShiftedSequence | MaskedItem
