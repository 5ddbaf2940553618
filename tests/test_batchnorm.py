"""The zoo's BatchNorm (jaxkd.models.layers.BatchNorm): batch statistics and their gradients as matmul column sums,
against the formula in NumPy and against flax's own nnx.BatchNorm."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxkd.models.layers import BatchNorm


def _pair(c):
    ours = BatchNorm(c, momentum=0.9, epsilon=1e-5, rngs=nnx.Rngs(0))
    ref = nnx.BatchNorm(c, momentum=0.9, epsilon=1e-5, rngs=nnx.Rngs(0))
    for m in (ours, ref):
        m.scale[...] = jnp.array([1.0, 2.0, 0.5])
        m.bias[...] = jnp.array([0.1, -0.2, 0.3])
    return ours, ref


def test_training_mode_matches_the_formula_and_flax_with_gradients_and_running_averages():
    x = np.random.default_rng(0).normal(1.0, 2.0, (4, 5, 5, 3)).astype(np.float32)
    g = np.random.default_rng(1).normal(size=x.shape).astype(np.float32)
    ours, ref = _pair(3)
    # the formula in NumPy (float64): biased batch variance, eps 1e-5, flax's momentum convention
    mu, var = x.mean((0, 1, 2), dtype=np.float64), x.var((0, 1, 2), dtype=np.float64)
    want = (x - mu) / np.sqrt(var + 1e-5) * np.array([1.0, 2.0, 0.5]) + np.array([0.1, -0.2, 0.3])
    np.testing.assert_allclose(ours(x), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours.mean[...], 0.1 * mu, rtol=1e-5)
    np.testing.assert_allclose(ours.var[...], 0.9 + 0.1 * var, rtol=1e-5)

    ours, ref = _pair(3)

    def loss(model, x):
        return jnp.sum(model(x) * g)

    for model in (ours, ref):
        model.train()
    (lo, go), (lr, gr) = (nnx.value_and_grad(loss, argnums=(0, 1))(m, x) for m in (ours, ref))
    np.testing.assert_allclose(lo, lr, rtol=1e-5)
    np.testing.assert_allclose(go[1], gr[1], rtol=1e-4, atol=1e-5)  # input gradient
    np.testing.assert_allclose(go[0].scale[...], gr[0].scale[...], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(go[0].bias[...], gr[0].bias[...], rtol=1e-4, atol=1e-5)


def test_gradient_through_the_running_averages_is_exact():
    # The running statistics are stop_gradient'ed in training; the custom VJP still gives the right cotangent for
    # them when differentiated directly (checked against the plain jnp formula).
    from jaxkd.models.layers import _bn_train

    x = jax.random.normal(jax.random.key(0), (50, 3)) * 3 + 1
    s, b = jnp.array([1.0, 2.0, 0.5]), jnp.array([0.1, -0.2, 0.3])

    def plain(x, s, b):
        mean = x.mean(0)
        var = jnp.maximum((x * x).mean(0) - mean * mean, 0.0)
        return ((x - mean[None]) * jax.lax.rsqrt(var + 1e-5)[None] * s[None] + b[None]), mean, var

    w = [jax.random.normal(jax.random.key(i), shape) for i, shape in enumerate(((50, 3), (3,), (3,)), 1)]

    def scalar(f):
        return lambda x, s, b: sum(jnp.sum(o * wi) for o, wi in zip(f(x, s, b), w))

    for a, c in zip(
        jax.grad(scalar(lambda x, s, b: _bn_train(x, s, b, 1e-5)), (0, 1, 2))(x, s, b),
        jax.grad(scalar(plain), (0, 1, 2))(x, s, b),
    ):
        np.testing.assert_allclose(a, c, rtol=1e-4, atol=1e-5)


def test_evaluation_mode_uses_the_running_averages():
    ours, ref = _pair(3)
    x = np.random.default_rng(2).normal(size=(2, 3, 3, 3)).astype(np.float32)
    for m in (ours, ref):
        m.eval()
    np.testing.assert_allclose(ours(x), ref(x), rtol=1e-6)
