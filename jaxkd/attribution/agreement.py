"""Do two models explain alike? Heatmap agreement per image, and pixel-flipping curves.

Heatmaps ``[..., H, W]`` (any leading axes: ensemble members, images) are
first pooled to a common resolution by summing relevance over blocks
(:func:`pool_heatmap`; relevance is additive, so a block's relevance is
the sum of its pixels'). Per image:

* **Pearson** correlation of the pooled heatmaps, and **Spearman** (Pearson of
  their ranks, ties given their average rank, as ``scipy.stats.spearmanr``);
  NaN when either heatmap is constant;
* **top-k overlap**: ``|top_k(a) ∩ top_k(b)| / k`` for the ``k`` most
  relevant blocks (ties broken by position, so a heatmap overlaps itself fully).

**Pixel flipping** (Samek et al. 2017, SubDistill's ``scripts/pixel-flipping.py``):
the image is cut into ``patch × patch`` patches, ordered by their summed
relevance, most relevant first; the explained output is re-evaluated as
more and more of them are replaced by the baseline. A good explanation makes
the curve fall fast, so a *lower* area means a more faithful heatmap. The
area is the trapezoid rule over the flipped fraction in ``[0, 1]``.

References:
  Samek et al., "Evaluating the visualization of what a deep neural network has learned",
  IEEE TNNLS 28(11), 2017, arXiv 1509.06321 (MoRF pixel flipping, AOPC).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxkd.errors import check


def pool_heatmap(h_HxW, size):
    """Sum relevance over blocks to ``size x size`` (``size`` must divide H and W); ``None`` leaves it."""
    if size is None:
        return h_HxW
    hh, ww = h_HxW.shape[-2:]
    check(
        size >= 1 and hh % size == 0 and ww % size == 0,
        f"cannot pool a {hh}x{ww} heatmap to {size}x{size}; pick a size that divides both sides",
    )
    return h_HxW.reshape(*h_HxW.shape[:-2], size, hh // size, size, ww // size).sum(axis=(-3, -1))


def _pair(a, b):
    a, b = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
    nd = max(a.ndim, b.ndim)
    a, b = a.reshape((1,) * (nd - a.ndim) + a.shape), b.reshape((1,) * (nd - b.ndim) + b.shape)
    check(a.shape[-2:] == b.shape[-2:], f"heatmaps of {a.shape[-2:]} and {b.shape[-2:]}: pool them to one size first")
    shape = jnp.broadcast_shapes(a.shape, b.shape)
    flat = lambda v: jnp.broadcast_to(v, shape).reshape(*shape[:-2], -1)  # noqa: E731
    return flat(a), flat(b)


def _pearson_flat(a, b):
    a = a - jnp.mean(a, axis=-1, keepdims=True)
    b = b - jnp.mean(b, axis=-1, keepdims=True)
    den = jnp.sqrt(jnp.sum(a * a, axis=-1) * jnp.sum(b * b, axis=-1))
    return jnp.where(den > 0, jnp.sum(a * b, axis=-1) / jnp.where(den > 0, den, 1), jnp.nan)


def average_ranks(v_N):
    """Ranks 1..N of ``v``, tied values sharing their average rank (``scipy.stats.rankdata``'s default)."""
    s = jnp.sort(v_N)
    lo = jnp.searchsorted(s, v_N, side="left")
    hi = jnp.searchsorted(s, v_N, side="right")
    return (lo + hi + 1) / 2


def pearson(a_HxW, b_HxW, *, size=None):
    """Pearson correlation of two heatmaps per image, after pooling both to ``size``."""
    a, b = _pair(pool_heatmap(jnp.asarray(a_HxW), size), pool_heatmap(jnp.asarray(b_HxW), size))
    return _pearson_flat(a, b)


def spearman(a_HxW, b_HxW, *, size=None):
    """Spearman rank correlation of two heatmaps per image, after pooling both to ``size``."""
    a, b = _pair(pool_heatmap(jnp.asarray(a_HxW), size), pool_heatmap(jnp.asarray(b_HxW), size))
    rank = jnp.vectorize(average_ranks, signature="(n)->(n)")
    return _pearson_flat(rank(a), rank(b))


def topk_overlap(a_HxW, b_HxW, *, k=0.1, size=None):
    """``|top_k(a) ∩ top_k(b)| / k`` per image; ``k`` a count, or a fraction of the (pooled) pixels if below 1."""
    a, b = _pair(pool_heatmap(jnp.asarray(a_HxW), size), pool_heatmap(jnp.asarray(b_HxW), size))
    n = a.shape[-1]
    kk = int(round(k * n)) if k < 1 else int(k)
    check(1 <= kk <= n, f"top-k overlap needs 1 <= k <= {n} pixels, got k = {k}")
    member = lambda v: jnp.zeros(v.shape, bool).at[..., jax.lax.top_k(v, kk)[1]].set(True)  # noqa: E731
    member = jnp.vectorize(member, signature="(n)->(n)")
    return jnp.sum(member(a) & member(b), axis=-1) / kk


def heatmap_agreement(a_HxW, b_HxW, *, size=None, k=0.1) -> dict:
    """``{"pearson", "spearman", "topk"}`` per image for two heatmaps (leading axes broadcast)."""
    return {
        "pearson": pearson(a_HxW, b_HxW, size=size),
        "spearman": spearman(a_HxW, b_HxW, size=size),
        "topk": topk_overlap(a_HxW, b_HxW, k=k, size=size),
    }


def pixel_flipping(fn, x_BxHxWxC, heatmap_BxHxW, *, patch: int = 4, baseline=None, steps: int | None = None):
    """Most-relevant-first pixel-flipping curves and their areas.

    Args:
      fn: the explained output, a batch to ``[B]`` (:func:`jaxkd.attribution.output_fn`).
      x_BxHxWxC: the normalised inputs.
      heatmap_BxHxW: the relevance that orders the patches (summed per patch).
      patch: patch side in pixels (must divide H and W).
      baseline: what flipped pixels become (``x``'s shape or broadcastable); ``None`` is zeros (the data mean).
      steps: evaluation points after the start (``None``: one per patch); step ``j``
        flips the ``round(j P / steps)`` most relevant of the ``P`` patches.

    Returns:
      ``(curve [B, steps + 1], area [B])``: the explained output after each
      step (``curve[:, 0] = fn(x)``), and the trapezoid area over the flipped
      fraction in [0, 1] (lower: relevance found what the output depends on).
    """
    x = jnp.asarray(x_BxHxWxC)
    b, hh, ww = x.shape[:3]
    check(heatmap_BxHxW.shape == (b, hh, ww), f"heatmap must be [B, H, W] = {(b, hh, ww)}, got {heatmap_BxHxW.shape}")
    check(hh % patch == 0 and ww % patch == 0, f"patch {patch} must divide the image sides {hh}x{ww}")
    n_patches = (hh // patch) * (ww // patch)
    steps = n_patches if steps is None else int(steps)
    check(1 <= steps <= n_patches, f"steps must lie in [1, {n_patches}] (the number of patches), got {steps}")
    baseline = jnp.zeros_like(x) if baseline is None else jnp.broadcast_to(jnp.asarray(baseline, x.dtype), x.shape)
    relevance = jnp.asarray(heatmap_BxHxW, jnp.float32).reshape(b, hh // patch, patch, ww // patch, patch)
    relevance = relevance.sum(axis=(2, 4))
    order = jnp.argsort(-relevance.reshape(b, -1), axis=-1, stable=True)
    rank = jnp.zeros_like(order).at[jnp.arange(b)[:, None], order].set(jnp.arange(n_patches)[None, :])
    rank = rank.reshape(b, hh // patch, ww // patch)
    rank_px = jnp.repeat(jnp.repeat(rank, patch, axis=1), patch, axis=2)[..., None]  # [B, H, W, 1]
    counts = jnp.asarray(np.rint(np.arange(steps + 1) * n_patches / steps).astype(np.int32))

    def at(n):
        return fn(jnp.where(rank_px < n, baseline, x))

    curve = jax.lax.map(at, counts).T  # [B, steps + 1]
    frac = counts / n_patches
    area = jnp.sum((curve[:, 1:] + curve[:, :-1]) / 2 * jnp.diff(frac)[None, :], axis=-1)
    return curve, area
