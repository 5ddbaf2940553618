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
    assert set(s) == {"mean", "std", "ci_low", "ci_high", "n"}  # the keys results.py and report.py read
    assert s["n"] == 10
    np.testing.assert_allclose(s["mean"], 0.75, rtol=1e-12)
    np.testing.assert_allclose(s["std"], 1.789010, rtol=1e-6)
    np.testing.assert_allclose([s["ci_low"], s["ci_high"]], [-0.5297804, 2.0297804], atol=1e-7)
    one = stats.summarize([3.0])
    assert one["n"] == 1 and np.isnan(one["ci_low"]) and np.isnan(one["std"])
    assert one["note"] == "n=1 seed: too few for a useful interval"


def test_summarize_clips_bounded_metrics_and_says_when_n_is_too_small():
    # Two seeds of an accuracy, 0.2 and 0.9: mean 0.55, sem = |0.9 - 0.2| / 2 = 0.35, t_{0.975, 1} = tan(0.475 π)
    # = 12.7062, so the t interval is 0.55 ± 4.4472 = [-3.8972, 4.9972]: clipped to [0, 1], and a note.
    two = stats.summarize([0.2, 0.9], bounds=(0, 1))
    assert np.tan(0.475 * np.pi) == pytest.approx(12.706205, rel=1e-6)
    np.testing.assert_allclose([two["mean"], two["std"]], [0.55, 0.7 / np.sqrt(2)], rtol=1e-12)
    assert (two["ci_low"], two["ci_high"], two["clipped"], two["bounds"]) == (0.0, 1.0, True, [0.0, 1.0])
    assert (
        two["note"]
        == "n=2 seeds: too few for a useful interval: the unclipped interval [-3.9, 5] is wider than the whole range"
    )
    unbounded = stats.summarize([0.2, 0.9])
    np.testing.assert_allclose(
        [unbounded["ci_low"], unbounded["ci_high"]], [0.55 - 0.35 * 12.706205, 0.55 + 0.35 * 12.706205], rtol=1e-6
    )
    assert unbounded["note"] == "n=2 seeds: too few for a useful interval" and "clipped" not in unbounded
    # Four seeds near the ceiling, 0.97, 0.99, 1, 1: mean 0.99, sd = sqrt((4e-4 + 0 + 1e-4 + 1e-4) / 3) = 0.014142,
    # t_{0.975, 3} = 3.182446, half-width 3.182446 · 0.014142 / 2 = 0.022503: [0.967497, 1.012503] -> high end clipped.
    near = stats.summarize([0.97, 0.99, 1.0, 1.0], bounds=(0.0, 1.0))
    np.testing.assert_allclose([near["ci_low"], near["ci_high"]], [0.99 - 0.0225035, 1.0], rtol=1e-6)
    assert near["clipped"] and "note" not in near
    # Inside the range: nothing clipped, the same numbers as without bounds.
    inside = stats.summarize([0.6, 0.7, 0.65, 0.62], bounds=(0, 1))
    plain = stats.summarize([0.6, 0.7, 0.65, 0.62])
    assert not inside["clipped"] and "note" not in inside and all(inside[k] == plain[k] for k in plain)
    # Three seeds, 0, 1, 0.5: sem 0.288675, t_{0.975, 2} = 4.302653, unclipped width 2.48 > 1: the note says so.
    wide = stats.summarize([0.0, 1.0, 0.5], bounds=(0, 1))
    assert wide["note"].startswith("n=3 seeds: too few for a useful interval: the unclipped interval [-0.742, 1.74]")
    with pytest.raises(ConfigError, match=r"values \[1.2\] lie outside bounds \(0, 1\)"):
        stats.summarize([0.5, 1.2], bounds=(0, 1))
    with pytest.raises(ConfigError, match="bounds must be a pair"):
        stats.summarize([0.5], bounds=(1, 0))


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


def test_holm_worked_example_and_nan_rule():
    """Holm from its definition, by hand: sort ascending, the k-th smallest times (m - k + 1), running maximum,
    capped at 1. A NaN p (an untested comparison) counts in m as p = 1 and is reported NaN."""
    # p = [0.01, NaN, 0.04, 0.03, 0.20], m = 5; NaN -> 1; sorted 0.01, 0.03, 0.04, 0.20, 1:
    #   0.01 · 5 = 0.05;  0.03 · 4 = 0.12;  0.04 · 3 = 0.12 -> max(0.12, 0.12) = 0.12;  0.20 · 2 = 0.40;  1 · 1 = 1.
    # Dropping the NaN instead (m = 4) would give 0.04, 0.09, 0.09, 0.20.
    np.testing.assert_allclose(stats.holm([0.01, np.nan, 0.04, 0.03, 0.20]), [0.05, np.nan, 0.12, 0.12, 0.40])
    # The running maximum: 0.011 · 1 = 0.011 < 0.01 · 2 = 0.02, so both are 0.02.
    np.testing.assert_allclose(stats.holm([0.011, 0.01]), [0.02, 0.02])
    # The cap: 0.6 · 2 = 1.2 -> 1, and then max(1, 0.7) = 1.
    np.testing.assert_allclose(stats.holm([0.7, 0.6]), [1.0, 1.0])
    np.testing.assert_allclose(stats.holm([0.5, 0.001]), [0.5, 0.002])
    assert stats.holm([]).shape == (0,) and np.isnan(stats.holm([np.nan])).all()
    with pytest.raises(ConfigError, match=r"p-values must lie in \[0, 1\]"):
        stats.holm([0.2, 1.5])


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
    assert (r["n_a"], r["n_b"]) == (4, 5)
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


# Binomial bound of a Monte Carlo coverage check: with T trials of a 95 % interval the count of hits has
# mean 0.95 T and standard error sqrt(0.95 · 0.05 · T); 3 SE either side. T = 1000: 950 ± 20.7 -> [930, 970],
# which a 90 % interval (about 900) or a 99 % one (about 990) misses.
def _binomial_bound(trials, level=0.95, k=3.0):
    se = np.sqrt(level * (1 - level) * trials)
    return level * trials - k * se, level * trials + k * se


def test_bootstrap_ci_is_scipys_bca_seeded_and_constant_data_is_a_point():
    from scipy import stats as sst

    x = np.random.default_rng(3).exponential(1.0, 12)
    for stat, method in ((np.mean, "BCa"), (np.median, "BCa"), (np.mean, "percentile")):
        lo, hi = stats.bootstrap_ci(
            np.append(x, np.nan), statistic=stat, level=0.9, n_resamples=999, seed=7, method=method
        )
        ref = sst.bootstrap(
            (x,), stat, confidence_level=0.9, n_resamples=999, method=method, rng=np.random.default_rng(7)
        )
        np.testing.assert_allclose([lo, hi], [ref.confidence_interval.low, ref.confidence_interval.high], rtol=1e-12)
    # The default is BCa at 0.95 with seed 0.
    ref = sst.bootstrap((x,), np.mean, n_resamples=2000, method="BCa", rng=np.random.default_rng(0))
    assert stats.bootstrap_ci(x) == (ref.confidence_interval.low, ref.confidence_interval.high)
    # scipy's BCa would give NaN (0/0 acceleration) for a constant sample: the interval is the point.
    assert stats.bootstrap_ci([0.8, 0.8, 0.8]) == pytest.approx((0.8, 0.8), rel=1e-15)
    with pytest.raises(ConfigError, match="unknown bootstrap method 'bca'"):
        stats.bootstrap_ci(x, method="bca")


def test_t_interval_covers_at_its_level():
    """summarize's t interval of the mean of 8 normal seeds is exact: over 1000 samples it covers the true mean
    in 950 ± 20.7 (3 binomial SE). Observed 945; at level 0.90 it would be 891, at 0.99 988."""
    x = np.random.default_rng(13).normal(0.3, 1.0, (1000, 8))
    hits = sum(s["ci_low"] <= 0.3 <= s["ci_high"] for s in map(stats.summarize, x))
    lo, hi = _binomial_bound(1000)
    assert lo <= hits <= hi, (hits, lo, hi)


def test_bca_is_not_worse_than_percentile_at_8_skewed_seeds():
    """300 samples of 8 seeds from an exponential (mean 1, skew 2), nominal 0.95, same samples for both methods.
    BCa corrects skew (here 267 hits against 257: 0.89, 0.86) but neither reaches 0.95 at 8 seeds: the binomial
    bound at T = 300 is [273.6, 296.4] and both fall below it (that is why the mean's CIs are t or studentized)."""
    x = np.random.default_rng(11).exponential(1.0, (300, 8))
    hits = {
        m: sum(lo <= 1.0 <= hi for lo, hi in (stats.bootstrap_ci(v, n_resamples=999, method=m) for v in x))
        for m in ("BCa", "percentile")
    }
    assert hits["BCa"] >= hits["percentile"], hits
    assert hits["BCa"] < _binomial_bound(300)[0], hits  # the docstrings' warning stays true


def _bootstrap_t(a, b, *, paired, n_resamples, seed, level=0.95):
    """The bootstrap-t interval from its definition (Efron & Tibshirani 1993, eq. 12.22), written separately: the
    t* of every resample, sorted, the ((R + 1) α/2)-th and ((R + 1)(1 - α/2))-th of them (1-based)."""
    rng = np.random.default_rng(seed)
    if paired:
        d = a - b
        n = len(d)
        draws = [d[i] for i in rng.integers(0, n, (n_resamples, n))]
        est, se = d.mean(), d.std(ddof=1) / np.sqrt(n)
        if se == 0:  # every seed's difference the same: every resample is the sample
            return est, est
        t = [(r.mean() - est) / (r.std(ddof=1) / np.sqrt(n)) for r in draws]
    else:
        ia = rng.integers(0, len(a), (n_resamples, len(a)))
        ib = rng.integers(0, len(b), (n_resamples, len(b)))
        sem = lambda v: v.std(ddof=1) / np.sqrt(len(v))
        est, se = a.mean() - b.mean(), np.sqrt(sem(a) ** 2 + sem(b) ** 2)
        t = [(a[i].mean() - b[j].mean() - est) / np.sqrt(sem(a[i]) ** 2 + sem(b[j]) ** 2) for i, j in zip(ia, ib)]
    t = sorted(t)
    k = int((n_resamples + 1) * (1 - level) / 2)  # 999 resamples, 95 %: the 25th and the 975th
    return est - t[n_resamples - k] * se, est - t[k - 1] * se


def test_bootstrap_diff_ci_is_the_bootstrap_t_and_scipy_for_the_other_methods():
    from scipy import stats as sst

    for paired in (False, True):
        got = stats.bootstrap_diff_ci(DRUG2, DRUG1, paired=paired, n_resamples=999, seed=1)
        np.testing.assert_allclose(got, _bootstrap_t(DRUG2, DRUG1, paired=paired, n_resamples=999, seed=1), rtol=1e-12)
        for method in ("BCa", "percentile"):
            lo, hi = stats.bootstrap_diff_ci(DRUG2, DRUG1, paired=paired, n_resamples=999, seed=1, method=method)
            # Paired, the statistic is mean(u - v), as the code writes it: BCa's bias correction counts the
            # resamples below the estimate, and with ties at the estimate a rounding difference moves the bound.
            ref = sst.bootstrap(
                (DRUG2, DRUG1),
                (lambda u, v, axis: np.mean(u - v, axis))
                if paired
                else (lambda u, v, axis: u.mean(axis) - v.mean(axis)),
                paired=paired,
                n_resamples=999,
                method=method,
                rng=np.random.default_rng(1),
            )
            np.testing.assert_allclose(
                [lo, hi], [ref.confidence_interval.low, ref.confidence_interval.high], rtol=1e-12
            )
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
    # No spread at all: the point; three seeds: some resamples have no spread (t* infinite), no finite bound.
    assert stats.bootstrap_diff_ci([1.0, 1.5, 2.0], [0.5, 1.0, 1.5], paired=True) == (0.5, 0.5)
    assert all(np.isnan(stats.bootstrap_diff_ci([1.0, 2.5, 2.0], [0.5, 1.0, 1.5], paired=True)))
    with pytest.raises(ConfigError, match="n_resamples=30 is too few for a 0.95 studentized interval: use at least 39"):
        stats.bootstrap_diff_ci(DRUG1, DRUG2, paired=True, n_resamples=30)


@pytest.mark.parametrize("paired", [False, True])
def test_studentized_diff_ci_covers_at_its_level(paired):
    """1000 pairs of normal groups of 8 seeds (paired: correlated): the studentized CI of the difference covers
    the true one in 950 ± 20.7 (3 binomial SE). Observed 953 (paired 949); at level 0.90 908 (903), at 0.99
    989 (989): both outside."""
    rng = np.random.default_rng(17)
    base = rng.normal(0.0, 1.0, (1000, 8))
    a = base + 0.5 + rng.normal(0.0, 0.5, (1000, 8)) if paired else rng.normal(0.5, 1.0, (1000, 8))
    b = base + rng.normal(0.0, 0.5, (1000, 8)) if paired else rng.normal(0.0, 2.0, (1000, 8))
    hits = sum(
        lo <= 0.5 <= hi
        for lo, hi in (stats.bootstrap_diff_ci(u, v, paired=paired, n_resamples=999) for u, v in zip(a, b))
    )
    lo, hi = _binomial_bound(1000)
    assert lo <= hits <= hi, (hits, lo, hi)


def test_studentized_covers_skewed_seeds_better_than_bca_and_percentile():
    """300 pairs of groups of 8 seeds, one exponential(1) and one gamma(2, 1/2) (equal means, skew 2 and 1.4),
    independent. Observed hits of the true difference 0: studentized 280 (0.93), percentile 261, BCa 259
    (Welch's t 282). Studentized lies in the binomial bound [273.6, 296.4]; the other two fall below it."""
    rng = np.random.default_rng(12)
    a, b = rng.exponential(1.0, (300, 8)), rng.gamma(2.0, 0.5, (300, 8))
    hits = {
        m: sum(
            lo <= 0.0 <= hi
            for lo, hi in (stats.bootstrap_diff_ci(u, v, paired=False, n_resamples=999, method=m) for u, v in zip(a, b))
        )
        for m in ("studentized", "BCa", "percentile")
    }
    lo, hi = _binomial_bound(300)
    assert lo <= hits["studentized"] <= hi and max(hits["BCa"], hits["percentile"]) < lo, (hits, lo, hi)


RCD = DRUG1 + np.array([0.3, -0.2, 0.5, 0.1, 0.4, -0.3, 0.6, 0.2, 0.0, 0.3])
FAMILY = {"kd - base": (DRUG2, DRUG1), "rcd - base": (RCD, DRUG1), "shift - base": (DRUG1 + 0.5, DRUG1)}


def _hedges_g(a, b):
    ss = ((a - a.mean()) ** 2).sum() + ((b - b.mean()) ** 2).sum()
    return (a.mean() - b.mean()) / np.sqrt(ss / (len(a) + len(b) - 2)) * (1 - 3 / (4 * (len(a) + len(b)) - 9))


def _dz(a, b):
    d = a - b
    return d.mean() / np.sqrt(((d - d.mean()) ** 2).sum() / (len(d) - 1))


def test_compare_family_welch_and_paired_against_scipy_and_holm_by_hand():
    from scipy import stats as sst

    out = stats.compare_family(FAMILY, test="welch")
    ref = {k: sst.ttest_ind(a, b, equal_var=False) for k, (a, b) in FAMILY.items()}
    p = {k: r.pvalue for k, r in ref.items()}
    np.testing.assert_allclose(p["kd - base"], 0.07939, atol=1e-5)  # R's Welch p on the sleep data
    # Holm by hand, m = 3, sorted: kd 0.0794 · 3 = 0.2382; shift 0.5398 · 2 = 1.080 -> 1; rcd 0.8186 · 1 -> max 1.
    assert p["kd - base"] < p["shift - base"] < p["rcd - base"]
    holm = {"kd - base": 3 * p["kd - base"], "shift - base": 1.0, "rcd - base": 1.0}
    for k, (a, b) in FAMILY.items():
        r, ci = out[k], ref[k].confidence_interval(0.95)
        np.testing.assert_allclose(
            [r["statistic"], r["p"], r["p_holm"], r["diff"], r["ci_low"], r["ci_high"], r["effect_size"]],
            [ref[k].statistic, p[k], holm[k], a.mean() - b.mean(), ci.low, ci.high, _hedges_g(a, b)],
            rtol=1e-12,
        )
        assert (r["test"], r["effect_size_kind"], r["n_a"], r["n_b"]) == ("welch t", "hedges_g", 10, 10)
    np.testing.assert_allclose(out["kd - base"]["p_holm"], 0.238182, atol=1e-6)
    # Paired: "shift" adds 0.5 to every seed, so its differences have no spread and no t: p NaN. It still
    # counts in the family (m = 3, the NaN rule of stats.holm): kd 0.002833 · 3 = 0.008499, rcd 0.069991 · 2.
    out = stats.compare_family(FAMILY, test="paired")
    for k in ("kd - base", "rcd - base"):
        a, b = FAMILY[k]
        t = sst.ttest_rel(a, b)
        ci = t.confidence_interval(0.95)
        np.testing.assert_allclose(
            [out[k]["statistic"], out[k]["p"], out[k]["ci_low"], out[k]["ci_high"], out[k]["effect_size"]],
            [t.statistic, t.pvalue, ci.low, ci.high, _dz(a, b)],
            rtol=1e-12,
        )
    p_kd, p_rcd = sst.ttest_rel(DRUG2, DRUG1).pvalue, sst.ttest_rel(RCD, DRUG1).pvalue
    np.testing.assert_allclose([p_kd, p_rcd], [0.002833, 0.069991], atol=1e-6)
    np.testing.assert_allclose(
        [out["kd - base"]["p_holm"], out["rcd - base"]["p_holm"]], [3 * p_kd, 2 * p_rcd], rtol=1e-12
    )
    shift = out["shift - base"]
    assert np.isnan(shift["p"]) and np.isnan(shift["p_holm"]) and (shift["ci_low"], shift["ci_high"]) == (0.5, 0.5)
    assert out["kd - base"]["effect_size_kind"] == "cohens_dz"


def test_compare_family_rank_and_permutation_tests_against_scipy():
    from scipy import stats as sst

    out = stats.compare_family(FAMILY, test="mannwhitney", n_resamples=999, seed=2)
    p = {k: sst.mannwhitneyu(a, b).pvalue for k, (a, b) in FAMILY.items()}
    # Holm by hand, m = 3, sorted: kd 0.0693 · 3 = 0.2080; shift 0.4274 · 2 = 0.8547; rcd max(0.8547, 0.6499).
    assert p["kd - base"] < p["shift - base"] < p["rcd - base"]
    holm = {"kd - base": 3 * p["kd - base"], "shift - base": 2 * p["shift - base"], "rcd - base": 2 * p["shift - base"]}
    for k, (a, b) in FAMILY.items():
        r = out[k]
        np.testing.assert_allclose(
            [r["statistic"], r["p"], r["p_holm"], r["diff"], r["effect_size"]],
            [sst.mannwhitneyu(a, b).statistic, p[k], holm[k], a.mean() - b.mean(), _hedges_g(a, b)],
            rtol=1e-12,
        )
        np.testing.assert_allclose(
            [r["ci_low"], r["ci_high"]], _bootstrap_t(a, b, paired=False, n_resamples=999, seed=2), rtol=1e-12
        )
    np.testing.assert_allclose(out["kd - base"]["p"], 0.06933, atol=5e-6)  # R's wilcox.test on the sleep data
    out = stats.compare_family(FAMILY, test="paired_permutation", n_resamples=999, seed=2)
    for k, (a, b) in FAMILY.items():
        ref = sst.permutation_test(
            (a, b),
            lambda u, v: np.mean(u - v),
            permutation_type="samples",
            vectorized=False,
            n_resamples=999,
            rng=np.random.default_rng(2),
        )
        r = out[k]
        dz = np.nan if k == "shift - base" else _dz(a, b)  # no spread in the differences: d_z is not defined
        np.testing.assert_allclose(
            [r["statistic"], r["p"], r["effect_size"]], [ref.statistic, ref.pvalue, dz], rtol=1e-12
        )
        np.testing.assert_allclose(
            [r["ci_low"], r["ci_high"]],
            _bootstrap_t(a, b, paired=True, n_resamples=999, seed=2),
            rtol=1e-12,
            atol=1e-12,
        )
    # 2^10 = 1024 sign patterns > 999 resamples: Monte Carlo, p = 2 (1 + #{as extreme}) / (999 + 1) in scipy's
    # convention. Here kd 0.004, shift 0.004 (one resample drew the all-positive pattern), rcd 0.08.
    # Holm by hand, m = 3, sorted: kd 0.004 · 3 = 0.012; shift 0.004 · 2 = 0.008 -> running max 0.012;
    # rcd 0.08 · 1 = 0.08.
    p = {k: out[k]["p"] for k in FAMILY}
    np.testing.assert_allclose([p["kd - base"], p["shift - base"], p["rcd - base"]], [0.004, 0.004, 0.08], rtol=1e-12)
    np.testing.assert_allclose([out[k]["p_holm"] for k in FAMILY], [0.012, 0.08, 0.012], rtol=1e-12)


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


def _ranks(x):
    """Average ranks (1-based), ties sharing the mean of their positions: written out, not scipy's rankdata."""
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(1, len(x) + 1)
    for v in np.unique(x):
        r[x == v] = r[x == v].mean()
    return r


def test_rank_correlation_is_pearson_on_ranks_with_the_t_p_value_and_fisher_interval():
    # the sleep data: ties in both drugs, and one pair with a NaN that must be dropped
    a, b = np.append(DRUG1, np.nan), np.append(DRUG2, 1.0)
    got = stats.rank_correlation(a, b, level=0.9)
    ra, rb = _ranks(DRUG1), _ranks(DRUG2)
    rho = np.sum((ra - ra.mean()) * (rb - rb.mean())) / np.sqrt(
        np.sum((ra - ra.mean()) ** 2) * np.sum((rb - rb.mean()) ** 2)
    )
    n = 10
    t = rho * np.sqrt((n - 2) / (1 - rho**2))
    from scipy.stats import norm
    from scipy.stats import t as t_dist

    z, half = np.arctanh(rho), norm.ppf(0.95) * np.sqrt(1.06 / (n - 3))
    assert got["n"] == n and got["level"] == 0.9
    np.testing.assert_allclose(got["rho"], rho, rtol=1e-12)
    np.testing.assert_allclose(got["p"], 2 * t_dist.sf(abs(t), n - 2), rtol=1e-9)
    np.testing.assert_allclose([got["ci_low"], got["ci_high"]], np.tanh([z - half, z + half]), rtol=1e-12)
    assert got["ci_low"] < got["rho"] < got["ci_high"]
    # too few pairs, or a constant side: NaN, not an error
    assert np.isnan(stats.rank_correlation([1, 2, 3], [3, 1, 2])["rho"])
    assert np.isnan(stats.rank_correlation(np.ones(8), np.arange(8))["p"])


def test_rank_correlation_interval_covers_the_population_spearman_at_its_level():
    """Bivariate normal with Pearson 0.6, n = 40: the population Spearman is (6/pi) asin(0.3). Over 1000 samples
    the Fisher interval with SE sqrt(1.06/(n-3)) covers it in 950 ± 20.7 (3 binomial SE)."""
    rng = np.random.default_rng(21)
    target = 6 / np.pi * np.arcsin(0.3)
    cov = [[1.0, 0.6], [0.6, 1.0]]
    hits = 0
    for _ in range(1000):
        x = rng.multivariate_normal([0, 0], cov, 40)
        r = stats.rank_correlation(x[:, 0], x[:, 1])
        hits += r["ci_low"] <= target <= r["ci_high"]
    lo, hi = _binomial_bound(1000)
    assert lo <= hits <= hi, (hits, lo, hi)
