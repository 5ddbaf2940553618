"""Probes on a model's named features: read or change an intermediate activation on the forward path.

Every zoo model passes each feature it returns through :func:`tap` at the
point where the forward computation continues from it. Outside a
:func:`probe` context ``tap`` is the identity (the models' arithmetic is
unchanged). Inside one, the named features are replaced by a function of
themselves, so that the rest of the network runs on the replacement:

* gradients with respect to an activation: add a zero perturbation and
  differentiate with respect to it (:func:`feature_gradients`);
* a layer replaced by its rank-k reconstruction ``μ + U Uᵀ(a − μ)``
  (:func:`jaxkd.subspace.rank_k_accuracy`).

The context is read while the model is traced, so it works under ``jit``,
``vmap`` and ``grad``: the function that enters the context must be the one
traced. A feature computed beside the forward path (a pre-activation
WideResNet's intermediate ``stage1``/``stage2``, which feed nothing) is not
tapped, and probing it is an error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp

from jaxkd.errors import ConfigError

_ACTIVE: list[tuple[dict[str, Callable], set[str]]] = []


def tap(name: str, h):
    """``h``, or the active probe's replacement for the feature ``name``."""
    for transforms, seen in reversed(_ACTIVE):
        if name in transforms:
            seen.add(name)
            return transforms[name](h)
    return h


@contextlib.contextmanager
def probe(transforms: Mapping[str, Callable]):
    """Within the block, the features named in ``transforms`` are replaced by ``transforms[name](a)``.

    On exit, a ConfigError names any feature the model did not tap (not on
    its forward path, or not one of its features).
    """
    seen: set[str] = set()
    entry = (dict(transforms), seen)
    _ACTIVE.append(entry)
    try:
        yield
    finally:
        _ACTIVE.remove(entry)
    missing = sorted(set(transforms) - seen)
    if missing:
        raise ConfigError(
            f"the model has no feature {', '.join(map(repr, missing))} on its forward path to probe; "
            "pick a feature the rest of the network is computed from (a stage output)"
        )


def feature_gradients(model, params, rest, x, names, explained: Callable):
    """``(logits, features, grads)``: eval-mode outputs and ``∂ Σ_b explained(logits)_b / ∂ feature`` for ``names``.

    ``explained`` maps logits ``[B, C]`` to one scalar per example ``[B]``.
    The gradient is the plain gradient of the explained output with respect
    to each named activation (the rest of the network differentiated, the
    activation held as an input), one forward and one backward pass.
    """
    names = tuple(names)
    shapes = jax.eval_shape(lambda: model.apply(params, rest, x, train=False)[1])
    for n in names:
        if n not in shapes:
            raise ConfigError(f"model {model.name} has no feature {n!r}; it has: {', '.join(sorted(shapes))}")
    zeros = {n: jnp.zeros(shapes[n].shape, shapes[n].dtype) for n in names}

    def f(deltas):
        with probe({n: (lambda a, n=n: a + deltas[n].astype(a.dtype)) for n in names}):
            logits, feats, _ = model.apply(params, rest, x, train=False)
        return jnp.sum(explained(logits)), (logits, feats)

    grads, (logits, feats) = jax.grad(f, has_aux=True)(zeros)
    return logits, feats, grads
