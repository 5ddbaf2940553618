"""Benchmark: one 3x3 convolution and one CIFAR ResNet block, forward + backward, on this CPU, ten ways in one run.

Issue #20 item 1: isolate the convolution, the piece that makes the engine's
CNN sweeps slower than a PyTorch loop on CPU, and time every alternative side
by side. Each program computes the loss ``sum(f(x, w) * g)`` (``g`` a fixed
random cotangent) and its gradients with respect to the input and every
weight, so it does the work of one training step's layer: forward, input
gradient and weight gradient (3 x 2·B·Ho·Wo·Cout·Cin·9 FLOPs for a conv).

Implementations (``--impls``):

xla_lax        ``lax.conv_general_dilated``, differentiated by JAX, one top-level program
canonical      jaxkd's ``canonical_conv`` (the zoo's convolution today: explicit-transpose gradient)
im2col         patch extraction (the 9 shifted views, concatenated on channels) + one matmul,
               differentiated by JAX: the backward pass is two matmuls and the slices' adjoints
canonical_bf16 / im2col_bf16
               the same with bfloat16 operands and float32 accumulation (parameters stay float32);
               this CPU has AVX512-BF16 and AMX-BF16, which oneDNN (PyTorch) uses
torch          PyTorch ``conv2d`` (oneDNN), NCHW and channels-last; ``torch_bf16``: autocast bfloat16

Every XLA implementation is compiled twice more with XLA:CPU library options
(``compile(compiler_options=...)``, per program, so all run in one process):
``xnn`` (``xla_cpu_use_xnnpack`` with the XNNPACK dot/eltwise/reduce fusions),
``onednn`` (``xla_cpu_use_onednn`` with the oneDNN dot/eltwise/reduce
fusions), and the report lists what each did to the compiled HLO (custom
calls and fusions by kind). ``--contexts loop`` also times each program as the
engine runs it: inside a ``lax.map`` over 4 independent inputs (the trainer's
per-seed loop), where XLA:CPU used to leave gradient convolutions on a slow path.

Peaks, measured in the same run: a 2048² float32 (and bfloat16) matmul in XLA,
NumPy and PyTorch; the best is the machine's *measured* peak. The *nominal*
FMA peak is cores x clock x FLOPs per cycle (AVX-512: 2 FMA units x 16 lanes x
2 = 64 float32 FLOPs per cycle; AMX-BF16: 1024 bfloat16 FLOPs per cycle), from
``/proc/cpuinfo``'s clock (a VM's nominal clock; turbo is not visible).

Timing: each program is compiled and called once (excluded), then the calls go
round-robin over all programs ``--repeats`` times; the median is reported, with
the spread. Correctness: every implementation's loss and gradients are compared
with ``xla_lax`` float32 (relative max error; bfloat16 is reported, not failed).

Usage::

    python benchmarks/conv_cpu.py --out benchmarks/results/conv_cpu.json
    python benchmarks/conv_cpu.py --quick      # small shapes, 3 repeats: end-to-end check in about a minute
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import statistics
import sys
import time


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--impls", default="xla_lax,canonical,im2col,canonical_bf16,im2col_bf16,torch")
    p.add_argument("--options", default="default,no_ynn,ynn_all,xnn,onednn", help="XLA:CPU compile options (OPTIONS)")
    p.add_argument("--contexts", default="top,loop", help="top: one top-level program; loop: inside lax.map over 4")
    p.add_argument("--sections", default="layers,teacher", help="layers (conv + block), teacher (shared teacher batch)")
    p.add_argument("--kinds", default="layer,block", help="layer (one conv), block (a ResNet basic block)")
    p.add_argument(
        "--slow",
        action="store_true",
        help="also time xla_lax inside the loop (the generic-emitter path canonical_conv avoids: 10-20x slower)",
    )
    p.add_argument("--quick", action="store_true", help="batch 8, 2 small shapes, 3 repeats")
    p.add_argument("--out", default=None)
    return p.parse_args()


ARGS = parse()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402

from jaxkd.models.layers import _bn_train, canonical_conv  # noqa: E402
from jaxkd.results import env_stamp  # noqa: E402

# resnet8x4 / resnet32x4 stages on 32x32 inputs: (H = W, Cin, Cout, stride)
SHAPES = [(32, 64, 64, 1), (16, 128, 128, 1), (8, 256, 256, 1), (32, 64, 128, 2)]
QUICK_SHAPES = [(16, 16, 16, 1), (8, 32, 32, 2)]
LOOP = 4
_ALL = "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_ELTWISE,LIBRARY_FUSION_TYPE_REDUCE"
OPTIONS = {
    "default": {},  # jaxlib 0.10.2: dots go to YNNPACK fusions (__ynn_fusion), convolutions stay XLA convolutions
    "no_ynn": {"xla_cpu_experimental_ynn_fusion_type": ""},  # XLA's own dot emitter
    "ynn_all": {"xla_cpu_experimental_ynn_fusion_type": _ALL},
    "xnn": {"xla_cpu_use_xnnpack": True, "xla_cpu_experimental_xnn_fusion_type": _ALL},
    "onednn": {"xla_cpu_use_onednn": True, "xla_cpu_experimental_onednn_fusion_type": _ALL},
}
# What these options did to a whole ResNet forward pass with jaxlib 0.10.2 on this CPU (seen twice each).
CRASHES = {
    "onednn": "aborts the process while compiling ('partition compile failed', invalid opcode in libjax_common.so)",
    "ynn_all": "corrupts the heap while running ('malloc(): invalid size (unsorted)', process aborted)",
}


def log(msg):
    print(f"[conv_cpu {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def nominal_peaks() -> dict:
    mhz = None
    with open("/proc/cpuinfo") as f:
        text = f.read()
    m = re.search(r"cpu MHz\s*:\s*([\d.]+)", text)
    mhz = float(m.group(1)) if m else None
    flags = set(re.search(r"flags\s*:\s*(.*)", text).group(1).split()) if "flags" in text else set()
    cores = os.cpu_count()
    fp32_per_cycle = 64 if "avx512f" in flags else (32 if "fma" in flags else 8)
    out = {"cores": cores, "clock_mhz": mhz, "model": re.search(r"model name\s*:\s*(.*)", text).group(1)}
    out["avx512f"], out["avx512_bf16"], out["amx_bf16"] = (
        "avx512f" in flags,
        "avx512_bf16" in flags,
        "amx_bf16" in flags,
    )
    if mhz:
        out["fp32_fma_flops"] = cores * mhz * 1e6 * fp32_per_cycle
        out["bf16_flops"] = (
            cores * mhz * 1e6 * (1024 if "amx_bf16" in flags else (128 if "avx512_bf16" in flags else 0))
        )
    return out


def timeit(fn, reps=5):
    fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def matmul_peaks(torch) -> dict:
    n = 2048
    flops = 2 * n**3
    rng = np.random.default_rng(0)
    a32, b32 = rng.standard_normal((n, n), np.float32), rng.standard_normal((n, n), np.float32)
    out = {}
    for dt in ("float32", "bfloat16"):
        a, b = jnp.asarray(a32, dt), jnp.asarray(b32, dt)
        f = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
        out[f"xla_{dt}"] = flops / timeit(lambda f=f, a=a, b=b: f(a, b).block_until_ready())
    out["numpy_float32"] = flops / timeit(lambda: a32 @ b32)
    if torch is not None:
        ta, tb = torch.from_numpy(a32), torch.from_numpy(b32)
        out["torch_float32"] = flops / timeit(lambda: ta @ tb)
        ta16, tb16 = ta.to(torch.bfloat16), tb.to(torch.bfloat16)
        out["torch_bfloat16"] = flops / timeit(lambda: ta16 @ tb16)
    return out


# --- convolution implementations (NHWC / HWIO, padding 1) -------------------------------------------------------


def conv_lax(x, w, stride):
    return lax.conv_general_dilated(
        x, w, (stride, stride), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def conv_canonical(x, w, stride):
    return canonical_conv(x, w, (stride, stride), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))


def conv_im2col(x, w, stride):
    kh, kw, cin, cout = w.shape
    b, h, wd, _ = x.shape
    ho, wo = (h + 2 - kh) // stride + 1, (wd + 2 - kw) // stride + 1
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    cols = [
        lax.slice(
            xp, (0, i, j, 0), (b, i + (ho - 1) * stride + 1, j + (wo - 1) * stride + 1, cin), (1, stride, stride, 1)
        )
        for i in range(kh)
        for j in range(kw)
    ]
    patches = jnp.concatenate(cols, axis=-1)  # [B, Ho, Wo, kh*kw*cin], (i, j, c) order = HWIO's flattening
    return jnp.dot(patches, w.reshape(kh * kw * cin, cout), preferred_element_type=jnp.float32)


def bf16(conv):
    def f(x, w, stride):
        return conv(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16), stride).astype(jnp.float32)

    return f


CONVS = {
    "xla_lax": conv_lax,
    "canonical": conv_canonical,
    "im2col": conv_im2col,
    "canonical_bf16": bf16(conv_canonical),
    "im2col_bf16": bf16(conv_im2col),
    "canonical_bndot": conv_canonical,  # blocks only: BatchNorm's reductions as matmuls (batch_norm_dot)
}


def batch_norm(x, scale, bias, eps=1e-5):
    mean = jnp.mean(x, (0, 1, 2))
    var = jnp.mean(jnp.square(x - mean), (0, 1, 2))
    return (x - mean) * lax.rsqrt(var + eps) * scale + bias


def batch_norm_dot(x, scale, bias, eps=1e-5):
    """Training-mode BatchNorm as the zoo computes it on CPU (``jaxkd.models.layers.BatchNorm``): its five
    per-channel sums (two forward, three backward) are ones-vector matmuls under a custom VJP."""
    c = x.shape[-1]
    return _bn_train(x.reshape(-1, c), scale, bias, eps)[0].reshape(x.shape)


def layer_fn(conv, stride):
    def loss(x, params, g):
        return jnp.sum(conv(x, params["w"], stride) * g)

    return loss


def block_fn(conv, stride, batch_norm=batch_norm):
    """CIFAR ResNet basic block in training mode: conv-BN-ReLU-conv-BN + shortcut, ReLU."""

    def loss(x, p, g):
        y = jax.nn.relu(batch_norm(conv(x, p["w1"], stride), p["s1"], p["b1"]))
        y = batch_norm(conv(y, p["w2"], 1), p["s2"], p["b2"])
        sc = x if stride == 1 else batch_norm(conv_1x1(x, p["ws"], stride), p["ss"], p["bs"])
        return jnp.sum(jax.nn.relu(y + sc) * g)

    return loss


def conv_1x1(x, w, stride):
    return jnp.dot(x[:, ::stride, ::stride, :], w, preferred_element_type=jnp.float32)


def make_inputs(shape, batch, kind, key):
    h, cin, cout, stride = shape
    ho = (h - 1) // stride + 1
    ks = jax.random.split(key, 8)
    x = jax.random.normal(ks[0], (batch, h, h, cin))
    g = jax.random.normal(ks[1], (batch, ho, ho, cout))
    std = (2.0 / (9 * cout)) ** 0.5
    if kind == "layer":
        return x, {"w": std * jax.random.normal(ks[2], (3, 3, cin, cout))}, g
    p = {
        "w1": std * jax.random.normal(ks[2], (3, 3, cin, cout)),
        "w2": std * jax.random.normal(ks[3], (3, 3, cout, cout)),
        "s1": jnp.ones(cout),
        "b1": jnp.zeros(cout),
        "s2": jnp.ones(cout),
        "b2": jnp.zeros(cout),
    }
    if stride != 1:
        p |= {
            "ws": (2.0 / cout) ** 0.5 * jax.random.normal(ks[4], (cin, cout)),
            "ss": jnp.ones(cout),
            "bs": jnp.zeros(cout),
        }
    return x, p, g


def flops_of(shape, batch, kind):
    h, cin, cout, stride = shape
    ho = (h - 1) // stride + 1
    one = 2 * batch * ho * ho * cout * cin * 9
    if kind == "layer":
        return 3 * one
    second = 2 * batch * ho * ho * cout * cout * 9
    sc = 2 * batch * ho * ho * cout * cin if stride != 1 else 0
    return 3 * (one + second + sc)


def hlo_census(compiled) -> dict:
    text = compiled.as_text()
    calls = re.findall(r'custom_call_target="([^"]+)"', text)
    kinds = re.findall(r"kind=(k\w+)", text)
    backend = re.findall(r'"kind"\s*:\s*"(__\w+)"', text)
    out = {"convolutions": len(re.findall(r"\bconvolution\(", text)), "dots": len(re.findall(r"\bdot\(", text))}
    out["custom_calls"] = {c: calls.count(c) for c in sorted(set(calls))}
    out["fusion_kinds"] = {k: kinds.count(k) for k in sorted(set(kinds))}
    if backend:
        out["backend_configs"] = {k: backend.count(k) for k in sorted(set(backend))}
    out["xnn_mentions"] = len(re.findall(r"xnn", text, re.I))
    out["onednn_mentions"] = len(re.findall(r"onednn", text, re.I))
    return out


class XlaProgram:
    def __init__(self, name, loss, args, options, context):
        self.name = name
        grad = jax.value_and_grad(loss, argnums=(0, 1))
        if context == "loop":
            x, p, g = args
            args = (jnp.stack([x + 0.01 * i for i in range(LOOP)]), p, g)

            def fn(xs, p, g):
                return lax.map(lambda x: grad(x, p, g), xs)

            self.per_call = LOOP
        else:
            fn, self.per_call = grad, 1
        t = time.perf_counter()
        self.compiled = jax.jit(fn).lower(*args).compile(compiler_options=OPTIONS[options] or None)
        self.compile_s = time.perf_counter() - t
        self.args = args
        self.census = hlo_census(self.compiled)
        self.out = jax.block_until_ready(self.compiled(*args))

    def call(self):
        t = time.perf_counter()
        jax.block_until_ready(self.compiled(*self.args))
        return (time.perf_counter() - t) / self.per_call

    def result(self):
        (loss, (dx, dp)) = self.out
        if self.per_call > 1:
            loss, dx, dp = loss[0], dx[0], jax.tree.map(lambda a: a[0], dp)
        return np.asarray(loss), np.asarray(dx), {k: np.asarray(v) for k, v in dp.items()}


# --- PyTorch ----------------------------------------------------------------------------------------------------


class TorchProgram:
    def __init__(self, torch, name, kind, shape, args, channels_last, bf16):
        self.torch, self.name, self.per_call = torch, name, 1
        h, cin, cout, stride = shape
        x, p, g = (np.asarray(a) if not isinstance(a, dict) else {k: np.asarray(v) for k, v in a.items()} for a in args)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.x = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).to(memory_format=fmt).requires_grad_(True)
        self.g = torch.from_numpy(g.transpose(0, 3, 1, 2).copy()).to(memory_format=fmt)
        self.p = {}
        for k, v in p.items():
            t = torch.from_numpy(
                v.transpose(3, 2, 0, 1).copy()
                if v.ndim == 4
                else (v.T[:, :, None, None].copy() if v.ndim == 2 else v.copy())
            )
            if t.ndim == 4:
                t = t.to(memory_format=fmt)
            self.p[k] = t.requires_grad_(True)
        self.kind, self.stride, self.bf16 = kind, stride, bf16
        self.out = self.run()

    def forward(self):
        F, s, p = self.torch.nn.functional, self.stride, self.p
        if self.kind == "layer":
            return F.conv2d(self.x, p["w"], stride=s, padding=1)
        y = F.relu(F.batch_norm(F.conv2d(self.x, p["w1"], stride=s, padding=1), None, None, p["s1"], p["b1"], True))
        y = F.batch_norm(F.conv2d(y, p["w2"], padding=1), None, None, p["s2"], p["b2"], True)
        sc = self.x if s == 1 else F.batch_norm(F.conv2d(self.x, p["ws"], stride=s), None, None, p["ss"], p["bs"], True)
        return F.relu(y + sc)

    def run(self):
        torch = self.torch
        self.x.grad = None
        for v in self.p.values():
            v.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            loss = (self.forward().float() * self.g).sum()
        loss.backward()
        return loss

    def call(self):
        t = time.perf_counter()
        self.run()
        return time.perf_counter() - t

    def result(self):
        dx = self.x.grad.numpy().transpose(0, 2, 3, 1)
        dp = {}
        for k, v in self.p.items():
            a = v.grad.numpy()
            if k == "ws":  # 1x1 shortcut: torch [Cout, Cin, 1, 1] -> [Cin, Cout]
                dp[k] = a[:, :, 0, 0].T
            else:  # OIHW -> HWIO, or a BN vector as it is
                dp[k] = a.transpose(2, 3, 1, 0) if a.ndim == 4 else a
        return float(self.out.detach()), dx, dp


def teacher_batching(batch, quick, repeats, options) -> list[dict]:
    """The shared teacher's eval-mode forward pass: 4 seeds' batches one after another vs one batch of 4x the size.

    In a KD sweep with one teacher, its weights are the same for every seed, so its forward pass could run once per
    step on all seeds' (differently augmented) inputs. This measures what that is worth on this CPU, with the zoo's
    resnet32x4 (the cnn_sweep teacher) at 32x32, before any engine change.
    """
    from jaxkd.models import make_model

    size, name = (16, "resnet8x4") if quick else (32, "resnet32x4")
    model = make_model(name, (size, size, 3), 100)
    params, rest = model.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (LOOP, batch, size, size, 3))

    def fwd(x):
        return model.apply(params, rest, x, train=False)[0]

    programs = {
        "4 x batch, lax.map": (lambda xs: lax.map(fwd, xs), xs),
        "1 x 4*batch": (lambda xs: fwd(xs.reshape(-1, *xs.shape[2:])).reshape(LOOP, batch, -1), xs),
    }
    rows = []
    for opt in options:
        if opt in CRASHES:
            rows.append({"model": name, "options": opt, "error": f"skipped: {CRASHES[opt]}"})
            continue
        try:
            compiled = {
                k: jax.jit(f).lower(a).compile(compiler_options=OPTIONS[opt] or None) for k, (f, a) in programs.items()
            }
        except Exception as e:  # an option this jaxlib rejects: recorded, not fatal
            rows.append({"model": name, "options": opt, "error": str(e).splitlines()[0]})
            continue
        outs = {k: np.asarray(c(programs[k][1])) for k, c in compiled.items()}
        times = {k: [] for k in compiled}
        for _ in range(repeats):
            for k, c in compiled.items():
                t = time.perf_counter()
                jax.block_until_ready(c(programs[k][1]))
                times[k].append(time.perf_counter() - t)
        ref = outs["4 x batch, lax.map"]
        for k in compiled:
            sec = statistics.median(times[k])
            diff = float(np.max(np.abs(outs[k] - ref)))
            row = {"model": name, "options": opt, "program": k, "images": LOOP * batch, "seconds": sec}
            rows.append(row | {"images_per_s": LOOP * batch / sec, "max_logit_diff": diff})
        log(f"teacher {name} [{opt}]: " + ", ".join(f"{r['program']} {r['images_per_s']:.0f} img/s" for r in rows[-2:]))
    return rows


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def compare(res, ref):
    loss, dx, dp = res
    rl, rdx, rdp = ref
    errs = {"loss": float(abs(float(loss) - float(rl)) / max(abs(float(rl)), 1e-30)), "dx": rel_err(dx, rdx)}
    errs["dparams"] = max(rel_err(dp[k], rdp[k]) for k in rdp)
    return errs


def main():
    torch = None
    try:
        import torch as _torch

        torch = _torch
        torch.set_num_threads(os.cpu_count())
    except ImportError:
        log("PyTorch not installed: its rows are skipped (pip install -e '.[bench-torch]')")
    impls = ARGS.impls.split(",")
    options = ARGS.options.split(",")
    contexts = ARGS.contexts.split(",")
    batch = 8 if ARGS.quick else ARGS.batch
    repeats = 3 if ARGS.quick else ARGS.repeats
    shapes = QUICK_SHAPES if ARGS.quick else SHAPES
    t0 = time.time()
    out = {"env": env_stamp(), "argv": sys.argv[1:], "batch": batch, "repeats": repeats, "nominal": nominal_peaks()}
    log("matmul peaks")
    out["matmul"] = matmul_peaks(torch)
    log("  " + ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in out["matmul"].items()))
    rows = []
    for kind in ARGS.kinds.split(",") if "layers" in ARGS.sections else ():
        for shape in shapes:
            if kind == "block" and shape[0] != shapes[0][0] and shape[3] == 1:
                continue  # blocks: the first stage's block and the downsampling block
            args = make_inputs(shape, batch, kind, jax.random.key(0))
            flops = flops_of(shape, batch, kind)
            programs = []
            for impl in impls:
                if impl == "torch":
                    if torch is None:
                        continue
                    for cl in (False, True):
                        programs.append(
                            TorchProgram(torch, "torch_nhwc" if cl else "torch_nchw", kind, shape, args, cl, False)
                        )
                    programs.append(TorchProgram(torch, "torch_bf16", kind, shape, args, True, True))
                    continue
                if impl.endswith("_bndot"):
                    if kind == "layer":
                        continue
                    loss = block_fn(CONVS[impl], shape[3], batch_norm_dot)
                else:
                    loss = (layer_fn if kind == "layer" else block_fn)(CONVS[impl], shape[3])
                for opt in options:
                    for ctx in contexts:
                        if impl == "xla_lax" and ctx == "loop" and not ARGS.slow:
                            continue  # its gradient convolutions take XLA:CPU's slow generic path in a loop body
                        name = f"{impl}/{opt}/{ctx}"
                        try:
                            programs.append(XlaProgram(name, loss, args, opt, ctx))
                        except Exception as e:  # an option this jaxlib rejects: recorded, not fatal
                            rows.append(
                                {"kind": kind, "shape": shape, "program": name, "error": str(e).splitlines()[0]}
                            )
            ref = next(p for p in programs if p.name.startswith("xla_lax/default/top")).result()
            times = {p.name: [] for p in programs}
            for _ in range(repeats):
                for p in programs:
                    times[p.name].append(p.call())
            for p in programs:
                s = statistics.median(times[p.name])
                row = {"kind": kind, "shape": shape, "program": p.name, "seconds": s, "flops": flops}
                row["spread"] = (max(times[p.name]) - min(times[p.name])) / s
                row["gflops_per_s"] = flops / s / 1e9
                row["errors_vs_xla_lax"] = compare(p.result(), ref)
                if isinstance(p, XlaProgram):
                    row["compile_s"], row["census"] = p.compile_s, p.census
                rows.append(row)
            best = min(
                (r for r in rows if r.get("shape") == shape and r["kind"] == kind and "seconds" in r),
                key=lambda r: r["seconds"],
            )
            log(f"{kind} {shape}: best {best['program']} {best['gflops_per_s']:.1f} GFLOP/s")
            del programs
            gc.collect()
            jax.clear_caches()
            write(out | {"rows": rows, "partial": True})
    out["rows"] = rows
    if "teacher" in ARGS.sections:
        out["teacher"] = teacher_batching(batch, ARGS.quick, repeats, options)
    out["wall_s"] = time.time() - t0
    write(out)
    print(table(out))


def write(out):
    """The JSON so far (after every shape, so that a run cut short keeps what it measured)."""
    if ARGS.out:
        os.makedirs(os.path.dirname(os.path.abspath(ARGS.out)), exist_ok=True)
        with open(ARGS.out + ".tmp", "w") as f:
            f.write(json.dumps(out, indent=1, default=str))
        os.replace(ARGS.out + ".tmp", ARGS.out)


def table(out) -> str:
    peak = max(v for k, v in out["matmul"].items() if "float32" in k)
    nom = out["nominal"].get("fp32_fma_flops")
    lines = [
        f"measured fp32 matmul peak {peak / 1e9:.1f} GFLOP/s; nominal FMA peak {nom / 1e9 if nom else float('nan'):.1f}"
    ]
    lines.append("| kind | shape (H, Cin, Cout, stride) | program | ms | GFLOP/s | % measured | % nominal | err dx |")
    lines.append("|---|---|---|---:|---:|---:|---:|---:|")
    for r in out["rows"]:
        if "seconds" not in r:
            lines.append(f"| {r['kind']} | {r['shape']} | {r['program']} | error: {r['error'][:60]} |")
            continue
        g = r["gflops_per_s"] * 1e9
        lines.append(
            f"| {r['kind']} | {tuple(r['shape'])} | {r['program']} | {1e3 * r['seconds']:.1f} | {g / 1e9:.1f} | "
            f"{100 * g / peak:.0f} | {100 * g / nom if nom else float('nan'):.0f} | "
            f"{r['errors_vs_xla_lax']['dx']:.1e} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
