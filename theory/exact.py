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
paper's ½; it includes directions a model cannot see (``lam_i = 0``). Steps are
counted from t = 1; the step size of step t is ``gamma0 · 2^-floor(t/K)``
(step decay) or ``gamma0`` (constant).

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

from jaxkd.errors import ConfigError, check

SCHEDULES = ("constant", "step_decay")


@dataclasses.dataclass(frozen=True)
class SGD:
    """One-pass mini-batch SGD from zero.

    Attributes:
      gamma0: initial step size (> 0).
      steps: number of SGD steps (each sees ``batch`` fresh samples).
      batch: batch size B.
      schedule: ``"constant"`` or ``"step_decay"`` (``gamma0 · 2^-floor(t/K)``).
      K: decay interval in steps (need not be an integer); default for step
        decay is the paper's ``steps / log2(steps)``.
    """

    gamma0: float
    steps: int
    batch: int = 1
    schedule: str = "constant"
    K: float | None = None

    def __post_init__(self):
        check(self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        check(np.isfinite(self.gamma0) and self.gamma0 > 0, f"gamma0 must be positive, got {self.gamma0}")
        check(int(self.steps) == self.steps and self.steps >= 1, f"steps must be a positive integer, got {self.steps}")
        check(int(self.batch) == self.batch and self.batch >= 1, f"batch must be a positive integer, got {self.batch}")
        check(self.K is None or self.K > 0, f"K must be positive, got {self.K}")

    @property
    def decay_interval(self) -> float:
        if self.schedule == "constant":
            return math.inf
        if self.K is not None:
            return float(self.K)
        return self.steps / math.log2(self.steps) if self.steps > 1 else 1.0

    def gamma(self, t):
        """Step size of step ``t`` (1-based), jnp."""
        if self.schedule == "constant":
            return jnp.full(jnp.shape(t), self.gamma0, jnp.float64)
        return self.gamma0 * jnp.exp2(-jnp.floor(t / self.decay_interval))


class Moments(NamedTuple):
    """Per-coordinate expected moments of a trained model's error ``e = u - theta*``.

    ``m = E[e²]``, ``s = theta* ⊙ E[e]`` (prior-averaged when theta_sq is a
    prior variance). ``risk = Σ m``.
    """

    m: jax.Array
    s: jax.Array


def stability_sum(lam, gamma, batch, kappa=3.0) -> float:
    """``Σ q_i / (1 - |a_i|)``: the recursion at step size ``gamma`` contracts iff every
    ``|a_i| < 1`` and this sum is < 1 (Perron root of ``diag(a) + q 1ᵀ`` below 1)."""
    lam = np.asarray(lam, np.float64)
    x = gamma * lam
    a = 1 - 2 * x + x**2 * (1 + (kappa - 2) / batch)
    q = x**2 / batch
    if np.any(np.abs(a[lam > 0]) >= 1):
        return math.inf
    return float(np.sum(np.where(lam > 0, q / np.maximum(1 - np.abs(a), 1e-300), 0.0)))


def max_stable_gamma(lam, batch, kappa=3.0) -> float:
    """Largest step size for which the second-moment recursion contracts (bisection)."""
    lo, hi = 0.0, 4.0 / max(float(np.max(lam)), 1e-300)
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if stability_sum(lam, mid, batch, kappa) < 1 else (lo, mid)
    return lo


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


def _intervals(sgd: SGD, checkpoints) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split steps 1..max(checkpoints) into intervals of constant step size ending at every
    checkpoint and every decay boundary. Returns ``(lengths, decay_index, is_checkpoint, ends)``."""
    ck = np.asarray(checkpoints, np.int64)
    last = int(ck[-1])
    cuts = set(ck.tolist())
    K = sgd.decay_interval
    if math.isfinite(K):
        j = 1
        while math.ceil(j * K) - 1 < last:
            if math.ceil(j * K) - 1 >= 1:
                cuts.add(math.ceil(j * K) - 1)  # last step of decay level j - 1
            j += 1
    ends = np.array(sorted(cuts), np.int64)
    starts = np.concatenate([[0], ends[:-1]])
    decay = np.floor((starts + 1) / K).astype(np.int64) if math.isfinite(K) else np.zeros_like(ends)
    return ends - starts, decay, np.isin(ends, ck), ends


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
      checkpoints: increasing step counts at which to report (default log-spaced).
      kappa: fourth moment of the feature coordinates (3 Gaussian, 1 Rademacher).

    Returns:
      ``(steps [C], risk [C], final Moments)``. Call inside
      ``jax.enable_x64(True)`` (done by :func:`transfer_curves`).
    """
    ck = log_checkpoints(sgd.steps) if checkpoints is None else np.asarray(checkpoints)
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
    ck = log_checkpoints(sgd.steps) if checkpoints is None else np.asarray(checkpoints)
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
