"""Statistics of vitrina.experiments checked against scipy / statsmodels on the same inputs."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportions_ztest

from vitrina.experiments.bootstrap import bootstrap_quantile_test
from vitrina.experiments.design import achievable_mde, power_at, required_units
from vitrina.experiments.multiple import benjamini_hochberg, holm
from vitrina.experiments.sequential import (
    look_estimates,
    msprt,
    pocock_spending,
    rerandomised_z,
    spending_test,
)
from vitrina.experiments.srm import srm_test
from vitrina.experiments.stats import (
    MeanStats,
    PairStats,
    cuped_test,
    cuped_theta,
    ratio_test,
    two_proportion_test,
    welch_test,
)

RNG = np.random.default_rng(7)


def test_welch_matches_scipy() -> None:
    a, b = RNG.exponential(1.0, 300), RNG.exponential(1.2, 500)
    ours = welch_test(MeanStats.from_values(a), MeanStats.from_values(b))
    ref = sps.ttest_ind(b, a, equal_var=False)
    assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    ci = ref.confidence_interval(0.95)
    assert (ours.ci_low, ours.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-9)


def test_two_proportions_match_statsmodels() -> None:
    a, b = (RNG.random(4000) < 0.10).astype(float), (RNG.random(5000) < 0.11).astype(float)
    ours = two_proportion_test(MeanStats.from_values(a), MeanStats.from_values(b))
    _, p = proportions_ztest([b.sum(), a.sum()], [b.size, a.size])
    assert ours.p_value == pytest.approx(p, rel=1e-9)


def test_sufficient_stats_are_summable_and_vectorised() -> None:
    x = RNG.normal(size=(3, 100))
    whole = MeanStats.from_values(x)
    parts = MeanStats.from_values(x[:, :40]) + MeanStats.from_values(x[:, 40:])
    np.testing.assert_allclose(whole.mean, parts.mean)
    np.testing.assert_allclose(whole.var, parts.var)
    y = x + RNG.normal(size=x.shape)
    pair = PairStats.from_values(x[:, :30], y[:, :30]) + PairStats.from_values(x[:, 30:], y[:, 30:])
    full = PairStats.from_values(x, y)
    np.testing.assert_allclose([pair.cxx, pair.cyy, pair.cxy], [full.cxx, full.cyy, full.cxy])
    p = welch_test(whole, MeanStats.from_values(x + 0.1)).p_value
    assert p.shape == (3,)


def test_ratio_delta_method_matches_linearisation() -> None:
    den_c, den_t = RNG.poisson(20, 2000) + 1, RNG.poisson(20, 2000) + 1
    num_c, num_t = RNG.binomial(den_c, 0.05), RNG.binomial(den_t, 0.055)
    res = ratio_test(PairStats.from_values(num_c, den_c), PairStats.from_values(num_t, den_t))
    r_c, r_t = num_c.sum() / den_c.sum(), num_t.sum() / den_t.sum()
    se = np.sqrt(
        np.var((num_c - r_c * den_c) / den_c.mean(), ddof=1) / 2000
        + np.var((num_t - r_t * den_t) / den_t.mean(), ddof=1) / 2000
    )
    assert res.effect == pytest.approx(r_t - r_c)
    assert res.se == pytest.approx(se, rel=1e-9)


def test_cuped_reduces_variance_and_matches_regression() -> None:
    pre = RNG.gamma(2, 1, 4000)
    y = 0.8 * pre + RNG.normal(0, 1, 4000)
    arm = RNG.random(4000) < 0.5
    c, t = PairStats.from_values(pre[~arm], y[~arm]), PairStats.from_values(pre[arm], y[arm])
    adjusted, plain = cuped_test(c, t), welch_test(c.y, t.y)
    rho = np.corrcoef(pre, y)[0, 1]
    assert adjusted.se**2 / plain.se**2 == pytest.approx(1 - rho**2, rel=0.05)


def test_holm_and_bh_match_statsmodels() -> None:
    p = RNG.random(12) ** 3
    np.testing.assert_allclose(holm(p), multipletests(p, method="holm")[1])
    np.testing.assert_allclose(benjamini_hochberg(p), multipletests(p, method="fdr_bh")[1])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=20))
def test_adjusted_pvalues_dominate_raw(p: list[float]) -> None:
    assert np.all(holm(p) >= np.asarray(p) - 1e-12)
    assert np.all(benjamini_hochberg(p) >= np.asarray(p) - 1e-12)
    assert np.all(holm(p) >= benjamini_hochberg(p) - 1e-12)


def test_srm_matches_chisquare_and_flags_mismatch() -> None:
    res = srm_test({"control": 7100, "treatment": 2900}, {"control": 0.7, "treatment": 0.3})
    ref = sps.chisquare([7100, 2900], [7000, 3000])
    assert res.p_value == pytest.approx(ref.pvalue)
    assert not res.mismatch
    assert srm_test({"control": 5300, "treatment": 4700}, {"control": 0.5, "treatment": 0.5}).mismatch
    with pytest.raises(ValueError, match="differ from the designed"):
        srm_test({"control": 1, "b": 2}, {"control": 0.5, "treatment": 0.5})


def test_bootstrap_median_interval_covers_truth() -> None:
    a, b = RNG.exponential(1.0, 800), RNG.exponential(1.0, 800) + 0.3
    res = bootstrap_quantile_test(a, b, q=0.5, n_resamples=500)
    assert res.ci_low < 0.3 < res.ci_high
    assert res.p_value < 0.01


def test_sample_size_inverts_mde_and_gives_power() -> None:
    n = required_units(0.05, 1.3, 0.05, 0.8, share_factor=1 / 0.7 + 1 / 0.3)
    assert achievable_mde(n, 1.3, 0.05, 0.8, 1 / 0.7 + 1 / 0.3) == pytest.approx(0.05)
    assert power_at(0.05, n, 1.3, 0.05, 1 / 0.7 + 1 / 0.3) == pytest.approx(0.8, abs=1e-3)


def _trajectories(rng: np.random.Generator, n: int, looks: int) -> tuple[np.ndarray, np.ndarray]:
    """Heavy-tailed cumulative per-unit counts; units enter on a random look."""
    present = (np.arange(looks) >= rng.integers(0, looks, n)[:, None]).astype(float)
    return np.cumsum(rng.pareto(1.5, (n, looks)) * present, axis=1), present


def test_rerandomised_spending_test_is_exact_under_daily_peeking() -> None:
    rng = np.random.default_rng(3)
    p, naive, p_lift = [], [], []
    for _ in range(400):
        x, present = _trajectories(rng, 120, 7)
        treated = rng.random(120) < 0.5
        z = rerandomised_z(treated, x, present, 0.5, rng, n_draws=199)
        p.append(spending_test(z, planned_looks=7).p_value[-1])
        naive.append(bool((np.abs(z[0]) > 1.96).any()))
        lifted = x + 3.0 * np.cumsum(present, axis=1) * treated[:, None]
        p_lift.append(spending_test(rerandomised_z(treated, lifted, present, 0.5, rng, 199), 7).p_value[-1])
    p_arr = np.array(p)
    assert np.mean(naive) > 0.1  # peeking with a fixed-horizon test inflates errors
    assert abs(np.mean(p_arr < 0.05) - 0.05) < 0.025
    assert sps.kstest(p_arr, "uniform").pvalue > 0.05
    assert np.mean(np.array(p_lift) < 0.05) > 0.8


def test_rerandomised_p_value_matches_exact_enumeration() -> None:
    rng = np.random.default_rng(5)
    present = np.ones((10, 3))
    treated = np.arange(10) % 2 == 0
    x = np.cumsum(rng.pareto(1.5, (10, 3)), axis=1) + np.arange(1, 4) * treated[:, None]
    labels = (np.arange(1024)[:, None] >> np.arange(10)) & 1  # every 50/50 Bernoulli assignment
    labels = np.vstack([treated, labels[~(labels == treated).all(axis=1)]])
    with np.errstate(divide="ignore", invalid="ignore"):
        exact_z = [np.asarray(e.effect) / e.se for e in (look_estimates(lab, x, present) for lab in labels)]
    exact = spending_test(np.nan_to_num(np.array(exact_z)), planned_looks=3)
    sampled = spending_test(rerandomised_z(treated, x, present, 0.5, rng, n_draws=20_000), planned_looks=3)
    np.testing.assert_allclose(sampled.z, exact.z)
    np.testing.assert_allclose(sampled.p_value, exact.p_value, atol=0.005)
    assert exact.p_value[1] > 0.05 > exact.p_value[2]  # crosses the boundary at the last look


def test_spending_test_interim_looks_and_boundary() -> None:
    z = np.random.default_rng(9).standard_normal((30, 501, 10)).cumsum(axis=-1)
    z /= np.sqrt(np.arange(1, 11))
    z[:5, 0, 3:] += 3.5  # planted crossings from look 4 on
    full = spending_test(z, planned_looks=14)
    interim = spending_test(z[..., :6], planned_looks=14)
    np.testing.assert_array_equal(interim.p_value, full.p_value[..., :6])
    np.testing.assert_array_equal(interim.boundary, full.boundary[..., :6])
    crossed = np.maximum.accumulate(np.abs(full.z) > full.boundary, axis=-1)
    np.testing.assert_array_equal(crossed, full.p_value < 0.05)
    assert full.rejected[:5].all()
    assert np.all(full.p_value[~crossed] > 0.05)
    assert float(pocock_spending(1.0)) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="planned looks"):
        spending_test(z, planned_looks=5)
    with pytest.raises(ValueError, match="cannot reach alpha"):
        spending_test(z[:, :10], planned_looks=14)


def test_msprt_controls_error_under_daily_peeking() -> None:
    rng = np.random.default_rng(3)
    daily = rng.standard_normal((3000, 28, 2, 50)).sum(-1)
    cum = np.cumsum(daily, axis=1)
    n = np.arange(1, 29) * 50
    effect, var = (cum[..., 1] - cum[..., 0]) / n, 2 / n
    assert msprt(effect, var, tau=0.1).rejected.mean() <= 0.05


def test_msprt_confidence_sequence_shrinks_and_covers() -> None:
    res = msprt(np.full(10, 0.2), 1.0 / np.arange(1, 11) ** 2, tau=0.2)
    assert np.all(np.diff(res.ci_high - res.ci_low) <= 1e-12)
    assert res.ci_low[-1] < 0.2 < res.ci_high[-1]


def test_sample_size_matches_statsmodels_normal_ind_power() -> None:
    """The audit's cross-check: total units against NormalIndPower (which adds the far tail's power)."""
    from statsmodels.stats.power import NormalIndPower

    for share_t, mde, sd, power in [(0.5, 0.1, 1.0, 0.8), (0.3, 0.05, 1.3, 0.9), (0.2, 0.4, 2.0, 0.8)]:
        n_control = NormalIndPower().solve_power(
            effect_size=mde / sd, alpha=0.05, power=power, ratio=share_t / (1 - share_t)
        )
        total = n_control / (1 - share_t)
        ours = required_units(mde, sd, 0.05, power, 1 / (1 - share_t) + 1 / share_t)
        assert ours == pytest.approx(total, rel=1e-3)


def test_cuped_matches_ancova_with_hc2_errors() -> None:
    """The audit's cross-check: CUPED theta and effect equal the ANCOVA coefficients, its SE the HC2 one."""
    import statsmodels.api as sm

    pre = RNG.gamma(2, 1, 6000)
    arm = RNG.random(6000) < 0.4
    y = 0.7 * pre + 0.15 * arm + RNG.normal(0, 1 + 0.3 * arm, 6000)
    c, t = PairStats.from_values(pre[~arm], y[~arm]), PairStats.from_values(pre[arm], y[arm])
    est = cuped_test(c, t)
    x = np.column_stack([np.ones(6000), arm, pre - pre.mean()])
    fit = sm.OLS(y, x).fit(cov_type="HC2")
    assert float(cuped_theta(c, t)) == pytest.approx(fit.params[2], rel=1e-12)
    assert float(est.effect) == pytest.approx(fit.params[1], rel=1e-10)
    assert float(est.se) == pytest.approx(fit.bse[1], rel=5e-3)
