import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkd import losses
from tests.conftest import TOL


def np_log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


@pytest.fixture
def logits():
    rng = np.random.default_rng(0)
    return rng.normal(size=(6, 5)).astype(np.float32) * 3, rng.normal(size=(6, 5)).astype(np.float32) * 3


def test_cross_entropy_matches_numpy(logits):
    s, _ = logits
    y = np.array([0, 1, 2, 3, 4, 0])
    expected = -np_log_softmax(s.astype(np.float64))[np.arange(6), y]
    got = jax.jit(losses.cross_entropy)(s, y)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0, 10.0])
def test_kd_loss_matches_numpy(logits, T):
    s, t = (x.astype(np.float64) for x in logits)
    log_ps, log_pt = np_log_softmax(s / T), np_log_softmax(t / T)
    expected = T**2 * (np.exp(log_pt) * (log_pt - log_ps)).sum(-1)
    got = jax.jit(lambda a, b: losses.kd_loss(a, b, temperature=T))(*logits)
    rtol, atol = 1e-4, 1e-5
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)


def test_kd_loss_zero_for_equal_logits_and_positive_otherwise(logits):
    s, t = logits
    np.testing.assert_allclose(losses.kd_loss(s, s, temperature=3.0), 0.0, atol=1e-5)
    assert np.all(np.asarray(losses.kd_loss(s, t, temperature=3.0)) > 1e-3)
    # Shifting logits by a constant leaves softmax and hence the loss unchanged.
    np.testing.assert_allclose(losses.kd_loss(s + 7.0, s, temperature=3.0), 0.0, atol=1e-5)


def test_kd_gradient_is_T_times_probability_gap(logits):
    """d/ds [T² KL(p_t || p_s)] = T (softmax(s/T) - softmax(t/T)): the T² keeps the scale."""
    s, t = logits
    for T in (1.0, 4.0, 16.0):
        g = jax.grad(lambda z, T=T: jnp.sum(losses.kd_loss(z, t, temperature=T)))(s)
        expected = T * (jax.nn.softmax(s / T) - jax.nn.softmax(t / T))
        np.testing.assert_allclose(g, expected, rtol=1e-4, atol=1e-6)


def test_kd_large_T_limit_is_logit_matching(logits):
    """As T → ∞, T² KL → ||(s - mean s) - (t - mean t)||² / (2C)."""
    s, t = (x.astype(np.float64) for x in logits)
    T = 1e3
    with jax.enable_x64(True):
        got = np.asarray(losses.kd_loss(jnp.asarray(s), jnp.asarray(t), temperature=T))
    d = (s - s.mean(-1, keepdims=True)) - (t - t.mean(-1, keepdims=True))
    np.testing.assert_allclose(got, (d**2).sum(-1) / (2 * s.shape[-1]), rtol=2e-3)


def test_kd_gradient_matches_finite_differences(logits):
    s, t = (x.astype(np.float64) for x in logits)
    with jax.enable_x64(True):
        f = lambda z: jnp.sum(losses.kd_loss(z, jnp.asarray(t), temperature=2.5))
        g = np.asarray(jax.grad(f)(jnp.asarray(s)))
        eps = 1e-6
        fd = np.zeros_like(s)
        for i in range(s.shape[0]):
            for j in range(s.shape[1]):
                e = np.zeros_like(s)
                e[i, j] = eps
                fd[i, j] = (f(jnp.asarray(s + e)) - f(jnp.asarray(s - e))) / (2 * eps)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)


def test_teacher_is_not_differentiated(logits):
    s, t = logits
    g = jax.grad(lambda z: jnp.sum(losses.kd_loss(s, z, temperature=2.0)))(t)
    np.testing.assert_array_equal(g, 0.0)


# ---------------------------------------------------------------- label smoothing


def np_softmax(z):
    return np.exp(np_log_softmax(z))


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.35])
def test_label_smoothing_ce_matches_numpy_with_traced_smoothing(logits, eps):
    s, _ = logits
    y = np.array([0, 1, 2, 3, 4, 2])
    C = s.shape[-1]
    target = np.full((6, C), eps / C)
    target[np.arange(6), y] += 1.0 - eps
    expected = -(target * np_log_softmax(s.astype(np.float64))).sum(-1)
    # smoothing is an argument of the jitted function, hence traced.
    got = jax.jit(lambda z, lab, e: losses.label_smoothing_ce(z, lab, smoothing=e))(s, y, jnp.float32(eps))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_label_smoothing_ce_agrees_with_optax_and_reduces_to_ce(logits):
    import optax

    s, _ = logits
    y = np.array([0, 1, 2, 3, 4, 2])
    ref = optax.softmax_cross_entropy(s, optax.smooth_labels(jax.nn.one_hot(y, 5), 0.2))
    np.testing.assert_allclose(losses.label_smoothing_ce(s, y, smoothing=0.2), ref, rtol=1e-5, atol=1e-6)
    rtol, atol = TOL["float32"]
    np.testing.assert_allclose(
        losses.label_smoothing_ce(s, y, smoothing=0.0), losses.cross_entropy(s, y), rtol=rtol, atol=atol
    )


# ---------------------------------------------------------------- KL towards a given target (CD)


def test_soft_target_kl_with_zero_target_entries_matches_numpy_and_has_finite_gradient(logits):
    """Targets with exact zeros (one-hot rows: CD's Q at smoothing 0): 0·log 0 = 0, finite value and gradient."""
    s, _ = logits
    T = 2.0
    q = np.zeros((6, 5), np.float32)
    q[np.arange(6), [0, 1, 2, 3, 4, 2]] = 1.0  # one-hot rows
    q[4] = [0.5, 0.0, 0.25, 0.25, 0.0]  # a row with both zero and non-zero entries
    q64, z64 = q.astype(np.float64), s.astype(np.float64) / T
    log_p = np_log_softmax(z64)
    nz = q64 > 0
    q_log_q = np.where(nz, q64 * np.log(np.where(nz, q64, 1.0)), 0.0)  # 0·log 0 = 0
    expected = T**2 * (q_log_q - q64 * log_p).sum(-1)
    fn = jax.jit(lambda z, t: losses.soft_target_kl(z, t, temperature=T))
    got = fn(s, q)
    assert np.isfinite(np.asarray(got)).all()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # d/dz of the batch mean: T·(softmax(z/T) − q)/B (the target sums to 1 per row).
    grad = jax.jit(jax.grad(lambda z: jnp.mean(losses.soft_target_kl(z, q, temperature=T))))(s)
    assert np.isfinite(np.asarray(grad)).all()
    np.testing.assert_allclose(grad, T * (np.exp(log_p) - q64) / 6, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- DKD


def np_dkd_terms(s, t, y, T):
    """TCKD and NCKD (without T²) per example, from the paper's definitions, float64 loops."""
    tckd, nckd = [], []
    for i in range(len(y)):
        ps, pt = np_softmax(s[i] / T), np_softmax(t[i] / T)
        rest = np.arange(s.shape[1]) != y[i]
        bs = np.array([ps[y[i]], ps[rest].sum()])
        bt = np.array([pt[y[i]], pt[rest].sum()])
        qs, qt = ps[rest] / ps[rest].sum(), pt[rest] / pt[rest].sum()
        tckd.append((bt * np.log(bt / bs)).sum())
        nckd.append((qt * np.log(qt / qs)).sum())
    return np.array(tckd), np.array(nckd)


def np_mdistiller_dkd_batch(s, t, y, alpha, beta, T):
    """mdistiller's recipe as peers.md describes it: sums over the batch / B, target masked by -1000."""
    B, C = s.shape
    gt = np.zeros((B, C))
    gt[np.arange(B), y] = 1.0
    ps, pt = np_softmax(s / T), np_softmax(t / T)
    bs = np.stack([(ps * gt).sum(1), (ps * (1 - gt)).sum(1)], 1)
    bt = np.stack([(pt * gt).sum(1), (pt * (1 - gt)).sum(1)], 1)
    tckd = (bt * (np.log(bt) - np.log(bs))).sum() * T**2 / B
    log_qs = np_log_softmax(s / T - 1000.0 * gt)
    qt = np_softmax(t / T - 1000.0 * gt)
    nckd = (qt * (np.log(qt + 1e-300) - log_qs)).sum() * T**2 / B
    return alpha * tckd + beta * nckd


LABELS6 = np.array([0, 1, 2, 3, 4, 2])


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0])
@pytest.mark.parametrize("alpha,beta", [(1.0, 8.0), (3.0, 0.5)])
def test_dkd_matches_numpy(logits, T, alpha, beta):
    s, t = (x.astype(np.float64) for x in logits)
    tckd, nckd = np_dkd_terms(s, t, LABELS6, T)
    expected = T**2 * (alpha * tckd + beta * nckd)
    f = jax.jit(lambda a, b, lab: losses.dkd_loss(a, b, lab, alpha=alpha, beta=beta, temperature=T))
    np.testing.assert_allclose(f(*logits, LABELS6), expected, rtol=1e-4, atol=1e-5)


def test_dkd_alpha_weights_tckd_and_beta_weights_nckd(logits):
    s, t = (x.astype(np.float64) for x in logits)
    T = 2.0
    tckd, nckd = np_dkd_terms(s, t, LABELS6, T)
    f = jax.jit(lambda a, b, lab, al, be: losses.dkd_loss(a, b, lab, alpha=al, beta=be, temperature=T))
    np.testing.assert_allclose(f(*logits, LABELS6, 1.0, 0.0), T**2 * tckd, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(f(*logits, LABELS6, 0.0, 1.0), T**2 * nckd, rtol=1e-4, atol=1e-5)
    assert np.all(np.abs(tckd - nckd) > 1e-2)  # the two terms are distinguishable on this data


def test_dkd_batch_mean_matches_mdistiller_recipe(logits):
    s, t = (x.astype(np.float64) for x in logits)
    expected = np_mdistiller_dkd_batch(s, t, LABELS6, 1.0, 8.0, 4.0)
    batch_mean = lambda a, b, lab: jnp.mean(losses.dkd_loss(a, b, lab, alpha=1.0, beta=8.0, temperature=4.0))
    got = jax.jit(batch_mean)(*logits, LABELS6)
    np.testing.assert_allclose(got, expected, rtol=1e-4)


@pytest.mark.parametrize("T", [1.0, 3.0])
def test_dkd_decomposes_kd(logits, T):
    """Paper eq. 3: KL(p_t ‖ p_s) = TCKD + (1 - p_t[y]) NCKD, checked against kd_loss."""
    s, t = logits
    pt_y = np_softmax(t.astype(np.float64) / T)[np.arange(6), LABELS6]
    tckd = losses.dkd_loss(s, t, LABELS6, alpha=1.0, beta=0.0, temperature=T)
    nckd = losses.dkd_loss(s, t, LABELS6, alpha=0.0, beta=1.0, temperature=T)
    kd = losses.kd_loss(s, t, temperature=T)
    np.testing.assert_allclose(tckd + (1.0 - pt_y) * nckd, kd, rtol=1e-4, atol=1e-5)


def test_dkd_zero_for_equal_logits(logits):
    s, _ = logits
    np.testing.assert_allclose(losses.dkd_loss(s, s, LABELS6, alpha=1.0, beta=8.0, temperature=4.0), 0.0, atol=1e-5)


def test_dkd_is_finite_for_confident_logits():
    """p_y ~ 1 and ~ 0 (|Δz| = 60 at T = 1): log space keeps value and gradient finite and accurate."""
    s = np.array([[60.0, 0.0, 1.0, -2.0], [0.0, 0.0, 0.0, 0.0], [-60.0, 5.0, 0.0, 0.0]], np.float32)
    t = np.array([[0.0, 0.0, 0.0, 0.0], [0.0, 60.0, -3.0, 0.0], [30.0, 0.0, 0.0, 2.0]], np.float32)
    y = np.array([0, 2, 0])
    f = lambda a, b: losses.dkd_loss(a, b, y, alpha=1.0, beta=8.0, temperature=1.0)
    tckd, nckd = np_dkd_terms(s.astype(np.float64), t.astype(np.float64), y, 1.0)
    np.testing.assert_allclose(jax.jit(f)(s, t), tckd + 8.0 * nckd, rtol=1e-4, atol=1e-4)
    g_s, g_t = jax.grad(lambda a, b: jnp.sum(f(a, b)), argnums=(0, 1))(s, t)
    assert np.all(np.isfinite(g_s)) and np.any(np.abs(g_s) > 1e-3)
    np.testing.assert_array_equal(g_t, 0.0)


def test_dkd_teacher_not_differentiated_student_is(logits):
    s, t = logits
    f = lambda a, b: jnp.sum(losses.dkd_loss(a, b, LABELS6, alpha=1.0, beta=8.0, temperature=4.0))
    g_s, g_t = jax.jit(jax.grad(f, argnums=(0, 1)))(s, t)
    np.testing.assert_array_equal(g_t, 0.0)
    assert np.all(np.isfinite(g_s)) and np.all(np.abs(g_s).sum(-1) > 1e-3)


def test_dkd_gradient_matches_finite_differences(logits):
    s, t = (x.astype(np.float64) for x in logits)
    with jax.enable_x64(True):
        f = lambda z: jnp.sum(losses.dkd_loss(z, jnp.asarray(t), LABELS6, alpha=1.5, beta=8.0, temperature=2.0))
        g = np.asarray(jax.grad(f)(jnp.asarray(s)))
        fd = np_finite_differences(f, s)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-7)


def np_finite_differences(f, x, eps=1e-6):
    fd = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        e = np.zeros_like(x)
        e[idx] = eps
        fd[idx] = (f(jnp.asarray(x + e)) - f(jnp.asarray(x - e))) / (2 * eps)
    return fd


# ---------------------------------------------------------------- DIST


def np_pearson(a, b, eps=1e-8):
    a, b = a - a.mean(), b - b.mean()
    return (a * b).sum() / (np.sqrt((a * a).sum()) * np.sqrt((b * b).sum()) + eps)


def np_dist_parts(s, t, T):
    """(inter per example, intra) from the DIST paper, float64 loops."""
    ps, pt = np_softmax(s / T), np_softmax(t / T)
    inter = np.array([1.0 - np_pearson(ps[i], pt[i]) for i in range(ps.shape[0])])
    intra = 1.0 - np.mean([np_pearson(ps[:, c], pt[:, c]) for c in range(ps.shape[1])])
    return inter, intra


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0])
@pytest.mark.parametrize("beta,gamma", [(2.0, 2.0), (1.0, 3.0)])
def test_dist_batch_mean_is_the_papers_loss(logits, T, beta, gamma):
    s, t = (x.astype(np.float64) for x in logits)
    inter, intra = np_dist_parts(s, t, T)
    expected = T**2 * (beta * inter.mean() + gamma * intra)
    f = jax.jit(lambda a, b: jnp.mean(losses.dist_loss(a, b, beta=beta, gamma=gamma, temperature=T)))
    np.testing.assert_allclose(f(*logits), expected, rtol=1e-4, atol=1e-6)


def test_dist_per_example_is_inter_plus_broadcast_intra(logits):
    s, t = (x.astype(np.float64) for x in logits)
    T = 2.0
    inter, intra = np_dist_parts(s, t, T)
    f = jax.jit(lambda a, b, be, ga: losses.dist_loss(a, b, beta=be, gamma=ga, temperature=T))
    np.testing.assert_allclose(f(*logits, 1.0, 0.0), T**2 * inter, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(f(*logits, 0.0, 1.0), np.full(6, T**2 * intra), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(f(*logits, 2.0, 0.5), T**2 * (2.0 * inter + 0.5 * intra), rtol=1e-4, atol=1e-6)
    assert abs(inter.mean() - intra) > 1e-2  # beta and gamma are distinguishable on this data


def test_dist_pearson_is_numpy_corrcoef(logits):
    """Independent check of the correlation itself (eps = 1e-8 is negligible at these variances)."""
    s, t = (x.astype(np.float64) for x in logits)
    ps, pt = np_softmax(s), np_softmax(t)
    r_rows = np.array([np.corrcoef(ps[i], pt[i])[0, 1] for i in range(6)])
    r_cols = np.array([np.corrcoef(ps[:, c], pt[:, c])[0, 1] for c in range(5)])
    with jax.enable_x64(True):
        got = np.asarray(losses.dist_loss(jnp.asarray(s), jnp.asarray(t), beta=1.0, gamma=1.0, temperature=1.0))
    np.testing.assert_allclose(got, (1 - r_rows) + (1 - r_cols.mean()), rtol=1e-6)


def test_dist_zero_for_equal_logits_and_rejects_non_2d(logits):
    s, _ = logits
    np.testing.assert_allclose(losses.dist_loss(s, s, beta=2.0, gamma=2.0, temperature=4.0), 0.0, atol=1e-4)
    with pytest.raises(ValueError, match=r"\[B, C\]"):
        losses.dist_loss(s[None], s[None], beta=1.0, gamma=1.0, temperature=1.0)


def test_dist_teacher_not_differentiated_student_is(logits):
    s, t = logits
    f = lambda a, b: jnp.sum(losses.dist_loss(a, b, beta=2.0, gamma=2.0, temperature=4.0))
    g_s, g_t = jax.jit(jax.grad(f, argnums=(0, 1)))(s, t)
    np.testing.assert_array_equal(g_t, 0.0)
    assert np.all(np.isfinite(g_s)) and np.all(np.abs(g_s).sum(-1) > 1e-4)
    # A batch of one has constant columns: the intra term is 1 with a zero (not NaN) gradient.
    g1 = jax.grad(f)(s[:1], t[:1])
    assert np.all(np.isfinite(g1))


def test_dist_gradient_matches_finite_differences(logits):
    s, t = (x.astype(np.float64) for x in logits)
    with jax.enable_x64(True):
        f = lambda z: jnp.sum(losses.dist_loss(z, jnp.asarray(t), beta=1.0, gamma=3.0, temperature=2.0))
        g = np.asarray(jax.grad(f)(jnp.asarray(s)))
        fd = np_finite_differences(f, s)
    np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-8)
