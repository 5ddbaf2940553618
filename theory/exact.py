"""Exact expected excess-risk curves of one-pass SGD: O(D) per step.

Derivation (diagonal, spectrally compatible case; symbols in
:mod:`theory.spectra`). With error ``e = u - theta*`` a mini-batch SGD step on
labels ``y = <theta*, z> + eps`` reads, in function space,

    e <- e - gamma * lam ⊙ mean_b((<e, z_b> - eps_b) z_b).

For independent unit-variance coordinates with fourth moment ``kappa``
(3 for Gaussian, 1 for Rademacher), ``E[z_i² <e, z>²] = tr(M) + (kappa-1) M_ii``
with ``M = E[e eᵀ]``, so the diagonal ``m_i = E[e_i²]`` obeys the closed
recursion (off-diagonal entries never feed back):

    m_i <- a_i m_i + q_i Σ_j m_j + r_i,
    a_i = 1 - 2γλ_i + γ²λ_i² (1 + (kappa-2)/B),  q_i = γ²λ_i²/B,  r_i = γ²λ_i² σ²/B.

The mean obeys ``E[e] <- (1 - γλ) ⊙ E[e]``; only ``s_i = theta*_i E[e_i]``
is needed, and every quantity depends on theta* only through
``theta_sq = theta*²``, so passing prior variances gives prior-averaged risks.

Distillation (phase 2): the student sees ``ŷ = alpha f_T(z) + (1-alpha) y``.
With the teacher's final error ``e_T`` fixed, ``d = e_S - alpha e_T`` obeys the
same recursion with noise variance ``(1-alpha)² σ²`` and start
``d_0 = -theta* - alpha e_T``; the cross moment ``c_i = E[d_i e_T,i]`` decays
by ``(1 - γλ_S,i)`` per step. The student's excess risk is
``Σ_i m_d,i + 2 alpha c_i + alpha² m_T,i``.

Conventions: excess risk is ``E[(f - f*)²]`` over a fresh z, **without** the
paper's ½; it includes directions a model cannot see (``lam_i = 0``), so it is
the excess over f*, not over the best model in the class (for that, see
:func:`theory.transfer.best_in_class`). Steps are counted from t = 1; the step
size of step t is set by :class:`SGD`'s schedule (``SCHEDULES``).

References: Wu, Zhang, Zhang, Fang 2026 (arXiv 2606.01292), Algorithm 1,
App. A (operators Â_t, V_t); Lemma 1; Theorem 1.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import optimize

from jaxkd.errors import ConfigError, check

SCHEDULES = {
    "constant": "gamma0 at every step",
    "step_decay": "the theory's gamma0 · 2^-floor(t/K), K = steps / log2(steps) unless given (Algorithm 1)",
    "flat_then_decay": "the paper's experiments: gamma0 for t <= steps/2, then gamma0 · 2^-floor((t - steps/2)/K), "
    "K = ln(steps/2) unless given (App. E)",
}


@dataclasses.dataclass(frozen=True)
class SGD:
    """One-pass mini-batch SGD from zero.

    Attributes:
      gamma0: initial step size (> 0).
      steps: number of SGD steps H (each sees ``batch`` fresh samples).
      batch: batch size B.
      schedule: one of :data:`SCHEDULES`: ``"constant"``; ``"step_decay"``, the
        theory's ``gamma0 · 2^-floor(t/K)`` (Algorithm 1); ``"flat_then_decay"``,
        the paper's experimental schedule, ``gamma0`` for ``t <= H/2`` and then
        ``gamma0 · 2^-floor((t - H/2)/K)`` (App. E: "halved every log(H/2) steps";
        the log's base is not given, the natural log is used).
      K: decay interval in steps: the step size halves every K steps (need not
        be an integer). Defaults: ``H / log2 H`` (step decay), ``ln(H/2)``
        (flat then decay, at least 1).

    References: arXiv 2606.01292, Algorithm 1 (step decay), App. E (experiments).
    """

    gamma0: float
    steps: int
    batch: int = 1
    schedule: str = "constant"
    K: float | None = None

    def __post_init__(self):
        check(self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        check(np.isfinite(self.gamma0) and self.gamma0 > 0, f"gamma0 must be positive, got {self.gamma0}")
        check(int(self.steps) == self.steps and self.steps >= 1, f"steps must be a positive integer, got {self.steps}")
        check(int(self.batch) == self.batch and self.batch >= 1, f"batch must be a positive integer, got {self.batch}")
        check(self.K is None or self.K > 0, f"K must be positive, got {self.K}")

    @property
    def decay_interval(self) -> float:
        """K: the step size halves every K steps once decay has started (inf: never)."""
        if self.schedule == "constant":
            return math.inf
        if self.K is not None:
            return float(self.K)
        if self.schedule == "flat_then_decay":
            return max(1.0, math.log(self.steps / 2)) if self.steps > 2 else 1.0
        return self.steps / math.log2(self.steps) if self.steps > 1 else 1.0

    @property
    def decay_start(self) -> float:
        """t0: steps ``t <= t0`` use ``gamma0``; after it the level is ``floor((t - t0) / K)``."""
        return self.steps / 2 if self.schedule == "flat_then_decay" else 0.0

    def level(self, t) -> np.ndarray:
        """Number of halvings at step ``t`` (1-based), numpy: ``max(0, floor((t - t0) / K))``."""
        t = np.asarray(t, np.float64)
        if self.schedule == "constant":
            return np.zeros(t.shape, np.int64)
        return np.maximum(0.0, np.floor((t - self.decay_start) / self.decay_interval)).astype(np.int64)

    def gamma(self, t):
        """Step size of step ``t`` (1-based), jnp (the same formula as :meth:`level`)."""
        if self.schedule == "constant":
            return jnp.full(jnp.shape(t), self.gamma0, jnp.float64)
        lev = jnp.maximum(0.0, jnp.floor((t - self.decay_start) / self.decay_interval))
        return self.gamma0 * jnp.exp2(-lev)


class Moments(NamedTuple):
    """Per-coordinate expected moments of a trained model's error ``e = u - theta*``.

    ``m = E[e²]``, ``s = theta* ⊙ E[e]`` (prior-averaged when theta_sq is a
    prior variance). ``risk = Σ m``.
    """

    m: jax.Array
    s: jax.Array


def stability_sum(lam, gamma, batch, kappa=3.0) -> float:
    """``Σ q_i / (1 - |a_i|)``: the recursion at step size ``gamma`` contracts iff every
    ``|a_i| < 1`` and this sum is < 1 (Perron root of ``diag(a) + q 1ᵀ`` below 1; with
    some ``a_i < 0`` the condition is sufficient). ``inf`` when a direction expands."""
    lam = np.asarray(lam, np.float64)
    x = gamma * lam[lam > 0]
    c = 1 + (kappa - 2) / batch
    a = 1 - 2 * x + c * x**2
    # 1 - |a| without cancellation: x (2 - c x) where a >= 0, so tiny x stays finite.
    gap = np.where(a >= 0, 2 - c * x, 2 - 2 * x + c * x**2)
    if np.any(gap <= 0):
        return math.inf
    ratio = np.where(a >= 0, x / (batch * gap), x**2 / (batch * gap))
    return float(np.sum(ratio))


def max_stable_gamma(lam, batch, kappa=3.0) -> float:
    """Largest step size for which :func:`stability_sum` < 1 (a root of ``stability_sum - 1``).

    Exact for Gaussian features (every ``a_i > 0``); a safe lower bound when
    some ``a_i < 0`` (Rademacher, large steps).
    """
    hi = 4.0 / max(float(np.max(lam)), 1e-300)  # |a_i| >= 1 there: the sum is inf

    def excess(g):
        return min(stability_sum(lam, g, batch, kappa), 2.0) - 1.0

    g = optimize.brentq(excess, 0.0, hi, xtol=1e-15 * hi, rtol=4 * np.finfo(float).eps)
    while excess(g) >= 0:  # brentq may land on the unstable side of the boundary
        g = np.nextafter(g, 0.0)
    return float(g)


def check_stable(lam, sgd: SGD, kappa=3.0, who="model") -> None:
    """One-line ConfigError when ``sgd.gamma0`` makes the recursion diverge."""
    if stability_sum(lam, sgd.gamma0, sgd.batch, kappa) >= 1:
        raise ConfigError(
            f"{who}: gamma0={sgd.gamma0:g} makes the SGD second-moment recursion diverge; "
            f"use gamma0 < {max_stable_gamma(lam, sgd.batch, kappa):.4g}"
        )


def log_checkpoints(steps: int, num: int = 60) -> np.ndarray:
    """Distinct log-spaced step counts in [1, steps], always including ``steps``."""
    pts = np.unique(np.round(np.logspace(0, np.log10(steps), num)).astype(np.int64))
    return np.unique(np.concatenate([pts, [steps]]))


def checkpoints_for(sgd: SGD, checkpoints=None, who: str = "checkpoints") -> np.ndarray:
    """Validated report steps of a run of ``sgd.steps`` steps (default: log-spaced).

    Checkpoints must be strictly increasing integers in ``1..steps`` and end at
    ``steps``: ``steps`` is the run's length, checkpoints only say where to
    report, and the final value (and the moments a student inherits) is the
    one at ``steps``. One-line :class:`ConfigError` otherwise.
    """
    if checkpoints is None:
        return log_checkpoints(sgd.steps)
    ck = np.asarray(checkpoints)
    check(ck.ndim == 1 and ck.size >= 1, f"{who} must be a non-empty list of step counts")
    check(
        np.issubdtype(ck.dtype, np.number) and np.all(np.isfinite(ck)) and np.all(ck == np.round(ck)),
        f"{who} must be whole step counts, got {ck.tolist()}",
    )
    ck = ck.astype(np.int64)
    check(bool(np.all(np.diff(ck) > 0)), f"{who} must be strictly increasing, got {ck.tolist()}")
    check(ck[0] >= 1, f"{who} must be >= 1 (steps are counted from 1), got {int(ck[0])}")
    check(
        ck[-1] <= sgd.steps,
        f"{who} go beyond the run's steps={sgd.steps} (largest {int(ck[-1])}); "
        f"raise steps or drop the later checkpoints",
    )
    check(
        ck[-1] == sgd.steps,
        f"{who} must end at the run's steps={sgd.steps} (last is {int(ck[-1])}); "
        f"steps sets the run's length, checkpoints only where to report",
    )
    return ck


def _intervals(sgd: SGD, checkpoints) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split steps 1..max(checkpoints) into intervals of constant step size ending at every
    checkpoint and every decay boundary. Returns ``(lengths, decay_level, is_checkpoint, ends)``."""
    ck = np.asarray(checkpoints, np.int64)
    last = int(ck[-1])
    changes = np.zeros(0, np.int64)
    K = sgd.decay_interval
    if math.isfinite(K):
        # Level j starts near t0 + jK; test the integers around each such point with level() itself,
        # so the boundaries are exactly where SGD.gamma (the Monte Carlo schedule) changes.
        if (last - sgd.decay_start) / K < last:
            j = np.arange(1, int((last - sgd.decay_start) / K) + 2)
            near = np.ceil(sgd.decay_start + j * K).astype(np.int64)[:, None] + np.arange(-2, 2)[None, :]
            near = np.unique(near[(near >= 1) & (near < last)])
        else:  # K < 1: a new level at almost every step
            near = np.arange(1, last)
        changes = near[sgd.level(near + 1) != sgd.level(near)]  # last step of a level
    ends = np.union1d(ck, changes)
    starts = np.concatenate([[0], ends[:-1]])
    return ends - starts, sgd.level(starts + 1), np.isin(ends, ck), ends


_UNROLL = 8


def _run(lam, sgd: SGD, kappa, sigma2_eff, m0, vecs0, checkpoints):
    """Run the m-recursion and decay ``vecs0`` ``[k, D]`` by ``(1 - γλ)`` per step.

    Steps are grouped into intervals of constant step size (see
    :func:`_intervals`); inside one the update is ``m <- a m + q (Σm + σ²)``
    with fixed ``a, q``, fused with the next trace and unrolled; ``vecs``
    decay in closed form per interval. Returns ``(Σm at checkpoints [C],
    Σvecs at checkpoints [C, k], final m, final vecs)``.
    """
    lam = jnp.asarray(lam, jnp.float64)
    B = sgd.batch
    c_a = 1.0 + (kappa - 2.0) / B
    lengths, decay, record, _ = _intervals(sgd, checkpoints)

    def steps(carry, a, q_noise, q, n):
        def one(c):
            m, _ = c
            m = a * m + q * (c[1] + sigma2_eff)
            return m, jnp.sum(m)

        def block(_, c):
            for _ in range(_UNROLL):
                c = one(c)
            return c

        carry = jax.lax.fori_loop(0, n // _UNROLL, block, carry)
        return jax.lax.fori_loop(0, n % _UNROLL, lambda _, c: one(c), carry)

    def interval(carry, xs):
        m, tr, vecs = carry
        n, j = xs
        g = sgd.gamma0 * jnp.exp2(-j.astype(jnp.float64))
        x = g * lam
        a = 1.0 - 2.0 * x + c_a * x * x
        q = x * x / B
        m, tr = steps((m, tr), a, None, q, n)
        base = 1.0 - x
        mag = jnp.abs(base) ** n.astype(jnp.float64)
        sign = jnp.where((base < 0) & (n % 2 == 1), -1.0, 1.0)
        vecs = vecs * (mag * sign)[None, :]
        return (m, tr, vecs), (tr, jnp.sum(vecs, axis=-1))

    xs = (jnp.asarray(lengths, jnp.int32), jnp.asarray(decay, jnp.int32))
    (m, _, vecs), (trs, sums) = jax.lax.scan(interval, (m0, jnp.sum(m0), vecs0), xs)
    keep = np.flatnonzero(record)
    return trs[keep], sums[keep], m, vecs


def _as_f64(x):
    return jnp.asarray(x, jnp.float64)


def train_curve(lam, theta_sq, sigma2, sgd: SGD, *, checkpoints=None, kappa=3.0):
    """Expected excess risk of SGD on true labels (teacher or direct student).

    Args:
      lam: spectrum ``[D]``.
      theta_sq: ``theta*²`` (or prior variances) ``[D]``.
      sigma2: label-noise variance.
      sgd: the optimiser.
      checkpoints: increasing step counts at which to report, ending at
        ``sgd.steps`` (default log-spaced; see :func:`checkpoints_for`).
      kappa: fourth moment of the feature coordinates (3 Gaussian, 1 Rademacher).

    Returns:
      ``(steps [C], risk [C], final Moments)``. Call inside
      ``jax.enable_x64(True)`` (done by :func:`transfer_curves`).
    """
    ck = checkpoints_for(sgd, checkpoints)
    theta_sq = _as_f64(theta_sq)
    trs, sums, m, vecs = _run(lam, sgd, kappa, sigma2, theta_sq, (-theta_sq)[None], ck)
    return ck, trs, Moments(m=m, s=vecs[0])


def distill_curve(lam_S, theta_sq, sigma2, alpha, teacher: Moments, sgd: SGD, *, checkpoints=None, kappa=3.0):
    """Expected excess risk of a student trained on ``alpha f_T + (1 - alpha) y``.

    Args:
      lam_S: the student's spectrum.
      teacher: the teacher's final :class:`Moments` (from :func:`train_curve`
        or a previous :func:`distill_curve`, for repeated self-distillation).
      alpha: label mixing weight; 1 = pure distillation.

    Returns:
      ``(steps [C], risk [C], final student Moments)``.
    """
    ck = checkpoints_for(sgd, checkpoints)
    theta_sq = _as_f64(theta_sq)
    m_T, s_T = _as_f64(teacher.m), _as_f64(teacher.s)
    m_d0 = theta_sq + 2 * alpha * s_T + alpha**2 * m_T  # E[(θ* + α e_T)²]
    c0 = -s_T - alpha * m_T  # E[d_0 e_T]
    sd0 = -theta_sq - alpha * s_T  # θ* E[d_0]
    noise = (1.0 - alpha) ** 2 * sigma2
    trs, sums, m_d, vecs = _run(lam_S, sgd, kappa, noise, m_d0, jnp.stack([c0, sd0]), ck)
    risk = trs + 2 * alpha * sums[:, 0] + alpha**2 * jnp.sum(m_T)
    c, sd = vecs
    final = Moments(m=m_d + 2 * alpha * c + alpha**2 * m_T, s=sd + alpha * s_T)
    return ck, risk, final
