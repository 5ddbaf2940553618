"""Problem objects for the diagonal linear-regression setting.

Symbols (Wu et al. 2026, arXiv 2606.01292, §3, in the diagonal,
spectrally compatible case):

* ``z ~ N(0, I_D)`` (or another law with independent unit-variance
  coordinates and fourth moment ``kappa``); ground truth ``f*(z) = <theta*, z>``.
* a model has features ``phi = sqrt(lam) * z`` with spectrum ``lam >= 0``;
  ``lam_i = 0`` means the model cannot see direction ``i``.
* its function is ``f(z) = <u, z>`` with ``u = sqrt(lam) * w``; the error is
  ``e = u - theta*`` and the excess risk (no ½) is ``E[(f - f*)²] = ||e||²``.
"""

from __future__ import annotations

import numpy as np


def power_law(D: int, a: float, *, k: int | None = None) -> np.ndarray:
    """``lam_i = i^-a`` for ``i = 1..D``, zero beyond the first ``k`` (rank-``k`` model)."""
    lam = np.arange(1, D + 1, dtype=np.float64) ** (-float(a))
    if k is not None:
        lam[int(k) :] = 0.0
    return lam


def theta_power_law_variance(D: int, b: float, *, scale: float = 1.0) -> np.ndarray:
    """Prior variances ``E[theta*_i²] = scale · i^-b`` (the recursions need only these)."""
    return scale * np.arange(1, D + 1, dtype=np.float64) ** (-float(b))


def draw_theta(key_or_seed, theta_sq: np.ndarray) -> np.ndarray:
    """One draw ``theta*_i ~ N(0, theta_sq_i)`` from the prior."""
    rng = np.random.default_rng(key_or_seed)
    return rng.normal(size=theta_sq.shape) * np.sqrt(theta_sq)


def paper_kd_problem(D: int = 100, alpha_T: float = 1.0, alpha_S: float = 1.5):
    """The paper's synthetic-KD setting (§7, App. E) rewritten in function space.

    The paper's target is ``y = <w*, Σ_T^{1/2} x> + ξ`` with ``w* ~ N(0, I)``;
    in function space ``theta*_i = sqrt(lam_T,i) w*_i``, so the prior variance
    is ``lam_T`` itself. Returns ``(lam_T, lam_S, theta_sq)``.
    """
    lam_T, lam_S = power_law(D, alpha_T), power_law(D, alpha_S)
    return lam_T, lam_S, lam_T.copy()
