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

import jax
import jax.numpy as jnp
import numpy as np

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
    with jax.enable_x64(True):
        r_T, r_D, r_S = jax.jit(lambda: _curves(p, ck_T, ck_S))()
        r_T, r_D, r_S = (np.asarray(x) for x in (r_T, r_D, r_S))
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
    ck_T = np.asarray([p0.teacher.steps])
    ck_S = log_checkpoints(p0.student.steps) if checkpoints_S is None else np.asarray(checkpoints_S)
    stack = lambda f: np.stack([np.asarray(f(p), np.float64) for p in problems])
    leaves = {
        "lam_T": stack(lambda p: p.lam_T), "lam_S": stack(lambda p: p.lam_S),
        "theta_sq": stack(lambda p: p.theta_sq), "sigma2": stack(lambda p: p.sigma2),
        "alpha": stack(lambda p: p.alpha), "g_T": stack(lambda p: p.teacher.gamma0),
        "g_S": stack(lambda p: p.student.gamma0),
    }

    def one(v):
        p = dataclasses.replace(
            p0, lam_T=v["lam_T"], lam_S=v["lam_S"], theta_sq=v["theta_sq"], sigma2=v["sigma2"], alpha=v["alpha"],
            teacher=_with_gamma(p0.teacher, v["g_T"]), student=_with_gamma(p0.student, v["g_S"]))
        return _curves(p, ck_T, ck_S)

    with jax.enable_x64(True):
        r_T, r_D, r_S = jax.jit(jax.vmap(one))({k: jnp.asarray(x) for k, x in leaves.items()})
        r_T, r_D, r_S = (np.asarray(x) for x in (r_T, r_D, r_S))
    return {"teacher": r_T[:, -1], "direct": r_D[:, -1], "distilled": r_S[:, -1], "distilled_curve": r_S,
            "steps_S": ck_S}


def _with_gamma(sgd: SGD, gamma0):
    """``sgd`` with a traced gamma0 (bypasses validation, which ran on the concrete value)."""
    new = object.__new__(SGD)
    for f in dataclasses.fields(SGD):
        object.__setattr__(new, f.name, getattr(sgd, f.name))
    object.__setattr__(new, "gamma0", gamma0)
    return new
