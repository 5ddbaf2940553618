"""Benchmark: SubDistill's step time against KD-only for the same pair, and its pre-pass against a whole run.

The pair is the ``subdistill`` experiment's ``default``: a ``cnn2d`` (16, 32,
64) teacher of all 100 ``procedural16`` classes (random weights: its quality
does not change the cost), restricted to the ``square`` subtask, and an
``sdstudent`` (8, 8, 8, 4) student, batch 32, random crops, the teacher run
live. Programs, each a :class:`jaxkd.program.SweepProgram` of ``--seeds``
seeds sharded over two host devices, one run after another per device
(``vmap_width=1``, the CPU default):

* ``kd``: T² KL alone (the policy ``kd``; the program holds no other term);
* ``subdistill``: KD plus SubDistill's layer loss on the three layer pairs
  (the policy ``subdistill_prca_posdef``; no other term);
* ``all_policies``: the experiment's program, all ten policies as grid points
  (per run-step: what one policy's step costs inside it);
* ``all_policies_xla_conv``: the same compiled with XLA's convolution on every
  layer, not the engine's CPU choice of few-channel convolutions as fused
  multiply-adds (``jaxkd.models.layers.direct_conv``; the student's 8-channel
  16x16 layers take it). Each program records ``conv_direct``, the choice it
  was traced under.

Each program is compiled ahead of time (``compile_s``), called once as a
warm-up (excluded), then timed on ``advance(states, --steps)`` in
round-robin repeats (the median is kept), so that a change in machine load
hits every program alike. The ratio the issue bounds is
``subdistill / kd`` per run-step (target <= 1.3).

The pre-pass (activations and contexts of the three teacher layers on the
subtask's training split, three bases) is timed inside ``make_train``
(``Trainer.prepass_seconds``, compilation included), for the experiment's
trainer with its three SubDistill terms (which share one collection). The
issue bounds it by 10 % of the ``default`` run: that run's own
``summary.json`` records both (``timing``); where ``--run`` names it, its
numbers are copied here.

Usage::

    python benchmarks/subdistill.py --out benchmarks/results/subdistill.json --run results/subdistill
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import sys
import time


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--steps", type=int, default=50, help="steps per timed advance (one evaluation at its end)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--devices", type=int, default=2, help="host devices to force on CPU")
    p.add_argument("--run", default=None, help="a finished `subdistill` default run whose timing to report")
    p.add_argument("--out", default=None, help="write the JSON result here (else it is printed)")
    return p.parse_args()


ARGS = parse()
if "XLA_FLAGS" not in os.environ:  # must be set before jax initialises its CPU client
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={ARGS.devices}"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

import experiments.subdistill as sd  # noqa: E402
from jaxkd.config import EvalConfig, ObjectiveConfig  # noqa: E402
from jaxkd.data import load_dataset  # noqa: E402
from jaxkd.data.subtasks import superclass_classes  # noqa: E402
from jaxkd.models import make_model  # noqa: E402
from jaxkd.models.layers import direct_conv_enabled, direct_convolutions  # noqa: E402
from jaxkd.program import SweepProgram  # noqa: E402
from jaxkd.results import emit_json, env_stamp  # noqa: E402
from jaxkd.teacher import Teacher  # noqa: E402
from jaxkd.train import make_train  # noqa: E402


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def main():
    base = sd.PRESETS["default"]
    config = dataclasses.replace(base, eval=EvalConfig(every=ARGS.steps))
    dataset = load_dataset(config.data.dataset)
    t_model = make_model(config.teacher_model.name, dataset.in_shape, dataset.num_classes, config.teacher_model.widths)
    params, rest = t_model.init(jax.random.key(0))
    teacher = Teacher(t_model, params, rest, mean=dataset.mean, std=dataset.std, normalisation_known=True)
    classes = superclass_classes(config.data.dataset, "square")
    steps = ARGS.steps
    recipe = dataclasses.replace(config.recipe, steps=steps, epochs=None)

    programs, prepass = {}, {}
    specs = (
        ("kd", ("kd",), None),
        ("subdistill", (sd.BASELINE,), None),
        ("all_policies", sd.POLICIES, None),
        ("all_policies_xla_conv", sd.POLICIES, False),
    )
    for name, policies, direct in specs:
        cfg = dataclasses.replace(config, policies=policies if sd.BASELINE in policies else (sd.BASELINE, *policies))
        s_cfg = dataclasses.replace(cfg.student_config(classes, 1.0, dataset.in_shape[0]), recipe=recipe)
        full = name.startswith("all_policies")
        if not full:  # the policy's own terms only, no other term in the program
            own = {"kd"} | ({sd.BASELINE} if name == "subdistill" else set())
            s_cfg = dataclasses.replace(
                s_cfg, objective=ObjectiveConfig({k: v for k, v in s_cfg.objective.terms.items() if k in own})
            )
        trainer = make_train(s_cfg, dataset, teacher)
        conds = cfg.conditions(s_cfg.objective)
        if not full:
            conds = {name: {k: v for k, v in conds[sd.BASELINE].items()}}  # kd (and the sd term) at their weights
        names = list(conds)
        grid = {k: [conds[c][k] for c in names] for k in conds[names[0]]}
        prepass[name] = round(trainer.prepass_seconds, 2)
        program = SweepProgram(trainer, ARGS.seeds, grid, vmap_width=1)
        # Read while tracing: the compiled program keeps the choice (None: the engine's default).
        with contextlib.nullcontext() if direct is None else direct_convolutions(direct):
            conv_direct = direct_conv_enabled()
            started = time.perf_counter()
            program.compiled_advance(steps)
            compile_s = time.perf_counter() - started
            states = program.init(jax.random.key(1))
        started = time.perf_counter()
        states, _ = jax.block_until_ready(program.advance(states, steps))  # the input states are donated
        programs[name] = {
            "program": program,
            "states": states,
            "grid_points": len(names),
            "conv_direct": conv_direct,
            "compile_s": round(compile_s, 1),
            "first_call_s": round(time.perf_counter() - started, 2),
            "times": [],
        }
        log(f"{name}: compiled in {compile_s:.1f} s")
    for r in range(ARGS.repeats):
        for p in programs.values():
            started = time.perf_counter()
            p["states"], _ = jax.block_until_ready(p["program"].advance(p["states"], steps))
            p["times"].append(time.perf_counter() - started)
        log(f"repeat {r + 1}/{ARGS.repeats} done")

    out = {"programs": {}}
    for name, p in programs.items():
        per_step = statistics.median(p["times"]) / steps
        out["programs"][name] = {
            "grid_points": p["grid_points"],
            "conv_direct": p["conv_direct"],
            "compile_s": p["compile_s"],
            "first_call_s": p["first_call_s"],
            "times_s": [round(t, 3) for t in p["times"]],
            "per_step_ms": round(1e3 * per_step, 2),
            "per_run_step_ms": round(1e3 * per_step / (ARGS.seeds * p["grid_points"]), 3),
            "prepass_s": prepass[name],
        }
    kd, sdl = out["programs"]["kd"], out["programs"]["subdistill"]
    out["subdistill_over_kd_per_run_step"] = round(sdl["per_run_step_ms"] / kd["per_run_step_ms"], 3)
    out["target_subdistill_over_kd"] = 1.3
    a, b = out["programs"]["all_policies"], out["programs"]["all_policies_xla_conv"]
    out["all_policies_xla_conv_over_engine_default"] = round(b["per_step_ms"] / a["per_step_ms"], 3)
    if ARGS.run:
        with open(os.path.join(ARGS.run, "summary.json")) as f:
            out["default_run_timing"] = json.load(f)["timing"]
    out["setup"] = {
        "seeds": ARGS.seeds,
        "steps": steps,
        "repeats": ARGS.repeats,
        "devices": jax.device_count(),
        "teacher": dataclasses.asdict(config.teacher_model),
        "student": dataclasses.asdict(config.model),
        "layers": list(config.layers),
        "batch_size": config.recipe.batch_size,
        "subtask": "square",
    }
    out["env"] = env_stamp()
    emit_json(out, ARGS.out)


if __name__ == "__main__":
    main()
