"""Model selection inside the compiled run: the best evaluation so far, carried beside the current model.

Every ``eval.every`` steps the trainer evaluates the run and offers the
current model to :func:`update_selected`. The rule, the same for every run:

1. a higher value of the selection metric wins (a lower one for losses and
   risks, see :func:`lower_is_better`);
2. equal values: the lower loss on the selection metric's split wins;
3. equal on both: the later evaluation wins (ties never favour the
   least-trained checkpoint);
4. an evaluation whose metric is NaN/Inf is never selected.

The selected parameters (model parameters and BatchNorm state) travel inside
the compiled run as :class:`Selected`, so what a run reports at its selected
evaluation is exactly the model that is saved, distilled from and analysed.
The selection metric may never read the test split.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxkd.errors import check

# Metrics where smaller is better: losses, risks and every training term (``train/<term>``).
_LOWER_IS_BETTER = ("loss", "risk")


def lower_is_better(metric: str) -> bool:
    """Whether smaller values of ``metric`` are better (losses, risks, training terms other than the LR)."""
    return metric.endswith(_LOWER_IS_BETTER) or (metric.startswith("train/") and metric != "train/lr")


class Selected(NamedTuple):
    """The selected model of one run and what selected it.

    ``score`` is the selection metric, negated when lower is better (so
    larger is always better); ``loss`` the selection split's cross-entropy
    at that evaluation; ``step`` the training step of the evaluation (0:
    nothing selected yet).
    """

    params: Any
    rest: Any
    step: jax.Array  # int32
    score: jax.Array  # float32
    loss: jax.Array  # float32


def check_select(select: str, available) -> None:
    """One ``ConfigError`` unless ``select`` is an evaluated, non-test metric."""
    split = select.split("/")[0]
    check(
        split != "test",
        f"eval.select {select!r} selects on the test set; select on the validation split (e.g. val/acc)",
    )
    check(
        select in available,
        f"eval.select {select!r} is not a metric this run evaluates; it evaluates: {', '.join(sorted(available))}",
    )


def loss_metric(select: str) -> str:
    """The cross-entropy metric on the selection metric's split (the first tie-breaker)."""
    return f"{select.split('/')[0]}/loss"


def init_selected(params, rest) -> Selected:
    """Nothing selected yet: the initial model, a score below every finite score."""
    return Selected(
        params=params,
        rest=rest,
        step=jnp.zeros((), jnp.int32),
        score=jnp.array(-jnp.inf, jnp.float32),
        loss=jnp.array(jnp.inf, jnp.float32),
    )


def update_selected(sel: Selected, params, rest, step, value, loss, *, lower: bool) -> Selected:
    """``sel`` or the model just evaluated at ``step``, whichever the rule above prefers."""
    score = jnp.asarray(-value if lower else value, jnp.float32)
    loss = jnp.asarray(loss, jnp.float32)
    loss = jnp.where(jnp.isfinite(loss), loss, jnp.inf)
    take = jnp.isfinite(score) & ((score > sel.score) | ((score == sel.score) & (loss <= sel.loss)))
    new = Selected(params, rest, jnp.asarray(step, jnp.int32), score, loss)
    return jax.tree.map(lambda n, o: jnp.where(take, n, o), new, sel)


def select_model(sel: Selected, select: str | None, state, metrics: dict) -> Selected:
    """``sel`` updated with ``state``'s current model, evaluated as ``metrics``, by ``select`` (the rule above).

    ``select=None`` selects nothing: every evaluation ties, so the last model is kept.
    """
    params, rest = state.params["model"], state.rest
    if select is None:
        zero = jnp.zeros((), jnp.float32)
        return update_selected(sel, params, rest, state.step, zero, zero, lower=False)
    value, loss = metrics[select], metrics[loss_metric(select)]
    return update_selected(sel, params, rest, state.step, value, loss, lower=lower_is_better(select))
