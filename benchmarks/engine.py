"""Benchmark: what each part of the distillation engine costs per step, digits CNN → CNN sweep.

Every program is a :class:`jaxkd.sweep.SweepProgram` of ``--seeds`` seeds
(sharded over two host devices) × G grid points of a cnn2d(8, 16) student,
batch 64, distilled from a cnn2d(32, 64) teacher trained for
``--teacher-steps`` steps (its quality is irrelevant here). Measured:

(a) KD (0.1·CE + 0.9·KD, T = 4) with the teacher run live in the step against
    the same with its logits cached (``RunConfig.teacher``), no augmentation;
(b) CE + each term (dkd, dist, fitnet block1→block1, at block0+block1, rcd,
    confusion) against KD, all with a live teacher and no augmentation, so
    that only the term's own cost differs; CE alone (no distillation) as the
    floor; KD live with random crops (``crop_padding=1``) against without;
(c) the six methods of ``experiments/digits_methods.py`` (ce, kd, dkd, dist,
    fitnet, at) as the 6 grid points of one program (every term computed,
    all weights but one per point zero) against one single-method program
    per run-step, and against the six single-method programs run one after
    another;
(d) context for (a)-(c): the KD-live sweep run unsharded (vmap on one device)
    and as ``--seeds`` separate un-vmapped runs (``jit(trainer.advance)``)
    one after another (``--no-context`` skips it).

Each program is lowered and compiled ahead of time (``compile_s``; XLA's
``cost_analysis()`` of the lowered and of the compiled ``advance``), then
called once as a warm-up (``first_call_s``, excluded), then timed on
``advance(states, --steps)`` (one evaluation on the validation split at the
end; it is part of the time). The repeats go round-robin over all programs, so
that a change in machine load during the run hits every program alike; each
time is the median of ``--repeats``. Per run-step = per step / (S · G).

FLOP counts: XLA counts a loop body once, whatever its trip count, so the
counts are of one training step plus one evaluation (and the epoch
permutations), not of ``--steps`` steps. ``lowered_flops`` is the whole
program before XLA optimises it (all seeds); ``compiled_flops`` is what one
device runs after optimisation and SPMD partitioning (dead code removed).

Usage::

    python benchmarks/engine.py --out benchmarks/results/engine.json

Expected runtime on a 2-core CPU: about 7 minutes (two thirds of it compiling).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--steps", type=int, default=50, help="steps per timed advance (one evaluation at its end)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--teacher-steps", type=int, default=100)
    p.add_argument("--devices", type=int, default=2, help="host devices to force on CPU")
    p.add_argument("--no-context", action="store_true", help="skip (d): unsharded and one-run-at-a-time KD")
    p.add_argument("--out", default=None, help="write the JSON result here (else it is printed)")
    return p.parse_args()


ARGS = parse()
if "XLA_FLAGS" not in os.environ:  # must be set before jax initialises its CPU client
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={ARGS.devices}"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from experiments.digits_methods import Config as MethodsConfig  # noqa: E402
from jaxkd.config import DataConfig, EvalConfig, ModelConfig, ObjectiveConfig, RunConfig  # noqa: E402
from jaxkd.data import load_digits  # noqa: E402
from jaxkd.recipes import RecipeConfig  # noqa: E402
from jaxkd.results import env_stamp  # noqa: E402
from jaxkd.sweep import SweepProgram  # noqa: E402
from jaxkd.teacher import Teacher  # noqa: E402
from jaxkd.train import make_train  # noqa: E402

TEACHER = ModelConfig("cnn2d", (32, 64))
STUDENT = ModelConfig("cnn2d", (8, 16))
BATCH = 64
LR = 2e-3
METHODS = MethodsConfig()  # the six methods' objective and grid points (ce, kd, dkd, dist, fitnet, at)
KD = {"ce": {"weight": 0.1}, "kd": {"weight": 0.9, "temperature": 4.0}}
# CE + one term; the term options (and weights) are digits_methods' where it has the term.
TERM_OPTIONS = {**{k: dict(v) for k, v in METHODS.objective.terms.items() if k not in ("ce", "kd")},
                "rcd": {"weight": 1.0}, "confusion": {"weight": 1.0}}
TERMS = ("dkd", "dist", "fitnet", "at", "rcd", "confusion")


def log(msg):
    print(f"[engine {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _flops(analysis):
    """``{"flops", "bytes accessed"}`` from a cost_analysis() result (a dict, a list of dicts, or None)."""
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    if not analysis:
        return None
    return {k: float(analysis[k]) for k in ("flops", "bytes accessed") if k in analysis}


class Program:
    """A compiled sweep (or, with ``loop=True``, S un-vmapped runs one after another) and its timings."""

    def __init__(self, name, trainer, grid=None, *, shard=True, loop=False):
        self.name, self.trainer, self.loop = name, trainer, loop
        n = ARGS.steps
        key = jax.random.key(1)
        if loop:
            self.runs, self.grid_size = ARGS.seeds, 1
            self.fn = jax.jit(trainer.advance, static_argnums=4, donate_argnums=0)
            hp = {k: jnp.asarray(v, jnp.float32) for k, v in trainer.hparams().items()}
            self.args = (hp, trainer.data, trainer.teacher_inputs)
            self.states = [trainer.init(*jax.random.split(k)) for k in jax.random.split(key, ARGS.seeds)]
            first = self.states[0]
        else:
            self.prog = SweepProgram(trainer, ARGS.seeds, grid, shard=shard)
            self.runs, self.grid_size = self.prog.padded_seeds * self.prog.grid_size, self.prog.grid_size
            self.fn = self.prog.advance_fn
            self.args = (self.prog.hparams, self.prog.data, self.prog.teacher_inputs)
            self.states = self.prog.init(key)
            first = self.states
        t = time.perf_counter()
        lowered = self.fn.lower(first, *self.args, n)
        self.lower_s = time.perf_counter() - t
        t = time.perf_counter()
        compiled = lowered.compile()
        self.compile_s = time.perf_counter() - t
        self.lowered_cost = _flops(lowered.cost_analysis())
        self.compiled_cost = _flops(compiled.cost_analysis())
        self.first_call_s = self.call()  # the warm-up; it reuses the executable compiled above
        self.times = []
        self.sharded = (not loop) and self.prog.mesh is not None

    def call(self) -> float:
        t = time.perf_counter()
        if self.loop:
            for i, s in enumerate(self.states):
                self.states[i], _ = self.fn(s, *self.args, ARGS.steps)
                jax.block_until_ready(self.states[i])
        else:
            self.states, _ = self.prog.advance(self.states, ARGS.steps)
            jax.block_until_ready(self.states)
        return time.perf_counter() - t

    def result(self) -> dict:
        med = statistics.median(self.times)
        per_step = med / ARGS.steps
        return {"seconds_per_advance": med, "seconds_all": self.times, "seconds_per_step": per_step,
                "seconds_per_run_step": per_step / self.runs, "runs": self.runs, "grid_points": self.grid_size,
                "sharded": self.sharded, "loop": self.loop, "teacher_live": self.trainer.teacher_live,
                "augmented": self.trainer.config.data.augmented, "terms": list(self.trainer.terms),
                "lower_s": self.lower_s, "compile_s": self.compile_s, "first_call_s": self.first_call_s,
                "lowered_cost": self.lowered_cost, "compiled_cost": self.compiled_cost}


def student(objective, *, teacher="live", crop_padding=0) -> RunConfig:
    return RunConfig(model=STUDENT, objective=ObjectiveConfig(objective),
                     recipe=RecipeConfig(learning_rate=LR, batch_size=BATCH, steps=ARGS.steps),
                     data=DataConfig("digits", crop_padding=crop_padding),
                     eval=EvalConfig(every=ARGS.steps, splits=("val",), select="val/acc"), teacher=teacher)


def train_teacher(ds):
    cfg = RunConfig(model=TEACHER, recipe=RecipeConfig(learning_rate=LR, batch_size=BATCH, steps=ARGS.teacher_steps),
                    eval=EvalConfig(every=ARGS.teacher_steps))
    trainer = make_train(cfg, ds)
    state, history = jax.jit(trainer.run)(jax.random.key(0))
    return Teacher(trainer.model, state.params["model"], state.rest), float(history["test/acc"][-1])


def ratio(a, b):
    return a / b if b else None


def build(ds, teacher):
    """name -> (trainer, grid, options) of every program measured."""
    specs = {
        "ce": (student({"ce": {"weight": 1.0}}), None, {}),
        "kd_cached": (student(KD, teacher="cached"), None, {}),
        "kd_live": (student(KD), None, {}),
        "kd_live_aug": (student(KD, crop_padding=1), None, {}),
        **{t: (student({"ce": {"weight": 1.0}, t: TERM_OPTIONS[t]}), None, {}) for t in TERMS},
    }
    conds = METHODS.conditions()
    names = list(conds)
    specs["six_in_one"] = (student(METHODS.objective.terms), {k: [conds[c][k] for c in names] for k in conds[names[0]]},
                           {})
    if not ARGS.no_context:
        specs["kd_live_unsharded"] = (student(KD), None, {"shard": False})
        specs["kd_live_loop"] = (student(KD), None, {"loop": True})
    return specs, names


def main():
    t_start = time.perf_counter()
    load_start = os.getloadavg()
    ds = load_digits()
    log(f"training the teacher ({ARGS.teacher_steps} steps)")
    teacher, teacher_acc = train_teacher(ds)
    specs, method_names = build(ds, teacher)
    programs = {}
    for name, (cfg, grid, opts) in specs.items():
        log(f"compiling {name}")
        programs[name] = Program(name, make_train(cfg, ds, teacher), grid, **opts)
    for r in range(ARGS.repeats):
        log(f"repeat {r + 1}/{ARGS.repeats}")
        for p in programs.values():
            p.times.append(p.call())
    m = {name: p.result() for name, p in programs.items()}
    run_step = {name: v["seconds_per_run_step"] for name, v in m.items()}
    per_advance = {name: v["seconds_per_advance"] for name, v in m.items()}

    singles = {c: ("kd_live" if c == "kd" else c) for c in method_names}
    ratios = {
        "a_kd_live_over_cached": ratio(run_step["kd_live"], run_step["kd_cached"]),
        "b_term_over_kd_live": {t: ratio(run_step[t], run_step["kd_live"]) for t in ("ce", *TERMS)},
        "b_kd_aug_over_no_aug": ratio(run_step["kd_live_aug"], run_step["kd_live"]),
        "c_six_in_one_over_kd_live_per_run_step": ratio(run_step["six_in_one"], run_step["kd_live"]),
        "c_six_in_one_over_mean_single_per_run_step": ratio(
            run_step["six_in_one"], statistics.mean(run_step[s] for s in singles.values())),
        "c_six_separate_programs_over_six_in_one_time": ratio(
            sum(per_advance[s] for s in singles.values()), per_advance["six_in_one"]),
        "c_six_separate_compiles_over_six_in_one_compile": ratio(
            sum(m[s]["compile_s"] for s in singles.values()), m["six_in_one"]["compile_s"]),
    }
    if not ARGS.no_context:
        ratios["d_unsharded_over_sharded"] = ratio(run_step["kd_live_unsharded"], run_step["kd_live"])
        ratios["d_loop_over_sharded"] = ratio(run_step["kd_live_loop"], run_step["kd_live"])

    try:
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                 text=True, timeout=5).stdout.split("\n")
        changed = [line.strip() for line in changed if line.strip()]
    except Exception:
        changed = None
    result = {
        "benchmark": "engine", "dataset": "digits", "env": env_stamp(), "n_devices": jax.device_count(),
        "worktree_changes": changed,
        "load_average_1_5_15": {"start": load_start, "end": os.getloadavg()},
        "settings": {"seeds": ARGS.seeds, "steps_per_advance": ARGS.steps, "eval_every": ARGS.steps,
                     "eval_splits": ["val"], "repeats": ARGS.repeats, "batch": BATCH, "learning_rate": LR,
                     "teacher": {"model": TEACHER.name, "widths": TEACHER.widths, "steps": ARGS.teacher_steps,
                                 "test_acc": teacher_acc},
                     "student": {"model": STUDENT.name, "widths": STUDENT.widths},
                     "objectives": {name: {"terms": {k: dict(v) for k, v in cfg.objective.terms.items()},
                                           "grid": grid, "teacher": cfg.teacher,
                                           "crop_padding": cfg.data.crop_padding, **opts}
                                    for name, (cfg, grid, opts) in specs.items()},
                     "six_in_one_grid_points": method_names},
        "measurements": m, "ratios": ratios, "total_seconds": time.perf_counter() - t_start,
    }
    print(table(m, ratios, method_names))
    text = json.dumps(result, indent=2, default=str)
    if ARGS.out:
        os.makedirs(os.path.dirname(os.path.abspath(ARGS.out)), exist_ok=True)
        with open(ARGS.out, "w") as f:
            f.write(text + "\n")
    else:
        print(text)
    return 0


def table(m, ratios, method_names) -> str:
    kd = m["kd_live"]["seconds_per_run_step"]
    rows = [f"digits cnn2d(8,16) <- cnn2d(32,64), batch {BATCH}, {ARGS.seeds} seeds x G grid points, "
            f"{ARGS.steps} steps per advance, median of {ARGS.repeats}, {jax.device_count()} host devices",
            f"{'program':<20}{'G':>3}{'s/advance':>11}{'ms/step':>9}{'ms/run-step':>13}{'/kd_live':>10}"
            f"{'compile s':>11}{'GFLOP lowered':>15}{'GFLOP/dev compiled':>20}"]
    for name, v in m.items():
        lf = (v["lowered_cost"] or {}).get("flops")
        cf = (v["compiled_cost"] or {}).get("flops")
        rows.append(f"{name:<20}{v['grid_points']:>3}{v['seconds_per_advance']:>11.3f}"
                    f"{1e3 * v['seconds_per_step']:>9.2f}{1e3 * v['seconds_per_run_step']:>13.3f}"
                    f"{v['seconds_per_run_step'] / kd:>10.2f}{v['compile_s']:>11.1f}"
                    f"{(lf or float('nan')) / 1e9:>15.3f}{(cf or float('nan')) / 1e9:>20.3f}")
    r = ratios
    rows += ["", "ratios (per run-step unless stated):",
             f"  (a) KD live / cached                         {r['a_kd_live_over_cached']:.2f}",
             *[f"  (b) CE+{t:<10} / KD live                    {v:.2f}" if t != "ce" else
               f"  (b) CE alone      / KD live                    {v:.2f}"
               for t, v in r["b_term_over_kd_live"].items()],
             f"  (b) KD live aug (crop 1) / no aug            {r['b_kd_aug_over_no_aug']:.2f}",
             f"  (c) six-in-one / KD live single              {r['c_six_in_one_over_kd_live_per_run_step']:.2f}",
             f"  (c) six-in-one / mean of the six singles     {r['c_six_in_one_over_mean_single_per_run_step']:.2f}",
             f"  (c) six single programs / six-in-one (time)  {r['c_six_separate_programs_over_six_in_one_time']:.2f}",
             f"  (c) six single compiles / six-in-one compile "
             f"{r['c_six_separate_compiles_over_six_in_one_compile']:.2f}"]
    if "d_loop_over_sharded" in r:
        rows += [f"  (d) KD live unsharded / sharded              {r['d_unsharded_over_sharded']:.2f}",
                 f"  (d) KD live {ARGS.seeds} runs in a loop / sharded      {r['d_loop_over_sharded']:.2f}"]
    rows.append(f"  six-in-one grid points: {', '.join(method_names)}")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
