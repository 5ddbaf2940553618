"""Use an NNX module as a pair of pure functions over explicit state.

``params`` are the ``nnx.Param`` leaves (what the optimiser updates);
``rest`` is everything else (BatchNorm running statistics), returned updated
by :meth:`FunctionalModel.apply` in train mode. Train and eval mode are two
graphdefs, so switching mode never mutates anything.
"""

from __future__ import annotations

import dataclasses
import functools
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
    in_shape: tuple[int, ...] = ()
    widths: tuple[int, ...] | None = None
    dtype: str = "float32"

    @functools.cached_property
    def _graphdefs(self):
        # Built once per instance from an abstract module: no FLOPs, no RNG.
        model = nnx.eval_shape(lambda: self.ctor(nnx.Rngs(0)))
        model.train()
        train_def = nnx.split(model, nnx.Param, ...)[0]
        model.eval()
        eval_def = nnx.split(model, nnx.Param, ...)[0]
        return train_def, eval_def

    def module(self, params, rest, *, train: bool = False) -> nnx.Module:
        """The NNX module holding ``params`` and ``rest`` (a copy), in eval mode unless ``train``: for code that
        reads a model's structure (LRP's canonization)."""
        return nnx.merge(self._graphdefs[0 if train else 1], params, rest, copy=True)

    @property
    def spec(self) -> dict:
        """What rebuilds this model with :func:`jaxkd.models.make_model` (JSON-serialisable)."""
        return {
            "name": self.name,
            "in_shape": list(self.in_shape),
            "num_classes": self.num_classes,
            "widths": None if self.widths is None else list(self.widths),
            "dtype": self.dtype,
        }

    def init(self, key) -> tuple[Any, Any]:
        """``key -> (params, rest)``; vmappable over keys."""
        return self._init_jit(key)

    @functools.cached_property
    def _init_jit(self):
        # Compiled: built eagerly (and worse, under an eager vmap) a deep net's
        # initialisers run op by op, tens of seconds for a ResNet.
        def init(key):
            model = self.ctor(nnx.Rngs(params=key))
            _, params, rest = nnx.split(model, nnx.Param, ...)
            return params, rest

        return jax.jit(init)

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
