"""Inference helpers: pad token sequences, read the last position's hidden state, rank a target."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch

from vitrina.models.sequential.network import SequenceEncoder

_ROWS = 512  # sequences per forward pass at inference


def pad_left(seqs: Sequence[np.ndarray], width: int | None = None) -> np.ndarray:
    """Left-padded (len(seqs) x width) int64 token matrix (width = longest sequence by default)."""
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    width = int(lengths.max(initial=1)) if width is None else width
    out = np.zeros((len(seqs), max(width, 1)), dtype=np.int64)
    if len(seqs):
        flat = np.concatenate([np.asarray(s, dtype=np.int64)[-width:] for s in seqs])
        kept = np.minimum(lengths, width)
        row = np.repeat(np.arange(len(seqs)), kept)
        offset = np.arange(len(flat)) - np.repeat(np.cumsum(kept) - kept, kept)
        out[row, width - kept[row] + offset] = flat
    return out


@torch.inference_mode()
def last_hidden(
    encoder: SequenceEncoder,
    seqs: Sequence[np.ndarray],
    causal: bool,
    device: torch.device,
    times: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
) -> torch.Tensor:
    """Hidden state (n x dim) at the last position of each token sequence; sequences are grouped by
    length so that a forward pass pads only to the longest of similar-length neighbours.
    ``times``: (key, query) times of each sequence, for blocks with time channels."""
    order = np.argsort([len(s) for s in seqs], kind="stable")
    out = torch.empty(len(seqs), encoder.dim, device=device)
    for start in range(0, len(seqs), _ROWS):
        rows = order[start : start + _ROWS]
        tokens = torch.from_numpy(pad_left([seqs[i] for i in rows])).to(device)
        width = tokens.shape[1]
        timed = [
            torch.from_numpy(pad_left([times[i][part] for i in rows], width)).to(device)
            for part in (range(2) if times is not None else ())
        ]
        out[torch.from_numpy(rows).to(device)] = encoder(tokens, causal, None, None, *timed)[:, -1]
    return out


@torch.inference_mode()
def target_ranks(
    hidden: torch.Tensor, weights: torch.Tensor, targets: np.ndarray, seen: sp.csr_matrix
) -> np.ndarray:
    """0-based rank of each target among all items, seen items excluded (a seen target ranks last)."""
    ranks = np.empty(len(targets), dtype=np.int64)
    step = max(1, (1 << 22) // weights.shape[0])
    tgt = torch.from_numpy(targets).to(hidden.device)
    for start in range(0, len(targets), step):
        stop = min(start + step, len(targets))
        scores = hidden[start:stop] @ weights.T
        block = seen[start:stop]
        rows = torch.from_numpy(np.repeat(np.arange(stop - start), np.diff(block.indptr))).to(hidden.device)
        scores[rows, torch.from_numpy(block.indices.astype(np.int64)).to(hidden.device)] = float("-inf")
        own = scores.gather(1, tgt[start:stop, None])
        better = (scores > own).sum(1)
        ranks[start:stop] = torch.where(torch.isinf(own[:, 0]), weights.shape[0], better).cpu().numpy()
    return ranks
