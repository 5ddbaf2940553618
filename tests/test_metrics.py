"""Functional metrics against NumPy references written from their formulas, scipy and scikit-learn."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats as sst
from scipy.spatial.distance import jensenshannon
from sklearn.metrics import mutual_info_score

from jaxkd import metrics
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


def _percentile_boot(stat, na, nb, *, paired, n_resamples, seed, level=0.95):
    """Percentile bootstrap from its definition: R draws of seed indices with replacement (paired: one draw for
    both arms; unpaired: the condition's, then the control's, as scipy draws them), the statistic on each, and
    the α/2 and 1 - α/2 quantiles (linear interpolation)."""
    rng = np.random.default_rng(seed)
    i = rng.integers(0, na, (n_resamples, na))
    j = i if paired else rng.integers(0, nb, (n_resamples, nb))
    a = (1 - level) / 2
    return tuple(np.percentile(stat(i, j), [100 * a, 100 * (1 - a)]))


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
        ref = _percentile_boot(lambda i, j, a=a, b=b: _rel(a[i], b[j]), 4, 4, paired=paired, n_resamples=2000, seed=0)
        np.testing.assert_allclose(
            [out[f"{s}/relative_gain_ci_low"], out[f"{s}/relative_gain_ci_high"]], ref, rtol=1e-9
        )
    ac, ai = COND["teacher_correct/agreement"], COND["teacher_incorrect/agreement"]
    bc, bi = CTRL["teacher_correct/agreement"], CTRL["teacher_incorrect/agreement"]
    ref = _percentile_boot(
        lambda i, j: _rel(ai[i], bi[j]) - _rel(ac[i], bc[j]), 4, 4, paired=paired, n_resamples=2000, seed=0
    )
    np.testing.assert_allclose([out["asymmetry_ci_low"], out["asymmetry_ci_high"]], ref, rtol=1e-9)
    assert out["effect_size_kind"] == ("cohens_dz" if paired else "hedges_g")
    assert (out["asymmetry_n_condition"], out["asymmetry_n_control"]) == (4, 4)


@pytest.mark.parametrize("paired", [True, False])
def test_payoff_bootstrap_resamples_seeds_as_scipy_does(paired):
    """The CIs equal scipy.stats.bootstrap of the same statistic on the values themselves (paired: seeds
    resampled together across all four arrays; unpaired: each group alone)."""
    rng = np.random.default_rng(8)
    ac, ai = rng.uniform(0.6, 0.9, 7), rng.uniform(0.3, 0.6, 7)
    bc, bi = rng.uniform(0.5, 0.8, 7), rng.uniform(0.1, 0.4, 7)
    cond = {"teacher_correct/agreement": ac, "teacher_incorrect/agreement": ai}
    ctrl = {"teacher_correct/agreement": bc, "teacher_incorrect/agreement": bi}
    out = metrics.asymmetric_payoff(cond, ctrl, paired=paired, n_resamples=500, seed=3)
    rel = lambda x, y, axis=-1: (x.mean(axis) - y.mean(axis)) / (1 - y.mean(axis))
    kw = dict(paired=paired, vectorized=True, n_resamples=500, method="percentile")
    res = sst.bootstrap((ac, bc), rel, rng=np.random.default_rng(3), **kw)
    np.testing.assert_allclose(
        [out["teacher_correct/relative_gain_ci_low"], out["teacher_correct/relative_gain_ci_high"]],
        [res.confidence_interval.low, res.confidence_interval.high],
        rtol=1e-12,
    )
    np.testing.assert_allclose(out["asymmetry"], rel(ai, bi) - rel(ac, bc), rtol=1e-12)
    if paired:
        res = sst.bootstrap(
            (ac, ai, bc, bi), lambda w, x, y, z, axis: rel(x, z) - rel(w, y), rng=np.random.default_rng(3), **kw
        )
        np.testing.assert_allclose(
            [out["asymmetry_ci_low"], out["asymmetry_ci_high"]],
            [res.confidence_interval.low, res.confidence_interval.high],
            rtol=1e-12,
        )
    ref = _percentile_boot(
        lambda i, j: _rel(ai[i], bi[j]) - _rel(ac[i], bc[j]), 7, 7, paired=paired, n_resamples=500, seed=3
    )
    np.testing.assert_allclose([out["asymmetry_ci_low"], out["asymmetry_ci_high"]], ref, rtol=1e-12)
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
    ref = _percentile_boot(
        lambda i, j: _rel(x[i], y[j]) - _rel(v[i], w[j]), 5, len(kb), paired=paired, n_resamples=500, seed=3
    )
    np.testing.assert_allclose([out["asymmetry_ci_low"], out["asymmetry_ci_high"]], ref, rtol=1e-12)
