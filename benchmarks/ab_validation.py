"""Validate vitrina.experiments on real user activity: A/A false-positive rates, power, CUPED variance.

Users active in a 28-day window of ml-1m (users 1-2999 with timestamps) are resampled with
replacement into simulated experiments; each run assigns them to arms at random. Engagement is
ratings per user (cumulative by day, users enter on their first active day in the window); CUPED
uses the same metric in the 14 days before the window; the ratio metric is "liked" ratings (>= 4)
over all ratings per user (delta method). All runs are vectorised: per-run sufficient statistics are
matrix products of a (runs x users) count matrix with per-user values. The daily-looks test
re-randomises the arm labels of each run's resampled users ``--draws`` times (its own random stream,
so the other numbers do not depend on ``--draws``).

    python benchmarks/ab_validation.py --runs 4000 --seed 0 --draws 500
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import polars as pl
from scipy import stats as sps

from vitrina.experiments.design import power_at, required_units
from vitrina.experiments.sequential import msprt, rerandomised_z, spending_test
from vitrina.experiments.stats import (
    MeanStats,
    PairStats,
    cuped_test,
    ratio_test,
    two_proportion_test,
    welch_test,
)

DATA = Path("/work/shared/datasets/ml-1m/ratings_users_0001-2999.dat.gz")
DAY = 86_400
START = 975_628_800  # 2000-12-01 00:00 UTC
DAYS, PRE_DAYS, ALPHA = 28, 14, 0.05


def load_users() -> dict[str, np.ndarray]:
    """Per-user daily cumulative ratings/likes in the window, entry mask, and the pre-period covariate."""
    raw = pl.read_csv(DATA, has_header=False, separator="\t", new_columns=["line"])
    df = raw.select(
        pl.col("line").str.split_exact("::", 3).struct.rename_fields(["u", "m", "r", "t"])
    ).unnest("line")
    df = df.with_columns(pl.all().cast(pl.Int64)).with_columns(((pl.col("t") - START) // DAY).alias("day"))
    window = df.filter(pl.col("day").is_between(0, DAYS - 1))
    users = np.sort(window["u"].unique().to_numpy())
    pos = np.searchsorted(users, window["u"].to_numpy())
    day = window["day"].to_numpy()
    ratings = np.zeros((users.size, DAYS))
    likes = np.zeros((users.size, DAYS))
    np.add.at(ratings, (pos, day), 1.0)
    np.add.at(likes, (pos, day), (window["r"].to_numpy() >= 4).astype(float))
    pre = df.filter(pl.col("day").is_between(-PRE_DAYS, -1) & pl.col("u").is_in(users.tolist()))
    covariate = np.zeros(users.size)
    np.add.at(covariate, np.searchsorted(users, pre["u"].to_numpy()), 1.0)
    entered = np.cumsum(ratings, axis=1) > 0
    return {
        "ratings": np.cumsum(ratings, axis=1),
        "likes": np.cumsum(likes, axis=1),
        "entered": entered.astype(float),
        "pre": covariate,
    }


def draw_runs(
    rng: np.random.Generator, runs: int, n_units: int, size: int, share_t: float
) -> tuple[np.ndarray, np.ndarray]:
    """(runs x size) resampled user indices and their Bernoulli treatment labels."""
    return rng.integers(0, n_units, (runs, size)), rng.random((runs, size)) < share_t


def arm_counts(idx: np.ndarray, treat: np.ndarray, n_units: int) -> tuple[np.ndarray, np.ndarray]:
    """(runs x users) counts of each resampled user in control and in treatment."""
    runs = idx.shape[0]
    flat = idx + n_units * np.arange(runs)[:, None]
    ct = np.bincount(flat[treat], minlength=runs * n_units).reshape(runs, n_units).astype(float)
    cc = np.bincount(flat[~treat], minlength=runs * n_units).reshape(runs, n_units).astype(float)
    return cc, ct


def mean_stats(counts: np.ndarray, values: np.ndarray, present: np.ndarray) -> MeanStats:
    """Per-run statistics; ``values``/``present`` are (users,) or (users, looks)."""
    return MeanStats(n=counts @ present, sum=counts @ values, sum_sq=counts @ (values * values))


def pair_stats(counts: np.ndarray, x: np.ndarray, y: np.ndarray) -> PairStats:
    """Per-run paired statistics over all resampled users."""
    return PairStats(
        n=counts.sum(axis=1),
        sum_x=counts @ x,
        sum_y=counts @ y,
        sum_xx=counts @ (x * x),
        sum_yy=counts @ (y * y),
        sum_xy=counts @ (x * y),
    )


def daily_looks(
    idx: np.ndarray,
    treat: np.ndarray,
    values: np.ndarray,
    entered: np.ndarray,
    draws: int,
    seed: int,
    lift: float = 0.0,
) -> np.ndarray:
    """(runs x days) p-values of the re-randomisation daily-looks test; treated values times 1 + lift.

    Each resampled user is one unit with its whole daily trajectory; units are ordered by entry day.
    """
    rng = np.random.default_rng([seed, 1])
    days = values.shape[1]
    p = np.empty((idx.shape[0], days))
    batch = 100
    for lo in range(0, idx.shape[0], batch):
        z = np.empty((min(batch, idx.shape[0] - lo), draws + 1, days))
        for j in range(z.shape[0]):
            order = np.argsort(entered[idx[lo + j]].argmax(axis=1), kind="stable")
            units = idx[lo + j][order]
            labels = treat[lo + j][order]
            x = values[units] * (1 + lift * labels[:, None])
            z[j] = rerandomised_z(labels, x, entered[units], 0.5, rng, draws)
        p[lo : lo + z.shape[0]] = spending_test(z, days, ALPHA).p_value
    return p


def row(name: str, p: np.ndarray, note: str = "") -> str:
    """Table row: false-positive rate, KS uniformity p-value."""
    fpr = float(np.mean(p < ALPHA))
    ks = sps.kstest(p, "uniform").pvalue
    ok = "ok" if 0.04 <= fpr <= 0.06 and ks > 0.05 else "CHECK"
    return f"| {name} | {fpr:.2%} | {ks:.3f} | {ok} {note} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--draws", type=int, default=500, help="re-randomisations per run (daily looks)")
    args = parser.parse_args()
    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    u = load_users()
    final, likes, pre, entered = u["ratings"][:, -1], u["likes"][:, -1], u["pre"], u["entered"]
    n_units = final.size
    ones = np.ones(n_units)
    print(f"population: {n_units} users active 2000-12-01 + {DAYS} days; runs = {args.runs}")
    print(f"ratings/user: mean {final.mean():.2f}, sd {final.std():.2f}, max {final.max():.0f}\n")

    idx, treat = draw_runs(rng, args.runs, n_units, n_units, 0.5)
    cc, ct = arm_counts(idx, treat, n_units)
    print("## A/A (50/50, resampled users)\n")
    print("| analysis | false-positive rate (alpha 5%) | KS uniform p | verdict |\n|---|---|---|---|")
    plain = welch_test(mean_stats(cc, final, ones), mean_stats(ct, final, ones), ALPHA)
    print(row("Welch t, ratings per user", plain.p_value))
    cup = cuped_test(pair_stats(cc, pre, final), pair_stats(ct, pre, final), ALPHA)
    print(row("CUPED Welch (pre-period ratings)", cup.p_value))
    ratio = ratio_test(pair_stats(cc, likes, final), pair_stats(ct, likes, final), ALPHA)
    print(row("delta-method ratio, liked / rated", ratio.p_value))
    heavy = (final >= np.median(final)).astype(float)
    prop = two_proportion_test(mean_stats(cc, heavy, ones), mean_stats(ct, heavy, ones), ALPHA)
    print(row("two-proportion, heavy user", prop.p_value))

    daily = welch_test(mean_stats(cc, u["ratings"], entered), mean_stats(ct, u["ratings"], entered), ALPHA)
    var = np.asarray(daily.se) ** 2
    seq = daily_looks(idx, treat, u["ratings"], entered, args.draws, args.seed)
    print(row(f"re-randomised spending test, {DAYS} daily looks ({args.draws} draws)", seq[:, -1]))
    tau = 0.1 * final.mean()
    ms = msprt(daily.effect, var, tau, ALPHA)
    fpr_ms = float(np.mean(ms.rejected))
    print(
        f"| mSPRT always-valid, 28 daily looks (tau = 10% of mean) | {fpr_ms:.2%} | - | "
        f"{'ok' if fpr_ms <= 0.06 else 'CHECK'} (<= alpha by design, conservative) |"
    )
    naive = float(np.mean((np.asarray(daily.p_value) < ALPHA).any(axis=1)))
    print(f"| naive Welch peeked daily (what NOT to do) | {naive:.2%} | - | inflated, as expected |")

    m, lift = min(args.runs, 1000), 0.2
    print(f"\n## Daily looks with a +{lift:.0%} lift on treated users' ratings (first {m} runs)\n")
    print("| test | power | mean day of the decision (rejections) |\n|---|---|---|")
    fixed = welch_test(mean_stats(cc[:m], final, ones), mean_stats(ct[:m], (1 + lift) * final, ones), ALPHA)
    print(f"| Welch at day {DAYS} only (no peeking) | {np.mean(fixed.p_value < ALPHA):.1%} | {DAYS} |")
    seq_l = daily_looks(idx[:m], treat[:m], u["ratings"], entered, args.draws, args.seed, lift) < ALPHA
    day = seq_l.argmax(axis=1)[seq_l[:, -1]] + 1
    print(f"| re-randomised spending test, daily | {seq_l[:, -1].mean():.1%} | {day.mean():.1f} |")
    lifted = mean_stats(ct[:m], (1 + lift) * u["ratings"], entered)
    d = welch_test(mean_stats(cc[:m], u["ratings"], entered), lifted, ALPHA)
    ms_l = msprt(d.effect, np.asarray(d.se) ** 2, tau, ALPHA).p_value < ALPHA
    day = ms_l.argmax(axis=1)[ms_l[:, -1]] + 1
    print(f"| mSPRT, daily (tau = 10% of mean) | {ms_l[:, -1].mean():.1%} | {day.mean():.1f} |")

    rho = np.corrcoef(pre, final)[0, 1]
    observed = float(np.var(cup.effect) / np.var(plain.effect))
    print("\n## CUPED variance reduction\n")
    print(
        f"rho(pre, metric) = {rho:.3f}; predicted var ratio 1 - rho^2 = {1 - rho**2:.3f}; "
        f"observed var(CUPED effect) / var(plain effect) over runs = {observed:.3f}"
    )

    print("\n## Power (effect added to treated users' ratings)\n")
    print("| split | metric | MDE (abs) | designed units | designed power | simulated power | verdict |")
    print("|---|---|---|---|---|---|---|")
    sd = final.std(ddof=1)
    for share_t, target in [(0.5, 0.8), (0.3, 0.8), (0.5, 0.9)]:
        factor = 1 / (1 - share_t) + 1 / share_t
        mde = 0.2 * final.mean()
        n = int(np.ceil(required_units(mde, sd, ALPHA, target, factor)))
        designed = power_at(mde, n, sd, ALPHA, factor)
        cc2, ct2 = arm_counts(*draw_runs(rng, args.runs, n_units, n, share_t), n_units)
        shifted = welch_test(mean_stats(cc2, final, ones), mean_stats(ct2, final + mde, ones), ALPHA)
        power = float(np.mean(shifted.p_value < ALPHA))
        ok = "ok" if abs(power - designed) <= 0.03 else "CHECK"
        print(
            f"| {1 - share_t:.0%}/{share_t:.0%} | ratings/user | {mde:.2f} | {n} | {designed:.1%} | "
            f"{power:.1%} | {ok} |"
        )
    rho2 = 1 - rho**2
    n = int(np.ceil(required_units(0.2 * final.mean(), sd * np.sqrt(rho2), ALPHA, 0.8)))
    cc2, ct2 = arm_counts(*draw_runs(rng, args.runs, n_units, n, 0.5), n_units)
    shifted = cuped_test(pair_stats(cc2, pre, final), pair_stats(ct2, pre, final + 0.2 * final.mean()), ALPHA)
    power = float(np.mean(shifted.p_value < ALPHA))
    print(
        f"| 50/50 | ratings/user, CUPED-sized | {0.2 * final.mean():.2f} | {n} | 80.0% | {power:.1%} | "
        f"{'ok' if abs(power - 0.8) <= 0.03 else 'CHECK'} |"
    )
    print(f"\nruntime {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
