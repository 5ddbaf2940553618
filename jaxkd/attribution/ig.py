"""Integrated gradients (Sundararajan et al. 2017) with captum's quadrature rules and baselines.

``IG_i(x) = (x_i − x'_i) ∫_0^1 ∂f(x' + α (x − x')) / ∂x_i dα`` for a baseline
``x'``, approximated by ``Σ_k w_k ∂f(x' + α_k (x − x'))/∂x_i``. The nodes ``α_k``
and weights ``w_k`` are captum's (``captum/attr/_utils/approximation_methods.py``):

* ``gausslegendre`` (captum's default): the Gauss-Legendre nodes of ``[-1, 1]``
  mapped to ``[0, 1]`` (``α = (1 + t) / 2``) with halved weights;
* ``riemann_left`` / ``riemann_right`` / ``riemann_middle``: ``n`` equal
  weights ``1/n`` at ``k/n``, ``(k+1)/n``, ``(k+½)/n``;
* ``riemann_trapezoid``: nodes ``linspace(0, 1, n)`` with weights ``1/n``,
  the first and last halved. As in captum, the weights sum to ``1 − 1/n``
  and the spacing is ``1/(n−1)``: not the textbook trapezoid rule, kept so
  that attributions match captum's.

Completeness: ``Σ_i IG_i = f(x) − f(x')`` for the exact integral; the
returned ``completeness_gap`` is the quadrature's departure from it.

References:
  Sundararajan, Taly & Yan, arXiv 1703.01365, eq. (1) and Proposition 1.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxkd.errors import ConfigError, check, check_name

METHODS = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")


class IGResult(NamedTuple):
    """Integrated gradients of a batch.

    Attributes:
      attributions: the input's shape ``[B, ...]``.
      completeness_gap: ``[B]``, ``Σ attributions − (f(x) − f(baseline))``.
      f_x: ``[B]`` the explained output at the input.
      f_baseline: ``[B]`` at the baseline.
    """

    attributions: jax.Array
    completeness_gap: jax.Array
    f_x: jax.Array
    f_baseline: jax.Array


def ig_nodes(steps: int, method: str = "gausslegendre") -> tuple[np.ndarray, np.ndarray]:
    """``(alphas [steps], weights [steps])`` of captum's rule ``method`` (float64, host)."""
    check_name("integrated-gradients method", method, METHODS)
    check(isinstance(steps, (int, np.integer)), f"steps must be an integer, got {steps!r}")
    n = int(steps)
    if method == "gausslegendre":
        check(n >= 1, f"gausslegendre needs steps >= 1, got {n}")
        t, w = np.polynomial.legendre.leggauss(n)
        return 0.5 * (1.0 + t), 0.5 * w
    check(n >= 2, f"{method} needs steps >= 2 (captum's rule), got {n}")
    weights = np.full(n, 1.0 / n)
    if method == "riemann_trapezoid":
        weights[0] /= 2
        weights[-1] /= 2
        return np.linspace(0.0, 1.0, n), weights
    start, stop = {"riemann_left": (0.0, 1 - 1 / n), "riemann_right": (1 / n, 1.0)}.get(
        method, (1 / (2 * n), 1 - 1 / (2 * n))
    )
    return np.linspace(start, stop, n), weights


def integrated_gradients(fn, x, baseline=None, *, steps: int = 50, method: str = "gausslegendre", chunk: int = 1):
    """Integrated gradients of ``fn`` (a batch ``[B, ...]`` to one scalar per example ``[B]``) at ``x``.

    ``fn`` must treat the examples of a batch independently (a model in eval
    mode does). The path integral is a ``lax.scan`` over the nodes, ``chunk``
    nodes at a time (vmapped: more memory, fewer and larger steps). Jittable
    and vmappable (over models or inputs).

    Args:
      fn: the explained output, e.g. :func:`jaxkd.attribution.output_fn`.
      x: the input batch, in the space ``fn`` reads (normalised images).
      baseline: same shape as ``x`` (or broadcastable); ``None`` is zeros, the
        data mean for normalised inputs (captum's and SubDistill's default).
        :func:`blurred` and :func:`uniform_noise` make the other two.
      steps: number of quadrature nodes.
      method: one of :data:`METHODS`.
      chunk: nodes evaluated together.

    Returns:
      :class:`IGResult`.
    """
    alphas, weights = ig_nodes(steps, method)
    check(isinstance(chunk, (int, np.integer)) and chunk >= 1, f"chunk must be a positive integer, got {chunk!r}")
    chunk = min(int(chunk), len(alphas))
    pad = -len(alphas) % chunk  # padded nodes carry weight 0
    alphas = np.concatenate([alphas, np.zeros(pad)]).reshape(-1, chunk)
    weights = np.concatenate([weights, np.zeros(pad)]).reshape(-1, chunk)
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ConfigError(f"integrated_gradients needs float inputs (normalised images), got {x.dtype}")
    baseline = jnp.zeros_like(x) if baseline is None else jnp.broadcast_to(jnp.asarray(baseline, x.dtype), x.shape)
    delta = x - baseline
    grad = jax.grad(lambda xs: jnp.sum(fn(xs)))
    bcast = (slice(None),) + (None,) * x.ndim

    def body(acc, node):
        a, w = node
        paths = baseline[None] + a.astype(x.dtype)[bcast] * delta[None]  # [chunk, B, ...]
        g = jax.vmap(grad)(paths)  # fn sees batches of B (it may close over per-example data, e.g. targets)
        return acc + jnp.tensordot(w.astype(x.dtype), g, axes=1), None

    total, _ = jax.lax.scan(body, jnp.zeros_like(x), (jnp.asarray(alphas), jnp.asarray(weights)))
    attributions = delta * total
    f_x, f_b = fn(x), fn(baseline)
    gap = jnp.sum(attributions.reshape(x.shape[0], -1), axis=1) - (f_x - f_b)
    return IGResult(attributions, gap, f_x, f_b)


def blurred(x_BxHxWxC, sigma: float = 5.0):
    """The blurred-input baseline: each channel convolved with a Gaussian of std ``sigma`` pixels.

    Edges are padded by repeating the border pixel (no dark frame); the kernel
    is truncated at ``3 sigma`` (``scipy.ndimage.gaussian_filter(mode="nearest", truncate=3)``).
    """
    check(sigma > 0, f"the blur's sigma must be positive, got {sigma}")
    radius = int(3 * sigma + 0.5)
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k = jnp.asarray(k / k.sum(), x_BxHxWxC.dtype)
    y = x_BxHxWxC
    for axis in (1, 2):
        n = y.shape[axis]
        idx = jnp.clip(jnp.arange(-radius, n + radius), 0, n - 1)
        padded = jnp.take(y, idx, axis=axis)
        windows = jnp.stack([jax.lax.slice_in_dim(padded, i, i + n, axis=axis) for i in range(2 * radius + 1)])
        y = jnp.tensordot(k, windows, axes=1)
    return y


def uniform_noise(key, x, low=0.0, high=1.0):
    """The uniform-noise baseline: independent draws in ``[low, high)`` per element (per-channel bounds broadcast)."""
    low = jnp.broadcast_to(jnp.asarray(low, x.dtype), x.shape)
    high = jnp.broadcast_to(jnp.asarray(high, x.dtype), x.shape)
    return low + (high - low) * jax.random.uniform(key, x.shape, x.dtype)
