"""Degenerate experiment logs and bad CLI inputs (issue 12, "Experiments CLI"; issue 13 point 4)."""

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from vitrina.experiments.analysis import analyze
from vitrina.experiments.cli import app
from vitrina.experiments.design import (
    Design,
    DesignSpec,
    HistoryEstimate,
    WeekPlan,
    plan,
    proportion_units,
    required_units,
)
from vitrina.experiments.metrics import MetricSpec
from vitrina.experiments.report import write_report
from vitrina.experiments.stats import MeanStats, two_proportion_test

SPEC = DesignSpec(
    name="exp",
    hypothesis="clicks go up",
    primary=MetricSpec(name="clicks", event="click"),
    guardrails=(
        MetricSpec(name="buyers", kind="proportion", event="purchase"),
        MetricSpec(name="ctr", kind="ratio", event="click", denominator_event="impression"),
        MetricSpec(name="median_clicks", kind="quantile", event="click"),
    ),
    mde=0.1,
)


def _design(spec: DesignSpec = SPEC) -> Design:
    week = WeekPlan(
        weeks=1,
        units=1000.0,
        baseline=1.0,
        sd=1.0,
        required_units=800.0,
        fixed_units=800.0,
        mde_absolute=0.1,
        achievable_mde=0.09,
        power=0.85,
        extrapolated=False,
    )
    return Design(
        created_at=0.0,
        spec=spec,
        history=HistoryEstimate(history_days=14, users_a=100.0, users_b=1.0, rho=None),
        weeks=(week,),
        duration_weeks=1,
        feasible=True,
        sized_for="fixed horizon, one look at the end",
        message="run 1 week",
    )


def _log(variants: list[str], clicks: list[int]) -> pl.DataFrame:
    rows = []
    for i, (v, c) in enumerate(zip(variants, clicks, strict=True)):
        rows.append((float(i), f"u{i}", "exp", v, "exposure", 1.0))
        rows += [(float(i) + 1, f"u{i}", "exp", v, "click", 1.0)] * c
    return pl.DataFrame(
        rows, schema=["timestamp", "unit_id", "experiment", "variant", "event", "value"], orient="row"
    )


CASES = {
    "all-zero metric": _log(["control", "treatment"] * 20, [0] * 40),
    "one user": _log(["control"], [1]),
    "one user per arm": _log(["control", "treatment"], [1, 3]),
    "only control arm": _log(["control"] * 10, list(range(10))),
    "no exposures": _log(["control", "treatment"] * 5, [1] * 10).filter(pl.col("event") != "exposure"),
}


@pytest.mark.parametrize("case", CASES)
def test_degenerate_logs_report_not_estimable(case: str, tmp_path: Path) -> None:
    result = analyze(CASES[case], _design())
    assert {r.metric.name for r in result.results if r.estimate is None} >= {"clicks", "buyers", "ctr"}
    assert result.decisions["treatment"] == "inconclusive"
    report = write_report(result, tmp_path / "r").read_text()
    assert "not estimable" in report


def test_metric_that_never_occurs_is_not_estimable_but_others_are() -> None:
    rng = np.random.default_rng(0)
    log = _log(["control", "treatment"] * 100, rng.poisson(2, 200).tolist())
    result = analyze(log, _design())
    by_name = {r.metric.name: r for r in result.results}
    assert by_name["clicks"].estimate is not None
    assert "constant" in by_name["buyers"].not_estimable
    assert "never occurs" in by_name["ctr"].not_estimable
    assert "tie" in by_name["median_clicks"].not_estimable  # integer clicks: refused, not p = 1
    assert "not estimable (not checked): buyers, ctr, median_clicks" in result.reasons["treatment"]


def test_max_weeks_is_bounded() -> None:
    with pytest.raises(ValidationError, match="max_weeks"):
        DesignSpec.model_validate({**SPEC.model_dump(), "max_weeks": 100000})


def test_proportion_sample_size_delivers_its_power() -> None:
    """At a 1% baseline p(1-p) of the baseline in both arms gave 12.9% too few units (power 74%)."""
    p, lift = 0.01, 0.003
    n = proportion_units(p, lift, 0.05, 0.8)
    assert n / required_units(lift, np.sqrt(p * (1 - p)), 0.05, 0.8) == pytest.approx(1.148, abs=0.005)
    rng = np.random.default_rng(1)
    half, sims = round(n / 2), 3000
    xc, xt = rng.binomial(half, p, sims).astype(float), rng.binomial(half, p + lift, sims).astype(float)
    est = two_proportion_test(MeanStats(np.full(sims, half), xc, xc), MeanStats(np.full(sims, half), xt, xt))
    assert float(np.mean(est.p_value < 0.05)) == pytest.approx(0.80, abs=0.025)


@pytest.fixture
def design_file(tmp_path: Path) -> Path:
    path = tmp_path / "design.json"
    _design().save(path)
    return path


@pytest.mark.parametrize(
    ("name", "content"),
    [("bad.jsonl", b'{"timestamp": 1, "unit_id": "a"\n{oops\n'), ("bad.parquet", b"PAR1 not really parquet")],
)
def test_cli_malformed_inputs_are_clear_errors(
    design_file: Path, tmp_path: Path, name: str, content: bytes
) -> None:
    bad = tmp_path / name
    bad.write_bytes(content)
    res = CliRunner().invoke(
        app, ["analyze", str(design_file), "--events", str(bad), "--out", str(tmp_path / "r")]
    )
    assert res.exit_code == 2, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    assert str(bad) in res.output and "not readable" in res.output


def test_cli_output_paths_are_checked(design_file: Path, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(json.dumps(r) for r in CASES["one user per arm"].to_dicts()) + "\n")
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    for out, message in [(a_file, "not a folder"), (tmp_path / "missing" / "deeper" / "r", "does not exist")]:
        res = CliRunner().invoke(
            app, ["analyze", str(design_file), "--events", str(events), "--out", str(out)]
        )
        assert res.exit_code == 2 and message in res.output, res.output
    res = CliRunner().invoke(app, ["template", str(tmp_path / "nowhere" / "spec.json")])
    assert res.exit_code == 2 and "does not exist" in res.output
    res = CliRunner().invoke(
        app, ["analyze", str(design_file), "--events", str(events), "--out", str(tmp_path / "r")]
    )
    assert res.exit_code == 0, res.output
    assert "not estimable" in (tmp_path / "r" / "report.md").read_text()


def test_duration_forecast_saturates_on_a_finite_population() -> None:
    """A power law cannot saturate (the audit: +38.5% at 8 weeks from 4 weeks of history)."""
    rng = np.random.default_rng(0)
    n, horizon = 6000, 56
    rate = rng.gamma(0.7, 1 / 7, n)
    visits = rng.poisson(rate * horizon)
    owner = np.repeat(np.arange(n), visits)
    when = rng.uniform(0, horizon, owner.size) * 86_400.0
    log = pl.DataFrame({"timestamp": when, "unit_id": owner.astype(str), "event": "click", "value": 1.0})
    design = plan(
        SPEC.model_copy(update={"guardrails": (), "max_weeks": 8}),
        log.filter(pl.col("timestamp") < 28 * 86_400.0),
    )
    assert design.history.growth == "saturating" and design.history.backtest_error is not None
    assert "backtest" in design.message
    actual = log["unit_id"].n_unique()
    power_law = design.history.users_a * 56**design.history.users_b
    assert abs(design.weeks[7].units / actual - 1) < 0.15 < abs(power_law / actual - 1)


def test_several_treatments_are_corrected_across_arms() -> None:
    spec = SPEC.model_copy(update={"variants": {"control": 0.34, "a": 0.33, "b": 0.33}, "guardrails": ()})
    rng = np.random.default_rng(5)
    arms = ["control", "a", "b"] * 100
    log = _log(arms, [int(rng.poisson(2 + 0.3 * (v != "control"))) for v in arms])
    result = analyze(log, _design(spec))
    primary = [r for r in result.results if r.role == "primary"]
    raw = np.array([float(r.estimate.p_value) for r in primary if r.estimate is not None])
    np.testing.assert_allclose(
        [r.p_decision for r in primary],
        np.minimum(1, np.maximum.accumulate(np.sort(raw) * [2, 1])[np.argsort(np.argsort(raw))]),
    )
