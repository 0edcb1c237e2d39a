"""``vitrina ab``: design an experiment before it starts, analyse it against that design afterwards."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer

from vitrina.errors import ConfigError, VitrinaError

# The statistics stack (scipy.stats, statsmodels) is imported inside each command, so that
# `vitrina --help` and unrelated commands start in well under a second.

app = typer.Typer(
    help="A/B experiments: pre-registered design, sample size and duration, analysis report; causal "
    "effects without an A/B (did, synth) and off-policy evaluation (ope)."
)


def _fail(exc: Exception) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(code=2)


def _output_file(path: Path, what: str) -> None:
    """Refuse an output file path whose folder is missing or that is a folder, before any work."""
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a folder; pass a file path")
    if not path.parent.is_dir():
        raise ConfigError(f"{what} {path}: folder {path.parent} does not exist; create it first")


def _output_dir(path: Path, what: str) -> None:
    """Refuse an output folder that exists as a file or whose parent folder is missing."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {path} exists and is not a folder; pass a folder path")
    if not path.parent.is_dir():
        raise ConfigError(f"{what} {path}: folder {path.parent} does not exist; create it first")


def _read_text(path: Path, what: str) -> str:
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist or is not a file")
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} {path} is not readable text: {exc}") from exc


@app.command("template")
def template(
    out: Annotated[Path, typer.Argument(help="Where to write the design spec JSON template.")],
) -> None:
    """Write a design spec template to fill in (hypothesis, metrics, MDE, decision rule)."""
    try:
        _output_file(out, "template")
    except ConfigError as exc:
        raise _fail(exc) from exc
    from vitrina.experiments.design import DesignSpec
    from vitrina.experiments.metrics import MetricSpec

    spec = DesignSpec(
        name="my_experiment",
        hypothesis="The new ranker increases clicks per user without hurting purchases.",
        primary=MetricSpec(name="clicks_per_user", kind="mean", event="click"),
        guardrails=(MetricSpec(name="purchase_rate", kind="proportion", event="purchase"),),
        mde=0.02,
    )
    out.write_text(spec.model_dump_json(indent=2))
    typer.echo(f"wrote {out}; edit it, then run `vitrina ab design {out} --history LOG`")


@app.command("design")
def design(
    spec_path: Annotated[Path, typer.Argument(help="Design spec JSON (see `vitrina ab template`).")],
    history: Annotated[
        Path, typer.Option(help="Historical event log (.parquet/.jsonl) from before the test.")
    ],
    out: Annotated[Path, typer.Option(help="Where to save the frozen design JSON.")] = Path("design.json"),
    plot: Annotated[Path | None, typer.Option(help="Power-curve PNG path.")] = None,
) -> None:
    """Size the experiment from history (MDE <-> units <-> whole weeks) and freeze the design."""
    from vitrina.experiments.design import DesignSpec, plan, plot_power_curve
    from vitrina.experiments.schema import read_table

    try:
        _output_file(out, "--out")
        if plot is not None:
            _output_file(plot, "--plot")
        spec = DesignSpec.model_validate_json(_read_text(spec_path, "design spec"))
        result = plan(spec, read_table(history))
        result.save(out)
        if plot is not None:
            plot_power_curve(result, plot)
    except (VitrinaError, ValueError, OSError) as exc:
        raise _fail(exc) from exc
    typer.echo(result.message)
    typer.echo(f"design saved to {out}")
    if not result.feasible:
        raise typer.Exit(code=1)


@app.command("analyze")
def analyze_cmd(
    design_path: Annotated[Path, typer.Argument(help="Design JSON saved by `vitrina ab design`.")],
    events: Annotated[
        Path,
        typer.Option(
            help="Experiment event log (.parquet/.jsonl), e.g. from `vitrina ab export`; metric events "
            "without an experiment are attributed through the units' exposures."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Report directory (report.md + PNGs).")] = Path("ab_report"),
    pre: Annotated[
        Path | None,
        typer.Option(
            help="Pre-period log for CUPED: plain history (timestamp, unit_id, event, value), every "
            "event before its unit's first exposure."
        ),
    ] = None,
    strict: Annotated[
        bool, typer.Option(help="Refuse logs with content problems instead of reporting.")
    ] = False,
) -> None:
    """Analyse a log against its design: SRM, effects, corrections, sequential looks, decision."""
    from vitrina.experiments.analysis import analyze
    from vitrina.experiments.design import load_design
    from vitrina.experiments.report import write_report
    from vitrina.experiments.schema import read_events, read_table

    try:
        _output_dir(out, "--out")
        design_obj = load_design(design_path)
        log = read_events(events)
        pre_log = read_table(pre) if pre is not None else None
        result = analyze(log, design_obj, pre_events=pre_log, on_bad="raise" if strict else "report")
        path = write_report(result, out)
    except (VitrinaError, ValueError, OSError) as exc:
        raise _fail(exc) from exc
    typer.echo(result.srm.verdict)
    typer.echo(json.dumps(result.decisions))
    typer.echo(f"report: {path}")


def _emit(summary: list[str], result: dict[str, object], out: Path | None) -> None:
    """Print the summary lines and, with ``--out``, write the full result as JSON."""
    for line in summary:
        typer.echo(line)
    if out is not None:
        out.write_text(json.dumps(result, indent=2) + "\n")
        typer.echo(f"result: {out}")


def _warn_lines(caught: list) -> None:
    for w in caught:
        typer.echo(f"warning: {w.message}", err=True)


DID_SCHEMA = (
    "A DiD panel has one row per unit and period: unit (id), period (number), y (outcome), treated (0/1, "
    "constant per unit), post (0/1, constant per period); rename with --unit/--period/--outcome/"
    "--treated/--post (see docs/experiments.md)"
)


@app.command("did")
def did_cmd(
    panel: Annotated[
        Path, typer.Argument(help="Panel file (.csv/.parquet/.jsonl): one row per unit and period.")
    ],
    unit: Annotated[str, typer.Option(help="Column of the unit (cluster) id.")] = "unit",
    period: Annotated[str, typer.Option(help="Column of the period (a number; ordered).")] = "period",
    outcome: Annotated[str, typer.Option(help="Column of the outcome.")] = "y",
    treated: Annotated[str, typer.Option(help="Column: 1 for treated units, 0 for controls.")] = "treated",
    post: Annotated[str, typer.Option(help="Column: 1 for periods after the treatment starts.")] = "post",
    inference: Annotated[str, typer.Option(help="t: CR1 SEs on t(G-1); wild: wild cluster bootstrap.")] = "t",
    alpha: Annotated[float, typer.Option(help="Two-sided level of the intervals.")] = 0.05,
    draws: Annotated[int, typer.Option(help="Wild bootstrap draws.")] = 9999,
    seed: Annotated[int, typer.Option(help="Wild bootstrap seed.")] = 0,
    out: Annotated[
        Path | None, typer.Option(help="Write the full result (with the event study) as JSON.")
    ] = None,
) -> None:
    """Difference-in-differences with unit-clustered inference, pre-trend slope and event study."""
    import warnings

    import numpy as np
    import polars as pl

    from vitrina.errors import DataValidationError
    from vitrina.experiments.causal import diff_in_diff
    from vitrina.experiments.tables import numeric, read_frame, require, text

    try:
        if inference not in ("t", "wild"):
            raise ConfigError(f"--inference {inference!r}: expected 't' or 'wild'")
        if out is not None:
            _output_file(out, "--out")
        source = str(panel)
        df = read_frame(panel)
        require(df, [unit, period, outcome, treated, post], source, DID_SCHEMA)
        table = pl.DataFrame(
            {
                "unit": text(df, unit, source),
                "period": numeric(df, period, source),
                "y": numeric(df, outcome, source),
                "treated": numeric(df, treated, source, binary=True),
                "post": numeric(df, post, source, binary=True),
            }
        )
        for key, flag, col in (("unit", "treated", treated), ("period", "post", post)):
            mixed = table.group_by(key).agg(pl.col(flag).n_unique().alias("n")).filter(pl.col("n") > 1)
            if mixed.height:
                raise DataValidationError(
                    f"{source}, field '{col}': {key} {mixed[key][0]!r} has both 0 and 1; it must be "
                    f"constant per {key}"
                )
        dup = table.select("unit", "period").is_duplicated()
        if dup.any():
            row = int(dup.arg_true()[1 if dup.sum() > 1 else 0]) + 1
            raise DataValidationError(
                f"{source}, row {row}: unit {table['unit'][row - 1]!r} has period "
                f"{table['period'][row - 1]:g} twice; one row per unit and period"
            )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            method: Literal["t", "wild"] = "wild" if inference == "wild" else "t"
            try:
                res = diff_in_diff(table, inference=method, alpha=alpha, n_draws=draws, seed=seed)
            except DataValidationError as exc:
                raise DataValidationError(f"{source}: {exc}") from exc
    except (VitrinaError, ValueError, OSError) as exc:
        raise _fail(exc) from exc
    _warn_lines(caught)
    es = res.event_study
    result = {
        "effect": res.effect,
        "se": res.se,
        "ci_low": res.ci_low,
        "ci_high": res.ci_high,
        "p_value": res.p_value,
        "inference": res.inference,
        "n_clusters": res.n_clusters,
        "n_treated_clusters": res.n_treated_clusters,
        "pretrend_slope": res.pretrend_slope,
        "pretrend_ci": [res.pretrend_ci_low, res.pretrend_ci_high],
        "pretrend_p_value": res.pretrend_p_value,
        "event_study": {
            "reference_period": es.reference,
            "periods": np.asarray(es.periods).tolist(),
            "effect": np.asarray(es.effect).tolist(),
            "ci_low": np.asarray(es.ci_low).tolist(),
            "ci_high": np.asarray(es.ci_high).tolist(),
        },
    }
    level = f"{1 - alpha:.0%}"
    p_text = f"< {1 / draws:.1g}" if method == "wild" and res.p_value == 0 else f"= {res.p_value:.3g}"
    _emit(
        [
            f"DiD effect {res.effect:.4g} (SE {res.se:.3g}), {level} CI "
            f"[{res.ci_low:.4g}, {res.ci_high:.4g}], p {p_text} ({res.inference}; "
            f"{res.n_clusters} clusters, {res.n_treated_clusters} treated)",
            f"pre-trend slope {res.pretrend_slope:.4g} per period, {level} CI "
            f"[{res.pretrend_ci_low:.4g}, {res.pretrend_ci_high:.4g}], p = {res.pretrend_p_value:.3g}",
            f"event study (vs period {es.reference:g}): "
            + ", ".join(f"{p:g}: {e:+.3g}" for p, e in zip(es.periods, es.effect, strict=True)),
        ],
        result,
        out,
    )


SYNTH_SCHEMA = (
    "A synthetic-control panel has one row per unit and period: unit (id), period (number), y (outcome); "
    "every unit needs every period; rename with --unit/--period/--outcome (see docs/experiments.md)"
)


@app.command("synth")
def synth_cmd(
    panel: Annotated[
        Path, typer.Argument(help="Panel file (.csv/.parquet/.jsonl): one row per unit and period.")
    ],
    treated_unit: Annotated[str, typer.Option("--treated-unit", help="Id of the treated unit.")],
    start: Annotated[float, typer.Option(help="First period of the treatment (periods before it are pre).")],
    unit: Annotated[str, typer.Option(help="Column of the unit id.")] = "unit",
    period: Annotated[str, typer.Option(help="Column of the period (a number; ordered).")] = "period",
    outcome: Annotated[str, typer.Option(help="Column of the outcome.")] = "y",
    out: Annotated[Path | None, typer.Option(help="Write the full result (weights, paths) as JSON.")] = None,
) -> None:
    """Synthetic control for one treated unit: donor weights, effect after treatment, placebo p-value."""
    import numpy as np
    import polars as pl

    from vitrina.errors import DataValidationError
    from vitrina.experiments.causal import synthetic_control
    from vitrina.experiments.tables import numeric, read_frame, require, text

    try:
        if out is not None:
            _output_file(out, "--out")
        source = str(panel)
        df = read_frame(panel)
        require(df, [unit, period, outcome], source, SYNTH_SCHEMA)
        table = pl.DataFrame(
            {
                "unit": text(df, unit, source),
                "period": numeric(df, period, source),
                "y": numeric(df, outcome, source),
            }
        )
        dup = table.select("unit", "period").is_duplicated()
        if dup.any():
            row = int(dup.arg_true()[1 if dup.sum() > 1 else 0]) + 1
            raise DataValidationError(
                f"{source}, row {row}: unit {table['unit'][row - 1]!r} has period "
                f"{table['period'][row - 1]:g} twice; one row per unit and period"
            )
        units = table["unit"].unique(maintain_order=True).to_list()
        if treated_unit not in units:
            raise DataValidationError(
                f"{source}, field '{unit}': --treated-unit {treated_unit!r} not found (units: {units[:10]})"
            )
        periods = table["period"].unique().sort()
        wide = table.pivot(on="unit", index="period", values="y").sort("period")
        for u in units:
            missing = wide.filter(pl.col(u).is_null())["period"]
            if missing.len():
                raise DataValidationError(
                    f"{source}: unit {u!r} has no row for period {missing[0]:g}; every unit needs "
                    "every period"
                )
        controls = [u for u in units if u != treated_unit]
        if len(controls) < 2:
            raise DataValidationError(f"{source}: need at least 2 control units, got {len(controls)}")
        n_pre = int((periods < start).sum())
        try:
            res = synthetic_control(wide[treated_unit].to_numpy(), wide.select(controls).to_numpy(), n_pre)
        except DataValidationError as exc:
            raise DataValidationError(f"{source}: {exc}") from exc
    except (VitrinaError, ValueError, OSError) as exc:
        raise _fail(exc) from exc
    weights = dict(zip(controls, np.asarray(res.weights).tolist(), strict=True))
    top = sorted(weights.items(), key=lambda kv: -kv[1])[:5]
    result = {
        "treated_unit": treated_unit,
        "n_pre": n_pre,
        "effect": res.effect,
        "pre_rmse": res.pre_rmse,
        "placebo_p_value": res.placebo_p_value,
        "weights": weights,
        "periods": periods.to_list(),
        "treated": wide[treated_unit].to_list(),
        "synthetic": np.asarray(res.counterfactual).tolist(),
    }
    _emit(
        [
            f"synthetic-control effect {res.effect:.4g} (mean gap over {periods.len() - n_pre} post "
            f"periods), pre-period RMSE {res.pre_rmse:.3g}, placebo p = {res.placebo_p_value:.3g} "
            f"({len(controls)} controls)",
            "weights: " + ", ".join(f"{u} {w:.3f}" for u, w in top if w > 0.0005),
        ],
        result,
        out,
    )


OPE_SCHEMA = (
    "An OPE log has one row per logged decision: reward, propensity (the logging policy's probability of "
    "the logged action, in (0, 1]), target_prob (the new policy's probability of it, in [0, 1]); "
    "q_logged and dm (reward model of the logged action, and its expectation under the new policy) "
    "add the doubly robust estimate (see docs/experiments.md)"
)


@app.command("ope")
def ope_cmd(
    log: Annotated[Path, typer.Argument(help="Logged decisions (.csv/.parquet/.jsonl).")],
    reward: Annotated[str, typer.Option(help="Column of the reward.")] = "reward",
    propensity: Annotated[
        str, typer.Option(help="Column of the logging policy's probability.")
    ] = "propensity",
    target_prob: Annotated[
        str,
        typer.Option("--target-prob", help="Column of the new policy's probability of the logged action."),
    ] = "target_prob",
    alpha: Annotated[float, typer.Option(help="Two-sided level of the intervals.")] = 0.05,
    out: Annotated[Path | None, typer.Option(help="Write the estimates as JSON.")] = None,
) -> None:
    """Off-policy value of a new policy from logs: IPS, SNIPS and (with q_logged, dm) doubly robust."""
    from vitrina.errors import DataValidationError
    from vitrina.experiments.ope import doubly_robust, ips, snips
    from vitrina.experiments.tables import numeric, read_frame, require

    try:
        if out is not None:
            _output_file(out, "--out")
        source = str(log)
        df = read_frame(log)
        require(df, [reward, propensity, target_prob], source, OPE_SCHEMA)
        has_dr = [c for c in ("q_logged", "dm") if c in df.columns]
        if len(has_dr) == 1:
            raise ConfigError(
                f"{source}: column {has_dr[0]!r} without {({'q_logged', 'dm'} - set(has_dr)).pop()!r}; "
                "the doubly robust estimate needs both"
            )
        r = numeric(df, reward, source).to_numpy()
        p = numeric(df, propensity, source, low=0.0, high=1.0, low_open=True).to_numpy()
        pt = numeric(df, target_prob, source, low=0.0, high=1.0).to_numpy()
        try:
            estimates = {"ips": ips(pt, p, r, alpha), "snips": snips(pt, p, r, alpha)}
        except DataValidationError as exc:
            raise DataValidationError(f"{source}: {exc}") from exc
        if has_dr:
            q, dm = (numeric(df, c, source).to_numpy() for c in ("q_logged", "dm"))
            estimates["dr"] = doubly_robust(pt, p, r, q, dm, alpha)
    except (VitrinaError, ValueError, OSError) as exc:
        raise _fail(exc) from exc
    result = {
        name: {
            "value": e.value,
            "se": e.se,
            "ci_low": e.ci_low,
            "ci_high": e.ci_high,
            "effective_sample_size": e.effective_sample_size,
        }
        for name, e in estimates.items()
    }
    level = f"{1 - alpha:.0%}"
    lines = [f"{len(r)} logged decisions; logging policy's mean reward {float(r.mean()):.4g}"]
    lines += [
        f"{name.upper()}: {e.value:.4g} (SE {e.se:.3g}), {level} CI [{e.ci_low:.4g}, {e.ci_high:.4g}], "
        f"effective sample size {e.effective_sample_size:,.0f}"
        for name, e in estimates.items()
    ]
    _emit(lines, result, out)
