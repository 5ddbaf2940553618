"""LRP: every rule against NumPy written from its formula (dense and strided, padded convolutions), a
hand-computed two-layer example per rule, LRP-0 = gradient × input on bias-free ReLU nets, ε-LRP's
layer-by-layer conservation, γ = 0 as LRP-0, the residual sum's split, and canonization (BatchNorm merged,
residual sums explicit) leaving every supported family's logits unchanged."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxkd.attribution import canonical as cz
from jaxkd.attribution import canonize, lrp, relevance_flow, split_sum
from jaxkd.attribution import output_fn as at_output_fn
from jaxkd.attribution.propagation import RULES, resolve_composite
from jaxkd.errors import ConfigError
from jaxkd.models import FunctionalModel, make_model
from jaxkd.models.resnet import Bottleneck, _StagedResNet

# --- NumPy references, per output unit, from the rules' formulas -------------------------------------------


def _stab(z, e):
    return z + e * (np.sign(z) + (z == 0))


def np_rule(name, x, w, b, r, *, gamma=0.25, eps=1e-6, stab=1e-6, low=None, high=None):
    """Relevance of the inputs ``x [J]`` of one affine layer ``z_k = Σ_j x_j w_jk + b_k`` given ``r [K]``.

    Each output unit k shares r_k over its inputs j in proportion to the rule's contribution c_jk.
    """
    xp, xn, wp, wn, bp, bn = (
        np.maximum(x, 0),
        np.minimum(x, 0),
        np.maximum(w, 0),
        np.minimum(w, 0),
        *(
            np.maximum(b, 0),
            np.minimum(b, 0),
        ),
    )
    out = np.zeros_like(x)
    z = x @ w + b
    for k in range(w.shape[1]):
        if name == "epsilon":
            c = x * w[:, k]
            out += c / _stab(c.sum() + b[k], eps) * r[k]
        elif name == "gamma":
            if z[k] > 0:
                c = xp * (w[:, k] + gamma * wp[:, k]) + xn * (w[:, k] + gamma * wn[:, k])
                out += c / _stab(c.sum() + b[k] + gamma * bp[k], stab) * r[k]
            elif z[k] < 0:
                c = xp * (w[:, k] + gamma * wn[:, k]) + xn * (w[:, k] + gamma * wp[:, k])
                out += c / _stab(c.sum() + b[k] + gamma * bn[k], stab) * r[k]
        elif name == "zplus":
            c = xp * wp[:, k] + xn * wn[:, k]
            out += c / _stab(c.sum() + bp[k], stab) * r[k]
        elif name == "alpha2_beta1":
            p = xp * wp[:, k] + xn * wn[:, k]
            n = xp * wn[:, k] + xn * wp[:, k]
            out += 2 * p / _stab(p.sum() + bp[k], stab) * r[k] - n / _stab(n.sum() + bn[k], stab) * r[k]
        elif name == "zbox":
            c = x * w[:, k] - low * wp[:, k] - high * wn[:, k]
            out += c / _stab(c.sum() + b[k] - bp[k] - bn[k], stab) * r[k]
    return out


def np_conv_rule(name, x, w, b, r, *, stride, pad, low=None, high=None, **hp):
    """The same rule on a convolution: each output pixel is a dense layer over its (zero-padded) input patch."""
    kh, kw, cin, _ = w.shape
    bsz, hh, ww, _ = x.shape
    padded = lambda v: np.pad(v, ((0, 0), (pad, pad), (pad, pad), (0, 0)))  # noqa: E731
    xp, lp, hp_ = padded(x), padded(low), padded(high) if high is not None else None
    out = np.zeros_like(xp)
    for n in range(bsz):
        for i in range(r.shape[1]):
            for j in range(r.shape[2]):
                sl = (n, slice(i * stride, i * stride + kh), slice(j * stride, j * stride + kw))
                extra = {} if high is None else {"low": lp[sl].ravel(), "high": hp_[sl].ravel()}
                rel = np_rule(name, xp[sl].ravel(), w.reshape(-1, w.shape[-1]), b, r[n, i, j], **hp, **extra)
                out[sl] += rel.reshape(kh, kw, cin)
    return out[:, pad : pad + hh, pad : pad + ww]


def hp_of(gamma=0.25, eps=1e-6, stab=1e-6, low=0.0, high=1.0):
    return {"gamma": gamma, "epsilon": eps, "stabilizer": stab, "low": low, "high": high}


RULE_NAMES = ["epsilon", "gamma", "zplus", "alpha2_beta1", "zbox"]


@pytest.mark.parametrize("name", RULE_NAMES)
def test_rule_on_a_dense_layer_matches_numpy(name):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 7)).astype(np.float32)  # inputs of both signs
    w = rng.normal(size=(7, 5)).astype(np.float32)
    b = 0.3 * rng.normal(size=5).astype(np.float32)
    r = rng.normal(size=(3, 5)).astype(np.float32)
    low, high = x.min() - 0.5, x.max() + 0.5
    layer = cz.dense(nnx.Linear(7, 5, rngs=nnx.Rngs(0)))
    rule = jax.jit(lambda x, w, b, r: RULES[name](layer.fwd, x, w, b, r, hp_of(0.4, 1e-3, 1e-3, low, high)))
    got = np.asarray(rule(x, w, b[None], r))
    want = np.stack(
        [np_rule(name, x[i], w, b, r[i], gamma=0.4, eps=1e-3, stab=1e-3, low=low, high=high) for i in range(3)]
    )
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("name", RULE_NAMES)
def test_rule_on_a_strided_padded_convolution_matches_numpy(name):
    rng = np.random.default_rng(1)
    module = nnx.Conv(2, 3, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), use_bias=True, rngs=nnx.Rngs(0))
    layer = cz.conv(module)
    x = rng.normal(size=(2, 5, 5, 2)).astype(np.float32)
    w = rng.normal(size=(3, 3, 2, 3)).astype(np.float32)
    b = 0.3 * rng.normal(size=3).astype(np.float32)
    r = rng.normal(size=(2, 3, 3, 3)).astype(np.float32)
    low = np.full_like(x, x.min() - 0.5)
    high = np.full_like(x, x.max() + 0.5)
    got = jax.jit(lambda x, w, b, r: RULES[name](layer.fwd, x, w, b, r, hp_of(0.4, 1e-3, 1e-3, low, high)))(
        x, w, b.reshape(1, 1, 1, 3), r
    )
    want = np_conv_rule(name, x, w, b, r, stride=2, pad=1, low=low, high=high, gamma=0.4, eps=1e-3, stab=1e-3)
    np.testing.assert_allclose(np.asarray(got), want, rtol=2e-4, atol=2e-5)


# --- a hand-computed two-layer example per rule ----------------------------------------------------------
# x = [1, 2];  layer 1: W1 = [[1, -1], [1, 2]] (rows: inputs), b1 = 0, so z1 = [3, 3], a1 = relu(z1) = [3, 3];
# layer 2: one unit, w2 = [2, -1], b2 = 0, so f = 6 - 3 = 3; the output's relevance is f = 3.
X, W1, W2 = np.array([[1.0, 2.0]]), np.array([[1.0, -1.0], [1.0, 2.0]]), np.array([[2.0], [-1.0]])
HAND = {
    # LRP-0: layer 2 gives a1·w2 = [6, -3]; unit 0 shares 6 as [1, 2]/3, unit 1 shares -3 as [-1, 4]/3:
    # [2, 4] + [1, -4] = [3, 0].
    "epsilon": ({}, [3.0, 0.0]),
    # γ = 1, all inputs positive: A = W + W⁺. Layer 2: A = [4, -1], z⁺ = 12 - 3 = 9, R = [12, -3]·3/9 = [4, -1].
    # Layer 1: A1 = [[2, -1], [2, 4]]; unit 0: [2, 4]/6·4 = [4/3, 8/3]; unit 1: [-1, 8]/7·(-1) = [1/7, -8/7].
    "gamma": ({"gamma": 1.0}, [4 / 3 + 1 / 7, 8 / 3 - 8 / 7]),
    # z⁺: layer 2: W⁺ = [2, 0], R = [6, 0]/6·3 = [3, 0]; layer 1 unit 0: [1, 2]/3·3 = [1, 2]; unit 1 gets 0.
    "zplus": ({}, [1.0, 2.0]),
    # α2β1: layer 2: 2·[6, 0]/6·3 - [0, -3]/(-3)·3 = [6, -3]. Layer 1 unit 0 (all positive): 2·[1, 2]/3·6 = [4, 8];
    # unit 1: 2·[0, 4]/4·(-3) - [-1, 0]/(-1)·(-3) = [0, -6] - [-3, 0] = [3, -6]. Total [7, 2] (not conserved).
    "alpha2_beta1": ({}, [7.0, 2.0]),
    # z^B on layer 1 with l = 0, h = 2 (layer 2 by ε: [6, -3]). Unit 0: w = [1, 1] ≥ 0: [1, 2]/3·6 = [2, 4].
    # Unit 1: w = [-1, 2]: x·w - l·w⁺ - h·w⁻ = [-1 + 2, 4] = [1, 4], sum 5: [1, 4]/5·(-3). Total [1.4, 1.6].
    "zbox": ({"low": 0.0, "high": 2.0}, [1.4, 1.6]),
}


@pytest.mark.parametrize("name", list(HAND))
def test_hand_computed_two_layer_example(name):
    extra, want = HAND[name]
    hp = hp_of(eps=1e-9, stab=1e-9, **extra)
    l1 = cz.dense(nnx.Linear(2, 2, rngs=nnx.Rngs(0)))
    top = "epsilon" if name == "zbox" else name  # z^B is a first-layer rule
    a1 = np.maximum(X @ W1, 0)
    f = a1 @ W2
    r1 = RULES[top](l1.fwd, jnp.asarray(a1), jnp.asarray(W2), jnp.zeros((1, 1)), jnp.asarray(f), hp)
    r0 = RULES[name](l1.fwd, jnp.asarray(X), jnp.asarray(W1), jnp.zeros((1, 2)), r1, hp)
    np.testing.assert_allclose(np.asarray(r0)[0], want, rtol=1e-6)


def test_generalised_gamma_on_a_negative_output():
    # x = [1, -2], w = [1, 1]: z = -1 < 0, so the negative contributions share it: with γ = 1,
    # z⁻ = x⁺·(w + γw⁻) + x⁻·(w + γw⁺) = 1·1 + (-2)·2 = -3, R = [1, -4]/(-3)·(-1) = [1/3, -4/3].
    layer = cz.dense(nnx.Linear(2, 1, rngs=nnx.Rngs(0)))
    r = RULES["gamma"](
        layer.fwd, jnp.array([[1.0, -2.0]]), jnp.ones((2, 1)), jnp.zeros((1, 1)), jnp.array([[-1.0]]), hp_of(1.0)
    )
    np.testing.assert_allclose(np.asarray(r)[0], [1 / 3, -4 / 3], rtol=1e-5)


def test_the_mlp_end_to_end_reproduces_the_hand_example():
    # The same network as an mlp of the zoo, explaining the gap z_0 - z_1 with z_1 = 0: f = 3.
    model = make_model("mlp", (2,), 2, widths=(2,))
    params, rest = jax.eval_shape(model.init, jax.random.key(0))
    values = {
        "['layers'][0]['kernel']": W1,
        "['head']['kernel']": np.concatenate([W2, np.zeros((2, 1))], 1),
    }
    params = jax.tree_util.tree_map_with_path(
        lambda path, leaf: jnp.asarray(
            values.get(jax.tree_util.keystr(path)[: -len(".value")], 0.0) + np.zeros(leaf.shape), jnp.float32
        ),
        params,
    )
    x, t = jnp.asarray(X, jnp.float32), jnp.array([0])
    r, f = lrp(model, params, rest, x, t, composite="epsilon", epsilon=1e-9, stabilizer=1e-9, return_output=True)
    np.testing.assert_allclose(np.asarray(f), [3.0], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(r)[0], HAND["epsilon"][1], rtol=1e-5, atol=1e-6)
    # epsilon_gamma_box: z^B on the first dense layer, ε on the head.
    r = lrp(model, params, rest, x, t, low=0.0, high=2.0, epsilon=1e-9, stabilizer=1e-9)
    np.testing.assert_allclose(np.asarray(r)[0], HAND["zbox"][1], rtol=1e-5)


# --- whole models ----------------------------------------------------------------------------------------


def random_state(model, seed=0, *, zero_bias=False):
    """Random parameters and BatchNorm statistics (no initialiser compiled): kernels ~ N(0, 1/fan_in)."""
    params, rest = jax.eval_shape(model.init, jax.random.key(0))
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = jax.tree_util.keystr(path)
        shape = leaf.shape
        if "kernel" in name:
            v = rng.normal(size=shape) / np.sqrt(np.prod(shape[:-1]))
        elif "scale" in name:
            v = rng.uniform(0.5, 1.5, shape)
        elif "var" in name:
            v = rng.uniform(0.5, 2.0, shape)
        elif "bias" in name or "mean" in name:
            v = np.zeros(shape) if zero_bias else 0.3 * rng.normal(size=shape)
        else:
            raise AssertionError(f"unexpected state {name}")
        return jnp.asarray(v, leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, params), jax.tree_util.tree_map_with_path(draw, rest)


FAMILIES = [
    ("mlp", (4, 4, 3), (6, 5)),
    ("cnn2d", (8, 8, 3), (4, 6)),
    ("cnn1d", (12, 2), (4, 5)),
    ("resnet8", (8, 8, 3), (4, 4, 6, 8)),  # basic blocks, identity and projection shortcuts
    ("bottleneck", (8, 8, 3), None),  # ResNet-50's bottleneck blocks, two of them (see family())
    ("wrn_16_1", (8, 8, 3), None),  # pre-activation blocks: unmerged BatchNorms
    ("vgg8", (8, 8, 3), (4, 4, 6, 6, 8)),  # conv biases, max pooling
    ("sdstudent", (16, 16, 3), (6, 5, 4, 3)),  # adapters, adaptive pooling, three dense layers
]


def small_bottleneck_resnet(in_shape, num_classes):
    """ResNet-50's layout with two bottleneck blocks (a projection and an identity shortcut): resnet50 itself
    has 16 and compiles for seconds."""

    def ctor(rngs):
        stages = [(2, 1, 1), (3, 1, 2)]
        return _StagedResNet(in_shape, num_classes, block=Bottleneck, stem=8, stages=stages, dtype=None, rngs=rngs)

    model = FunctionalModel(name="bottleneck", ctor=ctor, num_classes=num_classes, in_shape=in_shape)
    return model


@functools.cache
def family(name, shape, widths, zero_bias=False):
    if name == "bottleneck":
        model = small_bottleneck_resnet(shape, 5)
    else:
        model = make_model(name, shape, 5, widths)
    params, rest = random_state(model, zero_bias=zero_bias)
    x = jnp.asarray(np.random.default_rng(2).normal(size=(3, *shape)), jnp.float32)
    return model, params, rest, x


@pytest.mark.parametrize("name,shape,widths", FAMILIES)
def test_canonization_leaves_the_logits_unchanged(name, shape, widths):
    model, params, rest, x = family(name, shape, widths)
    got, want = jax.jit(lambda p, r, x: (canonize(model, p, r)(x), model.apply(p, r, x, train=False)[0]))(
        params, rest, x
    )
    scale = float(jnp.max(jnp.abs(want)))
    assert scale > 0.1  # a meaningful comparison: the logits are not all near zero
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5 * scale)


def gradient_times_input(model, params, rest, x, t):
    def gap(x):
        z = model.apply(params, rest, x, train=False)[0]
        z_t = jnp.take_along_axis(z, t[:, None], 1)[:, 0]
        return z_t - jnp.max(jnp.where(jax.nn.one_hot(t, 5) > 0, -jnp.inf, z), axis=1)

    return np.asarray(x * jax.jit(jax.grad(lambda x: gap(x).sum()))(x))


TINY = {"epsilon": 1e-9, "stabilizer": 1e-9}


@pytest.mark.parametrize("name,shape,widths", [FAMILIES[1], FAMILIES[3], FAMILIES[6]])
def test_lrp0_equals_gradient_times_input_on_a_bias_free_relu_net(name, shape, widths):
    # Bias-free, BatchNorm means and shifts zero: a piecewise-linear, positively homogeneous net, on which
    # LRP-0 (ε -> 0) is exactly gradient × input. Covers average pooling (cnn2d), residual sums (resnet8)
    # and max pooling (vgg8).
    model, params, rest, x = family(name, shape, widths, zero_bias=True)
    t = jnp.array([0, 1, 2])
    want = gradient_times_input(model, params, rest, x, t)
    got = np.asarray(lrp(model, params, rest, x, t, composite="epsilon", **TINY))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def test_gamma_zero_is_lrp0():
    # γ = 0 on every layer: gradient × input on the bias-free net; with biases, the ε rule with ε equal to the
    # stabiliser (the two rules' formulas coincide at γ = 0).
    model, params, rest, x = family(*FAMILIES[1], zero_bias=True)
    t = jnp.array([0, 1, 2])
    want = gradient_times_input(model, params, rest, x, t)
    got = np.asarray(lrp(model, params, rest, x, t, composite="gamma", gamma=0.0, **TINY))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    model, params, rest, x = family(*FAMILIES[1])
    a = lrp(model, params, rest, x, t, composite="gamma", gamma=0.0, stabilizer=1e-4)
    b = lrp(model, params, rest, x, t, composite="epsilon", epsilon=1e-4, stabilizer=1e-4)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def test_epsilon_lrp_conserves_relevance_layer_by_layer_without_biases():
    model, params, rest, x = family(*FAMILIES[3], zero_bias=True)  # resnet8: residual blocks are layers
    tiny = TINY  # the stabilisers themselves absorb about ε/|z| of each unit's share
    flow = np.asarray(relevance_flow(model, params, rest, x, jnp.array([0, 1, 2]), composite="epsilon", **tiny))
    assert flow.shape[0] == 2 + 2 + 3 * 2 + 1  # output, head, stem conv + relu, 3 x (block + relu), pool
    np.testing.assert_allclose(flow, np.broadcast_to(flow[:1], flow.shape), rtol=1e-4, atol=1e-6)
    # With biases the flow leaks: the test above can fail.
    model, params, rest, x = family(*FAMILIES[3])
    flow = np.asarray(relevance_flow(model, params, rest, x, jnp.array([0, 1, 2]), composite="epsilon", **tiny))
    assert np.abs(flow[-1] - flow[0]).max() > 1e-3


def test_residual_sum_relevance_is_split_in_proportion_and_conserved():
    rng = np.random.default_rng(3)
    a, s, r = (rng.normal(size=(4, 6)).astype(np.float32) for _ in range(3))
    ra, rs = jax.jit(split_sum)(a, s, r, 1e-6)
    np.testing.assert_allclose(np.asarray(ra), a / _stab(a + s, 1e-6) * r, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(ra + rs), r * (a + s) / _stab(a + s, 1e-6), rtol=1e-5)
    # In a model: the relevance entering each residual block equals the relevance leaving it (ε rule on the
    # block's convolutions, bias-free: only the sum's split could leak).
    model, params, rest, x = family(*FAMILIES[3], zero_bias=True)
    flow = np.asarray(relevance_flow(model, params, rest, x, jnp.array([0, 1, 2]), composite="epsilon", **TINY))
    # Rows from the output down: f, head, pool, then (relu, block) three times, stem relu, stem conv; the
    # relevance at a block's output is row 3, 5 or 7 and at its input the next row.
    for row in (3, 5, 7):
        np.testing.assert_allclose(flow[row + 1], flow[row], rtol=1e-4)


def test_lrp_is_vmappable_over_members_and_hyperparameters_and_matches_a_loop():
    model, params, rest, x = family(*FAMILIES[1])
    stacked = jax.tree.map(lambda a: jnp.stack([a, 0.5 * a]), (params, rest))
    gammas = jnp.array([0.25, 1.0])  # γ is an argument, not a constant: one program for every γ
    t = jnp.array([0, 1, 2])
    many = jax.jit(jax.vmap(lambda p, r, g: lrp(model, p, r, x, t, gamma=g, low=-3.0, high=3.0)))(*stacked, gammas)
    for m in range(2):
        one = lrp(model, *jax.tree.map(lambda a, m=m: a[m], stacked), x, t, gamma=float(gammas[m]), low=-3.0, high=3.0)
        np.testing.assert_allclose(np.asarray(many[m]), np.asarray(one), rtol=1e-5, atol=1e-7)
    assert np.abs(np.asarray(many[0] - many[1])).max() > 1e-3  # the members' explanations differ


def test_a_subset_of_classes_explains_the_restricted_model():
    # SubDistill's subtask teacher: the logits of `classes` only. The same as a model whose head has only
    # those columns (built here by copying them), for LRP and for the output IG integrates.
    model, params, rest, x = family(*FAMILIES[1])
    classes, t = (3, 0, 4), jnp.array([0, 2, 1])
    small = make_model("cnn2d", (8, 8, 3), 3, (4, 6))
    cols = np.asarray(classes)
    head = {"kernel": params["head"]["kernel"][...][:, cols], "bias": params["head"]["bias"][...][cols]}
    small_params = jax.tree_util.tree_map_with_path(
        lambda path, leaf: (
            head[jax.tree_util.keystr(path).split("'")[-2]] if "head" in jax.tree_util.keystr(path) else leaf
        ),
        params,
    )
    got = lrp(model, params, rest, x, t, classes=classes, low=-3.0, high=3.0)
    want = lrp(small, small_params, rest, x, t, low=-3.0, high=3.0)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-7)
    f_full = jax.jit(lambda x: at_output_fn(model, params, rest, t, "gap", classes)(x))(x)
    f_small = jax.jit(lambda x: at_output_fn(small, small_params, rest, t)(x))(x)
    np.testing.assert_allclose(np.asarray(f_full), np.asarray(f_small), rtol=1e-6)
    with pytest.raises(ConfigError, match="at least two distinct logits"):
        lrp(model, params, rest, x, t, classes=(1, 1, 7))


def test_unsupported_models_and_bad_composites_are_config_errors():
    vit = make_model("vit_tiny", (32, 32, 3), 5)
    params, rest = jax.eval_shape(vit.init, jax.random.key(0))
    with pytest.raises(ConfigError, match="does not support model 'vit_tiny'"):
        jax.eval_shape(lambda p, r: lrp(vit, p, r, jnp.zeros((1, 32, 32, 3)), jnp.zeros(1, int)), params, rest)
    with pytest.raises(ConfigError, match="unknown LRP composite"):
        resolve_composite("epsilon_gamma")
    with pytest.raises(ConfigError, match="cannot apply to 'maxpool'"):
        resolve_composite({"conv": "gamma", "dense": "epsilon", "maxpool": "zbox"})
    with pytest.raises(ConfigError, match="needs a rule for 'dense'"):
        resolve_composite({"conv": "gamma"})


# --- optional: against zennit, when it is installed ------------------------------------------------------


def _torch_sequential(name, model, params, rest, torch):
    """The same network as a torch Sequential (cnn2d or vgg8 at 8x8), weights copied from the JAX state."""
    module = nnx.merge(model._graphdefs[1], params, rest, copy=True)
    layers, t = [], lambda a: torch.tensor(np.asarray(a[...]))  # noqa: E731

    def conv_bn(c, bn, bias):
        conv = torch.nn.Conv2d(c.in_features, c.out_features, 3, padding=1, bias=bias)
        conv.weight.data = t(c.kernel).permute(3, 2, 0, 1).contiguous()
        if bias:
            conv.bias.data = t(c.bias)
        norm = torch.nn.BatchNorm2d(c.out_features, eps=bn.epsilon)
        norm.weight.data, norm.bias.data = t(bn.scale), t(bn.bias)
        norm.running_mean.data, norm.running_var.data = t(bn.mean), t(bn.var)
        return [conv, norm, torch.nn.ReLU()]

    if name == "cnn2d":
        for c, bn in zip(module.convs, module.norms):
            layers += conv_bn(c, bn, False) + [torch.nn.AvgPool2d(2)]
    else:  # vgg8 at 8x8: max pooling after blocks 0-2, none after block 3
        for i, block in enumerate(module.blocks):
            for layer in block:
                layers += conv_bn(layer.conv, layer.bn, True)
            if i < 3:
                layers.append(torch.nn.MaxPool2d(2))
    head = torch.nn.Linear(module.head.in_features, module.head.out_features)
    head.weight.data, head.bias.data = t(module.head.kernel).T.contiguous(), t(module.head.bias)
    layers += [torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), head]
    return torch.nn.Sequential(*layers).eval()


@pytest.mark.parametrize("composite", ["epsilon_gamma_box", "epsilon_plus", "epsilon_alpha2_beta1"])
@pytest.mark.parametrize("name", ["cnn2d", "vgg8"])
def test_lrp_matches_zennit(name, composite):
    torch = pytest.importorskip("torch")
    pytest.importorskip("zennit")
    from zennit.attribution import Gradient
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.composites import EpsilonAlpha2Beta1, EpsilonGammaBox, EpsilonPlus

    fam = FAMILIES[1] if name == "cnn2d" else FAMILIES[6]
    model, params, rest, x = family(*fam)
    net = _torch_sequential(name, model, params, rest, torch)
    t = jnp.array([0, 1, 2])
    low, high = -3.0, 3.0
    xt = torch.tensor(np.asarray(x)).permute(0, 3, 1, 2).contiguous().requires_grad_(True)
    canon = [SequentialMergeBatchNorm()]
    zc = {
        "epsilon_gamma_box": lambda: EpsilonGammaBox(
            low=torch.full_like(xt, low), high=torch.full_like(xt, high), gamma=0.5, canonizers=canon
        ),
        "epsilon_plus": lambda: EpsilonPlus(canonizers=canon),
        "epsilon_alpha2_beta1": lambda: EpsilonAlpha2Beta1(canonizers=canon),
    }[composite]()
    with torch.no_grad():
        z = net(xt).numpy()
    r_idx = np.argmax(np.where(np.eye(5)[np.asarray(t)] > 0, -np.inf, z), axis=1)
    # The gap's relevance at the logits: z_y on the target, -z_r on the runner-up (R_out = z_y - z_r).
    grad_out = np.zeros_like(z)
    grad_out[np.arange(3), np.asarray(t)] = z[np.arange(3), np.asarray(t)]
    grad_out[np.arange(3), r_idx] = -z[np.arange(3), r_idx]
    with Gradient(model=net, composite=zc) as attributor:
        _, rel = attributor(xt, torch.tensor(grad_out))
    want = rel.permute(0, 2, 3, 1).numpy()
    got = np.asarray(lrp(model, params, rest, x, t, composite=composite, gamma=0.5, low=low, high=high))
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-4 * np.abs(want).max())
