"""Model registry: ``make_model(name, in_shape, num_classes, **kwargs)``.

Every model returns ``(logits, features)`` where ``features`` maps layer
names to intermediate activations (for layer-wise distillation and analysis).
"""

from __future__ import annotations

from flax import nnx

from jaxkd.errors import ConfigError, check_name
from jaxkd.models.cnn import CNN1D, CNN2D
from jaxkd.models.functional import FunctionalModel
from jaxkd.models.mlp import MLP

MODELS = {"mlp": MLP, "cnn2d": CNN2D, "cnn1d": CNN1D}

# The keyword each model takes for its layer sizes.
_WIDTH_KWARG = {"mlp": "hidden", "cnn2d": "channels", "cnn1d": "channels"}


def make_model(name: str, in_shape, num_classes: int, widths=None) -> FunctionalModel:
    """Build a :class:`FunctionalModel` by registry name.

    Args:
      name: one of ``MODELS``.
      in_shape: shape of one input example (without batch).
      num_classes: number of logits.
      widths: hidden sizes (MLP) or channels (CNNs); ``None`` for defaults.
    """
    check_name("model", name, MODELS)
    kwargs = {}
    if widths is not None:
        widths = tuple(int(w) for w in widths)
        if not widths or min(widths) <= 0:
            raise ConfigError(f"model widths must be positive integers, got {widths}")
        kwargs[_WIDTH_KWARG[name]] = widths
    cls = MODELS[name]
    in_shape = tuple(int(s) for s in in_shape)

    def ctor(rngs: nnx.Rngs):
        return cls(in_shape, num_classes, rngs=rngs, **kwargs)

    return FunctionalModel(name=name, ctor=ctor, num_classes=num_classes, in_shape=in_shape, widths=widths)


__all__ = ["MODELS", "FunctionalModel", "make_model", "MLP", "CNN1D", "CNN2D"]
