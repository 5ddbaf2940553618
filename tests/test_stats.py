"""Statistics against published values and formulas written out by hand.

Fixed data: Student's sleep data (Cushny & Peebles 1905; R's ``datasets::sleep``), extra hours of
sleep of 10 patients under two drugs. The expected numbers are R's printed output for
``t.test(extra ~ group, data = sleep)`` (Welch), ``t.test(..., paired = TRUE)`` and
``t.test(sleep$extra[1:10])``, to R's printed precision.
"""

import numpy as np
import pytest

from jaxkd import stats
from jaxkd.errors import ConfigError

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


# ---- permutation, Mann-Whitney, bootstrap of differences, corrected families -----------------------------


def _two_sided(null, t):
    """scipy's two-sided permutation p: min(1, 2 min(P[T <= t], P[T >= t])) over the exact null."""
    null, eps = np.asarray(null), 1e-12
    return min(1.0, 2 * min(np.mean(null <= t + eps), np.mean(null >= t - eps)))


def test_permutation_test_against_exact_enumeration():
    import itertools

    a, b = np.array([1.1, 2.3, 2.9, 4.0]), np.array([0.2, 0.9, 1.5, 1.6, 2.2])
    pooled = np.concatenate([a, b])
    null = []
    for idx in itertools.combinations(range(9), 4):  # every relabelling: C(9, 4) = 126
        m = np.zeros(9, bool)
        m[list(idx)] = True
        null.append(pooled[m].mean() - pooled[~m].mean())
    r = stats.permutation_test(a, b)
    np.testing.assert_allclose(r["statistic"], a.mean() - b.mean(), rtol=1e-12)
    np.testing.assert_allclose(r["p"], _two_sided(null, a.mean() - b.mean()), rtol=1e-12)
    assert 0.0 < r["p"] < 0.1 and (r["n_a"], r["n_b"]) == (4, 5)
    # Paired: every sign pattern of the differences, 2^6.
    x, y = np.array([2.0, 3.1, 1.7, 4.2, 2.8, 3.3]), np.array([1.5, 3.4, 1.1, 3.0, 2.6, 2.2])
    d = x - y
    null = [np.mean(np.array(s) * d) for s in itertools.product([-1, 1], repeat=6)]
    r = stats.permutation_test(x, y, paired=True)
    np.testing.assert_allclose(r["statistic"], d.mean(), rtol=1e-12)
    np.testing.assert_allclose(r["p"], _two_sided(null, d.mean()), rtol=1e-12)
    # One-sided alternative and Monte Carlo (fewer resamples than rearrangements) as scipy computes them.
    from scipy import stats as sst

    r = stats.permutation_test(DRUG1, DRUG2, n_resamples=999, seed=4, alternative="less")
    ref = sst.permutation_test(
        (DRUG1, DRUG2),
        lambda u, v: u.mean() - v.mean(),
        vectorized=False,
        n_resamples=999,
        alternative="less",
        rng=np.random.default_rng(4),
    )
    np.testing.assert_allclose([r["statistic"], r["p"]], [ref.statistic, ref.pvalue], rtol=1e-12)
    with pytest.raises(ConfigError, match="equal numbers of seeds"):
        stats.permutation_test(DRUG1, DRUG2[:5], paired=True)


def test_mann_whitney_matches_r_and_exact_enumeration():
    import itertools

    # R: wilcox.test(extra ~ group, data = sleep) -> W = 25.5, p-value = 0.06933 (ties: normal approx.).
    r = stats.mannwhitney_test(DRUG1, DRUG2)
    assert r["u"] == 25.5
    np.testing.assert_allclose(r["p"], 0.06933, atol=5e-6)
    # U by hand: pairs with a > b, ties counting one half.
    u = sum((x > y) + 0.5 * (x == y) for x in DRUG1 for y in DRUG2)
    np.testing.assert_allclose([r["u"], r["cles"]], [u, u / 100], rtol=1e-12)
    # No ties, small: the exact null of U over every assignment of ranks to group a.
    a, b = np.array([3.1, 4.7, 5.2, 6.0]), np.array([0.4, 1.9, 2.2, 3.5, 4.1])
    ranks = np.arange(1, 10)
    null = [ranks[list(c)].sum() - 4 * 5 / 2 for c in itertools.combinations(range(9), 4)]
    u_obs = sum(x > y for x in a for y in b)
    p = min(1.0, 2 * np.mean(np.array(null) >= max(u_obs, 20 - u_obs)))
    r = stats.mannwhitney_test(a, b)
    assert r["u"] == u_obs
    np.testing.assert_allclose(r["p"], p, rtol=1e-12)


def test_welch_ci_matches_r():
    # R: t.test(extra ~ group, data = sleep): 95 percent confidence interval -3.3654832 0.2054832.
    w = stats.welch_test(DRUG1, DRUG2)
    np.testing.assert_allclose([w["diff_ci_low"], w["diff_ci_high"]], [-3.3654832, 0.2054832], atol=1e-7)
    np.testing.assert_allclose(w["diff_mean"], -1.58, rtol=1e-12)


def test_bootstrap_diff_ci_pairs_and_matches_scipy():
    from scipy import stats as sst

    lo, hi = stats.bootstrap_diff_ci(DRUG1, DRUG2, paired=False, n_resamples=999, seed=1)
    ref = sst.bootstrap(
        (DRUG1, DRUG2),
        lambda u, v, axis: u.mean(axis) - v.mean(axis),
        n_resamples=999,
        method="percentile",
        rng=np.random.default_rng(1),
    )
    np.testing.assert_allclose([lo, hi], [ref.confidence_interval.low, ref.confidence_interval.high], rtol=1e-12)
    # Correlated pairs: the paired CI is about the paired t interval and much narrower than the unpaired
    # one, which is about Welch's (each end within 15 % of the t interval's width).
    rng = np.random.default_rng(5)
    base = rng.normal(0.0, 1.0, 200)
    a, b = base + 0.3 + rng.normal(0, 0.1, 200), base + rng.normal(0, 0.1, 200)
    pl, ph = stats.bootstrap_diff_ci(a, b, paired=True)
    ul, uh = stats.bootstrap_diff_ci(a, b, paired=False)
    pt, wt = stats.paired_test(a, b), stats.welch_test(a, b)
    for (lo, hi), (tl, th) in (
        ((pl, ph), (pt["diff_ci_low"], pt["diff_ci_high"])),
        ((ul, uh), (wt["diff_ci_low"], wt["diff_ci_high"])),
    ):
        assert abs(lo - tl) < 0.15 * (th - tl) and abs(hi - th) < 0.15 * (th - tl), (lo, hi, tl, th)
    assert (ph - pl) < 0.3 * (uh - ul)
    assert all(np.isnan(stats.bootstrap_diff_ci([1.0], [2.0, 3.0], paired=False)))


def test_compare_family_holm_effect_sizes_and_cis():
    rng = np.random.default_rng(6)
    x = {k: rng.normal(m, 1.0, 12) for k, m in (("base", 0.0), ("kd", 1.5), ("rcd", 0.4), ("siddo", 0.1))}
    family = {f"{k} - base": (x[k], x["base"]) for k in ("kd", "rcd", "siddo")}
    out = stats.compare_family(family, test="welch")
    p = np.array([out[k]["p"] for k in family])
    # Holm by hand: sort ascending, multiply by m, m-1, ..., keep monotone, cap at 1.
    order = np.argsort(p)
    expect, run = np.empty(3), 0.0
    for rank, i in enumerate(order):
        run = max(run, (3 - rank) * p[i])
        expect[i] = min(run, 1.0)
    np.testing.assert_allclose([out[k]["p_holm"] for k in family], expect, rtol=1e-12)
    assert order[0] == 0 and out["kd - base"]["p_holm"] == 3 * out["kd - base"]["p"] < 0.05
    for name, (a, b) in family.items():
        r = out[name]
        w = stats.welch_test(a, b)
        np.testing.assert_allclose(
            [r["statistic"], r["p"], r["ci_low"], r["ci_high"], r["diff"]],
            [w["t"], w["p"], w["diff_ci_low"], w["diff_ci_high"], a.mean() - b.mean()],
        )
        sp = np.sqrt((11 * a.var(ddof=1) + 11 * b.var(ddof=1)) / 22)
        np.testing.assert_allclose(r["effect_size"], (a.mean() - b.mean()) / sp * (1 - 3 / (4 * 24 - 9)))
        assert r["effect_size_kind"] == "hedges_g"
    # Paired tests report d_z = mean(d) / sd(d); the bootstrap-CI tests bracket the difference.
    for test in ("paired", "paired_permutation"):
        r = stats.compare_family(family, test=test)["kd - base"]
        d = x["kd"] - x["base"]
        np.testing.assert_allclose(r["effect_size"], d.mean() / d.std(ddof=1), rtol=1e-12)
        assert r["effect_size_kind"] == "cohens_dz" and r["ci_low"] < d.mean() < r["ci_high"]
        if test == "paired_permutation":  # its CI is the paired bootstrap
            ci = stats.bootstrap_diff_ci(x["kd"], x["base"], paired=True, n_resamples=9999)
            assert (r["ci_low"], r["ci_high"]) == ci
    r = stats.compare_family(family, test="mannwhitney")["kd - base"]
    assert r["statistic"] == stats.mannwhitney_test(x["kd"], x["base"])["u"] and r["ci_low"] < r["diff"] < r["ci_high"]
    r = stats.compare_family(family, test="permutation", n_resamples=999)["kd - base"]
    assert r["p"] == stats.permutation_test(x["kd"], x["base"], n_resamples=999)["p"]


def test_compare_family_nan_p_counts_in_family_but_stays_nan():
    out = stats.compare_family({"ok": (DRUG1, DRUG2), "one seed": ([1.0], DRUG2)}, test="welch")
    assert np.isnan(out["one seed"]["p_holm"])
    np.testing.assert_allclose(out["ok"]["p_holm"], 2 * out["ok"]["p"])  # m = 2 still


@pytest.mark.parametrize(
    ("family", "kw", "match"),
    [
        ({}, {}, "empty family of comparisons"),
        ({"x": (DRUG1, DRUG2)}, {"test": "ttest"}, "unknown test 'ttest'; choose one of: mannwhitney, paired"),
        ({"x": (DRUG1,)}, {}, "comparison 'x' must be a pair"),
        ({"x": (DRUG1, DRUG2[:4])}, {"test": "paired"}, "comparison 'x' .* equal numbers of seeds, got 10 and 4"),
    ],
)
def test_compare_family_errors_are_one_line(family, kw, match):
    with pytest.raises(ConfigError, match=match) as e:
        stats.compare_family(family, **kw)
    assert "\n" not in str(e.value)
