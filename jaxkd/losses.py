"""Logit-level distillation losses as pure per-example functions.

Conventions (shared by every function here):

* Inputs are logits ``*_BxC`` (any leading batch shape; classes on ``axis``).
* Each function returns one value per example; the caller reduces (jaxkd's
  trainer takes the mean over the batch).
* KL terms are forward KL(target ‖ student), **summed over classes**, and
  multiplied by T² so that the gradient scale does not depend on T
  (Hinton et al. 2015, arXiv 1503.02531).
* In :func:`kd_objective`, ``alpha`` weights the KD term:
  ``(1 - alpha) * CE + alpha * T² * KL``.

Mapping to other codebases: torchdistill's ``KDLoss`` and RepDistiller's
``DistillKL`` compute ``kl_div(log_softmax(s/T), softmax(t/T),
reduction='batchmean') * T²``, i.e. the batch mean of :func:`kd_loss`.
RepDistiller's ``-r`` (CE weight) and ``-a`` (KD weight) are ``1 - alpha``
and ``alpha`` here; torchdistill's ``alpha`` multiplies the soft term as
here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def cross_entropy(logits, labels, *, axis=-1):
    """Softmax cross-entropy with integer labels, per example (natural log)."""
    log_p = jax.nn.log_softmax(logits, axis=axis)
    picked = jnp.take_along_axis(log_p, jnp.expand_dims(labels, axis), axis=axis)
    return -jnp.squeeze(picked, axis)


def soft_cross_entropy(logits, target_probs, *, axis=-1):
    """Cross-entropy against a probability vector, summed over classes."""
    return -jnp.sum(target_probs * jax.nn.log_softmax(logits, axis=axis), axis=axis)


def kd_loss(student_logits, teacher_logits, *, temperature=4.0, axis=-1):
    """Hinton KD: T² · KL(softmax(t/T) ‖ softmax(s/T)), per example.

    The T² factor keeps the gradient scale independent of T. The teacher is
    not differentiated (``stop_gradient``). Zero iff the tempered
    distributions are equal.

    References: Hinton, Vinyals, Dean 2015 (arXiv 1503.02531), eq. 2.
    """
    teacher_logits = jax.lax.stop_gradient(teacher_logits)
    log_p_s = jax.nn.log_softmax(student_logits / temperature, axis=axis)
    log_p_t = jax.nn.log_softmax(teacher_logits / temperature, axis=axis)
    kl = jnp.sum(jnp.exp(log_p_t) * (log_p_t - log_p_s), axis=axis)
    return temperature**2 * kl


def kd_objective(student_logits, teacher_logits, labels, *, alpha, temperature, axis=-1):
    """The CE/KD mixture ``(1 - alpha) * CE + alpha * T² * KL``, per example.

    Args:
      student_logits: ``[..., C]``.
      teacher_logits: ``[..., C]`` or ``None`` (then only CE is used and
        ``alpha`` must be 0 for the objective to make sense).
      labels: integer labels ``[...]``.
      alpha: weight of the KD term, in [0, 1]; ``alpha = 0`` is plain CE,
        ``alpha = 1`` is pure distillation.
      temperature: T > 0, applied to both student and teacher in the KD term
        only (the CE term uses T = 1).

    Returns:
      ``(total, terms)`` where ``terms = {"ce": ..., "kd": ...}`` holds the
      unweighted per-example terms (so each can be logged) and ``total`` is
      their weighted sum.
    """
    ce = cross_entropy(student_logits, labels, axis=axis)
    if teacher_logits is None:
        kd = jnp.zeros_like(ce)
    else:
        kd = kd_loss(student_logits, teacher_logits, temperature=temperature, axis=axis)
    total = (1.0 - alpha) * ce + alpha * kd
    return total, {"ce": ce, "kd": kd}


def ce_objective(student_logits, teacher_logits, labels, *, alpha, temperature, axis=-1):
    """Plain cross-entropy with the objective signature; teacher, alpha and T are ignored.

    Returns ``(ce, {"ce": ce})``, per example.
    """
    del teacher_logits, alpha, temperature
    ce = cross_entropy(student_logits, labels, axis=axis)
    return ce, {"ce": ce}


# Training objectives by name: ``fn(student_logits, teacher_logits, labels, *, alpha, temperature)
# -> (total, {term: value})``, all per example.
OBJECTIVES = {"kd": kd_objective, "ce": ce_objective}
