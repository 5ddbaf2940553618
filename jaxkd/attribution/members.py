"""Explanations of every member of a saved ensemble, in one compiled program, and their summaries over members.

``explain`` computes one model's heatmaps by LRP or integrated gradients;
``explain_ensemble`` runs it over the members of an
:class:`~jaxkd.ensemble.Ensemble` (inputs in stored form, normalised with the
ensemble's mean and std; z^B's box from the same normalisation), either
vmapped (``strategy="vmap"``: one batched program, the right one on an
accelerator) or as a ``lax.map`` over members (``"map"``: one program that
runs members in turn; on XLA:CPU a convolution vmapped over weights becomes a
grouped convolution that ran 3-7 times slower than a loop, see
``benchmarks/RESULTS.md``). ``"auto"`` (the default) picks ``map`` on CPU and
``vmap`` elsewhere, as the training engine does. ``summarize_members`` reduces per-image metrics
``[M, B]`` to one mean per member and a Student-t interval over members.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxkd import stats
from jaxkd.attribution.agreement import pixel_flipping
from jaxkd.attribution.ig import integrated_gradients
from jaxkd.attribution.outputs import check_classes, output_fn
from jaxkd.attribution.propagation import box_bounds, lrp
from jaxkd.data.augment import normalize
from jaxkd.errors import check, check_name

METHODS = ("lrp", "ig")
STRATEGIES = ("auto", "vmap", "map")
_IG_KEYS = {"baseline", "steps", "method", "chunk"}
_LRP_KEYS = {"composite", "gamma", "epsilon", "low", "high", "stabilizer"}


def explain(model, params, rest, x, target, *, method: str = "lrp", output: str = "gap", classes=None, **kwargs):
    """Relevance of normalised inputs ``x`` (their shape) for one model: ``"lrp"`` or ``"ig"`` (integrated gradients).

    ``classes`` restricts the model to those logits (a subtask teacher; ``target``
    indexes into them). ``kwargs`` go to :func:`~jaxkd.attribution.lrp` (``composite``, ``gamma``,
    ``epsilon``, ``low``, ``high``, ``stabilizer``) or
    :func:`~jaxkd.attribution.integrated_gradients` (``baseline``, ``steps``,
    ``method`` as ``ig_method``, ``chunk``).
    """
    check_name("explanation method", method, METHODS)
    if method == "lrp":
        unknown = set(kwargs) - _LRP_KEYS
        check(not unknown, f"LRP takes no option {sorted(unknown)}; it takes {sorted(_LRP_KEYS)}")
        return lrp(model, params, rest, x, target, output=output, classes=classes, **kwargs)
    kwargs = {("method" if k == "ig_method" else k): v for k, v in kwargs.items()}
    unknown = set(kwargs) - _IG_KEYS
    check(not unknown, f"integrated gradients take no option {sorted(unknown)}; they take {sorted(_IG_KEYS)}")
    fn = output_fn(model, params, rest, target, output, classes)
    return integrated_gradients(fn, x, **kwargs).attributions


def resolve_strategy(strategy: str) -> str:
    """``"auto"`` is ``"map"`` on CPU and ``"vmap"`` elsewhere (the engine's rule, :mod:`jaxkd.program`).

    On XLA:CPU a convolution vmapped over weights runs as a slow grouped one
    (measured in ``benchmarks/RESULTS.md``).
    """
    check_name("member strategy", strategy, STRATEGIES)
    if strategy == "auto":
        return "map" if jax.default_backend() == "cpu" else "vmap"
    return strategy


def over_members(fn, strategy: str = "auto"):
    """``fn(*member_args)`` turned into a function of stacked arguments (leading member axis): vmapped or mapped."""
    if resolve_strategy(strategy) == "vmap":
        return jax.vmap(fn)
    return lambda *args: jax.lax.map(lambda a: fn(*a), args)


def normalised_inputs(ensemble, x):
    """``x`` (stored form: uint8 or float) normalised with the ensemble's mean and std, float32."""
    mean = None if ensemble.mean is None else jnp.asarray(ensemble.mean, jnp.float32)
    std = None if ensemble.std is None else jnp.asarray(ensemble.std, jnp.float32)
    return normalize(jnp.asarray(x), mean, std).astype(jnp.float32)


def _split_kwargs(kwargs):
    """Options as (static: hashable, sorted pairs; traced: floats and arrays), so one program serves equal options."""
    static, traced = [], {}
    for k, v in kwargs.items():
        if isinstance(v, (str, bool, int, np.integer)) or v is None:
            static.append((k, v))
        elif isinstance(v, Mapping):
            static.append((k, tuple(sorted(v.items()))))
        else:
            traced[k] = v
    return tuple(sorted(static)), traced


@functools.partial(jax.jit, static_argnames=("model", "method", "output", "strategy", "static"))
def _explain_members(params, rest, xn, target, traced, *, model, method, output, strategy, static):
    def one(p, r):  # closes over the inputs: shared by all members, not batched
        return explain(model, p, r, xn, target, method=method, output=output, **dict(static), **traced)

    return over_members(one, strategy)(params, rest)


def explain_ensemble(
    ensemble, x, target, *, method: str = "lrp", output: str = "gap", strategy: str = "auto", classes=None, **kwargs
):
    """Relevance ``[M, B, ...]`` of every member for inputs ``x`` (stored form) and classes ``target`` ``[B]``.

    For LRP the z^B box defaults to the pixel range [0, 1] in the
    ensemble's normalised units (:func:`~jaxkd.attribution.box_bounds`).
    One compiled program per model, method, strategy and set of non-numeric
    options (numbers and arrays are its arguments).
    """
    check_name("explanation method", method, METHODS)
    strategy = resolve_strategy(strategy)
    xn = normalised_inputs(ensemble, x)
    target = jnp.asarray(target, jnp.int32)
    if method == "lrp" and kwargs.get("low") is None and kwargs.get("high") is None:
        kwargs["low"], kwargs["high"] = box_bounds(ensemble.mean, ensemble.std)
    static, traced = _split_kwargs(kwargs)
    static = (*static, ("classes", check_classes(classes, ensemble.model)))
    return _explain_members(
        ensemble.params,
        ensemble.rest,
        xn,
        target,
        traced,
        model=ensemble.model,
        method=method,
        output=output,
        strategy=strategy,
        static=static,
    )


@functools.partial(jax.jit, static_argnames=("model", "output", "strategy", "classes", "static"))
def _flip_members(params, rest, heatmaps, xn, target, traced, *, model, output, strategy, classes, static):
    def one(p, r, h):
        fn = output_fn(model, p, r, target, output, classes)
        return pixel_flipping(fn, xn, h, **dict(static), **traced)

    return over_members(one, strategy)(params, rest, heatmaps)


def flip_ensemble(ensemble, x, target, heatmaps_MxBxHxW, *, output="gap", strategy="auto", classes=None, **kwargs):
    """Pixel-flipping curves ``[M, B, S + 1]`` and areas ``[M, B]`` of each member on its own (or given) heatmaps.

    ``heatmaps_MxBxHxW`` orders the patches per member (pass a teacher's
    heatmaps broadcast to ``[M, B, H, W]`` to flip every member by the
    teacher's order); ``kwargs`` go to :func:`~jaxkd.attribution.pixel_flipping`.
    """
    strategy = resolve_strategy(strategy)
    xn = normalised_inputs(ensemble, x)
    target = jnp.asarray(target, jnp.int32)
    heatmaps = jnp.broadcast_to(jnp.asarray(heatmaps_MxBxHxW, jnp.float32), (len(ensemble), *xn.shape[:3]))
    static, traced = _split_kwargs(kwargs)
    return _flip_members(
        ensemble.params,
        ensemble.rest,
        heatmaps,
        xn,
        target,
        traced,
        model=ensemble.model,
        output=output,
        strategy=strategy,
        classes=check_classes(classes, ensemble.model),
        static=static,
    )


def randomized_ensemble(ensemble, key):
    """The model-randomisation control: the same architecture and member count, freshly initialised weights.

    Heatmaps that score as well for these models as for the trained ones do
    not explain the trained models (Adebayo et al. 2018, arXiv 1810.03292).
    Members keep their records, marked ``"randomized": True``.
    """
    keys = jax.random.split(key, len(ensemble))
    params, rest = jax.jit(jax.vmap(ensemble.model.init))(keys)
    members = [{**m, "randomized": True} for m in ensemble.members]
    return dataclasses.replace(ensemble, params=params, rest=rest, members=members, fingerprint=None)


def summarize_members(values_MxB, *, bounds=None, level: float = 0.95) -> dict:
    """Per-member means over images (NaNs skipped), then :func:`jaxkd.stats.summarize` over members.

    Returns the summary (``mean``, ``std``, ``ci_low``, ``ci_high``, ``n`` members)
    with ``member_means`` (one per member) and ``images`` (the number of
    finite values per member).
    """
    v = np.asarray(values_MxB, np.float64)
    check(v.ndim == 2, f"summarize_members takes [members, images] values, got shape {v.shape}")
    finite = np.isfinite(v)
    counts = finite.sum(axis=1)
    means = np.where(counts > 0, np.where(finite, v, 0).sum(axis=1) / np.maximum(counts, 1), np.nan)
    out = stats.summarize(means, level=level, bounds=bounds)
    out["member_means"] = means.tolist()
    out["images"] = counts.tolist()
    return out
