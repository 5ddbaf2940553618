import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkd import features
from tests.conftest import TOL


def np_adaptive_pool(x, out):
    """PyTorch AdaptiveAvgPool2d written out with loops, float64, NHWC."""
    B, H, W, C = x.shape
    oh, ow = out
    y = np.zeros((B, oh, ow, C))
    for i in range(oh):
        h0, h1 = int(np.floor(i * H / oh)), int(np.ceil((i + 1) * H / oh))
        for j in range(ow):
            w0, w1 = int(np.floor(j * W / ow)), int(np.ceil((j + 1) * W / ow))
            y[:, i, j, :] = x[:, h0:h1, w0:w1, :].mean(axis=(1, 2))
    return y


def np_attention_map(f, p=2):
    a = (np.abs(f) ** p).mean(-1).reshape(f.shape[0], -1)
    return a / np.maximum(np.sqrt((a * a).sum(-1, keepdims=True)), 1e-12)


def rand(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


# ---------------------------------------------------------------- adaptive pooling


@pytest.mark.parametrize(
    "hw,out", [((7, 7), (3, 3)), ((5, 5), (2, 2)), ((7, 5), (3, 2)), ((8, 6), (4, 3)), ((3, 2), (5, 4))]
)
def test_adaptive_pool_matches_numpy_loops(hw, out):
    x = rand(2, *hw, 3)
    got = jax.jit(lambda z: features.adaptive_avg_pool(z, out))(x)
    assert got.shape == (2, *out, 3)
    np.testing.assert_allclose(got, np_adaptive_pool(x.astype(np.float64), out), rtol=1e-5, atol=1e-6)


def test_adaptive_pool_bins_written_out():
    """7 -> 3 pools rows [0, 3), [2, 5), [4, 7); 5 -> 2 pools [0, 3), [2, 5) (PyTorch's overlapping bins)."""
    x = rand(1, 7, 5, 2)
    got = np.asarray(features.adaptive_avg_pool(x, (3, 2)))
    for i, (h0, h1) in enumerate([(0, 3), (2, 5), (4, 7)]):
        for j, (w0, w1) in enumerate([(0, 3), (2, 5)]):
            np.testing.assert_allclose(got[0, i, j], x[0, h0:h1, w0:w1].mean((0, 1)), rtol=1e-5, atol=1e-6)


def test_adaptive_pool_identity_divisible_and_1d():
    x = rand(2, 8, 8, 3)
    np.testing.assert_array_equal(features.adaptive_avg_pool(x, 8), x)
    np.testing.assert_allclose(
        features.adaptive_avg_pool(x, 4), x.reshape(2, 4, 2, 4, 2, 3).mean((2, 4)), rtol=1e-5, atol=1e-6
    )
    x1 = rand(2, 7, 3)
    np.testing.assert_allclose(
        features.adaptive_avg_pool(x1, 3), np_adaptive_pool(x1[:, :, None], (3, 1))[:, :, 0], rtol=1e-5, atol=1e-6
    )
    with pytest.raises(ValueError, match="out_hw"):
        features.adaptive_avg_pool(x, (2, 2, 2))


# ---------------------------------------------------------------- attention maps


@pytest.mark.parametrize("p", [1, 2, 4])
def test_attention_map_matches_numpy(p):
    f = rand(3, 5, 4, 6)
    got = jax.jit(lambda z: features.attention_map(z, p=p))(f)
    assert got.shape == (3, 20)
    np.testing.assert_allclose(got, np_attention_map(f.astype(np.float64), p), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=-1), 1.0, rtol=1e-5)


def test_attention_map_of_zero_feature_is_zero_with_finite_gradient():
    f = np.zeros((2, 3, 3, 4), np.float32)
    np.testing.assert_array_equal(features.attention_map(f), 0.0)
    g = jax.grad(lambda z: jnp.sum(features.attention_map(z)))(f)
    # d|f|^2/df = 2f = 0 at f = 0, and the normaliser max(‖a‖, eps) is constant there: the gradient is exactly 0
    # (an unguarded ‖a‖ gives NaN).
    np.testing.assert_array_equal(g, 0.0)


# ---------------------------------------------------------------- AT


@pytest.mark.parametrize("p", [1, 2])
def test_at_loss_matches_numpy(p):
    f_s, f_t = rand(4, 6, 6, 8, seed=1), rand(4, 6, 6, 16, seed=2)  # channel counts may differ
    a_s, a_t = np_attention_map(f_s.astype(np.float64), p), np_attention_map(f_t.astype(np.float64), p)
    expected = ((a_s - a_t) ** 2).mean(-1)
    got = jax.jit(lambda a, b: features.at_loss(a, b, p=p))(f_s, f_t)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-8)
    # RepDistiller's (at(f_s) - at(f_t)).pow(2).mean() is the batch mean.
    np.testing.assert_allclose(jnp.mean(got), ((a_s - a_t) ** 2).mean(), rtol=1e-5)


@pytest.mark.parametrize("s_hw,t_hw", [((8, 8), (4, 4)), ((3, 3), (7, 7)), ((5, 5), (2, 2))])
def test_at_loss_pools_the_larger_map(s_hw, t_hw):
    f_s, f_t = rand(2, *s_hw, 4, seed=3), rand(2, *t_hw, 4, seed=4)
    common = tuple(min(a, b) for a, b in zip(s_hw, t_hw))
    a_s = np_attention_map(np_adaptive_pool(f_s.astype(np.float64), common))
    a_t = np_attention_map(np_adaptive_pool(f_t.astype(np.float64), common))
    got = jax.jit(features.at_loss)(f_s, f_t)
    np.testing.assert_allclose(got, ((a_s - a_t) ** 2).mean(-1), rtol=1e-5, atol=1e-8)


def test_at_loss_on_1d_features_and_rank_errors():
    f_s, f_t = rand(3, 9, 4, seed=5), rand(3, 9, 2, seed=6)
    a_s, a_t = np_attention_map(f_s.astype(np.float64)), np_attention_map(f_t.astype(np.float64))
    np.testing.assert_allclose(features.at_loss(f_s, f_t), ((a_s - a_t) ** 2).mean(-1), rtol=1e-5, atol=1e-8)
    with pytest.raises(ValueError, match="at_loss"):
        features.at_loss(rand(3, 4), rand(3, 4))
    with pytest.raises(ValueError, match="batch"):
        features.at_loss(rand(3, 4, 4, 2), rand(2, 4, 4, 2))


def test_at_loss_zero_for_equal_and_scaled_features():
    f = rand(2, 4, 4, 3)
    np.testing.assert_allclose(features.at_loss(f, 3.0 * f), 0.0, atol=1e-10)  # the map is normalised


# ---------------------------------------------------------------- FitNet


def test_fitnet_loss_matches_numpy_mse():
    s, t = rand(4, 5, 5, 6, seed=7), rand(4, 5, 5, 6, seed=8)
    expected = ((s.astype(np.float64) - t) ** 2).reshape(4, -1).mean(-1)
    got = jax.jit(features.fitnet_loss)(s, t)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    # RepDistiller's HintLoss (nn.MSELoss, mean over every element) is the batch mean.
    np.testing.assert_allclose(jnp.mean(got), ((s.astype(np.float64) - t) ** 2).mean(), rtol=1e-5)
    v_s, v_t = rand(4, 10, seed=9), rand(4, 10, seed=10)
    rtol, atol = TOL["float32"]
    np.testing.assert_allclose(
        features.fitnet_loss(v_s, v_t), ((v_s.astype(np.float64) - v_t) ** 2).mean(-1), rtol=rtol, atol=atol
    )


def test_fitnet_loss_pools_a_larger_teacher_and_rejects_mismatches():
    s, t = rand(2, 3, 3, 4, seed=11), rand(2, 7, 7, 4, seed=12)
    t_pooled = np_adaptive_pool(t.astype(np.float64), (3, 3))
    expected = ((s - t_pooled) ** 2).reshape(2, -1).mean(-1)
    np.testing.assert_allclose(jax.jit(features.fitnet_loss)(s, t), expected, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="channel"):
        features.fitnet_loss(rand(2, 3, 3, 4), rand(2, 3, 3, 5))
    with pytest.raises(ValueError, match="smaller"):
        features.fitnet_loss(rand(2, 4, 4, 4), rand(2, 3, 3, 4))


def np_fitnet_regressor(f, kernel, scale, offset, regressor):
    """RepDistiller's ConvReg in training mode, from the formula: 1x1 conv, BatchNorm on batch statistics, ReLU."""
    z = f.astype(np.float64) @ kernel.astype(np.float64)
    axes = tuple(range(f.ndim - 1))
    mu, var = z.mean(axes), z.var(axes)  # biased variance, as BatchNorm normalises in training
    z = (z - mu) / np.sqrt(var + 1e-5) * scale + offset
    return np.maximum(z, 0.0) if regressor == "conv_bn_relu" else z


@pytest.mark.parametrize("regressor", ["conv_bn", "conv_bn_relu"])
@pytest.mark.parametrize(
    "s_shape,t_shape", [((6, 4, 4, 3), (6, 4, 4, 5)), ((6, 3), (6, 5)), ((6, 4, 4, 3), (6, 8, 8, 5))]
)
def test_fitnet_bn_regressor_matches_numpy(regressor, s_shape, t_shape):
    from jaxkd import terms

    term = terms.fitnet(student="s", teacher="t", regressor=regressor)
    spec = lambda name, shape: (None, {name: jax.ShapeDtypeStruct(shape, jnp.float32)})  # noqa: E731
    aux, state = term.init(jax.random.key(0), spec("s", s_shape), spec("t", t_shape))
    assert set(aux) == {"kernel", "scale", "offset"} and aux["kernel"].shape == (3, 5)
    np.testing.assert_array_equal(aux["scale"], np.ones(5))  # BatchNorm's initial affine map
    aux = {"kernel": rand(3, 5, seed=20), "scale": 1.0 + rand(5, seed=21), "offset": rand(5, seed=22)}

    def apply(a, fs, ft):
        return term.apply(a, state, (None, {"s": fs}), (None, {"t": ft}), {}, jax.random.key(0), {})[0]

    # Two runs under vmap, each normalised with its own batch's statistics.
    fs, ft = rand(2, *s_shape, seed=23), rand(2, *t_shape, seed=24) ** 2  # the hint is post-ReLU: non-negative
    fs[1] = 3.0 * fs[1] + 1.0  # other raw statistics: per-run BN undoes this, statistics pooled over runs would not
    got = jax.jit(jax.vmap(apply, in_axes=(None, 0, 0)))(aux, fs, ft)
    for r in range(2):
        proj = np_fitnet_regressor(fs[r], *(np.asarray(aux[k]) for k in ("kernel", "scale", "offset")), regressor)
        target = ft[r].astype(np.float64)
        if target.ndim == 4 and target.shape[1] != proj.shape[1]:
            target = np_adaptive_pool(target, proj.shape[1:3])
        ref = ((proj - target) ** 2).reshape(len(proj), -1).mean(-1)
        np.testing.assert_allclose(got[r], ref, rtol=1e-4, atol=1e-6)


def test_fitnet_regressor_option_is_checked():
    from jaxkd.errors import ConfigError
    from jaxkd.terms import build_term

    with pytest.raises(ConfigError, match="regressor must be one of conv, conv_bn, conv_bn_relu; got 'bn'"):
        build_term("fitnet", {"student": "a", "teacher": "b", "regressor": "bn"})


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("name", ["at", "fitnet"])
def test_feature_losses_differentiate_student_only(name):
    fn = {"at": features.at_loss, "fitnet": features.fitnet_loss}[name]
    s, t = rand(2, 6, 6, 4, seed=13), rand(2, 6, 6, 4, seed=14)
    g_s, g_t = jax.jit(jax.grad(lambda a, b: jnp.sum(fn(a, b)), argnums=(0, 1)))(s, t)
    np.testing.assert_array_equal(g_t, 0.0)
    # The student's gradient of the summed per-example losses, against NumPy: FitNet's closed form
    # d/ds mean((s - t)^2) = 2 (s - t) / (H W C); AT's by central differences of the NumPy loss in float64.
    if name == "fitnet":
        expected = 2 * (s.astype(np.float64) - t) / s[0].size
    else:
        t64 = t.astype(np.float64)

        def np_loss(z):
            return ((np_attention_map(z) - np_attention_map(t64)) ** 2).mean(-1).sum()

        expected, s64 = np.zeros(s.shape), s.astype(np.float64)
        for idx in np.ndindex(*s.shape):
            e = np.zeros(s.shape)
            e[idx] = 1e-6
            expected[idx] = (np_loss(s64 + e) - np_loss(s64 - e)) / 2e-6
    np.testing.assert_allclose(g_s, expected, rtol=2e-5, atol=2e-9)


def test_at_loss_gradient_matches_finite_differences():
    s, t = rand(2, 4, 3, 2, seed=15).astype(np.float64), rand(2, 4, 3, 5, seed=16).astype(np.float64)
    with jax.enable_x64(True):
        f = lambda z: jnp.sum(features.at_loss(z, jnp.asarray(t)))
        g = np.asarray(jax.grad(f)(jnp.asarray(s)))
        fd = np.zeros_like(s)
        for idx in np.ndindex(*s.shape):
            e = np.zeros_like(s)
            e[idx] = 1e-6
            fd[idx] = (f(jnp.asarray(s + e)) - f(jnp.asarray(s - e))) / 2e-6
    np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-9)
