"""Sequence packing: several short training sequences share one row, kept apart by attention.

A batch of random users is what the optimiser should see (length-sorted batches bias every step
towards one length group and cost about 10% NDCG@10 on Beauty, see docs/sequential.md), but a
random batch pads every row to its longest sequence, and on Beauty most sequences are < 10 items
out of 50. Packing keeps the random batch and drops the padding: each sequence becomes a contiguous
segment of some row, attention is restricted to the query's own segment, and positions count from
each segment's own last item, exactly as for a single left-padded sequence at inference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Packed:
    """Packed (rows x width) matrices: ``inputs`` tokens (0 = padding), ``segments`` (segment id per
    token, 0 = padding), ``positions`` (0 = segment's last token) and ``source`` (flat index of
    each token in the unpacked batch, -1 = padding; targets and negatives follow through it)."""

    inputs: np.ndarray
    segments: np.ndarray
    positions: np.ndarray
    source: np.ndarray


def pack(inputs: np.ndarray) -> Packed:
    """Pack left-padded (batch x width) token ``inputs`` into as few rows of ``width`` as
    first-fit-decreasing finds (at most the batch size; sequences are never split)."""
    b, width = inputs.shape
    lengths = (inputs > 0).sum(1)
    order = np.argsort(-lengths, kind="stable")
    free = np.full(b, width, dtype=np.int64)
    row = np.empty(b, dtype=np.int64)
    start = np.empty(b, dtype=np.int64)
    for i in order:  # first fit decreasing: b <= batch size, so a Python loop is cheap
        r = int(np.argmax(free >= lengths[i]))
        row[i], start[i] = r, width - free[r]
        free[r] -= lengths[i]
    n_rows = int((free < width).sum()) or 1
    seg = np.repeat(np.arange(b), lengths)
    j = np.arange(len(seg)) - np.repeat(np.cumsum(lengths) - lengths, lengths)  # index within segment
    src_col = width - lengths[seg] + j
    dst_row, dst_col = row[seg], start[seg] + j
    out = Packed(
        np.zeros((n_rows, width), dtype=inputs.dtype),
        np.zeros((n_rows, width), dtype=np.int64),
        np.zeros((n_rows, width), dtype=np.int64),
        np.full((n_rows, width), -1, dtype=np.int64),
    )
    out.inputs[dst_row, dst_col] = inputs[seg, src_col]
    out.segments[dst_row, dst_col] = seg + 1
    out.positions[dst_row, dst_col] = lengths[seg] - 1 - j
    out.source[dst_row, dst_col] = seg * width + src_col
    return out
