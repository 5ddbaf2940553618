"""Small convolutional networks (2-D for images, 1-D for sequences).

Both use BatchNorm; its running statistics are ``nnx.BatchStat`` variables,
carried as explicit state by :mod:`jaxkd.models.functional`. Convolutions pad
by 1 (the same as "SAME" for these stride-1 3x3 kernels) and differentiate
through :func:`jaxkd.models.layers.canonical_conv`, which keeps XLA:CPU's
gradient convolutions fast inside the trainer's loop. Convolutions have no
bias: BatchNorm removes it, so its true gradient is zero, and Adam turned the
round-off in that zero into full-size steps whose drift the running
statistics then lagged behind (evaluation accuracy depended on round-off).
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from jaxkd.models.layers import canonical_conv
from jaxkd.models.probe import tap


class _ConvNet(nnx.Module):
    """conv-BN-ReLU blocks (pooling by 2 after each), global average pool, linear head."""

    def __init__(self, in_shape, num_classes, *, channels, ndim, rngs: nnx.Rngs):
        in_ch = in_shape[-1]
        convs, norms = [], []
        for ch in channels:
            convs.append(
                nnx.Conv(
                    in_ch,
                    ch,
                    kernel_size=(3,) * ndim,
                    padding=((1, 1),) * ndim,
                    use_bias=False,
                    rngs=rngs,
                    conv_general_dilated=canonical_conv,
                )
            )
            norms.append(nnx.BatchNorm(ch, momentum=0.9, rngs=rngs))
            in_ch = ch
        self.convs = nnx.List(convs)
        self.norms = nnx.List(norms)
        self.head = nnx.Linear(in_ch, num_classes, rngs=rngs)
        self.ndim = ndim

    def __call__(self, x):
        features = {}
        h = x
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            h = tap(f"block{i}", nnx.relu(norm(conv(h))))
            features[f"block{i}"] = h
            if min(h.shape[1 : 1 + self.ndim]) >= 2:
                window = (2,) * self.ndim
                h = nnx.avg_pool(h, window_shape=window, strides=window)
        pooled = tap("pooled", jnp.mean(h, axis=tuple(range(1, 1 + self.ndim))))
        features["pooled"] = pooled
        return self.head(pooled), features


class CNN2D(_ConvNet):
    """2-D CNN for ``[B, H, W, C]`` images."""

    def __init__(self, in_shape, num_classes, *, channels=(32, 64), rngs: nnx.Rngs):
        super().__init__(_image_shape(in_shape), num_classes, channels=channels, ndim=2, rngs=rngs)

    def __call__(self, x):
        return super().__call__(x if x.ndim == 4 else x[..., None])


class CNN1D(_ConvNet):
    """1-D CNN for ``[B, L]`` or ``[B, L, C]`` sequences (e.g. MNIST-1D)."""

    def __init__(self, in_shape, num_classes, *, channels=(32, 64), rngs: nnx.Rngs):
        shape = tuple(in_shape) if len(in_shape) == 2 else (in_shape[0], 1)
        super().__init__(shape, num_classes, channels=channels, ndim=1, rngs=rngs)

    def __call__(self, x):
        return super().__call__(x if x.ndim == 3 else x[..., None])


def _image_shape(in_shape):
    return tuple(in_shape) if len(in_shape) == 3 else (*in_shape, 1)
