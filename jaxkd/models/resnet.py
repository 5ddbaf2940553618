"""ResNets for 32x32 inputs: RepDistiller's CIFAR ResNets and the CIFAR ResNet-18..152 layout.

``CifarResNet`` is RepDistiller's ``ResNet(depth, num_filters)``: a 3x3 stem
to ``channels[0]``, three stages of ``(depth - 2) / 6`` basic blocks with
``channels[1:]`` channels (strides 1, 2, 2), global average pooling and a
linear head. ``resnet20`` is ``channels=(16, 16, 32, 64)``; the ``x4``
variants are ``(32, 64, 128, 256)``.

``ResNet`` is the layout of pytorch-cifar100 (used by Kang & Kim): a 3x3 stem
to 64 channels without max-pool, four stages of basic (18, 34) or bottleneck
(50, 101, 152) blocks with 64/128/256/512 base channels (strides 1, 2, 2, 2).

Features (both): ``stem``; ``stage{i}`` the output of stage i after its final
ReLU and ``stage{i}_pre`` the same before it (the residual sum, as
RepDistiller's ``preact`` features); ``pooled``.
"""

from __future__ import annotations

from flax import nnx

from jaxkd.models.layers import as_float32, batch_norm, conv, global_avg_pool, linear
from jaxkd.models.probe import tap


class BasicBlock(nnx.Module):
    expansion = 1

    def __init__(self, in_ch, ch, stride, *, dtype, rngs: nnx.Rngs):
        self.conv1 = conv(in_ch, ch, 3, stride=stride, dtype=dtype, rngs=rngs)
        self.bn1 = batch_norm(ch, dtype=dtype, rngs=rngs)
        self.conv2 = conv(ch, ch, 3, dtype=dtype, rngs=rngs)
        self.bn2 = batch_norm(ch, dtype=dtype, rngs=rngs)
        self.shortcut = _shortcut(in_ch, ch, stride, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        h = nnx.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return h + (x if self.shortcut is None else self.shortcut(x))  # pre-activation sum


class Bottleneck(nnx.Module):
    expansion = 4

    def __init__(self, in_ch, ch, stride, *, dtype, rngs: nnx.Rngs):
        out = ch * self.expansion
        self.conv1 = conv(in_ch, ch, 1, dtype=dtype, rngs=rngs)
        self.bn1 = batch_norm(ch, dtype=dtype, rngs=rngs)
        self.conv2 = conv(ch, ch, 3, stride=stride, dtype=dtype, rngs=rngs)
        self.bn2 = batch_norm(ch, dtype=dtype, rngs=rngs)
        self.conv3 = conv(ch, out, 1, dtype=dtype, rngs=rngs)
        self.bn3 = batch_norm(out, dtype=dtype, rngs=rngs)
        self.shortcut = _shortcut(in_ch, out, stride, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        h = nnx.relu(self.bn1(self.conv1(x)))
        h = nnx.relu(self.bn2(self.conv2(h)))
        h = self.bn3(self.conv3(h))
        return h + (x if self.shortcut is None else self.shortcut(x))


class _Shortcut(nnx.Module):
    def __init__(self, in_ch, out_ch, stride, *, dtype, rngs: nnx.Rngs):
        self.conv = conv(in_ch, out_ch, 1, stride=stride, dtype=dtype, rngs=rngs)
        self.bn = batch_norm(out_ch, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        return self.bn(self.conv(x))


def _shortcut(in_ch, out_ch, stride, *, dtype, rngs):
    if stride == 1 and in_ch == out_ch:
        return None
    return _Shortcut(in_ch, out_ch, stride, dtype=dtype, rngs=rngs)


class _StagedResNet(nnx.Module):
    """Stem, stages of residual blocks, global average pool, linear head."""

    def __init__(self, in_shape, num_classes, *, block, stem, stages, dtype, rngs: nnx.Rngs):
        # stages: tuple of (channels, num_blocks, stride)
        in_ch = in_shape[-1]
        self.stem_conv = conv(in_ch, stem, 3, dtype=dtype, rngs=rngs)
        self.stem_bn = batch_norm(stem, dtype=dtype, rngs=rngs)
        in_ch, groups = stem, []
        for ch, n, stride in stages:
            blocks = []
            for j in range(n):
                blocks.append(block(in_ch, ch, stride if j == 0 else 1, dtype=dtype, rngs=rngs))
                in_ch = ch * block.expansion
            groups.append(nnx.List(blocks))
        self.stages = nnx.List(groups)
        self.head = linear(in_ch, num_classes, dtype=dtype, rngs=rngs)

    def __call__(self, x_BxHxWxC):
        h = tap("stem", nnx.relu(self.stem_bn(self.stem_conv(x_BxHxWxC))))
        features = {"stem": h}
        for i, blocks in enumerate(self.stages, start=1):
            for blk in blocks:
                pre = blk(h)
                h = nnx.relu(pre)
            pre = tap(f"stage{i}_pre", pre)
            h = tap(f"stage{i}", nnx.relu(pre))
            features[f"stage{i}_pre"], features[f"stage{i}"] = pre, h
        pooled = tap("pooled", global_avg_pool(h))
        features["pooled"] = pooled
        return as_float32(self.head(pooled), features)


class CifarResNet(_StagedResNet):
    """RepDistiller's CIFAR ResNet (see module docstring)."""

    def __init__(self, in_shape, num_classes, *, depth, channels=(16, 16, 32, 64), dtype=None, rngs: nnx.Rngs):
        if (depth - 2) % 6 or len(channels) != 4:
            raise ValueError(f"CifarResNet needs depth = 6n + 2 and 4 channel sizes, got {depth}, {channels}")
        n = (depth - 2) // 6
        stages = [(channels[1], n, 1), (channels[2], n, 2), (channels[3], n, 2)]
        super().__init__(
            in_shape, num_classes, block=BasicBlock, stem=channels[0], stages=stages, dtype=dtype, rngs=rngs
        )


_LAYOUTS = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


class ResNet(_StagedResNet):
    """pytorch-cifar100's ResNet-18/34/50/101/152 (see module docstring)."""

    def __init__(self, in_shape, num_classes, *, depth, channels=(64, 64, 128, 256, 512), dtype=None, rngs: nnx.Rngs):
        if depth not in _LAYOUTS or len(channels) != 5:
            raise ValueError(f"ResNet depth must be one of {sorted(_LAYOUTS)} with 5 channel sizes")
        block, counts = _LAYOUTS[depth]
        stages = [(ch, n, 1 if i == 0 else 2) for i, (ch, n) in enumerate(zip(channels[1:], counts))]
        super().__init__(in_shape, num_classes, block=block, stem=channels[0], stages=stages, dtype=dtype, rngs=rngs)
