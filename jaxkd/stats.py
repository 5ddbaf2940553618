"""Statistics over seeds: summaries with CIs, hypothesis tests, effect sizes, corrected families, fits.

All functions take numpy arrays on the host; NaNs (diverged seeds) are dropped
(in paired tests, the whole pair) and the count of values used is reported. The
computations are scipy's (``scipy.stats.t``, ``sem``, ``ttest_rel``, ``ttest_ind``,
``permutation_test``, ``mannwhitneyu``, ``bootstrap``, ``linregress``); this module
chooses, labels and cleans. Hand-written: Hedges' g, Cohen's d_z, Holm's step-down and the
seed bootstrap of power-law exponents (scipy's ``bootstrap`` resamples one array, not seeds per shape).
"""

from __future__ import annotations

import numpy as np
from scipy import stats as _st

from jaxkd.errors import check, check_name

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


def bootstrap_diff_ci(
    a, b, *, paired: bool, level: float = 0.95, n_resamples: int = 2000, seed: int = 0, method: str = "percentile"
) -> tuple[float, float]:
    """Bootstrap CI of ``mean(a) - mean(b)`` (``scipy.stats.bootstrap``).

    Paired: seed pairs are resampled together. Unpaired: each group is resampled on
    its own. NaN bounds with fewer than two values (pairs) in a group.
    """
    if paired:
        a, b = _pairs(a, b)
        stat = _paired_mean_diff
    else:
        a, b = _clean(a), _clean(b)
        stat = _mean_diff
    if min(len(a), len(b)) < 2:
        return _NAN, _NAN
    res = _st.bootstrap(
        (a, b),
        stat,
        paired=paired,
        vectorized=True,
        axis=-1,
        n_resamples=n_resamples,
        confidence_level=level,
        method=method,
        rng=np.random.default_rng(seed),
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
    ``p``, ``p_holm`` (:func:`holm` over all declared comparisons; a comparison whose p is NaN
    counts in the family size and gets NaN), ``diff = mean(a) - mean(b)`` with its CI
    (``ci_low``, ``ci_high``: the t interval for ``welch``/``paired``, a bootstrap for the
    others, paired where the test pairs), ``effect_size`` (Hedges' g for independent tests,
    Cohen's d_z for paired ones; ``effect_size_kind`` says which), ``n_a``, ``n_b``.

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
    ps = np.array([r["p"] for r in out.values()])
    adj = holm(np.where(np.isfinite(ps), ps, 1.0))
    for r, p, q in zip(out.values(), ps, adj):
        r["p_holm"] = float(q) if np.isfinite(p) else _NAN
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
    if out:
        ps = np.array([r["p"] for r in out.values()])
        for r, p, q in zip(out.values(), ps, holm(np.where(np.isfinite(ps), ps, 1.0))):
            r["p_holm"] = float(q) if np.isfinite(p) else _NAN
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
