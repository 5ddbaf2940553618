"""Statistics over seeds: summaries with CIs, paired/Welch tests, effect sizes, fits.

All functions take numpy arrays on the host; NaNs (diverged seeds) are dropped
and the count of values used is reported.
"""

from __future__ import annotations

import numpy as np
from scipy import stats as _st


def _clean(x) -> np.ndarray:
    x = np.asarray(x, np.float64).ravel()
    return x[np.isfinite(x)]


def summarize(values, *, level: float = 0.95) -> dict:
    """Mean, sample std, and the Student-t confidence interval of the mean.

    Returns ``{"mean", "std", "ci_low", "ci_high", "n"}``; with one value the
    std and CI half-width are reported as NaN (they are not estimable).
    """
    x = _clean(values)
    n = len(x)
    if n == 0:
        return {"mean": float("nan"), "std": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": 0}
    mean = float(np.mean(x))
    if n == 1:
        return {"mean": mean, "std": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": 1}
    std = float(np.std(x, ddof=1))
    half = float(_st.t.ppf(0.5 + level / 2, n - 1) * std / np.sqrt(n))
    return {"mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half, "n": n}


def paired_test(a, b, *, level: float = 0.95) -> dict:
    """Paired t-test of ``mean(a - b) = 0`` over seeds (pairs with a NaN dropped).

    Effect size is Cohen's d_z = mean(diff) / std(diff).
    """
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    keep = np.isfinite(a) & np.isfinite(b)
    d = a[keep] - b[keep]
    s = summarize(d, level=level)
    if len(d) < 2 or np.std(d, ddof=1) == 0:
        t, p, dz = float("nan"), float("nan"), float("nan")
    else:
        t, p = _st.ttest_rel(a[keep], b[keep])
        dz = float(np.mean(d) / np.std(d, ddof=1))
    return {"test": "paired t", "diff_mean": s["mean"], "diff_ci_low": s["ci_low"], "diff_ci_high": s["ci_high"],
            "t": float(t), "p": float(p), "cohens_dz": dz, "n": s["n"]}


def welch_test(a, b) -> dict:
    """Welch's unequal-variance t-test with Hedges' g (bias-corrected pooled d)."""
    a, b = _clean(a), _clean(b)
    na, nb = len(a), len(b)
    if na < 2 or nb < 2:
        return {"test": "welch t", "t": float("nan"), "p": float("nan"), "hedges_g": float("nan"), "n_a": na, "n_b": nb}
    t, p = _st.ttest_ind(a, b, equal_var=False)
    pooled = np.sqrt(((na - 1) * np.var(a, ddof=1) + (nb - 1) * np.var(b, ddof=1)) / (na + nb - 2))
    g = (np.mean(a) - np.mean(b)) / pooled if pooled > 0 else float("nan")
    g *= 1 - 3 / (4 * (na + nb) - 9)
    return {"test": "welch t", "t": float(t), "p": float(p), "hedges_g": float(g), "n_a": na, "n_b": nb}


def bootstrap_ci(values, *, statistic=np.mean, level: float = 0.95, n_resamples: int = 2000, seed: int = 0):
    """Percentile bootstrap CI of ``statistic`` over seeds."""
    x = _clean(values)
    rng = np.random.default_rng(seed)
    boots = np.array([statistic(rng.choice(x, len(x), replace=True)) for _ in range(n_resamples)])
    return float(np.quantile(boots, 0.5 - level / 2)), float(np.quantile(boots, 0.5 + level / 2))


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
    """Least-squares fit of ``log y = log c + exponent · log x``.

    Returns ``{"exponent", "coef", "r2"}``; non-positive points are dropped.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    keep = (x > 0) & (y > 0) & np.isfinite(x) & np.isfinite(y)
    lx, ly = np.log(x[keep]), np.log(y[keep])
    slope, intercept = np.polyfit(lx, ly, 1)
    resid = ly - (slope * lx + intercept)
    r2 = 1 - np.sum(resid**2) / np.sum((ly - ly.mean()) ** 2)
    return {"exponent": float(slope), "coef": float(np.exp(intercept)), "r2": float(r2)}
