"""Serve -> events -> export -> analyze: the service's own log feeds the analysis (issue 13, point 13)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from vitrina.cli import app as cli_app
from vitrina.errors import DataValidationError
from vitrina.experiments.analysis import analyze
from vitrina.experiments.design import DesignSpec, load_design, plan
from vitrina.experiments.metrics import MetricSpec
from vitrina.experiments.schema import read_events
from vitrina.models.registry import make_model
from vitrina.serving.app import create_app
from vitrina.serving.service import Settings

DAY = 86_400.0
LIFT = 0.4  # clicks per user: control Poisson(1.0), treatment Poisson(1.4)

SPEC = DesignSpec(
    name="ranker",
    hypothesis="the treatment ranker gets more clicks per user",
    primary=MetricSpec(name="clicks", event="click"),
    guardrails=(MetricSpec(name="buyers", kind="proportion", event="purchase"),),
    variants={"control": 0.5, "treatment": 0.5},
    mde=0.2,
    max_weeks=4,
)


def _history(n_users: int, days: int, start: float, seed: int) -> pl.DataFrame:
    """A plain history log (no experiment columns): users arrive over ``days`` and click."""
    rng = np.random.default_rng(seed)
    arrival = rng.uniform(0, days, n_users)
    clicks = rng.poisson(1.0 + (days - arrival) / 7)
    owner = np.repeat(np.arange(n_users), clicks)
    when = arrival[owner] + rng.random(owner.size) * (days - arrival[owner])
    return pl.DataFrame(
        {
            "timestamp": start + np.concatenate([arrival, when]) * DAY,
            "unit_id": [f"h{u}" for u in range(n_users)] + [f"h{u}" for u in owner],
            "event": ["visit"] * n_users + ["click"] * owner.size,
            "value": np.ones(n_users + owner.size),
        }
    )


def test_serve_events_export_analyze_recovers_the_effect(tmp_path: Path, ml100k_head: pl.DataFrame) -> None:
    model = make_model("popular").fit(ml100k_head).save(tmp_path / "popular")
    config = tmp_path / "experiments.toml"
    config.write_text(
        '[[experiments]]\nname = "ranker"\nlayer = "home"\nsalt = "e2e"\n'
        "variants = { control = 0.5, treatment = 0.5 }\n"
        f'models = {{ treatment = "{model}" }}\n'
    )
    state = tmp_path / "state.sqlite"
    rng = np.random.default_rng(0)
    n_users = 1000
    variants: dict[str, str] = {}
    with TestClient(create_app(Settings(model_dir=model, state_db=state, experiments=config))) as c:
        # events before the test: they must not count (the unit had not seen its variant yet)
        early = [{"user_id": u, "event": "click", "timestamp": time.time() - DAY} for u in range(200)]
        assert c.post("/events", json={"events": early}).status_code == 200
        for u in range(n_users):
            r = c.post("/recommend", json={"user_id": u, "k": 5}).json()
            variants[str(u)] = r["variant"]
        events = []
        for u in range(n_users):
            treated = variants[str(u)] == "treatment"
            items = c.post("/recommend", json={"user_id": u, "k": 5}).json()["items"] if u < 50 else []
            for _ in range(rng.poisson(1.0 + LIFT * treated)):
                item = items[0]["item_id"] if items else None
                events.append({"user_id": u, "event": "click", "item_id": item})
            if rng.random() < 0.1:
                events.append({"user_id": u, "event": "purchase", "value": 20.0})
        for lo in range(0, len(events), 1000):
            assert c.post("/events", json={"events": events[lo : lo + 1000]}).status_code == 200
    runner = CliRunner()
    exported = tmp_path / "events.parquet"
    res = runner.invoke(cli_app, ["ab", "export", str(exported), "--state-db", str(state)])
    assert res.exit_code == 0, res.output
    log = read_events(exported)  # the exported file is valid in the analysis schema
    assert log.filter(pl.col("event") == "click")["experiment"].null_count() > 0  # clicks carry no arm

    history = tmp_path / "history.jsonl"
    history.write_text(
        "\n".join(json.dumps(r) for r in _history(2000, 14, time.time() - 30 * DAY, 1).to_dicts()) + "\n"
    )
    spec = tmp_path / "spec.json"
    spec.write_text(SPEC.model_dump_json())
    design = tmp_path / "design.json"
    res = runner.invoke(cli_app, ["ab", "design", str(spec), "--history", str(history), "--out", str(design)])
    assert res.exit_code in (0, 1), res.output  # 1: infeasible within max_weeks, design still saved
    res = runner.invoke(
        cli_app, ["ab", "analyze", str(design), "--events", str(exported), "--out", str(tmp_path / "report")]
    )
    assert res.exit_code == 0, res.output

    result = analyze(log, load_design(design))
    assert result.units == {
        "control": sum(v == "control" for v in variants.values()),
        "treatment": sum(v == "treatment" for v in variants.values()),
    }
    clicks = next(r for r in result.results if r.metric.name == "clicks")
    assert clicks.estimate is not None
    assert clicks.estimate.ci_low < LIFT < clicks.estimate.ci_high and clicks.estimate.p_value < 1e-3
    assert clicks.estimate.control == pytest.approx(1.0, abs=0.15)  # the 200 early clicks are not counted
    assert any("before the unit's first exposure" in i.kind and i.count == 200 for i in result.quality.issues)
    assert result.decisions["treatment"] == "ship"
    assert "SHIP" in (tmp_path / "report" / "report.md").read_text()


def test_export_errors_are_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(
        cli_app, ["ab", "export", str(tmp_path / "e.parquet"), "--state-db", str(tmp_path / "x")]
    )
    assert res.exit_code == 2 and "does not exist" in res.output
    res = runner.invoke(cli_app, ["ab", "export", str(tmp_path / "e.csv")])
    assert res.exit_code == 2 and "unknown format" in res.output


def _exposed_log() -> pl.DataFrame:
    rng = np.random.default_rng(2)
    rows = []
    for u in range(400):
        variant = "treatment" if u % 2 else "control"
        rows.append((100 * DAY, f"u{u}", "ranker", variant, "exposure", 1.0))
        rows += [(101 * DAY, f"u{u}", None, None, "click", 1.0)] * int(rng.poisson(2 + (u % 2)))
    return pl.DataFrame(
        rows, schema=["timestamp", "unit_id", "experiment", "variant", "event", "value"], orient="row"
    )


def test_pre_period_accepts_plain_history_and_refuses_overlap() -> None:
    history = _history(400, 28, 60 * DAY, 3)
    design = plan(SPEC.model_copy(update={"cuped": True, "guardrails": ()}), history)
    log = _exposed_log()
    pre = pl.DataFrame(
        {
            "timestamp": np.full(400, 90 * DAY),
            "unit_id": [f"u{u}" for u in range(400)],
            "event": ["click"] * 400,
            "value": np.random.default_rng(4).poisson(2, 400).astype(float),
        }
    )
    result = analyze(log, design, pre_events=pre)
    assert result.results[0].method == "CUPED Welch"
    late = pre.with_columns(
        pl.when(pl.col("unit_id") == "u7").then(100.5 * DAY).otherwise(pl.col("timestamp")).alias("timestamp")
    )
    with pytest.raises(DataValidationError, match=r"overlaps exposure.*u7"):
        analyze(log, design, pre_events=late)
    with pytest.raises(DataValidationError, match="missing column"):
        analyze(log, design, pre_events=pre.drop("value"))
