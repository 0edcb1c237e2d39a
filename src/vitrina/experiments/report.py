"""Markdown report (+ PNG plots) of an :class:`~vitrina.experiments.analysis.Analysis`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vitrina.experiments.analysis import Analysis
from vitrina.experiments.stats import Num

__all__ = ["write_report"]


def _fmt(x: Num) -> str:
    return f"{float(x):.4g}"


def _plot_effects(analysis: Analysis, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in analysis.results if r.role != "segment"]
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(rows) + 1.5))
    for i, r in enumerate(rows):
        e = r.estimate
        if e is None:
            ax.text(0, i, "not estimable", ha="center", va="center", color="tab:grey")
            continue
        color = {"win": "tab:green", "loss": "tab:red", "flat": "tab:grey"}[r.outcome]
        rel = 100 / float(e.control) if float(e.control) else 0.0
        ax.errorbar(
            float(e.effect) * rel,
            i,
            xerr=[[(float(e.effect) - float(e.ci_low)) * rel], [(float(e.ci_high) - float(e.effect)) * rel]],
            fmt="o",
            color=color,
        )
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(rows)), [f"{r.metric.name} ({r.variant})" for r in rows])
    ax.set_xlabel("effect, % of control (unadjusted interval)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_sequential(analysis: Analysis, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for s in analysis.sequential:
        top.plot(s.days, s.effect, marker=".", label=s.variant)
        if s.ci_low is not None and s.ci_high is not None:
            top.fill_between(s.days, s.ci_low, s.ci_high, alpha=0.2)
        bottom.plot(s.days, s.p_value, marker=".", label=f"{s.variant} ({s.method})")
    top.axhline(0, color="black", linewidth=0.8)
    top.set_ylabel("effect at each look")
    bottom.axhline(analysis.design.spec.alpha, color="grey", linestyle="--", label="alpha")
    bottom.set(yscale="log", ylabel="sequential p-value", xlabel="day")
    bottom.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(analysis: Analysis, out_dir: str | Path) -> Path:
    """Write ``report.md``, ``effects.png`` and (sequential designs) ``sequential.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = analysis.design.spec
    lines = [
        f"# Experiment report: {spec.name}",
        "",
        f"**Hypothesis:** {spec.hypothesis}",
        "",
        f"Unit: {spec.unit}; alpha {spec.alpha}; power {spec.power}; variants {spec.variants}; "
        f"planned duration: {analysis.design.duration_weeks or 'infeasible'} week(s), sized for the "
        f"{analysis.design.sized_for}; "
        f"sequential: {spec.sequential}; guardrail correction: {spec.correction}.",
        "",
        "## Decision (pre-registered rule)",
        "",
    ]
    for variant, decision in analysis.decisions.items():
        lines.append(f"- **{variant}: {decision.upper().replace('_', ' ')}** — {analysis.reasons[variant]}")
    lines += [
        "",
        "## Sample ratio",
        "",
        analysis.srm.verdict,
        "",
        "| variant | units | expected |",
        "|---|---|---|",
    ]
    for v, n in analysis.srm.observed.items():
        lines.append(f"| {v} | {n} | {analysis.srm.expected[v]:.1f} |")
    lines += ["", "## Data quality", ""]
    lines.append(analysis.quality.summary() if not analysis.quality.clean else "No problems found.")
    lines += [
        "",
        "## Effects",
        "",
        "Effect = treatment - control. `p (decision)`: the p-value the rule uses (primary: raw or "
        "sequential, Holm-adjusted across treatment arms when there are several; "
        f"guardrails: {spec.correction}; segments: BH). A guardrail with a margin is tested for "
        "non-inferiority: its decision p-value is twice the one-sided p of 'worse by the margin or more', "
        "below alpha exactly when the interval's bound on the worse side is inside the margin. Holm and "
        "BH are across all primary and guardrail tests (two-sided p).",
        "",
        "| role | metric | variant | method | control | treatment | effect | CI low | CI high | rel. | "
        "rel. CI | p | p Holm | p BH | p (decision) | outcome |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in analysis.results:
        e = r.estimate
        name = r.metric.name + (f" [{r.segment}]" if r.segment else "")
        if e is None:
            lines.append(
                f"| {r.role} | {name} | {r.variant} | not estimable: {r.not_estimable} |"
                + " |" * 11
                + " n/a |"
            )
            continue
        rel = f"{float(e.relative):+.2%}" if float(e.control) else "n/a"
        rel_ci = (
            f"[{float(e.rel_ci_low):+.2%}, {float(e.rel_ci_high):+.2%}]"
            if np.isfinite(e.rel_ci_low) and np.isfinite(e.rel_ci_high)
            else "unbounded"
        )
        lines.append(
            f"| {r.role} | {name} | {r.variant} | {r.method} | {_fmt(e.control)} | {_fmt(e.treatment)} | "
            f"{_fmt(e.effect)} | {_fmt(e.ci_low)} | {_fmt(e.ci_high)} | {rel} | {rel_ci} | "
            f"{_fmt(e.p_value)} | {r.p_holm:.4g} | {r.p_bh:.4g} | {r.p_decision:.4g} | {r.verdict} |"
        )
    _plot_effects(analysis, out / "effects.png")
    lines += ["", "![effects](effects.png)", ""]
    if analysis.sequential:
        _plot_sequential(analysis, out / "sequential.png")
        lines += ["## Sequential monitoring (daily looks)", ""]
        for s in analysis.sequential:
            lines.append(f"- {s.variant} ({s.method}): {len(s.days)} looks, final p = {s.p_value[-1]:.4g}")
        lines += ["", "![sequential](sequential.png)", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
