"""Benchmark: heatmaps per second for a CIFAR-size student, LRP and IG-50, over 8 ensemble members.

An ensemble of ``--members`` randomly initialised ``--model`` students (RepDistiller's
resnet8, 78k parameters, at 32x32 RGB, 10 classes by default; the weights' values do
not change the work) explains ``--batch`` images each, three ways measured side by
side in one run:

* ``vmap``: one compiled program, ``jax.vmap`` over the members
  (:func:`jaxkd.attribution.explain_ensemble`, ``strategy="vmap"``);
* ``map``: one compiled program, ``lax.map`` over the members (``strategy="map"``);
* ``loop``: a plain Python loop over members calling one jitted single-model
  function (:func:`jaxkd.attribution.explain`), the baseline a user would write.

Each method (LRP ``epsilon_gamma_box`` with γ = 0.25, and integrated gradients with
50 Gauss-Legendre steps, ``chunk`` nodes at a time) is compiled and called once
(``first_call_s``: compilation included), then timed ``--repeats`` times,
round-robin over the variants so that a change in machine load hits all alike;
the median is reported as heatmaps per second (members × images / seconds).
Checks: the three variants agree (max abs difference relative to the largest
relevance), and the explanations' completeness (LRP: Σ relevance / f(x);
IG: |completeness gap| / |f(x) − f(baseline)|).

Usage (the recorded run)::

    python benchmarks/attribution.py --out benchmarks/results/attribution.json
    python benchmarks/attribution.py --quick     # resnet8 at 16x16, 2 members: seconds

Expected runtime on the 2-core CPU: about 3 minutes at the defaults. resnet8x4 (1.2M
parameters, about 0.35 GFLOP per forward pass at 32x32, 30 times resnet8) makes IG-50
cost about 50 GFLOP per heatmap: ``--model resnet8x4 --batch 2 --methods lrp`` keeps it
to minutes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxkd import attribution as at
from jaxkd.ensemble import Ensemble
from jaxkd.models import make_model
from jaxkd.results import emit_json, env_stamp

FULL = {"model": "resnet8", "resolution": 32, "members": 8, "batch": 8, "steps": 50}
QUICK = {"model": "resnet8", "resolution": 16, "members": 2, "batch": 2, "steps": 4}


def make_ensemble(name, resolution, members, classes=10, seed=0):
    model = make_model(name, (resolution, resolution, 3), classes)
    keys = jax.random.split(jax.random.key(seed), members)
    params, rest = jax.jit(jax.vmap(model.init))(keys)
    return Ensemble(
        model=model,
        params=params,
        rest=rest,
        members=[{"seed": i} for i in range(members)],
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
    )


def variants(ens, x, target, method, kwargs):
    """``{name: zero-argument callable returning [M, B, ...] relevance}`` for the three ways."""
    xn = at.normalised_inputs(ens, x)
    t = jnp.asarray(target, jnp.int32)
    if method == "lrp":
        kwargs = {**kwargs, **dict(zip(("low", "high"), at.box_bounds(ens.mean, ens.std)))}
    single = jax.jit(lambda p, r, xn, t: at.explain(ens.model, p, r, xn, t, method=method, **kwargs))
    params = [jax.tree.map(lambda a, m=m: a[m], ens.params) for m in range(len(ens))]
    rests = [jax.tree.map(lambda a, m=m: a[m], ens.rest) for m in range(len(ens))]

    def loop():
        return jnp.stack([single(p, r, xn, t) for p, r in zip(params, rests)])

    def ensemble(strategy):
        return lambda: at.explain_ensemble(ens, x, target, method=method, strategy=strategy, **kwargs)

    return {"vmap": ensemble("vmap"), "map": ensemble("map"), "loop": loop}


def completeness(ens, x, target, method, kwargs, relevance):
    xn = at.normalised_inputs(ens, x)
    t = jnp.asarray(target, jnp.int32)
    f = jax.vmap(lambda p, r: at.output_fn(ens.model, p, r, t)(xn))(ens.params, ens.rest)
    total = np.asarray(relevance).reshape(*relevance.shape[:2], -1).sum(-1)
    if method == "lrp":
        ratio = total / np.asarray(f)
        return {"sum_relevance_over_f_median": float(np.median(ratio)), "iqr": np.percentile(ratio, [25, 75]).tolist()}
    f0 = jax.vmap(lambda p, r: at.output_fn(ens.model, p, r, t)(jnp.zeros_like(xn)))(ens.params, ens.rest)
    gap = np.abs(total - (np.asarray(f) - np.asarray(f0))) / np.abs(np.asarray(f) - np.asarray(f0))
    return {"relative_completeness_gap_median": float(np.median(gap)), "max": float(gap.max())}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a small size to check that the script works")
    ap.add_argument("--model", default=None)
    ap.add_argument("--members", type=int, default=None)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None, help="integrated-gradients steps")
    ap.add_argument("--chunk", type=int, default=5, help="IG nodes evaluated together")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--methods", default="lrp,ig", help="comma-separated: lrp, ig")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    size = dict(QUICK if args.quick else FULL)
    for k in ("model", "members", "batch", "steps"):
        if getattr(args, k) is not None:
            size[k] = getattr(args, k)
    load_start = os.getloadavg()
    t0 = time.perf_counter()
    ens = make_ensemble(size["model"], size["resolution"], size["members"])
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (size["batch"], size["resolution"], size["resolution"], 3)).astype(np.uint8)
    target = rng.integers(0, 10, size["batch"])
    setup_s = time.perf_counter() - t0

    methods = {
        "lrp": {"composite": "epsilon_gamma_box", "gamma": 0.25},
        f"ig{size['steps']}": {"steps": size["steps"], "chunk": args.chunk},
    }
    chosen = args.methods.split(",")
    methods = {k: v for k, v in methods.items() if k.rstrip("0123456789") in chosen}
    runs, results = {}, {}
    for name, kwargs in methods.items():
        method = "lrp" if name == "lrp" else "ig"
        for v, fn in variants(ens, x, target, method, kwargs).items():
            t = time.perf_counter()
            out = jax.block_until_ready(fn())
            runs[name, v] = {"fn": fn, "first_call_s": time.perf_counter() - t, "times": [], "out": out}
            print(f"{name}/{v}: first call {runs[name, v]['first_call_s']:.1f} s", file=sys.stderr, flush=True)
    for _ in range(args.repeats):  # round-robin: a load change hits every variant alike
        for run in runs.values():
            t = time.perf_counter()
            jax.block_until_ready(run["fn"]())
            run["times"].append(time.perf_counter() - t)
    heatmaps = size["members"] * size["batch"]
    for name in methods:
        method = "lrp" if name == "lrp" else "ig"
        ref = np.asarray(runs[name, "loop"]["out"])
        scale = float(np.abs(ref).max())
        per = {}
        for v in ("vmap", "map", "loop"):
            run = runs[name, v]
            s = statistics.median(run["times"])
            per[v] = {
                "first_call_s": run["first_call_s"],
                "median_s": s,
                "times_s": run["times"],
                "heatmaps_per_s": heatmaps / s,
                "max_abs_diff_vs_loop_rel": float(np.abs(np.asarray(run["out"]) - ref).max() / scale),
            }
        per["speedup_vmap_over_loop"] = per["loop"]["median_s"] / per["vmap"]["median_s"]
        per["speedup_map_over_loop"] = per["loop"]["median_s"] / per["map"]["median_s"]
        per["completeness"] = completeness(ens, x, target, method, methods[name], runs[name, "loop"]["out"])
        per["options"] = methods[name]
        results[name] = per
    emit_json(
        {
            "benchmark": "attribution",
            "quick": args.quick,
            "env": env_stamp(),
            "device_kind": jax.devices()[0].device_kind,
            "size": size,
            "heatmaps_per_call": heatmaps,
            "repeats": args.repeats,
            "setup_s": setup_s,
            "results": results,
            "wall_s": time.perf_counter() - t0,
            "load_average_1_5_15": {"start": load_start, "end": os.getloadavg()},
        },
        args.out,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
