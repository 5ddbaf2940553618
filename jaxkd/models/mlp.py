"""Multi-layer perceptron returning ``(logits, features)``."""

from __future__ import annotations

import math

from flax import nnx

from jaxkd.models.probe import tap


class MLP(nnx.Module):
    """ReLU MLP; ``features["hidden{i}"]`` is the i-th post-activation.

    Inputs of any trailing shape are flattened.
    """

    def __init__(self, in_shape, num_classes, *, hidden=(128, 128), rngs: nnx.Rngs):
        width = math.prod(in_shape)
        layers = []
        for h in hidden:
            layers.append(nnx.Linear(width, h, rngs=rngs))
            width = h
        self.layers = nnx.List(layers)
        self.head = nnx.Linear(width, num_classes, rngs=rngs)

    def __call__(self, x_BxX):
        h = x_BxX.reshape(x_BxX.shape[0], -1)
        features = {}
        for i, layer in enumerate(self.layers):
            h = tap(f"hidden{i}", nnx.relu(layer(h)))
            features[f"hidden{i}"] = h
        return self.head(h), features
