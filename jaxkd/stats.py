"""Statistics over seeds: summaries with CIs, hypothesis tests, effect sizes, corrected families, fits.

All functions take numpy arrays on the host; NaNs (diverged seeds) are dropped
(in paired tests, the whole pair) and the count of values used is reported. The
computations are scipy's (``scipy.stats.t``, ``sem``, ``ttest_rel``, ``ttest_ind``,
``permutation_test``, ``mannwhitneyu``, ``spearmanr``, ``bootstrap``, ``linregress``); this module
chooses, labels and cleans. Hand-written: Hedges' g, Cohen's d_z, Holm's step-down (with the
package's one rule for NaN p-values, :func:`holm`), the studentized bootstrap of a difference of
means (scipy has none) and the seed bootstrap of power-law exponents (scipy's ``bootstrap``
resamples one array, not seeds per shape).

Bootstrap intervals: BCa for a general statistic (:func:`bootstrap_ci`), studentized for a
difference of means (:func:`bootstrap_diff_ci`), percentile for power-law exponents
(:func:`power_law_exponents` says why). Their coverage at 8 seeds is measured in the tests.
"""

from __future__ import annotations

import numpy as np
from scipy import stats as _st

from jaxkd.errors import check, check_name

_NAN = float("nan")


def _clean(x) -> np.ndarray:
    x = np.asarray(x, np.float64).ravel()
    return x[np.isfinite(x)]


def _too_few(n: int) -> str:
    return f"n={n} seed{'' if n == 1 else 's'}: too few for a useful interval"


def summarize(values, *, level: float = 0.95, bounds=None) -> dict:
    """Mean, sample std, and the Student-t confidence interval of the mean.

    Returns ``{"mean", "std", "ci_low", "ci_high", "n"}``; with one value the
    std and CI are reported as NaN (they are not estimable). With fewer than three
    values a ``"note"`` says that the interval is too wide to be useful.

    Args:
      values: per-seed values; non-finite ones (diverged seeds) are dropped.
      level: confidence level of the interval.
      bounds: ``(lo, hi)`` for a metric that cannot leave a range (accuracy, agreement, a probability:
        ``(0, 1)``). The t interval is clipped to it and ``"clipped"`` says whether either end was
        (``"bounds"`` repeats the range); a ``"note"`` is added when the unclipped interval is wider
        than the whole range. Values outside the range are an error.
    """
    x = _clean(values)
    n = len(x)
    if bounds is not None:
        check(
            isinstance(bounds, (tuple, list))
            and len(bounds) == 2
            and all(np.isfinite(np.asarray(bounds, np.float64)))
            and bounds[0] < bounds[1],
            f"summarize: bounds must be a pair (lo, hi) of finite numbers with lo < hi, got {bounds!r}",
        )
        blo, bhi = float(bounds[0]), float(bounds[1])
        slack = 1e-6 * (bhi - blo)  # float32 means of values at a bound can round just past it
        bad = x[(x < blo - slack) | (x > bhi + slack)]
        check(
            len(bad) == 0,
            f"summarize: values {bad[:3].tolist()} lie outside bounds ({blo:g}, {bhi:g}); "
            "pass the metric's true range, or bounds=None for an unbounded metric",
        )
    if n == 0:
        out = {"mean": _NAN, "std": _NAN, "ci_low": _NAN, "ci_high": _NAN, "n": 0}
    elif n == 1:
        out = {"mean": float(np.mean(x)), "std": _NAN, "ci_low": _NAN, "ci_high": _NAN, "n": 1}
    else:
        mean, std = float(np.mean(x)), float(np.std(x, ddof=1))
        if std == 0:
            lo = hi = mean
        else:
            lo, hi = _st.t.interval(level, n - 1, loc=mean, scale=_st.sem(x))
        out = {"mean": mean, "std": std, "ci_low": float(lo), "ci_high": float(hi), "n": n}
    if n < 3:
        out["note"] = _too_few(n)
    if bounds is not None:
        lo, hi = out["ci_low"], out["ci_high"]
        out["bounds"] = [blo, bhi]
        out["clipped"] = bool(lo < blo or hi > bhi)
        if out["clipped"]:
            out["ci_low"], out["ci_high"] = max(lo, blo), min(hi, bhi)
        if hi - lo > bhi - blo:
            out["note"] = f"{_too_few(n)}: the unclipped interval [{lo:.3g}, {hi:.3g}] is wider than the whole range"
    return out


def paired_test(a, b, *, level: float = 0.95) -> dict:
    """Paired t-test of ``mean(a - b) = 0`` over seeds (pairs with a NaN dropped).

    Effect size is Cohen's d_z = mean(diff) / std(diff).
    """
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    keep = np.isfinite(a) & np.isfinite(b)
    d = a[keep] - b[keep]
    s = summarize(d, level=level)
    if len(d) < 2 or np.std(d, ddof=1) == 0:
        t, p, dz = _NAN, _NAN, _NAN
    else:
        t, p = _st.ttest_rel(a[keep], b[keep])
        dz = float(np.mean(d) / np.std(d, ddof=1))
    return {
        "test": "paired t",
        "diff_mean": s["mean"],
        "diff_ci_low": s["ci_low"],
        "diff_ci_high": s["ci_high"],
        "t": float(t),
        "p": float(p),
        "cohens_dz": dz,
        "n": s["n"],
    }


def rank_correlation(a, b, *, level: float = 0.95) -> dict:
    """Spearman's rank correlation of paired values (pairs with a NaN dropped), its p-value and a CI.

    ``rho`` and ``p`` (two-sided, t approximation) are scipy's ``spearmanr``.
    The interval is the Fisher-z interval with the rank-correlation standard
    error ``sqrt(1.06 / (n - 3))`` of Fieller, Hartley & Pearson (1957):
    ``tanh(atanh(rho) ± z_{(1+level)/2} · se)``; NaN below 4 pairs or where
    either side is constant.
    """
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    n = len(a)
    rho = p = low = high = _NAN
    if n >= 4 and np.ptp(a) > 0 and np.ptp(b) > 0:
        rho, p = (float(v) for v in _st.spearmanr(a, b))
        z = np.arctanh(np.clip(rho, -1 + 1e-12, 1 - 1e-12))
        half = _st.norm.ppf((1 + level) / 2) * np.sqrt(1.06 / (n - 3))
        low, high = float(np.tanh(z - half)), float(np.tanh(z + half))
    return {"test": "spearman", "rho": rho, "p": p, "ci_low": low, "ci_high": high, "level": level, "n": n}


def hedges_g(a, b) -> float:
    """Hedges' g: Cohen's d with the pooled sample std, times ``J = 1 - 3 / (4 (n_a + n_b) - 9)``.

    References: Hedges 1981; Hedges & Olkin 1985, eq. 5.10 (the approximation of J).
    """
    a, b = _clean(a), _clean(b)
    na, nb = len(a), len(b)
    if na < 2 or nb < 2:
        return _NAN
    pooled = np.sqrt(((na - 1) * np.var(a, ddof=1) + (nb - 1) * np.var(b, ddof=1)) / (na + nb - 2))
    if pooled == 0:
        return _NAN
    return float((np.mean(a) - np.mean(b)) / pooled * (1 - 3 / (4 * (na + nb) - 9)))


def welch_test(a, b, *, level: float = 0.95) -> dict:
    """Welch's unequal-variance t-test with Hedges' g (:func:`hedges_g`) and the Welch CI of ``mean(a) - mean(b)``."""
    a, b = _clean(a), _clean(b)
    na, nb = len(a), len(b)
    if na < 2 or nb < 2:
        return {
            "test": "welch t",
            "t": _NAN,
            "p": _NAN,
            "df": _NAN,
            "hedges_g": _NAN,
            "n_a": na,
            "n_b": nb,
            "diff_mean": float(np.mean(a) - np.mean(b)) if na and nb else _NAN,
            "diff_ci_low": _NAN,
            "diff_ci_high": _NAN,
        }
    res = _st.ttest_ind(a, b, equal_var=False)
    ci = res.confidence_interval(level)
    return {
        "test": "welch t",
        "t": float(res.statistic),
        "p": float(res.pvalue),
        "df": float(res.df),
        "hedges_g": hedges_g(a, b),
        "n_a": na,
        "n_b": nb,
        "diff_mean": float(np.mean(a) - np.mean(b)),
        "diff_ci_low": float(ci.low),
        "diff_ci_high": float(ci.high),
    }


BOOTSTRAP_METHODS = ("BCa", "percentile", "basic")  # scipy.stats.bootstrap's


def bootstrap_ci(
    values,
    *,
    statistic=np.mean,
    level: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    method: str = "BCa",
) -> tuple[float, float]:
    """Bootstrap CI of ``statistic`` over seeds (``scipy.stats.bootstrap``), BCa by default.

    BCa (bias-corrected and accelerated; Efron 1987) corrects the percentile interval for the
    bootstrap distribution's bias and skew. It does not widen it: at a handful of seeds every
    bootstrap interval of a mean is too narrow (it sees the sample's spread, not the t distribution's
    tails). Measured (samples of 8 from an exponential, nominal 0.95; ``tests/test_stats.py`` runs 300):
    BCa covers the mean 0.89 of the time, the percentile interval 0.86 (1000 samples: 0.88, 0.86, and
    :func:`summarize`'s t interval 0.91). For a mean or a difference of means of few seeds use :func:`summarize` or
    :func:`bootstrap_diff_ci` (studentized); this function is for statistics without a standard error.

    Seeded (``seed``): the same values give the same interval. Values that are all equal give the point
    interval; fewer than two values give NaN bounds. ``method`` is any of scipy's (``BCa``, ``percentile``,
    ``basic``).
    """
    check_name("bootstrap method", method, BOOTSTRAP_METHODS)
    x = _clean(values)
    if len(x) < 2:
        return _NAN, _NAN
    if np.ptp(x) == 0:  # BCa's acceleration is 0/0 on a constant sample; every resample is the sample
        v = float(statistic(x))
        return v, v
    res = _st.bootstrap(
        (x,), statistic, n_resamples=n_resamples, confidence_level=level, method=method, rng=np.random.default_rng(seed)
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def holm(p_values) -> np.ndarray:
    """Holm–Bonferroni step-down adjusted p-values, in the order given.

    With the ``m`` p-values sorted ascending, ``p_(1) <= ... <= p_(m)``, the adjusted
    ``p̃_(k) = min(1, max_{j <= k} (m - j + 1) · p_(j))``.

    NaN rule (the one rule for the whole package): a comparison whose p is NaN was declared
    but could not be tested (too few seeds, zero variance). It stays in the family, so
    ``m`` is the declared family size, and it takes part in the step-down as ``p = 1``
    (which can only raise the last multipliers' maxima, never lower another p̃); its own
    adjusted p is reported as NaN, since it has no p-value. Pass raw p-values: do not
    replace NaN before calling.

    References: Holm 1979, Scand. J. Statist. 6(2), 65-70.
    """
    p = np.asarray(p_values, np.float64).ravel()
    untested = np.isnan(p)
    check(
        bool(np.all(untested | ((p >= 0) & (p <= 1 + 1e-9)))),  # float rounding can pass 1
        f"holm: p-values must lie in [0, 1] (NaN for an untested comparison), got {p[~untested].tolist()}",
    )
    filled = np.where(untested, 1.0, p)
    order = np.argsort(filled, kind="stable")
    m = len(p)
    steps = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * filled[order]))
    adj = np.empty(m)
    adj[order] = steps
    adj[untested] = np.nan
    return adj


def fit_power_law(x, y) -> dict:
    """Least-squares fit of ``log y = log c + exponent · log x`` (``scipy.stats.linregress``).

    Returns ``{"exponent", "exponent_se", "coef", "r2", "n"}``; non-positive or
    non-finite points are dropped; NaNs when fewer than two distinct x remain.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    keep = (x > 0) & (y > 0) & np.isfinite(x) & np.isfinite(y)
    lx, ly = np.log(x[keep]), np.log(y[keep])
    n = int(keep.sum())
    if len(np.unique(lx)) < 2:
        return {"exponent": _NAN, "exponent_se": _NAN, "coef": _NAN, "r2": _NAN, "n": n}
    fit = _st.linregress(lx, ly)
    se = float(fit.stderr) if n > 2 else _NAN
    return {
        "exponent": float(fit.slope),
        "exponent_se": se,
        "coef": float(np.exp(fit.intercept)),
        "r2": float(fit.rvalue**2),
        "n": n,
    }


def _pairs(a, b, what: str = "a paired comparison") -> tuple[np.ndarray, np.ndarray]:
    """Both arrays flattened, same length required, pairs with a non-finite member dropped."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    check(len(a) == len(b), f"{what} needs equal numbers of seeds, got {len(a)} and {len(b)}")
    keep = np.isfinite(a) & np.isfinite(b)
    return a[keep], b[keep]


def cohens_dz(a, b) -> float:
    """Cohen's d_z of paired samples: ``mean(a - b) / std(a - b, ddof=1)``; NaN below two pairs or for zero spread."""
    a, b = _pairs(a, b)
    d = a - b
    if len(d) < 2 or np.std(d, ddof=1) == 0:
        return _NAN
    return float(np.mean(d) / np.std(d, ddof=1))


def _mean_diff(x, y, axis=-1):
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def _paired_mean_diff(x, y, axis=-1):
    return np.mean(x - y, axis=axis)


def permutation_test(
    a, b, *, paired: bool = False, n_resamples: int = 9999, seed: int = 0, alternative: str = "two-sided"
) -> dict:
    """Permutation test of equal means (``scipy.stats.permutation_test``).

    Statistic ``mean(a) - mean(b)``. Independent: group labels are permuted.
    Paired (``paired=True``): the two values of each pair are swapped, i.e. the signs
    of the differences flipped. Exact (every rearrangement enumerated) when
    ``n_resamples`` is at least their number, Monte Carlo otherwise. Two-sided p is
    scipy's ``min(1, 2 min(P[T <= t], P[T >= t]))``.
    """
    if paired:
        a, b = _pairs(a, b)
        kind, stat, n_ok = "samples", _paired_mean_diff, len(a) >= 2
    else:
        a, b = _clean(a), _clean(b)
        kind, stat, n_ok = "independent", _mean_diff, len(a) >= 1 and len(b) >= 1 and len(a) + len(b) >= 3
    out = {
        "test": "paired permutation" if paired else "permutation",
        "statistic": _NAN,
        "p": _NAN,
        "n_a": len(a),
        "n_b": len(b),
    }
    if not n_ok:
        return out
    res = _st.permutation_test(
        (a, b),
        stat,
        permutation_type=kind,
        vectorized=True,
        n_resamples=n_resamples,
        alternative=alternative,
        axis=-1,
        rng=np.random.default_rng(seed),
    )
    return out | {"statistic": float(res.statistic), "p": float(res.pvalue)}


def mannwhitney_test(a, b, *, alternative: str = "two-sided", method: str = "auto") -> dict:
    """Mann-Whitney U test (``scipy.stats.mannwhitneyu``); ``u`` is a's statistic (pairs with a > b, ties ½).

    Effect size: the common-language effect size ``cles = u / (n_a n_b)`` = P[A > B] + ½ P[A = B].
    """
    a, b = _clean(a), _clean(b)
    na, nb = len(a), len(b)
    if na == 0 or nb == 0:
        return {"test": "mann-whitney U", "u": _NAN, "p": _NAN, "cles": _NAN, "n_a": na, "n_b": nb}
    res = _st.mannwhitneyu(a, b, alternative=alternative, method=method)
    u = float(res.statistic)
    return {"test": "mann-whitney U", "u": u, "p": float(res.pvalue), "cles": u / (na * nb), "n_a": na, "n_b": nb}


def _mean_se(x_RxN):
    """Mean and standard error of the mean along the last axis."""
    return np.mean(x_RxN, -1), np.std(x_RxN, axis=-1, ddof=1) / np.sqrt(x_RxN.shape[-1])


def studentized_rank(level: float, n_resamples: int) -> tuple[float, int]:
    """``(α/2, k)``: a studentized interval's tail mass and the rank ``k = ⌊(R + 1) α/2⌋`` of its order statistics.

    Refuses, in one line, a number of resamples too small for the level (``k < 1``).
    """
    alpha = (1 - level) / 2
    k = int(np.floor((n_resamples + 1) * alpha + 1e-9))
    check(
        k >= 1,
        f"n_resamples={n_resamples} is too few for a {level:g} studentized interval: use at least "
        f"{int(np.ceil(1 / alpha)) - 1}",
    )
    return alpha, k


def _studentized_diff_ci(a, b, *, paired: bool, level: float, n_resamples: int, rng) -> tuple[float, float]:
    """Bootstrap-t interval of ``mean(a) - mean(b)``: ``[d - t*_hi se, d - t*_lo se]`` with ``t* = (d* - d) / se*``
    over resamples and ``t*_lo``, ``t*_hi`` its ``(R + 1) α/2``-th and ``(R + 1)(1 - α/2)``-th order statistics
    (Efron & Tibshirani 1993, sec. 12.5; Davison & Hinkley 1997, eq. 5.7). ``se`` is the paired standard
    error, or Welch's ``sqrt(s_a²/n_a + s_b²/n_b)`` for independent groups."""
    alpha, k = studentized_rank(level, n_resamples)
    if paired:
        d = a - b
        est, se = _mean_se(d)
        est_b, se_b = _mean_se(d[rng.integers(0, len(d), (n_resamples, len(d)))])
    else:
        (ma, sa), (mb, sb) = _mean_se(a), _mean_se(b)
        est, se = ma - mb, np.hypot(sa, sb)
        (ma_b, sa_b), (mb_b, sb_b) = (_mean_se(x[rng.integers(0, len(x), (n_resamples, len(x)))]) for x in (a, b))
        est_b, se_b = ma_b - mb_b, np.hypot(sa_b, sb_b)
    if se == 0:
        return float(est), float(est)
    # A resample without spread has an infinite t (or 0 at the estimate): it belongs in the tails, not dropped.
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se_b > 0, (est_b - est) / se_b, np.where(est_b == est, 0.0, np.sign(est_b - est) * np.inf))
    t = np.sort(t)
    lo, hi = est - t[n_resamples - k] * se, est - t[k - 1] * se
    return (float(lo) if np.isfinite(lo) else _NAN), (float(hi) if np.isfinite(hi) else _NAN)


def bootstrap_diff_ci(
    a, b, *, paired: bool, level: float = 0.95, n_resamples: int = 2000, seed: int = 0, method: str = "studentized"
) -> tuple[float, float]:
    """Bootstrap CI of ``mean(a) - mean(b)``; studentized (bootstrap-t) by default.

    Paired: seed pairs are resampled together. Unpaired: each group is resampled on its own.
    ``method="studentized"`` resamples the t statistic (:func:`_studentized_diff_ci`); ``BCa``,
    ``percentile`` and ``basic`` are ``scipy.stats.bootstrap``'s.

    Why not BCa: at 4-10 seeds BCa is as narrow as the percentile interval (it corrects bias and
    skew, not the missing t tails) and, between two independent groups, narrower still. Measured in
    ``tests/test_stats.py`` (nominal 0.95): 300 pairs of independent groups of 8 seeds, one exponential and
    one gamma(2), equal means: studentized 0.93, Welch's t 0.94, percentile 0.87, BCa 0.86; 1000 pairs of
    normal groups of 8: studentized 0.953 (paired 0.949), at level 0.90 0.908, at 0.99 0.989. At 2 or 3 seeds
    the studentized interval has no finite bound (a resample without spread has an infinite t) and is
    NaN. Seeded (``seed``); NaN bounds with fewer than two values (pairs) in a group.

    References: Efron & Tibshirani 1993, An Introduction to the Bootstrap, ch. 12 and 14.
    """
    check_name("bootstrap method", method, ("studentized", *BOOTSTRAP_METHODS))
    if paired:
        a, b = _pairs(a, b)
        stat = _paired_mean_diff
    else:
        a, b = _clean(a), _clean(b)
        stat = _mean_diff
    if min(len(a), len(b)) < 2:
        return _NAN, _NAN
    rng = np.random.default_rng(seed)
    if method == "studentized":
        return _studentized_diff_ci(a, b, paired=paired, level=level, n_resamples=n_resamples, rng=rng)
    if np.ptp(a - b if paired else a) == 0 and (paired or np.ptp(b) == 0):
        v = float(np.mean(a) - np.mean(b))  # BCa's acceleration is 0/0 when every resample is the sample
        return v, v
    res = _st.bootstrap(
        (a, b),
        stat,
        paired=paired,
        vectorized=True,
        axis=-1,
        n_resamples=n_resamples,
        confidence_level=level,
        method=method,
        rng=rng,
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


# test name -> whether it pairs seeds
FAMILY_TESTS = {"welch": False, "paired": True, "permutation": False, "paired_permutation": True, "mannwhitney": False}


def _compare(a, b, test: str, *, level: float, n_resamples: int, seed: int) -> dict:
    paired = FAMILY_TESTS[test]
    if test == "welch":
        r = welch_test(a, b, level=level)
        return {
            "test": r["test"],
            "statistic": r["t"],
            "p": r["p"],
            "diff": r["diff_mean"],
            "ci_low": r["diff_ci_low"],
            "ci_high": r["diff_ci_high"],
            "n_a": r["n_a"],
            "n_b": r["n_b"],
        }
    if test == "paired":
        r = paired_test(a, b, level=level)
        return {
            "test": r["test"],
            "statistic": r["t"],
            "p": r["p"],
            "diff": r["diff_mean"],
            "ci_low": r["diff_ci_low"],
            "ci_high": r["diff_ci_high"],
            "n_a": r["n"],
            "n_b": r["n"],
        }
    if test == "mannwhitney":
        r = mannwhitney_test(a, b)
        stat = r["u"]
    else:
        r = permutation_test(a, b, paired=paired, n_resamples=n_resamples, seed=seed)
        stat = r["statistic"]
    x, y = _pairs(a, b) if paired else (_clean(a), _clean(b))
    lo, hi = bootstrap_diff_ci(x, y, paired=paired, level=level, n_resamples=n_resamples, seed=seed)
    diff = float(np.mean(x) - np.mean(y)) if len(x) and len(y) else _NAN
    return {
        "test": r["test"],
        "statistic": stat,
        "p": r["p"],
        "diff": diff,
        "ci_low": lo,
        "ci_high": hi,
        "n_a": r["n_a"],
        "n_b": r["n_b"],
    }


def compare_family(
    comparisons: dict, *, test: str = "welch", level: float = 0.95, n_resamples: int = 9999, seed: int = 0
) -> dict[str, dict]:
    """Run one test per declared comparison ``{name: (a, b)}`` and Holm-correct over the family.

    Per comparison: ``test``, ``statistic`` (t; permutation: mean(a) - mean(b); Mann-Whitney: U),
    ``p``, ``p_holm`` (:func:`holm` over all declared comparisons, its NaN rule: a comparison whose
    p is NaN counts in the family size and gets NaN), ``diff = mean(a) - mean(b)`` with its CI
    (``ci_low``, ``ci_high``: the t interval for ``welch``/``paired``, the studentized bootstrap of
    :func:`bootstrap_diff_ci` for the others, paired where the test pairs), ``effect_size`` (Hedges' g
    for independent tests, Cohen's d_z for paired ones; ``effect_size_kind`` says which), ``n_a``, ``n_b``.

    Args:
      comparisons: name -> (a, b) per-seed values; the paired tests need equal lengths (seed i with seed i).
      test: ``welch``, ``paired``, ``permutation``, ``paired_permutation`` or ``mannwhitney``.
    """
    check(
        isinstance(comparisons, dict) and len(comparisons) > 0,
        "empty family of comparisons: declare at least one {name: (a, b)} to compare",
    )
    check_name("test", test, FAMILY_TESTS)
    out = {}
    for name, pair in comparisons.items():
        check(
            isinstance(pair, (tuple, list)) and len(pair) == 2,
            f"comparison {name!r} must be a pair (a, b) of per-seed values",
        )
        a, b = pair
        if FAMILY_TESTS[test]:
            a, b = _pairs(a, b, f"comparison {name!r} ({test} test)")
        r = _compare(a, b, test, level=level, n_resamples=n_resamples, seed=seed)
        paired = FAMILY_TESTS[test]
        r["effect_size"] = cohens_dz(a, b) if paired else hedges_g(a, b)
        r["effect_size_kind"] = "cohens_dz" if paired else "hedges_g"
        out[name] = r
    for r, q in zip(out.values(), holm([r["p"] for r in out.values()])):
        r["p_holm"] = float(q)
    return out


def _loglog_slopes(lx_P, ly_RxP):
    """Least-squares slope and intercept of each row of ``ly`` on ``lx``, over that row's finite points (as
    :func:`fit_power_law` drops its non-positive points); NaN where fewer than two distinct sizes remain."""
    ok = np.isfinite(ly_RxP)
    w = ok.astype(np.float64)
    n = w.sum(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx = (w * lx_P).sum(-1, keepdims=True) / n
        y = np.where(ok, ly_RxP, 0.0)
        my = y.sum(-1, keepdims=True) / n
        dx = np.where(ok, lx_P - mx, 0.0)
        sxx = (dx * dx).sum(-1)
        slope = np.where(sxx > 0, (dx * (y - my)).sum(-1) / np.where(sxx > 0, sxx, 1.0), np.nan)
        return slope, my[:, 0] - slope * mx[:, 0]


def power_law_exponents(
    x,
    per_seed: dict,
    *,
    comparisons=(),
    paired: bool = True,
    level: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    seeds_shared_across_sizes: bool = True,
) -> dict:
    """Power-law exponents of seed means against ``x``, with seed-bootstrap CIs, and tests of their differences.

    For each condition ``c`` the fit is ``mean_s y_c[p, s] ≈ coef · x[p] ** exponent`` by least squares in
    log-log space (:func:`fit_power_law`). The bootstrap redraws ``S`` seeds with replacement and refits.
    With ``seeds_shared_across_sizes=True`` (default) one draw serves every size: seed ``s`` is one unit
    across sizes (in ``kd_scaling`` it has the same data order at every size), so a seed's effect moves all
    its points together, as it does in the data; ``False`` draws seeds independently per size (for sizes
    whose seeds are unrelated). With ``paired=True`` the same draw also serves every condition (seed ``s`` of
    each condition shares its keys and teacher), so differences of exponents are paired. NaN seeds (diverged
    runs) are left out of each mean; a size whose resampled mean is not positive is left out of that
    resample's fit, as :func:`fit_power_law` leaves it out of the point estimate (a resample with fewer than
    two sizes left is dropped, counted in ``n_resamples_used``). CIs are percentile intervals; ``boot_std``
    is the bootstrap standard error.

    Why percentile, not BCa: scipy's BCa cannot express these resamplings (seed blocks shared by sizes
    and by conditions at once, or drawn per size while paired across conditions), and where it can (one
    condition, seed blocks shared by sizes: ``scipy.stats.bootstrap(tuple(rows), paired=True)``) it did
    not cover better: 0.917 against 0.913 for the percentile interval (300 data sets of 10 seeds, 5 sizes,
    400 resamples, nominal 0.95). A studentized interval would need a per-resample standard error of the
    exponent that the seeds, not the log-log residuals, determine. Coverage is measured in
    ``tests/test_scaling.py``.

    Each declared comparison ``(a, b)`` gets ``diff = exponent_a - exponent_b``, its CI, a two-sided bootstrap
    p-value ``min(1, 2 · min((1 + #{d ≤ 0}), (1 + #{d ≥ 0})) / (R + 1))`` over the resampled differences
    ``d``, and ``p_holm`` over the declared family.

    Args:
      x: ``[P]`` positive sizes (e.g. parameter counts), at least two distinct.
      per_seed: ``{condition: [P, S]}``; every condition the same ``S`` when ``paired``.
      comparisons: ``[(a, b), ...]`` condition names.
    """
    x = np.asarray(x, np.float64)
    check(
        x.ndim == 1 and np.all(x > 0) and len(np.unique(x)) >= 2,
        f"power-law sizes must be >= 2 distinct positive values, got {x.tolist()}",
    )
    ys = {c: np.asarray(v, np.float64) for c, v in per_seed.items()}
    for c, v in ys.items():
        check(v.ndim == 2 and v.shape[0] == len(x), f"condition {c!r}: values must be [P={len(x)}, S], got {v.shape}")
    shapes = {v.shape[1] for v in ys.values()}
    check(not paired or len(shapes) == 1, f"paired resampling needs one seed count for every condition, got {shapes}")
    for a, b in comparisons:
        for c in (a, b):
            check(c in ys, f"comparison {a}:{b} names {c!r}, which has no values; conditions: {', '.join(ys)}")
    rng = np.random.default_rng(seed)
    lx = np.log(x)
    boot = {}
    shared = None

    def draw(s):
        if seeds_shared_across_sizes:
            return np.broadcast_to(rng.integers(0, s, size=(n_resamples, 1, s)), (n_resamples, len(x), s))
        return rng.integers(0, s, size=(n_resamples, len(x), s))

    for c, v in ys.items():
        s = v.shape[1]
        if paired:
            shared = draw(s) if shared is None else shared
            idx = shared
        else:
            idx = draw(s)
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.nanmean(np.take_along_axis(v[None], idx, axis=2), axis=2)  # [R, P]
            ly = np.where(means > 0, np.log(means), np.nan)
        boot[c] = _loglog_slopes(lx, ly)[0]
    alpha = (1 - level) / 2
    fits = {}
    for c, v in ys.items():
        with np.errstate(invalid="ignore"):
            fit = fit_power_law(x, np.nanmean(v, axis=1))
        b = boot[c][np.isfinite(boot[c])]
        lo, hi = np.quantile(b, [alpha, 1 - alpha]) if len(b) else (_NAN, _NAN)
        fits[c] = {
            **fit,
            "ci_low": float(lo),
            "ci_high": float(hi),
            "boot_std": float(np.std(b, ddof=1)) if len(b) > 1 else _NAN,
            "n_resamples_used": int(len(b)),
        }
    out = {}
    for a, b in comparisons:
        d = boot[a] - boot[b]
        d = d[np.isfinite(d)]
        r = len(d)
        if r:
            lo, hi = np.quantile(d, [alpha, 1 - alpha])
            p = min(1.0, 2 * min(1 + np.sum(d <= 0), 1 + np.sum(d >= 0)) / (r + 1))
        else:
            lo = hi = p = _NAN
        out[f"{a} - {b}"] = {
            "diff": fits[a]["exponent"] - fits[b]["exponent"],
            "ci_low": float(lo),
            "ci_high": float(hi),
            "p": float(p),
            "n_resamples_used": r,
        }
    for r, q in zip(out.values(), holm([r["p"] for r in out.values()])):
        r["p_holm"] = float(q)
    return {
        "fits": fits,
        "comparisons": out,
        "seeds_shared_across_sizes": seeds_shared_across_sizes,
        "paired": paired,
        "level": level,
        "n_resamples": n_resamples,
        "test": "two-sided percentile bootstrap of the exponent difference, seeds resampled "
        + ("as blocks shared by every size" if seeds_shared_across_sizes else "independently per size"),
    }
