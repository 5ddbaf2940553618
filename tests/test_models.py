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


def test_batchnorm_state_is_explicit():
    model = make_model("cnn2d", (8, 8), 3, widths=(4,))
    params, rest = model.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (5, 8, 8)) * 3 + 2
    _, _, rest_train = jax.jit(lambda p, r, x: model.apply(p, r, x, train=True))(params, rest, x)
    _, _, rest_eval = jax.jit(lambda p, r, x: model.apply(p, r, x, train=False))(params, rest, x)
    before = jax.tree.leaves(rest)
    assert any(not np.allclose(a, b) for a, b in zip(before, jax.tree.leaves(rest_train)))
    assert all(np.array_equal(a, b) for a, b in zip(before, jax.tree.leaves(rest_eval)))


def test_vmapped_init_gives_distinct_members():
    model = make_model("mlp", (4,), 2, widths=(3,))
    params, _ = jax.vmap(model.init)(jax.random.split(jax.random.key(0), 4))
    w = np.asarray(jax.tree.leaves(params)[-1])
    assert w.shape[0] == 4 and not np.allclose(w[0], w[1])


def test_bad_model_inputs():
    with pytest.raises(ConfigError, match="unknown model"):
        make_model("resnet9000", (4,), 2)
    with pytest.raises(ConfigError, match="positive"):
        make_model("mlp", (4,), 2, widths=(0,))
