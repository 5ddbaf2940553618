"""Benchmark: the interaction tensor at the issue's target size, stage by stage, with peak memory.

M = 60 models (three groups of 20, as the reference KD tensor: students, baselines, teachers),
N = 10,000 samples, D = 512 activations (ResNet-18 ``avg_pool``), K = 50 components, the
defaults otherwise (γ at the 99th percentile of |Λ|, r_m at the 0.9 quantile, centred PCA with
the ``gram`` solver, float comparison). Target (issue #10): under 60 s on a 2-core CPU.

Activations are random-ish with planted shared structure: a pool of 96 latent factors over
the samples (ReLU'd Gaussians, so sparse and skewed like post-ReLU features); each model
mixes a random subset of them (24 from a pool of 48 for the first group, 24 of 96 for the
others, so the first group shares more features) and 16 factors of its own into D units with
a random Gaussian mixing matrix and decaying factor scales, adds Gaussian noise and applies a
ReLU. Generation is not timed.

Measured: one cold call of ``interaction_tensor`` (compilation included) and ``--repeats``
warm calls (median), each stage's wall time from ``InteractionTensor.timings``; peak resident
memory of the process (``getrusage`` maxrss) after generating the data and after the runs;
XLA's ``memory_analysis()`` of the correlation and PCA programs; and the group statistics
(summaries, ``--permutations`` permutation test, ``--resamples`` bootstrap).

Usage::

    python benchmarks/interaction.py --out benchmarks/results/interaction.json
    python benchmarks/interaction.py --quick     # M = 12, N = 1000, D = 64, K = 10: seconds

Expected runtime of the full size on an idle 2-core CPU (an estimate from per-stage timings of
one model's PCA and one correlation block on a loaded machine, not yet a full run): 15-35 s per
call, dominated by PCA (60 Gram matrices of 2·N·D² flops) and the correlations (about
(M·K)²·N flops); data generation about 10 s; Ω about M·N·T bytes on top of the 1.2 GB of
activations.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxkd import interaction as it
from jaxkd.results import emit_json, env_stamp

FULL = {"models": 60, "samples": 10_000, "width": 512, "k": 50, "groups": 3}
QUICK = {"models": 12, "samples": 1000, "width": 64, "k": 10, "groups": 3}


def maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def make_activations(models, samples, width, groups, seed=0, pool=96, shared=24, own=16):
    """[M, N, D] float32 activations with planted shared factors (see the module docstring)."""
    rng = np.random.default_rng(seed)
    factors = np.maximum(rng.standard_normal((samples, pool), dtype=np.float32), 0)
    scales = np.geomspace(4.0, 0.5, shared + own).astype(np.float32)
    x = np.empty((models, samples, width), np.float32)
    per_group = models // groups
    for m in range(models):
        sub = pool // 2 if m < per_group else pool
        pick = rng.choice(sub, size=min(shared, sub), replace=False)
        z = np.concatenate(
            [factors[:, pick], np.maximum(rng.standard_normal((samples, own), dtype=np.float32), 0)], axis=1
        )
        z = z[:, rng.permutation(z.shape[1])] * scales[: z.shape[1]]
        mix = rng.standard_normal((z.shape[1], width), dtype=np.float32) / np.sqrt(z.shape[1])
        x[m] = np.maximum(z @ mix + 0.3 * rng.standard_normal((samples, width), dtype=np.float32), 0)
    return x


def memory(compiled) -> dict | None:
    m = compiled.memory_analysis()
    if m is None:
        return None
    return {k: int(getattr(m, f"{k}_size_in_bytes")) for k in ("argument", "output", "temp")}


def program_memory(models, samples, width, k, block) -> dict:
    """XLA's buffer sizes for one correlation block and one model's Gram matrix (shapes only, nothing allocated)."""
    b = min(block, models)
    z_pad = jax.ShapeDtypeStruct((models + (-models) % b, samples, k), jnp.float32)
    i = jax.ShapeDtypeStruct((), jnp.int32)
    corr = it._corr_pair.lower(z_pad, i, i, block=b).compile()
    gram = it._gram.lower(jax.ShapeDtypeStruct((samples, width), jnp.float32), center=True).compile()
    return {"correlation_block": memory(corr), "gram_one_model": memory(gram), "block": b}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a small size to check that the script works")
    ap.add_argument("--repeats", type=int, default=1, help="warm calls after the cold one")
    ap.add_argument("--block", type=int, default=10)
    ap.add_argument("--permutations", type=int, default=200)
    ap.add_argument("--resamples", type=int, default=200)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    size = QUICK if args.quick else FULL
    m, n, d, k, g = size["models"], size["samples"], size["width"], size["k"], size["groups"]

    t0 = time.perf_counter()
    x = make_activations(m, n, d, g)
    gen_s = time.perf_counter() - t0
    rss_after_data = maxrss_bytes()

    def call():
        t = time.perf_counter()
        res = it.interaction_tensor(x, k=k, block=args.block)
        return res, time.perf_counter() - t

    cold, cold_s = call()
    warm = [call() for _ in range(args.repeats)]
    res = warm[-1][0] if warm else cold
    warm_s = statistics.median(s for _, s in warm) if warm else None
    stages = {s: statistics.median(r.timings[s] for r, _ in warm) for s in res.timings} if warm else None
    rss_after_tensor = maxrss_bytes()

    per = m // g
    groups = {name: slice(i * per, (i + 1) * per) for i, name in enumerate(["a", "b", "c"][:g])}
    t0 = time.perf_counter()
    summaries = {name: it.group_summary(res.omega, grp) for name, grp in groups.items()}
    summary_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    perm = it.permutation_test(res.omega, groups["a"], groups["b"], n_permutations=args.permutations)
    perm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    boot = it.bootstrap_group_stats(res.omega, groups["b"], n_resamples=args.resamples)
    boot_s = time.perf_counter() - t0

    out = {
        "benchmark": "interaction",
        "quick": args.quick,
        "env": env_stamp(),
        "device_kind": jax.devices()[0].device_kind,
        "size": {"M": m, "N": n, "D": d, "K": k, "block": args.block},
        "data_generation_s": gen_s,
        "cold_s": cold_s,
        "cold_stages_s": cold.timings,
        "warm_s": warm_s,
        "warm_stages_s": stages,
        "repeats": args.repeats,
        "target_s_2core_cpu": 60.0,
        "tensor": {
            "T": res.num_features,
            "gamma": res.gamma,
            "omega_bytes": int(res.omega.nbytes),
            "omega_density": float(res.omega.mean()),
            "data_threshold_mean": float(res.data_thresholds.mean()),
        },
        "memory": {
            "activation_bytes": int(x.nbytes),
            "maxrss_after_data_bytes": rss_after_data,
            "maxrss_after_tensor_bytes": rss_after_tensor,
            "xla": program_memory(m, n, d, k, args.block),
        },
        "statistics": {
            "group_summaries": summaries,
            "summaries_s": summary_s,
            "permutation_test": perm,
            "permutation_s": perm_s,
            "bootstrap_b": boot,
            "bootstrap_s": boot_s,
        },
    }
    emit_json(out, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
