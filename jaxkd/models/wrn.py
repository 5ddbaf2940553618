"""Wide ResNets (Zagoruyko & Komodakis 2016) as RepDistiller defines them for CIFAR.

``WRN-d-k``: a 3x3 stem to 16 channels, three groups of ``(d - 4) / 6``
pre-activation blocks (BN-ReLU-conv-BN-ReLU-conv) with ``16k, 32k, 64k``
channels (strides 1, 2, 2), a final BN-ReLU, global average pooling and a
linear head; no dropout.

Features: ``stem`` (the stem convolution's output); ``stage{i}_pre`` the
group's output normalised by the BatchNorm that follows it (the next group's
first BN, or the final BN) and ``stage{i}`` that after its ReLU, so that
``stage{i}`` is the activation the network actually uses next, as in the
other families; ``pooled``.
"""

from __future__ import annotations

from flax import nnx

from jaxkd.models.layers import as_float32, batch_norm, conv, global_avg_pool, linear
from jaxkd.models.probe import tap


class PreActBlock(nnx.Module):
    def __init__(self, in_ch, ch, stride, *, dtype, rngs: nnx.Rngs):
        self.bn1 = batch_norm(in_ch, dtype=dtype, rngs=rngs)
        self.conv1 = conv(in_ch, ch, 3, stride=stride, dtype=dtype, rngs=rngs)
        self.bn2 = batch_norm(ch, dtype=dtype, rngs=rngs)
        self.conv2 = conv(ch, ch, 3, dtype=dtype, rngs=rngs)
        # RepDistiller projects the activated input when the shape changes, else adds x itself.
        self.shortcut = (
            None if (in_ch == ch and stride == 1) else conv(in_ch, ch, 1, stride=stride, dtype=dtype, rngs=rngs)
        )

    def __call__(self, x):
        """Returns ``(out, bn1(x))``: the block's output and its normalised input."""
        pre = self.bn1(x)
        a = nnx.relu(pre)
        h = self.conv2(nnx.relu(self.bn2(self.conv1(a))))
        return h + (x if self.shortcut is None else self.shortcut(a)), pre


class WideResNet(nnx.Module):
    def __init__(self, in_shape, num_classes, *, depth, widen, dtype=None, rngs: nnx.Rngs):
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n + 4, got {depth}")
        n = (depth - 4) // 6
        widths = (16, 16 * widen, 32 * widen, 64 * widen)
        self.stem = conv(in_shape[-1], widths[0], 3, dtype=dtype, rngs=rngs)
        groups, in_ch = [], widths[0]
        for ch, stride in zip(widths[1:], (1, 2, 2)):
            groups.append(
                nnx.List(
                    [
                        PreActBlock(in_ch if j == 0 else ch, ch, stride if j == 0 else 1, dtype=dtype, rngs=rngs)
                        for j in range(n)
                    ]
                )
            )
            in_ch = ch
        self.groups = nnx.List(groups)
        self.bn = batch_norm(in_ch, dtype=dtype, rngs=rngs)
        self.head = linear(in_ch, num_classes, dtype=dtype, rngs=rngs)

    def __call__(self, x_BxHxWxC):
        h = tap("stem", self.stem(x_BxHxWxC))
        features = {"stem": h}
        for i, blocks in enumerate(self.groups):
            for j, blk in enumerate(blocks):
                h, pre = blk(h)
                if i > 0 and j == 0:
                    features[f"stage{i}_pre"], features[f"stage{i}"] = pre, nnx.relu(pre)
        pre = tap("stage3_pre", self.bn(h))
        h = tap("stage3", nnx.relu(pre))
        features["stage3_pre"], features["stage3"] = pre, h
        pooled = tap("pooled", global_avg_pool(h))
        features["pooled"] = pooled
        return as_float32(self.head(pooled), features)
