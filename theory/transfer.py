"""Teacher → student transfer: KD, weak-to-strong, self-distillation (exact curves).

:func:`transfer_curves` runs the three exact recursions of
:mod:`theory.exact` (teacher on N true labels, direct student on N true
labels with the teacher's SGD, distilled student on n teacher-labelled fresh
inputs) and returns them with the derived metrics (DER, PGR, W2S gain,
early-stopping point).

Everything is float64 (``jax.enable_x64`` is entered here, never on import).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from theory.exact import SGD, check_stable, distill_curve, log_checkpoints, train_curve


@dataclasses.dataclass(frozen=True)
class Transfer:
    """A teacher/student problem.

    Attributes:
      lam_T, lam_S: spectra ``[D]`` (zeros allowed).
      theta_sq: ``theta*²`` or prior variances ``[D]``.
      sigma2: label-noise variance.
      alpha: label mixing of the distilled student (1 = pure distillation).
      teacher, student: SGD of the teacher (also used by the direct student)
        and of the distilled student.
      kappa: fourth moment of feature coordinates (3 Gaussian, 1 Rademacher).
    """

    lam_T: np.ndarray
    lam_S: np.ndarray
    theta_sq: np.ndarray
    sigma2: float
    alpha: float
    teacher: SGD
    student: SGD
    kappa: float = 3.0

    def check(self):
        check_stable(self.lam_T, self.teacher, self.kappa, "teacher")
        check_stable(self.lam_S, self.teacher, self.kappa, "direct student")
        check_stable(self.lam_S, self.student, self.kappa, "student")


def _curves(p: Transfer, ck_T, ck_S):
    _, r_T, mom_T = train_curve(p.lam_T, p.theta_sq, p.sigma2, p.teacher, checkpoints=ck_T, kappa=p.kappa)
    _, r_D, _ = train_curve(p.lam_S, p.theta_sq, p.sigma2, p.teacher, checkpoints=ck_T, kappa=p.kappa)
    _, r_S, _ = distill_curve(p.lam_S, p.theta_sq, p.sigma2, p.alpha, mom_T, p.student, checkpoints=ck_S,
                              kappa=p.kappa)
    return r_T, r_D, r_S


def _split(p: Transfer):
    """``(array leaves, hashable static part)`` of a problem; gamma0 is a leaf so it can vary."""
    leaves = {"lam_T": p.lam_T, "lam_S": p.lam_S, "theta_sq": p.theta_sq, "sigma2": p.sigma2, "alpha": p.alpha,
              "g_T": p.teacher.gamma0, "g_S": p.student.gamma0}
    static = (_with_gamma(p.teacher, None), _with_gamma(p.student, None), float(p.kappa))
    return {k: np.asarray(v, np.float64) for k, v in leaves.items()}, static


@functools.partial(jax.jit, static_argnames=("static", "ck_T", "ck_S", "batched"))
def _compiled(v, static, ck_T, ck_S, batched):
    sgd_T, sgd_S, kappa = static

    def one(v):
        p = Transfer(lam_T=v["lam_T"], lam_S=v["lam_S"], theta_sq=v["theta_sq"], sigma2=v["sigma2"],
                     alpha=v["alpha"], teacher=_with_gamma(sgd_T, v["g_T"]), student=_with_gamma(sgd_S, v["g_S"]),
                     kappa=kappa)
        return _curves(p, np.asarray(ck_T), np.asarray(ck_S))

    return jax.vmap(one)(v) if batched else one(v)


def transfer_curves(p: Transfer, *, checkpoints_T=None, checkpoints_S=None, validate=True) -> dict:
    """Exact expected excess risks (no ½) of teacher, direct and distilled student.

    Returns a dict of numpy arrays: ``steps_T``, ``teacher``, ``direct`` (at the
    teacher's checkpoints), ``steps_S``, ``distilled`` (at the student's
    checkpoints), and scalars ``teacher_final``, ``direct_final``,
    ``distilled_final``, ``DER`` (direct / distilled, final), ``PGR``
    ((R_T - R_T2S) / (R_T - R_direct)), ``w2s_gain`` (R_T - R_T2S, > 0 means
    weak-to-strong generalisation), ``best_n`` and ``distilled_best`` (the
    early-stopping optimum over the student's checkpoints).
    """
    if validate:
        p.check()
    ck_T = log_checkpoints(p.teacher.steps) if checkpoints_T is None else np.asarray(checkpoints_T)
    ck_S = log_checkpoints(p.student.steps) if checkpoints_S is None else np.asarray(checkpoints_S)
    leaves, static = _split(p)
    with jax.enable_x64(True):
        out = _compiled(leaves, static, tuple(int(c) for c in ck_T), tuple(int(c) for c in ck_S), False)
        r_T, r_D, r_S = (np.asarray(x) for x in out)
    return summarize_curves(ck_T, r_T, r_D, ck_S, r_S)


def summarize_curves(ck_T, r_T, r_D, ck_S, r_S) -> dict:
    """Derived metrics from the three curves (see :func:`transfer_curves`)."""
    t, d, s = float(r_T[-1]), float(r_D[-1]), float(r_S[-1])
    best = int(np.argmin(r_S))
    return {
        "steps_T": ck_T, "teacher": r_T, "direct": r_D, "steps_S": ck_S, "distilled": r_S,
        "teacher_final": t, "direct_final": d, "distilled_final": s,
        "DER": d / s if s > 0 else float("inf"),
        "PGR": (t - s) / (t - d) if t != d else float("nan"),
        "w2s_gain": t - s,
        "best_n": int(ck_S[best]), "distilled_best": float(r_S[best]),
    }


def transfer_grid(problems: list[Transfer], *, checkpoints_S=None) -> dict:
    """Final risks for many problems of equal shapes as ONE vmapped program.

    Problems must share D, the SGD objects' static parts (steps, batch,
    schedule, K) and kappa; spectra, theta_sq, sigma2, alpha and gamma0 may
    differ. Returns ``{"teacher", "direct", "distilled": [P], "distilled_curve": [P, C]}``.
    """
    for p in problems:
        p.check()
    p0 = problems[0]
    ck_T = (int(p0.teacher.steps),)
    ck_S = log_checkpoints(p0.student.steps) if checkpoints_S is None else np.asarray(checkpoints_S)
    ck_S = tuple(int(c) for c in ck_S)
    split = [_split(p) for p in problems]
    static = split[0][1]
    if any(s != static for _, s in split):
        raise ValueError("transfer_grid problems must share steps, batch, schedule, K and kappa")
    n = len(problems)
    n_dev = jax.device_count()
    padded = -(-n // n_dev) * n_dev  # pad to a multiple of the device count, then shard problems
    leaves = {k: np.stack([v[k] for v, _ in split] + [split[-1][0][k]] * (padded - n)) for k in split[0][0]}
    with jax.enable_x64(True):
        if n_dev > 1:
            mesh = jax.make_mesh((n_dev,), ("problem",), axis_types=(AxisType.Auto,))
            leaves = jax.device_put(leaves, NamedSharding(mesh, P("problem")))
        out = _compiled(leaves, static, ck_T, ck_S, True)
        r_T, r_D, r_S = (np.asarray(x)[:n] for x in out)
    return {"teacher": r_T[:, -1], "direct": r_D[:, -1], "distilled": r_S[:, -1], "distilled_curve": r_S,
            "steps_S": np.asarray(ck_S)}


def _with_gamma(sgd: SGD, gamma0):
    """``sgd`` with a traced gamma0 (bypasses validation, which ran on the concrete value)."""
    new = object.__new__(SGD)
    for f in dataclasses.fields(SGD):
        object.__setattr__(new, f.name, getattr(sgd, f.name))
    object.__setattr__(new, "gamma0", gamma0)
    return new
