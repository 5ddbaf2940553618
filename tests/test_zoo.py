"""The CIFAR model zoo: parameter counts against the reference implementations, features, BN under vmap."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkd.errors import ConfigError
from jaxkd.models import FunctionalModel, ViT, WideResNet, make_model

# Published counts for 100 classes: RepDistiller's README/tables and pytorch-cifar100's README (millions).
REFERENCE_PARAMS = {
    "resnet8x4": 1.23,
    "resnet32x4": 7.43,
    "wrn_40_2": 2.26,
    "wrn_16_2": 0.70,
    "wrn_40_1": 0.57,
    "resnet56": 0.86,
    "resnet20": 0.28,
    "resnet110": 1.74,
    "vgg8": 3.96,
    "vgg13": 9.46,
    "resnet18": 11.2,
    "resnet34": 21.3,
    "resnet50": 23.7,
}  # pytorch-cifar100: one decimal


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS))
def test_parameter_count_matches_reference(name):
    count = make_model(name, (32, 32, 3), 100).num_params()
    digits = 1 if name in ("resnet18", "resnet34", "resnet50") else 2
    assert count / 1e6 == pytest.approx(REFERENCE_PARAMS[name], abs=0.6 * 10**-digits)  # as published


# (model, expected feature shapes at 32x32 without the batch axis)
FEATURES = {
    "resnet8x4": {
        "stem": (32, 32, 32),
        "stage1": (32, 32, 64),
        "stage2": (16, 16, 128),
        "stage3": (8, 8, 256),
        "stage3_pre": (8, 8, 256),
        "pooled": (256,),
    },
    "wrn_16_2": {
        "stem": (32, 32, 16),
        "stage1": (32, 32, 32),
        "stage2": (16, 16, 64),
        "stage3": (8, 8, 128),
        "stage1_pre": (32, 32, 32),
        "pooled": (128,),
    },
    "vgg13": {
        "stage0": (32, 32, 64),
        "stage1": (16, 16, 128),
        "stage2": (8, 8, 256),
        "stage3": (4, 4, 512),
        "stage4": (4, 4, 512),
        "stage4_pre": (4, 4, 512),
        "pooled": (512,),
    },
    "resnet50": {"stem": (32, 32, 64), "stage1": (32, 32, 256), "stage4": (4, 4, 2048), "pooled": (2048,)},
    "vit_tiny": {"block0": (8, 8, 192), "block5": (8, 8, 192), "stage3": (8, 8, 192), "pooled": (192,)},
}


@pytest.mark.parametrize("name", sorted(FEATURES))
def test_feature_shapes(name):
    model = make_model(name, (32, 32, 3), 100)
    params, rest = jax.eval_shape(model.init, jax.random.key(0))
    x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    logits, feats, _ = jax.eval_shape(lambda p, r, x: model.apply(p, r, x, train=True), params, rest, x)
    assert logits.shape == (2, 100) and logits.dtype == jnp.float32
    for key, shape in FEATURES[name].items():
        assert feats[key].shape == (2, *shape), key


def _small(name, shape, num_classes, dtype="float32"):
    """One small member of every family (compiles fast); same code paths as the zoo's sizes."""
    if name == "wrn_10_1":  # WRN-10-1: one pre-activation block per group
        return FunctionalModel(
            "wrn_10_1", lambda rngs: WideResNet(shape, num_classes, depth=10, widen=1, rngs=rngs), num_classes, shape
        )
    if name == "bottleneck_micro":  # the ResNet-50/101/152 block, one per stage
        from jaxkd.models.resnet import Bottleneck, _StagedResNet

        return FunctionalModel(
            "bottleneck_micro",
            lambda rngs: _StagedResNet(
                shape, num_classes, block=Bottleneck, stem=2, stages=[(2, 1, 1), (4, 1, 2)], dtype=None, rngs=rngs
            ),
            num_classes,
            shape,
        )
    if name == "vit_micro":
        dt = None if dtype == "float32" else dtype
        return FunctionalModel(
            "vit_micro",
            lambda rngs: ViT(shape, num_classes, patch=4, dim=16, depth=2, heads=2, dtype=dt, rngs=rngs),
            num_classes,
            shape,
        )
    widths = {"resnet8": (2, 2, 4, 4), "vgg8": (2, 2, 4, 4, 4), "resnet18": (2, 2, 4, 4, 4)}[name]
    return make_model(name, shape, num_classes, widths=widths, dtype=dtype)


@pytest.mark.parametrize("name", ["resnet8", "wrn_10_1", "vgg8", "bottleneck_micro", "vit_micro"])  # each family
def test_batchnorm_under_vmap_matches_each_seed(name):
    model = _small(name, (8, 8, 3), 5)
    keys = jax.random.split(jax.random.key(0), 2)
    # lax.map, not vmap: vmapped threefry draws compile for tens of seconds on XLA:CPU (see sweep.py)
    params, rest = jax.jit(lambda ks: jax.lax.map(model.init, ks))(keys)
    x = jax.random.normal(jax.random.key(1), (2, 4, 8, 8, 3)) * 2 + 1  # a different batch per seed
    apply = jax.jit(lambda p, r, x: model.apply(p, r, x, train=True))
    logits, _, new_rest = jax.vmap(apply)(params, rest, x)
    for s in range(2):
        one = jax.tree.map(lambda a, s=s: a[s], (params, rest))
        ref_logits, _, ref_rest = apply(*one, x[s])
        # Equal up to float32 round-off of differently fused programs (measured: 3.3e-7 on logits of size ~1,
        # 2.4e-7 on the running statistics); mixing seeds would give O(1) differences.
        np.testing.assert_allclose(logits[s], ref_logits, rtol=1e-5, atol=2e-6)
        for a, b in zip(jax.tree.leaves(new_rest), jax.tree.leaves(ref_rest)):
            np.testing.assert_allclose(a[s], b, rtol=1e-5, atol=1e-6)
    # The seeds really differ and train mode really moved the running statistics.
    assert not np.allclose(logits[0], logits[1])
    if jax.tree.leaves(rest):
        assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(rest), jax.tree.leaves(new_rest)))


@pytest.mark.parametrize("name", ["resnet8", "vit_micro"])
def test_bfloat16_compute_is_close_to_float32(name):
    f32, bf16 = _small(name, (8, 8, 3), 10), _small(name, (8, 8, 3), 10, dtype="bfloat16")
    params, rest = f32.init(jax.random.key(0))
    params16, _ = bf16.init(jax.random.key(0))
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params16))  # parameters stay float32
    x = jax.random.normal(jax.random.key(1), (16, 8, 8, 3))
    ref, _, _ = jax.jit(lambda p, r, x: f32.apply(p, r, x, train=False))(params, rest, x)
    out, feats, _ = jax.jit(lambda p, r, x: bf16.apply(p, r, x, train=False))(params, rest, x)
    assert out.dtype == jnp.float32
    err = np.max(np.abs(np.asarray(out) - np.asarray(ref))) / np.max(np.abs(np.asarray(ref)))
    # bfloat16 has 8 mantissa bits (relative step 2^-8 = 0.0039): measured 0.008 for both models. Float32 compute
    # would be within 1e-6; an error several times bfloat16's rounding would mean a wrong cast.
    assert 2e-3 < err < 0.02, err


def test_zoo_bad_inputs():
    with pytest.raises(ConfigError, match="fixed widths"):
        make_model("wrn_40_2", (32, 32, 3), 100, widths=(8, 8))
    with pytest.raises(ConfigError, match=r"\[H, W, C\]"):
        make_model("resnet20", (8, 8), 10)
    with pytest.raises(ConfigError, match="dtype"):
        make_model("resnet20", (8, 8, 3), 10, dtype="float16")
    with pytest.raises(ConfigError, match="resnet20"):
        make_model("resnet20", (8, 8, 3), 10, widths=(4, 4)).init(jax.random.key(0))
    with pytest.raises(ConfigError, match="patch"):
        make_model("vit_tiny", (10, 10, 3), 10).init(jax.random.key(0))


@pytest.mark.parametrize(
    "size,kernel,stride,pad", [(8, 3, 1, 1), (8, 3, 2, 1), (7, 3, 2, 1), (8, 1, 2, 0), (9, 5, 2, 2)]
)
def test_canonical_conv_gradients_match_lax(size, kernel, stride, pad):
    # The zoo's convolution has a hand-written backward pass (fast on XLA:CPU inside loops); its gradients
    # must equal JAX's own differentiation of lax.conv_general_dilated.
    from jax import lax

    from jaxkd.models.layers import canonical_conv

    x = jax.random.normal(jax.random.key(0), (3, size, size, 5))
    w = jax.random.normal(jax.random.key(1), (kernel, kernel, 5, 4))
    padding = ((pad, pad), (pad, pad))
    dn = ("NHWC", "HWIO", "NHWC")
    ref = jax.jit(
        jax.grad(
            lambda x, w: jnp.sum(jnp.sin(lax.conv_general_dilated(x, w, (stride,) * 2, padding, dimension_numbers=dn))),
            (0, 1),
        )
    )
    new = jax.jit(jax.grad(lambda x, w: jnp.sum(jnp.sin(canonical_conv(x, w, (stride,) * 2, padding))), (0, 1)))
    for a, b in zip(ref(x, w), new(x, w)):
        assert float(jnp.max(jnp.abs(a))) > 0
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="Winograd is the CPU choice for small maps")
@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("shape", [(2, 8, 8, 128, 128), (1, 16, 16, 128, 128), (1, 16, 16, 256, 256)])
def test_winograd_convolution_gradients_match_lax(shape, tile, monkeypatch):
    # Forward and input gradient both take Winograd on these maps; only the weight gradient stays a convolution.
    from jax import lax

    from jaxkd.models import layers
    from jaxkd.models.layers import canonical_conv

    monkeypatch.setattr(layers, "WINOGRAD_TILE", tile)

    b, h, w_, c, o = shape
    x = jax.random.normal(jax.random.key(6), (b, h, w_, c))
    w = jax.random.normal(jax.random.key(7), (3, 3, c, o)) / np.sqrt(9 * c)
    pad, dn = ((1, 1), (1, 1)), ("NHWC", "HWIO", "NHWC")

    def loss(conv):
        return jax.jit(jax.value_and_grad(lambda x, w: jnp.sum(jnp.sin(conv(x, w))), (0, 1)))

    ours = loss(lambda x, w: canonical_conv(x, w, (1, 1), pad))
    assert ours.lower(x, w).compile().as_text().count(" convolution(") == 1
    ref_v, ref_g = loss(lambda x, w: lax.conv_general_dilated(x, w, (1, 1), pad, dimension_numbers=dn))(x, w)
    new_v, new_g = ours(x, w)
    np.testing.assert_allclose(float(new_v), float(ref_v), rtol=1e-5)
    for a, g in zip(ref_g, new_g):
        largest = float(jnp.max(jnp.abs(a)))
        assert largest > 0
        # two float32 algorithms: round-off (on these maps F(2x2) 1-3e-6 of the largest entry, F(4x4) 2-7e-6)
        assert float(jnp.max(jnp.abs(g - a))) < {2: 1e-5, 4: 2e-5}[tile] * largest


@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize(
    "shape", [(3, 8, 8, 5, 4), (2, 4, 6, 16, 8), (2, 4, 8, 16, 8), (2, 8, 8, 64, 32), (1, 16, 16, 256, 256)]
)
def test_winograd_conv_matches_a_float64_convolution(shape, tile):
    from jaxkd.models.layers import winograd_conv

    b, h, w_, c, o = shape
    if h % tile or w_ % tile:
        pytest.skip(f"{h}x{w_} maps are not cut into {tile}x{tile} tiles")
    x = jax.random.normal(jax.random.key(4), (b, h, w_, c))
    w = jax.random.normal(jax.random.key(5), (3, 3, c, o)) / np.sqrt(9 * c)
    want = _conv_float64_padded(x, w, ((1, 1), (1, 1)))
    got = np.asarray(jax.jit(functools.partial(winograd_conv, tile=tile))(x, w), np.float64)
    # float32 round-off: the direct convolution in float32 is off by 2-6e-7 of the largest output on these shapes;
    # F(2x2) by 1e-6 or less; F(4x4), whose transforms hold entries up to 8 and 1/24, by 3-9e-6.
    assert np.max(np.abs(got - want)) < {2: 2e-6, 4: 2e-5}[tile] * np.max(np.abs(want))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="Winograd is the CPU choice for small maps")
def test_zoo_convolutions_take_winograd_only_on_small_maps(monkeypatch):
    from jaxkd.models import layers

    def conv_ops(shape, channels):
        x = jnp.zeros(shape)
        w = jnp.zeros((3, 3, shape[-1], channels))
        fn = jax.jit(lambda x, w: layers.canonical_conv(x, w, (1, 1), ((1, 1), (1, 1))))
        return fn.lower(x, w).compile().as_text().count(" convolution(")

    assert conv_ops((2, 8, 8, 128), 128) == 0  # 8x8 with 128 channels: Winograd's matmuls, no convolution
    assert conv_ops((2, 4, 4, 256), 256) == 0
    assert conv_ops((2, 16, 16, 256), 256) == 0  # 16x16 with 256 channels
    assert conv_ops((2, 16, 16, 128), 128) == 0  # and with 128
    assert conv_ops((2, 16, 16, 64), 64) == 1  # XLA's convolution, where Winograd does not win
    assert conv_ops((2, 18, 16, 128), 128) == 1  # a map over 256 positions
    assert conv_ops((2, 32, 32, 64), 64) == 1
    assert conv_ops((2, 8, 8, 64), 128) == 1  # few channels in: little to gain
    assert conv_ops((2, 6, 6, 128), 128) == 0 and conv_ops((2, 7, 7, 128), 128) == 1  # odd maps are not tiled
    assert [layers.winograd_tile(*hw) for hw in ((8, 8), (16, 16), (6, 6))] == [2, 2, 2]  # F(2x2, 3x3) by default
    x = jax.random.normal(jax.random.key(8), (2, 8, 8, 128))
    w = jax.random.normal(jax.random.key(9), (3, 3, 128, 128)) / np.sqrt(9 * 128)
    f2 = np.asarray(layers.canonical_conv(x, w, (1, 1), ((1, 1), (1, 1))))
    monkeypatch.setattr(layers, "WINOGRAD_TILE", 4)  # F(4x4, 3x3) where the map divides by 4
    assert [layers.winograd_tile(*hw) for hw in ((8, 8), (16, 16), (4, 4), (6, 6), (8, 6))] == [4, 4, 4, 2, 2]
    assert conv_ops((2, 8, 8, 128), 128) == 0 and conv_ops((2, 6, 6, 128), 128) == 0
    f4 = np.asarray(layers.canonical_conv(x, w, (1, 1), ((1, 1), (1, 1))))
    assert not np.array_equal(f4, f2)  # the other algorithm's round-off: F(4x4) was taken
    np.testing.assert_allclose(f4, np.asarray(layers.winograd_conv(x, w, tile=4)), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="tile 4 on a 6x6 map"):
        layers.winograd_conv(x[:, :6, :6], w, tile=4)
    monkeypatch.setattr(layers, "CONV_WINOGRAD", False)
    assert conv_ops((2, 8, 8, 128), 128) == 1


def _conv_float64_padded(x, w, pad):
    """Stride-1 NHWC/HWIO convolution with explicit zero padding, in NumPy float64, from the definition."""
    kh, kw = w.shape[:2]
    xp = np.pad(np.asarray(x, np.float64), ((0, 0), *pad, (0, 0)))
    ho, wo = xp.shape[1] - kh + 1, xp.shape[2] - kw + 1
    out = np.zeros((x.shape[0], ho, wo, w.shape[3]))
    for i in range(kh):
        for j in range(kw):
            for b in range(x.shape[0]):
                out[b] += xp[b, i : i + ho, j : j + wo, :] @ np.asarray(w[i, j], np.float64)
    return out


@pytest.mark.parametrize(
    "shape,kernel,pad",
    [
        ((3, 16, 16, 4, 5), (3, 3), ((1, 1), (1, 1))),
        ((2, 17, 15, 3, 8), (3, 3), ((1, 1), (1, 1))),
        ((2, 16, 16, 2, 3), (5, 3), ((2, 1), (0, 2))),
        ((1, 20, 1, 1, 4), (5, 1), ((2, 2), (0, 0))),
    ],
)
def test_direct_conv_matches_a_float64_convolution(shape, kernel, pad):
    from jaxkd.models.layers import direct_conv

    b, h, w_, c, o = shape
    x = jax.random.normal(jax.random.key(8), (b, h, w_, c))
    w = jax.random.normal(jax.random.key(9), (*kernel, c, o)) / np.sqrt(kernel[0] * kernel[1] * c)
    want = _conv_float64_padded(x, w, pad)
    got = np.asarray(jax.jit(direct_conv, static_argnums=2)(x, w, pad), np.float64)
    assert got.shape == want.shape
    assert np.max(np.abs(got - want)) < 2e-6 * np.max(np.abs(want))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="direct convolutions are a CPU choice")
def test_direct_convolutions_take_few_channel_maps_by_default_on_cpu_and_match_lax_gradients():
    from jax import lax

    from jaxkd.models import layers
    from jaxkd.results import env_stamp

    pad, dn = ((1, 1), (1, 1)), ("NHWC", "HWIO", "NHWC")

    def conv_ops(shape, channels, stride=1):
        x, w = jnp.zeros(shape), jnp.zeros((3, 3, shape[-1], channels))
        fn = jax.jit(lambda x, w: layers.canonical_conv(x, w, (stride, stride), pad))
        return fn.lower(x, w).compile().as_text().count(" convolution(")

    def loss(conv):
        return jax.jit(jax.value_and_grad(lambda x, w: jnp.sum(jnp.sin(conv(x, w))), (0, 1)))

    x = jax.random.normal(jax.random.key(10), (3, 16, 16, 4))
    w = jax.random.normal(jax.random.key(11), (3, 3, 4, 6)) / 6.0
    with layers.direct_convolutions(False):  # a run that turns them off: XLA's convolution
        assert not layers.direct_conv_enabled() and env_stamp()["conv_direct"] is False
        assert conv_ops((2, 16, 16, 4), 4) == 1
    assert layers.direct_conv_enabled() and env_stamp()["conv_direct"] is True  # the CPU default, restored
    with layers.direct_convolutions():
        assert conv_ops((2, 16, 16, 4), 4) == 0  # few channels on a 16x16 map: multiply-adds, no convolution
        assert conv_ops((2, 16, 16, 8), 8) == 0
        assert conv_ops((2, 8, 8, 4), 4) == 1  # a small map
        assert conv_ops((2, 16, 16, 16), 4) == 1  # more channels
        assert conv_ops((2, 16, 16, 4), 4, stride=2) == 1  # strided
        assert conv_ops((2, 16, 15, 4), 4) == 1  # an output map under 16x16

        # 1-D convolutions (canonical_conv's width-1 form) and larger kernels are unmeasured: XLA's convolution
        def count(fn, x, w):
            return jax.jit(fn).lower(x, w).compile().as_text().count(" convolution(")

        assert count(lambda x, w: layers.canonical_conv(x, w, (1,), ((1, 1),)), jnp.zeros((2, 300, 4)), w[0]) == 1
        five = (jnp.zeros((2, 16, 16, 4)), jnp.zeros((5, 5, 4, 4)))
        assert count(lambda x, w: layers.canonical_conv(x, w, (1, 1), ((2, 2), (2, 2))), *five) == 1
        ours = loss(lambda x, w: layers.canonical_conv(x, w, (1, 1), pad))
        # forward and input gradient as multiply-adds; the weight gradient stays XLA's convolution
        assert ours.lower(x, w).compile().as_text().count(" convolution(") == 1
        new_v, new_g = ours(x, w)
    ref_v, ref_g = loss(lambda x, w: lax.conv_general_dilated(x, w, (1, 1), pad, dimension_numbers=dn))(x, w)
    np.testing.assert_allclose(float(new_v), float(ref_v), rtol=1e-5)
    for a, g in zip(ref_g, new_g):
        largest = float(jnp.max(jnp.abs(a)))
        assert largest > 0
        assert float(jnp.max(jnp.abs(g - a))) < 1e-5 * largest


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="direct convolutions are a CPU choice")
def test_direct_convolutions_retrace_programs_and_keep_xla_for_negative_padding(monkeypatch):
    from jax import lax

    from jaxkd.models import layers

    x, w = jnp.zeros((2, 16, 16, 4)), jnp.zeros((3, 3, 4, 4))
    fn = jax.jit(lambda x, w: layers.canonical_conv(x, w, (1, 1), ((1, 1), (1, 1))))  # one function, traced thrice

    def convs():
        return fn.lower(x, w).compile().as_text().count(" convolution(")

    with layers.direct_convolutions(False):
        assert convs() == 1
    with layers.direct_convolutions():  # the default already: the cache was cleared when the block above ended
        assert convs() == 0  # not the trace cached in the block before
        with pytest.raises(RuntimeError, match="inside"):
            with layers.direct_convolutions(False):
                assert convs() == 1
                raise RuntimeError("inside")
        assert layers.direct_conv_enabled() and convs() == 0  # restored after the exception
        # negative padding (a 1x1 convolution padded by 1 has it in its input gradient) stays XLA's, which crops
        xr = jax.random.normal(jax.random.key(12), (2, 18, 18, 4))
        wr = jax.random.normal(jax.random.key(13), (3, 3, 4, 4))
        neg = ((-1, 0), (0, -1))
        got = jax.jit(lambda x, w: layers.canonical_conv(x, w, (1, 1), neg))(xr, wr)
        want = lax.conv_general_dilated(xr, wr, (1, 1), neg, dimension_numbers=("NHWC", "HWIO", "NHWC"))
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
        g = jax.grad(lambda x: jnp.sum(layers.canonical_conv(x, wr[1:2, 1:2], (1, 1), ((1, 1), (1, 1))) ** 2))
        assert g(xr).shape == xr.shape
        monkeypatch.setenv("JAXKD_XLA_OPTIONS", "jaxlib")  # XLA's defaults asked for: no CPU choice of ours
        assert not layers.direct_conv_enabled()
        jax.clear_caches()  # the variable is read when a program is traced: a cached trace keeps the choice
        assert convs() == 1


@pytest.mark.parametrize("length,stride", [(12, 1), (11, 2)])
def test_canonical_conv_1d_gradients_match_lax(length, stride):
    # cnn1d's convolutions go through the 2-D canonical form over a width-1 axis.
    from jax import lax

    from jaxkd.models.layers import canonical_conv

    x = jax.random.normal(jax.random.key(2), (3, length, 5))
    w = jax.random.normal(jax.random.key(3), (3, 5, 4))
    dn = ("NWC", "WIO", "NWC")

    def loss(fn):
        return jax.jit(jax.value_and_grad(lambda x, w: jnp.sum(jnp.sin(fn(x, w))), (0, 1)))

    ref_v, ref_g = loss(lambda x, w: lax.conv_general_dilated(x, w, (stride,), ((1, 1),), dimension_numbers=dn))(x, w)
    new_v, new_g = loss(lambda x, w: canonical_conv(x, w, (stride,), ((1, 1),), dimension_numbers=dn))(x, w)
    np.testing.assert_allclose(float(new_v), float(ref_v), rtol=1e-5)
    for a, b in zip(ref_g, new_g):
        assert float(jnp.max(jnp.abs(a))) > 0
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-5)
