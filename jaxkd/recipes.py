"""Optimisers and learning-rate schedules: a run's recipe.

A :class:`RecipeConfig` fixes the static structure (optimiser kind, schedule
shape, duration, batch size); its floats ``learning_rate``, ``weight_decay``
and ``momentum`` are hyper-parameters the trainer may sweep without
recompiling (:data:`RECIPE_HPARAMS`).

Conventions:

* ``sgd``/``momentum``/``nesterov``: weight decay is added to the gradient
  *before* momentum, as PyTorch's ``SGD`` does (and so RepDistiller,
  mdistiller, torchdistill); momentum is PyTorch's (no dampening, the first
  buffer is the gradient).
* ``adam``: L2 decay added to the gradient before Adam (PyTorch ``Adam``);
  ``adamw``: decoupled decay ``p -= lr · wd · p`` (PyTorch ``AdamW``).
* The learning rate at step ``t`` is ``learning_rate · factor(t)`` where the
  factor is an optax schedule: constant, multi-step (``decay_rate`` at each
  milestone) or cosine to zero, after an optional linear warm-up from 0.
* ``epochs``/``milestones``/``warmup`` are in epochs when ``epochs`` is set,
  else in steps; a milestone at epoch 150 decays the rate from the first step
  of epoch 151 on (0-based: step ``150 · steps_per_epoch``), as RepDistiller's
  ``epoch > milestone`` test with 1-based epochs.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from jaxkd.errors import ConfigError, check, check_name, check_value

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw")
SCHEDULES = ("constant", "multistep", "cosine")
RECIPE_HPARAMS = {"learning_rate": "positive", "weight_decay": "nonneg", "momentum": "unit_open"}


@dataclasses.dataclass(frozen=True)
class RecipeConfig:
    """Optimiser, schedule and duration of a run.

    Exactly one of ``epochs`` and ``steps`` sets the duration.
    """

    optimizer: str = "adam"
    learning_rate: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    decay_aux: bool = True  # weight decay on the terms' aux params too (RepDistiller: yes)
    schedule: str = "constant"
    milestones: tuple[float, ...] = ()
    decay_rate: float = 0.1
    warmup: float = 0.0
    batch_size: int = 64
    steps: int | None = 1000
    epochs: float | None = None

    def __post_init__(self):
        check_name("optimizer", self.optimizer, OPTIMIZERS)
        check_name("schedule", self.schedule, SCHEDULES)
        check(self.batch_size > 0, f"batch_size must be positive, got {self.batch_size}")
        check(
            (self.steps is None) != (self.epochs is None),
            "set exactly one of recipe.steps and recipe.epochs (the other to none)",
        )
        check((self.steps or 1) > 0 and (self.epochs or 1) > 0, "the run's duration must be positive")
        for name, constraint in RECIPE_HPARAMS.items():
            check_value(name, getattr(self, name), constraint)
        check(self.decay_rate > 0, f"decay_rate must be positive, got {self.decay_rate}")
        check(self.warmup >= 0, f"warmup must be >= 0, got {self.warmup}")
        check(
            list(self.milestones) == sorted(self.milestones) and all(m > 0 for m in self.milestones),
            f"milestones must be positive and increasing, got {self.milestones}",
        )

    def hparams(self) -> dict[str, float]:
        return {name: float(getattr(self, name)) for name in RECIPE_HPARAMS}

    def total_steps(self, steps_per_epoch: int) -> int:
        if self.steps is not None:
            return int(self.steps)
        return max(1, int(round(self.epochs * steps_per_epoch)))

    def _to_steps(self, value: float, steps_per_epoch: int) -> int:
        return int(round(value * steps_per_epoch)) if self.epochs is not None else int(round(value))

    def schedule_fn(self, steps_per_epoch: int) -> optax.Schedule:
        """The learning-rate factor ``step -> factor`` (multiply by ``learning_rate``)."""
        total = self.total_steps(steps_per_epoch)
        warm = self._to_steps(self.warmup, steps_per_epoch)
        if warm >= total:
            raise ConfigError(f"warm-up ({warm} steps) must be shorter than the run ({total} steps)")
        if self.schedule == "cosine":
            main = optax.cosine_decay_schedule(1.0, total - warm)
        elif self.schedule == "multistep":
            bounds = [self._to_steps(m, steps_per_epoch) - warm for m in self.milestones]
            check(all(b > 0 for b in bounds), "milestones must come after the warm-up")
            main = optax.piecewise_constant_schedule(1.0, {b: self.decay_rate for b in bounds})
        else:
            main = optax.constant_schedule(1.0)
        if not warm:
            return main
        return optax.join_schedules([optax.linear_schedule(0.0, 1.0, warm), main], [warm])


# Named recipes from the literature (see ../shared/docs/peers.md).
RECIPES = {
    # RepDistiller / mdistiller CIFAR-100: 240 epochs, lr 0.05, x0.1 at 150/180/210, wd 5e-4, batch 64.
    "repdistiller_cifar": RecipeConfig(
        optimizer="momentum",
        learning_rate=0.05,
        momentum=0.9,
        weight_decay=5e-4,
        schedule="multistep",
        milestones=(150, 180, 210),
        decay_rate=0.1,
        batch_size=64,
        steps=None,
        epochs=240,
    ),
    # Kang & Kim (WDSL) CIFAR-100, 200 epochs: lr 0.1, 1 warm-up epoch, x0.2 at 60/120/160, batch 128.
    "wdsl_cifar": RecipeConfig(
        optimizer="momentum",
        learning_rate=0.1,
        momentum=0.9,
        weight_decay=5e-4,
        schedule="multistep",
        milestones=(60, 120, 160),
        decay_rate=0.2,
        warmup=1.0,
        batch_size=128,
        steps=None,
        epochs=200,
    ),
}


def recipe(name: str, **changes) -> RecipeConfig:
    """A named recipe from :data:`RECIPES`, optionally with fields changed."""
    check_name("recipe", name, RECIPES)
    return dataclasses.replace(RECIPES[name], **changes)


def make_optimizer(config: RecipeConfig, hp, decay_mask=None) -> optax.GradientTransformation:
    """The update direction without the learning rate: ``params -= lr(t) * updates``.

    ``hp`` holds ``weight_decay`` and ``momentum`` (traced scalars in a sweep);
    the state's structure does not depend on their values. ``decay_mask`` is
    a pytree of bools (or None: decay everything).
    """
    wd = hp["weight_decay"]
    decay = optax.add_decayed_weights(wd, mask=decay_mask)
    if config.optimizer == "sgd":
        return decay
    if config.optimizer in ("momentum", "nesterov"):
        return optax.chain(decay, optax.trace(decay=hp["momentum"], nesterov=config.optimizer == "nesterov"))
    if config.optimizer == "adam":
        return optax.chain(decay, optax.scale_by_adam())
    return optax.chain(optax.scale_by_adam(), decay)  # adamw: decoupled


def apply_updates(params, updates, lr):
    """``params - lr * updates`` (the sign and rate that :func:`make_optimizer` leaves out)."""
    return optax.apply_updates(params, jax.tree.map(lambda u: -lr * u, updates))


def learning_rate(config: RecipeConfig, hp, step, steps_per_epoch: int) -> jax.Array:
    """``hp["learning_rate"] · factor(step)``."""
    return hp["learning_rate"] * jnp.asarray(config.schedule_fn(steps_per_epoch)(step), jnp.float32)
