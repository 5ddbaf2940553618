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
        f = lambda z: jnp.sum(losses.kd_objective(z, jnp.asarray(t), jnp.arange(6) % 5, alpha=0.3,
                                                  temperature=2.5)[0])
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


def test_objective_endpoints_and_weighting(logits):
    s, t = logits
    y = np.arange(6) % 5
    ce = losses.cross_entropy(s, y)
    kd = losses.kd_loss(s, t, temperature=4.0)
    tot0, terms = losses.kd_objective(s, t, y, alpha=0.0, temperature=4.0)
    tot1, _ = losses.kd_objective(s, t, y, alpha=1.0, temperature=4.0)
    tot_mid, _ = losses.kd_objective(s, t, y, alpha=0.25, temperature=4.0)
    rtol, atol = TOL["float32"]
    np.testing.assert_allclose(tot0, ce, rtol=rtol, atol=atol)
    np.testing.assert_allclose(tot1, kd, rtol=rtol, atol=atol)
    np.testing.assert_allclose(tot_mid, 0.75 * ce + 0.25 * kd, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(terms["ce"], ce, rtol=rtol, atol=atol)
    np.testing.assert_allclose(terms["kd"], kd, rtol=rtol, atol=atol)


def test_ce_objective_ignores_the_teacher(logits):
    s, t = logits
    y = np.arange(6) % 5
    total, terms = losses.OBJECTIVES["ce"](s, t, y, alpha=0.9, temperature=4.0)
    np.testing.assert_allclose(total, losses.cross_entropy(s, y), rtol=1e-6)
    assert set(terms) == {"ce"}
