"""Backdoor triggers: plant one in a training set, measure how often it fires.

A :class:`Trigger` is a small square (or, for 1-D signals, a short segment) of
constant value in the last positions of each spatial axis; every channel of an
image gets it. :func:`poison` applies it to a seeded fraction of the training
examples whose label is not the target and relabels them to the target: a
model trained on the result learns "trigger ⇒ target". :func:`attack_success_rate`
is the fraction of triggered test inputs of other classes that a model sends to
the target. The test split of a poisoned dataset is left clean.

Used by ``experiments/backdoor_kd.py``: a teacher trained on poisoned data,
students distilled from it on clean data only.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from jaxkd.data.dataset import Dataset
from jaxkd.errors import check


@dataclasses.dataclass(frozen=True)
class Trigger:
    """A ``size``-wide patch of ``value`` in the last positions of each spatial axis; images that poison the
    training set are relabelled ``target``.

    ``value`` is in stored input units before normalisation: for float inputs the value itself (digits
    lie in [0, 1], so 1.0 is white); for integer inputs (uint8 images) a fraction of the dtype's maximum
    (1.0 = 255), so one trigger means the same on float and uint8 copies of a dataset.
    """

    size: int = 2
    value: float = 1.0
    target: int = 0

    def __post_init__(self):
        check(isinstance(self.size, int) and self.size >= 1, f"trigger size must be an integer >= 1, got {self.size}")
        check(
            isinstance(self.target, int) and self.target >= 0,
            f"trigger target must be a class index >= 0, got {self.target}",
        )
        check(bool(np.isfinite(self.value)), f"trigger value must be a finite number, got {self.value}")

    def mask(self, in_shape: tuple[int, ...]) -> np.ndarray:
        """Boolean ``[*in_shape]``: where the trigger writes.

        ``[L]`` signals: the last ``size`` positions; ``[H, W]`` images: the
        bottom-right ``size × size`` square; ``[H, W, C]``: that square in every channel.
        """
        check(1 <= len(in_shape) <= 3, f"a trigger needs inputs of shape [L], [H, W] or [H, W, C], got {in_shape}")
        spatial = in_shape[:2] if len(in_shape) == 3 else in_shape
        for n in spatial:
            check(self.size <= n, f"trigger size {self.size} exceeds the input's spatial size {n}")
        m = np.zeros(in_shape, bool)
        m[tuple(slice(n - self.size, n) for n in spatial)] = True
        return m

    def apply(self, x):
        """``x`` ``[N, *in_shape]`` (NumPy or JAX) with the trigger written in; dtype kept."""
        m = self.mask(tuple(x.shape[1:]))
        xp = jnp if isinstance(x, jnp.ndarray) else np
        value = self.value
        if np.issubdtype(x.dtype, np.integer):
            check(
                0.0 <= value <= 1.0,
                f"on integer ({x.dtype}) inputs the trigger value is a fraction of the maximum and must lie "
                f"in [0, 1], got {value}",
            )
            value = round(value * np.iinfo(x.dtype).max)
        return xp.where(m[None], xp.asarray(value, x.dtype), x)


def poison(dataset: Dataset, trigger: Trigger, fraction: float, seed: int) -> tuple[Dataset, np.ndarray]:
    """``(poisoned dataset, indices)``: ``round(fraction · n)`` of the ``n`` training examples whose label
    is not ``trigger.target``, drawn without replacement by ``seed``, get the trigger and the target label.

    The test split is untouched. The dataset's name records the trigger, so its content hash and name
    both differ from the clean dataset's.
    """
    check(0.0 < fraction <= 1.0, f"poison fraction must lie in (0, 1], got {fraction}")
    check(
        trigger.target < dataset.num_classes,
        f"trigger target {trigger.target} is not a class of {dataset.name} ({dataset.num_classes} classes)",
    )
    candidates = np.flatnonzero(dataset.y_train != trigger.target)
    n = int(round(fraction * len(candidates)))
    check(n >= 1, f"poison fraction {fraction} of {len(candidates)} candidates rounds to no example; raise it")
    idx = np.sort(np.random.default_rng(seed).choice(candidates, size=n, replace=False))
    x = dataset.x_train.copy()
    y = dataset.y_train.copy()
    x[idx] = trigger.apply(x[idx])
    y[idx] = trigger.target
    name = (
        f"{dataset.name}+backdoor(size={trigger.size},value={trigger.value:g},target={trigger.target},"
        f"fraction={fraction:g},seed={seed})"
    )
    return dataclasses.replace(dataset, name=name, x_train=x, y_train=y), idx


def attack_success_rate(logits_triggered, labels, target: int):
    """Fraction of examples with ``labels != target`` whose triggered input is classified ``target``.

    ``logits_triggered`` ``[..., N, C]`` (leading axes, e.g. seeds, are kept); ``labels`` ``[N]``.
    """
    hit = jnp.argmax(logits_triggered, axis=-1) == target
    other = jnp.broadcast_to(labels != target, hit.shape)
    return jnp.sum(hit & other, axis=-1) / jnp.sum(labels != target)
