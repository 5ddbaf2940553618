"""Benchmark: where the CNN KD step's time goes on this CPU, per XLA op, against PyTorch, model by model.

Issue #20 asks to profile before changing. ``cnn_sweep.py`` times the whole
resnet32x4 → resnet8x4 KD step; this script splits it into its two models
and, inside XLA's programs, into kinds of operation:

``models``  the teacher's eval forward (resnet32x4) and the student's train
            forward + backward with cross-entropy (resnet8x4), batch 64, 32x32,
            compiled with the engine's CPU options (``default_compiler_options``),
            against the same PyTorch models (``cnn_sweep.torch_resnet``, weights
            copied) in NCHW (what ``cnn_sweep``'s PyTorch loop runs) and
            channels-last. Then one profiled run of each XLA program
            (``jax.profiler``, read back with ``jax.profiler.ProfileData``):
            time per operation kind, summed over threads (core-ms). The
            convolutions are split by what they compute, read off the
            compiled HLO: ``conv_weight_grad`` (the window is the output
            gradient, larger than any kernel), ``conv_dilated_input_grad``
            (``lhs_dilate``: a strided convolution's input gradient, computed
            on the zero-dilated output gradient, 4x the work at stride 2) and
            ``conv`` (forward and stride-1 input gradients).
``relu_transpose``
            the pattern behind the largest non-convolution kind: XLA:CPU's
            weight gradient needs each activation transposed (channels
            first, batch last), and it fuses the ReLU that produced the
            activation into that transposed copy. One [64, 32, 32, 64]
            activation: the transpose alone, the ReLU alone, and the two fused,
            with the ReLU written four ways.

Run it on one core (``taskset -c 0``) to read the per-op times: there the
profiled operations add up to the wall time (``coverage``, the profiled
core-ms over wall time x cores, is about 0.95). On several cores XLA:CPU runs
the convolutions on worker threads that the trace does not see (coverage
0.03 on two cores), so use the multi-core run for its wall times only. One
core is also the engine's situation: on CPU a sweep's seeds run on separate
host devices, about one core each.

Usage::

    taskset -c 0 python benchmarks/cpu_profile.py --out benchmarks/results/cpu_profile_1core.json
    python benchmarks/cpu_profile.py --out benchmarks/results/cpu_profile_2core.json
    python benchmarks/cpu_profile.py --quick      # 16x16, small widths: an end-to-end check
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import statistics
import sys
import tempfile
import time


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None, help="write the JSON here (default: stdout only)")
    p.add_argument("--sections", default="models,relu_transpose", help="comma list of models, relu_transpose")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per program (median)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--quick", action="store_true", help="16x16 images, widths (8, 16, 32, 64), 3 repeats")
    return p.parse_args()


ARGS = parse()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from jaxkd.checkpoint import write_json_atomic  # noqa: E402
from jaxkd.models import make_model  # noqa: E402
from jaxkd.program import default_compiler_options  # noqa: E402
from jaxkd.results import env_stamp  # noqa: E402

TEACHER, STUDENT = "resnet32x4", "resnet8x4"
DEPTH = {TEACHER: 32, STUDENT: 8}
WIDTHS = (32, 64, 128, 256)
QUICK_WIDTHS = (8, 16, 32, 64)


def log(msg):
    print(f"[cpu_profile {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def timeit(fn, reps):
    fn()
    fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return {"median_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts)}


def conv_kinds(hlo_text: str) -> dict[str, str]:
    """``{convolution op name: kind}`` read off a compiled module's text (see the module docstring)."""
    kinds = {}
    for line in hlo_text.splitlines():
        m = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = \S+ convolution\(", line)
        if not m:
            continue
        window = re.search(r"window=\{size=(\d+)x(\d+)", line)
        big = window is not None and max(int(window.group(1)), int(window.group(2))) > 3
        kinds[m.group(1)] = "conv_weight_grad" if big else "conv_dilated_input_grad" if "lhs_dilate" in line else "conv"
    return kinds


def op_profile(compiled, args, calls: int = 3) -> dict:
    """Core-ms per call by operation kind (numeric suffixes dropped), from one ``jax.profiler`` trace."""
    kinds = conv_kinds(compiled.as_text())
    d = tempfile.mkdtemp(prefix="jaxkd_profile_")
    jax.profiler.start_trace(d)
    for _ in range(calls):
        jax.block_until_ready(compiled(*args))
    jax.profiler.stop_trace()
    path = glob.glob(os.path.join(d, "**", "*.xplane.pb"), recursive=True)[0]
    data = jax.profiler.ProfileData.from_file(path)
    by_kind = collections.Counter()
    for plane in data.planes:
        for line in plane.lines:
            if "XLAEigen" not in line.name and "PjRtCpuClient" not in line.name:
                continue
            for ev in line.events:
                if ev.name.startswith("ThunkExecutor") or ev.name.startswith("end: "):
                    continue
                kind = kinds.get(ev.name) or re.sub(r"\.\d+$", "", ev.name)
                by_kind[kind] += ev.duration_ns / 1e6 / calls
    total = sum(by_kind.values())
    return {
        "core_ms": {k: round(v, 2) for k, v in by_kind.most_common()},
        "total_core_ms": round(total, 2),
        "share": {k: round(v / total, 4) for k, v in by_kind.most_common()} if total else {},
    }


def xla_programs(name, widths, size, batch):
    """The teacher's eval forward or the student's CE forward+backward, compiled with the engine's options."""
    model = make_model(name, (size, size, 3), 100, widths)
    params, rest = model.init(jax.random.key(2))
    x = jax.random.normal(jax.random.key(0), (batch, size, size, 3))
    y = jax.random.randint(jax.random.key(1), (batch,), 0, 100)
    opts = default_compiler_options()
    if name == TEACHER:
        fn = jax.jit(lambda p, r, x: model.apply(p, r, x, train=False)[0])
        return model, params, rest, x, y, fn.lower(params, rest, x).compile(opts), (params, rest, x)

    def loss(p, r, x, y):
        logits, _, new_rest = model.apply(p, r, x, train=True)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1)), new_rest

    fn = jax.jit(jax.grad(loss, has_aux=True))
    return model, params, rest, x, y, fn.lower(params, rest, x, y).compile(opts), (params, rest, x, y)


def torch_times(torch, cs, name, widths, params, rest, x, y, reps) -> dict:
    out = {}
    for channels_last in (False, True):
        net = cs.load_into_torch(
            torch,
            cs.torch_resnet(torch, DEPTH[name], list(widths), 100),
            jax.tree.map(np.asarray, nnx.to_pure_dict(params)),
            jax.tree.map(np.asarray, nnx.to_pure_dict(rest)),
        )
        tx = torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))
        ty = torch.from_numpy(np.asarray(y).astype(np.int64))
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
            tx = tx.contiguous(memory_format=torch.channels_last)
        tag = "torch_nhwc" if channels_last else "torch_nchw"
        if name == TEACHER:
            net.eval()

            def fwd(net=net, tx=tx):
                with torch.no_grad():
                    net(tx)

            out[tag] = timeit(fwd, reps)
        else:
            net.train()

            def step(net=net, tx=tx, ty=ty):
                net.zero_grad(set_to_none=True)
                torch.nn.functional.cross_entropy(net(tx), ty).backward()

            out[tag] = timeit(step, reps)
    return out


def models_section(size, widths, batch, reps) -> dict:
    try:
        import torch
    except ImportError:
        torch = None
    cs = None
    if torch is not None:
        torch.set_num_threads(len(os.sched_getaffinity(0)))
        torch.set_flush_denormal(True)
        argv, sys.argv = sys.argv, [sys.argv[0]]
        try:
            import cnn_sweep as cs  # its torch_resnet / load_into_torch; it parses its own (default) arguments
        finally:
            sys.argv = argv
    out = {}
    for name, what in ((TEACHER, "eval forward"), (STUDENT, "train forward + backward (CE)")):
        log(f"{name}: {what}")
        model, params, rest, x, y, compiled, args = xla_programs(name, widths, size, batch)
        res = {"what": what, "xla": timeit(lambda c=compiled, a=args: jax.block_until_ready(c(*a)), reps)}
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        res["xla_gflop"] = float(cost.get("flops", 0.0)) / 1e9 if cost else None
        res["xla_profile"] = op_profile(compiled, args)
        # The trace sees an operation on the thread that runs it; on several cores XLA:CPU hands convolutions to
        # worker threads the trace does not see, so the per-kind times are complete only on one core.
        cores = len(os.sched_getaffinity(0))
        res["xla_profile"]["coverage"] = round(
            res["xla_profile"]["total_core_ms"] / (1e3 * res["xla"]["median_s"] * cores), 3
        )
        if torch is not None:
            res.update(torch_times(torch, cs, name, widths, params, rest, x, y, reps))
            for tag in ("torch_nchw", "torch_nhwc"):
                res[f"xla_over_{tag}"] = res["xla"]["median_s"] / res[tag]["median_s"]
        out[name] = res
        log(
            f"  xla {res['xla']['median_s'] * 1e3:.1f} ms"
            + "".join(f", {t} {res[t]['median_s'] * 1e3:.1f} ms" for t in ("torch_nchw", "torch_nhwc") if t in res)
        )
    return out


def relu_transpose_section(reps) -> dict:
    x = jax.random.normal(jax.random.key(0), (64, 32, 32, 64))
    s = jnp.arange(64.0)
    t = lambda a: jnp.transpose(a, (3, 1, 2, 0))  # noqa: E731 - channels first, batch last: what the weight gradient reads
    cases = {
        "transpose": lambda x: t(x),
        "relu": lambda x: jnp.maximum(x, 0.0),
        "transpose(scale_shift)": lambda x: t(x * s + s),
        "transpose(relu) max": lambda x: t(jnp.maximum(x, 0.0)),
        "transpose(relu) where": lambda x: t(jnp.where(x > 0, x, 0.0)),
        "transpose(relu) abs": lambda x: t((x + jnp.abs(x)) * 0.5),
        "transpose(relu) mask_multiply": lambda x: t(x * (x > 0)),
    }
    out = {}
    opts = default_compiler_options()
    ref = np.transpose(np.maximum(np.asarray(x), 0.0), (3, 1, 2, 0))
    for name, f in cases.items():
        c = jax.jit(f).lower(x).compile(opts)
        if "relu)" in name:
            assert np.array_equal(np.asarray(c(x)), ref), name
        out[name] = timeit(lambda c=c: c(x).block_until_ready(), reps)
        log(f"  {name}: {out[name]['median_s'] * 1e3:.2f} ms")
    return out


def main():
    size, widths = (16, QUICK_WIDTHS) if ARGS.quick else (32, WIDTHS)
    reps = 3 if ARGS.quick else ARGS.repeats
    sections = ARGS.sections.split(",")
    bad = [s for s in sections if s not in ("models", "relu_transpose")]
    if bad:
        sys.exit(f"unknown section(s) {', '.join(bad)}; choose from models, relu_transpose")
    t0 = time.perf_counter()
    out = {
        "benchmark": "cpu_profile",
        "cores_available": len(os.sched_getaffinity(0)),
        "batch": ARGS.batch,
        "image_size": size,
        "widths": list(widths),
        "compiler_options": default_compiler_options(),
        "env": env_stamp(),
    }
    if "models" in sections:
        out["models"] = models_section(size, widths, ARGS.batch, reps)
    if "relu_transpose" in sections:
        out["relu_transpose"] = relu_transpose_section(reps)
    out["wall_s"] = time.perf_counter() - t0
    if ARGS.out:
        os.makedirs(os.path.dirname(os.path.abspath(ARGS.out)), exist_ok=True)
        write_json_atomic(ARGS.out, out, indent=2, default=str)
    print(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
