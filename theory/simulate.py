"""Monte Carlo two-phase SGD (the paper's Algorithm 1), vmapped over seeds.

Phase 1 trains the teacher (and, with the same SGD, the direct student) on
fresh true labels ``y = <theta*, z> + eps``; phase 2 trains the distilled
student from zero on fresh inputs labelled ``alpha f_T(z) + (1 - alpha) y``.
Updates are in parameter space, exactly as written in the paper:
``w <- w - gamma_t mean_b (phi_b·w - y_b) phi_b`` with ``phi = sqrt(lam) z``.
The excess risk of each trained model is computed exactly over z
(``||sqrt(lam) w - theta*||²``), so the only randomness is SGD's.

Features: ``"gaussian"`` (kappa = 3) or ``"rademacher"`` (kappa = 1).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from theory.exact import checkpoints_for
from theory.transfer import Transfer

FEATURES = {"gaussian": 3.0, "rademacher": 1.0}


def _sample_z(key, shape, features):
    # Features are drawn in float32 (half the generator's work, which dominates a batch-1000 run) and
    # accumulated in float64; a float32 Gaussian's moments differ from the exact ones by ~1e-7.
    if features == "gaussian":
        return jax.random.normal(key, shape, jnp.float32).astype(jnp.float64)
    return jax.random.rademacher(key, shape, jnp.float64)


def _sgd(key, lam, sgd, target_fn, checkpoints, features, theta):
    """Run one SGD from zero; return the excess risk at ``checkpoints`` and final w."""
    sq = jnp.sqrt(lam)
    D = lam.shape[0]

    def step(t, w):
        k = jax.random.fold_in(key, t)
        kz, ke = jax.random.split(k)
        z = _sample_z(kz, (sgd.batch, D), features)
        y = target_fn(z, ke)
        phi = z * sq[None, :]
        g = sgd.gamma(t.astype(jnp.float64))
        resid = phi @ w - y
        return w - g * (resid @ phi) / sgd.batch

    ck = jnp.asarray(checkpoints, jnp.int32)
    starts = jnp.concatenate([jnp.zeros(1, jnp.int32), ck[:-1]])

    def segment(w, bounds):
        lo, hi = bounds
        w = jax.lax.fori_loop(lo + 1, hi + 1, step, w)
        return w, jnp.sum((sq * w - theta) ** 2)

    w, risks = jax.lax.scan(segment, jnp.zeros(D, jnp.float64), (starts, ck))
    return risks, w


def _one_seed(key, p: Transfer, theta, ck_T, ck_S, features):
    k_T, k_D, k_S = jax.random.split(key, 3)
    lam_T, lam_S = jnp.asarray(p.lam_T), jnp.asarray(p.lam_S)
    sigma = jnp.sqrt(p.sigma2)

    def true_y(z, ke):
        return z @ theta + sigma * jax.random.normal(ke, (z.shape[0],), jnp.float64)

    r_T, w_T = _sgd(k_T, lam_T, p.teacher, true_y, ck_T, features, theta)
    r_D, _ = _sgd(k_D, lam_S, p.teacher, true_y, ck_T, features, theta)
    u_T = jnp.sqrt(lam_T) * w_T

    def kd_y(z, ke):
        return p.alpha * (z @ u_T) + (1.0 - p.alpha) * true_y(z, ke)

    r_S, _ = _sgd(k_S, lam_S, p.student, kd_y, ck_S, features, theta)
    return r_T, r_D, r_S


def simulate(
    p: Transfer,
    key,
    n_seeds: int,
    *,
    features="gaussian",
    theta=None,
    checkpoints_T=None,
    checkpoints_S=None,
    seeds_per_call: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> dict:
    """Monte Carlo risk curves: mean and standard error over ``n_seeds``.

    Args:
      p: the problem; ``p.kappa`` is ignored (the feature law sets it).
      theta: a fixed ``theta*`` ``[D]``; default: a fresh draw from the prior
        ``N(0, p.theta_sq)`` per seed (matching the prior-averaged exact risk).
      checkpoints_T, checkpoints_S: report steps, ending at each run's ``steps``.
      seeds_per_call: run the seeds in vmapped chunks of this size (default:
        all at once); seed ``s`` uses the same key either way. A chunk whose
        size is a multiple of ``jax.device_count()`` is split over the devices.
      on_progress: called on the host with the number of seeds done after
        each chunk (for a progress bar).

    Returns:
      ``{"steps_T", "steps_S", "teacher", "direct", "distilled": {"mean", "se"}}``.
    """
    if features not in FEATURES:
        raise ValueError(f"features must be one of {sorted(FEATURES)}, got {features!r}")
    ck_T = checkpoints_for(p.teacher, checkpoints_T, "checkpoints_T")
    ck_S = checkpoints_for(p.student, checkpoints_S, "checkpoints_S")
    chunk = n_seeds if seeds_per_call is None else max(1, min(int(seeds_per_call), n_seeds))
    with jax.enable_x64(True):
        theta_sd = jnp.sqrt(jnp.asarray(p.theta_sq, jnp.float64))

        def run(k):
            k_theta, k_run = jax.random.split(k)
            th = (
                jnp.asarray(theta, jnp.float64)
                if theta is not None
                else theta_sd * jax.random.normal(k_theta, theta_sd.shape, jnp.float64)
            )
            return _one_seed(k_run, p, th, ck_T, ck_S, features)

        keys = jax.random.split(key, n_seeds)
        n_calls = -(-n_seeds // chunk)
        keys = jnp.concatenate([keys, jnp.repeat(keys[-1:], n_calls * chunk - n_seeds, axis=0)])
        program = jax.jit(jax.vmap(run))
        sharding = _seed_sharding(chunk)
        parts = []
        for c in range(n_calls):
            part = keys[c * chunk : (c + 1) * chunk]
            if sharding is not None:
                part = jax.device_put(part, sharding)
            parts.append([np.asarray(x) for x in program(part)])
            if on_progress is not None:
                on_progress(min((c + 1) * chunk, n_seeds))
        r_T, r_D, r_S = (np.concatenate(x)[:n_seeds] for x in zip(*parts))

    def stat(r):
        return {"mean": r.mean(0), "se": r.std(0, ddof=1) / np.sqrt(r.shape[0])}

    return {"steps_T": ck_T, "steps_S": ck_S, "teacher": stat(r_T), "direct": stat(r_D), "distilled": stat(r_S)}


def _seed_sharding(chunk: int):
    """Split each chunk's seeds over every device when they divide evenly (2x on two host CPU devices)."""
    n_dev = jax.device_count()
    if n_dev == 1 or chunk % n_dev:
        return None
    from jax.sharding import AxisType, NamedSharding, PartitionSpec

    mesh = jax.make_mesh((n_dev,), ("seed",), axis_types=(AxisType.Auto,))
    return NamedSharding(mesh, PartitionSpec("seed"))
