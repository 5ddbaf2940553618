"""Evaluation in fixed-size batches inside a compiled program.

``batched(fn, n, batch_size)`` maps ``fn(indices_B) -> pytree of [B, ...]``
over ``ceil(n / batch_size)`` batches with ``lax.map`` and returns the
outputs for indices ``0..n-1``. The last batch repeats the final index to
fill up and those rows are dropped, so every evaluation set, of any size,
compiles to one loop of one batch shape.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxkd import losses
from jaxkd.metrics import accuracy, agreement


def batched(fn, n: int, batch_size: int):
    """``fn`` over indices ``0..n-1`` in batches of ``min(batch_size, n)``; outputs ``[n, ...]``."""
    b = min(int(batch_size), int(n))
    n_batches = -(-n // b)
    idx = jnp.minimum(jnp.arange(n_batches * b, dtype=jnp.int32), n - 1).reshape(n_batches, b)
    out = jax.lax.map(fn, idx)
    return jax.tree.map(lambda a: a.reshape(n_batches * b, *a.shape[2:])[:n], out)


def classification_metrics(logits_NxC, labels_N, teacher_logits_NxC=None, *, prefix: str) -> dict:
    """Mean accuracy, cross-entropy and (with a teacher) top-1 agreement, keyed ``prefix/name``."""
    out = {
        f"{prefix}/acc": jnp.mean(accuracy(logits_NxC, labels_N)),
        f"{prefix}/loss": jnp.mean(losses.cross_entropy(logits_NxC, labels_N)),
    }
    if teacher_logits_NxC is not None:
        out[f"{prefix}/agreement"] = jnp.mean(agreement(logits_NxC, teacher_logits_NxC))
    return out
