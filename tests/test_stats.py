"""Statistics against published values and formulas written out by hand.

Fixed data: Student's sleep data (Cushny & Peebles 1905; R's ``datasets::sleep``), extra hours of
sleep of 10 patients under two drugs. The expected numbers are R's printed output for
``t.test(extra ~ group, data = sleep)`` (Welch), ``t.test(..., paired = TRUE)`` and
``t.test(sleep$extra[1:10])``, to R's printed precision.
"""

import numpy as np
import pytest

from jaxkd import stats

DRUG1 = np.array([0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0])
DRUG2 = np.array([1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4])


def test_summarize_matches_r_one_sample_interval():
    s = stats.summarize(np.append(DRUG1, np.nan))  # the NaN (a diverged seed) is dropped
    assert s["n"] == 10
    np.testing.assert_allclose(s["mean"], 0.75, rtol=1e-12)
    np.testing.assert_allclose(s["std"], 1.789010, rtol=1e-6)
    np.testing.assert_allclose([s["ci_low"], s["ci_high"]], [-0.5297804, 2.0297804], atol=1e-7)
    one = stats.summarize([3.0])
    assert one["n"] == 1 and np.isnan(one["ci_low"]) and np.isnan(one["std"])


def test_paired_test_matches_r():
    p = stats.paired_test(DRUG1, DRUG2)
    np.testing.assert_allclose(p["t"], -4.0621, atol=1e-4)
    np.testing.assert_allclose(p["p"], 0.002833, atol=1e-6)
    np.testing.assert_allclose([p["diff_ci_low"], p["diff_ci_high"]], [-2.4598858, -0.7001142], atol=1e-7)
    np.testing.assert_allclose(p["diff_mean"], -1.58, rtol=1e-12)
    # Cohen's d_z = mean(d) / sd(d), sd written out: sqrt(Σ(d - mean)² / (n - 1)).
    d = DRUG1 - DRUG2
    np.testing.assert_allclose(p["cohens_dz"], d.mean() / np.sqrt(((d - d.mean()) ** 2).sum() / 9), rtol=1e-12)
    np.testing.assert_allclose(p["cohens_dz"], -1.28456, atol=1e-5)


def test_welch_test_matches_r_and_hedges_g_its_formula():
    w = stats.welch_test(DRUG1, DRUG2)
    np.testing.assert_allclose(w["t"], -1.8608, atol=1e-4)
    np.testing.assert_allclose(w["df"], 17.776, atol=1e-3)
    np.testing.assert_allclose(w["p"], 0.07939, atol=1e-5)
    # Hedges' g = J (mean_a - mean_b) / s_pooled, s_pooled² = (SS_a + SS_b) / (n_a + n_b - 2),
    # J = 1 - 3 / (4 (n_a + n_b) - 9): by hand, SS_a = 28.805, SS_b = 36.081, so g = -0.79702.
    ss_a, ss_b = ((DRUG1 - 0.75) ** 2).sum(), ((DRUG2 - 2.33) ** 2).sum()
    np.testing.assert_allclose([ss_a, ss_b], [28.805, 36.081], rtol=1e-12)
    g = (0.75 - 2.33) / np.sqrt((ss_a + ss_b) / 18) * (1 - 3 / 71)
    np.testing.assert_allclose(w["hedges_g"], g, rtol=1e-12)
    np.testing.assert_allclose(w["hedges_g"], -0.79702, atol=1e-5)
    # g is an effect size of a - b: swapping the groups flips its sign, scaling both leaves it.
    np.testing.assert_allclose(stats.hedges_g(10 * DRUG2, 10 * DRUG1), -g, rtol=1e-12)


def test_holm_by_hand():
    # sorted p = 0.01, 0.03, 0.04 -> 3·0.01, max(0.03, 2·0.03), max(0.06, 1·0.04)
    np.testing.assert_allclose(stats.holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(stats.holm([0.5, 0.001]), [0.5, 0.002])


def test_power_law_fit_and_standard_error():
    x = np.logspace(1, 4, 30)
    fit = stats.fit_power_law(x, 3.0 * x**-0.7)
    np.testing.assert_allclose([fit["exponent"], fit["coef"], fit["r2"]], [-0.7, 3.0, 1.0], rtol=1e-10)
    # With noise: the slope's standard error against its formula sqrt(Σr² / (n - 2) / Σ(lx - mean)²).
    x = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    y = np.array([1.0, 0.55, 0.24, 0.13, 0.06])
    lx, ly = np.log(x), np.log(y)
    slope = ((lx - lx.mean()) * (ly - ly.mean())).sum() / ((lx - lx.mean()) ** 2).sum()
    resid = ly - ly.mean() - slope * (lx - lx.mean())
    se = np.sqrt((resid**2).sum() / 3 / ((lx - lx.mean()) ** 2).sum())
    fit = stats.fit_power_law(x, y)
    np.testing.assert_allclose([fit["exponent"], fit["exponent_se"]], [slope, se], rtol=1e-10)
    assert fit["n"] == 5 and np.isnan(stats.fit_power_law([2.0], [1.0])["exponent"])


def test_bootstrap_ci_agrees_with_t_interval_and_covers():
    """For a large normal sample the percentile bootstrap CI of the mean is close to the t interval
    (each end within 10% of the width); over 100 small samples it covers the true mean about 95%
    of the time (a wrong level, quantile or resampling would miss either check)."""
    rng = np.random.default_rng(3)
    x = rng.normal(2.0, 1.0, 400)
    lo, hi = stats.bootstrap_ci(x)
    s = stats.summarize(x)
    width = s["ci_high"] - s["ci_low"]
    assert abs(lo - s["ci_low"]) < 0.1 * width and abs(hi - s["ci_high"]) < 0.1 * width, (lo, hi, s)
    assert stats.bootstrap_ci(x, seed=0) == (lo, hi)  # seeded
    hits = 0
    for _ in range(100):
        lo, hi = stats.bootstrap_ci(rng.normal(0.0, 1.0, 30), n_resamples=1000)
        hits += lo < 0 < hi
    assert 85 <= hits <= 100, hits
    lo, hi = stats.bootstrap_ci(x, statistic=np.median, method="BCa")
    assert lo < np.median(x) < hi


@pytest.mark.parametrize("values", [[], [1.0], [np.nan, 2.0]])
def test_too_few_values_give_nan_not_errors(values):
    assert all(np.isnan(stats.bootstrap_ci(values)))
    assert np.isnan(stats.welch_test(values, [1.0, 2.0, 3.0])["t"])
