"""A prepared GPU check: the cnn_sweep workload and one cifar_kd ``paper`` epoch, timed on one GPU, into one JSON.

Run it through ``benchmarks/gpu_check.sh`` (which sets the path, checks the
imports and bounds the wall time); docs/gpu_check.md says how to bring the
wheels to a machine without network. Sections, each with its own time
budget (a section that fails or runs out of time records why, the rest go on):

device            the device's name, memory, nominal peak FLOP/s (the table
                  below, by name) and a measured matmul rate per dtype
cnn_sweep_jax     benchmarks/cnn_sweep.py's workload (resnet32x4 -> resnet8x4
                  KD, live shared teacher, 8 seeds, batch 64, 32x32, crop+flip,
                  SGD momentum), its classes reused by import: ``loop`` (one
                  ``jit(train_step)`` call per seed per step), ``vmap`` (the
                  engine's sweep program, seeds vmapped) and ``map`` (the same
                  program, seeds one after another with ``lax.map``), each in
                  float32 and bfloat16 compute. Images/s over all seeds;
                  achieved FLOP/s = seeds x F_step / s per step, F_step from
                  XLA's ``cost_analysis()`` of the loop's one-seed program on
                  this device, as a fraction of the nominal peak (TF32 tensor
                  peak for float32, which XLA's default precision uses on
                  GPUs; bfloat16 peak for bfloat16); memory per seed from
                  ``memory_analysis()``
cnn_sweep_torch   the same workload as cnn_sweep's plain PyTorch loop, moved to
                  the GPU (float32, and bfloat16 under ``torch.autocast``);
                  skipped with the reason when torch is absent or has no CUDA
cifar_kd_paper    the ``paper`` preset's first pair (resnet32x4 -> resnet8x4),
                  all its methods as grid points x its 5 seeds in one program,
                  live teacher, batch 64, on ``procedural32`` (no download),
                  and the teacher's own training step: timed in chunks of
                  ``--paper-chunk`` steps for up to one epoch (extrapolated to
                  the epoch when the budget ends first), and the full paper
                  run projected from it (evaluation and compilation apart)

Nominal peaks are the vendors' datasheet figures for dense math (no
sparsity), not measurements. Where the device is not in the table (a CPU in
``--dry-run``), fractions are of the matmul rate measured in the same run,
and say so (``peak_source``).

Usage::

    bash benchmarks/gpu_check.sh --out gpu_check.json          # on the GPU machine, under 8 minutes
    bash benchmarks/gpu_check.sh --dry-run --out /tmp/dry.json  # CPU, tiny sizes, same keys
    python benchmarks/gpu_check.py --tiny --out /tmp/t.json     # smaller still (the test)

Runtime: the default run is bounded by ``--budget`` (400 s; a compilation in
progress is not interrupted) and by the shell's 440 s limit, under 8 minutes
with the start-up checks. Not yet run on a GPU. On the 2-core CPU VM shared
with other jobs (2026-12-06): ``--dry-run`` 52 s at load average 3.5 and
120 s at 9; ``--tiny`` 50 s at 3.5 and 99 s at 8.6, mostly compiling its 13
XLA programs.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import traceback

SECTIONS = ("device", "cnn_sweep_jax", "cnn_sweep_torch", "cifar_kd_paper")
# Each section's share of the run's budget (at most; the last section run takes whatever is left).
SHARES = {"device": 0.05, "cnn_sweep_jax": 0.45, "cnn_sweep_torch": 0.10, "cifar_kd_paper": 0.40}
JAX_VARIANTS = ("loop", "vmap", "map")  # loop first: its one-seed program gives F_step
DTYPES = ("float32", "bfloat16")

# Nominal dense peak FLOP/s (no sparsity) from the vendors' datasheets, per device-name pattern, first match wins
# (GH200 before H200, NVL/PCIe before the plain SXM names). tf32/bf16: tensor cores; fp32: CUDA cores.
TERA = 1e12
NOMINAL_PEAKS = (
    (r"GH200", "GH200 (H100 SXM compute)", {"fp32": 67 * TERA, "tf32": 494.7 * TERA, "bf16": 989.4 * TERA}),
    (r"H200 NVL", "H200 NVL", {"fp32": 60 * TERA, "tf32": 417.5 * TERA, "bf16": 835.5 * TERA}),
    (r"H200", "H200 SXM", {"fp32": 67 * TERA, "tf32": 494.7 * TERA, "bf16": 989.4 * TERA}),
    (r"H100 NVL", "H100 NVL", {"fp32": 60 * TERA, "tf32": 417.5 * TERA, "bf16": 835.5 * TERA}),
    (r"H100 PCIe", "H100 PCIe", {"fp32": 51 * TERA, "tf32": 378 * TERA, "bf16": 756 * TERA}),
    (r"H100", "H100 SXM", {"fp32": 67 * TERA, "tf32": 494.7 * TERA, "bf16": 989.4 * TERA}),
    (r"A100", "A100", {"fp32": 19.5 * TERA, "tf32": 156 * TERA, "bf16": 312 * TERA}),
    (r"L40S", "L40S", {"fp32": 91.6 * TERA, "tf32": 183 * TERA, "bf16": 362 * TERA}),
    (r"L40\b", "L40", {"fp32": 90.5 * TERA, "tf32": 90.5 * TERA, "bf16": 181 * TERA}),
    (r"\bL4\b", "L4", {"fp32": 30.3 * TERA, "tf32": 60 * TERA, "bf16": 121 * TERA}),
    (r"\bA10\b", "A10", {"fp32": 31.2 * TERA, "tf32": 62.5 * TERA, "bf16": 125 * TERA}),
    (r"\bA30\b", "A30", {"fp32": 10.3 * TERA, "tf32": 82 * TERA, "bf16": 165 * TERA}),
    (r"V100", "V100 (no tf32/bf16 tensor cores)", {"fp32": 15.7 * TERA}),
    (r"\bT4\b", "T4 (no tf32/bf16 tensor cores)", {"fp32": 8.1 * TERA}),
)
PEAK_KIND = {"float32": "tf32", "bfloat16": "bf16"}  # the peak a dtype's convolutions and matmuls can reach


def nominal_peaks(device_name: str) -> tuple[str, dict] | None:
    """``(entry, {"fp32"|"tf32"|"bf16": FLOP/s})`` of the first table pattern found in ``device_name``, or None."""
    for pattern, entry, peaks in NOMINAL_PEAKS:
        if re.search(pattern, device_name):
            return entry, peaks
    return None


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="gpu_check.json", help="the JSON written (rewritten after every section)")
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, every section, the same JSON keys")
    p.add_argument("--tiny", action="store_true", help="--dry-run at the smallest sizes (the test)")
    p.add_argument("--budget", type=float, default=None, help="seconds for all sections (default 400; dry: 240)")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {', '.join(SECTIONS)}")
    p.add_argument("--seeds", type=int, default=None, help="cnn_sweep seeds (default 8; dry: 2)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per cnn_sweep variant (default 10; dry: 2)")
    p.add_argument("--torch-seeds", type=int, default=2, help="seeds the PyTorch loop runs, one after another")
    p.add_argument("--paper-seeds", type=int, default=None, help="paper seeds (default: the preset's 5; dry: 2)")
    p.add_argument("--paper-methods", default=None, help="comma list (default: the preset's 16; dry: ce,kd)")
    p.add_argument("--paper-chunk", type=int, default=37, help="steps per timed call (rounded to a divisor)")
    args = p.parse_args(argv)
    args.dry_run = args.dry_run or args.tiny
    bad = [s for s in args.sections.split(",") if s not in SECTIONS]
    if bad:
        p.error(f"unknown section(s) {', '.join(bad)}; choose from {', '.join(SECTIONS)}")
    return args


def sizes(args) -> dict:
    """The run's sizes: the workload's on a GPU, shrunk for ``--dry-run`` and more for ``--tiny``."""
    if not args.dry_run:
        s = dict(seeds=8, batch=64, image_size=32, steps=10, warmup=1, budget=400.0, matmul_n=8192)
        s.update(teacher=None, student=None, widths=(None, None))  # cnn_sweep's pair at full size
        s.update(paper_pair=None, paper_num_train=None, paper_widths=None, paper_chunk=args.paper_chunk)
        s["paper_max_calls"] = None  # the whole epoch, unless the budget ends first
    else:
        tiny = args.tiny
        s = dict(seeds=2, batch=4 if tiny else 8, image_size=8 if tiny else 16, steps=1 if tiny else 2, warmup=1)
        s.update(budget=240.0, matmul_n=256, paper_num_train=1000, paper_chunk=2, paper_max_calls=3)
        # Shallow teachers: XLA:CPU compiles a 32-layer network's step for tens of seconds.
        s.update(teacher="resnet8", student=None, paper_pair="resnet8:resnet8x4")
        s["widths"] = s["paper_widths"] = ((2, 2, 4, 4), (2, 2, 2, 2)) if tiny else ((4, 4, 8, 8), (2, 2, 4, 4))
    s["seeds"] = args.seeds or s["seeds"]
    s["steps"] = args.steps or s["steps"]
    s["budget"] = args.budget or s["budget"]
    return s


# --- bookkeeping ------------------------------------------------------------------------------------------------


class SectionTimeout(Exception):
    """A section ran past its hard limit (SIGALRM), or the run was told to stop (SIGTERM)."""


def _raise_timeout(signum, _frame):
    raise SectionTimeout("stopped by SIGTERM (the shell's time limit)" if signum == signal.SIGTERM else "hard limit")


def write_json(result: dict, out: str) -> None:
    """Atomically: write a sibling file, flush it to disk, rename it over ``out``."""
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = f"{out}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=2, default=lambda x: float(x) if hasattr(x, "__float__") else str(x))
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out)


def log(msg):
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def ratio(a, b):
    return a / b if a is not None and b else None


class Clock:
    """The run's deadline and each section's share of what is left."""

    def __init__(self, budget):
        self.start, self.budget = time.perf_counter(), budget
        self.deadline = self.start + budget

    def left(self):
        return self.deadline - time.perf_counter()


def run_section(result, name, fn, clock, out, budget):
    """Run ``fn(sec, deadline)`` as section ``name``: its status, seconds and error recorded, the JSON rewritten."""
    budget = max(budget, 0.0)
    sec = result["sections"][name] = {"status": "running", "budget_s": budget}
    write_json(result, out)
    t = time.perf_counter()
    # A soft deadline the section checks between calls, and a hard one (SIGALRM, 60 s later) for a call that
    # overruns; a compilation in progress is not interrupted by either (the shell's timeout bounds the whole).
    signal.alarm(max(1, math.ceil(budget + 60)))
    try:
        if budget < 1:
            raise SectionTimeout("no time left in the run's budget")
        fn(sec, time.perf_counter() + budget)  # fills ``sec`` as it goes: a failure keeps what was measured
        sec["status"] = "skipped" if sec.get("status") == "skipped" else "ok"
    except Exception as e:  # a failing section records its error; the rest go on
        sec["status"] = "error"
        sec["error"] = f"{type(e).__name__}: {e}"
        sec["traceback"] = traceback.format_exc(limit=6)
        log(f"{name}: {sec['error']}")
    finally:
        signal.alarm(0)
    sec["seconds"] = time.perf_counter() - t
    log(f"{name}: {sec['status']} in {sec['seconds']:.1f} s")
    write_json(result, out)


def load_cnn_sweep():
    """benchmarks/cnn_sweep.py as a module; it parses its own command line at import, so it is given none."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cnn_sweep.py")
    spec = importlib.util.spec_from_file_location("cnn_sweep", path)
    module = importlib.util.module_from_spec(spec)
    argv = sys.argv
    sys.argv = [path]
    try:
        spec.loader.exec_module(module)
    finally:
        sys.argv = argv
    return module


# --- device -----------------------------------------------------------------------------------------------------


def matmul_rate(n, dtype, deadline, reps=10):
    """FLOP/s of an ``n x n`` matmul in ``dtype`` at JAX's default precision (best of 3 runs of ``reps``)."""
    import jax

    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), dtype)
    f = jax.jit(lambda a, b: a @ b)
    f(a, b).block_until_ready()
    best = None
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(reps):
            f(a, b).block_until_ready()
        dt = time.perf_counter() - t
        best = dt if best is None else min(best, dt)
        if time.perf_counter() > deadline:
            break
    return {"n": n, "dtype": dtype, "reps": reps, "flops_per_s": 2 * n**3 * reps / best}


def device_section(ctx, out, deadline) -> None:
    import jax

    dev = jax.devices()[0]
    stats = dev.memory_stats() or {}
    out |= {
        "platform": dev.platform,
        "name": dev.device_kind,
        "count": jax.device_count(),
        "memory_bytes": stats.get("bytes_limit"),
        "memory_source": "jax memory_stats()['bytes_limit'] (what XLA may allocate)" if stats else None,
    }
    if out["memory_bytes"] is None:  # a CPU: the host's physical memory
        out["memory_bytes"] = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        out["memory_source"] = "host physical memory (no accelerator memory_stats)"
    if dev.platform == "gpu":
        try:
            q = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=15,
            )
            out["nvidia_smi"] = q.stdout.strip() or q.stderr.strip()
        except (OSError, subprocess.SubprocessError) as e:
            out["nvidia_smi"] = f"not available: {e}"
    found = nominal_peaks(dev.device_kind)
    out["nominal_peak_entry"] = found[0] if found else None
    out["nominal_peak_flops_per_s"] = found[1] if found else None
    out["matmul"] = {}
    for dtype in DTYPES:
        out["matmul"][dtype] = matmul_rate(ctx["sizes"]["matmul_n"], dtype, deadline)
    ctx["device"] = out


def peak_for(ctx, dtype) -> tuple[float, str]:
    """``(FLOP/s, source)``: the nominal tensor peak for ``dtype``, else the matmul rate measured in this run."""
    dev = ctx.get("device") or {}
    nominal = dev.get("nominal_peak_flops_per_s") or {}
    kind = PEAK_KIND[dtype]
    if kind in nominal:
        return nominal[kind], f"nominal {kind} dense peak of {dev['nominal_peak_entry']} (datasheet, not measured)"
    if "fp32" in nominal:
        return nominal["fp32"], f"nominal fp32 peak of {dev['nominal_peak_entry']} (it has no {kind} tensor cores)"
    measured = (dev.get("matmul") or {}).get(dtype)
    if measured is None:
        measured = matmul_rate(ctx["sizes"]["matmul_n"], dtype, time.perf_counter() + 10)
    return measured["flops_per_s"], f"measured {measured['n']}^2 {dtype} matmul in this run (no nominal figure)"


# --- cnn_sweep in JAX -------------------------------------------------------------------------------------------


def cnn_trainer(cs, ctx, dtype):
    """cnn_sweep's trainer and initial states, at ``dtype`` compute (models) and the run's sizes."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from jaxkd.config import ModelConfig
    from jaxkd.models import make_model
    from jaxkd.teacher import Teacher
    from jaxkd.train import make_train

    s = ctx["sizes"]
    teacher, student = s["teacher"] or cs.TEACHER, s["student"] or cs.STUDENT
    widths = {"teacher": s["widths"][0], "student": s["widths"][1]}
    ds = cs.synthetic_dataset(s["image_size"], cs.STEPS_PER_DATA_EPOCH * s["batch"])
    t_model = make_model(teacher, ds.in_shape, cs.NUM_CLASSES, widths["teacher"], dtype)
    if "teacher_init" not in ctx:  # the same float32 weights for every compute dtype; drawn once (seconds on a CPU)
        ctx["teacher_init"] = t_model.init(jax.random.key(0))  # speed only: a frozen random teacher, as cnn_sweep's
    t_params, t_rest = ctx["teacher_init"]
    base = cs.student_config(widths["student"])
    config = dataclasses.replace(
        base,
        model=ModelConfig(student, widths["student"], dtype),
        recipe=dataclasses.replace(base.recipe, batch_size=s["batch"]),
    )
    trainer = make_train(config, ds, Teacher(t_model, t_params, t_rest))
    # Every dtype starts from the same initial states (parameters stay float32; dtype is the compute dtype).
    spec = jax.eval_shape(lambda: cs.seed_states(trainer, jax.random.key(1), s["seeds"]))
    cached = ctx.get("seed_states")
    same = cached is not None and jax.tree.structure(cached) == jax.tree.structure(spec)
    same = same and all(
        a.shape == b.shape and a.dtype == b.dtype for a, b in zip(jax.tree.leaves(cached), jax.tree.leaves(spec))
    )
    init = jax.tree.map(jnp.copy, cached) if same else cs.seed_states(trainer, jax.random.key(1), s["seeds"])
    ctx["seed_states"] = init
    return trainer, init, (nnx.to_pure_dict(t_params), nnx.to_pure_dict(t_rest)), widths


def time_variants(variants, s, deadline, skipped):
    """Warm-up calls, then timed calls round-robin until ``steps`` each or the deadline (at least one each)."""
    if not variants:
        return
    for name, v in list(variants.items()):
        for _ in range(s["warmup"]):
            v.warm.append(v.call())
        log(f"  {name}: warm-up {v.warm[-1]:.3f} s")
    for _ in range(s["steps"]):
        if time.perf_counter() > deadline and all(v.times for v in variants.values()):
            skipped.append(
                f"timing stopped at the section's budget after {min(len(v.times) for v in variants.values())} steps"
            )
            break
        for v in variants.values():
            v.times.append(v.call())


def variant_metrics(v, batch, f_step, peak, peak_source) -> dict:
    sec = statistics.median(v.times) if v.times else None
    facts = v.facts()
    mem = facts["memory"]
    losses = v.first_losses or []
    return {
        "description": v.description,
        "seeds": v.seeds,
        "compile_s": facts["compile_s"],
        "first_call_s": v.warm[0] if v.warm else None,
        "seconds_all": v.times,
        "seconds_per_step": sec,
        "images_per_s": ratio(v.seeds * batch, sec),
        "flops_per_s": ratio(v.seeds * f_step, sec) if f_step else None,
        "fraction_of_peak": ratio(ratio(v.seeds * f_step, sec), peak) if f_step else None,
        "peak_flops_per_s": peak,
        "peak_source": peak_source,
        "program_flops": (facts["program_cost"] or {}).get("flops"),
        "memory": mem,
        "memory_per_seed_bytes": (mem["temp"] + mem["argument"] + mem["output"]) / v.program_seeds if mem else None,
        "first_step_losses": losses,
        "first_step_losses_finite": bool(losses) and all(math.isfinite(x) for x in losses),
    }


def cnn_jax_section(ctx, out, deadline) -> None:
    import jax

    cs, s = ctx["cs"], ctx["sizes"]
    out["settings"] = None
    for i, dtype in enumerate(DTYPES):
        dtype_deadline = time.perf_counter() + (deadline - time.perf_counter()) / (len(DTYPES) - i)
        res = out[dtype] = {"status": "running", "variants": {}, "skipped": []}
        try:
            trainer, init, _, widths = cnn_trainer(cs, ctx, dtype)
            out["settings"] = {
                "teacher": trainer.teacher.model.name,
                "student": trainer.model.name,
                "widths": widths,
                "seeds": s["seeds"],
                "batch": s["batch"],
                "image_size": s["image_size"],
                "timed_steps": s["steps"],
                "warmup_steps": s["warmup"],
                "objective": cs.KD,
                "recipe": cs.RECIPE,
                "teacher_live_shared": True,
            }
            peak, source = peak_for(ctx, dtype)
            variants = {}
            for name in JAX_VARIANTS:
                if time.perf_counter() > dtype_deadline:
                    res["skipped"].append(f"{name}: not compiled, the budget for {dtype} was spent")
                    continue
                log(f"cnn_sweep_jax {dtype}: compiling {name}")
                if name == "loop":
                    v = cs.StepLoopVariant(trainer, s["seeds"], init)
                else:
                    desc = "engine sweep program, one device, seeds " + (
                        "vmapped (vmap_width=None)" if name == "vmap" else "one after another in lax.map (vmap_width=1)"
                    )
                    width = None if name == "vmap" else 1
                    v = cs.EngineVariant(
                        name, trainer, s["seeds"], init, shard=False, vmap_width=width, description=desc
                    )
                variants[name] = v
            f_step = (variants["loop"].facts()["program_cost"] or {}).get("flops") if "loop" in variants else None
            if f_step is None:  # the loop was skipped: one seed's step compiled for its count only
                one = jax.jit(cs.step_program(trainer)).lower(
                    jax.tree.map(lambda a: a[0], init), cs.hparams_of(trainer), trainer.data, trainer.teacher_inputs
                )
                f_step = cs.cost(one.compile())["flops"]
            time_variants(variants, s, dtype_deadline, res["skipped"])
            res["flops_per_step_per_seed"] = f_step
            res["flops_per_image"] = f_step / s["batch"]
            res["variants"] = {n: variant_metrics(v, s["batch"], f_step, peak, source) for n, v in variants.items()}
            ips = {n: r["images_per_s"] for n, r in res["variants"].items()}
            res["speedups"] = {
                f"{a}_over_{b}": ratio(ips.get(a), ips.get(b))
                for a, b in (("vmap", "loop"), ("vmap", "map"), ("map", "loop"))
            }
            res["status"] = "ok"
            del variants, trainer, init
        except Exception as e:
            res["status"] = "error"
            res["error"] = f"{type(e).__name__}: {e}"
            res["traceback"] = traceback.format_exc(limit=6)
            log(f"cnn_sweep_jax {dtype}: {res['error']}")
            if isinstance(e, SectionTimeout):
                raise
    bad = [d for d in DTYPES if out[d]["status"] != "ok"]
    if len(bad) == len(DTYPES):
        raise RuntimeError(f"every dtype failed: {out[DTYPES[0]]['error']}")


# --- cnn_sweep in PyTorch ---------------------------------------------------------------------------------------


def torch_variant_class(cs):
    class TorchOnDevice(cs.TorchVariant):
        """cnn_sweep's PyTorch loop with its models and data on ``device``, optionally under autocast."""

        def __init__(self, torch, device, autocast, *args):
            super().__init__(torch, *args)
            self.device, self.autocast = device, autocast
            for net in (self.teacher, *self.students):
                net.to(device)  # parameters change in place, so the optimisers keep them
            self.x, self.y, self.mean, self.std = (t.to(device) for t in (self.x, self.y, self.mean, self.std))
            if autocast:
                self.description += f"; torch.autocast({device.type}, {autocast})"

        def one_step(self, i):
            with self.torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None):
                return super().one_step(i)  # returns float(loss): a host sync per step, so timings are complete

    return TorchOnDevice


def cnn_torch_section(ctx, out, deadline) -> None:
    try:
        import torch
    except ImportError:
        out |= {"status": "skipped", "reason": "torch is not installed"}
        return
    if torch.cuda.is_available():
        device = torch.device("cuda")
    elif ctx["args"].dry_run:
        device = torch.device("cpu")
    else:
        out |= {"status": "skipped", "reason": f"torch {torch.__version__} has no CUDA device (a CPU-only wheel?)"}
        return
    cs, s = ctx["cs"], ctx["sizes"]
    torch.backends.cudnn.benchmark = True
    trainer, init, teacher_pure, _ = cnn_trainer(cs, ctx, "float32")
    f_step = None
    jax_sec = ctx["result"]["sections"].get("cnn_sweep_jax") or {}
    if (jax_sec.get("float32") or {}).get("flops_per_step_per_seed"):
        f_step = jax_sec["float32"]["flops_per_step_per_seed"]
    out |= {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "torch_version": torch.__version__,
        "cudnn_benchmark": True,
        "allow_tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32},
        "seeds": min(ctx["args"].torch_seeds, s["seeds"]),
        "flops_source": "the JAX float32 loop's cost_analysis() F_step (same workload)",
    }
    cls = torch_variant_class(cs)
    for dtype, autocast in (("float32", None), ("bfloat16", torch.bfloat16)):
        budget = (deadline - time.perf_counter()) / (2 if dtype == "float32" else 1)
        v = cls(torch, device, autocast, trainer, out["seeds"], init, *teacher_pure)
        for _ in range(max(s["warmup"], 3 if device.type == "cuda" else 1)):  # cudnn autotuning
            v.warm.append(v.call())
        stop = time.perf_counter() + budget
        while len(v.times) < s["steps"] and (not v.times or time.perf_counter() < stop):
            v.times.append(v.call())
        peak, source = peak_for(ctx, dtype)
        m = variant_metrics(v, s["batch"], f_step, peak, source)
        for k in ("compile_s", "program_flops", "memory", "memory_per_seed_bytes"):
            m.pop(k)
        out[dtype] = m
        del v
        if device.type == "cuda":
            torch.cuda.empty_cache()


# --- one cifar_kd paper epoch -----------------------------------------------------------------------------------


def largest_divisor_at_most(n, k):
    return max(d for d in range(1, min(n, max(k, 1)) + 1) if n % d == 0)


def paper_setup(ctx):
    """The paper preset's first pair on procedural32: its student and teacher trainers and the method grid."""
    import jax

    from experiments.cifar_kd import PRESETS
    from jaxkd import peer_terms
    from jaxkd.config import EvalConfig
    from jaxkd.data import load_dataset
    from jaxkd.data.procedural import load_procedural
    from jaxkd.models import make_model
    from jaxkd.study import fill_conditions
    from jaxkd.teacher import Teacher
    from jaxkd.train import check_objective, make_train

    args, s = ctx["args"], ctx["sizes"]
    paper = PRESETS["paper"]
    # procedural32 refuses flips (its classes include mirror-image textures), so the paper's flip is off here.
    data = dataclasses.replace(paper.data, dataset="procedural32", flip=False)
    config = dataclasses.replace(paper, data=data, pairs=paper.pairs[:1])
    if args.paper_seeds:
        config = dataclasses.replace(config, n_seeds=args.paper_seeds)
    methods = args.paper_methods.split(",") if args.paper_methods else None
    if args.dry_run:
        tw, sw = s["paper_widths"]
        config = dataclasses.replace(
            config, pairs=(s["paper_pair"],), n_seeds=args.paper_seeds or 2, teacher_widths=tw, student_widths=sw
        )
        methods = methods or ["ce", "kd"]
    if methods:
        config = dataclasses.replace(config, methods=tuple(methods))
    if s["paper_num_train"]:
        n = s["paper_num_train"]
        dataset = load_procedural(resolution=32, num_train=n, num_test=n // 4)  # procedural32's generator, fewer images
    else:
        dataset = load_dataset("procedural32")
    pair = config.pairs[0]
    n_train = round(len(dataset.y_train) * (1 - config.data.val_fraction))
    steps_per_epoch = -(-n_train // config.recipe.batch_size)
    t_cfg, s_cfg = config.run_configs(pair, steps_per_epoch=steps_per_epoch, image_size=dataset.in_shape[0])
    if peer_terms.needs_run_sizes(config.student_terms(pair, steps_per_epoch=1)):
        n, _, per_epoch = peer_terms.run_sizes(s_cfg, dataset)
        t_cfg, s_cfg = config.run_configs(pair, steps_per_epoch=per_epoch, image_size=dataset.in_shape[0], num_train=n)
    t_model = make_model(t_cfg.model.name, dataset.in_shape, dataset.num_classes, t_cfg.model.widths, t_cfg.model.dtype)
    s_model = make_model(s_cfg.model.name, dataset.in_shape, dataset.num_classes, s_cfg.model.widths, s_cfg.model.dtype)
    check_objective(s_cfg, s_model, t_model)
    t_params, t_rest = t_model.init(jax.random.key(0))  # speed only: a frozen random teacher
    teacher = Teacher(t_model, t_params, t_rest)
    probe = make_train(s_cfg, dataset, teacher)  # the paper run's sizes (epoch = steps_per_epoch)
    chunk = largest_divisor_at_most(probe.steps_per_epoch, s["paper_chunk"])
    # Timing runs: evaluation every `chunk` steps on no split and no selection, so that a call is `chunk`
    # training steps (the paper run evaluates once per epoch; that evaluation is not in these times).
    timing_eval = EvalConfig(every=chunk, splits=(), select=None)
    s_trainer = make_train(dataclasses.replace(s_cfg, eval=timing_eval), dataset, teacher)
    t_trainer = make_train(dataclasses.replace(t_cfg, eval=timing_eval), dataset)
    conds = config.conditions(s_cfg.objective)
    filled = fill_conditions(s_trainer, conds)
    names = list(filled)
    grid = {k: [filled[c][k] for c in names] for k in filled[names[0]]}
    return config, pair, s_trainer, t_trainer, grid, names, chunk, dataset


def time_epoch(trainer, n_seeds, grid, chunk, deadline, key, max_calls=None) -> dict:
    """Up to one epoch of ``trainer``'s sweep in calls of ``chunk`` steps; the epoch extrapolated if cut short."""
    import jax

    from jaxkd.program import SweepProgram

    prog = SweepProgram(trainer, n_seeds, grid)
    t = time.perf_counter()
    compiled = prog.compiled_advance(chunk)
    compile_s = time.perf_counter() - t
    need = prog.check_memory(chunk)
    states = prog.init(key)
    jax.block_until_ready(states)
    calls, first_loss = [], None
    per_epoch = trainer.steps_per_epoch
    while len(calls) * chunk < per_epoch and (len(calls) < 2 or time.perf_counter() < deadline):
        if max_calls is not None and len(calls) >= max_calls:
            break
        t = time.perf_counter()
        states, hist = compiled(states, prog.hparams, prog.data, prog.teacher_inputs)
        jax.block_until_ready(states)
        calls.append(time.perf_counter() - t)
        if first_loss is None:
            first_loss = [float(x) for x in jax.device_get(hist["train/loss"]).reshape(-1)]
    steps_timed = len(calls) * chunk
    steady = calls[1:] or calls  # the first call may carry one-off work (autotuning, transfers)
    step_s = statistics.median(steady) / chunk
    epoch_s = sum(calls) + (per_epoch - steps_timed) * step_s
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return {
        "seeds": n_seeds,
        "grid_points": prog.grid_size,
        "runs": n_seeds * prog.grid_size,
        "vmap_width": prog.vmap_width,
        "compile_s": compile_s,
        "memory_bytes": need,
        "chunk_steps": chunk,
        "steps_per_epoch": per_epoch,
        "calls_s": calls,
        "steps_timed": steps_timed,
        "epoch_measured_fully": steps_timed >= per_epoch,
        "seconds_per_step": step_s,
        "epoch_s": epoch_s,
        "images_per_s": n_seeds * prog.grid_size * trainer.batch_size / step_s,
        "program_flops_per_step": float(cost["flops"]) / chunk if cost and "flops" in cost else None,
        "first_call_losses_finite": bool(first_loss) and all(math.isfinite(x) for x in first_loss),
    }


def paper_section(ctx, out, deadline) -> None:
    import jax

    from experiments.cifar_kd import PRESETS

    s = ctx["sizes"]
    pairs = PRESETS["paper"].pairs
    config, pair, s_trainer, t_trainer, grid, names, chunk, dataset = paper_setup(ctx)
    out |= {
        "pair": pair,
        "pairs_in_preset": list(pairs),
        "dataset": f"{dataset.name} ({len(dataset.y_train)} training images; stands in for CIFAR-100)",
        "batch": s_trainer.batch_size,
        "methods": names,
        "seeds": config.n_seeds,
        "epochs": s_trainer.steps / s_trainer.steps_per_epoch,
        "total_steps": s_trainer.steps,
    }
    key_t, key_s = jax.random.split(jax.random.key(config.seed))
    log(f"cifar_kd_paper: students, {config.n_seeds} seeds x {len(names)} methods, chunks of {chunk} steps")
    student_deadline = deadline - 0.15 * (deadline - time.perf_counter())  # the rest for the teacher
    out["students"] = time_epoch(s_trainer, config.n_seeds, grid, chunk, student_deadline, key_s, s["paper_max_calls"])
    log(f"cifar_kd_paper: teacher ({t_trainer.config.model.name})")
    out["teacher"] = time_epoch(t_trainer, 1, None, chunk, deadline, key_t, s["paper_max_calls"])
    epochs = out["epochs"]
    pair_s = (
        s_trainer.steps * out["students"]["seconds_per_step"] + t_trainer.steps * out["teacher"]["seconds_per_step"]
    )
    out["projection"] = {
        "what": (
            f"{epochs:g} epochs x (one student epoch: every method x seed in one program, + one teacher epoch) of the "
            "timed pair; compilation, the per-epoch evaluation and checkpointing are not included. The full paper "
            f"run has {len(pairs)} pairs; the others were not timed and are counted at this pair's cost, "
            "which likely overstates them (resnet32x4 -> resnet8x4 is the costliest pair by FLOPs)."
        ),
        "epoch_s_students": out["students"]["epoch_s"],
        "epoch_s_teacher": out["teacher"]["epoch_s"],
        "pair_s": pair_s,
        "pair_hours": pair_s / 3600,
        "full_run_s": len(pairs) * pair_s,
        "full_run_hours": len(pairs) * pair_s / 3600,
    }
    if ctx["args"].dry_run:
        out["projection"]["what"] += " Dry run: tiny widths and data, so the numbers only show the code runs."


# --- main -------------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    args = parse(argv)
    if args.dry_run:
        os.environ["JAX_PLATFORMS"] = "cpu"  # before jax initialises
    if args.dry_run:  # less XLA:CPU code optimisation: faster compiles; a dry run's timings mean nothing anyway
        flags = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()
    s = sizes(args)
    clock = Clock(s["budget"])
    signal.signal(signal.SIGALRM, _raise_timeout)
    signal.signal(signal.SIGTERM, _raise_timeout)
    cs = load_cnn_sweep()  # imports jax
    from jaxkd.results import env_stamp

    result = {
        "check": "gpu_check",
        "dry_run": args.dry_run,
        "tiny": args.tiny,
        "env": env_stamp(),
        "budget_s": s["budget"],
        "sizes": {k: v for k, v in s.items() if k != "budget"},
        "nominal_peaks_note": "datasheet dense peaks (no sparsity), not measurements; matched by device name",
        "sections": {},
    }
    ctx = {"args": args, "sizes": s, "cs": cs, "result": result}
    fns = {
        "device": device_section,
        "cnn_sweep_jax": cnn_jax_section,
        "cnn_sweep_torch": cnn_torch_section,
        "cifar_kd_paper": paper_section,
    }
    chosen = [n for n in SECTIONS if n in args.sections.split(",")]
    for i, name in enumerate(chosen):
        last = i == len(chosen) - 1
        budget = clock.left() if last else min(clock.left(), SHARES[name] * clock.budget)
        run_section(result, name, lambda sec, d, f=fns[name]: f(ctx, sec, d), clock, args.out, budget)
    result["total_seconds"] = time.perf_counter() - clock.start
    result["complete"] = all(sec["status"] in ("ok", "skipped") for sec in result["sections"].values())
    write_json(result, args.out)
    log(
        f"wrote {args.out} ({result['total_seconds']:.0f} s; "
        + ", ".join(f"{n}: {v['status']}" for n, v in result["sections"].items())
        + ")"
    )
    return 0 if result["complete"] else 1


if __name__ == "__main__":
    sys.exit(main())
