"""A/A false-positive rate of difference-in-differences with few clusters (issue 13, point 11).

Panels of 8 units x 10 periods (treatment from period 6 on, no effect): unit effects, a common trend,
iid noise plus a per-unit random walk of scale ``--walk`` (serially correlated errors, the case
clustering is for). Rejections at 5% of the CR1 t(G-1) test and of the restricted wild cluster
bootstrap (Webb weights, 999 draws)::

    python benchmarks/did_aa.py --sims 2000 --treated 4 --walk 0.5
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import polars as pl

from vitrina.experiments.causal import FewClustersWarning, diff_in_diff, wild_cluster_bootstrap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=2000)
    parser.add_argument("--units", type=int, default=8)
    parser.add_argument("--treated", type=int, default=4)
    parser.add_argument("--walk", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    warnings.simplefilter("ignore", FewClustersWarning)
    rng = np.random.default_rng(args.seed)
    periods = 10
    u = np.repeat(np.arange(args.units), periods)
    t = np.tile(np.arange(periods), args.units)
    treated = (u < args.treated).astype(float)
    post = (t >= 6).astype(float)
    rejected_t = rejected_wild = 0
    start = time.perf_counter()
    for s in range(args.sims):
        walk = rng.normal(size=(args.units, periods)).cumsum(axis=1).ravel()
        y = rng.normal(0, 2, args.units)[u] + 0.3 * t + rng.normal(0, 1, u.size) + args.walk * walk
        df = pl.DataFrame({"unit": u, "period": t, "y": y, "treated": treated, "post": post})
        rejected_t += diff_in_diff(df).p_value < 0.05
        p, _, _ = wild_cluster_bootstrap(y, treated * post, u, t, n_draws=999, seed=s, interval=False)
        rejected_wild += p < 0.05
    se = np.sqrt(0.05 * 0.95 / args.sims)
    print(
        f"{args.units} clusters ({args.treated} treated), walk {args.walk}, {args.sims} A/A panels: "
        f"t(G-1) {rejected_t / args.sims:.2%}, wild bootstrap {rejected_wild / args.sims:.2%} "
        f"(MC s.e. at 5%: {se:.2%}); {time.perf_counter() - start:.0f} s"
    )


if __name__ == "__main__":
    main()
