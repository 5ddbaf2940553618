"""Use an NNX module as a pair of pure functions over explicit state.

``params`` are the ``nnx.Param`` leaves (what the optimiser updates);
``rest`` is everything else (BatchNorm running statistics), returned updated
by :meth:`FunctionalModel.apply` in train mode. Train and eval mode are two
graphdefs, so switching mode never mutates anything.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
from flax import nnx


@dataclasses.dataclass(frozen=True)
class FunctionalModel:
    """A model constructor turned into ``init(key)`` and ``apply(...)``.

    Attributes:
      name: registry name, for records.
      ctor: ``ctor(rngs) -> nnx.Module`` whose call returns ``(logits, features)``.
      num_classes: size of the logit axis.
    """

    name: str
    ctor: Callable[[nnx.Rngs], nnx.Module]
    num_classes: int

    @property
    def _graphdefs(self):
        # Built once per instance from an abstract module: no FLOPs, no RNG.
        cached = self.__dict__.get("_cached_graphdefs")
        if cached is None:
            model = nnx.eval_shape(lambda: self.ctor(nnx.Rngs(0)))
            model.train()
            train_def = nnx.split(model, nnx.Param, ...)[0]
            model.eval()
            eval_def = nnx.split(model, nnx.Param, ...)[0]
            cached = (train_def, eval_def)
            object.__setattr__(self, "_cached_graphdefs", cached)
        return cached

    def init(self, key) -> tuple[Any, Any]:
        """``key -> (params, rest)``; vmappable over keys."""
        model = self.ctor(nnx.Rngs(params=key))
        _, params, rest = nnx.split(model, nnx.Param, ...)
        return params, rest

    def apply(self, params, rest, x, *, train: bool):
        """Returns ``(logits, features, new_rest)``; pure."""
        graphdef = self._graphdefs[0 if train else 1]
        model = nnx.merge(graphdef, params, rest, copy=True)
        logits, features = model(x)
        new_rest = nnx.split(model, nnx.Param, ...)[2] if train else rest
        return logits, features, new_rest

    def num_params(self) -> int:
        params, _ = jax.eval_shape(self.init, jax.random.key(0))
        return sum(int(p.size) for p in jax.tree.leaves(params))
