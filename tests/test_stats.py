import numpy as np
from scipy import stats as st

from jaxkd import stats


def test_summarize_matches_scipy_t_interval():
    x = np.array([0.91, 0.93, 0.92, 0.95, 0.90, np.nan])
    s = stats.summarize(x)
    clean = x[:-1]
    lo, hi = st.t.interval(0.95, len(clean) - 1, loc=clean.mean(), scale=st.sem(clean))
    assert s["n"] == 5
    np.testing.assert_allclose([s["mean"], s["std"], s["ci_low"], s["ci_high"]],
                               [clean.mean(), clean.std(ddof=1), lo, hi], rtol=1e-12)


def test_paired_and_welch_tests():
    rng = np.random.default_rng(0)
    a = rng.normal(1.0, 1.0, 30)
    b = a - 0.5 + rng.normal(0, 0.1, 30)
    p = stats.paired_test(a, b)
    assert p["p"] < 1e-10 and 4 < p["cohens_dz"] < 6 and p["diff_ci_low"] < 0.5 < p["diff_ci_high"]
    np.testing.assert_allclose(p["t"], st.ttest_rel(a, b).statistic)
    w = stats.welch_test(a, b)
    np.testing.assert_allclose(w["t"], st.ttest_ind(a, b, equal_var=False).statistic)
    assert 0 < w["hedges_g"] < 1


def test_holm():
    np.testing.assert_allclose(stats.holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])


def test_power_law_fit_recovers_exponent():
    x = np.logspace(1, 4, 30)
    fit = stats.fit_power_law(x, 3.0 * x**-0.7)
    np.testing.assert_allclose([fit["exponent"], fit["coef"], fit["r2"]], [-0.7, 3.0, 1.0], rtol=1e-10)


def test_bootstrap_ci_contains_mean():
    x = np.random.default_rng(1).normal(2.0, 1.0, 50)
    lo, hi = stats.bootstrap_ci(x)
    assert lo < x.mean() < hi and hi - lo < 1.0
