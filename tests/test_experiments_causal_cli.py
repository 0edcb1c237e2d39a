"""`vitrina ab did|synth|ope` on small generated files: known effects recovered, bad input is one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from vitrina.cli import app


def _run(*args: str):
    return CliRunner().invoke(app, ["ab", *args])


def _did_panel(path: Path, effect: float = 2.0, seed: int = 0) -> None:
    """40 units x 10 periods, half treated from period 6 on, unit and period effects, noise sd 1."""
    rng = np.random.default_rng(seed)
    units, periods = 40, 10
    u, t = np.repeat(np.arange(units), periods), np.tile(np.arange(1, periods + 1), units)
    treated = (u < units // 2).astype(int)
    post = (t >= 6).astype(int)
    y = rng.normal(0, 3, units)[u] + 0.5 * t + effect * treated * post + rng.normal(0, 1, u.size)
    pl.DataFrame(
        {"unit": [f"s{k}" for k in u], "period": t, "y": y, "treated": treated, "post": post}
    ).write_csv(path)


def test_did_recovers_the_effect(tmp_path: Path) -> None:
    _did_panel(tmp_path / "panel.csv")
    res = _run("did", str(tmp_path / "panel.csv"), "--out", str(tmp_path / "did.json"))
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "did.json").read_text())
    assert out["ci_low"] < 2.0 < out["ci_high"] and abs(out["effect"] - 2.0) < 0.3
    assert out["n_clusters"] == 40 and out["n_treated_clusters"] == 20 and out["p_value"] < 1e-6
    assert out["event_study"]["reference_period"] == 5 and len(out["event_study"]["periods"]) == 9
    assert "DiD effect" in res.output and "pre-trend slope" in res.output


def test_did_renamed_columns_and_wild_bootstrap(tmp_path: Path) -> None:
    _did_panel(tmp_path / "p.csv", effect=0.0, seed=1)
    df = pl.read_csv(tmp_path / "p.csv").rename({"unit": "store", "y": "sales"})
    df = df.filter(pl.col("store").is_in(["s0", "s1", "s2", "s3", "s20", "s21", "s22", "s23"]))  # 8 stores
    df.write_parquet(tmp_path / "p.parquet")
    res = _run(
        "did",
        str(tmp_path / "p.parquet"),
        "--unit",
        "store",
        "--outcome",
        "sales",
        "--inference",
        "wild",
        "--draws",
        "999",
        "--out",
        str(tmp_path / "o.json"),
    )
    assert res.exit_code == 0, res.output
    assert "warning: diff_in_diff: only 8 clusters" in res.output
    out = json.loads((tmp_path / "o.json").read_text())
    assert out["inference"].startswith("wild") and out["ci_low"] < 0.0 < out["ci_high"]


def test_synth_recovers_the_effect(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    periods = np.arange(1, 31)
    controls = {f"c{j}": 10 + j + np.cumsum(rng.normal(0, 1, periods.size)) for j in range(8)}
    treated = 0.6 * controls["c1"] + 0.4 * controls["c4"] + np.where(periods >= 21, 3.0, 0.0)
    rows = [
        (u, int(p), float(v))
        for u, ys in {**controls, "t": treated}.items()
        for p, v in zip(periods, ys, strict=True)
    ]
    pl.DataFrame(rows, schema=["region", "week", "y"], orient="row").write_ndjson(tmp_path / "panel.jsonl")
    res = _run(
        "synth",
        str(tmp_path / "panel.jsonl"),
        "--treated-unit",
        "t",
        "--start",
        "21",
        "--unit",
        "region",
        "--period",
        "week",
        "--out",
        str(tmp_path / "s.json"),
    )
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "s.json").read_text())
    assert out["n_pre"] == 20 and out["effect"] == pytest.approx(3.0, abs=0.05)
    assert out["weights"]["c1"] == pytest.approx(0.6, abs=0.02) and out["weights"]["c4"] == pytest.approx(
        0.4, abs=0.02
    )
    assert "weights: c1 0.6" in res.output


def test_ope_recovers_the_new_policys_value(tmp_path: Path) -> None:
    """Uniform logging over 5 actions; the new policy always picks action 0 (reward rate 0.3)."""
    rng = np.random.default_rng(3)
    n = 20_000
    rates = np.array([0.3, 0.1, 0.1, 0.05, 0.05])
    action = rng.integers(0, 5, n)
    reward = (rng.random(n) < rates[action]).astype(float)
    q = rates[action] + rng.normal(0, 0.02, n)
    pl.DataFrame(
        {
            "reward": reward,
            "propensity": 0.2,
            "target_prob": (action == 0).astype(float),
            "q_logged": q,
            "dm": 0.3,
        }
    ).write_csv(tmp_path / "log.csv")
    res = _run("ope", str(tmp_path / "log.csv"), "--out", str(tmp_path / "o.json"))
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "o.json").read_text())
    assert set(out) == {"ips", "snips", "dr"}
    for est in out.values():
        assert est["ci_low"] < 0.3 < est["ci_high"]
    assert out["dr"]["se"] < out["ips"]["se"]


@pytest.mark.parametrize(
    ("command", "content", "message"),
    [
        (
            "did",
            "unit,period,y,treated,post\na,1,1.0,1,0\na,2,oops,1,1\n",
            "row 2, field 'y': expected a number, got 'oops'",
        ),
        (
            "did",
            "unit,period,y,treated,post\na,1,1.0,2,0\n",
            "row 1, field 'treated': expected 0 or 1, got 2.0",
        ),
        ("did", "unit,period,y\na,1,1.0\n", "missing column(s) ['treated', 'post']"),
        (
            "did",
            "unit,period,y,treated,post\na,1,1,1,0\na,2,1,0,1\n",
            "field 'treated': unit 'a' has both 0 and 1",
        ),
        ("synth", "unit,period,y\nt,1,1\nt,2,2\nc,1,1\nc2,1,1\nc2,2,2\n", "unit 'c' has no row for period 2"),
        (
            "ope",
            "reward,propensity,target_prob\n1,0.5,1\n0,0,1\n",
            "row 2, field 'propensity': expected a value in (0, 1]",
        ),
        (
            "ope",
            "reward,propensity,target_prob,dm\n1,0.5,1,0.2\n0,0.5,1,0.2\n",
            "column 'dm' without 'q_logged'",
        ),
    ],
)
def test_bad_input_is_one_clear_line(command: str, content: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text(content)
    extra = ["--treated-unit", "t", "--start", "2"] if command == "synth" else []
    res = _run(command, str(path), *extra)
    assert res.exit_code == 2, res.output
    assert message in res.output and str(path) in res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1


def test_unknown_format_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "x.xlsx").write_text("nope")
    assert "unknown format '.xlsx'" in _run("ope", str(tmp_path / "x.xlsx")).output
    assert "does not exist" in _run("did", str(tmp_path / "none.csv")).output
