"""Per-example metrics on logits (the caller reduces)."""

from __future__ import annotations

import jax.numpy as jnp


def accuracy(logits, labels, *, axis=-1):
    """1.0 where ``argmax(logits) == labels``, else 0.0."""
    return (jnp.argmax(logits, axis=axis) == labels).astype(jnp.float32)


def agreement(logits_a, logits_b, *, axis=-1):
    """Top-1 agreement: 1.0 where both models predict the same class."""
    return (jnp.argmax(logits_a, axis=axis) == jnp.argmax(logits_b, axis=axis)).astype(jnp.float32)
