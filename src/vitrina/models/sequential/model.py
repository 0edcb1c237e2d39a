"""``SequentialTransformer``: one model class whose parts (objective, layers, loss, sampler) are
chosen by name; SASRec, BERT4Rec, gSASRec and eSASRec are registry entries of it."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import get_args

import numpy as np
import torch

from vitrina.data.dataset import Dataset
from vitrina.errors import ConfigError, ModelLoadError
from vitrina.models.base import Recommender
from vitrina.models.sequential.ddp import DistContext
from vitrina.models.sequential.inference import last_hidden, pad_left
from vitrina.models.sequential.layers import TIME_LAYERS, LayersName
from vitrina.models.sequential.losses import LossName, build_loss
from vitrina.models.sequential.network import SequenceEncoder
from vitrina.models.sequential.objectives import MaskedItem, Objective, ObjectiveName, ShiftedSequence
from vitrina.models.sequential.samplers import SamplerName, build_sampler
from vitrina.models.sequential.training import NegativesPer, Parts, TrainOptions, ValidationSet, train


class SequentialTransformer(Recommender):
    """Transformer over each user's chronological item sequence; predicts the next item.

    Parts: ``objective`` (``shifted``: causal next-item at every position; ``masked``: BERT4Rec
    cloze with ``mask_prob``), ``layers`` (``sasrec``, ``preln``, ``ligr`` blocks, FFN width
    ``ffn_mult * n_factors``), ``loss`` (``bce``/``gbce``/``sampled_softmax`` with ``n_negatives``,
    drawn once per batch, per sequence or per position by ``negatives_per``; ``gbce_t``,
    ``logq_correction``;
    ``softmax`` over the full catalogue, with ``label_smoothing``) and
    ``sampler`` (``uniform``, ``in_batch``, ``mixed``). Training uses Adam (betas 0.9, 0.98), early
    stopping on validation Recall@10 with ``patience`` and restores the best epoch's weights, or
    with ``refit`` trains a fresh network for the best epoch count on train + validation;
    batches are random users; ``pack`` lays several short sequences into one row (attention kept
    within each), which removes most padding without biasing batches towards one length.
    ``device="auto"`` picks CUDA when present. Under an initialised ``torch.distributed`` process
    group ``fit`` trains data-parallel (see :mod:`vitrina.models.sequential.ddp`). With
    ``checkpoint`` (a file path) the training state (weights, optimizer, random generators, best
    epoch) is saved after every epoch; ``resume=True`` continues from that file when it exists, so a
    killed run ends as the uninterrupted one would (it refuses a checkpoint of other data or
    settings; ``epochs``, ``patience``, ``verbose`` and ``device`` may change).

    Time: ``use_time`` (blocks ``hstu`` and ``fuxi`` only) feeds each event's timestamp (Unix
    seconds) to their time channels; a position never sees the time of the event it predicts
    unless ``request_time`` is set, which asks from the predicted event's time (the request time
    in serving; offline, the held-out event's time). Histories scored without times count every
    gap as 0.
    """

    supports_history = True
    uses_validation = True
    #: called after every epoch with its record (``loss``, ``val_ndcg_at_10``, ...); not a
    #: hyper-parameter (never saved). ``vitrina tune`` uses it to prune bad trials early.
    epoch_callback: Callable[[dict[str, float]], None] | None = None

    def __init__(
        self,
        objective: ObjectiveName = "shifted",
        layers: LayersName = "sasrec",
        loss: LossName = "bce",
        sampler: SamplerName = "uniform",
        n_negatives: int = 1,
        negatives_per: NegativesPer = "batch",
        gbce_t: float = 0.75,
        logq_correction: bool = False,
        label_smoothing: float = 0.0,
        mask_prob: float = 0.2,
        n_factors: int = 64,
        n_blocks: int = 2,
        n_heads: int = 1,
        ffn_mult: int = 1,
        max_len: int = 50,
        dropout: float = 0.2,
        batch_size: int = 128,
        lr: float = 0.001,
        epochs: int = 200,
        patience: int = 50,
        refit: bool = False,
        pack: bool = True,
        use_time: bool = False,
        request_time: bool = False,
        seed: int = 0,
        device: str = "auto",
        verbose: bool = True,
        checkpoint: str | None = None,
        resume: bool = False,
    ) -> None:
        self.objective = objective
        self.layers = layers
        self.loss = loss
        self.sampler = sampler
        self.n_negatives = n_negatives
        self.negatives_per = negatives_per
        self.gbce_t = gbce_t
        self.logq_correction = logq_correction
        self.label_smoothing = label_smoothing
        self.mask_prob = mask_prob
        self.n_factors = n_factors
        self.n_blocks = n_blocks
        self.n_heads = n_heads
        self.ffn_mult = ffn_mult
        self.max_len = max_len
        self.dropout = dropout
        self.batch_size = batch_size
        self.lr = lr
        self.epochs = epochs
        self.patience = patience
        self.refit = refit
        self.pack = pack
        self.use_time = use_time
        self.request_time = request_time
        self.seed = seed
        self.device = device
        self.verbose = verbose
        self.checkpoint = checkpoint
        self.resume = resume

    # ----------------------------------------------------------------- parts
    def _check(self) -> None:
        checks = {
            "n_negatives": (self.n_negatives, self.n_negatives >= 1, ">= 1"),
            "max_len": (self.max_len, self.max_len >= 2, ">= 2"),
            "n_factors": (
                self.n_factors,
                self.n_factors >= 1 and self.n_factors % self.n_heads == 0,
                f"a positive multiple of n_heads={self.n_heads}",
            ),
            "dropout": (self.dropout, 0.0 <= self.dropout < 1.0, "in [0, 1)"),
            "label_smoothing": (
                self.label_smoothing,
                self.label_smoothing == 0.0 or (self.loss == "softmax" and 0.0 < self.label_smoothing < 1.0),
                f"in [0, 1), and 0 unless loss is 'softmax' (loss={self.loss!r})",
            ),
            "mask_prob": (self.mask_prob, 0.0 < self.mask_prob < 1.0, "in (0, 1)"),
            "epochs": (self.epochs, self.epochs >= 1, ">= 1"),
            "batch_size": (self.batch_size, self.batch_size >= 1, ">= 1"),
            "negatives_per": (
                self.negatives_per,
                self.negatives_per in get_args(NegativesPer),
                "one of " + ", ".join(get_args(NegativesPer)),
            ),
        }
        checks["use_time"] = (
            self.use_time,
            not self.use_time or self.layers in TIME_LAYERS,
            f"false unless layers is one of {', '.join(TIME_LAYERS)} (layers={self.layers!r})",
        )
        checks["request_time"] = (
            self.request_time,
            not self.request_time or self.use_time,
            "false without use_time",
        )
        for name, (value, ok, allowed) in checks.items():
            if not ok:
                raise ConfigError(f"{type(self).__name__}: {name} must be {allowed}, got {value!r}")

    def _build_encoder(self, n_items: int) -> SequenceEncoder:
        return SequenceEncoder(
            n_items,
            dim=self.n_factors,
            max_len=self.max_len,
            layers=self.layers,
            n_blocks=self.n_blocks,
            n_heads=self.n_heads,
            dropout=self.dropout,
            ffn_mult=self.ffn_mult,
        )

    def _build_objective(self, n_items: int) -> Objective:
        if self.objective == "shifted":
            return ShiftedSequence(self.max_len, self.request_time)
        return MaskedItem(
            self.max_len, self.mask_prob, mask_token=n_items + 1, request_time=self.request_time
        )

    @property
    def uses_time(self) -> bool:
        """Whether the model reads event times (and so needs data with real timestamps)."""
        return self.use_time

    def build_parts(self, n_items: int, item_counts: np.ndarray) -> Parts:
        """The parts this configuration names, for a catalogue of ``n_items`` (``item_counts``:
        training events per item, the in-batch sampler's proposal distribution)."""
        self._check()
        loss = build_loss(
            self.loss,
            n_negatives=self.n_negatives,
            n_items=n_items,
            gbce_t=self.gbce_t,
            logq_correction=self.logq_correction,
            label_smoothing=self.label_smoothing,
        )
        sampler = build_sampler(self.sampler, n_items, torch.from_numpy(np.asarray(item_counts)))
        return Parts(self._build_encoder(n_items), self._build_objective(n_items), loss, sampler)

    # ----------------------------------------------------------------- learning
    def _fit(self, data: Dataset, validation: Dataset | None) -> Dataset | None:
        ctx = DistContext.current()
        device = ctx.device(self.device)
        val = None
        if validation is not None and validation.interactions.height:
            users = validation.user_idx
            objective = self._build_objective(data.n_items)
            val_times = None
            if self.use_time:
                requests = validation.timestamps
                val_times = [
                    objective.inference_times(data.sequence_times(u), int(r))
                    for u, r in zip(users, requests, strict=True)
                ]
            val = ValidationSet(
                [objective.inference_tokens(data.sequence(u)) for u in users],
                validation.item_idx.astype(np.int64),
                data.seen[users],
                val_times,
            )
        opts = TrainOptions(
            self.epochs,
            self.patience,
            self.batch_size,
            self.lr,
            self.n_negatives,
            self.negatives_per,
            self.pack,
            self.verbose,
            checkpoint=None if self.checkpoint is None else Path(self.checkpoint),
            resume=self.resume,
            on_epoch=self.epoch_callback,
        )
        self.training_summary_ = self._train(data, val, opts, device, ctx)
        if not (self.refit and val is not None and validation is not None):
            return None
        # the validation run chose the epoch count; a fresh network (same seed) now trains that many
        # epochs on train + validation, so no event is lost to early stopping
        full = data.extended(validation)
        epochs = int(self.training_summary_["best_epoch"])  # type: ignore[call-overload]
        second = opts.checkpoint and opts.checkpoint.with_name(opts.checkpoint.name + ".refit")
        again = self._train(full, None, replace(opts, epochs=epochs, checkpoint=second), device, ctx)
        self.training_summary_["refit"] = {
            "epochs_trained": again["epochs_trained"],
            "events": full.interactions.height,
            "epoch_seconds_median": again["epoch_seconds_median"],
            "final_loss": again["final_loss"],
        }
        return full

    def _train(
        self,
        data: Dataset,
        val: ValidationSet | None,
        opts: TrainOptions,
        device: torch.device,
        ctx: DistContext,
    ) -> dict[str, object]:
        """A fresh network (seeded) trained on every user's sequence of ``data``."""
        torch.manual_seed(self.seed)
        n = data.n_items
        parts = self.build_parts(n, np.bincount(data.item_idx, minlength=n))
        self.network_, self.objective_ = parts.encoder, parts.objective
        width = self.max_len + self.objective_.extra
        rows = pad_left([data.sequence(u) + 1 for u in range(data.n_users)], width)
        keep = (rows > 0).sum(1) >= 1 + self.objective_.extra  # at least one (input, target) pair
        rows = rows[keep]
        self.history_times_ = data.timestamps  # the saved users' event times, for scoring them
        times = None
        if self.use_time:
            times = pad_left([data.sequence_times(u) for u in range(data.n_users)], width)[keep]
        opts = replace(opts, fingerprint=self._fingerprint(rows, val))
        summary = train(parts, rows, val, opts, self.seed, device, ctx, times)
        self.network_.to("cpu").eval()
        return summary

    def _fingerprint(self, rows: np.ndarray, val: ValidationSet | None) -> dict[str, object]:
        """What a checkpoint must have been written for: the settings that shape training, and
        digests of the training rows and validation targets."""
        free = {"epochs", "patience", "verbose", "device", "checkpoint", "resume"}
        digest = hashlib.sha256(np.ascontiguousarray(rows).tobytes())
        if val is not None:
            digest.update(val.targets.tobytes())
        return {
            **{k: v for k, v in self.get_params().items() if k not in free},
            "rows": list(rows.shape),
            "data_sha256": digest.hexdigest(),
        }

    # ----------------------------------------------------------------- scoring
    # score = last hidden state · tied item embedding, no bias or scale; the vectors serve ANN retrieval
    def _user_times(self, user: int) -> np.ndarray:
        return self.history_times_[self.history_indptr_[user] : self.history_indptr_[user + 1]]

    def user_history_times(self, user: int) -> np.ndarray | None:
        """Event times of a known user's saved sequence when the model reads time, else ``None``."""
        self._check_fitted()
        return self._user_times(user) if self.use_time else None

    def _hidden(
        self,
        histories: Sequence[np.ndarray],
        times: Sequence[np.ndarray] | None = None,
        requests: Sequence[int | None] | None = None,
    ) -> torch.Tensor:
        tokens = [self.objective_.inference_tokens(np.asarray(h, dtype=np.int64)) for h in histories]
        timed = None
        if self.use_time:  # without times every gap counts as 0
            given = times if times is not None else [np.zeros(len(h), np.int64) for h in histories]
            asked = requests if requests is not None else [None] * len(histories)
            timed = [
                self.objective_.inference_times(np.asarray(t, dtype=np.int64), r)
                for t, r in zip(given, asked, strict=True)
            ]
        return last_hidden(self.network_, tokens, self.objective_.causal, torch.device("cpu"), timed)

    def _score_histories(
        self,
        histories: Sequence[np.ndarray],
        times: Sequence[np.ndarray] | None = None,
        requests: Sequence[int | None] | None = None,
    ) -> np.ndarray:
        hidden = self._hidden(histories, times, requests)
        with torch.inference_mode():
            return (hidden @ self.network_.item_weights().T).numpy()

    def _score_users(self, user_idx: np.ndarray) -> np.ndarray:
        users = [int(u) for u in user_idx]
        times = [self._user_times(u) for u in users] if self.use_time else None
        return self._score_histories([self.user_history(u) for u in users], times)

    def _item_matrix(self) -> np.ndarray:
        with torch.inference_mode():
            return self.network_.item_weights().numpy()

    def _user_queries(self, user_idx: np.ndarray) -> np.ndarray:
        users = [int(u) for u in user_idx]
        times = [self._user_times(u) for u in users] if self.use_time else None
        return self._hidden([self.user_history(u) for u in users], times).numpy()

    def _history_queries(
        self,
        histories: Sequence[np.ndarray],
        times: Sequence[np.ndarray] | None = None,
        requests: Sequence[int | None] | None = None,
    ) -> np.ndarray:
        return self._hidden(histories, times, requests).numpy()

    def item_vectors(self) -> np.ndarray:
        """Output item embeddings (n_items x n_factors, float32) in catalogue order, without the
        padding and [MASK] rows."""
        self._check_fitted()
        with torch.inference_mode():
            return self.network_.item_weights().numpy().copy()

    def user_vectors(self, user_idx: np.ndarray) -> np.ndarray:
        """Last hidden state (len(user_idx) x n_factors) over each known user's saved sequence."""
        self._check_fitted()
        users = [int(u) for u in np.asarray(user_idx)]
        times = [self._user_times(u) for u in users] if self.use_time else None
        return self.history_vectors([self.user_history(u) for u in users], times)

    def history_vectors(
        self,
        histories: Sequence[np.ndarray],
        times: Sequence[np.ndarray] | None = None,
        requests: Sequence[int | None] | None = None,
    ) -> np.ndarray:
        """Last hidden state (len(histories) x n_factors) of each item-index history (``times``:
        each history's event times, and ``requests``: each request's time, read by models with
        ``use_time``)."""
        self._check_fitted()
        return self._hidden(histories, times, requests).numpy()

    # ----------------------------------------------------------------- persistence
    def _get_state(self) -> dict[str, np.ndarray]:
        state = {f"net.{k}": v.detach().cpu().numpy() for k, v in self.network_.state_dict().items()}
        if self.use_time:
            state["history_times"] = self.history_times_
        return state

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        n_items = len(self.items_)
        self.network_ = self._build_encoder(n_items)
        weights = {
            k.removeprefix("net."): torch.from_numpy(v.copy())
            for k, v in state.items()
            if k.startswith("net.")
        }
        self.network_.load_state_dict(weights, strict=True)
        self.network_.eval()
        if self.use_time:
            if "history_times" not in state:
                raise ModelLoadError("a model with use_time=true was saved without its users' event times")
            self.history_times_ = state["history_times"]
        self.objective_ = self._build_objective(n_items)
