"""Logit-level distillation losses as pure per-example functions.

Conventions (shared by every function here):

* Inputs are logits ``*_BxC`` (any leading batch shape; classes on ``axis``).
* Each function returns one value per example; the caller reduces (jaxkd's
  trainer takes the mean over the batch).
* KL terms are forward KL(target ‖ student), **summed over classes**, and
  multiplied by T² so that the gradient scale does not depend on T
  (Hinton et al. 2015, arXiv 1503.02531).
* Weights live in the objective (:mod:`jaxkd.terms`): the classic mixture
  ``(1 - alpha) * CE + alpha * T² * KL`` is ``ce`` weight ``1 - alpha`` and
  ``kd`` weight ``alpha``.

Mapping to other codebases: torchdistill's ``KDLoss`` and RepDistiller's
``DistillKL`` compute ``kl_div(log_softmax(s/T), softmax(t/T),
reduction='batchmean') * T²``, i.e. the batch mean of :func:`kd_loss`.
RepDistiller's ``-r`` (CE weight) and ``-a`` (KD weight) are the ``ce`` and
``kd`` term weights; torchdistill's ``alpha`` multiplies the soft term as
the ``kd`` weight does.

:func:`soft_target_kl` (KL towards a given, untempered target: Confusion
Distillation), :func:`dkd_loss` and :func:`dist_loss` follow the same
conventions; the last two docstrings give the mapping to mdistiller's ``DKD``
and DIST's official code.
:func:`dist_loss` is the one exception to "one value per example depends on
that example only": its intra-class term is a batch statistic (see there).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import xlogy


def cross_entropy(logits, labels, *, axis=-1):
    """Softmax cross-entropy with integer labels, per example (natural log)."""
    log_p = jax.nn.log_softmax(logits, axis=axis)
    picked = jnp.take_along_axis(log_p, jnp.expand_dims(labels, axis), axis=axis)
    return -jnp.squeeze(picked, axis)


def label_smoothing_ce(logits, labels, *, smoothing, axis=-1):
    """Cross-entropy against ``(1 - eps) * onehot(labels) + eps / C``, per example.

    The convention of ``torch.nn.CrossEntropyLoss(label_smoothing=eps)`` and of
    ``optax.smooth_labels``: the uniform part includes the true class. Equals
    ``(1 - eps) * CE + eps * mean_c(-log p_c)``. ``smoothing`` may be a traced
    scalar; ``smoothing = 0`` is :func:`cross_entropy`.

    References: Szegedy et al. 2016 (arXiv 1512.00567), section 7.
    """
    log_p = jax.nn.log_softmax(logits, axis=axis)
    picked = jnp.take_along_axis(log_p, jnp.expand_dims(labels, axis), axis=axis)
    nll = -jnp.squeeze(picked, axis)
    uniform = -jnp.mean(log_p, axis=axis)
    return (1.0 - smoothing) * nll + smoothing * uniform


def soft_cross_entropy(logits, target_probs, *, axis=-1):
    """Cross-entropy against a probability vector, summed over classes."""
    return -jnp.sum(target_probs * jax.nn.log_softmax(logits, axis=axis), axis=axis)


def soft_target_kl(student_logits, target_probs, *, temperature, axis=-1):
    """T² · KL(q ‖ softmax(s/T)) towards a given probability vector ``q``, per example.

    The target is used as it is (not tempered): Confusion Distillation's row
    ``Q[y]`` of an EMA confusion matrix (Kang & Kim 2026). Zero entries of
    ``q`` contribute exactly 0 (``0 · log 0 = 0``, :func:`jax.scipy.special.xlogy`),
    so a one-hot target (a confusion matrix initialised with ``smoothing = 0``)
    is finite: ``-T² · log softmax(s/T)_y``. The target is not differentiated.
    """
    target_probs = jax.lax.stop_gradient(target_probs)
    log_p_s = jax.nn.log_softmax(student_logits / temperature, axis=axis)
    kl = jnp.sum(xlogy(target_probs, target_probs) - target_probs * log_p_s, axis=axis)
    return temperature**2 * kl


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


def dkd_loss(student_logits, teacher_logits, labels, *, alpha, beta, temperature):
    """Decoupled KD: ``T² · (alpha · TCKD + beta · NCKD)``, per example.

    With ``p = softmax(z / T)`` and ``y`` the label:

    * TCKD = KL(b_t ‖ b_s) over the binary masses ``b = (p_y, 1 - p_y)``
      (target vs all non-target classes);
    * NCKD = KL(q_t ‖ q_s) where ``q = softmax`` of the tempered logits over
      the non-target classes only (the target class removed, the rest
      renormalised).

    Both are forward KL(teacher ‖ student), multiplied by T². They satisfy
    ``KL(p_t ‖ p_s) = TCKD + (1 - p_t[y]) · NCKD`` (paper eq. 3), so KD is the
    special case ``alpha = 1, beta = 1 - p_t[y]``. Classes are on the last
    axis; ``labels`` are integers with the leading shape. The teacher is not
    differentiated.

    Everything is computed in log space: ``log p_y = z_y - lse(z)``,
    ``log(1 - p_y) = lse(z_{≠y}) - lse(z)`` and ``log q = z - lse(z_{≠y})``,
    with the target masked exactly (mdistiller subtracts 1000 from the
    tempered target logit, which differs by ~exp(-1000)). No NaN or inf for
    confident logits where ``p_y`` is ~0 or ~1.

    Mapping: mdistiller's ``dkd_loss`` sums each KL over the batch and divides
    by the batch size, i.e. it is the batch mean of this function with the
    same ``alpha``, ``beta``, ``temperature`` (CIFAR-100: 1, 8, 4). Its CE
    term and linear warm-up of the DKD weight are the caller's.

    References: Zhao et al. 2022, "Decoupled Knowledge Distillation"
    (arXiv 2203.08679), eqs. 1-7.
    """
    num_classes = student_logits.shape[-1]
    if num_classes < 2:
        raise ValueError(f"dkd_loss needs at least 2 classes on the last axis, got shape {student_logits.shape}.")
    teacher_logits = jax.lax.stop_gradient(teacher_logits)
    is_target = jax.nn.one_hot(labels, num_classes, dtype=jnp.bool_)

    def log_parts(logits):
        z = logits / temperature
        lse_all = jax.nn.logsumexp(z, axis=-1)
        lse_rest = jax.nn.logsumexp(z, axis=-1, where=~is_target)
        z_target = jnp.sum(jnp.where(is_target, z, 0.0), axis=-1)
        log_b_target = z_target - lse_all
        log_b_rest = lse_rest - lse_all
        log_q = z - jnp.expand_dims(lse_rest, -1)  # the target entry is finite and masked below
        return log_b_target, log_b_rest, log_q

    lbt_s, lbr_s, log_q_s = log_parts(student_logits)
    lbt_t, lbr_t, log_q_t = log_parts(teacher_logits)
    tckd = jnp.exp(lbt_t) * (lbt_t - lbt_s) + jnp.exp(lbr_t) * (lbr_t - lbr_s)
    nckd_terms = jnp.exp(log_q_t) * (log_q_t - log_q_s)
    nckd = jnp.sum(jnp.where(is_target, 0.0, nckd_terms), axis=-1)
    return temperature**2 * (alpha * tckd + beta * nckd)


def _pearson(a, b, *, axis, eps=1e-8):
    """Cosine similarity of ``a`` and ``b`` centred along ``axis``, with ``eps`` added to the denominator."""
    a = a - jnp.mean(a, axis=axis, keepdims=True)
    b = b - jnp.mean(b, axis=axis, keepdims=True)
    return jnp.sum(a * b, axis=axis) / (_norm(a, axis=axis) * _norm(b, axis=axis) + eps)


def _norm(x, *, axis):
    """L2 norm with a zero (not NaN) gradient at the zero vector."""
    sq = jnp.sum(x * x, axis=axis)
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def dist_loss(student_logits_BxC, teacher_logits_BxC, *, beta, gamma, temperature):
    """DIST: ``T² · (beta · inter_i + gamma · intra)``, per example; intra is a batch quantity.

    With ``p = softmax(z / T)`` for student and teacher (``[B, C]``):

    * ``inter_i = 1 - pearson(p_s[i, :], p_t[i, :])``, one value per example;
    * ``intra = 1 - mean_c pearson(p_s[:, c], p_t[:, c])``, the correlation of
      each class's column over the batch (axis 0), one value for the batch,
      broadcast to every example.

    ``pearson(a, b) = <a - mean a, b - mean b> / (|a - mean a| · |b - mean b| + 1e-8)``,
    the cosine of the centred vectors with eps in the denominator, as in the
    DIST code. The batch mean of this function is therefore the DIST paper's
    and official code's loss ``τ²(β · inter + γ · intra)`` (CIFAR-100:
    β = γ = 2, τ = 4), but, unlike the other losses here, an example's value
    depends on the whole batch: compute it on the real batch (no per-example
    vmap, no padding rows). The teacher is not differentiated.

    References: Huang et al. 2022, "Knowledge Distillation from A Stronger
    Teacher" (arXiv 2205.10536), eqs. 6-10.
    """
    if student_logits_BxC.ndim != 2 or teacher_logits_BxC.shape != student_logits_BxC.shape:
        raise ValueError(
            f"dist_loss needs logits of equal shape [B, C]; got {student_logits_BxC.shape} "
            f"and {teacher_logits_BxC.shape}."
        )
    teacher_logits_BxC = jax.lax.stop_gradient(teacher_logits_BxC)
    p_s_BxC = jax.nn.softmax(student_logits_BxC / temperature, axis=-1)
    p_t_BxC = jax.nn.softmax(teacher_logits_BxC / temperature, axis=-1)
    inter_B = 1.0 - _pearson(p_s_BxC, p_t_BxC, axis=1)
    intra = 1.0 - jnp.mean(_pearson(p_s_BxC, p_t_BxC, axis=0))
    return temperature**2 * (beta * inter_B + gamma * intra)
