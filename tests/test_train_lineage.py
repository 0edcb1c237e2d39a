"""`vitrina train` lineage carries validation scores for every model (issue 15), not only for
early-stopping ones: baselines are scored by a copy fitted without the validation sample."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from vitrina.cli import app
from vitrina.data.splits import Split
from vitrina.evaluation.api import evaluate_model
from vitrina.evaluation.training import fit_on_all, holdout, validation_lineage
from vitrina.models.base import load_model
from vitrina.models.itemknn import ItemKNN
from vitrina.models.popular import Popular

runner = CliRunner()


@pytest.fixture
def events_csv(tmp_path: Path, ml100k_head: pl.DataFrame) -> Path:
    path = tmp_path / "events.csv"
    ml100k_head.head(6000).select("user_id", "item_id", "timestamp").write_csv(path)
    return path


def _train(events_csv: Path, out: Path, *extra: str) -> dict:
    result = runner.invoke(
        app,
        [
            "train",
            "--dataset",
            str(events_csv),
            "--model",
            "itemknn:k_neighbors=20",
            "--output",
            str(out),
            *extra,
        ],
    )
    assert result.exit_code == 0, result.output
    return json.loads((out / "config.json").read_text())["lineage"]


def test_a_baseline_bundle_records_the_held_out_score(events_csv: Path, tmp_path: Path) -> None:
    """The recorded score is that of the model fitted without the latest event of the validation users
    and ranked on them; the saved model itself is fitted on every event."""
    lineage = _train(events_csv, tmp_path / "m")
    validation = lineage["validation"]
    df = pl.read_csv(events_csv)
    train, held = holdout(df, seed=0)
    expected = evaluate_model(ItemKNN(k_neighbors=20), Split(train, train.clear(), held))
    assert validation["users"] == held.height == (df["user_id"].value_counts()["count"] >= 2).sum()
    assert validation["metrics"]["ndcg@10"] == pytest.approx(expected["ndcg@10"])
    assert validation["metrics"]["hr@10"] == pytest.approx(expected["hr@10"])
    assert "fitted without" in validation["method"]
    assert load_model(tmp_path / "m").history_items_.size == df.height  # the bundle saw every event


def test_no_validate_says_so(events_csv: Path, tmp_path: Path) -> None:
    lineage = _train(events_csv, tmp_path / "m", "--no-validate")
    assert lineage["validation"] is None
    assert "--no-validate" in lineage["validation_note"]


def test_an_early_stopping_model_records_its_best_epoch() -> None:
    """No second fit: the trainer's scores on the same validation sample are recorded."""
    fits = []

    class Stopping(Popular):
        uses_validation = True

        def fit(self, data, *, validation=None):  # type: ignore[no-untyped-def, override]
            fits.append(validation.height)
            self.training_summary_ = {"best_val_ndcg_at_10": 0.25, "best_val_recall_at_10": 0.5}
            return super().fit(data)

    df = pl.DataFrame({"user_id": [1, 1, 2, 2, 3], "item_id": [1, 2, 2, 3, 1], "timestamp": [0, 1, 0, 1, 0]})
    model = fit_on_all(Stopping(), df)
    lineage = validation_lineage(model, df)
    assert fits == [2]
    assert lineage["validation"]["metrics"] == {"ndcg@10": 0.25, "recall@10": 0.5}
    assert lineage["validation"]["users"] == 2 and "best epoch" in lineage["validation"]["method"]


def test_no_user_with_two_events_is_a_stated_null() -> None:
    df = pl.DataFrame({"user_id": [1, 2, 3], "item_id": [1, 2, 1], "timestamp": [0, 1, 2]})
    lineage = validation_lineage(Popular().fit(df), df)
    assert lineage["validation"] is None and "two events" in lineage["validation_note"]
