"""Duration forecast on a saturating population (issue 13, point 1).

A finite population of users with gamma-distributed visit rates (mean one visit a week, heavy tail):
fit on the first 4 weeks, compare the forecast of distinct users with the truth at weeks 1-8. The
power law of the old planner is printed beside it::

    python benchmarks/forecast_backtest.py --users 20000 --seeds 3
"""

from __future__ import annotations

import argparse

import numpy as np
import polars as pl

from vitrina.experiments.design import DesignSpec, plan
from vitrina.experiments.metrics import MetricSpec

DAY = 86_400.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    spec = DesignSpec(
        name="forecast", hypothesis="h", primary=MetricSpec(name="clicks", event="click"), mde=0.05
    )
    print("| seed | model | backtest error | week 4 | week 6 | week 8 (2x history) | power law week 8 |")
    print("|---|---|---|---|---|---|---|")
    for seed in range(args.seeds):
        rng = np.random.default_rng(seed)
        rate = rng.gamma(0.7, 1 / 7, args.users)
        visits = rng.poisson(rate * 56)
        owner = np.repeat(np.arange(args.users), visits)
        log = pl.DataFrame(
            {
                "timestamp": rng.uniform(0, 56, owner.size) * DAY,
                "unit_id": owner.astype(str),
                "event": "click",
                "value": 1.0,
            }
        )
        design = plan(spec, log.filter(pl.col("timestamp") < 28 * DAY))
        err = {}
        for week in (4, 6, 8):
            actual = log.filter(pl.col("timestamp") < 7 * week * DAY)["unit_id"].n_unique()
            err[week] = design.weeks[week - 1].units / actual - 1
        actual = log["unit_id"].n_unique()
        power = design.history.users_a * 56**design.history.users_b / actual - 1
        print(
            f"| {seed} | {design.history.growth} | {design.history.backtest_error:.1%} | {err[4]:+.1%} | "
            f"{err[6]:+.1%} | {err[8]:+.1%} | {power:+.1%} |"
        )


if __name__ == "__main__":
    main()
