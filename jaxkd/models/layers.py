"""Layers with PyTorch's conventions, shared by the CIFAR model zoo.

The zoo reproduces the reference implementations' parameter counts and
initialisation (RepDistiller, pytorch-cifar100): 3x3 convolutions padded by 1
on each side (XLA's "SAME" pads stride-2 convolutions asymmetrically),
Kaiming-normal (fan-out) convolution kernels, BatchNorm with PyTorch's
momentum 0.1 (flax's 0.9) and eps 1e-5, and linear layers initialised
uniformly in ±1/sqrt(fan_in) as ``torch.nn.Linear`` is. ``dtype`` is the
compute dtype (e.g. bfloat16); parameters stay float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

KAIMING_FAN_OUT = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")
TORCH_LINEAR = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def conv(in_ch, out_ch, kernel, *, stride=1, bias=False, dtype=None, rngs: nnx.Rngs) -> nnx.Conv:
    """``kernel x kernel`` convolution, zero-padded by ``kernel // 2`` on every side."""
    pad = kernel // 2
    return nnx.Conv(in_ch, out_ch, kernel_size=(kernel, kernel), strides=(stride, stride),
                    padding=((pad, pad), (pad, pad)), use_bias=bias, kernel_init=KAIMING_FAN_OUT,
                    dtype=dtype, param_dtype=jnp.float32, rngs=rngs)


def batch_norm(ch, *, dtype=None, rngs: nnx.Rngs) -> nnx.BatchNorm:
    return nnx.BatchNorm(ch, momentum=0.9, epsilon=1e-5, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)


def linear(in_f, out_f, *, dtype=None, kernel_init=TORCH_LINEAR, zero_bias=False, rngs: nnx.Rngs) -> nnx.Linear:
    bound = 0.0 if zero_bias else 1.0 / in_f**0.5

    def bias_init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return nnx.Linear(in_f, out_f, kernel_init=kernel_init, bias_init=bias_init, dtype=dtype,
                      param_dtype=jnp.float32, rngs=rngs)


def global_avg_pool(h_BxHxWxC):
    return jnp.mean(h_BxHxWxC, axis=(1, 2))


def max_pool2(h_BxHxWxC):
    return nnx.max_pool(h_BxHxWxC, window_shape=(2, 2), strides=(2, 2))


def as_float32(logits, features):
    """Logits and features leave the model in float32 whatever the compute dtype."""
    return logits.astype(jnp.float32), {k: v.astype(jnp.float32) for k, v in features.items()}
