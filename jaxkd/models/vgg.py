"""VGG with BatchNorm for 32x32 inputs, as RepDistiller defines it.

Five blocks of 3x3 conv (with bias)-BN-ReLU layers; 2x2 max-pooling after
blocks 0-2 (and after block 3 when its map is still 8x8 or larger, i.e. for
64x64 inputs); global average pooling; one linear classifier on the 512
pooled features. ``vgg8`` has one convolution per block; ``vgg11/13/16/19``
the classic configurations.

Features: ``stage{i}`` (i = 0..4) the block's output after ReLU and
``stage{i}_pre`` before it; ``pooled``.
"""

from __future__ import annotations

from flax import nnx

from jaxkd.models.layers import as_float32, batch_norm, conv, global_avg_pool, linear, max_pool2
from jaxkd.models.probe import tap

CONFIGS = {
    8: ((64,), (128,), (256,), (512,), (512,)),
    11: ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    13: ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    16: ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    19: ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),
}


class _ConvBN(nnx.Module):
    def __init__(self, in_ch, ch, *, dtype, rngs: nnx.Rngs):
        self.conv = conv(in_ch, ch, 3, bias=True, dtype=dtype, rngs=rngs)
        self.bn = batch_norm(ch, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        return self.bn(self.conv(x))


class VGG(nnx.Module):
    def __init__(self, in_shape, num_classes, *, depth, channels=None, dtype=None, rngs: nnx.Rngs):
        if depth not in CONFIGS:
            raise ValueError(f"VGG depth must be one of {sorted(CONFIGS)}, got {depth}")
        cfg = CONFIGS[depth]
        if channels is not None:  # same layout, other widths (one per block)
            cfg = tuple((c,) * len(layers) for c, layers in zip(channels, cfg, strict=True))
        in_ch, blocks = in_shape[-1], []
        for layers in cfg:
            block = []
            for ch in layers:
                block.append(_ConvBN(in_ch, ch, dtype=dtype, rngs=rngs))
                in_ch = ch
            blocks.append(nnx.List(block))
        self.blocks = nnx.List(blocks)
        nn_init = nnx.initializers.normal(0.01)  # RepDistiller's classifier init
        self.head = linear(in_ch, num_classes, kernel_init=nn_init, zero_bias=True, dtype=dtype, rngs=rngs)

    def __call__(self, x_BxHxWxC):
        h, features = x_BxHxWxC, {}
        for i, block in enumerate(self.blocks):
            for layer in block:
                pre = layer(h)
                h = nnx.relu(pre)
            pre = tap(f"stage{i}_pre", pre)
            h = tap(f"stage{i}", nnx.relu(pre))
            features[f"stage{i}_pre"], features[f"stage{i}"] = pre, h
            if i < 3 or (i == 3 and h.shape[1] >= 8):
                h = max_pool2(h)
        pooled = tap("pooled", global_avg_pool(h))
        features["pooled"] = pooled
        return as_float32(self.head(pooled), features)
