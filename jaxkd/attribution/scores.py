"""Heatmaps scored against ground-truth evidence masks (``procedural16/32`` carry one per image).

A heatmap is ``[..., H, W]`` (relevance summed over channels, :func:`heatmap`);
a mask is bool ``[..., H, W]``, True where the class evidence lies. Scores are
per image, over any leading axes (members, images); ties between heatmap
values are resolved as a random tie-break would be on average, so a constant
heatmap scores its chance level rather than an artefact of pixel order.

* **relevance mass accuracy**: the share of the positive relevance inside the
  mask, ``Σ_mask R⁺ / Σ R⁺`` (NaN without positive relevance).
* **relevance rank accuracy**: with ``K = |mask|``, the share of the ``K``
  most relevant pixels that lie in the mask (NaN for an empty mask).
* **pointing game**: whether the most relevant pixel lies in the mask
  (1 or 0; the share of tied maxima in the mask).

Chance levels: mass and rank accuracy of a heatmap unrelated to the mask are
about ``|mask| / (H W)``; report the mask's area beside them (:func:`evidence_scores`).

References:
  Arras, Osman & Samek, "CLEVR-XAI", Information Fusion 81 (2022), arXiv 2003.07258, §4.2
  (relevance mass and rank accuracy); Zhang et al., arXiv 1608.00507 (pointing game).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxkd.errors import check


def heatmap(relevance, *, channel_axis: int = -1):
    """Relevance summed over the channel axis: ``[B, H, W, C] -> [B, H, W]``."""
    return jnp.sum(relevance, axis=channel_axis)


def _flat(a):
    return a.reshape(*a.shape[:-2], a.shape[-2] * a.shape[-1])


def _check_pair(h, mask):
    check(
        h.shape == mask.shape and h.ndim >= 2,
        f"heatmaps and masks must share one shape [..., H, W], got {h.shape} and {mask.shape}",
    )


def top_share(h_N, k):
    """Per pixel, the probability of being among the ``k`` largest under a uniformly random tie-break, ``[N]``.

    A pixel with ``g`` strictly larger values and ``e`` equal ones (itself
    included) is in the top ``k`` with probability ``clip((k − g) / e, 0, 1)``.
    """
    s = jnp.sort(h_N)
    n = h_N.shape[-1]
    greater = n - jnp.searchsorted(s, h_N, side="right")
    equal = n - jnp.searchsorted(s, h_N, side="left") - greater
    return jnp.clip((k - greater) / equal, 0.0, 1.0)


def relevance_mass_accuracy(heatmap_HxW, mask_HxW):
    """``Σ_mask R⁺ / Σ R⁺`` per image (NaN when no relevance is positive)."""
    heatmap_HxW, mask_HxW = jnp.asarray(heatmap_HxW), jnp.asarray(mask_HxW, bool)
    _check_pair(heatmap_HxW, mask_HxW)
    pos = _flat(jnp.maximum(heatmap_HxW, 0))
    total = jnp.sum(pos, axis=-1)
    inside = jnp.sum(jnp.where(_flat(mask_HxW), pos, 0), axis=-1)
    return jnp.where(total > 0, inside / jnp.where(total > 0, total, 1), jnp.nan)


def relevance_rank_accuracy(heatmap_HxW, mask_HxW):
    """Share of the ``K = |mask|`` most relevant pixels inside the mask, per image (NaN for an empty mask)."""
    heatmap_HxW, mask_HxW = jnp.asarray(heatmap_HxW), jnp.asarray(mask_HxW, bool)
    _check_pair(heatmap_HxW, mask_HxW)
    h, m = _flat(heatmap_HxW), _flat(mask_HxW)
    k = jnp.sum(m, axis=-1)
    share = jnp.vectorize(top_share, signature="(n),()->(n)")(h, k)
    hits = jnp.sum(jnp.where(m, share, 0), axis=-1)
    return jnp.where(k > 0, hits / jnp.maximum(k, 1), jnp.nan)


def pointing_game(heatmap_HxW, mask_HxW):
    """1 if the most relevant pixel lies in the mask, else 0 (with tied maxima: the share of them inside)."""
    heatmap_HxW, mask_HxW = jnp.asarray(heatmap_HxW), jnp.asarray(mask_HxW, bool)
    _check_pair(heatmap_HxW, mask_HxW)
    h, m = _flat(heatmap_HxW), _flat(mask_HxW)
    top = h == jnp.max(h, axis=-1, keepdims=True)
    return jnp.sum(top & m, axis=-1) / jnp.sum(top, axis=-1)


def evidence_scores(heatmap_HxW, mask_HxW) -> dict:
    """The three scores per image, and the mask's area share (the chance level of mass and rank accuracy)."""
    mask_HxW = jnp.asarray(mask_HxW, bool)
    return {
        "mass_accuracy": relevance_mass_accuracy(heatmap_HxW, mask_HxW),
        "rank_accuracy": relevance_rank_accuracy(heatmap_HxW, mask_HxW),
        "pointing_game": pointing_game(heatmap_HxW, mask_HxW),
        "mask_share": jnp.mean(_flat(mask_HxW), axis=-1),
    }


_SOBEL = jnp.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


@jax.jit
def edge_map(x_BxHxWxC):
    """The input-only control heatmap: Sobel gradient magnitude, summed over channels, ``[B, H, W]``.

    It knows nothing of any model: a method that scores no better than the
    edges of the image has not shown that it reads the model. Borders are
    padded by repeating the edge pixel.
    """
    x = jnp.asarray(x_BxHxWxC, jnp.float32)
    p = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = x.shape[1:3]

    def correlate(k):
        return sum(k[i, j] * p[:, i : i + h, j : j + w] for i in range(3) for j in range(3))

    gx, gy = correlate(_SOBEL), correlate(_SOBEL.T)
    return jnp.sum(jnp.sqrt(gx**2 + gy**2), axis=-1)
