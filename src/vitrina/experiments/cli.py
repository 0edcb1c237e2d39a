"""``vitrina ab``: design an experiment before it starts, analyse it against that design afterwards."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from vitrina.errors import ConfigError, VitrinaError

# The statistics stack (scipy.stats, statsmodels) is imported inside each command, so that
# `vitrina --help` and unrelated commands start in well under a second.

app = typer.Typer(help="A/B experiments: pre-registered design, sample size and duration, analysis report.")


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
