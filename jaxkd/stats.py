"""Statistics over seeds: summaries with CIs, paired/Welch tests, effect sizes, fits.

All functions take numpy arrays on the host; NaNs (diverged seeds) are dropped
and the count of values used is reported. The computations are scipy's
(``scipy.stats.t``, ``sem``, ``ttest_rel``, ``ttest_ind``, ``bootstrap``,
``linregress``); this module chooses, labels and cleans.
"""

from __future__ import annotations

import numpy as np
from scipy import stats as _st

_NAN = float("nan")


def _clean(x) -> np.ndarray:
    x = np.asarray(x, np.float64).ravel()
    return x[np.isfinite(x)]


def summarize(values, *, level: float = 0.95) -> dict:
    """Mean, sample std, and the Student-t confidence interval of the mean.

    Returns ``{"mean", "std", "ci_low", "ci_high", "n"}``; with one value the
    std and CI are reported as NaN (they are not estimable).
    """
    x = _clean(values)
    n = len(x)
    if n == 0:
        return {"mean": _NAN, "std": _NAN, "ci_low": _NAN, "ci_high": _NAN, "n": 0}
    mean = float(np.mean(x))
    if n == 1:
        return {"mean": mean, "std": _NAN, "ci_low": _NAN, "ci_high": _NAN, "n": 1}
    std = float(np.std(x, ddof=1))
    if std == 0:
        lo = hi = mean
    else:
        lo, hi = _st.t.interval(level, n - 1, loc=mean, scale=_st.sem(x))
    return {"mean": mean, "std": std, "ci_low": float(lo), "ci_high": float(hi), "n": n}


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


def welch_test(a, b) -> dict:
    """Welch's unequal-variance t-test with Hedges' g (:func:`hedges_g`)."""
    a, b = _clean(a), _clean(b)
    na, nb = len(a), len(b)
    if na < 2 or nb < 2:
        return {"test": "welch t", "t": _NAN, "p": _NAN, "df": _NAN, "hedges_g": _NAN, "n_a": na, "n_b": nb}
    res = _st.ttest_ind(a, b, equal_var=False)
    return {
        "test": "welch t",
        "t": float(res.statistic),
        "p": float(res.pvalue),
        "df": float(res.df),
        "hedges_g": hedges_g(a, b),
        "n_a": na,
        "n_b": nb,
    }


def bootstrap_ci(
    values,
    *,
    statistic=np.mean,
    level: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    method: str = "percentile",
) -> tuple[float, float]:
    """Bootstrap CI of ``statistic`` over seeds (``scipy.stats.bootstrap``; percentile by default,
    ``method="BCa"`` for the bias-corrected one). NaN bounds with fewer than two values."""
    x = _clean(values)
    if len(x) < 2:
        return _NAN, _NAN
    res = _st.bootstrap(
        (x,), statistic, n_resamples=n_resamples, confidence_level=level, method=method, rng=np.random.default_rng(seed)
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def holm(p_values) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (same order as given)."""
    p = np.asarray(p_values, np.float64)
    order = np.argsort(p)
    m = len(p)
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, (m - rank) * p[i])
        adj[i] = min(1.0, running)
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
