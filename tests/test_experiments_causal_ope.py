"""Difference-in-differences, synthetic control and off-policy evaluation on simulations with known truth."""

import numpy as np
import polars as pl
import pytest
import statsmodels.api as sm

from vitrina.errors import DataValidationError
from vitrina.experiments.causal import (
    FewClustersWarning,
    diff_in_diff,
    synthetic_control,
    synthetic_weights,
    wild_cluster_bootstrap,
)
from vitrina.experiments.ope import doubly_robust, epsilon_greedy, ips, snips, softmax_sample


def _panel(effect: float, pre_trend: float, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    units, periods = 60, 10
    u = np.repeat(np.arange(units), periods)
    t = np.tile(np.arange(periods), units)
    treated = (u < 30).astype(float)
    post = (t >= 6).astype(float)
    unit_fe = rng.normal(0, 2, units)[u]
    shock = rng.normal(0, 1, units)[u] * 0.5  # within-unit correlated noise -> clustering matters
    y = (
        unit_fe
        + 0.3 * t
        + pre_trend * treated * t
        + effect * treated * post
        + shock
        + rng.normal(0, 1, u.size)
    )
    return pl.DataFrame({"unit": u, "period": t, "y": y, "treated": treated, "post": post})


def test_did_recovers_known_effect_with_parallel_trends() -> None:
    res = diff_in_diff(_panel(1.5, 0.0, 0))
    assert res.ci_low < 1.5 < res.ci_high and res.p_value < 0.01
    assert res.pretrend_ok and res.n_clusters == 60


def test_did_pretrend_check_flags_diverging_trends() -> None:
    assert not diff_in_diff(_panel(0.0, 0.5, 1)).pretrend_ok


def test_did_rejects_missing_columns() -> None:
    with pytest.raises(DataValidationError, match="missing column"):
        diff_in_diff(_panel(1.0, 0.0, 2).drop("post"))


def test_synthetic_control_recovers_effect_and_weights() -> None:
    rng = np.random.default_rng(3)
    t, j = 40, 12
    controls = np.cumsum(rng.normal(0, 1, (t, j)), axis=0) + rng.normal(10, 3, j)
    true_w = np.zeros(j)
    true_w[[0, 3, 7]] = [0.5, 0.3, 0.2]
    treated = controls @ true_w + rng.normal(0, 0.05, t)
    treated[30:] += 4.0
    res = synthetic_control(treated, controls, n_pre=30)
    assert res.effect == pytest.approx(4.0, abs=0.3)
    np.testing.assert_allclose(res.weights, true_w, atol=0.05)
    assert res.weights.min() >= 0 and res.weights.sum() == pytest.approx(1.0)
    assert res.placebo_p_value <= 1 / 13 + 1e-9
    with pytest.raises(DataValidationError, match="controls_pre"):
        synthetic_weights(treated[:30], controls[:20])


def test_ope_estimates_cover_ground_truth() -> None:
    rng = np.random.default_rng(4)
    n, k = 20_000, 5
    x = rng.normal(size=(n, 2))
    true_mean = 1 / (1 + np.exp(-(x @ rng.normal(size=(2, k)) + np.linspace(-1, 1, k))))
    scores = np.column_stack([x[:, 0] * (a - 2) for a in range(k)])
    actions, props = np.empty(n, dtype=int), np.empty(n)
    for i in range(n):
        actions[i], props[i] = softmax_sample(np.arange(k), scores[i], 1.0, rng)
    reward = rng.random(n) < true_mean[np.arange(n), actions]
    new_policy = np.eye(k)[np.argmax(true_mean - 0.1 * x[:, [1]], axis=1)]  # deterministic target
    truth = float(np.sum(new_policy * true_mean, axis=1).mean())
    target_prob = new_policy[np.arange(n), actions]
    q = true_mean + rng.normal(0, 0.05, true_mean.shape)  # an imperfect reward model
    estimates = [
        ips(target_prob, props, reward),
        snips(target_prob, props, reward),
        doubly_robust(target_prob, props, reward, q[np.arange(n), actions], np.sum(new_policy * q, axis=1)),
    ]
    for est in estimates:
        assert est.ci_low < truth < est.ci_high
    assert estimates[2].se < estimates[0].se


def test_exploration_policies_log_correct_propensities() -> None:
    rng = np.random.default_rng(5)
    picks = [epsilon_greedy(["a", "b", "c", "d"], 0.2, rng) for _ in range(20_000)]
    freq = np.mean([item == "a" for item, _ in picks])
    assert dict(picks)["a"] == pytest.approx(0.85) and dict(picks)["b"] == pytest.approx(0.05)
    assert freq == pytest.approx(0.85, abs=0.01)
    item, p = softmax_sample(["x", "y"], [0.0, np.log(3.0)], 1.0, rng)
    assert p == pytest.approx(0.75 if item == "y" else 0.25)
    with pytest.raises(DataValidationError, match="epsilon"):
        epsilon_greedy([], 0.1, rng)
    with pytest.raises(DataValidationError, match="propensities"):
        ips([1.0, 1.0], [0.0, 0.5], [1.0, 0.0])


def test_did_matches_statsmodels_cluster_t_with_g_minus_1_dof() -> None:
    df = _panel(0.4, 0.0, 3)
    res = diff_in_diff(df)
    y = df["y"].to_numpy()
    u, t = df["unit"].to_numpy(), df["period"].to_numpy()
    d = (df["treated"] * df["post"]).to_numpy()
    x = np.column_stack([d, np.ones_like(y), np.eye(60)[u][:, 1:], np.eye(10)[t][:, 1:]])
    ref = sm.OLS(y, x).fit(cov_type="cluster", cov_kwds={"groups": u}, use_t=True)
    assert res.se == pytest.approx(float(ref.bse[0]), rel=1e-9)
    assert res.p_value == pytest.approx(float(ref.pvalues[0]), rel=1e-9)
    assert (res.ci_low, res.ci_high) == pytest.approx(tuple(ref.conf_int()[0]), rel=1e-9)


def test_did_few_clusters_warns_and_wild_bootstrap_is_consistent() -> None:
    df = _panel(1.0, 0.0, 4).filter(pl.col("unit").is_in([0, 1, 2, 3, 30, 31, 32, 33]))
    with pytest.warns(FewClustersWarning, match="8 clusters"):
        res = diff_in_diff(df, inference="wild", n_draws=1999)
    assert res.n_clusters == 8 and res.n_treated_clusters == 4
    assert res.ci_low < res.effect < res.ci_high
    # the interval inverts the bootstrap test: its bounds are where the p-value crosses alpha
    y, u, t = df["y"].to_numpy(), df["unit"].to_numpy(), df["period"].to_numpy()
    d = (df["treated"] * df["post"]).to_numpy()
    for bound in (res.ci_low, res.ci_high):
        shifted = y - bound * d
        p_at, _, _ = wild_cluster_bootstrap(
            shifted, d, np.unique(u, return_inverse=True)[1], t, n_draws=1999, interval=False
        )
        assert p_at == pytest.approx(0.05, abs=0.01)
    assert (res.p_value < 0.05) == (res.ci_low > 0 or res.ci_high < 0)


def test_did_event_study_and_pretrend_interval() -> None:
    flat = diff_in_diff(_panel(1.5, 0.0, 5))
    es = flat.event_study
    assert es.reference == 5.0 and 5.0 not in es.periods
    leads, lags = es.effect[es.periods < 5], es.effect[es.periods > 5]
    assert np.all(np.abs(leads) < 1.0) and np.all(lags > 0.5)
    for slope in (0.0, 0.15):  # the interval covers the true differential pre-trend
        fits = [diff_in_diff(_panel(0.0, slope, seed)) for seed in range(40)]
        covered = np.mean([f.pretrend_ci_low < slope < f.pretrend_ci_high for f in fits])
        assert covered >= 0.85
