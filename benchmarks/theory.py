"""Benchmark the exact spectral recursions (theory/) against the issue's targets.

1. Teacher, direct and distilled curves with D = 10^4, N = 10^5, n = 10^6
   (step decay, 60 log-spaced checkpoints each).
2. A 32 × 32 DER phase diagram over (alpha_T, alpha_S) with D = 1000,
   N = 10^4, n = 10^5: one vmapped program.
3. Exact recursion vs Monte Carlo for the same precision: the time Monte Carlo
   needs to estimate the distilled student's expected risk to 1% relative
   standard error (extrapolated linearly in seeds from a measured run),
   divided by the exact recursion's time (paper KD setting, D = 100).

Compilation is excluded (a warm-up call first); each timing is the median of
--repeats runs. Usage::

    python benchmarks/theory.py --out benchmarks/results/theory.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

# Run as `python benchmarks/theory.py`, Python puts benchmarks/ first on sys.path, where this
# very file would shadow the `theory` package; drop that entry so the installed package is used.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

if "XLA_FLAGS" not in os.environ:  # shard the phase diagram's problems over one host device per core
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={os.cpu_count() or 1}"

import jax  # noqa: E402
import numpy as np  # noqa: E402

from jaxkd.results import emit_json, env_stamp  # noqa: E402
from theory.exact import SGD, max_stable_gamma  # noqa: E402
from theory.simulate import simulate  # noqa: E402
from theory.spectra import power_law  # noqa: E402
from theory.transfer import Transfer, transfer_curves, transfer_grid  # noqa: E402


def timed(fn, repeats):
    fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def big_curves(repeats):
    D = 10_000
    lam_T, lam_S = power_law(D, 1.2), power_law(D, 1.8)
    g = 0.5 * max_stable_gamma(lam_T, 1)
    p = Transfer(
        lam_T=lam_T,
        lam_S=lam_S,
        theta_sq=power_law(D, 1.2),
        sigma2=0.01,
        alpha=1.0,
        teacher=SGD(g, 100_000, schedule="step_decay"),
        student=SGD(g, 1_000_000, schedule="step_decay"),
    )
    out = {}
    sec = timed(lambda: out.update(transfer_curves(p)), repeats)
    return {"D": D, "N": 100_000, "n": 1_000_000, "seconds": sec, "DER": out["DER"], "target_seconds": 5.0}


def phase_diagram(repeats, size):
    D, N, n = 1000, 10_000, 100_000
    axis = np.linspace(1.0, 2.0, size)
    g = 0.5 * max_stable_gamma(power_law(D, 1.0), 1)
    probs = [
        Transfer(
            lam_T=power_law(D, a),
            lam_S=power_law(D, b),
            theta_sq=power_law(D, a),
            sigma2=0.01,
            alpha=1.0,
            teacher=SGD(g, N, schedule="step_decay"),
            student=SGD(g, n, schedule="step_decay"),
        )
        for a in axis
        for b in axis
    ]
    out = {}
    sec = timed(lambda: out.update(transfer_grid(probs, checkpoints_S=[n])), repeats)
    der = out["direct"] / out["distilled"]
    return {
        "grid": [size, size],
        "D": D,
        "N": N,
        "n": n,
        "seconds": sec,
        "DER_min": float(der.min()),
        "DER_max": float(der.max()),
        "target_seconds_cpu": 60.0,
        "target_seconds_h100": 5.0,
    }


def exact_vs_mc(repeats, seeds, rel_se=0.01):
    D, N, n = 100, 2000, 20_000
    p = Transfer(
        lam_T=power_law(D, 1.0),
        lam_S=power_law(D, 1.5),
        theta_sq=power_law(D, 1.0),
        sigma2=0.01,
        alpha=1.0,
        teacher=SGD(0.1, N, schedule="step_decay"),
        student=SGD(0.1, n, schedule="step_decay"),
    )
    ex = {}
    t_exact = timed(lambda: ex.update(transfer_curves(p, checkpoints_T=[N], checkpoints_S=[n])), repeats)
    mc = {}
    t_mc = timed(
        lambda: mc.update(simulate(p, jax.random.key(0), seeds, checkpoints_T=[N], checkpoints_S=[n])),
        max(1, repeats - 1),
    )
    m, se = mc["distilled"]["mean"][-1], mc["distilled"]["se"][-1]
    needed = seeds * (se / m / rel_se) ** 2
    t_needed = t_mc * needed / seeds
    return {
        "D": D,
        "N": N,
        "n": n,
        "exact_seconds": t_exact,
        "mc_seconds": t_mc,
        "mc_seeds": seeds,
        "mc_relative_se": float(se / m),
        "seeds_for_1pct_se": float(needed),
        "mc_seconds_for_1pct_se": t_needed,
        "ratio_mc_over_exact": t_needed / t_exact,
        "exact_distilled": ex["distilled_final"],
        "mc_distilled": float(m),
        "z": float((m - ex["distilled_final"]) / se),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--phase-size", type=int, default=32)
    ap.add_argument("--mc-seeds", type=int, default=64)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    res = {
        "benchmark": "theory",
        "env": env_stamp(),
        "device_kind": jax.devices()[0].device_kind,
        "curves": big_curves(args.repeats),
        "phase_diagram": phase_diagram(args.repeats, args.phase_size),
        "exact_vs_mc": exact_vs_mc(args.repeats, args.mc_seeds),
    }
    emit_json(res, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
