"""Human-readable outputs of a benchmark: a markdown table and the accuracy-coverage Pareto plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def metric_cell(run: dict[str, Any], name: str) -> str:
    """``run``'s value of metric ``name`` to 4 decimals, ``mean ± sd`` for a rolling-window run,
    empty when it was not computed."""
    if name not in run["metrics"]:
        return ""
    sd = run.get("metrics_sd", {}).get(name)
    return f"{run['metrics'][name]:.4f}" + ("" if sd is None else f" ± {sd:.4f}")


def split_title(results: dict[str, Any]) -> str:
    """``split loo``, or for rolling windows ``split rolling (3 windows, mean ± sd)``."""
    windows = results.get("windows")
    if not windows:
        return f"split {results['split']}"
    return f"split {results['split']} ({len(windows)} windows, mean ± sd)"


def results_markdown(results: dict[str, Any], first: list[str]) -> str:
    """The console's columns (``first``, metric names without ``@k``) in its order, then every
    other metric at ``k`` that was computed."""
    k = results["k"]
    computed = [m for r in results["runs"] for m in r["metrics"] if m.endswith(f"@{k}")]
    names = [f"{m}@{k}" for m in first] + [
        m for m in dict.fromkeys(computed) if m[: -len(f"@{k}")] not in first
    ]
    lines = [
        f"# {results['dataset']} · {split_title(results)} · k={k} · seed {results.get('seed', 0)}",
        "",
        "| model | "
        + " | ".join(names)
        + f" | fit s | recommend s | Pareto front (NDCG@{k} vs Coverage@{k}) |",
        "|---|" + "---:|" * (len(names) + 2) + ":---:|",
    ]
    for r in results["runs"]:
        cells = [metric_cell(r, n) for n in names]
        lines.append(
            f"| {r['model']} | "
            + " | ".join(cells)
            + f" | {r['fit_seconds']:.1f} | {r['recommend_seconds']:.2f} | "
            + ("**yes**" if r.get("pareto_front") else "no")
            + " |"
        )
    sample = results.get("eval_users")
    if sample:
        lines += [
            "",
            f"Evaluated on {sample['sampled']:,} of {sample['of']:,} test users drawn at random "
            f"(seed {sample['seed']}); 95% confidence intervals:",
            "",
            "| model | " + " | ".join(n for n in names if n != f"coverage@{k}") + " |",
            "|---|" + "---:|" * len([n for n in names if n != f"coverage@{k}"]),
        ]
        for r in results["runs"]:
            ci = r.get("ci95", {})
            cells = [
                f"{ci[n][0]:.4f}–{ci[n][1]:.4f}" if n in ci and ci[n][0] is not None else ""
                for n in names
                if n != f"coverage@{k}"
            ]
            lines.append(f"| {r['model']} | " + " | ".join(cells) + " |")
    lines += _windows_markdown(results, names)
    removed = {w: n for w, n in results.get("data", {}).items() if w.startswith("test_removed_")}
    if removed:
        lines += ["", "Test events removed: " + ", ".join(f"{w[13:]} {n:,}" for w, n in removed.items())]
    lines += ["", "Parameters:", ""]
    lines += [f"- `{r['model']}`: `{r['params']}`" for r in results["runs"]]
    if "failed" in results:
        failed = results["failed"]
        lines += ["", f"**Not finished:** `{failed['model']}` failed: {failed['error']}"]
    return "\n".join(lines) + "\n"


def _windows_markdown(results: dict[str, Any], names: list[str]) -> list[str]:
    """Rolling windows: each window's test period and sizes, then each model's metrics per window."""
    windows = results.get("windows")
    if not windows:
        return []
    lines = [
        "",
        "Windows (test periods in UTC; validation is the period just before each test period):",
        "",
        "| window | test from | test to | train events | validation events | test events | test users |",
        "|---:|---|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {w['window']} | {w['test_from']} | {w['test_to']} | {w['train_events']:,} "
        f"| {w['validation_events']:,} | {w['test_events']:,} | {w['test_users']:,} |"
        for w in windows
    ]
    lines += ["", "Per window:", "", "| model | window | " + " | ".join(names) + " | fit s |"]
    lines.append("|---|---:|" + "---:|" * (len(names) + 1))
    for r in results["runs"]:
        for w in r.get("windows", []):
            cells = [metric_cell(w, n) for n in names]
            lines.append(
                f"| {r['model']} | {w['window']} | " + " | ".join(cells) + f" | {w['fit_seconds']:.1f} |"
            )
    return lines


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated in both coordinates (higher is better in each)."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            (x2 >= x and y2 >= y) and (x2 > x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return front


def pareto_plot(results: dict[str, Any], path: Path) -> None:
    """NDCG@k against Coverage@k for every run, the non-dominated ones joined: a model that only
    recommends the head of the catalogue can win on accuracy alone."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = results["k"]
    runs = results["runs"]
    pts = [(r["metrics"][f"coverage@{k}"], r["metrics"][f"ndcg@{k}"]) for r in runs]
    front = sorted(pareto_front(pts), key=lambda i: pts[i][0])
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    ax.scatter([p[0] for p in pts], [p[1] for p in pts], color="tab:blue", zorder=3)
    front_x, front_y = [pts[i][0] for i in front], [pts[i][1] for i in front]
    ax.plot(front_x, front_y, color="tab:orange", zorder=2)
    ax.scatter(  # rings, so a front of one run is visible too
        front_x,
        front_y,
        s=160,
        facecolors="none",
        edgecolors="tab:orange",
        linewidths=2,
        label="Pareto front (not dominated)",
        zorder=4,
    )
    for r, (x, y) in zip(runs, pts, strict=True):
        ax.annotate(r["model"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel(f"Coverage@{k}")
    ax.set_ylabel(f"NDCG@{k}")
    ax.set_title(f"{results['dataset']} ({results['split']}): accuracy vs coverage")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
