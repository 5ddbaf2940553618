"""Layer-wise (feature) distillation losses as pure per-example functions.

Conventions:

* Feature maps are channels-last: ``[B, H, W, C]`` for images, ``[B, L, C]``
  for 1-D conv nets (``L`` is the single spatial axis); vectors are ``[B, D]``.
* Each loss returns one value per example ``[B]``; the caller reduces (mean
  over the batch) and applies the method's weight (RepDistiller: FitNet
  ``-b 100``, AT ``-b 1000`` summed over stages).
* The teacher feature is not differentiated (``stop_gradient``).
* Where student and teacher spatial sizes differ, features are brought to the
  common size with :func:`adaptive_avg_pool` (PyTorch ``AdaptiveAvgPool2d``
  semantics), as RepDistiller's ``Attention`` does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _pool_matrix(n_in, n_out):
    """``[n_out, n_in]`` averaging matrix of PyTorch's adaptive pooling along one axis."""
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        start = (i * n_in) // n_out
        end = -((-(i + 1) * n_in) // n_out)  # ceil((i + 1) * n_in / n_out)
        m[i, start:end] = 1.0 / (end - start)
    return m


def adaptive_avg_pool(x_BxHxWxC, out_hw):
    """Adaptive average pooling over the spatial axes, PyTorch ``AdaptiveAvgPool{1,2}d`` semantics.

    Output bin ``i`` of an axis of size ``n`` pooled to ``m`` averages inputs
    ``floor(i·n/m) <= j < ceil((i+1)·n/m)``; bins overlap when ``m`` does not
    divide ``n``. Shapes are static. Returns the input unchanged when the sizes
    already match.

    Args:
      x_BxHxWxC: ``[B, H, W, C]`` (or ``[B, L, C]``; any ``[B, *spatial, C]``).
      out_hw: the output spatial size, an int (used for every spatial axis) or
        a tuple with one entry per spatial axis.

    Returns:
      ``[B, *out_hw, C]``.
    """
    spatial = x_BxHxWxC.shape[1:-1]
    if x_BxHxWxC.ndim < 3:
        raise ValueError(f"adaptive_avg_pool needs [B, *spatial, C], got shape {x_BxHxWxC.shape}.")
    out = (out_hw,) * len(spatial) if isinstance(out_hw, int) else tuple(out_hw)
    if len(out) != len(spatial) or min(out) < 1:
        raise ValueError(f"out_hw={out_hw!r} does not fit the spatial shape {spatial}; give one size >= 1 per axis.")
    y = x_BxHxWxC
    for ax, (n_in, n_out) in enumerate(zip(spatial, out), start=1):
        if n_in == n_out:
            continue
        m = jnp.asarray(_pool_matrix(n_in, n_out), dtype=y.dtype)
        # HIGHEST: the default f32 matmul precision on GPU/TPU would average in reduced precision.
        y = jnp.moveaxis(jnp.tensordot(y, m, axes=((ax,), (1,)), precision=jax.lax.Precision.HIGHEST), -1, ax)
    return y


def attention_map(f_BxHxWxC, *, p=2):
    """Spatial attention map of Zagoruyko & Komodakis: normalise(mean_c |f|^p), flattened.

    Args:
      f_BxHxWxC: ``[B, H, W, C]`` (or ``[B, L, C]``).
      p: the power; RepDistiller uses ``f.pow(p)``, equal to ``|f|^p`` for even p.

    Returns:
      ``[B, H*W]`` (row-major over ``H, W``), each row divided by
      ``max(‖row‖₂, 1e-12)`` (``torch.nn.functional.normalize``); a zero
      feature map gives a zero row and finite gradients.

    References: Zagoruyko & Komodakis 2017 (arXiv 1612.03928), eq. 2 and section 3.
    """
    a_BxHxW = jnp.mean(jnp.abs(f_BxHxWxC) ** p, axis=-1)
    a_BxN = a_BxHxW.reshape(a_BxHxW.shape[0], -1)
    # max(‖a‖², eps²) under the sqrt equals max(‖a‖, eps) and keeps the gradient finite at a = 0.
    sq_norm_Bx1 = jnp.sum(a_BxN * a_BxN, axis=-1, keepdims=True)
    return a_BxN / jnp.sqrt(jnp.maximum(sq_norm_Bx1, 1e-24))


def _check_batch(name, student, teacher):
    if student.shape[0] != teacher.shape[0]:
        raise ValueError(f"{name}: batch sizes differ, student {student.shape} vs teacher {teacher.shape}.")


def at_loss(student_feature, teacher_feature, *, p=2):
    """Attention transfer: mean over positions of (a(f_s) - a(f_t))², per example.

    ``a`` is :func:`attention_map`. Channel counts may differ. When the spatial
    sizes differ, both maps are pooled with :func:`adaptive_avg_pool` to the
    smaller size on each axis (so the larger feature is pooled down), as
    RepDistiller does. RepDistiller's ``(at(f_s) - at(f_t)).pow(2).mean()`` is
    the batch mean of this for one stage; it sums stages and weights by
    ``beta = 1000``.

    Args:
      student_feature: ``[B, H, W, C_s]`` or ``[B, L, C_s]``.
      teacher_feature: ``[B, H', W', C_t]`` or ``[B, L', C_t]``, same rank.
      p: the power in :func:`attention_map`.

    Returns:
      ``[B]``.

    References: Zagoruyko & Komodakis 2017 (arXiv 1612.03928), eq. 2.
    """
    if student_feature.ndim not in (3, 4) or teacher_feature.ndim != student_feature.ndim:
        raise ValueError(
            f"at_loss needs feature maps [B, H, W, C] or [B, L, C] of equal rank; got {student_feature.shape} "
            f"and {teacher_feature.shape} (vectors [B, D] have no spatial attention: use fitnet_loss)."
        )
    _check_batch("at_loss", student_feature, teacher_feature)
    teacher_feature = jax.lax.stop_gradient(teacher_feature)
    common = tuple(min(s, t) for s, t in zip(student_feature.shape[1:-1], teacher_feature.shape[1:-1]))
    a_s_BxN = attention_map(adaptive_avg_pool(student_feature, common), p=p)
    a_t_BxN = attention_map(adaptive_avg_pool(teacher_feature, common), p=p)
    return jnp.mean((a_s_BxN - a_t_BxN) ** 2, axis=-1)


def fitnet_loss(student_projected, teacher_feature):
    """FitNet hint loss: mean squared error over all non-batch axes, per example.

    ``student_projected`` is the student feature after the learned regressor
    (RepDistiller's ``ConvReg``), which must give the teacher's channel count.
    When the teacher's spatial size is larger, it is pooled down to the
    student's with :func:`adaptive_avg_pool`. RepDistiller's ``HintLoss``
    (``nn.MSELoss()``) is the batch mean of this; it weights it by ``beta = 100``.

    Args:
      student_projected: ``[B, H, W, C]``, ``[B, L, C]`` or ``[B, D]``.
      teacher_feature: the same rank and channels, spatial sizes >= the student's.

    Returns:
      ``[B]``.

    References: Romero et al. 2015, "FitNets" (arXiv 1412.6550), eq. 3.
    """
    s, t = student_projected, teacher_feature
    if s.ndim != t.ndim or s.ndim < 2 or s.shape[-1] != t.shape[-1]:
        raise ValueError(
            f"fitnet_loss needs student and teacher of equal rank and channel count; got {s.shape} and {t.shape} "
            "(project the student to the teacher's channels first)."
        )
    _check_batch("fitnet_loss", s, t)
    if any(ts < ss for ss, ts in zip(s.shape[1:-1], t.shape[1:-1])):
        raise ValueError(
            f"fitnet_loss: teacher spatial size {t.shape[1:-1]} is smaller than the student's {s.shape[1:-1]}; "
            "make the regressor output the teacher's size."
        )
    t = jax.lax.stop_gradient(t)
    if s.ndim > 2:
        t = adaptive_avg_pool(t, s.shape[1:-1])
    return jnp.mean((s - t) ** 2, axis=tuple(range(1, s.ndim)))
