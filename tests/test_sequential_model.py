"""SequentialTransformer end to end on tiny data: learning, registry configurations, save/load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from vitrina.data.splits import leave_one_out
from vitrina.errors import ConfigError, ModelLoadError
from vitrina.models.base import load_model
from vitrina.models.registry import make_model
from vitrina.models.sequential import SequentialTransformer
from vitrina.models.sequential import model as seq_model
from vitrina.models.sequential import training as seq_training
from vitrina.models.sequential.layers import LiGRBlock, PreLNBlock, SASRecBlock
from vitrina.models.sequential.losses import BCE, GBCE, FullSoftmax, SampledSoftmax
from vitrina.models.sequential.objectives import MaskedItem, ShiftedSequence

pytestmark = pytest.mark.usefixtures("one_thread")


FAST = {
    "n_factors": 16,
    "n_blocks": 1,
    "max_len": 10,
    "batch_size": 32,
    "lr": 0.01,
    "verbose": False,
    "dropout": 0.0,
}


def planted(n_users: int = 150, n_items: int = 20, seed: int = 0) -> pl.DataFrame:
    """Random sequences in which item 100 is always followed by item 101."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        seq: list[int] = []
        while len(seq) < 8:
            seq += [100, 101] if rng.random() < 0.3 else [int(rng.integers(n_items))]
        rows += [(u, item, t) for t, item in enumerate(seq)]
    return pl.DataFrame(rows, schema=["user_id", "item_id", "timestamp"], orient="row").with_columns(
        weight=pl.lit(1.0)
    )


@pytest.fixture(scope="module")
def fitted() -> SequentialTransformer:
    model = SequentialTransformer(layers="ligr", loss="sampled_softmax", n_negatives=8, epochs=12, **FAST)
    return model.fit(planted())


def test_learns_planted_pattern(fitted: SequentialTransformer) -> None:
    history = fitted.training_summary_["history"]
    assert history[-1]["loss"] < 0.7 * history[0]["loss"]
    recs = fitted.recommend_for_history([3, 7, 100], k=3)
    assert recs["item_id"][0] == 101


@pytest.mark.parametrize(
    ("objective", "layers", "loss"),
    [
        ("masked", "preln", "softmax"),
        ("shifted", "sasrec", "gbce"),
        ("shifted", "sasrec", "bce"),
        ("shifted", "ligr", "softmax"),  # esasrec-full's parts
    ],
)
def test_other_configurations_learn(objective: str, layers: str, loss: str) -> None:
    model = SequentialTransformer(
        objective=objective,  # type: ignore[arg-type]
        layers=layers,  # type: ignore[arg-type]
        loss=loss,  # type: ignore[arg-type]
        n_negatives=8,
        negatives_per="batch" if loss != "bce" else "position",
        epochs=15,
        mask_prob=0.3,
        **FAST,
    )
    model.fit(planted())
    history = model.training_summary_["history"]
    assert history[-1]["loss"] < history[0]["loss"]
    assert 101 in model.recommend_for_history([3, 7, 100], k=3)["item_id"].to_list()


def test_early_stopping_summary_and_restore() -> None:
    data = planted()
    last = pl.col("timestamp") == pl.col("timestamp").max().over("user_id")
    model = SequentialTransformer(epochs=6, patience=2, **FAST).fit(
        data.filter(~last), validation=data.filter(last)
    )
    s = model.training_summary_
    assert {"epochs_trained", "best_epoch", "epoch_seconds_median"} <= s.keys()
    assert 1 <= s["best_epoch"] <= s["epochs_trained"] <= 6
    assert s["epochs_trained"] == 6 or s["epochs_trained"] - s["best_epoch"] == 2
    best = max(h["val_recall_at_10"] for h in s["history"])
    assert s["best_val_recall_at_10"] == best


def _recording_train(monkeypatch: pytest.MonkeyPatch) -> list[tuple[np.ndarray, object, int]]:
    """Replace the training loop with a wrapper that records (rows, validation set, epochs)."""
    calls: list[tuple[np.ndarray, object, int]] = []

    def recording(parts, rows, val, opts, *args):  # type: ignore[no-untyped-def]
        calls.append((rows.copy(), val, opts.epochs))
        return seq_training.train(parts, rows, val, opts, *args)

    monkeypatch.setattr(seq_model, "train", recording)
    return calls


def test_refit_trains_chosen_epochs_on_train_and_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    split = leave_one_out(planted(n_users=120), validation_users=40)
    calls = _recording_train(monkeypatch)
    params = {**FAST, "max_len": 20, "epochs": 8, "patience": 3}
    model = SequentialTransformer(refit=True, **params).fit(split.train, validation=split.validation)
    s = model.training_summary_
    assert len(calls) == 2 and calls[0][1] is not None and calls[1][1] is None  # select, then refit
    assert calls[1][2] == s["best_epoch"] == s["refit"]["epochs_trained"]
    assert s["refit"]["events"] == split.train.height + split.validation.height

    # the refit rows are exactly each user's train + validation sequence: validation events in,
    # test events (each user's last) never
    def token_rows(frame: pl.DataFrame) -> list[list[int]]:
        ordered = frame.sort(["user_id", "timestamp"], maintain_order=True)
        by_user = ordered.group_by("user_id", maintain_order=True).agg("item_id")
        internal = {u: i for i, u in enumerate(model.users_.to_external(np.arange(len(model.users_))))}
        seqs = sorted(by_user.iter_rows(), key=lambda r: internal[r[0]])
        return [list(model.items_.to_internal(pl.Series(items)) + 1) for _, items in seqs]

    def nonzero(rows: np.ndarray) -> list[list[int]]:
        return [[int(t) for t in row if t > 0] for row in rows]

    assert nonzero(calls[0][0]) == token_rows(split.train)
    assert nonzero(calls[1][0]) == token_rows(pl.concat([split.train, split.validation]))
    test_pairs = set(split.test.select("user_id", "timestamp").iter_rows())
    trained_pairs = set(pl.concat([split.train, split.validation]).select("user_id", "timestamp").iter_rows())
    assert not test_pairs & trained_pairs
    # the saved histories are the data the final network trained on, validation events included
    user = int(model.users_.to_internal(pl.Series([split.validation["user_id"][0]]))[0])
    assert model.items_.to_external(model.user_history(user))[-1] == split.validation["item_id"][0]
    assert model.recommend_for_history([3, 7, 100], k=3)["item_id"][0] == 101


def test_without_refit_training_runs_once_on_train_only(monkeypatch: pytest.MonkeyPatch) -> None:
    split = leave_one_out(planted(n_users=60), validation_users=20)
    calls = _recording_train(monkeypatch)
    model = SequentialTransformer(**{**FAST, "epochs": 3}).fit(split.train, validation=split.validation)
    assert len(calls) == 1 and "refit" not in model.training_summary_
    assert sum(len(r) for r in [[t for t in row if t > 0] for row in calls[0][0]]) == split.train.height


def test_refit_is_deterministic(fitted: SequentialTransformer) -> None:
    again = SequentialTransformer(**{**fitted.get_params()}).fit(planted())
    np.testing.assert_allclose(
        again._score_users(np.arange(5)), fitted._score_users(np.arange(5)), rtol=1e-5, atol=1e-5
    )


def test_users_and_histories_agree(fitted: SequentialTransformer) -> None:
    users = np.arange(10)
    by_user = fitted._score_users(users)
    by_hist = fitted._score_histories([fitted.user_history(int(u)) for u in users])
    single = np.vstack([fitted._score_histories([fitted.user_history(int(u))]) for u in users])
    np.testing.assert_allclose(by_user, by_hist, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(by_user, single, rtol=1e-4, atol=1e-4)


def test_save_load_round_trip(fitted: SequentialTransformer, tmp_path: Path) -> None:
    path = fitted.save(tmp_path / "m", name="esasrec")
    loaded = load_model(path)
    assert isinstance(loaded, SequentialTransformer)
    np.testing.assert_array_equal(loaded._score_users(np.arange(20)), fitted._score_users(np.arange(20)))
    a, b = loaded.recommend([0, 1, 2], k=5), fitted.recommend([0, 1, 2], k=5)
    assert a.equals(b)


@pytest.mark.parametrize("damage", ["truncate", "tamper"])
def test_damaged_state_is_refused(fitted: SequentialTransformer, tmp_path: Path, damage: str) -> None:
    path = fitted.save(tmp_path / "m", name="esasrec")
    state = path / "state.safetensors"
    raw = bytearray(state.read_bytes())
    if damage == "truncate":
        state.write_bytes(bytes(raw[: len(raw) // 2]))
    else:
        raw[-10] ^= 0xFF
        state.write_bytes(bytes(raw))
    with pytest.raises(ModelLoadError, match="checksum"):
        load_model(path)


@pytest.mark.parametrize(
    ("name", "objective", "block", "loss", "n_negatives"),
    [
        ("sasrec", ShiftedSequence, SASRecBlock, BCE, 1),  # one negative per position
        ("sasrec-ss", ShiftedSequence, SASRecBlock, SampledSoftmax, 256),
        ("gsasrec", ShiftedSequence, SASRecBlock, GBCE, 256),
        ("bert4rec", MaskedItem, PreLNBlock, FullSoftmax, None),
        ("esasrec", ShiftedSequence, LiGRBlock, SampledSoftmax, 2048),
        ("esasrec-full", ShiftedSequence, LiGRBlock, FullSoftmax, None),
    ],
)
def test_registry_configurations(
    name: str, objective: type, block: type, loss: type, n_negatives: int | None
) -> None:
    model = make_model(name)
    assert isinstance(model, SequentialTransformer)
    parts = model.build_parts(50, np.ones(50))
    assert isinstance(parts.objective, objective)
    assert all(isinstance(b, block) for b in parts.encoder.blocks)
    assert isinstance(parts.loss, loss)
    if n_negatives is not None:
        assert model.n_negatives == n_negatives
    # BCE-type losses draw per position (shared negatives collapse gBCE to popularity on Beauty)
    expected = {"sasrec": "position", "gsasrec": "position"}
    assert model.negatives_per == expected.get(name, "batch")
    if name == "gsasrec":
        assert model.gbce_t == 0.75
    if name.startswith("esasrec"):
        assert len(parts.encoder.blocks) == 1 and model.ffn_mult == 4 and model.dropout == 0.4
        # the cross-dataset selection's cap (docs/benchmarks.md)
        assert (model.epochs, model.patience) == (100, 15)


def test_registry_overrides_from_strings() -> None:
    spec = (
        "n_factors=64,n_blocks=1,n_heads=1,max_len=50,dropout=0.2,n_negatives=256,"
        "batch_size=128,lr=0.001,epochs=200,patience=50,seed=0"
    )
    model = make_model("esasrec", dict(kv.split("=") for kv in spec.split(",")))
    assert (model.n_factors, model.lr, model.dropout, model.patience) == (64, 0.001, 0.2, 50)
    with pytest.raises(ConfigError, match="layers"):
        make_model("esasrec", {"layers": "lstm"})


def test_invalid_parameter_is_reported() -> None:
    with pytest.raises(ConfigError, match="n_heads"):
        SequentialTransformer(n_factors=10, n_heads=3, verbose=False).fit(planted(20))
    with pytest.raises(ConfigError, match="negatives_per must be one of batch, sequence, position"):
        SequentialTransformer(negatives_per="user", verbose=False).fit(planted(20))  # type: ignore[arg-type]


def test_registry_name_is_the_matching_configuration() -> None:
    from vitrina.models.popular import Popular
    from vitrina.models.registry import make_model, registry_name

    class _Unregistered(Popular):
        pass

    for name in ("sasrec", "sasrec-ss", "gsasrec", "bert4rec", "esasrec", "esasrec-full"):
        assert registry_name(make_model(name)) == name
    assert registry_name(make_model("esasrec", {"n_factors": 128})) == "esasrec"
    with pytest.raises(ConfigError, match="not in the model registry"):
        registry_name(_Unregistered())
