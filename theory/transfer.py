"""Teacher → student transfer: KD, weak-to-strong, self-distillation (exact curves).

:func:`transfer_curves` runs the three exact recursions of
:mod:`theory.exact` (teacher on N true labels, direct student on N true
labels with the teacher's SGD, distilled student on n teacher-labelled fresh
inputs) and returns them with the derived metrics (DER, PGR, W2S gain,
early-stopping point).

Two conventions for excess risk, both without the paper's ½ (see
:data:`CONVENTIONS`): over f* (the curves and ``*_final``, ``DER``), and the
paper's, over the best model of each class (``*_over_best``,
``DER_over_best``; §3: ``E_ν(w) = R_ν(w) - R_ν(w_ν*)``, and for the distilled
student ``R_T2S(w) - R_T2S(w_T2S*)``, the best transfer solution from the
optimal teacher). They coincide when both models have full rank and differ
for rank-deficient ones (Theorem 2). PGR uses risks, so it is the same in both.

Everything is float64 (``jax.enable_x64`` is entered here, never on import).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from theory.exact import SGD, check_stable, checkpoints_for, distill_curve, train_curve

CONVENTIONS = {
    "over_f_star": "excess risk over f*: E[(f - f*)^2] over a fresh input, no 1/2; includes the part of f* a "
    "model cannot represent",
    "over_best": "the paper's excess risk (arXiv 2606.01292 §3), no 1/2: over the best model in the class for the "
    "teacher and the direct student, and over the best transfer solution (the student fitted to the "
    "optimal teacher's labels) for the distilled student",
}
PGR_MIN_RELATIVE_GAP = 0.01


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


def best_in_class(p: Transfer) -> dict:
    """Risks (over f*, no ½) of the reference solutions of the paper's excess risks.

    Diagonal case: the best teacher and direct student fit f* on the
    directions they see, so ``R(w*) = Σ_{lam_i = 0} theta*_i²``. The best
    transfer solution ``w_T2S*`` fits the labels ``alpha f_T* + (1 - alpha) y``
    of the optimal teacher on the student's directions; on a direction the
    student sees and the teacher does not it recovers ``(1 - alpha) theta*_i``,
    so ``R_T2S(w_T2S*) = R_S(w_S*) + alpha² Σ_{lam_S > 0, lam_T = 0} theta*_i²``
    (Lemma 2's alignment bias at alpha = 1).

    Returns ``{"teacher", "direct", "distilled"}``. Prior-averaged when
    ``theta_sq`` holds prior variances.

    References: arXiv 2606.01292 §3 (risks), Lemma 2.
    """
    lam_T, lam_S, theta_sq = (np.asarray(x, np.float64) for x in (p.lam_T, p.lam_S, p.theta_sq))
    direct = float(np.sum(theta_sq[lam_S == 0]))
    bias = float(np.sum(theta_sq[(lam_S > 0) & (lam_T == 0)]))
    return {
        "teacher": float(np.sum(theta_sq[lam_T == 0])),
        "direct": direct,
        "distilled": direct + float(p.alpha) ** 2 * bias,
    }


def pgr(r_T: float, r_S: float, r_T2S: float) -> tuple[float, str | None]:
    """Performance gap recovered ``(R_T - R_T2S) / (R_T - R_S)`` and, when it is not
    reported (NaN), why.

    PGR measures how much of the gap between a weak teacher and a strong
    ceiling (the student trained on true labels) the distilled student
    recovers. It is reported only when that gap exists: the direct student's
    risk is below the teacher's by at least ``PGR_MIN_RELATIVE_GAP`` of the
    teacher's risk. Otherwise (self-distillation, where the gap is 0, or a
    student weaker than its teacher, or a gap so small that the ratio
    explodes) it is NaN with the reason.

    References: Burns et al. 2023; arXiv 2606.01292 §3; docs/papers.md §4.3.
    """
    gap = r_T - r_S
    if gap <= 0:
        return float("nan"), (
            "undefined: the direct student is not better than the teacher (R_S >= R_T), so there "
            "is no weak-to-strong gap to recover"
        )
    if gap < PGR_MIN_RELATIVE_GAP * r_T:
        return float("nan"), (
            f"not reported: the direct student's risk is within {PGR_MIN_RELATIVE_GAP:.0%} of the "
            "teacher's, and PGR would divide by that near-zero gap"
        )
    return (r_T - r_T2S) / gap, None


def _curves(p: Transfer, ck_T, ck_S):
    _, r_T, mom_T = train_curve(p.lam_T, p.theta_sq, p.sigma2, p.teacher, checkpoints=ck_T, kappa=p.kappa)
    _, r_D, _ = train_curve(p.lam_S, p.theta_sq, p.sigma2, p.teacher, checkpoints=ck_T, kappa=p.kappa)
    _, r_S, _ = distill_curve(p.lam_S, p.theta_sq, p.sigma2, p.alpha, mom_T, p.student, checkpoints=ck_S, kappa=p.kappa)
    return r_T, r_D, r_S


def _split(p: Transfer):
    """``(array leaves, hashable static part)`` of a problem; gamma0 is a leaf so it can vary."""
    leaves = {
        "lam_T": p.lam_T,
        "lam_S": p.lam_S,
        "theta_sq": p.theta_sq,
        "sigma2": p.sigma2,
        "alpha": p.alpha,
        "g_T": p.teacher.gamma0,
        "g_S": p.student.gamma0,
    }
    static = (_with_gamma(p.teacher, None), _with_gamma(p.student, None), float(p.kappa))
    return {k: np.asarray(v, np.float64) for k, v in leaves.items()}, static


@functools.partial(jax.jit, static_argnames=("static", "ck_T", "ck_S", "batched"))
def _compiled(v, static, ck_T, ck_S, batched):
    sgd_T, sgd_S, kappa = static

    def one(v):
        p = Transfer(
            lam_T=v["lam_T"],
            lam_S=v["lam_S"],
            theta_sq=v["theta_sq"],
            sigma2=v["sigma2"],
            alpha=v["alpha"],
            teacher=_with_gamma(sgd_T, v["g_T"]),
            student=_with_gamma(sgd_S, v["g_S"]),
            kappa=kappa,
        )
        return _curves(p, np.asarray(ck_T), np.asarray(ck_S))

    return jax.vmap(one)(v) if batched else one(v)


def transfer_curves(p: Transfer, *, checkpoints_T=None, checkpoints_S=None, validate=True) -> dict:
    """Exact expected excess risks (no ½) of teacher, direct and distilled student.

    Args:
      checkpoints_T, checkpoints_S: report steps of the teacher (and direct
        student) and of the distilled student, ending at the run's ``steps``
        (default log-spaced; :func:`theory.exact.checkpoints_for`).

    Returns a dict: arrays ``steps_T``, ``teacher``, ``direct`` (at the
    teacher's checkpoints), ``steps_S``, ``distilled`` (at the student's
    checkpoints), all over f*; scalars ``teacher_final``, ``direct_final``,
    ``distilled_final`` and ``DER`` (direct / distilled, final) over f*; the
    paper's convention ``teacher_final_over_best``, ``direct_final_over_best``,
    ``distilled_final_over_best``, ``DER_over_best`` and the reference risks
    ``best_in_class`` (:func:`best_in_class`); ``PGR`` ((R_T - R_T2S) /
    (R_T - R_direct), NaN where :func:`pgr` does not report it, with
    ``PGR_note``); ``w2s_gain`` (R_T - R_T2S, > 0 means weak-to-strong
    generalisation); ``best_n`` and ``distilled_best`` (the early-stopping
    optimum over the student's checkpoints). A DER whose denominator is 0 is NaN.
    """
    ck_T = checkpoints_for(p.teacher, checkpoints_T, "checkpoints_T")
    ck_S = checkpoints_for(p.student, checkpoints_S, "checkpoints_S")
    if validate:
        p.check()
    leaves, static = _split(p)
    with jax.enable_x64(True):
        out = _compiled(leaves, static, tuple(int(c) for c in ck_T), tuple(int(c) for c in ck_S), False)
        r_T, r_D, r_S = (np.asarray(x) for x in out)
    return summarize_curves(ck_T, r_T, r_D, ck_S, r_S, best=best_in_class(p))


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")


def summarize_curves(ck_T, r_T, r_D, ck_S, r_S, *, best: dict | None = None) -> dict:
    """Derived metrics from the three curves (see :func:`transfer_curves`); ``best`` from
    :func:`best_in_class` (default: zeros, full-rank models)."""
    t, d, s = float(r_T[-1]), float(r_D[-1]), float(r_S[-1])
    best = best or {"teacher": 0.0, "direct": 0.0, "distilled": 0.0}
    over = {k: v - best[k] for k, v in (("teacher", t), ("direct", d), ("distilled", s))}
    i = int(np.argmin(r_S))
    gain_ratio, note = pgr(t, d, s)
    return {
        "steps_T": ck_T,
        "teacher": r_T,
        "direct": r_D,
        "steps_S": ck_S,
        "distilled": r_S,
        "teacher_final": t,
        "direct_final": d,
        "distilled_final": s,
        "DER": _ratio(d, s),
        "best_in_class": dict(best),
        "teacher_final_over_best": over["teacher"],
        "direct_final_over_best": over["direct"],
        "distilled_final_over_best": over["distilled"],
        "DER_over_best": _ratio(over["direct"], over["distilled"]),
        "PGR": gain_ratio,
        "PGR_note": note,
        "w2s_gain": t - s,
        "best_n": int(ck_S[i]),
        "distilled_best": float(r_S[i]),
    }


def transfer_grid(problems: list[Transfer], *, checkpoints_S=None) -> dict:
    """Final risks for many problems of equal shapes as ONE vmapped program.

    Problems must share D, the SGD objects' static parts (steps, batch,
    schedule, K) and kappa; spectra, theta_sq, sigma2, alpha and gamma0 may
    differ. Returns ``{"teacher", "direct", "distilled": [P], "distilled_curve": [P, C]}``
    over f*, and ``{"teacher", "direct", "distilled"}_over_best`` ``[P]`` and
    ``DER_over_best`` in the paper's convention (see :data:`CONVENTIONS`).
    """
    if not problems:
        raise ValueError("transfer_grid needs at least one problem")
    for p in problems:
        p.check()
    p0 = problems[0]
    ck_T = (int(p0.teacher.steps),)
    ck_S = tuple(int(c) for c in checkpoints_for(p0.student, checkpoints_S, "checkpoints_S"))
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
    floors = [best_in_class(p) for p in problems]
    out = {
        "teacher": r_T[:, -1],
        "direct": r_D[:, -1],
        "distilled": r_S[:, -1],
        "distilled_curve": r_S,
        "steps_S": np.asarray(ck_S),
    }
    for k in ("teacher", "direct", "distilled"):
        out[f"{k}_over_best"] = out[k] - np.array([f[k] for f in floors])
    with np.errstate(divide="ignore", invalid="ignore"):
        out["DER_over_best"] = np.where(
            out["distilled_over_best"] > 0, out["direct_over_best"] / out["distilled_over_best"], np.nan
        )
    return out


def _with_gamma(sgd: SGD, gamma0):
    """``sgd`` with a traced gamma0 (bypasses validation, which ran on the concrete value)."""
    new = object.__new__(SGD)
    for f in dataclasses.fields(SGD):
        object.__setattr__(new, f.name, getattr(sgd, f.name))
    object.__setattr__(new, "gamma0", gamma0)
    return new
