"""One training run as a pure function of its keys: the distillation engine.

``trainer = make_train(config, dataset, teacher)`` builds a :class:`Trainer`
from a :class:`jaxkd.config.RunConfig`; ``trainer.run(key)`` returns
``(final_state, history)``. The inner loop is a ``lax.scan`` over steps
(batches gathered on device by index, augmented and normalised on device);
evaluation runs every ``eval_every`` steps inside the same program, in
fixed-size batches, on the validation and test splits.

The loss is ``sum_i weight_i * mean_batch(term_i)`` over the objective's
terms (:mod:`jaxkd.terms`); each term's unweighted batch mean is logged as
``train/<term>``. The trainer never names a method.

Hyper-parameters that may be swept without recompiling (the recipe's
``learning_rate``, ``weight_decay``, ``momentum`` and every term float,
``<term>.<name>``) are passed as a flat dict of scalars, so a grid is a
``vmap`` over that dict.

Randomness: ``init(init_key, data_key)`` keeps initialisation and data
randomness apart, so "same init, different data order" is two calls. Epoch
``e``'s order comes from ``fold_in(perm_key, e)``; step ``t``'s key (for
augmentation and random terms) is ``fold_in(step_key, t)``, with
``perm_key, step_key = split(data_key)``. A resumed run therefore draws
exactly what an uninterrupted one draws.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxkd import evaluate, recipes
from jaxkd.config import RunConfig
from jaxkd.data import Dataset
from jaxkd.data.augment import augment, normalize
from jaxkd.data.dataset import run_splits
from jaxkd.errors import ConfigError, check, check_value
from jaxkd.evaluate import batched
from jaxkd.fingerprint import run_fingerprint
from jaxkd.models import FunctionalModel, make_model
from jaxkd.selection import Selected, check_select, init_selected, select_model
from jaxkd.teacher import Teacher, normalisation, teacher_inputs
from jaxkd.terms import Term, eval_updates, gate_by_phase, phase_boundaries

SPLITS = ("train", "val", "test")


class TrainState(NamedTuple):
    """Everything that changes during a run; a pytree of arrays.

    ``params`` is ``{"model": ..., "terms": {term: aux params}}`` (both
    trained by one optimiser); ``term_state`` is ``{term: state}``;
    ``selected`` the model selected so far on the validation split
    (:mod:`jaxkd.selection`), carried beside the current one;
    ``diverged_at`` the step whose loss or update was NaN/Inf (0: finite so
    far), after which its parameters are frozen (:func:`guard_step`).
    """

    step: jax.Array  # int32 scalar
    params: Any
    rest: Any  # non-parameter model state (BatchNorm statistics)
    term_state: Any
    opt_state: Any
    perm_key: jax.Array  # raw uint32 key data (checkpointable)
    step_key: jax.Array
    selected: Selected
    diverged_at: jax.Array  # int32 scalar; 0 while every loss and update has been finite


def all_finite(tree) -> jax.Array:
    """Scalar bool: every floating-point leaf of ``tree`` is free of NaN/Inf."""
    flags = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(flags)) if flags else jnp.array(True)


def _keep_where(frozen, old, new):
    """``old`` where ``frozen`` (a scalar bool), else ``new``, leaf by leaf (``new`` bit for bit when not frozen)."""
    return jax.tree.map(lambda o, n: jnp.where(frozen, o, n), old, new)


def guard_step(old: TrainState, new: TrainState, loss) -> TrainState:
    """``new``, with its parameters and optimiser state kept at ``old``'s once a loss or update is NaN/Inf.

    A diverging step's update is not applied, nor any after it: the run keeps
    its last finite parameters and optimiser state, and ``diverged_at``
    records the step (1-based, as ``state.step`` counts) whose loss or new
    parameters were non-finite. The step counter, the model state (BatchNorm
    statistics) and the terms' state go on as computed: masking them too
    would change how XLA fuses their updates, and with it the round-off of
    every finite run. A finite run's state is ``new`` bit for bit, so runs
    beside a diverging one in a vmapped sweep are untouched by it.
    """
    before = old.diverged_at > 0
    frozen = before | ~(jnp.isfinite(loss) & all_finite(new.params))
    return new._replace(
        params=_keep_where(frozen, old.params, new.params),
        opt_state=_keep_where(frozen, old.opt_state, new.opt_state),
        diverged_at=jnp.where(frozen & ~before, new.step, old.diverged_at),
    )


def check_hparams(hparams: dict, constraints: dict[str, str]) -> None:
    """Validate hyper-parameter values (scalars or 1-D grids) against their declared constraints."""
    for name, value in hparams.items():
        if name not in constraints:
            raise ConfigError(f"unknown hyper-parameter {name!r}; sweepable: {', '.join(sorted(constraints))}")
        check_value(name, value, constraints[name])


@dataclasses.dataclass(frozen=True, eq=False)
class Trainer:
    """A run's pure functions. Build with :func:`make_train`.

    ``data`` is the dict of device arrays the step reads (``x_/y_`` of
    ``train``, ``val``, ``test``); ``teacher_inputs`` the teacher's arrays
    (parameters for a live teacher and its logits on each split; a leading
    seed axis when per seed). Both are explicit arguments of :meth:`advance`
    so that a sweep can place them on devices once.
    """

    config: RunConfig
    model: FunctionalModel
    terms: dict[str, Term]
    data: dict
    teacher: Teacher | None
    teacher_inputs: Any
    teacher_live: bool
    mean: Any
    std: Any
    num_train: int
    specs: tuple
    fingerprint: dict
    constants: dict = dataclasses.field(default_factory=dict)  # term pre-pass results, by term
    prepass_seconds: float = 0.0  # wall time of the pre-passes (compilation included)

    # --- static sizes ------------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        return self.config.recipe.batch_size

    @property
    def steps_per_epoch(self) -> int:
        return self.num_train // self.batch_size

    @property
    def steps(self) -> int:
        return self.config.recipe.total_steps(self.steps_per_epoch)

    @property
    def eval_every(self) -> int:
        return self.config.eval.every or self.steps_per_epoch

    def hparams(self) -> dict[str, float]:
        return self.config.hparams()

    def constraints(self) -> dict[str, str]:
        return self.config.constraints()

    # --- state -------------------------------------------------------------------------------
    def _decay_mask(self, params):
        aux = self.config.recipe.decay_aux
        return {
            "model": jax.tree.map(lambda _: True, params["model"]),
            "terms": {
                n: jax.tree.map(lambda _, d=aux and self.terms[n].decay_aux: d, p) for n, p in params["terms"].items()
            },
        }

    def _tx(self, hp, params):
        return recipes.make_optimizer(self.config.recipe, hp, self._decay_mask(params))

    def init(self, init_key, data_key) -> TrainState:
        """Initial state; model and term params from ``init_key``, data order and per-step keys from ``data_key``."""
        model_key, terms_key = jax.random.split(init_key)
        perm_key, step_key = jax.random.split(data_key)
        params, rest = self.model.init(model_key)
        aux, term_state = {}, {}
        for i, (name, term) in enumerate(self.terms.items()):
            extra = (self.constants[name],) if term.prepass is not None else ()
            aux[name], term_state[name] = term.init(jax.random.fold_in(terms_key, i), *self.specs, *extra)
        params = {"model": params, "terms": aux}
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            rest=rest,
            term_state=term_state,
            opt_state=self._tx(self.hparams(), params).init(params),
            perm_key=jax.random.key_data(perm_key),
            step_key=jax.random.key_data(step_key),
            selected=init_selected(params["model"], rest),
            diverged_at=jnp.zeros((), jnp.int32),
        )

    # --- data --------------------------------------------------------------------------------
    def epoch_permutations(self, perm_key, first_epoch, n_epochs: int):
        """``[n_epochs, N]`` data orders of epochs ``first_epoch, ...``; epoch e uses ``fold_in(key, e)``."""
        key = jax.random.wrap_key_data(perm_key)
        epochs = first_epoch + jnp.arange(n_epochs)
        return jax.vmap(lambda e: jax.random.permutation(jax.random.fold_in(key, e), self.num_train))(epochs)

    def batch_indices(self, perms, first_epoch, step):
        """Indices of the batch at ``step`` from precomputed epoch permutations (no replacement)."""
        per_epoch = self.steps_per_epoch
        start = (step % per_epoch) * self.batch_size
        return jax.lax.dynamic_slice_in_dim(perms[step // per_epoch - first_epoch], start, self.batch_size)

    def prepare(self, x):
        """Stored inputs -> model inputs (uint8 scaled to [0, 1], then the dataset's mean/std)."""
        return normalize(x, self.mean, self.std)

    def train_batch(self, data, idx, key):
        """The augmented, normalised batch ``{"x", "y", "index"}`` at dataset indices ``idx``."""
        x = data["x_train"][idx]
        d = self.config.data
        if d.augmented:
            x = augment(key, x, crop_padding=d.crop_padding, flip=d.flip, rotation_degrees=d.rotation)
        return {"x": self.prepare(x), "y": data["y_train"][idx], "index": idx}

    # --- the step ----------------------------------------------------------------------------
    def teacher_train_out(self, tin, batch):
        """The teacher's ``(logits, features)`` on a training batch: live, or cached logits by index."""
        if self.teacher is None:
            return None
        if self.teacher_live:
            return self.teacher.apply(tin, batch["x"])
        return tin["logits"]["train"][batch["index"]], {}

    def loss(self, params, state: TrainState, hp, batch, t_out, key):
        """``(total, (rest, term_state, {term: batch mean}))``: the weighted objective of one batch."""
        logits, feats, rest = self.model.apply(params["model"], state.rest, batch["x"], train=True)
        total, means, new_state = 0.0, {}, {}
        for i, (name, term) in enumerate(self.terms.items()):
            term_hp = {k: hp[f"{name}.{k}"] for k in term.hparams}
            s_out, t_in = declared_outputs(term, (logits, feats), t_out)
            args = (params["terms"][name], state.term_state[name], s_out, t_in, batch)
            apply = functools.partial(term.apply, *args, jax.random.fold_in(key, i), term_hp)
            if term.skip_unweighted:  # weight 0: value 0, state unchanged (a real skip only outside vmap)
                out = jax.eval_shape(apply)
                skipped = lambda out=out, st=args[1]: (jnp.zeros(out[0].shape, out[0].dtype), st)  # noqa: E731
                values, new_state[name] = jax.lax.cond(hp[f"{name}.weight"] > 0, apply, skipped)
            else:
                values, new_state[name] = apply()
            means[name] = jnp.mean(values)
            weight = hp[f"{name}.weight"]
            if term.ramp_steps:
                weight = weight * jnp.minimum(state.step.astype(jnp.float32) / term.ramp_steps, 1.0)
            total = total + weight * means[name]
        return total, (rest, new_state, means)

    def step_inputs(self, state: TrainState, data, tin, idx):
        """``(batch, teacher_out, term_key)`` of the step ``state`` is at: what every run with its keys shares."""
        step_key = jax.random.fold_in(jax.random.wrap_key_data(state.step_key), state.step)
        aug_key, term_key = jax.random.split(step_key)
        batch = self.train_batch(data, idx, aug_key)
        return batch, self.teacher_train_out(tin, batch), term_key

    def update(self, state: TrainState, hp, batch, t_out, term_key):
        """One optimiser step on ``batch`` (teacher outputs ``t_out``); ``(state, metrics)``, guarded."""
        grad_fn = jax.value_and_grad(self.loss, has_aux=True)
        (loss, (rest, term_state, means)), grads = grad_fn(state.params, state, hp, batch, t_out, term_key)
        updates, opt_state = self._tx(hp, state.params).update(grads, state.opt_state, state.params)
        lr = recipes.learning_rate(self.config.recipe, hp, state.step, self.steps_per_epoch)
        params = recipes.apply_updates(state.params, updates, lr)
        metrics = {"train/loss": loss, "train/lr": lr, **{f"train/{k}": v for k, v in means.items()}}
        new_state = state._replace(
            step=state.step + 1, params=params, rest=rest, term_state=term_state, opt_state=opt_state
        )
        return guard_step(state, new_state, loss), metrics

    def train_step(self, state: TrainState, hp, data, tin, idx):
        """One optimiser step on examples ``idx``; returns ``(state, metrics)`` with per-term losses.

        A step whose loss or update is NaN/Inf is not applied (:func:`guard_step`).
        """
        return self.update(state, hp, *self.step_inputs(state, data, tin, idx))

    # --- evaluation --------------------------------------------------------------------------
    def predict_split(self, params, rest, data, split: str):
        """Eval-mode logits ``[N, C]`` of the student on a whole split, in fixed-size batches."""
        x = data[f"x_{split}"]

        def fn(i):
            return self.model.apply(params["model"], rest, self.prepare(x[i]), train=False)[0]

        return batched(fn, x.shape[0], self.config.eval.batch_size)

    def advance(self, state: TrainState, hparams, data, tin, num_steps: int):
        """Run ``num_steps`` (a multiple of ``eval_every``) steps.

        Returns ``(state, history)``, ``history[name]`` of shape
        ``[num_steps // eval_every]``: training terms averaged over each
        interval, evaluation metrics at its end; NaN from the interval in
        which the run diverged (``state.diverged_at``) on, and a diverged run
        selects no later model. Memory: the call holds
        ``num_steps / steps_per_epoch + 2`` permutations of the training set,
        so long runs on large datasets should advance in chunks.
        """
        perms, first_epoch = self._permutations(state, num_steps)

        def step_fn(s, _):
            return self.train_step(s, hparams, data, tin, self.batch_indices(perms, first_epoch, s.step))

        def interval(state, _):
            state, metrics = jax.lax.scan(step_fn, state, length=self.eval_every)
            return self._close_interval(state, hparams, data, tin, metrics)

        return jax.lax.scan(interval, state, length=num_steps // self.eval_every)

    def advance_grid(self, states: TrainState, hparams, data, tin, num_steps: int, over_grid):
        """:meth:`advance` for the runs of one seed at G grid points (leaves ``[G, ...]``) that share its keys.

        Runs with the same data-order and step keys see the same batches, so
        each step draws the batch and runs the teacher's forward pass once
        and hands both to every run; ``over_grid(f, *trees)`` maps ``f`` over
        the grid axis (``lax.map`` or ``vmap``). Nothing else is shared: each
        run takes its own step with its own hyper-parameters, so the results
        are :meth:`advance`'s run by run, up to float round-off. The caller
        guarantees equal keys (:class:`jaxkd.program.SweepProgram` checks).
        ``history`` leaves are ``[G, num_steps // eval_every]``.
        """
        first = jax.tree.map(lambda a: a[0], states)  # step counter and keys: the same in every run
        perms, first_epoch = self._permutations(first, num_steps)

        def step_fn(states, _):
            s0 = jax.tree.map(lambda a: a[0], states)
            shared = self.step_inputs(s0, data, tin, self.batch_indices(perms, first_epoch, s0.step))
            return over_grid(lambda s, h: self.update(s, h, *shared), states, hparams)

        def interval(states, _):
            states, metrics = jax.lax.scan(step_fn, states, length=self.eval_every)  # metrics [every, G]
            metrics = jax.tree.map(lambda m: jnp.swapaxes(m, 0, 1), metrics)
            return over_grid(lambda s, h, m: self._close_interval(s, h, data, tin, m), states, hparams, metrics)

        states, history = jax.lax.scan(interval, states, length=num_steps // self.eval_every)
        return states, jax.tree.map(lambda h: jnp.swapaxes(h, 0, 1), history)

    def _permutations(self, state: TrainState, num_steps: int):
        """The epoch permutations ``num_steps`` from ``state`` read, and the first one's epoch."""
        every = self.eval_every
        if num_steps % every:
            raise ValueError(f"num_steps={num_steps} is not a multiple of eval_every={every}")
        first_epoch = state.step // self.steps_per_epoch
        return self.epoch_permutations(state.perm_key, first_epoch, num_steps // self.steps_per_epoch + 2), first_epoch

    def _close_interval(self, state: TrainState, hparams, data, tin, metrics):
        """The end of an evaluation interval: ``(state, record)`` from the interval's per-step ``metrics``."""
        record = {k: jnp.mean(v) for k, v in metrics.items()}
        logits = evaluate.eval_logits(self, state, data)
        evals = evaluate.split_metrics(self, logits, data, tin)
        record.update(evals)
        diverged = state.diverged_at > 0  # a frozen run's evaluations say nothing: NaN, never selected
        record = {k: jnp.where(diverged, jnp.asarray(jnp.nan, v.dtype), v) for k, v in record.items()}
        selected = select_model(state.selected, self.config.eval.select, state, evals)
        term_state = eval_updates(self.terms, state.term_state, hparams, logits, data)
        state = state._replace(
            selected=_keep_where(diverged, state.selected, selected),
            term_state=_keep_where(diverged, state.term_state, term_state),
        )
        return state, record

    def run(self, key, hparams=None, teacher_inputs=None):
        """``key -> (final_state, history)``: the whole run, pure and jittable.

        A per-seed teacher needs ``teacher_inputs`` (one seed's slice of
        ``self.teacher_inputs``).
        """
        init_key, data_key = jax.random.split(key)
        hparams = self.hparams() if hparams is None else hparams
        tin = self.teacher_inputs if teacher_inputs is None else teacher_inputs
        if self.teacher is not None and self.teacher.per_seed and teacher_inputs is None:
            raise ConfigError("a per-seed teacher needs teacher_inputs for this run (or use run_sweep)")
        return self.advance(self.init(init_key, data_key), hparams, self.data, tin, self.steps)


def declared_outputs(term: Term, student_out, teacher_out):
    """What a term sees: the logits and only the features it declares (``student_features``, ``teacher_features``).

    The same in every mode (live or cached teacher), so a term that reads a
    feature it does not declare fails when the objective is built
    (:func:`check_objective`), never inside the compiled step.
    """
    s = (student_out[0], {f: student_out[1][f] for f in term.student_features})
    if teacher_out is None:
        return s, None
    return s, (teacher_out[0], {f: teacher_out[1][f] for f in term.teacher_features})


class _UndeclaredFeature(Exception):
    pass


class _Declared(dict):
    """A term's declared features; reading another raises :class:`_UndeclaredFeature` naming the side."""

    def __init__(self, side: str, features):
        super().__init__(features)
        self.side = side

    def __missing__(self, name):
        raise _UndeclaredFeature(self.side, name)

    def get(self, name, default=None):
        return self[name]


def check_objective(
    config: RunConfig,
    model: FunctionalModel,
    teacher_model: FunctionalModel | None,
    teacher_classes: tuple[int, ...] | None = None,
):
    """Check the objective against the student and teacher models before any work; returns their specs.

    ``teacher_classes``: the teacher is restricted to these classes (a
    subtask teacher). One ``ConfigError`` for a term that needs a teacher
    without one, a feature name a model does not have, a feature a term
    reads without declaring it, feature shapes a term cannot pair, a
    pre-pass that fails on the teacher, or teacher and student class counts
    that differ. Costs no FLOPs (``eval_shape``).
    """
    terms, hparams = config.objective.build()
    batch = config.recipe.batch_size
    x_spec = jax.ShapeDtypeStruct((batch, *model.in_shape), jnp.float32)

    def spec_of(m):
        return jax.eval_shape(lambda k, x: m.apply(*m.init(k), x, train=False)[:2], jax.random.key(0), x_spec)

    s_spec = spec_of(model)
    needs_teacher = [n for n, t in terms.items() if t.needs_teacher]
    t_spec = None
    if teacher_model is None:
        check(
            not needs_teacher,
            f"the objective's term(s) {', '.join(needs_teacher)} need a teacher; pass one (or drop those terms)",
        )
    else:
        t_spec = spec_of(teacher_model)
        if teacher_classes is not None:
            t_spec = (jax.ShapeDtypeStruct((batch, len(teacher_classes)), t_spec[0].dtype), t_spec[1])
        check(
            t_spec[0].shape[-1] == s_spec[0].shape[-1],
            f"teacher has {t_spec[0].shape[-1]} classes but the student's data has {s_spec[0].shape[-1]}; "
            "distil from a teacher trained on the same label set",
        )
    index_spec = jax.ShapeDtypeStruct((batch,), jnp.int32)
    batch_spec = {"x": x_spec, "y": index_spec, "index": index_spec}
    for i, (name, term) in enumerate(terms.items()):
        for f in term.student_features:
            check(f in s_spec[1], f"the student has no feature {f!r}; it has: {', '.join(sorted(s_spec[1]))}")
        if t_spec is not None:
            for f in term.teacher_features:
                check(f in t_spec[1], f"the teacher has no feature {f!r}; it has: {', '.join(sorted(t_spec[1]))}")
        key = jax.random.key(i)
        extra = ()
        if term.prepass is not None:
            check(teacher_model is not None, f"term {name!r} computes constants from a teacher; pass one")
            extra = (prepass_spec(term, teacher_model, teacher_classes, x_spec),)
        aux, state = jax.eval_shape(lambda k, e, t=term: t.init(k, s_spec, t_spec, *e), key, extra)
        hp = {k: jnp.float32(hparams[f"{name}.{k}"]) for k in term.hparams}
        s_in, t_in = declared_outputs(term, s_spec, t_spec if term.needs_teacher else None)

        def apply(aux, state, s_out, t_out, batch, key, term=term, hp=hp):  # features that name the side read
            s_out = (s_out[0], _Declared("student", s_out[1]))
            t_out = None if t_out is None else (t_out[0], _Declared("teacher", t_out[1]))
            return term.apply(aux, state, s_out, t_out, batch, key, hp)

        try:
            jax.eval_shape(apply, aux, state, s_in, t_in, batch_spec, key)
        except _UndeclaredFeature as err:
            side, feature = err.args
            raise ConfigError(
                f"term {name!r} reads the {side} feature {feature!r} without declaring it; "
                f"add it to the term's {side}_features"
            ) from None
    return s_spec, t_spec


def prepass_spec(term: Term, teacher_model: FunctionalModel, classes, x_spec):
    """The shapes of a term's pre-pass constants, from abstract teacher parameters and inputs (no FLOPs)."""
    from jaxkd.terms import Prepass

    def run(tin, x, y):
        teacher = Teacher(teacher_model, tin["params"], tin["rest"], classes=classes)
        return term.prepass(Prepass(teacher, tin, x, y, lambda v: v, x.shape[0]))

    params, rest = jax.eval_shape(teacher_model.init, jax.random.key(0))
    y_spec = jax.ShapeDtypeStruct(x_spec.shape[:1], jnp.int32)
    return jax.eval_shape(run, {"params": params, "rest": rest}, x_spec, y_spec)


def run_prepasses(terms: dict, teacher: Teacher, tin, x_train, y_train, prepare, batch_size: int) -> dict:
    """Every term's pre-pass constants, computed once from the teacher and the un-augmented training inputs."""
    from jaxkd.terms import Prepass

    out = {}
    ctx = Prepass(teacher, tin, x_train, y_train, prepare, batch_size)  # one cache for all the run's terms
    for name, term in terms.items():
        if term.prepass is None:
            continue
        check(not teacher.per_seed, f"term {name!r} computes constants from one teacher; use a shared teacher")
        out[name] = jax.tree.map(jnp.asarray, term.prepass(ctx))
    return out


def constants_hash(constants) -> str:
    """SHA-256 of a pre-pass's constants: every leaf's dtype, shape and bytes."""
    import hashlib

    h = hashlib.sha256()
    for leaf in jax.tree.leaves(constants):
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def check_teacher_normalisation(teacher: Teacher, mean, std, dataset_name: str) -> None:
    """One ``ConfigError`` when the teacher was trained on inputs normalised unlike the student's data."""
    if not teacher.normalisation_known:
        return  # built by hand from parameters: taken to match (documented on Teacher)
    want = normalisation(mean, std)
    got = (teacher.mean, teacher.std)
    same = all(
        (a is None) == (b is None) and (a is None or (len(a) == len(b) and np.allclose(a, b, rtol=0, atol=1e-6)))
        for a, b in zip(got, want)
    )
    check(
        same,
        f"the teacher was trained on inputs normalised with mean {got[0]}, std {got[1]}, but {dataset_name} uses "
        f"mean {want[0]}, std {want[1]}; distil from a teacher trained on this data",
    )


def make_train(config: RunConfig, dataset: Dataset, teacher: Teacher | None = None) -> Trainer:
    """Build the :class:`Trainer` for ``config`` on ``dataset`` (optionally distilled from ``teacher``).

    Every inconsistency (a term that needs a teacher without one, a feature
    the model does not have, class counts that differ, a teacher normalised
    for other data, a selection metric that is not evaluated or reads the
    test set, a term's targets fed by the selection split, a batch larger
    than the data, evaluation that does not divide the run) is one
    ``ConfigError``.
    """
    dc = config.data
    if dc.classes is not None:  # a subtask of the dataset; a teacher of all its classes is restricted to it
        check(
            max(dc.classes) < dataset.num_classes,
            f"data.classes {dc.classes} name classes beyond {dataset.name}'s {dataset.num_classes}",
        )
        if teacher is not None and teacher.classes is None and teacher.num_classes == dataset.num_classes:
            teacher = teacher.subtask(dc.classes)
        dataset = dataset.subset_classes(dc.classes)
    data_np = run_splits(dataset, dc.val_fraction, dc.split_seed, dc.train_fraction, dc.fraction_seed)
    ev = config.eval
    terms, _ = config.objective.build()
    select_split = (ev.select or "").split("/")[0].replace("train_eval", "train")
    for name, t in terms.items():
        if t.eval_update is not None:
            check(
                t.eval_split != select_split,
                f"term {name!r} builds its targets from the {t.eval_split} split, which also selects the model "
                f"(eval.select = {ev.select}); feed it another split",
            )
    needed = set(ev.splits) | {t.eval_split for t in terms.values() if t.eval_update is not None}
    if "val" in needed:
        check(
            len(data_np["y_val"]) > 0, "evaluation uses the validation split but data.val_fraction is 0; set it above 0"
        )
    num_train = len(data_np["y_train"])
    rc = config.recipe
    check(num_train >= rc.batch_size, f"batch_size {rc.batch_size} exceeds the {num_train} training examples")
    steps_per_epoch = num_train // rc.batch_size
    steps = rc.total_steps(steps_per_epoch)
    every = ev.every or steps_per_epoch
    check(steps % every == 0, f"eval.every ({every}) must divide the run's {steps} steps")
    rc.schedule_fn(steps_per_epoch)  # validates warm-up and milestones against this run
    terms = {  # phased terms (soft/hard schedules) gated by their segments of this run
        n: t if t.phases is None else gate_by_phase(t, phase_boundaries(t.phases, steps, steps_per_epoch))
        for n, t in terms.items()
    }

    model = make_model(
        config.model.name, dataset.in_shape, dataset.num_classes, config.model.widths, config.model.dtype
    )
    mean = None if dataset.mean is None else jnp.asarray(dataset.mean, jnp.float32)
    std = None if dataset.std is None else jnp.asarray(dataset.std, jnp.float32)

    def prepare(x):
        return normalize(x, mean, std)

    s_spec, t_spec = check_objective(
        config,
        model,
        teacher.model if teacher is not None else None,
        teacher.classes if teacher is not None else None,
    )
    live, tin = False, None
    if teacher is not None:
        check_teacher_normalisation(teacher, dataset.mean, dataset.std, dataset.name)
        reads_features = any(t.teacher_features for t in terms.values())
        mode = config.teacher
        if mode == "cached":
            check(not config.data.augmented, "a cached teacher cannot see augmented inputs; use teacher=live")
            check(not reads_features, "terms that read teacher features need teacher=live")
        live = mode == "live" or (mode == "auto" and (config.data.augmented or reads_features))
    data = {k: jnp.asarray(v) for k, v in data_np.items()}
    if teacher is not None:
        splits = sorted(set(needed) | ({"train"} if not live else set()))
        tin = teacher_inputs(teacher, live, data, prepare, splits, ev.batch_size)
        x_tr, y_tr = data["x_train"], data["y_train"]
        started = time.perf_counter()
        constants = jax.block_until_ready(
            run_prepasses(terms, teacher, teacher.inputs, x_tr, y_tr, prepare, ev.batch_size)
        )
        prepass_seconds = time.perf_counter() - started
    else:
        constants, prepass_seconds = {}, 0.0
    sizes = {s: int(data_np[f"y_{s}"].shape[0]) for s in SPLITS}
    fingerprint = run_fingerprint(config, dataset, sizes, teacher, live)
    if constants:
        fingerprint["constants"] = {n: constants_hash(c) for n, c in constants.items()}
    trainer = Trainer(
        config=config,
        model=model,
        terms=terms,
        data=data,
        teacher=teacher,
        teacher_inputs=tin,
        teacher_live=bool(live),
        mean=mean,
        std=std,
        num_train=num_train,
        specs=(s_spec, t_spec),
        fingerprint=fingerprint,
        constants=constants,
        prepass_seconds=prepass_seconds,
    )
    state_spec = jax.eval_shape(trainer.init, jax.random.key(0), jax.random.key(1))
    one_tin = (lambda t: jax.tree.map(lambda a: a[0], t)) if teacher is not None and teacher.per_seed else None
    metrics = jax.eval_shape(
        lambda s, t: evaluate.evaluate(trainer, s, data, one_tin(t) if one_tin else t), state_spec, tin
    )
    if ev.select is not None:
        check_select(ev.select, metrics)
    return trainer
