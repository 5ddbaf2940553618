"""Evaluation inside a compiled run: whole splits in fixed-size batches, and their metrics.

``batched(fn, n, batch_size)`` maps ``fn(indices_B) -> pytree of [B, ...]``
over ``ceil(n / batch_size)`` batches with ``lax.map`` and returns the
outputs for indices ``0..n-1``. The last batch repeats the final index to
fill up and those rows are dropped, so every evaluation set, of any size,
compiles to one loop of one batch shape.

``evaluate(trainer, state, data, teacher_inputs)`` measures a run's current
model on each evaluated split and changes nothing; the trainer computes the
logits once per evaluation (:func:`eval_logits`), takes the metrics
(:func:`split_metrics`), then updates the selected model
(:func:`jaxkd.selection.select_model`) and the terms' boundary state
(:func:`jaxkd.terms.eval_updates`) from them.
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


def eval_splits(trainer) -> tuple[str, ...]:
    """The splits an evaluation predicts: the evaluated ones, and those a term's boundary update reads."""
    boundary = [t.eval_split for t in trainer.terms.values() if t.eval_update is not None]
    return tuple(dict.fromkeys([*trainer.config.eval.splits, *boundary]))


def eval_logits(trainer, state, data) -> dict:
    """Eval-mode logits ``{split: [N, C]}`` of ``state``'s current model on every split in :func:`eval_splits`."""
    return {s: trainer.predict_split(state.params, state.rest, data, s) for s in eval_splits(trainer)}


def split_metrics(trainer, logits: dict, data, teacher_inputs) -> dict:
    """Accuracy, loss and (with a teacher) agreement on each evaluated split (the full training set: ``train_eval``)."""
    out = {}
    for split in trainer.config.eval.splits:
        t = teacher_inputs["logits"][split] if trainer.teacher is not None else None
        prefix = "train_eval" if split == "train" else split
        out.update(classification_metrics(logits[split], data[f"y_{split}"], t, prefix=prefix))
    return out


def evaluate(trainer, state, data, teacher_inputs) -> dict:
    """Metrics of ``state``'s current model on each evaluated split; changes nothing."""
    return split_metrics(trainer, eval_logits(trainer, state, data), data, teacher_inputs)
