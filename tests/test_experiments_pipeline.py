"""Assignment, log checks, design, analysis and the CLI of vitrina.experiments on simulated logs."""

from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from vitrina.errors import ConfigError, DataValidationError
from vitrina.experiments.analysis import analyze
from vitrina.experiments.assignment import Assigner, Experiment
from vitrina.experiments.cli import app
from vitrina.experiments.design import DesignSpec, NonUserUnitWarning, load_design, plan, plot_power_curve
from vitrina.experiments.metrics import MetricSpec
from vitrina.experiments.report import write_report
from vitrina.experiments.schema import check_quality, validate_events

DAY = 86_400.0


def _log(n_users: int, days: int, lift: float, seed: int, experiment: str | None = "exp") -> pl.DataFrame:
    """Users arrive over ``days``; clicks ~ Poisson(2 * days_active / 7 * (1 + lift in treatment))."""
    rng = np.random.default_rng(seed)
    assigner = Assigner([Experiment(name="exp", variants={"control": 0.5, "treatment": 0.5})])
    ids = [f"u{i}" for i in range(n_users)]
    variant = [assigner.assign(u)["exp"] for u in ids]
    arrival = rng.uniform(0, days, n_users) ** 1.5 / days**0.5
    active = days - arrival
    rate = (
        2
        * active
        / 7
        * np.where(np.array(variant) == "treatment", 1 + lift, 1.0)
        * rng.gamma(2, 0.5, n_users)
    )
    clicks = rng.poisson(rate)
    impressions = clicks + rng.poisson(10 * active / 7)
    n_ev = clicks + impressions
    owner = np.repeat(np.arange(n_users), n_ev)
    is_click = np.concatenate(
        [np.r_[np.ones(c), np.zeros(i)] for c, i in zip(clicks, impressions, strict=True)]
    )
    when = arrival[owner] + rng.random(owner.size) * active[owner]
    rows = {
        "timestamp": np.concatenate([arrival, when]) * DAY,
        "unit_id": ids + [ids[k] for k in owner],
        "experiment": [experiment] * (n_users + owner.size),
        "variant": variant + [variant[k] for k in owner],
        "event": ["exposure"] * n_users + np.where(is_click == 1, "click", "impression").tolist(),
        "value": np.ones(n_users + owner.size),
    }
    return pl.DataFrame(rows)


SPEC = DesignSpec(
    name="exp",
    hypothesis="clicks per user go up",
    primary=MetricSpec(name="clicks", event="click"),
    guardrails=(MetricSpec(name="ctr", kind="ratio", event="click", denominator_event="impression"),),
    mde=0.2,
    max_weeks=4,
)


def test_assignment_deterministic_exclusive_and_balanced() -> None:
    exps = [
        Experiment(name="a", layer="rank", variants={"control": 0.7, "treatment": 0.3}, traffic=0.5),
        Experiment(name="b", layer="rank", variants={"control": 0.5, "treatment": 0.5}, traffic=0.5),
        Experiment(name="c", layer="ui", variants={"control": 0.5, "treatment": 0.5}),
    ]
    assigner = Assigner(exps, holdout=0.1)
    out = [assigner.assign(f"user{i}") for i in range(20_000)]
    assert out[123] == Assigner(exps, holdout=0.1).assign("user123")
    assert not any("a" in o and "b" in o for o in out)
    held = sum(not o for o in out)
    assert abs(held / 20_000 - 0.1) < 0.01
    shares = Counter(o["a"] for o in out if "a" in o)
    assert abs(shares["treatment"] / sum(shares.values()) - 0.3) < 0.02
    in_c = [o for o in out if "a" in o]
    both = Counter((o["a"], o["c"]) for o in in_c)
    assert abs(both[("treatment", "treatment")] / len(in_c) - 0.15) < 0.02  # orthogonal layers


def test_assignment_rejects_bad_configs() -> None:
    with pytest.raises(ValidationError, match="sum to 1"):
        Experiment(name="x", variants={"control": 0.5, "treatment": 0.4})
    with pytest.raises(ConfigError, match="over-allocated"):
        Assigner([Experiment(name=n, variants={"c": 0.5, "t": 0.5}, traffic=0.6) for n in "xy"])
    with pytest.raises(ConfigError, match="unique"):
        Assigner([Experiment(name="x", variants={"c": 0.5, "t": 0.5}, layer=layer) for layer in "LM"])


def test_quality_report_names_counts_and_ids() -> None:
    log = _log(200, 7, 0.0, 0)
    bad = pl.concat(
        [
            log,
            log.head(3),
            log.filter(pl.col("event") == "exposure").head(2).with_columns(pl.lit("other").alias("variant")),
            log.tail(1).with_columns(pl.lit(None, pl.String).alias("variant"), pl.lit(-5.0).alias("value")),
        ]
    )
    quality = check_quality(validate_events(bad))
    kinds = {i.kind: i for i in quality.issues}
    assert kinds["duplicated events (identical rows beyond the first)"].count == 3
    assert kinds["units seen in more than one variant"].count == 2
    assert kinds["rows without a variant"].count == 1
    assert kinds["events with a negative value"].count == 1
    assert "u0" in kinds["duplicated events (identical rows beyond the first)"].examples
    with pytest.raises(DataValidationError, match="more than one variant"):
        analyze(bad, plan(SPEC, log), on_bad="raise")
    with pytest.raises(DataValidationError, match="missing column"):
        validate_events(log.drop("variant"))
    with pytest.raises(DataValidationError, match="probability"):
        validate_events(log.with_columns(pl.lit(1.5).alias("propensity")))


def test_design_sizes_in_weeks_and_flags_infeasible(tmp_path: Path) -> None:
    history = _log(4000, 28, 0.0, 1).drop("experiment", "variant")
    design = plan(SPEC, history)
    assert design.feasible and design.duration_weeks is not None
    chosen = design.weeks[design.duration_weeks - 1]
    assert chosen.units >= chosen.required_units and chosen.power >= 0.8
    assert 0.3 < design.history.users_b < 1.2
    design.save(tmp_path / "d.json")
    assert load_design(tmp_path / "d.json") == design
    assert plot_power_curve(design, tmp_path / "p.png").stat().st_size > 0
    tiny = plan(SPEC.model_copy(update={"mde": 0.001}), history)
    assert not tiny.feasible and tiny.message.startswith("INFEASIBLE")


def test_design_unit_override_and_cuped() -> None:
    with pytest.raises(ValidationError, match="allow_non_user_unit"):
        DesignSpec.model_validate(SPEC.model_dump() | {"unit": "session"})
    history = _log(2000, 35, 0.0, 2).drop("experiment", "variant")
    session = DesignSpec.model_validate(SPEC.model_dump() | {"unit": "session", "allow_non_user_unit": True})
    with pytest.warns(NonUserUnitWarning):
        plan(session, history)
    cuped = plan(DesignSpec.model_validate(SPEC.model_dump() | {"cuped": True}), history)
    assert cuped.history.rho is not None


def test_analysis_detects_lift_and_applies_rule(tmp_path: Path) -> None:
    history = _log(4000, 28, 0.0, 3).drop("experiment", "variant")
    design = plan(SPEC.model_copy(update={"segments": ()}), history)
    result = analyze(_log(4000, 14, 0.3, 4), design)
    primary = next(r for r in result.results if r.role == "primary")
    assert primary.outcome == "win" and result.decisions["treatment"] == "ship"
    assert not result.srm.mismatch
    null = analyze(_log(4000, 14, 0.0, 5), design)
    assert null.decisions["treatment"] == "inconclusive"
    report = write_report(result, tmp_path / "r").read_text()
    assert "SHIP" in report and "Sample ratio" in report
    assert "sized for the fixed horizon, one look at the end" in report


def test_analysis_srm_overrides_decision() -> None:
    log = _log(4000, 14, 0.3, 6)
    dropped = log.filter(~((pl.col("variant") == "treatment") & (pl.col("unit_id").str.ends_with("1"))))
    result = analyze(dropped, plan(SPEC, _log(3000, 28, 0.0, 7).drop("experiment", "variant")))
    assert result.srm.mismatch and result.decisions["treatment"] == "inconclusive"


def test_sequential_design_analysis() -> None:
    spec = DesignSpec.model_validate(SPEC.model_dump() | {"sequential": "spending"})
    design = plan(spec, _log(3000, 28, 0.0, 8).drop("experiment", "variant"))
    log = _log(3000, 14, 0.5, 9)
    result = analyze(log, design)
    (path,) = result.sequential
    assert path.days.size == 14 and path.p_value[-1] < 0.05
    assert path.method.startswith("re-randomised")
    primary = next(r for r in result.results if r.role == "primary")
    assert primary.p_decision == path.p_value[-1] and primary.outcome == "win"
    # an interim analysis after 7 days reproduces the first 7 daily p-values of the full one
    interim = analyze(log.filter(pl.col("timestamp") < 7 * DAY), design).sequential[0]
    np.testing.assert_array_equal(interim.p_value, path.p_value[:7])
    crossed = path.p_value < 0.05
    assert np.all(crossed[crossed.argmax() :])  # once the boundary is crossed the decision stands
    msprt_design = plan(
        DesignSpec.model_validate(SPEC.model_dump() | {"sequential": "msprt"}),
        _log(3000, 28, 0.0, 8).drop("experiment", "variant"),
    )
    path = analyze(log, msprt_design).sequential[0]
    assert path.method == "mSPRT" and path.ci_low is None  # no confidence sequence for a drifting estimand


def test_sequential_ratio_primary_and_planned_window() -> None:
    ctr = MetricSpec(name="ctr", kind="ratio", event="click", denominator_event="impression")
    spec = SPEC.model_copy(
        update={"primary": ctr, "guardrails": (), "sequential": "spending", "max_weeks": 1}
    )
    design = plan(spec, _log(3000, 28, 0.0, 13).drop("experiment", "variant"))
    (path,) = analyze(_log(3000, 7, 0.5, 14), design).sequential
    assert path.days.size == 7 and path.p_value[-1] < 0.05
    with pytest.raises(DataValidationError, match="planned"):
        analyze(_log(3000, 10, 0.0, 15), design.model_copy(update={"duration_weeks": 1}))


def test_cli_design_and_analyze(tmp_path: Path) -> None:
    runner = CliRunner()
    spec_path = tmp_path / "spec.json"
    assert runner.invoke(app, ["template", str(spec_path)]).exit_code == 0
    spec_path.write_text(SPEC.model_dump_json())
    _log(3000, 28, 0.0, 10).drop("experiment", "variant").write_parquet(tmp_path / "hist.parquet")
    _log(3000, 14, 0.3, 11).write_ndjson(tmp_path / "log.jsonl")
    res = runner.invoke(
        app,
        [
            "design",
            str(spec_path),
            "--history",
            str(tmp_path / "hist.parquet"),
            "--out",
            str(tmp_path / "d.json"),
            "--plot",
            str(tmp_path / "p.png"),
        ],
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        app,
        [
            "analyze",
            str(tmp_path / "d.json"),
            "--events",
            str(tmp_path / "log.jsonl"),
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "r" / "report.md").exists() and (tmp_path / "r" / "effects.png").exists()
    res = runner.invoke(
        app, ["analyze", str(tmp_path / "nope.json"), "--events", str(tmp_path / "log.jsonl")]
    )
    assert res.exit_code == 2 and "cannot read design" in res.output
