"""What an explanation explains: one scalar per example, read from a model's logits in eval mode.

``"gap"`` is SubDistill's ``logit_gap_wrt_target``: the target logit minus the
largest other logit, ``f(x) = z_y − max_{c≠y} z_c`` (positive when the model
predicts ``y``, by how much). ``"logit"`` is the target logit ``z_y`` itself.

References:
  Chormai et al., arXiv 2601.05913, official code branch ``add-captum``
  (``xaikd/explainersv2.py``).
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxkd.errors import check, check_name

OUTPUTS = ("gap", "logit")


def runner_up(logits_BxC, target_B):
    """Index of the largest logit other than the target's, ``[B]`` (the lowest index on ties)."""
    num_classes = logits_BxC.shape[-1]
    is_target = jnp.arange(num_classes)[None, :] == target_B[:, None]
    return jnp.argmax(jnp.where(is_target, -jnp.inf, logits_BxC), axis=-1)


def explained_output(logits_BxC, target_B, output: str = "gap"):
    """The explained scalar per example ``[B]``: ``"gap"`` ``z_y − max_{c≠y} z_c`` or ``"logit"`` ``z_y``."""
    check_name("explained output", output, OUTPUTS)
    target_B = jnp.asarray(target_B)
    z_y = jnp.take_along_axis(logits_BxC, target_B[:, None], axis=-1)[:, 0]
    if output == "logit":
        return z_y
    z_r = jnp.take_along_axis(logits_BxC, runner_up(logits_BxC, target_B)[:, None], axis=-1)[:, 0]
    return z_y - z_r


def output_selector(logits_BxC, target_B, output: str = "gap"):
    """``e [B, C]`` with ``explained_output = Σ_c e_c z_c``: one-hot at the target, minus the runner-up for the gap.

    The explained output is linear in the logits once the runner-up is fixed,
    so LRP folds it into the head as one more linear unit.
    """
    check_name("explained output", output, OUTPUTS)
    num_classes = logits_BxC.shape[-1]
    e = (jnp.arange(num_classes)[None, :] == jnp.asarray(target_B)[:, None]).astype(logits_BxC.dtype)
    if output == "gap":
        e = e - (jnp.arange(num_classes)[None, :] == runner_up(logits_BxC, target_B)[:, None]).astype(logits_BxC.dtype)
    return e


def check_classes(classes, model) -> tuple[int, ...] | None:
    """``classes`` as a tuple of distinct logit indices of ``model`` (None stays None), or a ConfigError."""
    if classes is None:
        return None
    classes = tuple(int(c) for c in classes)
    n = model.num_classes
    check(
        len(classes) >= 2 and len(set(classes)) == len(classes) and all(0 <= c < n for c in classes),
        f"explained classes must be at least two distinct logits in 0..{n - 1}, got {classes}",
    )
    return classes


def select_classes(logits_BxC, target_B, output: str = "gap", classes=None):
    """:func:`output_selector` over the logits ``classes`` (``target_B`` indexes into them), as ``[B, C]``."""
    if classes is None:
        return output_selector(logits_BxC, target_B, output)
    cols = jnp.asarray(classes)
    e_sub = output_selector(logits_BxC[:, cols], target_B, output)
    return jnp.zeros_like(logits_BxC).at[:, cols].set(e_sub)


def output_fn(model, params, rest, target_B, output: str = "gap", classes=None):
    """``fn(x) -> [B]``: the explained output of ``model`` (a :class:`FunctionalModel`) in eval mode.

    ``x`` is the normalised input batch; ``target_B`` the class explained for
    each example. With ``classes`` the model is restricted to those logits
    (in that order; ``target_B`` indexes into them), as a subtask teacher is.
    This is the ``fn`` that :func:`integrated_gradients` and
    :func:`pixel_flipping` take.
    """
    check_name("explained output", output, OUTPUTS)
    classes = check_classes(classes, model)

    def fn(x):
        logits, _, _ = model.apply(params, rest, x, train=False)
        if classes is not None:
            logits = logits[:, jnp.asarray(classes)]
        return explained_output(logits, target_B, output)

    return fn
