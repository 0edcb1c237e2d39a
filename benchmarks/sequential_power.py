"""Sequential designs deliver the power they promise (issue 13, point 2).

A finite population of users with gamma-distributed visit rates (mean one visit in ten days, heavy
tail) and gamma-distributed clicks per visit; a user enters the test at their first visit and the
primary is cumulative clicks per user. Each design (one look at the end, re-randomised spending test,
mSPRT) is planned from a 4-week history of the same population with ``max_weeks`` weeks and its MDE
set to what that duration can detect, so the design promises about 80% power. Then ``--runs``
experiments of that duration are simulated with the treatment multiplying clicks by ``1 + mde`` and
analysed as `vitrina ab analyze` does (daily looks; the spending test with 500 re-randomisations),
and again without an effect for the false-positive rate::

    python benchmarks/sequential_power.py --runs 2000 --seed 0   # ~5 min on one core
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import polars as pl

from vitrina.experiments.design import Design, DesignSpec, plan
from vitrina.experiments.metrics import MetricSpec
from vitrina.experiments.sequential import DRAWS, look_estimates, msprt, rerandomised_z, spending_test

DAY = 86_400.0
ALPHA = 0.05


def population(rng: np.random.Generator, users: int, days: int, lift: float) -> tuple[np.ndarray, ...]:
    """Per user: treated flag, entry day (-1: never visits) and cumulative clicks at the end of each day."""
    visit_rate = rng.gamma(0.7, 1 / 7, users)
    clicks_per_visit = rng.gamma(1.0, 1.0, users)
    treated = rng.random(users) < 0.5
    visits = rng.poisson(visit_rate[:, None] * np.ones(days))
    rate = clicks_per_visit * np.where(treated, 1 + lift, 1.0)
    clicks = rng.poisson(visits * rate[:, None])
    seen = visits > 0
    entry = np.where(seen.any(axis=1), seen.argmax(axis=1), -1)
    return treated, entry, np.cumsum(clicks, axis=1)


def history_log(rng: np.random.Generator, users: int, days: int) -> pl.DataFrame:
    """Event log (visits and clicks) of the population over ``days`` days, without a test."""
    visit_rate = rng.gamma(0.7, 1 / 7, users)
    clicks_per_visit = rng.gamma(1.0, 1.0, users)
    visits = rng.poisson(visit_rate[:, None] * np.ones(days))
    clicks = rng.poisson(visits * clicks_per_visit[:, None])
    frames = []
    for name, counts in (("visit", visits), ("click", clicks)):
        user, day = np.nonzero(counts)
        n = counts[user, day]
        when = (np.repeat(day, n) + rng.random(n.sum())) * DAY
        frames.append(
            pl.DataFrame(
                {"timestamp": when, "unit_id": np.repeat(user, n).astype(str), "event": name, "value": 1.0}
            )
        )
    return pl.concat(frames).sort("timestamp")


def calibrated(spec: DesignSpec, history: pl.DataFrame) -> Design:
    """The design whose MDE is what ``max_weeks`` weeks can detect (so it promises its power there)."""
    probe = plan(spec, history)
    last = probe.weeks[-1]
    mde = last.achievable_mde / last.baseline * 1.0005
    return plan(spec.model_copy(update={"mde": mde}), history)


def decide(
    test: str, design: Design, treated: np.ndarray, entry: np.ndarray, clicks: np.ndarray, rng
) -> bool:
    """Whether the analysis of one simulated experiment rejects H0 (as `vitrina ab analyze`)."""
    keep = entry >= 0
    order = np.lexsort((rng.random(keep.sum()), entry[keep]))
    t = treated[keep][order]
    x = clicks[keep][order].astype(np.float64)
    days = x.shape[1]
    present = (entry[keep][order][:, None] <= np.arange(days)).astype(np.float64)
    if test == "none":
        est = look_estimates(t, x[:, -1:], present[:, -1:], alpha=ALPHA)
        return bool(np.asarray(est.p_value)[-1] < ALPHA)
    if test == "msprt":
        est = look_estimates(t, x, present, alpha=ALPHA)
        eff, var = np.asarray(est.effect), np.asarray(est.se) ** 2
        ok = np.isfinite(eff) & np.isfinite(var) & (var > 0)
        res = msprt(np.where(ok, eff, 0.0), np.where(ok, var, 1e300), design.mde_absolute, ALPHA)
        return bool(res.p_value[-1] < ALPHA)
    z = rerandomised_z(t, x, present, 0.5, rng, DRAWS)
    return bool(spending_test(z, days, ALPHA).p_value[-1] < ALPHA)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--weeks", type=int, default=4, help="duration the designs are calibrated to")
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--designs", default="none,spending,msprt", help="comma-separated subset to run")
    args = parser.parse_args()
    history = history_log(np.random.default_rng([args.seed, 0]), args.users, 28)
    print(f"users {args.users}, history 28 days, {args.runs} runs per row, seed {args.seed}\n")
    print(
        "| design (sized for) | weeks | MDE (relative) | units expected | inflation | promised power | "
        "simulated power | false-positive rate | seconds |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for test in args.designs.split(","):
        spec = DesignSpec(
            name="seq",
            hypothesis="clicks per user go up",
            primary=MetricSpec(name="clicks", event="click"),
            mde=0.05,
            max_weeks=args.weeks,
            sequential=test,
        )
        started = time.time()
        design = calibrated(spec, history)
        week = design.weeks[(design.duration_weeks or args.weeks) - 1]
        days = 7 * week.weeks
        rng = np.random.default_rng([args.seed, 1])
        hits = {0.0: 0, design.spec.mde: 0}
        for lift in hits:
            for _ in range(args.runs):
                treated, entry, clicks = population(rng, args.users, days, lift)
                hits[lift] += decide(test, design, treated, entry, clicks, rng)
        power = hits[design.spec.mde] / args.runs
        se = np.sqrt(power * (1 - power) / args.runs)
        name = design.sized_for.replace("|", "\\|")
        print(
            f"| {name} | {week.weeks} | {design.spec.mde:.4f} | {week.units:,.0f} | "
            f"{week.inflation:.3f} | {week.power:.1%} | {power:.1%} (s.e. {se:.1%}) | "
            f"{hits[0.0] / args.runs:.2%} | {time.time() - started:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
