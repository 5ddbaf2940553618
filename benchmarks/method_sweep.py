"""Benchmark: a method comparison's sweep (``cifar_kd``'s students) with and without the shared teacher pass.

A ``cifar_kd`` preset (``--preset``, default ``default``: resnet20 → resnet8 at
widths (8, 8, 16, 32) → (4, 4, 8, 16) on ``procedural16``, 10 classes, batch 64,
4 seeds × 6 methods, a live teacher, random crops) trains every method's
students as one sweep: seed s has the same data order and step keys under
every method, so every method's step at seed s sees the same augmented batch
and the same teacher outputs. The programs timed, all on the same seeds,
initial states and keys, built from the preset's own configuration (the
teacher randomly initialised: only speed is measured):

students_shared    the engine's default: per seed and step, the batch and the
                   teacher's forward pass once, then each method's student step
                   (``SweepProgram(share_teacher=True)``), with the preset's
                   convolutions (``Config.direct_conv``: on CPU, few-channel
                   convolutions as fused multiply-adds,
                   :func:`jaxkd.models.layers.direct_conv`)
students_xla_conv  the same with XLA's convolutions throughout (the program
                   before 2026-12-07)
students_per_run   every (seed, method) run on its own, teacher pass included
                   (``share_teacher=False``, XLA's convolutions: the program
                   before 2026-12-06)
teacher_sharded    the teacher's own training sweep (one seed) as the engine
                   ran it before 2026-12-06: sharded over every host device,
                   the seed padded to one per device
teacher_unsharded  the same seed on one device, as the engine runs it now
                   (``SweepProgram(shard=True)`` shards over at most as many
                   devices as there are seeds), the preset's convolutions
teacher_xla_conv   the same with XLA's convolutions throughout

Each program is compiled under its own convolution choice and keeps it (an
ahead-of-time compiled program does not retrace); ``env`` in the JSON is
stamped outside them, so each program's ``direct_conv`` says what it ran.
``students_shared`` had XLA's convolutions before 2026-12-07 (its results
then: ``method_sweep_cpu.json``).

Timing: each program is compiled ahead of time (``compile_s``), called once
(excluded), then ``--calls`` times, round-robin over the programs so that a
change in machine load hits them alike; every call advances one evaluation
interval (the preset's ``eval.every`` steps, evaluation included).
``seconds_per_step`` is the median call over its steps. Ratios are taken
within the run. Checks (``checks``): the student programs' histories after
their first call, each against ``students_xla_conv`` (and the teachers' against
``teacher_xla_conv``): the shared pass and the one-device teacher agree to
float round-off, the direct convolutions differ by round-off that training
amplifies (compare the losses, not the accuracies, after one call).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None, help="write the JSON here (default: stdout only)")
    p.add_argument("--preset", default="default", help="the cifar_kd preset whose students are timed")
    p.add_argument("--calls", type=int, default=3, help="timed calls per program (median)")
    p.add_argument(
        "--programs",
        default="students_shared,students_xla_conv,teacher_unsharded,teacher_xla_conv",
        help="comma list of the programs above",
    )
    return p.parse_args()


ARGS = parse()
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    # One host device per core, as `jaxkd run` sets them (jaxkd.cli.use_host_devices, which a script in this
    # folder cannot import: benchmarks/theory.py shadows the theory package); before jax initialises.
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={os.cpu_count() or 1}"
    ).strip()

import jax  # noqa: E402
import numpy as np  # noqa: E402

from experiments import cifar_kd  # noqa: E402
from jaxkd import program  # noqa: E402
from jaxkd.checkpoint import write_json_atomic  # noqa: E402
from jaxkd.data import load_dataset  # noqa: E402
from jaxkd.models import make_model  # noqa: E402
from jaxkd.models.layers import direct_convolutions  # noqa: E402
from jaxkd.program import SweepProgram  # noqa: E402
from jaxkd.results import env_stamp  # noqa: E402
from jaxkd.study import fill_conditions  # noqa: E402
from jaxkd.teacher import Teacher  # noqa: E402
from jaxkd.train import make_train  # noqa: E402

PROGRAMS = (
    "students_shared",
    "students_xla_conv",
    "students_per_run",
    "teacher_sharded",
    "teacher_unsharded",
    "teacher_xla_conv",
)


def log(msg):
    print(f"[method_sweep {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _padded_to_every_device(trainer):
    """A one-seed program sharded over every device, the seed padded to one per device (the engine before
    2026-12-06; :func:`jaxkd.program.seed_mesh` now leaves out devices that would hold only padding)."""
    every = program.seed_mesh

    program.seed_mesh = lambda n_seeds=None: every(None)
    try:
        return SweepProgram(trainer, 1, shard=True)
    finally:
        program.seed_mesh = every


def build(config):
    """The preset's first pair: ``{program: (SweepProgram, runs, direct convolutions)}`` and the workload."""
    dataset = load_dataset(config.data.dataset)
    if config.classes is not None:
        dataset = dataset.subset_classes(range(config.classes))
    pair = config.pairs[0]
    n_train = round(len(dataset.y_train) * (1 - config.data.val_fraction))
    t_cfg, s_cfg = config.run_configs(
        pair, steps_per_epoch=-(-n_train // config.recipe.batch_size), image_size=dataset.in_shape[0]
    )
    t_model = make_model(t_cfg.model.name, dataset.in_shape, dataset.num_classes, t_cfg.model.widths, t_cfg.model.dtype)
    teacher = Teacher(t_model, *t_model.init(jax.random.key(0)))
    students = make_train(s_cfg, dataset, teacher)
    filled = fill_conditions(students, config.conditions(s_cfg.objective))
    grid = {k: [c[k] for c in filled.values()] for k in next(iter(filled.values()))}
    teacher_trainer = make_train(t_cfg, dataset)
    n, runs = config.n_seeds, config.n_seeds * len(filled)
    preset = config.direct_conv
    programs = {
        "students_shared": (SweepProgram(students, n, grid), runs, preset),
        "students_xla_conv": (SweepProgram(students, n, grid), runs, False),
        "students_per_run": (SweepProgram(students, n, grid, share_teacher=False), runs, False),
        "teacher_sharded": (_padded_to_every_device(teacher_trainer), 1, False),
        "teacher_unsharded": (SweepProgram(teacher_trainer, 1, shard=False), 1, preset),
        "teacher_xla_conv": (SweepProgram(teacher_trainer, 1, shard=False), 1, False),
    }
    workload = {
        "pair": pair,
        "dataset": dataset.name,
        "classes": dataset.num_classes,
        "image_shape": list(dataset.in_shape),
        "teacher_widths": list(config.teacher_widths or ()),
        "student_widths": list(config.student_widths or ()),
        "batch": config.recipe.batch_size,
        "seeds": n,
        "methods": list(filled),
        "steps_per_call": students.eval_every,
        "student_steps_in_preset": students.steps,
        "direct_conv_in_preset": preset,
        "teacher_steps_in_preset": teacher_trainer.steps,
    }
    return programs, workload


def main():
    t0 = time.perf_counter()
    chosen = ARGS.programs.split(",")
    bad = [p for p in chosen if p not in PROGRAMS]
    if bad:
        sys.exit(f"unknown program(s) {', '.join(bad)}; choose from {', '.join(PROGRAMS)}")
    config = cifar_kd.PRESETS.get(ARGS.preset)
    if config is None:
        sys.exit(f"unknown cifar_kd preset {ARGS.preset!r}; choose from {', '.join(cifar_kd.PRESETS)}")
    programs, workload = build(config)
    programs = {k: v for k, v in programs.items() if k in chosen}
    steps = workload["steps_per_call"]
    states, first, rows = {}, {}, {}
    for name, (prog, runs, direct) in programs.items():
        log(f"{name}: compiling ({runs} runs, {steps} steps a call, direct convolutions {direct})")
        with direct_convolutions(direct):  # read while tracing: the compiled program keeps the choice
            t = time.perf_counter()
            prog.compiled_advance(steps)
            compile_s = time.perf_counter() - t
            st = prog.init(jax.random.key(1))
        t = time.perf_counter()
        st, hist = jax.block_until_ready(prog.advance(st, steps))
        states[name], first[name] = st, jax.device_get(hist)
        rows[name] = {
            "runs": runs,
            "devices": prog.n_devices,
            "padded_seeds": prog.padded_seeds,
            "shares_teacher": prog.shares_teacher,
            "direct_conv": direct,
            "compile_s": compile_s,
            "first_call_s": time.perf_counter() - t,
            "calls_s": [],
        }
    for i in range(ARGS.calls):
        for name, (prog, _, _) in programs.items():
            t = time.perf_counter()
            states[name], _ = jax.block_until_ready(prog.advance(states[name], steps))
            rows[name]["calls_s"].append(time.perf_counter() - t)
            log(f"{name}: call {i + 1}: {rows[name]['calls_s'][-1]:.2f} s")
    for r in rows.values():
        r["seconds_per_step"] = statistics.median(r["calls_s"]) / steps
        r["run_steps_per_s"] = r["runs"] / r["seconds_per_step"]

    def ratio(a, b):
        return rows[b]["seconds_per_step"] / rows[a]["seconds_per_step"] if a in rows and b in rows else None

    def max_diff(a, b, keys):
        if a not in first or b not in first:
            return None
        return {k: float(np.nanmax(np.abs(np.asarray(first[a][k]) - np.asarray(first[b][k])))) for k in keys}

    speedups = {
        "students_shared_vs_xla_conv": ratio("students_shared", "students_xla_conv"),
        "students_xla_conv_vs_per_run": ratio("students_xla_conv", "students_per_run"),
        "students_shared_vs_per_run": ratio("students_shared", "students_per_run"),
        "teacher_unsharded_vs_xla_conv": ratio("teacher_unsharded", "teacher_xla_conv"),
        "teacher_xla_conv_vs_sharded": ratio("teacher_xla_conv", "teacher_sharded"),
    }
    out = {
        "benchmark": "method_sweep",
        "preset": ARGS.preset,
        "cores_available": len(os.sched_getaffinity(0)),
        "devices": jax.device_count(),
        "workload": workload,
        "programs": rows,
        "speedups": speedups,
        "preset_training_s_estimate": {
            name: workload[f"{who}_steps_in_preset"] * rows[name]["seconds_per_step"]
            for name, who in (
                ("students_shared", "student"),
                ("students_xla_conv", "student"),
                ("students_per_run", "student"),
                ("teacher_sharded", "teacher"),
                ("teacher_unsharded", "teacher"),
                ("teacher_xla_conv", "teacher"),
            )
            if name in rows
        },
        "checks": {
            f"{a}_max_abs_diff_first_call_vs_{b}": max_diff(a, b, keys)
            for a, b, keys in (
                ("students_shared", "students_xla_conv", ("train/loss", "val/acc", "test/agreement")),
                ("students_per_run", "students_xla_conv", ("train/loss", "val/acc", "test/agreement")),
                ("teacher_unsharded", "teacher_xla_conv", ("train/loss", "val/acc")),
                ("teacher_sharded", "teacher_xla_conv", ("train/loss", "val/acc")),
            )
        },
        "env": env_stamp(),
        "wall_s": time.perf_counter() - t0,
    }
    if ARGS.out:
        os.makedirs(os.path.dirname(os.path.abspath(ARGS.out)), exist_ok=True)
        write_json_atomic(ARGS.out, out, indent=2, default=str)
    print(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
