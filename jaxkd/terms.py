"""Distillation terms: the named, weighted pieces an objective is made of.

A :class:`Term` is a pair of pure functions in the spirit of an optax
transform::

    init(key, student_spec, teacher_spec) -> (aux_params, term_state)
    apply(aux_params, term_state, student_out, teacher_out, batch, key, hp)
        -> (values_B, term_state)

``*_spec`` and ``*_out`` are ``(logits, {feature_name: array})`` (specs hold
``jax.ShapeDtypeStruct`` for one training batch; ``teacher_spec`` is ``None``
without a teacher). ``batch`` is ``{"x", "y", "index"}`` (augmented,
normalised inputs; labels; dataset indices). ``hp`` holds the term's float
hyper-parameters (the ones it declares in ``hparams``), which the trainer may
sweep without recompiling. ``values_B`` is one value per example; the trainer
takes the batch mean and multiplies by the term's weight.

Aux params (a FitNet regressor) are trained with the student by the same
optimiser.

A term that needs statistics of the teacher on the training data before
training (SubDistill's subspace bases) declares ``prepass(ctx) -> constants``:
the trainer calls it once, when it is built, with a :class:`Prepass` (the
teacher, the un-augmented training inputs, a jitted batched ``map``), and
then calls ``init(key, student_spec, teacher_spec, constants)`` with its
result; the term keeps what it needs in its state. The constants' hash is
part of the run's fingerprint, so a resume refuses a changed basis.

State that changes at evaluation boundaries (an EMA confusion
matrix) is updated by ``eval_update(state, logits_NxC, labels_N, hp)`` from the
student's predictions on the split ``eval_split``.

Adding a method is adding one factory to :data:`TERMS`; the trainer never
names a method.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxkd import features, losses
from jaxkd.errors import ConfigError, check, check_value
from jaxkd.evaluate import batched
from jaxkd.peer_terms import PEER_TERMS


def _no_params(key, student_spec, teacher_spec):
    del key, student_spec, teacher_spec
    return {}, {}


@dataclasses.dataclass(frozen=True, eq=False)
class Term:
    """One distillation term. Build with a factory from :data:`TERMS`.

    Attributes:
      kind: the factory's name (``"kd"``, ``"fitnet"``, ...).
      apply: see the module docstring.
      init: see the module docstring; default: no aux params, no state.
      hparams: declared float hyper-parameters and their defaults (sweepable).
      constraints: ``{hparam: "positive" | "nonneg" | "unit" | "unit_open" | "any"}``.
      needs_teacher: the term reads the teacher's outputs.
      student_features / teacher_features: feature names the term reads.
      eval_update: optional ``(state, logits_NxC, labels_N, hp) -> state``.
      eval_split: split whose predictions feed ``eval_update``.
      decay_aux: whether weight decay applies to the aux params.
      ramp_steps: the weight grows linearly from 0 to its value over this many
        steps (``min(step / ramp_steps, 1)``; mdistiller's DKD warm-up is 20
        epochs); 0 = constant weight. Set with the option ``ramp_steps``.
      phases: ratios of alternating hard/soft segments of the run (Kang & Kim's
        3:3:6:3:15), scaled to the run by :func:`phase_boundaries`; None = always
        on. Set with the options ``phases`` and ``phase``.
      phase: ``"soft"`` (active in segments 2, 4, ...) or ``"hard"`` (1, 3, ...).
        A phased term's value is multiplied by its phase mask and its per-step
        state update is discarded outside its segments; its evaluation-boundary
        state update applies from the start of its first active segment on
        (:func:`gate_by_phase`, applied by ``make_train``).
      prepass: optional ``(ctx: Prepass) -> constants``, run once before
        training; ``init`` then takes the constants as a fourth argument.
      skip_unweighted: at a weight of exactly 0 the term's value reads 0 and its
        state is left as it was, through a ``lax.cond`` on the weight. The term
        is then *not computed* only where each run is traced alone: runs looped
        over (``lax.map``, a sweep's ``vmap_width=1``, the CPU default). Where
        runs are vmapped together (``vmap_width`` None, the accelerator
        default, or k > 1) the batched ``cond`` becomes a select: both branches
        run for every run and the term costs its full compute at weight 0 (the
        result is the same). For stateless controls (``rcd``, ``untrained``)
        that are grid points of a program whose other points do not use them.
    """

    kind: str
    apply: Callable[..., tuple[jax.Array, Any]]
    init: Callable[..., tuple[Any, Any]] = _no_params
    hparams: Mapping[str, float] = dataclasses.field(default_factory=dict)
    constraints: Mapping[str, str] = dataclasses.field(default_factory=dict)
    needs_teacher: bool = False
    student_features: tuple[str, ...] = ()
    teacher_features: tuple[str, ...] = ()
    eval_update: Callable[..., Any] | None = None
    eval_split: str = "val"
    decay_aux: bool = True
    ramp_steps: int = 0
    phases: tuple[float, ...] | None = None
    phase: str = "soft"
    skip_unweighted: bool = False
    prepass: Callable[..., Any] | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class Prepass:
    """What a term's pre-pass sees: the teacher and the un-augmented training inputs.

    Attributes:
      teacher: the run's :class:`jaxkd.teacher.Teacher` (a subtask teacher's
        logits are the subtask's).
      teacher_inputs: its ``{"params", "rest"}``.
      x: the stored training inputs (the run's training split, without the
        validation examples, not augmented, not normalised), ``[N, ...]``.
      y: their labels ``[N]``.
      prepare: stored inputs -> model inputs (the run's normalisation).
      batch_size: examples per batch of :meth:`map`.
      cache: shared by the pre-passes of one run's terms, so that terms
        that need the same statistics (SubDistill with several bases)
        compute them once (:func:`jaxkd.subspace.collect` keys it by its
        arguments).
    """

    teacher: Any
    teacher_inputs: Any
    x: Any
    y: Any
    prepare: Callable
    batch_size: int
    cache: dict = dataclasses.field(default_factory=dict)

    def map(self, fn):
        """``fn(teacher_inputs, x_B, y_B, index_B) -> pytree [B, ...]`` over the whole training split: one
        jitted ``lax.map`` over fixed-size batches (inputs normalised, not augmented); returns ``[N, ...]``."""
        x, y, prepare = self.x, self.y, self.prepare

        def run(tin, x, y):
            return batched(lambda i: fn(tin, prepare(x[i]), y[i], i), x.shape[0], self.batch_size)

        return jax.jit(run)(self.teacher_inputs, x, y)


# --- logit terms ---------------------------------------------------------------------------------


def ce(*, label_smoothing: float = 0.0) -> Term:
    """Cross-entropy with integer labels; ``label_smoothing`` as PyTorch's (eps spread over all C classes)."""

    def apply(aux, state, s_out, t_out, batch, key, hp):
        return losses.label_smoothing_ce(s_out[0], batch["y"], smoothing=hp["label_smoothing"]), state

    return Term("ce", apply, hparams={"label_smoothing": label_smoothing}, constraints={"label_smoothing": "unit_open"})


def kd(*, temperature: float = 4.0) -> Term:
    """Hinton KD, ``T² · KL(softmax(t/T) ‖ softmax(s/T))`` per example (:func:`jaxkd.losses.kd_loss`).

    RepDistiller's ``-r 0.1 -a 0.9`` is ``ce`` weight 0.1 and ``kd`` weight 0.9.
    """

    def apply(aux, state, s_out, t_out, batch, key, hp):
        return losses.kd_loss(s_out[0], t_out[0], temperature=hp["temperature"]), state

    return Term(
        "kd", apply, hparams={"temperature": temperature}, constraints={"temperature": "positive"}, needs_teacher=True
    )


def dkd(*, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0) -> Term:
    """Decoupled KD (Zhao et al. 2022): ``alpha·TCKD + beta·NCKD``, both × T² (:func:`jaxkd.losses.dkd_loss`).

    mdistiller's CIFAR-100 setting: alpha 1, beta 8, T 4, with CE weight 1 and
    the DKD weight ramped over 20 epochs (a schedule jaxkd leaves to the caller).
    """

    def apply(aux, state, s_out, t_out, batch, key, hp):
        return losses.dkd_loss(
            s_out[0], t_out[0], batch["y"], alpha=hp["alpha"], beta=hp["beta"], temperature=hp["temperature"]
        ), state

    return Term(
        "dkd",
        apply,
        hparams={"alpha": alpha, "beta": beta, "temperature": temperature},
        constraints={"alpha": "nonneg", "beta": "nonneg", "temperature": "positive"},
        needs_teacher=True,
    )


def dist(*, beta: float = 2.0, gamma: float = 2.0, temperature: float = 4.0) -> Term:
    """DIST (Huang et al. 2022): inter- and intra-class Pearson relations (:func:`jaxkd.losses.dist_loss`).

    The intra-class part is a batch quantity, broadcast to every example, so
    the batch mean of the values is the paper's loss.
    """

    def apply(aux, state, s_out, t_out, batch, key, hp):
        return losses.dist_loss(
            s_out[0], t_out[0], beta=hp["beta"], gamma=hp["gamma"], temperature=hp["temperature"]
        ), state

    return Term(
        "dist",
        apply,
        hparams={"beta": beta, "gamma": gamma, "temperature": temperature},
        constraints={"beta": "nonneg", "gamma": "nonneg", "temperature": "positive"},
        needs_teacher=True,
    )


def rcd(*, temperature: float = 4.0, scale: float = 1.0, per_example: bool = False) -> Term:
    """Random-control distillation: KD towards ``softmax(g / T)`` with random logits ``g ~ N(0, scale²)``.

    The teacher is replaced by noise (Mason-Williams et al., arXiv 2510.12615).
    ``per_example=False`` draws new logits every step from the step key;
    ``per_example=True`` fixes them per training example (from the term's
    init key folded with the example's index), so an example always sees
    the same random target. Needs no teacher.
    """

    def init(key, s_spec, t_spec):
        del s_spec, t_spec
        return {}, {"key": jax.random.key_data(key)}

    def apply(aux, state, s_out, t_out, batch, key, hp):
        logits = s_out[0]
        shape = logits.shape[-1:]
        if per_example:
            base = jax.random.wrap_key_data(state["key"])
            keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(batch["index"])
            noise = jax.vmap(lambda k: jax.random.normal(k, shape))(keys)
        else:
            noise = jax.random.normal(key, logits.shape)
        return losses.kd_loss(logits, hp["scale"] * noise, temperature=hp["temperature"]), state

    return Term(
        "rcd",
        apply,
        init=init,
        hparams={"temperature": temperature, "scale": scale},
        constraints={"temperature": "positive", "scale": "nonneg"},
        skip_unweighted=True,
    )


CONFUSION_SPLITS = ("train", "val", "test")


def confusion(
    *,
    temperature: float = 2.0,
    momentum: float = 0.9,
    smoothing: float = 0.1,
    update: str = "eval",
    split: str = "train",
    leak_test_labels: bool = False,
) -> Term:
    """Confusion Distillation (Kang & Kim, arXiv 2606.03052): KD towards a row of an EMA confusion matrix.

    State ``Q`` ([C, C]) starts as the label-smoothing matrix
    ``(1 - eps) I + eps / C`` (eps = ``smoothing`` in [0, 1], fixed at init).
    Per example the value is ``T² · KL(Q[y] ‖ softmax(z / T))`` (the target is
    not tempered; zero entries of ``Q[y]`` contribute 0:
    :func:`jaxkd.losses.soft_target_kl`). ``Q`` is updated as
    ``Q ← m Q + (1 − m) P`` with ``P`` the row-normalised confusion counts
    (+1e-8) of the student's argmax: ``update="eval"`` at every evaluation
    from its predictions on ``split``; ``update="step"`` from each training
    batch. Needs no teacher.

    ``split``: ``"train"`` (default) is the full, un-augmented training set
    (the trainer's ``train`` split), one of the two choices the paper summary
    recommends (training predictions, or a held-out part of the training
    data). ``"val"`` is the split that selects checkpoints by default
    (``eval.select = "val/acc"``): a target built from its labels makes the
    selected numbers optimistic. ``"test"`` is what the official code does
    (test labels leak into training) and is refused unless
    ``leak_test_labels=True``, for an exact reproduction only.
    """
    check(update in ("eval", "step"), f"confusion update must be 'eval' or 'step', got {update!r}")
    check(
        split in CONFUSION_SPLITS,
        f"confusion split must be 'val', 'train' (the default: training predictions) or 'test' "
        f"(only with leak_test_labels=True), got {split!r}",
    )
    check(
        isinstance(leak_test_labels, bool),
        f"confusion leak_test_labels must be true or false, got {leak_test_labels!r}",
    )
    check(
        split != "test" or leak_test_labels,
        "confusion split 'test' builds the training target from the test set's labels (the official code's "
        "leakage); set leak_test_labels=True to reproduce it on purpose, or use split 'train'",
    )
    check(
        isinstance(smoothing, (int, float)) and 0.0 <= smoothing <= 1.0,
        f"confusion smoothing must lie in [0, 1] (Q's initial rows must be probabilities), got {smoothing!r}",
    )

    def init(key, s_spec, t_spec):
        c = s_spec[0].shape[-1]
        q = (1.0 - smoothing) * jnp.eye(c, dtype=jnp.float32) + smoothing / c
        return {}, {"Q": q}

    def ema(state, logits, labels, hp):
        c = logits.shape[-1]
        counts = jnp.zeros((c, c), jnp.float32).at[labels, jnp.argmax(logits, -1)].add(1.0) + 1e-8
        p = counts / jnp.sum(counts, axis=1, keepdims=True)
        return {"Q": hp["momentum"] * state["Q"] + (1.0 - hp["momentum"]) * p}

    def apply(aux, state, s_out, t_out, batch, key, hp):
        logits = s_out[0]
        values = losses.soft_target_kl(logits, state["Q"][batch["y"]], temperature=hp["temperature"])
        if update == "step":
            state = ema(state, jax.lax.stop_gradient(logits), batch["y"], hp)
        return values, state

    return Term(
        "confusion",
        apply,
        init=init,
        hparams={"temperature": temperature, "momentum": momentum},
        constraints={"temperature": "positive", "momentum": "unit"},
        eval_update=ema if update == "eval" else None,
        eval_split=split,
    )


# --- feature terms -------------------------------------------------------------------------------


def _feature(spec, name: str, side: str):
    feats = spec[1]
    if name not in feats:
        raise ConfigError(f"the {side} has no feature {name!r}; it has: {', '.join(sorted(feats))}")
    return feats[name]


REGRESSORS = ("conv", "conv_bn", "conv_bn_relu")
_BN_EPS = 1e-5  # PyTorch's BatchNorm default, as RepDistiller's ConvReg


def fitnet(*, student: str, teacher: str, regressor: str = "conv") -> Term:
    """FitNet hint (Romero et al. 2015): squared error between a learned regressor of a student
    feature and a teacher feature, per example the mean over the teacher feature's elements.

    The regressor starts with a 1x1 convolution for spatial features (NHWC /
    NLC), a linear map for vectors; its parameters are aux params trained with
    the student. ``regressor``:

    - ``"conv"``: the convolution (with a bias) alone;
    - ``"conv_bn"``: convolution, then BatchNorm (learned scale and offset);
    - ``"conv_bn_relu"``: convolution, BatchNorm, ReLU: RepDistiller's
      ``ConvReg`` for a same-size pair, whose teacher hint is a post-ReLU
      feature (so the regressor's output is non-negative as well).

    The BatchNorm normalises with the statistics of the run's own batch (over
    every axis but channels, biased variance, eps 1e-5): the mode ``ConvReg``
    is in whenever the hint is computed, since the hint exists only in
    training. No running averages are kept (nothing would read them). The
    convolution has no bias before a BatchNorm (the normalisation removes it).

    The teacher feature is average-pooled to the student's spatial size when
    they differ. RepDistiller's ``-b 100`` is weight 100.
    """
    check(regressor in REGRESSORS, f"fitnet: regressor must be one of {', '.join(REGRESSORS)}; got {regressor!r}")
    bn = regressor != "conv"
    relu = regressor == "conv_bn_relu"

    def init(key, s_spec, t_spec):
        fs, ft = _feature(s_spec, student, "student"), _feature(t_spec, teacher, "teacher")
        check(
            fs.ndim == ft.ndim,
            f"fitnet: student feature {student!r} has shape {fs.shape[1:]} and teacher "
            f"feature {teacher!r} {ft.shape[1:]}; pick features of the same rank",
        )
        c = ft.shape[-1]
        kernel = jax.nn.initializers.lecun_normal()(key, (fs.shape[-1], c), jnp.float32)
        if bn:
            return {"kernel": kernel, "scale": jnp.ones((c,), jnp.float32), "offset": jnp.zeros((c,), jnp.float32)}, {}
        return {"kernel": kernel, "bias": jnp.zeros((c,), jnp.float32)}, {}

    def apply(aux, state, s_out, t_out, batch, key, hp):
        f = s_out[1][student]
        shape = (1,) * (f.ndim - 1) + (-1,)
        projected = jnp.einsum("...c,cd->...d", f, aux["kernel"])
        if bn:
            axes = tuple(range(f.ndim - 1))
            mean = projected.mean(axes, keepdims=True)
            var = jnp.square(projected - mean).mean(axes, keepdims=True)
            projected = (projected - mean) * jax.lax.rsqrt(var + _BN_EPS)
            projected = projected * aux["scale"].reshape(shape) + aux["offset"].reshape(shape)
        else:
            projected = projected + aux["bias"].reshape(shape)
        if relu:
            projected = jax.nn.relu(projected)
        return features.fitnet_loss(projected, t_out[1][teacher]), state

    return Term(
        "fitnet", apply, init=init, needs_teacher=True, student_features=(student,), teacher_features=(teacher,)
    )


def at(*, student: tuple[str, ...], teacher: tuple[str, ...], p: float = 2.0) -> Term:
    """Attention transfer (Zagoruyko & Komodakis 2017), summed over the paired stages.

    Per pair: the squared difference of L2-normalised spatial maps
    ``mean_c |f|^p``, averaged over positions (:func:`jaxkd.features.at_loss`);
    the values of the pairs are summed, as RepDistiller sums its stages.
    RepDistiller uses p = 2 and weight 1000.
    """
    student, teacher = tuple(student), tuple(teacher)
    check(
        len(student) == len(teacher) and student,
        f"at needs as many student features as teacher features, got {student} and {teacher}",
    )

    def init(key, s_spec, t_spec):
        for a, b in zip(student, teacher):
            fs, ft = _feature(s_spec, a, "student"), _feature(t_spec, b, "teacher")
            check(
                fs.ndim in (3, 4) and ft.ndim == fs.ndim,
                f"at: features {a!r} {fs.shape[1:]} and {b!r} {ft.shape[1:]} must both be spatial maps",
            )
        return {}, {}

    def apply(aux, state, s_out, t_out, batch, key, hp):
        values = sum(features.at_loss(s_out[1][a], t_out[1][b], p=p) for a, b in zip(student, teacher))
        return values, state

    return Term("at", apply, init=init, needs_teacher=True, student_features=student, teacher_features=teacher)


def _pair_maps(s, t):
    """Student and teacher maps at the same spatial size: the larger pooled to the smaller (per axis)."""
    if s.ndim == 2:
        return s, t
    common = tuple(min(a, b) for a, b in zip(s.shape[1:-1], t.shape[1:-1]))
    return features.adaptive_avg_pool(s, common), features.adaptive_avg_pool(t, common)


def _check_pairs(kind, student, teacher):
    student, teacher = tuple(student), tuple(teacher)
    check(
        len(student) == len(teacher) and student,
        f"{kind} needs as many student features as teacher features, got {student} and {teacher}",
    )
    return student, teacher


def _channels(v, x):
    """A per-channel vector ``v`` shaped to broadcast against ``x`` ``[B, ..., C]``."""
    return jnp.reshape(v, (1,) * (x.ndim - 1) + (-1,))


def _uniform(key, shape, fan_in):
    bound = 1.0 / np.sqrt(fan_in)  # torch's default for conv/linear weights (kaiming_uniform with a = sqrt 5)
    return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


def vid(*, student: tuple[str, ...], teacher: tuple[str, ...], init_variance: float = 5.0) -> Term:
    """Variational information distillation (Ahn et al. 2019), summed over the paired layers.

    Per pair: a regressor ``μ = W3 ReLU(W2 ReLU(W1 s))`` of 1x1 convolutions
    without bias (``k → d → d → d``; a linear map for vectors) predicts the
    teacher feature ``t`` (the larger map adaptively pooled to the smaller);
    a learned per-channel variance ``σ²_c = softplus(θ_c) + 1e-5`` starts at
    ``init_variance`` (5). Per example the value is the Gaussian negative
    log-likelihood without its constant, averaged over channels and
    positions: ``mean_{c,p} ½[(μ − t)²/σ²_c + log σ²_c]`` (RepDistiller's
    ``VIDLoss``; its batch mean is the reference's ``torch.mean``).
    Weights are ``U(±1/√fan_in)`` as torch's default. SubDistill's
    baseline: weight = its ``λ_layer``, with KD and no CE.
    """
    student, teacher = _check_pairs("vid", student, teacher)
    check(init_variance > 1e-5, f"vid: init_variance must exceed 1e-5, got {init_variance}")
    theta0 = float(np.log(np.expm1(init_variance - 1e-5)))

    def init(key, s_spec, t_spec):
        aux = {}
        for i, (a, b) in enumerate(zip(student, teacher)):
            fs, ft = _feature(s_spec, a, "student"), _feature(t_spec, b, "teacher")
            check(fs.ndim == ft.ndim, f"vid: features {a!r} {fs.shape[1:]} and {b!r} {ft.shape[1:]} differ in rank")
            k, d = fs.shape[-1], ft.shape[-1]
            k1, k2, k3 = jax.random.split(jax.random.fold_in(key, i), 3)
            aux[str(i)] = {
                "w1": _uniform(k1, (k, d), k),
                "w2": _uniform(k2, (d, d), d),
                "w3": _uniform(k3, (d, d), d),
                "theta": jnp.full((d,), theta0, jnp.float32),
            }
        return aux, {}

    def apply(aux, state, s_out, t_out, batch, key, hp):
        values = 0.0
        for i, (a, b) in enumerate(zip(student, teacher)):
            p = aux[str(i)]
            s, t = _pair_maps(s_out[1][a], jax.lax.stop_gradient(t_out[1][b]))
            h = jax.nn.relu(jnp.einsum("...k,kd->...d", s, p["w1"]))
            h = jax.nn.relu(jnp.einsum("...d,de->...e", h, p["w2"]))
            mu = jnp.einsum("...d,de->...e", h, p["w3"])
            var = _channels(jax.nn.softplus(p["theta"]) + 1e-5, t)
            nll = 0.5 * (jnp.square(mu - t) / var + jnp.log(var))
            values = values + jnp.mean(nll.reshape(nll.shape[0], -1), axis=1)
        return values, state

    return Term(
        "vid",
        apply,
        init=init,
        needs_teacher=True,
        student_features=student,
        teacher_features=teacher,
        skip_unweighted=True,
    )


def skew_expm(w, *, order: int = 18, max_squarings: int = 12):
    """``expm(W − Wᵀ)``: an orthogonal matrix (in SO(n)) from an unconstrained square ``W``.

    torch's default orthogonal parametrisation of a square matrix. Computed
    by scaling and squaring: ``A = W − Wᵀ`` is scaled by ``2^-s`` to a
    1-norm of at most 2, its exponential summed as a Taylor polynomial of
    degree ``order`` (Horner; truncation below 1e-11 at that norm), then
    squared ``s`` times (``s`` at most ``max_squarings``: norms up to 8192).
    Orthogonal to float32 rounding (tested to 1e-5 after 100 optimiser
    steps); a fixed, unrolled graph compiles in a fraction of the time of
    ``jax.scipy.linalg.expm``'s Padé branches.
    """
    a = w - w.T
    eye = jnp.eye(a.shape[0], dtype=a.dtype)
    norm = jax.lax.stop_gradient(jnp.max(jnp.sum(jnp.abs(a), axis=0)))
    s = jnp.clip(jnp.ceil(jnp.log2(jnp.maximum(norm, 1e-30) / 2.0)), 0, max_squarings)
    x = a * jnp.exp2(-s)
    r = eye
    for j in range(order, 0, -1):
        r = eye + jnp.matmul(x, r) / j
    for i in range(max_squarings):
        r = jnp.where(i < s, jnp.matmul(r, r), r)
    return r


def layer_norm(x, eps: float = 1e-5):
    """LayerNorm over the last axis without scale or offset (biased variance, as torch's)."""
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps)


def vkd(*, student: tuple[str, ...], teacher: tuple[str, ...], beta: float = 1.0) -> Term:
    """VkD (Miles et al., CVPR 2024), as SubDistill's baseline: an orthogonal projection of pooled features.

    Per pair: ``s̄ = mean_p s ∈ R^k``, ``t̄ = LayerNorm(mean_p t) ∈ R^d``
    (no scale or offset), ``P ∈ R^{d×k}`` with orthonormal columns,
    ``P = (Q₀ expm(W − Wᵀ))[:, :k]`` (``Q₀`` a fixed random orthogonal matrix
    from the term's key, ``W`` learned from zero: torch's orthogonal
    parametrisation of a tall ``Linear(k → d, bias=False)``, which needs
    ``k ≤ d``). Per example the value is the smooth L1 loss (``beta``, torch's
    default 1) averaged over the ``d`` entries: ``mean_j huber(P s̄ − t̄)_j``.
    Summed over the pairs.
    """
    student, teacher = _check_pairs("vkd", student, teacher)
    check(beta > 0, f"vkd: beta must be positive, got {beta}")

    def init(key, s_spec, t_spec):
        aux, state = {}, {}
        from jaxkd.subspace import haar_orthogonal

        for i, (a, b) in enumerate(zip(student, teacher)):
            k = _feature(s_spec, a, "student").shape[-1]
            d = _feature(t_spec, b, "teacher").shape[-1]
            check(k <= d, f"vkd: the student feature {a!r} has {k} channels, more than the teacher's {b!r} ({d})")
            aux[str(i)] = jnp.zeros((d, d), jnp.float32)
            state[str(i)] = haar_orthogonal(jax.random.fold_in(key, i), d)
        return aux, state

    def apply(aux, state, s_out, t_out, batch, key, hp):
        values = 0.0
        for i, (a, b) in enumerate(zip(student, teacher)):
            s, t = s_out[1][a], jax.lax.stop_gradient(t_out[1][b])
            s_bar = s.reshape(s.shape[0], -1, s.shape[-1]).mean(1)
            t_bar = layer_norm(t.reshape(t.shape[0], -1, t.shape[-1]).mean(1))
            k = s_bar.shape[-1]
            proj = jnp.matmul(jax.lax.stop_gradient(state[str(i)]), skew_expm(aux[str(i)]))[:, :k]
            diff = jnp.abs(s_bar @ proj.T - t_bar)
            huber = jnp.where(diff < beta, 0.5 * diff**2 / beta, diff - 0.5 * beta)
            values = values + jnp.mean(huber, axis=-1)
        return values, state

    return Term(
        "vkd",
        apply,
        init=init,
        needs_teacher=True,
        student_features=student,
        teacher_features=teacher,
        decay_aux=False,
        skip_unweighted=True,
    )


def subdistill(
    *,
    student: tuple[str, ...],
    teacher: tuple[str, ...],
    basis: str = "prca_posdef",
    positions: int = 20,
    seed: int = 0,
    normalise: bool = True,
    momentum: float = 0.1,
) -> Term:
    """SubDistill's layer loss (Chormai et al., arXiv 2601.05913), summed over the paired layers.

    Before training (the term's pre-pass, :mod:`jaxkd.subspace`): at each
    teacher layer, activations and contexts (gradients of the subtask
    teacher's top-1 minus runner-up logit) at ``positions`` random spatial
    positions per training image (drawn from ``seed``), their mean ``μ`` and
    the ``basis`` (``prca_posdef``, ``prca``, ``pca``, ``gradpca``,
    ``random``, ``identity``). With ``k`` the student feature's channel
    count, ``U_k`` is the basis' first ``k`` columns and ``α = Σ_{j≤k}
    u_jᵀ Σ_a u_j`` the teacher's energy in them (``normalise=False``: α = 1).

    Per pair, per example (the larger map adaptively pooled to the smaller,
    ``h x w`` positions):

    * teacher side, fixed: ``t̂ = U_kᵀ (t − μ)``;
    * student side: ``ŝ = R (s − m)`` with ``m`` the batch mean of ``s``
      over examples and positions (Centering2D in training mode: no
      variance division, no affine; the running mean, momentum
      ``momentum``, is kept in the term's state as the reference keeps it)
      and ``R = R₀ expm(W − Wᵀ)`` exactly orthogonal (``R₀`` a fixed random
      orthogonal matrix from the term's key, ``W`` learned from zero: torch's
      orthogonal parametrisation with its trivialisation);
    * value ``Σ_{c≤k, p} (ŝ − t̂)² / (h · w · α)``.

    The batch mean of the values is the reference's ``L_l``. The objective
    of the paper: ``kd`` (T = 4) weight 1 plus this term weight
    ``λ_layer = 100``, no CE.
    """
    from jaxkd import subspace

    student, teacher = _check_pairs("subdistill", student, teacher)
    check(basis in subspace.BASES, f"subdistill: basis must be one of {', '.join(subspace.BASES)}; got {basis!r}")
    check(int(positions) == positions and positions >= 1, f"subdistill: positions must be >= 1, got {positions}")
    check(0 < momentum <= 1, f"subdistill: momentum must lie in (0, 1], got {momentum}")
    layers = tuple(dict.fromkeys(teacher))

    def prepass(ctx):
        key = jax.random.key(int(seed))
        rows = subspace.collect(ctx, layers, positions=int(positions), seed=int(seed))
        return {
            name: subspace.layer_basis(basis, a, c, jax.random.fold_in(key, 1000 + j))
            for j, (name, (a, c)) in enumerate(rows.items())
        }

    def init(key, s_spec, t_spec, constants):
        aux, state = {}, {}
        for i, (a, b) in enumerate(zip(student, teacher)):
            fs, ft = _feature(s_spec, a, "student"), _feature(t_spec, b, "teacher")
            k, d = fs.shape[-1], ft.shape[-1]
            check(fs.ndim == ft.ndim, f"subdistill: features {a!r} and {b!r} differ in rank")
            check(k <= d, f"subdistill: the student feature {a!r} has {k} channels, more than teacher {b!r}'s {d}")
            c = constants[b]
            alpha = jnp.sum(c["energies"][:k]) if normalise else jnp.float32(1.0)
            aux[str(i)] = jnp.zeros((k, k), jnp.float32)
            state[str(i)] = {
                "U": c["U"][:, :k],
                "mu": c["mu"],
                "alpha": alpha,
                "R0": subspace.haar_orthogonal(jax.random.fold_in(key, i), k),
                "running_mean": jnp.zeros((k,), jnp.float32),
            }
        return aux, state

    def apply(aux, state, s_out, t_out, batch, key, hp):
        values, new_state = 0.0, {}
        for i, (a, b) in enumerate(zip(student, teacher)):
            st = state[str(i)]
            s, t = _pair_maps(s_out[1][a], jax.lax.stop_gradient(t_out[1][b]))
            consts = jax.lax.stop_gradient((st["U"], st["mu"], st["alpha"], st["R0"]))
            u, mu, alpha, r0 = consts
            t_hat = jnp.einsum("...d,dk->...k", t - _channels(mu, t), u)
            m = jnp.mean(s.reshape(-1, s.shape[-1]), axis=0)
            r = r0 @ skew_expm(aux[str(i)])
            s_hat = jnp.einsum("...k,jk->...j", s - _channels(m, s), r)
            hw = int(np.prod(s.shape[1:-1]))
            err = jnp.square(s_hat - t_hat).reshape(s.shape[0], -1)
            values = values + jnp.sum(err, axis=1) / (hw * alpha)
            running = (1 - momentum) * st["running_mean"] + momentum * jax.lax.stop_gradient(m)
            new_state[str(i)] = {**st, "running_mean": running}
        return values, new_state

    return Term(
        "subdistill",
        apply,
        init=init,
        needs_teacher=True,
        student_features=student,
        teacher_features=teacher,
        decay_aux=False,
        skip_unweighted=True,
        prepass=prepass,
    )


# Term factories by kind. Float keyword arguments are sweepable hyper-parameters;
# the others (feature names, flags) are static options.
def untrained(
    *,
    model: str,
    in_shape: tuple[int, ...],
    widths: tuple[int, ...] | None = None,
    temperature: float = 4.0,
    dtype: str = "float32",
) -> Term:
    """Random-control distillation towards an untrained network: KD whose teacher is ``model`` at its random
    initialisation, drawn from the run's own term key and never trained (Mason-Williams et al.).

    The network lives in the term's state, so each run (each seed and grid point) has its own and the
    control can be a grid point of the same program as KD and the other controls. ``in_shape``: the
    dataset's input shape; the class count is the student's. The network runs in eval mode (BatchNorm with
    its initial statistics) on the student's batch. Needs no teacher.
    """
    check(temperature > 0, f"untrained.temperature must be positive, got {temperature}")
    in_shape = tuple(int(d) for d in in_shape)
    widths = None if widths is None else tuple(int(w) for w in widths)
    nets = {}

    def net(num_classes: int):
        if num_classes not in nets:
            from jaxkd.models import make_model

            nets[num_classes] = make_model(model, in_shape, num_classes, widths, dtype)
        return nets[num_classes]

    def init(key, s_spec, t_spec):
        del t_spec
        params, rest = net(int(s_spec[0].shape[-1])).init(key)
        return {}, {"params": params, "rest": rest}

    def apply(aux, state, s_out, t_out, batch, key, hp):
        logits = s_out[0]
        params, rest = jax.lax.stop_gradient((state["params"], state["rest"]))
        target = net(int(logits.shape[-1])).apply(params, rest, batch["x"], train=False)[0]
        return losses.kd_loss(logits, target.astype(logits.dtype), temperature=hp["temperature"]), state

    return Term(
        "untrained",
        apply,
        init=init,
        hparams={"temperature": temperature},
        constraints={"temperature": "positive"},
        skip_unweighted=True,
    )


# --- soft/hard phase schedules (Confusion Distillation) ------------------------------------------

PHASES = ("soft", "hard")


def phase_boundaries(phases, total_steps: int, steps_per_epoch: int) -> list[int]:
    """Step at which each segment after the first starts: the ratios scaled to the run.

    Rounded to whole epochs when the run has at least ``sum(phases)`` epochs,
    else to steps. ``[3, 3, 6, 3, 15]`` over 30 epochs of 20 steps gives
    ``[60, 120, 240, 300]``.
    """
    cum = np.cumsum(phases)[:-1] / np.sum(phases)
    unit = steps_per_epoch if total_steps // steps_per_epoch >= np.sum(phases) else 1
    return [int(round(c * total_steps / unit)) * unit for c in cum]


def soft_mask(step, boundaries) -> jax.Array:
    """1.0 in a soft segment (odd-numbered: hard, soft, hard, ...), else 0.0."""
    segment = jnp.sum(step >= jnp.asarray(boundaries, jnp.int32))
    return (segment % 2 == 1).astype(jnp.float32)


def gate_by_phase(term: Term, boundaries) -> Term:
    """``term`` active only in its phase's segments: its value times the phase mask.

    The state becomes ``{"inner": state, "step": int32}``; the counter advances
    once per training step. Both of the term's state updates, the per-step one
    and the evaluation-boundary one, follow one rule: they apply from the start
    of the term's first active segment on, in every later segment, active or
    not (before it, ``inner`` is returned unchanged). That is Confusion
    Distillation's schedule: its confusion matrix is updated after every epoch
    from the first soft phase on (Kang & Kim: epochs e ≥ 30 of 300), hard
    phases included.
    """
    soft = term.phase == "soft"
    first_active = boundaries[0] if soft else 0

    def init(key, s_spec, t_spec, *constants):
        aux, state = term.init(key, s_spec, t_spec, *constants)
        return aux, {"inner": state, "step": jnp.zeros((), jnp.int32)}

    def keep_until_active(started, new, old):
        return jax.tree.map(lambda a, b: jnp.where(started, a, b), new, old)

    def apply(aux, state, s_out, t_out, batch, key, hp):
        values, inner = term.apply(aux, state["inner"], s_out, t_out, batch, key, hp)
        m = soft_mask(state["step"], boundaries)
        m = m if soft else 1.0 - m
        inner = keep_until_active(state["step"] >= first_active, inner, state["inner"])  # this step is index step
        return values * m, {"inner": inner, "step": state["step"] + 1}

    eval_update = None
    if term.eval_update is not None:

        def eval_update(state, logits, labels, hp):
            new = term.eval_update(state["inner"], logits, labels, hp)
            new = keep_until_active(state["step"] > first_active, new, state["inner"])  # after step steps ran
            return {"inner": new, "step": state["step"]}

    return dataclasses.replace(term, init=init, apply=apply, eval_update=eval_update)


def eval_updates(terms: Mapping[str, Term], term_state, hp, logits: dict, data) -> dict:
    """Term state after an evaluation boundary (an EMA confusion matrix), from that evaluation's logits.

    ``logits`` maps each split to the student's eval-mode logits; a term's
    ``eval_update`` reads those of its ``eval_split`` and that split's labels.
    """
    term_state = dict(term_state)
    for name, term in terms.items():
        if term.eval_update is not None:
            s = term.eval_split
            term_hp = {k: hp[f"{name}.{k}"] for k in term.hparams}
            term_state[name] = term.eval_update(term_state[name], logits[s], data[f"y_{s}"], term_hp)
    return term_state


TERMS: dict[str, Callable[..., Term]] = {
    "ce": ce,
    "kd": kd,
    "dkd": dkd,
    "dist": dist,
    "rcd": rcd,
    "untrained": untrained,
    "confusion": confusion,
    "fitnet": fitnet,
    "at": at,
    "vid": vid,
    "vkd": vkd,
    "subdistill": subdistill,
}
TERMS.update(PEER_TERMS)  # SP, CC, RKD, PKT, NST, FSP, FT, AB, CRD (jaxkd.peer_terms)


def build_term(name: str, options: Mapping[str, Any]) -> tuple[Term, dict[str, float]]:
    """Build the term ``name`` of an objective from its options.

    ``options`` may hold ``kind`` (default: ``name``), ``weight`` and the
    factory's keyword arguments. Returns the term and its hyper-parameter
    values ``{"weight": w, **floats}``.
    """
    check(
        isinstance(options, Mapping),
        f"objective term {name!r} needs a group of options (weight, ...), "
        f"got {options!r}; set e.g. objective.{name}.weight=1",
    )
    options = dict(options)
    kind = options.pop("kind", name)
    if kind not in TERMS:
        raise ConfigError(f"unknown term {kind!r}; choose one of: {', '.join(sorted(TERMS))}")
    weight = options.pop("weight", 1.0)
    ramp = options.pop("ramp_steps", 0)
    phases = options.pop("phases", None)
    phase = options.pop("phase", None)
    if isinstance(phases, str):  # from --set objective.<term>.phases=3,3,6,3,15
        try:
            phases = tuple(float(v) for v in phases.strip("()[] ").split(",") if v.strip())
        except ValueError:
            raise ConfigError(f"{name}.phases must be comma-separated numbers, got {phases!r}") from None
    if phases is not None:
        check(
            isinstance(phases, (list, tuple)) and len(phases) >= 2 and all(float(p) > 0 for p in phases),
            f"{name}.phases must be at least two positive ratios (hard, soft, ...), got {phases!r}",
        )
        phases = tuple(float(p) for p in phases)
    check(phase is None or phase in PHASES, f"{name}.phase must be 'soft' or 'hard', got {phase!r}")
    check(phase is None or phases is not None, f"{name}.phase is set but {name}.phases is not; give both")
    check(float(ramp) == int(ramp) and int(ramp) >= 0, f"{name}.ramp_steps must be a non-negative integer, got {ramp}")
    factory = TERMS[kind]
    params = inspect.signature(factory).parameters
    for key in options:
        if key not in params:
            raise ConfigError(
                f"term {name!r} ({kind}) has no option {key!r}; valid: "
                f"{', '.join(['kind', 'weight', 'ramp_steps', 'phases', 'phase', *params])}"
            )
    try:  # every option reaches the factory; those it declares as hparams become sweepable values
        term = dataclasses.replace(factory(**options), ramp_steps=int(ramp), phases=phases, phase=phase or "soft")
    except TypeError as err:
        raise ConfigError(f"term {name!r} ({kind}): {err}") from None
    values = {"weight": float(weight), **{k: float(v) for k, v in term.hparams.items()}}
    check_value(f"{name}.weight", values["weight"], "nonneg")
    for k, c in term.constraints.items():
        check_value(f"{name}.{k}", values[k], c)
    return term, values
