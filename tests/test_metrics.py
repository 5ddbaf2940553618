"""Functional metrics against NumPy references written from their formulas, scipy and scikit-learn."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats as sst
from scipy.spatial.distance import jensenshannon
from sklearn.metrics import mutual_info_score

from jaxkd import metrics, stats
from jaxkd.errors import ConfigError
from tests.conftest import TOL

N, C = 60, 5


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _logits(seed, shape, scale=2.0):
    return np.random.default_rng(seed).normal(0.0, scale, shape).astype(np.float32)


def _reference(s, t, y):
    """Per-example values from the formulas, float64, no JAX."""
    s, t = s.astype(np.float64), t.astype(np.float64)
    p, q = _softmax(s), _softmax(t)
    m = (p + q) / 2
    return {
        "acc": (s.argmax(-1) == y).astype(float),
        "loss": -np.log(p[np.arange(len(y)), y]),
        "agreement": (s.argmax(-1) == t.argmax(-1)).astype(float),
        "activation_distance": np.sqrt(((p - q) ** 2).sum(-1)),
        "js": 0.5 * (p * np.log(p / m)).sum(-1) + 0.5 * (q * np.log(q / m)).sum(-1),
        "cosine": (p * q).sum(-1) / np.sqrt((p * p).sum(-1) * (q * q).sum(-1)),
    }


def test_per_example_metrics_match_formulas_and_scipy():
    s, t = _logits(0, (N, C)), _logits(1, (N, C))
    s[0] = t[0]  # identical rows: distance 0, JS 0, cosine 1
    s[1] = [40.0, 0, 0, 0, 0]  # near one-hot against spread: probabilities underflow to 0
    ref = _reference(s, t, np.zeros(N, int))
    rtol, atol = TOL["float32"]
    got = {
        "activation_distance": jax.jit(metrics.activation_distance)(s, t),
        "js": jax.jit(metrics.js_divergence)(s, t),
        "cosine": jax.jit(metrics.cosine_similarity)(s, t),
    }
    for name, v in got.items():
        np.testing.assert_allclose(v, ref[name], rtol=10 * rtol, atol=10 * atol, err_msg=name)
    p, q = _softmax(s.astype(np.float64)), _softmax(t.astype(np.float64))
    # scipy's jensenshannon is the JS *distance* (square root), natural log by default.
    scipy_js = np.array([jensenshannon(pi, qi) ** 2 for pi, qi in zip(p, q)])
    np.testing.assert_allclose(got["js"], scipy_js, rtol=10 * rtol, atol=10 * atol)
    assert float(got["js"][0]) == 0.0 and np.all(np.asarray(got["js"]) <= np.log(2) + 1e-6)
    np.testing.assert_allclose(got["cosine"][0], 1.0, rtol=rtol)


@pytest.mark.parametrize("seed", [0, 1])
def test_mutual_information_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, C, 200)
    b = np.where(rng.random(200) < 0.6, a, rng.integers(0, C, 200))  # dependent labels
    b[b == 3] = 2  # a class one side never predicts
    mi = jax.jit(functools.partial(metrics.mutual_information, num_classes=C))
    np.testing.assert_allclose(mi(a, b), mutual_info_score(a, b), rtol=1e-5)
    mask = rng.random(200) < 0.3
    np.testing.assert_allclose(mi(a, b, where=mask), mutual_info_score(a[mask], b[mask]), rtol=1e-5)
    # Identical labels: MI = entropy; a constant: MI = 0; an empty set: NaN.
    freq = np.bincount(a, minlength=C) / len(a)
    np.testing.assert_allclose(mi(a, a), -(freq * np.log(freq)).sum(), rtol=1e-5)
    assert float(mi(a, np.zeros_like(a))) == 0.0
    assert np.isnan(mi(a, b, where=np.zeros(200, bool)))


def test_functional_metrics_match_boolean_indexed_reference():
    rng = np.random.default_rng(2)
    t = _logits(3, (N, C))
    y = np.where(rng.random(N) < 0.6, t.argmax(-1), rng.integers(0, C, N))  # teacher right ~60 %
    s = t + _logits(4, (N, C), scale=1.5)
    got = jax.jit(metrics.functional_metrics, static_argnames="num_classes")(s, t, y, num_classes=C)
    ref = _reference(s, t, y)
    ps, pt = s.argmax(-1), t.argmax(-1)
    subsets = {"all": np.ones(N, bool), "teacher_correct": pt == y, "teacher_incorrect": pt != y}
    assert 0 < subsets["teacher_correct"].sum() < N
    for subset, m in subsets.items():
        assert int(got[f"{subset}/n"]) == m.sum()
        for name, v in ref.items():
            np.testing.assert_allclose(got[f"{subset}/{name}"], v[m].mean(), rtol=1e-5, err_msg=f"{subset}/{name}")
        np.testing.assert_allclose(got[f"{subset}/mi"], mutual_info_score(ps[m], pt[m]), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got["all/teacher_acc"], (pt == y).mean(), rtol=1e-6)
    # Counts add up: the two subsets partition the test set, the three outcomes partition teacher-incorrect.
    assert int(got["teacher_correct/n"]) + int(got["teacher_incorrect/n"]) == N
    parts = ("copy_error", "other_error", "correct")
    assert sum(int(got[f"teacher_incorrect/n_{k}"]) for k in parts) == int(got["teacher_incorrect/n"])
    np.testing.assert_allclose(sum(float(got[f"teacher_incorrect/{k}"]) for k in parts), 1.0, rtol=1e-6)


def _onehot_logits(pred):
    return (10.0 * np.eye(3, dtype=np.float32))[np.asarray(pred)]


def test_copy_the_error_accounting_by_hand():
    #            0  1  2  3  4  5  6  7
    labels = [0, 1, 2, 0, 1, 2, 0, 1]
    teacher = [0, 1, 0, 1, 2, 0, 2, 1]  # wrong on 2, 3, 4, 5, 6
    student = [0, 2, 0, 1, 1, 1, 2, 1]  # on those: copies (2, 3, 6), right (4), other wrong (5)
    got = jax.jit(metrics.functional_metrics)(_onehot_logits(student), _onehot_logits(teacher), jnp.array(labels))
    assert [int(got[k]) for k in ("all/n", "teacher_correct/n", "teacher_incorrect/n")] == [8, 3, 5]
    counts = [int(got[f"teacher_incorrect/n_{k}"]) for k in ("copy_error", "correct", "other_error")]
    assert counts == [3, 1, 1]
    np.testing.assert_allclose(
        [
            got["teacher_incorrect/copy_error"],
            got["teacher_incorrect/agreement"],
            got["teacher_incorrect/correct"],
            got["teacher_incorrect/other_error"],
        ],
        [0.6, 0.6, 0.2, 0.2],
        rtol=1e-6,
    )
    # Teacher-correct: the student agrees on 0 and 7 and not on 1.
    np.testing.assert_allclose([got["teacher_correct/agreement"], got["teacher_correct/acc"]], [2 / 3, 2 / 3])
    np.testing.assert_allclose(got["all/acc"], 3 / 8)


def test_empty_subset_gives_nan_and_zero_count():
    t = _onehot_logits([0, 1, 2, 1])
    got = jax.jit(metrics.functional_metrics)(_onehot_logits([0, 1, 1, 1]), t, jnp.array([0, 1, 2, 1]))
    assert int(got["teacher_incorrect/n"]) == 0 and int(got["teacher_incorrect/n_copy_error"]) == 0
    for k in ("acc", "loss", "agreement", "js", "cosine", "mi", "copy_error", "other_error"):
        assert np.isnan(got[f"teacher_incorrect/{k}"]), k
    np.testing.assert_allclose(got["teacher_correct/agreement"], 0.75)


@pytest.mark.parametrize("per_seed_teacher", [False, True])
def test_vmap_over_seeds_equals_loop(per_seed_teacher):
    S = 3
    s = _logits(5, (S, N, C))
    t = _logits(6, (S, N, C) if per_seed_teacher else (N, C))
    y = np.random.default_rng(7).integers(0, C, N)
    got = jax.jit(metrics.functional_metrics_over_seeds)(s, t, y)
    assert got["all/js"].shape == (S,)
    one = jax.jit(metrics.functional_metrics)
    for i in range(S):
        ref = one(s[i], t[i] if per_seed_teacher else t, y)
        for k, v in ref.items():
            np.testing.assert_allclose(got[k][i], v, rtol=1e-6, atol=1e-7, err_msg=k)
    # Different seeds really give different values (the seed axis is not broadcast from one seed).
    assert len(set(np.asarray(got["all/js"]).tolist())) == S


def test_bad_shapes_are_config_errors():
    s = _logits(0, (N, C))
    with pytest.raises(ConfigError, match="labels must have shape"):
        metrics.functional_metrics(s, s, np.zeros(N + 1, int))
    with pytest.raises(ConfigError, match="one shape"):
        metrics.functional_metrics(s, s[:, :3], np.zeros(N, int))
    with pytest.raises(ConfigError, match="num_classes=4"):
        metrics.functional_metrics(s, s, np.zeros(N, int), num_classes=4)


# ---- asymmetric payoff -----------------------------------------------------------------------------------

COND = {
    "teacher_correct/agreement": np.array([0.92, 0.94, 0.90, 0.92]),
    "teacher_incorrect/agreement": np.array([0.60, 0.66, 0.55, 0.59]),
}
CTRL = {
    "teacher_correct/agreement": np.array([0.90, 0.91, 0.89, 0.90]),
    "teacher_incorrect/agreement": np.array([0.20, 0.25, 0.15, 0.20]),
}


def _rel(x, y):
    """Relative gain from its definition: (mean x - mean y) / (1 - mean y), over the last axis."""
    return (x.mean(-1) - y.mean(-1)) / (1 - y.mean(-1))


def _bootstrap_t(stat, na, nb, *, paired, n_resamples, seed, level=0.95):
    """The bootstrap-t interval of ``stat(i, j)`` (seed indices of the condition, of the control) from its
    definition (Efron & Tibshirani 1993, eq. 12.22 and 11.5), written with loops: R draws of seed indices with
    replacement (paired: one draw for both arms; unpaired: the condition's, then the control's), the jackknife
    standard error of each (delete-one, per group when unpaired), ``t* = (θ* − θ) / se*`` (±∞ when a resample
    has no spread), sorted, and the ((R + 1) α/2)-th and ((R + 1)(1 − α/2))-th of them (1-based)."""

    def jack(i, j):
        if paired:
            parts = [[stat(np.delete(i, k), np.delete(j, k)) for k in range(len(i))]]
        else:
            parts = [
                [stat(np.delete(i, k), j) for k in range(len(i))],
                [stat(i, np.delete(j, k)) for k in range(len(j))],
            ]
        var = 0.0
        for th in parts:
            n, m = len(th), sum(th) / len(th)
            var += (n - 1) / n * sum((v - m) ** 2 for v in th)
        return np.sqrt(var)

    rng = np.random.default_rng(seed)
    draws_i = rng.integers(0, na, (n_resamples, na))
    draws_j = draws_i if paired else rng.integers(0, nb, (n_resamples, nb))
    i0, j0 = np.arange(na), np.arange(nb)
    est, se = stat(i0, j0), jack(i0, j0)
    t = []
    for i, j in zip(draws_i, draws_j):
        e, s = stat(i, j), jack(i, j)
        # No spread (se* zero up to rounding, <= 1e-9 se): t* is infinite, or 0 where θ* is θ up to rounding.
        t.append((e - est) / s if s > 1e-9 * se else 0.0 if abs(e - est) <= 1e-9 * se else np.inf * np.sign(e - est))
    t = sorted(t)
    k = int((n_resamples + 1) * (1 - level) / 2)  # 2000 resamples, 95 %: the 50th and the 1951st
    return est - t[n_resamples - k] * se, est - t[k - 1] * se


@pytest.mark.parametrize("paired", [True, False])
def test_payoff_on_hand_made_numbers(paired):
    out = metrics.asymmetric_payoff(COND, CTRL, paired=paired)
    # correct: gain 0.92 - 0.90 = 0.02 of headroom 0.10 -> 0.2; incorrect: 0.40 of 0.80 -> 0.5.
    np.testing.assert_allclose(
        [out["teacher_correct/gain"], out["teacher_correct/headroom"], out["teacher_correct/relative_gain"]],
        [0.02, 0.10, 0.2],
        rtol=1e-9,
    )
    np.testing.assert_allclose(
        [out["teacher_incorrect/gain"], out["teacher_incorrect/headroom"], out["teacher_incorrect/relative_gain"]],
        [0.40, 0.80, 0.5],
        rtol=1e-9,
    )
    np.testing.assert_allclose(out["asymmetry"], 0.3, rtol=1e-9)
    for s in ("teacher_correct", "teacher_incorrect"):
        a, b = COND[f"{s}/agreement"], CTRL[f"{s}/agreement"]
        res = sst.ttest_rel(a, b) if paired else sst.ttest_ind(a, b, equal_var=False)
        ci = res.confidence_interval(0.95)
        np.testing.assert_allclose(out[f"{s}/p"], res.pvalue, rtol=1e-9)
        np.testing.assert_allclose([out[f"{s}/gain_ci_low"], out[f"{s}/gain_ci_high"]], [ci.low, ci.high], rtol=1e-9)
        lo, hi = _bootstrap_t(lambda i, j, a=a, b=b: _rel(a[i], b[j]), 4, 4, paired=paired, n_resamples=2000, seed=0)
        # Defaults: 2000 resamples, seed 0, level 0.95; a relative gain is at most 1.
        np.testing.assert_allclose(
            [out[f"{s}/relative_gain_ci_low"], out[f"{s}/relative_gain_ci_high"]], [lo, min(hi, 1.0)], rtol=1e-9
        )
    ac, ai = COND["teacher_correct/agreement"], COND["teacher_incorrect/agreement"]
    bc, bi = CTRL["teacher_correct/agreement"], CTRL["teacher_incorrect/agreement"]
    ref = _bootstrap_t(
        lambda i, j: _rel(ai[i], bi[j]) - _rel(ac[i], bc[j]), 4, 4, paired=paired, n_resamples=2000, seed=0
    )
    np.testing.assert_allclose([out["asymmetry_ci_low"], out["asymmetry_ci_high"]], ref, rtol=1e-9)
    assert np.isfinite([v for k, v in out.items() if "_ci_" in k]).all()
    assert out["effect_size_kind"] == ("cohens_dz" if paired else "hedges_g")
    assert (out["asymmetry_n_condition"], out["asymmetry_n_control"]) == (4, 4)


@pytest.mark.parametrize("paired", [True, False])
def test_payoff_bootstrap_t_resamples_seeds_with_a_jackknife_standard_error(paired):
    """The relative gains' and the asymmetry's CIs are the bootstrap-t intervals written with loops above
    (paired: seeds resampled together across all four arrays; unpaired: each group alone). For a difference of
    means the jackknife standard error is the textbook one (paired: sd(d)/√n; unpaired: Welch's
    √(s_a²/n_a + s_b²/n_b)), so the seed bootstrap of a mean difference is stats.bootstrap_diff_ci's
    studentized interval, which uses those formulas and the same draws."""
    rng = np.random.default_rng(8)
    ac, ai = rng.uniform(0.6, 0.9, 7), rng.uniform(0.3, 0.6, 7)
    bc, bi = rng.uniform(0.5, 0.8, 7), rng.uniform(0.1, 0.4, 7)
    cond = {"teacher_correct/agreement": ac, "teacher_incorrect/agreement": ai}
    ctrl = {"teacher_correct/agreement": bc, "teacher_incorrect/agreement": bi}
    out = metrics.asymmetric_payoff(cond, ctrl, paired=paired, n_resamples=500, seed=3, level=0.9)
    for s, x, y in (("teacher_correct", ac, bc), ("teacher_incorrect", ai, bi)):
        lo, hi = _bootstrap_t(
            lambda i, j, x=x, y=y: _rel(x[i], y[j]), 7, 7, paired=paired, n_resamples=500, seed=3, level=0.9
        )
        np.testing.assert_allclose(
            [out[f"{s}/relative_gain_ci_low"], out[f"{s}/relative_gain_ci_high"]], [lo, min(hi, 1.0)], rtol=1e-12
        )
    np.testing.assert_allclose(out["asymmetry"], _rel(ai, bi) - _rel(ac, bc), rtol=1e-12)
    ref = _bootstrap_t(
        lambda i, j: _rel(ai[i], bi[j]) - _rel(ac[i], bc[j]), 7, 7, paired=paired, n_resamples=500, seed=3, level=0.9
    )
    np.testing.assert_allclose([out["asymmetry_ci_low"], out["asymmetry_ci_high"]], ref, rtol=1e-12)
    # The jackknife of a mean difference and the studentized interval of stats.
    diff = lambda i, j: ac[i].mean(-1) - bc[j].mean(-1)
    se = metrics._jackknife_se(diff, np.arange(7), np.arange(7), paired=paired)
    want = sst.sem(ac - bc) if paired else np.hypot(sst.sem(ac), sst.sem(bc))
    np.testing.assert_allclose(se, want, rtol=1e-12)
    _, lo, hi = metrics._seed_bootstrap(diff, 7, 7, paired=paired, level=0.9, n_resamples=999, seed=4)
    ref = stats.bootstrap_diff_ci(ac, bc, paired=paired, level=0.9, n_resamples=999, seed=4)
    np.testing.assert_allclose([lo, hi], ref, rtol=1e-10)
    # Equal subsets: every resample keeps a seed's two subsets together, so the asymmetry is 0 in each.
    same = metrics.asymmetric_payoff(
        {"teacher_correct/agreement": ac, "teacher_incorrect/agreement": ac},
        {"teacher_correct/agreement": bc, "teacher_incorrect/agreement": bc},
        paired=paired,
        n_resamples=200,
    )
    assert (same["asymmetry"], same["asymmetry_ci_low"], same["asymmetry_ci_high"]) == (0.0, 0.0, 0.0)


def test_payoff_drops_nan_seeds_and_reports_errors():
    cond = {k: np.append(v, np.nan) for k, v in COND.items()}
    ctrl = {k: np.append(v, 0.5) for k, v in CTRL.items()}
    out = metrics.asymmetric_payoff(cond, ctrl, paired=True)
    assert out["teacher_incorrect/n_condition"] == 4
    np.testing.assert_allclose(out["teacher_incorrect/relative_gain"], 0.5, rtol=1e-9)
    with pytest.raises(ConfigError, match="teacher_incorrect/agreement"):
        metrics.asymmetric_payoff({"teacher_correct/agreement": [0.9]}, CTRL, paired=False)
    with pytest.raises(ConfigError, match="as many condition seeds"):
        metrics.asymmetric_payoff(COND, ctrl, paired=True)
    at_ceiling = dict(CTRL, **{"teacher_correct/agreement": np.ones(4)})
    assert np.isnan(metrics.asymmetric_payoff(COND, at_ceiling, paired=False)["teacher_correct/relative_gain"])


def test_payoff_interval_edges():
    """A relative gain's upper bound is clipped at 1 (here the bootstrap-t bound is 1.003); 3 seeds have too many
    resamples without spread for a finite bound (NaN), 4 do not; a resample whose control is at its ceiling makes
    the bounds NaN; too few resamples for the level is one line."""
    a, b = np.array([0.99, 1.0, 0.93, 1.0, 0.96, 0.999]), np.array([0.5, 0.6, 0.4, 0.55, 0.45, 0.5])
    cond = {"teacher_correct/agreement": b, "teacher_incorrect/agreement": a}
    ctrl = {"teacher_correct/agreement": b - 0.1, "teacher_incorrect/agreement": b}
    out = metrics.asymmetric_payoff(cond, ctrl, paired=True, n_resamples=999)
    lo, hi = _bootstrap_t(lambda i, j: _rel(a[i], b[j]), 6, 6, paired=True, n_resamples=999, seed=0)
    assert hi > 1.0
    np.testing.assert_allclose(out["teacher_incorrect/relative_gain_ci_low"], lo, rtol=1e-12)
    assert out["teacher_incorrect/relative_gain_ci_high"] == 1.0
    for n, finite in ((3, False), (4, True)):
        few = {k: v[:n] for k, v in COND.items()}
        out = metrics.asymmetric_payoff(few, {k: v[:n] for k, v in CTRL.items()}, paired=True)
        bounds = [out[k] for k in ("teacher_incorrect/relative_gain_ci_low", "asymmetry_ci_high")]
        assert np.all(np.isfinite(bounds)) == finite and np.isfinite(out["asymmetry"]), (n, bounds)
    # Eight control seeds, six at the ceiling: no leave-one-out set is all at 1, but a tenth of the resamples are.
    ceiling = {k: np.tile(v, 2) for k, v in CTRL.items()}
    ceiling["teacher_correct/agreement"] = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.98, 0.97])
    out = metrics.asymmetric_payoff(COND, ceiling, paired=False)
    np.testing.assert_allclose(out["teacher_correct/relative_gain"], (0.92 - 0.99375) / 0.00625, rtol=1e-9)
    assert np.isfinite(out["teacher_incorrect/relative_gain_ci_high"]), out
    assert np.isnan(
        [out[f"{k}_ci_{e}"] for k in ("teacher_correct/relative_gain", "asymmetry") for e in ("low", "high")]
    ).all()
    with pytest.raises(ConfigError, match="n_resamples=30 is too few for a 0.95 studentized interval: use at least 39"):
        metrics.asymmetric_payoff(COND, CTRL, paired=True, n_resamples=30)


@pytest.mark.parametrize("paired", [True, False])
def test_asymmetry_and_its_ci_come_from_the_same_seeds(paired):
    """A seed whose teacher made no error has no teacher-incorrect value (NaN) but a teacher-correct one. The
    asymmetry is one statistic on the seeds finite in both subsets, as its CI is: not the difference of two
    relative gains over different seed sets (the teacher-correct gain would keep the seed the other drops)."""
    rng = np.random.default_rng(9)
    ac, ai = rng.uniform(0.6, 0.9, 6), rng.uniform(0.3, 0.6, 6)
    bc, bi = rng.uniform(0.5, 0.8, 6), rng.uniform(0.1, 0.4, 6)
    ai[0] = np.nan  # the condition's seed 0: its teacher was right on every example
    cond = {"teacher_correct/agreement": ac, "teacher_incorrect/agreement": ai}
    ctrl = {"teacher_correct/agreement": bc, "teacher_incorrect/agreement": bi}
    out = metrics.asymmetric_payoff(cond, ctrl, paired=paired, n_resamples=500, seed=3)
    k = np.arange(1, 6)  # the condition keeps seeds 1..5; the control keeps all six unless paired
    kb = k if paired else np.arange(6)
    want = _rel(ai[k], bi[kb]) - _rel(ac[k], bc[kb])
    np.testing.assert_allclose(out["asymmetry"], want, rtol=1e-12)
    assert (out["asymmetry_n_condition"], out["asymmetry_n_control"]) == (5, len(kb))
    # The two reported relative gains use their own subsets' seeds (teacher-correct keeps seed 0): their
    # difference is another number, so this data set tells the two apart.
    np.testing.assert_allclose(out["teacher_correct/relative_gain"], _rel(ac, bc), rtol=1e-12)
    old = out["teacher_incorrect/relative_gain"] - out["teacher_correct/relative_gain"]
    assert abs(old - want) > 0.01, (old, want)
    x, y, v, w = ai[k], bi[kb], ac[k], bc[kb]
    ref = _bootstrap_t(
        lambda i, j: _rel(x[i], y[j]) - _rel(v[i], w[j]), 5, len(kb), paired=paired, n_resamples=500, seed=3
    )
    np.testing.assert_allclose([out["asymmetry_ci_low"], out["asymmetry_ci_high"]], ref, rtol=1e-12)


# ---- coverage of the payoff's intervals ------------------------------------------------------------------

# Per-seed values with known relative gains. Control b ~ Beta with mean m_b; condition a = b' + (1 − b') U with
# U = lo + (1 − lo) V, V ~ Beta with mean m_v, independent of b' (b' = b when paired, an independent draw of b
# otherwise). Then E a = E b + E(1 − b) E U, so the relative gain (E a − E b) / (1 − E b) is E U exactly, and the
# asymmetry is E U_incorrect − E U_correct. Values are in [0, 1]. The sizes are functional_kd's: control
# agreement 0.99 ± 0.006 where the teacher is right, 0.30 ± 0.14 where it is wrong, per-seed gains that
# scatter more than their means (teacher correct: −0.09 ± 0.43; teacher incorrect: 0.40 ± 0.24).
PAYOFF_MODEL = {  # subset: (m_b, concentration of b, lo, m_v, concentration of V)
    "teacher_correct": (0.99, 275.0, -1.0, 0.4545, 4.4),
    "teacher_incorrect": (0.30, 9.3, 0.0, 0.4, 3.0),
}


def _payoff_data(rng, trials, n, *, paired):
    beta = lambda m, k: rng.beta(m * k, (1 - m) * k, (trials, n))
    cond, ctrl, truth = {}, {}, {}
    for s, (mb, kb, lo, mv, kv) in PAYOFF_MODEL.items():
        b = beta(mb, kb)
        b2 = b if paired else beta(mb, kb)
        cond[s] = b2 + (1 - b2) * (lo + (1 - lo) * beta(mv, kv))
        ctrl[s] = b
        truth[s] = lo + (1 - lo) * mv
    return cond, ctrl, truth


def _binomial_bound(trials, level=0.95, k=3.0):
    """Hits of a ``level`` interval over ``trials`` independent data sets: mean ± k binomial standard errors."""
    se = np.sqrt(level * (1 - level) * trials)
    return level * trials - k * se, level * trials + k * se


@pytest.mark.parametrize("paired", [True, False])
def test_payoff_intervals_cover_at_8_seeds_and_percentile_does_not(paired):
    """300 data sets of 8 seeds from PAYOFF_MODEL, nominal 0.95, 999 resamples. The binomial bound is 285 ± 11.3
    hits, [273.6, 296.4]. Hits (teacher-correct gain, teacher-incorrect gain, asymmetry): studentized, as
    asymmetric_payoff gives them, paired 286, 289, 282 (0.95, 0.96, 0.94), unpaired 283, 282, 277 (0.94, 0.94,
    0.92); the percentile interval on the same data (from its definition below; what asymmetric_payoff gave
    before) paired 265, 267, 256 (0.88, 0.89, 0.85), unpaired 267, 267, 268 (0.89), all below the bound."""
    rng = np.random.default_rng(21)
    trials, n, R = 300, 8, 999
    cond, ctrl, truth = _payoff_data(rng, trials, n, paired=paired)
    truth["asymmetry"] = truth["teacher_incorrect"] - truth["teacher_correct"]
    keys = {s: (f"{s}/relative_gain_ci_low", f"{s}/relative_gain_ci_high") for s in PAYOFF_MODEL}
    keys["asymmetry"] = ("asymmetry_ci_low", "asymmetry_ci_high")
    hits = dict.fromkeys(keys, 0)
    for t in range(trials):
        out = metrics.asymmetric_payoff(
            {f"{s}/agreement": v[t] for s, v in cond.items()},
            {f"{s}/agreement": v[t] for s, v in ctrl.items()},
            paired=paired,
            n_resamples=R,
        )
        for name, (lo, hi) in keys.items():
            hits[name] += bool(out[lo] <= truth[name] <= out[hi])
    # The percentile interval from its definition, every data set at once: the 2.5 % and 97.5 % quantiles of the
    # statistic over R resamples of seed indices (paired: one draw for both arms).
    i = rng.integers(0, n, (R, n))
    j = i if paired else rng.integers(0, n, (R, n))
    rel = {s: _rel(cond[s][:, i], ctrl[s][:, j]) for s in PAYOFF_MODEL}  # [trials, R]
    rel["asymmetry"] = rel["teacher_incorrect"] - rel["teacher_correct"]
    pct = {
        name: int(np.sum((np.percentile(v, 2.5, -1) <= truth[name]) & (truth[name] <= np.percentile(v, 97.5, -1))))
        for name, v in rel.items()
    }
    lo, hi = _binomial_bound(trials)
    assert all(lo <= h <= hi for h in hits.values()) and all(h < lo for h in pct.values()), (hits, pct, lo, hi)
