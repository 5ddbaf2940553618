"""Benchmark: one 3x3 stride-1 convolution as XLA's convolution, Winograd F(2x2, 3x3) and F(4x4, 3x3), in one run.

Issue #20: which of the zoo's convolution paths (``jaxkd.models.layers``) to
take on which CPU map. Each program is the zoo's ``canonical_conv`` traced
under one choice (``CONV_WINOGRAD`` off, or on with ``WINOGRAD_TILE`` 2 or 4,
with the map-size rule widened so that every map here takes it, also
32x32x64, which the engine leaves to XLA) at batch 64 on the maps of the
CIFAR ResNets (32x32x64, 16x16x128, 8x8x256) and two more, compiled with the
engine's CPU options, in two modes:

forward      ``canonical_conv(x, w)``
train        the loss ``sum(conv(x, w) * g)`` and its gradients in x and w: the forward and input gradient take
             the chosen path, the weight gradient stays XLA's convolution (as in a training step)

Each program runs inside a ``lax.map`` over 4 independent inputs (the engine's per-seed loop) unless
``--single``. Calls go round-robin over all programs ``--repeats`` times after one untimed call; the JSON
holds the median ms per convolution with the fastest and slowest call (``spread_ms``), the speed-up over
XLA's, and each path's largest error against XLA's output relative to its largest entry. Thread count is
the process's: run under ``taskset -c 0`` for one core.

    python benchmarks/winograd.py --out benchmarks/results/winograd_amd.json
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxkd.models import layers
from jaxkd.program import default_compiler_options

SHAPES = ((32, 64), (16, 128), (8, 256), (16, 256), (8, 128))  # (map side, channels in = out)
PATHS = {"xla": (False, 2), "f2": (True, 2), "f4": (True, 4)}  # name: (CONV_WINOGRAD, WINOGRAD_TILE)


def build(path, mode, single, *args):
    on, tile = PATHS[path]

    def conv(x, w):
        return layers.canonical_conv(x, w, (1, 1), ((1, 1), (1, 1)))

    def one(x, w, g):
        if mode == "forward":
            return conv(x, w)
        return jax.grad(lambda x, w: jnp.sum(conv(x, w) * g), (0, 1))(x, w)

    def prog(xs, ws, gs):
        if single:
            return one(xs[0], ws[0], gs[0])
        return jax.lax.map(lambda a: one(*a), (xs, ws, gs))

    before = layers.CONV_WINOGRAD, layers.WINOGRAD_TILE, layers.WINOGRAD_MAX_POSITIONS, layers.WINOGRAD_MIN_CHANNELS
    # every map of SHAPES takes the chosen path, also those outside the engine's rule (32x32x64)
    layers.CONV_WINOGRAD, layers.WINOGRAD_TILE = on, tile
    layers.WINOGRAD_MAX_POSITIONS, layers.WINOGRAD_MIN_CHANNELS = 32 * 32, 1
    try:  # the choice is read at trace time: lower inside
        return jax.jit(prog, compiler_options=default_compiler_options()).lower(*args).compile()
    finally:
        layers.CONV_WINOGRAD, layers.WINOGRAD_TILE, layers.WINOGRAD_MAX_POSITIONS, layers.WINOGRAD_MIN_CHANNELS = before


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--single", action="store_true", help="one convolution per call instead of 4 in a lax.map")
    p.add_argument("--modes", default="forward,train")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    n = 1 if args.single else 4
    rng = np.random.default_rng(0)
    rows = []
    for side, c in SHAPES:
        xs = jnp.asarray(rng.normal(size=(n, args.batch, side, side, c)), jnp.float32)
        ws = jnp.asarray(rng.normal(size=(n, 3, 3, c, c)) / np.sqrt(9 * c), jnp.float32)
        gs = jnp.asarray(rng.normal(size=(n, args.batch, side, side, c)), jnp.float32)
        for mode in args.modes.split(","):
            progs = {}
            for path in PATHS:
                progs[path] = build(path, mode, args.single, xs, ws, gs)
            outs = jax.block_until_ready({k: jax.tree.leaves(f(xs, ws, gs)) for k, f in progs.items()})
            times = {k: [] for k in progs}
            for _ in range(args.repeats):
                for k, f in progs.items():
                    t = time.perf_counter()
                    jax.block_until_ready(f(xs, ws, gs))
                    times[k].append(time.perf_counter() - t)
            ms = {k: 1e3 * float(np.median(v)) / n for k, v in times.items()}
            err = {
                k: max(float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b))) for a, b in zip(outs[k], outs["xla"]))
                for k in ("f2", "f4")
            }
            row = {
                "map": f"{side}x{side}x{c}",
                "mode": mode,
                "ms": ms,
                "spread_ms": {k: [1e3 * min(v) / n, 1e3 * max(v) / n] for k, v in times.items()},
                "speedup_over_xla": {k: ms["xla"] / ms[k] for k in ("f2", "f4")},
                "max_rel_error_vs_xla": err,
            }
            rows.append(row)
            print(
                f"{row['map']:>10} {mode:>8}  xla {ms['xla']:7.2f} ms  f2 {ms['f2']:7.2f} "
                f"({row['speedup_over_xla']['f2']:.2f}x)  f4 {ms['f4']:7.2f} ({row['speedup_over_xla']['f4']:.2f}x)"
                f"  err f2 {err['f2']:.1e} f4 {err['f4']:.1e}",
                flush=True,
            )
    out = {
        "benchmark": "winograd",
        "settings": {"batch": args.batch, "per_call": n, "repeats": args.repeats, "modes": args.modes},
        "cpus_allowed": len(os.sched_getaffinity(0)),
        "jax": jax.__version__,
        "compiler_options": default_compiler_options(),
        "rows": rows,
    }
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)
    else:
        print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
