import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkd.errors import ConfigError
from jaxkd.models import make_model


@pytest.mark.parametrize(
    "name,shape,feature_names",
    [
        ("mlp", (8, 8), {"hidden0", "hidden1"}),
        ("cnn2d", (8, 8), {"block0", "block1", "pooled"}),
        ("cnn1d", (40,), {"block0", "block1", "pooled"}),
    ],
)
def test_models_return_logits_and_named_features(name, shape, feature_names):
    model = make_model(name, shape, 7)
    params, rest = model.init(jax.random.key(0))
    x = jnp.ones((3, *shape))
    logits, feats, _ = jax.jit(lambda p, r, x: model.apply(p, r, x, train=False))(params, rest, x)
    assert logits.shape == (3, 7)
    assert set(feats) == feature_names
    assert all(v.shape[0] == 3 for v in feats.values())


def test_mlp_forward_matches_numpy():
    """The MLP's logits and features from its own weights in float64 NumPy: ReLU layers, then a linear head."""
    model = make_model("mlp", (8, 8), 7, widths=(12, 5))
    params, rest = model.init(jax.random.key(0))
    x = np.random.default_rng(0).normal(size=(3, 8, 8)).astype(np.float32)
    logits, feats, _ = jax.jit(lambda p, r, x: model.apply(p, r, x, train=False))(params, rest, x)
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    h = x.reshape(3, -1).astype(np.float64)
    for i, layer in enumerate(p["layers"].values()):
        h = np.maximum(h @ layer["kernel"] + layer["bias"], 0.0)
        np.testing.assert_allclose(feats[f"hidden{i}"], h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logits, h @ p["head"]["kernel"] + p["head"]["bias"], rtol=1e-5, atol=1e-6)


def test_batchnorm_state_is_explicit():
    model = make_model("cnn2d", (8, 8), 3, widths=(4,))
    params, rest = model.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (5, 8, 8)) * 3 + 2
    _, _, rest_train = jax.jit(lambda p, r, x: model.apply(p, r, x, train=True))(params, rest, x)
    _, _, rest_eval = jax.jit(lambda p, r, x: model.apply(p, r, x, train=False))(params, rest, x)
    before = jax.tree.leaves(rest)
    assert all(np.array_equal(a, b) for a, b in zip(before, jax.tree.leaves(rest_eval)))
    # Train mode moves the running statistics by one step of their EMA (momentum 0.9, from mean 0 and var 1)
    # towards the batch statistics of the bias-free 3x3 convolution (padding 1), here in float64 NumPy:
    # mean' = 0.1·μ, var' = 0.9 + 0.1·σ² with σ² the biased variance over batch and positions (flax's convention).
    kernel = np.asarray(params["convs"][0]["kernel"], np.float64)  # [3, 3, 1, 4]
    xp = np.pad(np.asarray(x, np.float64)[..., None], ((0, 0), (1, 1), (1, 1), (0, 0)))
    z = sum(xp[:, i : i + 8, j : j + 8, :] @ kernel[i, j] for i in range(3) for j in range(3))  # [5, 8, 8, 4]
    stats = rest_train["norms"][0]
    np.testing.assert_allclose(stats["mean"], 0.1 * z.mean((0, 1, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * z.var((0, 1, 2)), rtol=1e-5, atol=1e-6)


def test_vmapped_init_gives_distinct_members():
    model = make_model("mlp", (4,), 2, widths=(3,))
    keys = jax.random.split(jax.random.key(0), 4)
    params, _ = jax.vmap(model.init)(keys)
    # Member i is exactly the model initialised from key i alone; the members differ.
    for i in range(4):
        one, _ = model.init(keys[i])
        for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(one)):
            np.testing.assert_array_equal(np.asarray(a[i]), np.asarray(b))
    w = np.asarray(jax.tree.leaves(params)[-1])
    assert not np.allclose(w[0], w[1])


def test_bad_model_inputs():
    with pytest.raises(ConfigError, match="unknown model"):
        make_model("resnet9000", (4,), 2)
    with pytest.raises(ConfigError, match="positive"):
        make_model("mlp", (4,), 2, widths=(0,))
