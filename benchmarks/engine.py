"""Benchmark: what each part of the distillation engine costs per step, digits CNN → CNN sweep.

Every program is a :class:`jaxkd.sweep.SweepProgram` of ``--seeds`` seeds
(sharded over two host devices with ``shard_map``) × G grid points of a
cnn2d(8, 16) student, batch 64, distilled from a cnn2d(32, 64) teacher trained
for ``--teacher-steps`` steps (its quality is irrelevant here). Each is built
twice: ``vmap_width=None`` (``@vmap``: a device vmaps its runs) and
``vmap_width=1`` (``@map``: a device runs them one after another with
``lax.map`` inside the same program). For each width, measured:

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
(d) context for (a)-(c): the KD-live sweep unsharded (one device, both
    widths) and as ``--seeds`` separate un-vmapped runs
    (``jit(trainer.advance)``) one after another (``--no-context`` skips it).

Each program is lowered and compiled ahead of time (``compile_s``), then
called once as a warm-up (``first_call_s``, excluded), then timed on
``advance(states, --steps)`` (one evaluation on the validation split at the
end; it is part of the time). The repeats go round-robin over all programs, so
that a change in machine load during the run hits every program alike; each
time is the median of ``--repeats``. Per run-step = per step / (S · G).

FLOP counts (XLA ``cost_analysis()``): XLA counts the body of a loop
(``lax.scan``, ``lax.map``) once, whatever its trip count. A compiled
``advance`` therefore counts one training step, one evaluation and the epoch
permutations (drawn before the loop) of each run it *vectorises*: all of a
device's runs under vmap, one under lax.map, not ``--steps`` steps.
``lowered_cost`` is XLA's count before optimisation (under ``shard_map``
already one device's share); ``compiled_cost`` is what one device runs after
optimisation (dead code removed: a live teacher whose outputs no term reads
costs nothing). Per-step costs come from one run's compiled
``jit(trainer.train_step)`` (``step_costs``). The sharded ``@map`` program
counts exactly one run (step + evaluation + permutations), so
``compiled_flops_expected`` = vectorised runs × that count is what a device's
program should count if nothing is duplicated across devices, and
``sharded_per_device_over_unsharded_flops`` should be 1/devices (the old
GSPMD path gave 0.61 for the vmapped CNN: its convolutions ran on both devices).

Usage (the recorded run; the default ``--steps 50`` takes about 9 minutes)::

    python benchmarks/engine.py --steps 20 --out benchmarks/results/engine.json

Expected runtime on an idle 2-core CPU: about 7.5 minutes, two thirds of it
building trainers and compiling the 25 programs, which no flag shrinks much.
"""

from __future__ import annotations

import argparse
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
from jaxkd.program import SweepProgram  # noqa: E402
from jaxkd.recipes import RecipeConfig  # noqa: E402
from jaxkd.results import emit_json, env_stamp  # noqa: E402
from jaxkd.teacher import Teacher  # noqa: E402
from jaxkd.train import make_train  # noqa: E402

TEACHER = ModelConfig("cnn2d", (32, 64))
STUDENT = ModelConfig("cnn2d", (8, 16))
BATCH = 64
LR = 2e-3
METHODS = MethodsConfig()  # the six methods' objective and grid points (ce, kd, dkd, dist, fitnet, at)
KD = {"ce": {"weight": 0.1}, "kd": {"weight": 0.9, "temperature": 4.0}}
# CE + one term; the term options (and weights) are digits_methods' where it has the term.
TERM_OPTIONS = {
    **{k: dict(v) for k, v in METHODS.objective.terms.items() if k not in ("ce", "kd")},
    "rcd": {"weight": 1.0},
    "confusion": {"weight": 1.0},
}
TERMS = ("dkd", "dist", "fitnet", "at", "rcd", "confusion")
WIDTHS = {"vmap": None, "map": 1}  # SweepProgram vmap_width: vmap a device's runs, or lax.map over them


def log(msg):
    print(f"[engine {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _cost(analysis):
    """``{"flops", "bytes accessed"}`` from a cost_analysis() result (a dict, a list of dicts, or None)."""
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    if not analysis:
        return None
    return {k: float(analysis[k]) for k in ("flops", "bytes accessed") if k in analysis}


def _memory(compiled):
    """Per-device buffer sizes (bytes) from memory_analysis(), or None where the backend gives none."""
    m = compiled.memory_analysis()
    if m is None:
        return None
    return {k: int(getattr(m, f"{k}_size_in_bytes")) for k in ("argument", "output", "alias", "temp")}


def step_cost(trainer) -> dict:
    """Compiled cost of one run's training step, ``jit(trainer.train_step)`` (per step, no loop)."""
    state = trainer.init(*jax.random.split(jax.random.key(0)))
    hp = {k: jnp.asarray(v, jnp.float32) for k, v in trainer.hparams().items()}
    idx = jnp.arange(trainer.batch_size, dtype=jnp.int32)
    step = jax.jit(trainer.train_step).lower(state, hp, trainer.data, trainer.teacher_inputs, idx).compile()
    return {**_cost(step.cost_analysis()), "memory": _memory(step)}


class Program:
    """A compiled sweep (or, with ``loop=True``, S un-vmapped runs one after another) and its timings.

    ``vmap_width`` as in :class:`jaxkd.sweep.SweepProgram`: None vmaps a device's runs, 1 maps over them.
    """

    def __init__(self, name, trainer, grid=None, *, shard=True, vmap_width=None, loop=False):
        self.name, self.trainer, self.loop, self.vmap_width = name, trainer, loop, vmap_width
        n = ARGS.steps
        key = jax.random.key(1)
        if loop:
            self.runs, self.grid_size, self.devices = ARGS.seeds, 1, 1
            fn = jax.jit(trainer.advance, static_argnums=4, donate_argnums=0)
            hp = {k: jnp.asarray(v, jnp.float32) for k, v in trainer.hparams().items()}
            self.args = (hp, trainer.data, trainer.teacher_inputs)
            self.states = [trainer.init(*jax.random.split(k)) for k in jax.random.split(key, ARGS.seeds)]
            lower = lambda: fn.lower(self.states[0], *self.args, n)  # noqa: E731
            self.vectorised_runs = 1
        else:
            self.prog = SweepProgram(trainer, ARGS.seeds, grid, shard=shard, vmap_width=vmap_width)
            self.runs, self.grid_size = self.prog.padded_seeds * self.prog.grid_size, self.prog.grid_size
            self.devices = self.prog.n_devices
            self.args = (self.prog.hparams, self.prog.data, self.prog.teacher_inputs)
            self.states = self.prog.init(key)
            # The program prog.advance(states, n) runs, compiled ahead of time so that its cost can be read and
            # the timed calls run exactly it (SweepProgram.advance_program).
            lower = lambda: self.prog.advance_program(n).lower(self.states, *self.args)  # noqa: E731
            self.vectorised_runs = 1 if vmap_width == 1 else self.runs // self.devices
        t = time.perf_counter()
        lowered = lower()
        self.lower_s = time.perf_counter() - t
        t = time.perf_counter()
        self.fn = lowered.compile()
        self.compile_s = time.perf_counter() - t
        self.lowered_cost = _cost(lowered.cost_analysis())
        self.compiled_cost = _cost(self.fn.cost_analysis())
        self.memory = _memory(self.fn)
        self.first_call_s = self.call()  # the warm-up, on the executable compiled above
        self.times = []
        self.sharded = (not loop) and self.prog.mesh is not None

    def call(self) -> float:
        t = time.perf_counter()
        if self.loop:
            for i, s in enumerate(self.states):
                self.states[i], _ = self.fn(s, *self.args)
                jax.block_until_ready(self.states[i])
        else:
            self.states, _ = self.fn(self.states, *self.args)
            jax.block_until_ready(self.states)
        return time.perf_counter() - t

    def result(self) -> dict:
        med = statistics.median(self.times)
        per_step = med / ARGS.steps
        return {
            "seconds_per_advance": med,
            "seconds_all": self.times,
            "seconds_per_step": per_step,
            "seconds_per_run_step": per_step / self.runs,
            "runs": self.runs,
            "grid_points": self.grid_size,
            "devices": self.devices,
            "vmap_width": self.vmap_width,
            "vectorised_runs": self.vectorised_runs,
            "sharded": self.sharded,
            "loop": self.loop,
            "teacher_live": self.trainer.teacher_live,
            "augmented": self.trainer.config.data.augmented,
            "terms": list(self.trainer.terms),
            "lower_s": self.lower_s,
            "compile_s": self.compile_s,
            "first_call_s": self.first_call_s,
            "lowered_cost": self.lowered_cost,
            "compiled_cost": self.compiled_cost,
            "memory": self.memory,
        }


def student(objective, *, teacher="live", crop_padding=0) -> RunConfig:
    return RunConfig(
        model=STUDENT,
        objective=ObjectiveConfig(objective),
        recipe=RecipeConfig(learning_rate=LR, batch_size=BATCH, steps=ARGS.steps),
        data=DataConfig("digits", crop_padding=crop_padding),
        eval=EvalConfig(every=ARGS.steps, splits=("val",), select="val/acc"),
        teacher=teacher,
    )


def train_teacher(ds):
    cfg = RunConfig(
        model=TEACHER,
        recipe=RecipeConfig(learning_rate=LR, batch_size=BATCH, steps=ARGS.teacher_steps),
        eval=EvalConfig(every=ARGS.teacher_steps),
    )
    trainer = make_train(cfg, ds)
    state, history = jax.jit(trainer.run)(jax.random.key(0))
    # One evaluation (every = the run's steps): the selected model is that evaluation's, the one reported.
    return Teacher(trainer.model, state.selected.params, state.selected.rest), float(history["test/acc"][-1])


def ratio(a, b):
    return a / b if b else None


def build():
    """``({base: (config, grid)}, {program: (base, options)}, six-in-one grid point names)``."""
    bases = {
        "ce": (student({"ce": {"weight": 1.0}}), None),
        "kd_cached": (student(KD, teacher="cached"), None),
        "kd_live": (student(KD), None),
        "kd_live_aug": (student(KD, crop_padding=1), None),
        **{t: (student({"ce": {"weight": 1.0}, t: TERM_OPTIONS[t]}), None) for t in TERMS},
    }
    conds = METHODS.conditions()
    names = list(conds)
    bases["six_in_one"] = (student(METHODS.objective.terms), {k: [conds[c][k] for c in names] for k in conds[names[0]]})
    programs = {f"{b}@{w}": (b, {"vmap_width": width}) for w, width in WIDTHS.items() for b in bases}
    if not ARGS.no_context:
        programs.update(
            {
                f"kd_live_unsharded@{w}": ("kd_live", {"shard": False, "vmap_width": width})
                for w, width in WIDTHS.items()
            }
        )
        programs["kd_live_loop"] = ("kd_live", {"loop": True})
    return bases, programs, names


def width_ratios(m, w, method_names) -> dict:
    """The comparisons (a)-(d) among the programs of one vmap width ``w``."""
    rs = {name.removesuffix(f"@{w}"): v["seconds_per_run_step"] for name, v in m.items() if name.endswith(f"@{w}")}
    adv = {name.removesuffix(f"@{w}"): v for name, v in m.items() if name.endswith(f"@{w}")}
    singles = [("kd_live" if c == "kd" else c) for c in method_names]
    out = {
        "a_kd_live_over_cached": ratio(rs["kd_live"], rs["kd_cached"]),
        "b_term_over_kd_live": {t: ratio(rs[t], rs["kd_live"]) for t in ("ce", *TERMS)},
        "b_kd_aug_over_no_aug": ratio(rs["kd_live_aug"], rs["kd_live"]),
        "c_six_in_one_over_kd_live_per_run_step": ratio(rs["six_in_one"], rs["kd_live"]),
        "c_six_in_one_over_mean_single_per_run_step": ratio(rs["six_in_one"], statistics.mean(rs[s] for s in singles)),
        "c_six_separate_programs_over_six_in_one_time": ratio(
            sum(adv[s]["seconds_per_advance"] for s in singles), adv["six_in_one"]["seconds_per_advance"]
        ),
        "c_six_separate_compiles_over_six_in_one_compile": ratio(
            sum(adv[s]["compile_s"] for s in singles), adv["six_in_one"]["compile_s"]
        ),
    }
    if "kd_live_unsharded" in rs:
        out["d_unsharded_over_sharded"] = ratio(rs["kd_live_unsharded"], rs["kd_live"])
        out["d_loop_over_sharded"] = ratio(m["kd_live_loop"]["seconds_per_run_step"], rs["kd_live"])
    return out


def main():
    t_start = time.perf_counter()
    load_start = os.getloadavg()
    ds = load_digits()
    log(f"training the teacher ({ARGS.teacher_steps} steps)")
    teacher, teacher_acc = train_teacher(ds)
    bases, specs, method_names = build()
    trainers, step = {}, {}
    for base, (cfg, _) in bases.items():
        log(f"building {base} and compiling one step")
        trainers[base] = make_train(cfg, ds, teacher)
        step[base] = step_cost(trainers[base])
    programs = {}
    for name, (base, opts) in specs.items():
        log(f"compiling {name}")
        programs[name] = Program(name, trainers[base], bases[base][1], **opts)
    for r in range(ARGS.repeats):
        log(f"repeat {r + 1}/{ARGS.repeats}")
        for p in programs.values():
            p.times.append(p.call())
    m = {name: p.result() for name, p in programs.items()}
    for name, v in m.items():
        # The sharded lax.map program counts one run (its loop body once): one step, one evaluation, the
        # permutations. A program that vectorises k runs per device should count k times that, no more.
        one = m[f"{specs[name][0]}@map"]["compiled_cost"]["flops"]
        v["compiled_flops_expected"] = v["vectorised_runs"] * one
        v["compiled_flops_over_expected"] = ratio(v["compiled_cost"]["flops"], v["compiled_flops_expected"])

    ratios = {w: width_ratios(m, w, method_names) for w in WIDTHS}
    pairs = {
        name.removesuffix("@map"): (v, m[name.replace("@map", "@vmap")])
        for name, v in m.items()
        if name.endswith("@map")
    }
    ratios["map_over_vmap_per_run_step"] = {
        b: ratio(a["seconds_per_run_step"], v["seconds_per_run_step"]) for b, (a, v) in pairs.items()
    }
    ratios["map_over_vmap_compile"] = {b: ratio(a["compile_s"], v["compile_s"]) for b, (a, v) in pairs.items()}
    ratios["step_flops_over_kd_live"] = {b: ratio(c["flops"], step["kd_live"]["flops"]) for b, c in step.items()}
    ratios["step_bytes_over_kd_live"] = {
        b: ratio(c["bytes accessed"], step["kd_live"]["bytes accessed"]) for b, c in step.items()
    }
    if not ARGS.no_context:
        # Work per device under seed sharding against the whole unsharded program: 1/devices if nothing is
        # duplicated (the old GSPMD path gave 0.61 for kd_live vmap: the convs ran on both devices).
        ratios["sharded_per_device_over_unsharded_flops"] = {
            w: ratio(m[f"kd_live@{w}"]["compiled_cost"]["flops"], m[f"kd_live_unsharded@{w}"]["compiled_cost"]["flops"])
            for w in WIDTHS
        }

    try:
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5
        ).stdout.split("\n")
        changed = [line.strip() for line in changed if line.strip()]
    except Exception:
        changed = None
    result = {
        "benchmark": "engine",
        "dataset": "digits",
        "env": env_stamp(),
        "n_devices": jax.device_count(),
        "worktree_changes": changed,
        "load_average_1_5_15": {"start": load_start, "end": os.getloadavg()},
        "settings": {
            "seeds": ARGS.seeds,
            "steps_per_advance": ARGS.steps,
            "eval_every": ARGS.steps,
            "eval_splits": ["val"],
            "repeats": ARGS.repeats,
            "batch": BATCH,
            "learning_rate": LR,
            "vmap_widths": WIDTHS,
            "teacher": {
                "model": TEACHER.name,
                "widths": TEACHER.widths,
                "steps": ARGS.teacher_steps,
                "test_acc": teacher_acc,
            },
            "student": {"model": STUDENT.name, "widths": STUDENT.widths},
            "objectives": {
                base: {
                    "terms": {k: dict(v) for k, v in cfg.objective.terms.items()},
                    "grid": grid,
                    "teacher": cfg.teacher,
                    "teacher_live": trainers[base].teacher_live,
                    "crop_padding": cfg.data.crop_padding,
                }
                for base, (cfg, grid) in bases.items()
            },
            "programs": {name: {"objective": base, **opts} for name, (base, opts) in specs.items()},
            "six_in_one_grid_points": method_names,
        },
        "step_costs": step,
        "measurements": m,
        "ratios": ratios,
        "total_seconds": time.perf_counter() - t_start,
    }
    print(table(m, ratios, step, method_names))
    emit_json(result, ARGS.out, print_always=False)
    return 0


def table(m, ratios, step, method_names) -> str:
    f = lambda x: "   n/a" if x is None else f"{x:6.2f}"  # noqa: E731
    rows = [
        f"digits cnn2d(8,16) <- cnn2d(32,64), batch {BATCH}, {ARGS.seeds} seeds x G grid points, "
        f"{ARGS.steps} steps per advance, median of {ARGS.repeats}, {jax.device_count()} host devices",
        f"{'program':<26}{'G':>3}{'s/advance':>11}{'ms/run-step':>13}{'/kd_live':>10}{'compile s':>11}"
        f"{'GFLOP/dev':>11}{'/expected':>11}{'temp MiB':>10}",
    ]
    for w in [*WIDTHS, None]:
        names = [n for n in m if (n.endswith(f"@{w}") if w else "@" not in n)]
        ref = m.get(f"kd_live@{w}" if w else "kd_live@vmap")["seconds_per_run_step"]
        for name in names:
            v = m[name]
            cf = (v["compiled_cost"] or {}).get("flops")
            temp = (v["memory"] or {}).get("temp")
            rows.append(
                f"{name:<26}{v['grid_points']:>3}{v['seconds_per_advance']:>11.3f}"
                f"{1e3 * v['seconds_per_run_step']:>13.3f}{v['seconds_per_run_step'] / ref:>10.2f}"
                f"{v['compile_s']:>11.1f}{(cf or float('nan')) / 1e9:>11.3f}"
                f"{f(v['compiled_flops_over_expected']):>11}{(temp or 0) / 2**20:>10.1f}"
            )
    rows += ["", f"{'one run, one step':<26}{'MFLOP':>9}{'/kd_live':>10}{'MB accessed':>13}{'/kd_live':>10}"]
    for b, s in step.items():
        rows.append(
            f"{b:<26}{s['flops'] / 1e6:>9.2f}{ratios['step_flops_over_kd_live'][b]:>10.2f}"
            f"{s['bytes accessed'] / 1e6:>13.2f}{ratios['step_bytes_over_kd_live'][b]:>10.2f}"
        )
    rows += ["", f"ratios (per run-step unless stated){'':<14}{'vmap':>8}{'map':>8}"]
    for key in ratios["vmap"]:
        a, b = ratios["vmap"][key], ratios["map"][key]
        if isinstance(a, dict):
            rows += [f"  {key}[{t}]".ljust(50) + f"{f(a[t]):>8}{f(b[t]):>8}" for t in a]
        else:
            rows.append(f"  {key}".ljust(50) + f"{f(a):>8}{f(b):>8}")
    rows += [
        "",
        "map / vmap per run-step: "
        + ", ".join(f"{k} {v:.2f}" for k, v in ratios["map_over_vmap_per_run_step"].items()),
    ]
    if "sharded_per_device_over_unsharded_flops" in ratios:
        rows.append(
            "sharded per-device FLOPs / unsharded FLOPs (kd_live): "
            + ", ".join(f"{w} {v:.3f}" for w, v in ratios["sharded_per_device_over_unsharded_flops"].items())
        )
    rows.append(f"six-in-one grid points: {', '.join(method_names)}")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
