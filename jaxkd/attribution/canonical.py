"""Canonization: a zoo model rewritten as an explicit graph of layers that LRP's rules apply to.

:func:`canonize` reads the NNX module of a :class:`~jaxkd.models.FunctionalModel`
(its attributes, in the order its ``__call__`` uses them) and returns a
:class:`Network`: a tuple of layers and one linear head, computing the same
function as the model in eval mode. Two rewrites, as zennit's canonizers:

* every BatchNorm that directly follows a convolution or dense layer is merged
  into it: ``W' = W · s``, ``b' = (b − μ) · s + β`` with ``s = γ / sqrt(σ² + ε)``
  per output channel (the logits are unchanged up to round-off);
* every residual addition is a :class:`Residual` node, whose two summands
  (the branch and the shortcut) get the sum's relevance in proportion to
  their contributions.

A BatchNorm that follows no linear layer (a pre-activation WideResNet's
``bn1``, after the residual sum) stays an elementwise affine layer
(:class:`Elementwise` of kind ``"batchnorm"``).

Supported: ``mlp``, ``cnn2d``, ``cnn1d``, the CIFAR ResNets (``resnet8``..``resnet110``,
``resnet8x4``, ``resnet32x4``), the ResNet-18..152 layout, the WideResNets, VGG, and
SubDistill's students (``sdstudent*``). Other models raise a ConfigError.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn.linear import canonicalize_padding

from jaxkd.errors import ConfigError
from jaxkd.features import adaptive_avg_pool
from jaxkd.models.cnn import _ConvNet
from jaxkd.models.layers import canonical_conv, global_avg_pool, max_pool2
from jaxkd.models.mlp import MLP
from jaxkd.models.resnet import BasicBlock, Bottleneck, _StagedResNet
from jaxkd.models.sdstudent import SubDistillStudent
from jaxkd.models.vgg import VGG
from jaxkd.models.wrn import WideResNet


@dataclasses.dataclass(frozen=True, eq=False)
class Linear:
    """An affine layer ``fwd(x, w) + b``: a convolution (``kind="conv"``) or a dense layer (``"dense"``).

    ``b`` has the output's rank (``[1, 1, 1, K]`` for a 2-D convolution,
    ``[1, K]`` for a dense layer). ``fwd`` is the bias-free linear map; rules evaluate it with modified
    weights and differentiate it for the transposed map.
    """

    kind: str
    w: Any
    b: Any
    fwd: Callable

    def __call__(self, x):
        return self.fwd(x, self.w) + self.b


@dataclasses.dataclass(frozen=True, eq=False)
class Elementwise:
    """An elementwise map: ``"activation"`` (ReLU) or an unmerged ``"batchnorm"``."""

    kind: str
    fwd: Callable

    def __call__(self, x):
        return self.fwd(x)


@dataclasses.dataclass(frozen=True, eq=False)
class Pool:
    """A parameter-free map: ``"avgpool"`` (any average: windows, global, adaptive), ``"maxpool"``, ``"reshape"``.

    A pooling whose output has its input's shape (a map already too small to
    pool) is the identity.
    """

    kind: str
    fwd: Callable

    def __call__(self, x):
        return self.fwd(x)


@dataclasses.dataclass(frozen=True, eq=False)
class Residual:
    """``branch(x) + shortcut(x)``; an empty ``shortcut`` is the identity."""

    branch: tuple
    shortcut: tuple = ()

    def __call__(self, x):
        return run(self.branch, x) + run(self.shortcut, x)


@dataclasses.dataclass(frozen=True, eq=False)
class Network:
    """A canonized model: ``head(run(body, prepare(x)))`` equals the model's logits.

    ``prepare`` adapts the input as the model's ``__call__`` does (a channel
    axis for grey images, none otherwise).
    """

    body: tuple
    head: Linear
    prepare: Callable = lambda x: x

    def __call__(self, x):
        return self.head(run(self.body, self.prepare(x)))


def run(layers, x):
    """Apply a sequence of layers."""
    for layer in layers:
        x = layer(x)
    return x


def first_linear(layers):
    """The first :class:`Linear` in execution order (descending into residual branches), or None."""
    for layer in layers:
        if isinstance(layer, Linear):
            return layer
        if isinstance(layer, Residual):
            found = first_linear(layer.branch) or first_linear(layer.shortcut)
            if found is not None:
                return found
    return None


RELU = Elementwise("activation", jax.nn.relu)


def _value(v):
    return None if v is None else jnp.asarray(v[...], jnp.float32)


def _bn_scale_shift(bn: nnx.BatchNorm):
    s = jax.lax.rsqrt(_value(bn.var) + bn.epsilon)
    if bn.scale is not None:
        s = s * _value(bn.scale)
    shift = -_value(bn.mean) * s
    if bn.bias is not None:
        shift = shift + _value(bn.bias)
    return s, shift


def _last(v, ndim):
    """A per-channel vector shaped to broadcast over the last axis of rank-``ndim`` arrays."""
    return v.reshape((1,) * (ndim - 1) + (-1,))


def batchnorm(bn: nnx.BatchNorm) -> Elementwise:
    """An unmerged BatchNorm in eval mode: ``x · s + t``."""
    s, t = _bn_scale_shift(bn)
    return Elementwise("batchnorm", lambda x: x * _last(s, x.ndim) + _last(t, x.ndim))


def conv(module: nnx.Conv, bn: nnx.BatchNorm | None = None) -> Linear:
    """A convolution, with the BatchNorm that follows it merged in."""
    nd = len(module.kernel_size)
    if (
        module.feature_group_count != 1
        or module.mask is not None
        or any(
            d not in (None, 1) and tuple(_tup(d, nd)) != (1,) * nd
            for d in (module.input_dilation, module.kernel_dilation)
        )
    ):
        raise ConfigError("LRP supports ungrouped, undilated, unmasked convolutions only")
    padding = canonicalize_padding(module.padding, nd)
    if isinstance(padding, str) and padding not in ("SAME", "VALID"):
        raise ConfigError(f"LRP does not support {padding} padding in a convolution")
    if not isinstance(padding, str):
        padding = tuple(tuple(int(p) for p in pair) for pair in padding)
    strides = tuple(_tup(module.strides, nd))
    dims = ("NWC", "WIO", "NWC") if nd == 1 else ("NHWC", "HWIO", "NHWC")

    def fwd(x, w):
        return canonical_conv(x, w, strides, padding, dimension_numbers=dims)

    w = _value(module.kernel)
    b = _value(module.bias) if module.bias is not None else jnp.zeros(w.shape[-1], jnp.float32)
    return _merge(Linear("conv", w, _last(b, nd + 2), fwd), bn)


def dense(module: nnx.Linear, bn: nnx.BatchNorm | None = None) -> Linear:
    """A dense layer (``x @ W + b``), with a following BatchNorm merged in."""
    w = _value(module.kernel)
    b = _value(module.bias) if module.bias is not None else jnp.zeros(w.shape[-1], jnp.float32)
    return _merge(Linear("dense", w, _last(b, 2), lambda x, w: x @ w), bn)


def _merge(layer: Linear, bn):
    if bn is None:
        return layer
    s, t = _bn_scale_shift(bn)
    nb = layer.b.ndim
    return dataclasses.replace(layer, w=layer.w * _last(s, layer.w.ndim), b=layer.b * _last(s, nb) + _last(t, nb))


def _tup(v, nd):
    if v is None:
        return (1,) * nd
    return (int(v),) * nd if isinstance(v, int) else tuple(int(s) for s in v)


def _pool_if(fn, min_size):
    """``fn`` when every spatial side is at least ``min_size``, else the identity (the zoo's rule)."""
    return lambda h: fn(h) if min(h.shape[1:-1]) >= min_size else h


def _avg_pool2(ndim):
    window = (2,) * ndim
    return lambda h: nnx.avg_pool(h, window_shape=window, strides=window)


# One builder per family: the layers in the order the module's __call__ applies them.


def _mlp(m: MLP):
    layers = [Pool("reshape", lambda x: x.reshape(x.shape[0], -1))]
    for layer in m.layers:
        layers += [dense(layer), RELU]
    return Network(tuple(layers), dense(m.head))


def _convnet(m: _ConvNet):
    layers = []
    for c, n in zip(m.convs, m.norms):
        layers += [conv(c, n), RELU, Pool("avgpool", _pool_if(_avg_pool2(m.ndim), 2))]
    axes = tuple(range(1, 1 + m.ndim))
    layers.append(Pool("avgpool", lambda h: jnp.mean(h, axis=axes)))
    ndim = m.ndim
    return Network(tuple(layers), dense(m.head), prepare=lambda x: x if x.ndim == ndim + 2 else x[..., None])


def _resnet(m: _StagedResNet):
    layers = [conv(m.stem_conv, m.stem_bn), RELU]
    for blocks in m.stages:
        for blk in blocks:
            if isinstance(blk, BasicBlock):
                branch = (conv(blk.conv1, blk.bn1), RELU, conv(blk.conv2, blk.bn2))
            elif isinstance(blk, Bottleneck):
                branch = (conv(blk.conv1, blk.bn1), RELU, conv(blk.conv2, blk.bn2), RELU, conv(blk.conv3, blk.bn3))
            else:
                raise ConfigError(f"LRP does not know the residual block {type(blk).__name__}")
            shortcut = () if blk.shortcut is None else (conv(blk.shortcut.conv, blk.shortcut.bn),)
            layers += [Residual(branch, shortcut), RELU]
    layers.append(Pool("avgpool", global_avg_pool))
    return Network(tuple(layers), dense(m.head))


def _wrn(m: WideResNet):
    layers = [conv(m.stem)]
    for blocks in m.groups:
        for blk in blocks:
            # out = conv2(relu(bn2(conv1(a)))) + (x or shortcut(a)), a = relu(bn1(x))
            branch = (conv(blk.conv1, blk.bn2), RELU, conv(blk.conv2))
            if blk.shortcut is None:
                layers.append(Residual((batchnorm(blk.bn1), RELU, *branch)))
            else:
                layers += [batchnorm(blk.bn1), RELU, Residual(branch, (conv(blk.shortcut),))]
    layers += [batchnorm(m.bn), RELU, Pool("avgpool", global_avg_pool)]
    return Network(tuple(layers), dense(m.head))


def _vgg(m: VGG):
    layers = []
    for i, block in enumerate(m.blocks):
        for layer in block:
            layers += [conv(layer.conv, layer.bn), RELU]
        if i < 3:
            layers.append(Pool("maxpool", max_pool2))
        elif i == 3:
            layers.append(Pool("maxpool", lambda h: max_pool2(h) if h.shape[1] >= 8 else h))
    layers.append(Pool("avgpool", global_avg_pool))
    return Network(tuple(layers), dense(m.head))


def _sdstudent(m: SubDistillStudent):
    layers = []
    for layer in m.stem:
        layers += [conv(layer.conv, layer.bn), RELU]
    if m.stem_pool:
        layers.append(Pool("maxpool", max_pool2))
    for a, b, adapter in m.stages:
        layers += [conv(a.conv, a.bn), RELU, conv(b.conv, b.bn), RELU, Pool("maxpool", _pool_if(max_pool2, 2))]
        layers.append(conv(adapter.conv, adapter.bn))
    size = m.pool_to
    layers += [conv(m.head_conv.conv, m.head_conv.bn), RELU, Pool("avgpool", lambda h: adaptive_avg_pool(h, size))]
    layers.append(Pool("reshape", lambda h: h.reshape(h.shape[0], -1)))
    for fc in m.fc[:-1]:
        layers += [dense(fc), RELU]
    return Network(tuple(layers), dense(m.fc[-1]))


_BUILDERS = (
    (MLP, _mlp),
    (_ConvNet, _convnet),
    (_StagedResNet, _resnet),
    (WideResNet, _wrn),
    (VGG, _vgg),
    (SubDistillStudent, _sdstudent),
)

SUPPORTED = "mlp, cnn2d, cnn1d, the CIFAR ResNets, ResNet-18..152, the WideResNets, VGG and the SubDistill students"


def canonize(model, params, rest) -> Network:
    """The canonized :class:`Network` of ``model`` (a :class:`FunctionalModel`) with these parameters.

    Works under ``jit`` and ``vmap`` (the parameters may be traced).
    """
    module = model.module(params, rest)
    for cls, build in _BUILDERS:
        if isinstance(module, cls):
            return build(module)
    raise ConfigError(
        f"LRP does not support model {model.name!r} ({type(module).__name__}); it supports {SUPPORTED}. "
        "Use integrated_gradients for this model"
    )
