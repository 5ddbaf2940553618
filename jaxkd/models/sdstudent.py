"""SubDistill's VGG-like student family (Chormai et al., arXiv 2601.05913; official code ``student-W1-W2-W3-W4``).

Layout, following the reference code's description (``../shared/docs/papers.md`` §1.5):

* stem: two 3x3 conv-BN-ReLU layers of ``W1`` channels, then 2x2 max-pooling
  only for inputs of 64x64 or more (the reference's ImageNet inputs);
* four stages ``i = 1..4``: 3x3 conv-BN-ReLU, 3x3 conv-BN-ReLU (``W_i``
  channels), 2x2 max-pooling while the map is at least 2x2, then a 3x3
  conv-BN *adapter* without activation, whose output is the feature
  ``stage{i}`` (``W_i`` channels: the subspace dimension SubDistill matches
  at that stage) and the next stage's input;
* head: 1x1 conv-BN-ReLU, adaptive average pooling to ``min(7, h)`` (the
  reference pools to 7x7 at 224x224), three linear layers (hidden width
  ``HIDDEN``, ReLU) to the logits.

Widths (``ARR_STUDENT_DIMENSIONS`` of the reference): ``(32, 24, 16, 8)``,
``(40, 32, 24, 16)``, ``(48, 40, 32, 24)``, ``(56, 48, 40, 32)``; registered
as ``sdstudent_32_24_16_8`` etc., and ``sdstudent`` (the first) whose widths
``model.widths`` may change. At 16x16 the stages run at 8, 4, 2, 1 pixels;
at 32x32 at 16, 8, 4, 2. Where the reference is silent (the stem's
activation, the head's hidden width, pooling at small inputs) the choices
above are jaxkd's.

Features: ``stem``, ``stage1``..``stage4`` (adapter outputs), ``pooled`` (the flattened head input).
"""

from __future__ import annotations

from flax import nnx

from jaxkd.features import adaptive_avg_pool
from jaxkd.models.layers import as_float32, batch_norm, conv, linear, max_pool2
from jaxkd.models.probe import tap

WIDTHS = ((32, 24, 16, 8), (40, 32, 24, 16), (48, 40, 32, 24), (56, 48, 40, 32))
HIDDEN = 64


class _ConvBN(nnx.Module):
    def __init__(self, in_ch, ch, kernel, *, dtype, rngs: nnx.Rngs):
        self.conv = conv(in_ch, ch, kernel, dtype=dtype, rngs=rngs)
        self.bn = batch_norm(ch, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        return self.bn(self.conv(x))


class SubDistillStudent(nnx.Module):
    def __init__(self, in_shape, num_classes, *, channels=WIDTHS[0], dtype=None, rngs: nnx.Rngs):
        if len(channels) != 4:
            raise ValueError(f"the SubDistill student needs 4 stage widths, got {tuple(channels)}")
        h, w, in_ch = in_shape
        self.stem_pool = min(h, w) >= 64
        self.stem = nnx.List([_ConvBN(in_ch, channels[0], 3, dtype=dtype, rngs=rngs)])
        self.stem.append(_ConvBN(channels[0], channels[0], 3, dtype=dtype, rngs=rngs))
        in_ch, stages = channels[0], []
        for ch in channels:
            stages.append(
                nnx.List(
                    [
                        _ConvBN(in_ch, ch, 3, dtype=dtype, rngs=rngs),
                        _ConvBN(ch, ch, 3, dtype=dtype, rngs=rngs),
                        _ConvBN(ch, ch, 3, dtype=dtype, rngs=rngs),  # the adapter
                    ]
                )
            )
            in_ch = ch
        self.stages = nnx.List(stages)
        self.head_conv = _ConvBN(in_ch, in_ch, 1, dtype=dtype, rngs=rngs)
        size = min(h, w) // (2 if self.stem_pool else 1)
        for _ in range(4):
            size = size // 2 if size >= 2 else size
        self.pool_to = min(7, size)
        flat = self.pool_to * self.pool_to * in_ch
        self.fc = nnx.List(
            [
                linear(flat, HIDDEN, dtype=dtype, rngs=rngs),
                linear(HIDDEN, HIDDEN, dtype=dtype, rngs=rngs),
                linear(HIDDEN, num_classes, dtype=dtype, rngs=rngs),
            ]
        )

    def __call__(self, x_BxHxWxC):
        h = x_BxHxWxC
        for layer in self.stem:
            h = nnx.relu(layer(h))
        if self.stem_pool:
            h = max_pool2(h)
        h = tap("stem", h)
        features = {"stem": h}
        for i, (a, b, adapter) in enumerate(self.stages, start=1):
            h = nnx.relu(b(nnx.relu(a(h))))
            if min(h.shape[1:3]) >= 2:
                h = max_pool2(h)
            h = tap(f"stage{i}", adapter(h))
            features[f"stage{i}"] = h
        h = nnx.relu(self.head_conv(h))
        h = adaptive_avg_pool(h, self.pool_to)
        h = tap("pooled", h.reshape(h.shape[0], -1))
        features["pooled"] = h
        for fc in self.fc[:-1]:
            h = nnx.relu(fc(h))
        return as_float32(self.fc[-1](h), features)


__all__ = ["SubDistillStudent", "WIDTHS", "HIDDEN"]
