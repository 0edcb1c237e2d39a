"""The training loop: random batches packed into few rows, sampled negatives, early stopping on
validation Recall@10 with the best weights restored, a Rich progress bar, and a summary of what
happened."""

from __future__ import annotations

import copy
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from vitrina.errors import ConfigError, ModelLoadError
from vitrina.models.sequential.ddp import DistContext
from vitrina.models.sequential.inference import last_hidden, target_ranks
from vitrina.models.sequential.losses import FullSoftmax, Loss
from vitrina.models.sequential.network import SequenceEncoder
from vitrina.models.sequential.objectives import Objective
from vitrina.models.sequential.packing import pack
from vitrina.models.sequential.row_logits import row_logits
from vitrina.models.sequential.samplers import Sampler

K = 10
NegativesPer = Literal["batch", "sequence", "position"]


@dataclass(frozen=True)
class TrainOptions:
    epochs: int
    patience: int
    batch_size: int
    lr: float
    n_negatives: int
    negatives_per: NegativesPer
    pack: bool
    verbose: bool
    checkpoint: Path | None = None  # written after every epoch (by rank 0)
    resume: bool = False  # continue from ``checkpoint`` when it exists
    fingerprint: dict[str, Any] = field(default_factory=dict)  # must match to resume
    # called with each epoch's record (loss, validation scores) on the main process; it may raise
    # to stop training, e.g. a hyper-parameter search pruning a bad trial
    on_epoch: Callable[[dict[str, float]], None] | None = None


@dataclass(frozen=True)
class Parts:
    encoder: SequenceEncoder
    objective: Objective
    loss: Loss
    sampler: Sampler


@dataclass(frozen=True)
class ValidationSet:
    """Inference token sequences, the held-out item of each, and the items to exclude from ranking;
    for blocks with time channels, the (key, query) times of each sequence."""

    tokens: list[np.ndarray]
    targets: np.ndarray
    seen: sp.csr_matrix
    times: list[tuple[np.ndarray, np.ndarray]] | None = None


def epoch_batches(n_rows: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Row indices of each batch: a fresh random permutation cut into ``batch_size`` pieces."""
    order = rng.permutation(n_rows)
    return [order[i : i + batch_size] for i in range(0, n_rows, batch_size)]


def _negatives(
    parts: Parts, targets: np.ndarray, mine: slice, opts: TrainOptions, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Negatives drawn for the global batch (so every rank draws the same), cut to this rank's
    rows: (n,) shared by the batch, (rows x n) per sequence or (positions x n) per position, the
    positions in row-major order of ``targets``."""
    all_targets = torch.from_numpy(targets[targets >= 0])
    n = opts.n_negatives
    if opts.negatives_per == "batch":
        drawn = parts.sampler.sample(n, all_targets, gen)
        return drawn.items, drawn.log_q
    if opts.negatives_per == "sequence":
        drawn = parts.sampler.sample(n * len(targets), all_targets, gen)
        return drawn.items.view(-1, n)[mine], drawn.log_q.view(-1, n)[mine]
    drawn = parts.sampler.sample(n * len(all_targets), all_targets, gen)
    per_row = (targets >= 0).sum(1)
    first, last = int(per_row[: mine.start].sum()), int(per_row[: mine.stop].sum())
    return drawn.items.view(-1, n)[first:last], drawn.log_q.view(-1, n)[first:last]


def _target_states(
    parts: Parts,
    inputs: np.ndarray,
    order: np.ndarray,
    net: torch.nn.Module,
    packed: bool,
    device: torch.device,
    times: tuple[np.ndarray, np.ndarray] | None = None,
) -> torch.Tensor:
    """Hidden states (positions x dim) at the flat indices ``order`` of ``inputs`` (the positions
    that have a target, row-major); with ``packed`` the network runs on packed rows. Flat index
    gathers only: boolean indexing and its scatter backward cost more than the network on Beauty.
    ``times``: (key, query) times aligned with ``inputs``, for blocks with time channels."""
    causal = parts.objective.causal
    if packed:
        p = pack(inputs)
        tokens, segments, positions = (
            torch.from_numpy(a).to(device) for a in (p.inputs, p.segments, p.positions)
        )
        timed = [
            torch.from_numpy(np.where(p.source >= 0, t.ravel()[p.source], 0)).to(device) for t in times or ()
        ]
        out = net(tokens, causal, segments, positions, *timed)
        real = np.flatnonzero(p.source.ravel() >= 0)
        packed_at = np.empty(inputs.size, dtype=np.int64)  # unpacked flat index -> packed flat index
        packed_at[p.source.ravel()[real]] = real
        order = packed_at[order]
    else:
        timed = [torch.from_numpy(np.ascontiguousarray(t)).to(device) for t in times or ()]
        out = net(torch.from_numpy(inputs).to(device), causal, None, None, *timed)
    return out.reshape(-1, out.shape[-1]).index_select(0, torch.from_numpy(order).to(device))


def _step_loss(
    parts: Parts,
    inputs: np.ndarray,
    targets: np.ndarray,
    negatives: torch.Tensor | None,
    neg_log_q: torch.Tensor | None,
    net: torch.nn.Module,
    opts: TrainOptions,
    device: torch.device,
    times: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[torch.Tensor, int]:
    """Mean loss over this rank's target positions, and their number."""
    order = np.flatnonzero(targets.ravel() >= 0)
    h = _target_states(parts, inputs, order, net, opts.pack, device, times)
    flat = torch.from_numpy(order).to(device)
    tgt = torch.from_numpy(targets).to(device).view(-1).index_select(0, flat)
    weights = parts.encoder.item_weights()
    if isinstance(parts.loss, FullSoftmax) or negatives is None or neg_log_q is None:
        return parts.loss(h @ weights.T, tgt), len(tgt)  # type: ignore[call-arg]
    if opts.negatives_per == "sequence":  # each row's targets against that row's draw
        row = order // targets.shape[1]
        # the whole table (item i is row i + 1), so its gradient needs no zero-padded slice copy
        table = parts.encoder.item_emb.weight
        pos, neg = row_logits(h, row, table, tgt + 1, negatives + 1)
        row_t = torch.from_numpy(row).to(device)
        negatives, neg_log_q = negatives.index_select(0, row_t), neg_log_q.index_select(0, row_t)
    else:
        pos = (h * weights.index_select(0, tgt)).sum(-1)
        if opts.negatives_per == "batch":  # one (positions x dim) @ (dim x n) matmul
            neg = h @ weights.index_select(0, negatives).T
            negatives, neg_log_q = negatives.expand(len(tgt), -1), neg_log_q.expand(len(tgt), -1)
        elif negatives.shape[1] * weights.shape[1] >= weights.shape[0]:
            # per position, small catalogue: every item's logit in one matmul, then pick the negatives
            # (cheaper than gathering a positions x n x dim tensor of embeddings, which is memory-bound)
            neg = (h @ weights.T).gather(1, negatives)
        else:  # per position, large catalogue: gather (positions x n x dim)
            neg = torch.einsum("pd,pnd->pn", h, weights[negatives])
    keep = negatives != tgt[:, None]
    log_q = torch.cat([parts.sampler.log_q(tgt)[:, None], neg_log_q], dim=1)
    return parts.loss(pos, neg, keep, log_q), len(tgt)


def validate(parts: Parts, val: ValidationSet, device: torch.device, ctx: DistContext) -> tuple[float, float]:
    """Recall@10 (= HR@10 with one held-out item) and NDCG@10, full catalogue, seen items excluded."""
    parts.encoder.eval()
    part = ctx.shard(len(val.targets))
    times = val.times[part] if val.times is not None else None
    hidden = last_hidden(parts.encoder, val.tokens[part], parts.objective.causal, device, times)
    ranks = target_ranks(hidden, parts.encoder.item_weights().detach(), val.targets[part], val.seen[part])
    hit = ranks < K
    sums = torch.tensor([hit.sum(), (hit / np.log2(ranks + 2.0)).sum()], dtype=torch.float64)
    total = ctx.sum(sums.to(device)).cpu().numpy() / max(1, len(val.targets))
    return float(total[0]), float(total[1])


@dataclass
class _Progress:
    """Everything an epoch changes: saved after each one so that a resumed run continues exactly."""

    epoch: int
    best: tuple[float, float, int, dict[str, torch.Tensor]]
    train_s: list[float]
    train_cpu: list[float]  # process CPU seconds: less sensitive than wall time to a busy machine
    val_s: list[float]
    history: list[dict[str, float]]
    stopped: bool = False


def _save_checkpoint(
    path: Path,
    state: _Progress,
    enc: torch.nn.Module,
    optim: torch.optim.Optimizer,
    rng: np.random.Generator,
    gen: torch.Generator,
    fingerprint: dict[str, Any],
) -> None:
    payload = {
        "fingerprint": fingerprint,
        "progress": vars(state),
        "encoder": enc.state_dict(),
        "optimizer": optim.state_dict(),
        "rng": rng.bit_generator.state,
        "generator": gen.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # atomic: a kill leaves the previous checkpoint or this one, never half


def _load_checkpoint(
    path: Path,
    enc: torch.nn.Module,
    optim: torch.optim.Optimizer,
    rng: np.random.Generator,
    gen: torch.Generator,
    fingerprint: dict[str, Any],
) -> _Progress:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)  # no code runs on load
    except Exception as exc:  # torch raises several types for a damaged or foreign file
        raise ModelLoadError(f"{path}: not a readable vitrina checkpoint ({exc})") from None
    saved = payload.get("fingerprint", {})
    differ = sorted(k for k in set(saved) | set(fingerprint) if saved.get(k) != fingerprint.get(k))
    if differ:
        raise ConfigError(
            f"{path}: written for other data or settings ({', '.join(differ)} differ: "
            f"{ {k: saved.get(k) for k in differ} } in the checkpoint, now "
            f"{ {k: fingerprint.get(k) for k in differ} }); delete it or train without resume"
        )
    enc.load_state_dict(payload["encoder"])
    optim.load_state_dict(payload["optimizer"])
    rng.bit_generator.state = payload["rng"]
    gen.set_state(payload["generator"])
    torch.set_rng_state(payload["torch_rng"])
    if payload["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(payload["cuda_rng"])
    return _Progress(**payload["progress"])


def train(
    parts: Parts,
    rows: np.ndarray,
    val: ValidationSet | None,
    opts: TrainOptions,
    seed: int,
    device: torch.device,
    ctx: DistContext,
    times: np.ndarray | None = None,
) -> dict[str, object]:
    """Train ``parts.encoder`` in place on left-padded token ``rows`` (with their event ``times``,
    aligned, for blocks with time channels); return the training summary."""
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    enc = parts.encoder.to(device)
    net = ctx.wrap(enc, device)
    optim = torch.optim.Adam(enc.parameters(), lr=opts.lr, betas=(0.9, 0.98), fused=True)
    lengths = (rows > 0).sum(1)
    state = _Progress(0, (-1.0, 0.0, 0, copy.deepcopy(enc.state_dict())), [], [], [], [])
    if opts.resume and opts.checkpoint is not None and opts.checkpoint.is_file():
        state = _load_checkpoint(opts.checkpoint, enc, optim, rng, gen, opts.fingerprint)
    best, train_s, train_cpu, val_s, history = (
        state.best,
        state.train_s,
        state.train_cpu,
        state.val_s,
        state.history,
    )
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, disable=not (opts.verbose and ctx.is_main), transient=False) as bar:
        task = bar.add_task("epoch", total=opts.epochs, completed=state.epoch, info="")
        for epoch in range(state.epoch + 1, opts.epochs + 1):
            if state.stopped:
                break
            enc.train()
            t0, c0 = time.perf_counter(), time.process_time()
            loss_sum, n_batches = 0.0, 0
            for idx in epoch_batches(len(rows), opts.batch_size, rng):
                if len(idx) < ctx.world:
                    continue
                width = int(lengths[idx].max())
                inputs, targets = parts.objective.make_batch(rows[idx, rows.shape[1] - width :], rng)
                mine = ctx.shard(len(idx))
                timed = None
                if times is not None:
                    key, query = parts.objective.batch_times(
                        times[idx, rows.shape[1] - width :], inputs, targets
                    )
                    timed = key[mine], query[mine]
                n_global = int((targets >= 0).sum())
                negs = log_q = None
                if not parts.loss.full_catalogue:
                    negs, log_q = _negatives(parts, targets, mine, opts, gen)
                    negs, log_q = negs.to(device), log_q.to(device)
                loss, n_local = _step_loss(
                    parts, inputs[mine], targets[mine], negs, log_q, net, opts, device, timed
                )
                optim.zero_grad(set_to_none=True)
                (loss * (n_local * ctx.world / n_global)).backward()
                optim.step()
                loss_sum += float(loss.detach()) * n_local / n_global
                n_batches += 1
            train_s.append(time.perf_counter() - t0)
            train_cpu.append(time.process_time() - c0)
            mean_loss = float(ctx.sum(torch.tensor([loss_sum], device=device))[0]) / max(1, n_batches)
            record = {
                "epoch": epoch,
                "loss": mean_loss,
                "train_seconds": train_s[-1],
                "train_cpu_seconds": train_cpu[-1],
            }
            if val is not None:
                t1 = time.perf_counter()
                recall, ndcg = validate(parts, val, device, ctx)
                val_s.append(time.perf_counter() - t1)
                record.update(val_recall_at_10=recall, val_ndcg_at_10=ndcg)
                if recall > best[0]:
                    best = (recall, ndcg, epoch, copy.deepcopy(enc.state_dict()))
            history.append(record)
            if opts.on_epoch is not None and ctx.is_main:
                opts.on_epoch(record)
            info = f"loss {mean_loss:.4f}" + (
                f"  val R@10 {record['val_recall_at_10']:.4f} (best {best[0]:.4f} @ {best[2]})" if val else ""
            )
            bar.update(task, advance=1, description=f"epoch {epoch}/{opts.epochs}", info=info)
            if opts.verbose and ctx.is_main and not bar.console.is_interactive:  # logs, CI: no live bar
                bar.console.log(f"epoch {epoch}/{opts.epochs} {info}")
            state.epoch, state.best = epoch, best
            state.stopped = val is not None and epoch - best[2] >= opts.patience
            if opts.checkpoint is not None and ctx.is_main:
                _save_checkpoint(opts.checkpoint, state, enc, optim, rng, gen, opts.fingerprint)
            if state.stopped:
                break
    if val is not None:
        enc.load_state_dict(best[3])
    enc.eval()
    return {
        "epochs_trained": len(train_s),
        "best_epoch": best[2] if val is not None else len(train_s),
        "epoch_seconds_median": statistics.median(train_s),
        "epoch_cpu_seconds_median": statistics.median(train_cpu),
        "validation_seconds_median": statistics.median(val_s) if val_s else 0.0,
        "best_val_recall_at_10": best[0] if val is not None else None,
        "best_val_ndcg_at_10": best[1] if val is not None else None,
        "final_loss": history[-1]["loss"],
        "world_size": ctx.world,
        "history": history,
    }
