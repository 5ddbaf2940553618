"""One training run as a pure function of its keys.

``trainer = make_train(config, dataset, teacher)`` builds a :class:`Trainer`;
``trainer.run(key)`` returns ``(final_state, history)``. The inner loop is a
``lax.scan`` over steps (batches gathered on device by index); evaluation
happens every ``config.eval_every`` steps inside the same program.

Hyper-parameters that may be swept without recompiling (``learning_rate``,
``alpha``, ``temperature``) are passed as a dict of float scalars, so a grid is
a ``vmap`` over that dict. Everything else in :class:`TrainConfig` is static.

Randomness: the initialisation key and the data-order key are separate
(``init(init_key, data_key)``), so controls such as "same init, different data
order" are two calls. The batch at step ``s`` is drawn from
``fold_in(data_key, epoch(s))``, so a resumed run sees the same batches as an
uninterrupted one.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxkd import losses
from jaxkd.data import Dataset
from jaxkd.errors import ConfigError, check, check_name
from jaxkd.metrics import accuracy, agreement
from jaxkd.models import MODELS, FunctionalModel, make_model

OPTIMIZERS = ("adam", "sgd", "momentum")
SCHEDULES = ("constant", "cosine")
HPARAMS = ("learning_rate", "alpha", "temperature")


def check_hparams(hparams: dict) -> None:
    """Validate swept hyper-parameter values (scalars or 1-D grids)."""
    for name, value in hparams.items():
        check_name("hyper-parameter", name, HPARAMS)
        for v in np.atleast_1d(np.asarray(value, np.float64)):
            check(np.isfinite(v), f"{name} must be finite, got {v:g}")
            if name == "alpha":
                check(0 <= v <= 1, f"alpha must lie in [0, 1], got {v:g}")
            else:
                check(v > 0, f"{name} must be positive, got {v:g}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Static description of one run (shapes, steps, optimiser).

    ``learning_rate``, ``alpha`` and ``temperature`` are the defaults of the
    sweepable hyper-parameters (see :meth:`hparams`).
    """

    model: str = "mlp"
    widths: tuple[int, ...] | None = None
    loss: str = "kd"  # a name in jaxkd.losses.OBJECTIVES
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "constant"
    batch_size: int = 64
    steps: int = 1000
    eval_every: int = 100
    alpha: float = 0.0
    temperature: float = 1.0
    eval_train: bool = True  # also report accuracy on the full training set

    def __post_init__(self):
        check_name("model", self.model, MODELS)
        check_name("loss", self.loss, losses.OBJECTIVES)
        check_name("optimizer", self.optimizer, OPTIMIZERS)
        check_name("schedule", self.schedule, SCHEDULES)
        check(self.batch_size > 0, f"batch_size must be positive, got {self.batch_size}")
        check(self.steps > 0, f"steps must be positive, got {self.steps}")
        check(
            0 < self.eval_every <= self.steps and self.steps % self.eval_every == 0,
            f"eval_every ({self.eval_every}) must divide steps ({self.steps})",
        )
        check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        check_hparams(self.hparams())

    def hparams(self) -> dict[str, float]:
        return {name: float(getattr(self, name)) for name in HPARAMS}


class TrainState(NamedTuple):
    """Everything that changes during a run; a pytree of arrays."""

    step: jax.Array  # int32 scalar
    params: Any
    rest: Any  # non-parameter model state (BatchNorm statistics)
    opt_state: Any
    data_key: jax.Array  # raw uint32 key data (checkpointable)


@dataclasses.dataclass(frozen=True)
class Teacher:
    """A frozen teacher given by its cached logits (inputs are not augmented)."""

    logits_train: np.ndarray
    logits_test: np.ndarray

    @classmethod
    def from_model(cls, model: FunctionalModel, params, rest, dataset: Dataset) -> Teacher:
        """Cache a frozen model's eval-mode logits on ``dataset``."""
        fn = jax.jit(lambda x: model.apply(params, rest, x, train=False)[0])
        return cls(np.asarray(fn(dataset.x_train)), np.asarray(fn(dataset.x_test)))


def _make_tx(config: TrainConfig) -> optax.GradientTransformation:
    """The optimiser without its learning rate (applied per step, so it can be vmapped)."""
    base = {
        "adam": optax.scale_by_adam(),
        "sgd": optax.identity(),
        "momentum": optax.trace(decay=0.9),
    }[config.optimizer]
    if config.weight_decay:
        return optax.chain(base, optax.add_decayed_weights(config.weight_decay))
    return base


@dataclasses.dataclass(frozen=True, eq=False)
class Trainer:
    """A run's pure functions. Build with :func:`make_train`.

    ``data`` is the dict of device arrays the step reads (``x_train``,
    ``y_train``, ``x_test``, ``y_test`` and, with a teacher, ``t_train``,
    ``t_test``); it is an explicit argument of :meth:`advance` so that a sweep
    can place it on devices once.
    """

    config: TrainConfig
    model: FunctionalModel
    data: dict
    has_teacher: bool

    @property
    def num_train(self) -> int:
        return int(self.data["x_train"].shape[0])

    def init(self, init_key, data_key) -> TrainState:
        params, rest = self.model.init(init_key)
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            rest=rest,
            opt_state=_make_tx(self.config).init(params),
            data_key=jax.random.key_data(data_key),
        )

    @property
    def steps_per_epoch(self) -> int:
        return self.num_train // self.config.batch_size

    def epoch_permutations(self, data_key, first_epoch, n_epochs: int):
        """``[n_epochs, N]`` data orders of epochs ``first_epoch, ...``; epoch e uses ``fold_in(key, e)``."""
        key = jax.random.wrap_key_data(data_key)
        epochs = first_epoch + jnp.arange(n_epochs)
        return jax.vmap(lambda e: jax.random.permutation(jax.random.fold_in(key, e), self.num_train))(epochs)

    def batch_indices(self, perms, first_epoch, step):
        """Indices of the batch at ``step`` from precomputed epoch permutations (no replacement)."""
        per_epoch = self.steps_per_epoch
        start = (step % per_epoch) * self.config.batch_size
        return jax.lax.dynamic_slice_in_dim(perms[step // per_epoch - first_epoch], start, self.config.batch_size)

    def learning_rate(self, hparams, step):
        lr = hparams["learning_rate"]
        if self.config.schedule == "cosine":
            frac = jnp.minimum(step.astype(jnp.float32) / self.config.steps, 1.0)
            lr = lr * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))
        return lr

    def train_step(self, state: TrainState, hparams, data, idx):
        """One optimiser step on examples ``idx``; returns ``(state, metrics)`` with per-term losses."""
        x, y = data["x_train"][idx], data["y_train"][idx]
        t = data["t_train"][idx] if self.has_teacher else None

        def loss_fn(params):
            logits, _, rest = self.model.apply(params, state.rest, x, train=True)
            total, terms = losses.OBJECTIVES[self.config.loss](
                logits, t, y, alpha=hparams["alpha"], temperature=hparams["temperature"]
            )
            return jnp.mean(total), (rest, {k: jnp.mean(v) for k, v in terms.items()})

        (loss, (rest, terms)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = _make_tx(self.config).update(grads, state.opt_state, state.params)
        lr = self.learning_rate(hparams, state.step)
        params = jax.tree.map(lambda p, u: p - lr * u, state.params, updates)
        metrics = {"train/loss": loss, **{f"train/{k}": v for k, v in terms.items()}}
        new_state = state._replace(step=state.step + 1, params=params, rest=rest, opt_state=opt_state)
        return new_state, metrics

    def evaluate(self, params, rest, data) -> dict[str, jax.Array]:
        """Test accuracy/loss, train accuracy and, with a teacher, test agreement."""
        out = {}
        for split in ("train", "test") if self.config.eval_train else ("test",):
            logits = self.model.apply(params, rest, data[f"x_{split}"], train=False)[0]
            out[f"{split}/acc"] = jnp.mean(accuracy(logits, data[f"y_{split}"]))
            if split == "test":
                out["test/loss"] = jnp.mean(losses.cross_entropy(logits, data["y_test"]))
                if self.has_teacher:
                    out["test/agreement"] = jnp.mean(agreement(logits, data["t_test"]))
        return out

    def advance(self, state: TrainState, hparams, data, num_steps: int):
        """Run ``num_steps`` (a multiple of ``eval_every``) steps.

        Returns ``(state, history)``, ``history[name]`` of shape
        ``[num_steps // eval_every]``: training terms averaged over each
        interval, evaluation metrics at its end. Memory: the call holds
        ``num_steps / steps_per_epoch + 2`` permutations of the training set,
        so long runs on large datasets should advance in chunks (``chunk_steps``).
        """
        every = self.config.eval_every
        if num_steps % every:
            raise ValueError(f"num_steps={num_steps} is not a multiple of eval_every={every}")

        # One sort per epoch, not per step: the permutations of every epoch this
        # call touches are drawn up front (same keys as drawing them lazily).
        first_epoch = state.step // self.steps_per_epoch
        perms = self.epoch_permutations(state.data_key, first_epoch, num_steps // self.steps_per_epoch + 2)

        def step_fn(s, _):
            return self.train_step(s, hparams, data, self.batch_indices(perms, first_epoch, s.step))

        def interval(state, _):
            state, metrics = jax.lax.scan(step_fn, state, length=every)
            record = {k: jnp.mean(v) for k, v in metrics.items()}
            record.update(self.evaluate(state.params, state.rest, data))
            return state, record

        return jax.lax.scan(interval, state, length=num_steps // every)

    def run(self, key, hparams=None):
        """``key -> (final_state, history)``: the whole run, pure and jittable."""
        init_key, data_key = jax.random.split(key)
        hparams = self.config.hparams() if hparams is None else hparams
        return self.advance(self.init(init_key, data_key), hparams, self.data, self.config.steps)


def make_train(config: TrainConfig, dataset: Dataset, teacher: Teacher | None = None) -> Trainer:
    """Build the :class:`Trainer` for ``config`` on ``dataset`` (optionally distilled)."""
    check(
        dataset.x_train.shape[0] >= config.batch_size,
        f"batch_size {config.batch_size} exceeds the {dataset.x_train.shape[0]} training examples",
    )
    data = {
        "x_train": jnp.asarray(dataset.x_train),
        "y_train": jnp.asarray(dataset.y_train),
        "x_test": jnp.asarray(dataset.x_test),
        "y_test": jnp.asarray(dataset.y_test),
    }
    if teacher is not None:
        for split in ("train", "test"):
            logits = np.asarray(getattr(teacher, f"logits_{split}"))
            n = getattr(dataset, f"x_{split}").shape[0]
            if logits.ndim != 2 or logits.shape[0] != n:
                raise ConfigError(f"teacher {split} logits have shape {logits.shape}; expected ({n}, classes)")
            if logits.shape[1] != dataset.num_classes:
                raise ConfigError(
                    f"teacher has {logits.shape[1]} classes but the student's data has "
                    f"{dataset.num_classes}; distil from a teacher trained on the same label set"
                )
            data[f"t_{split}"] = jnp.asarray(logits)
    model = make_model(config.model, dataset.in_shape, dataset.num_classes, config.widths)
    return Trainer(config=config, model=model, data=data, has_teacher=teacher is not None)
