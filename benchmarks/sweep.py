"""Benchmark: a 16-seed KD sweep run six ways, side by side in one process.

(i)   vmapped on one device                 SweepProgram(shard=False, vmap_width=None)
(ii)  sharded over host devices, vmapped     SweepProgram(shard=True, vmap_width=None)
(vi)  sharded, one run after another within
      each device (lax.map)                  SweepProgram(shard=True, vmap_width=1)
(iii) the runs one after another, one call of jit(trainer.run) each
(iv)  a plain PyTorch loop of the same model, data, optimiser, loss and steps
      (only if torch is importable; never a dependency)
(v)   this machine's matmul FLOP/s, measured in the same process

Every sweep starts from the key (init + advance are timed together, as in
``run_sweep``). Compilation is excluded (a warm-up call first); (i), (ii),
(vi) and (iii) are timed round-robin, so a change in machine load hits them
alike; every time is the median of ``--repeats``.

FLOPs come from XLA's ``cost_analysis()`` of compiled programs, so only what
runs is counted (no input gradients of the first layer, which the old
analytic ``6 · batch · weights`` formula counted). XLA counts the body of a
loop (``lax.scan``, ``lax.map``, while) once, whatever its trip count, so a
compiled sweep's count is one training step plus one evaluation (times the
runs vectorised together), not the sweep. The sweep's FLOPs are built from
two compiled one-run programs, ``jit(trainer.train_step)`` (``F_step``) and
``jit(partial(jaxkd.evaluate.evaluate, trainer))`` (``F_eval``)::

    sweep FLOPs = S · (steps · F_step + evaluations · F_eval)

The epoch permutations (``F_perm``: random bits and a sort per epoch, drawn
all at once before the step loop, so XLA counts them in full) are recorded
apart and left out of the FLOP/s. Each sweep program's own per-device count
is recorded with the count expected from the one-run pieces,
``vectorised runs · (F_step + F_eval + F_perm)`` (``vectorised runs``: the
seeds per device under vmap, 1 under lax.map, whose loop body XLA also counts
once), as a check of the multiplication and of work duplicated across
devices. Achieved FLOP/s is the sweep FLOPs over the fastest of (i), (ii), (vi).

Usage (about 9.5 minutes on an idle 2-core CPU, 2.7 of them PyTorch; ``--torch-repeats 1`` or
``--workloads small,medium`` shorten it)::

    python benchmarks/sweep.py --out benchmarks/results/sweep.json
    python benchmarks/sweep.py --smoke        # 4 seeds, 30 steps, 1 repeat, no torch: a correctness check
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=16)
    p.add_argument(
        "--workloads",
        default="small,medium,large",
        help="comma list of: small (the demo's student: MLP 16, batch 64, 1500 steps), "
        "medium (MLP 128-128, batch 256, 500 steps), large (MLP 256-256, batch 128, 500 steps)",
    )
    p.add_argument("--devices", type=int, default=os.cpu_count() or 2, help="host devices to force on CPU")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--torch-repeats", type=int, default=2, help="timed PyTorch sweeps (after a one-seed warm-up)")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--smoke", action="store_true", help="4 seeds, 30 steps, 1 repeat, no torch: a correctness check")
    p.add_argument("--out", default=None, help="write the JSON result here as well as to stdout")
    return p.parse_args()


ARGS = parse()
if "XLA_FLAGS" not in os.environ:  # must be set before jax initialises its CPU client
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={ARGS.devices}"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from jaxkd.config import DataConfig, EvalConfig, ModelConfig, ObjectiveConfig, RunConfig  # noqa: E402
from jaxkd.data import load_digits  # noqa: E402
from jaxkd.evaluate import evaluate  # noqa: E402
from jaxkd.program import SweepProgram  # noqa: E402
from jaxkd.recipes import RecipeConfig  # noqa: E402
from jaxkd.results import emit_json, env_stamp  # noqa: E402
from jaxkd.teacher import Teacher  # noqa: E402
from jaxkd.train import make_train  # noqa: E402

WORKLOADS = {
    "small": {"widths": (16,), "batch": 64, "steps": 1500},
    "medium": {"widths": (128, 128), "batch": 256, "steps": 500},
    "large": {"widths": (256, 256), "batch": 128, "steps": 500},
}
KD = {"ce": {"weight": 0.1}, "kd": {"weight": 0.9, "temperature": 4.0}}
LR = 1e-3
# The whole training split (no validation carve-out: only the test split is evaluated, once, at the end).
DATA = DataConfig("digits", val_fraction=0.0)


def log(msg):
    print(f"[sweep {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cost(compiled) -> dict:
    """``{"flops", "bytes accessed"}`` of a compiled program (per device)."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0]
    return {k: float(analysis[k]) for k in ("flops", "bytes accessed") if k in analysis}


def round_robin(fns: dict, repeats: int) -> dict:
    """Warm up every function, then time them in turn ``repeats`` times; ``{name: (median, times, first)}``."""
    first = {}
    for name, fn in fns.items():
        t = time.perf_counter()
        fn()
        first[name] = time.perf_counter() - t
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: (statistics.median(ts), ts, first[name]) for name, ts in times.items()}


def matmul_flops(repeats, n=2048):
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    f = jax.jit(lambda a, b: a @ b)
    reps = 10
    ((t, _, _),) = round_robin({"mm": lambda: [f(a, b).block_until_ready() for _ in range(reps)]}, repeats).values()
    return 2 * n**3 * reps / t


def analytic_flops(in_dim, widths, classes, batch, steps, n_test, seeds):
    """The old formula: 6 · batch · weights per step (forward, input grads, weight grads) + 2 · N_test · weights."""
    dims = [in_dim, *widths, classes]
    weights = sum(a * b for a, b in zip(dims[:-1], dims[1:]))
    return seeds * (6 * batch * weights * steps + 2 * n_test * weights)


def torch_loop(trainer, seeds):
    """A plain PyTorch loop on the trainer's own training split and cached teacher logits."""
    import numpy as np
    import torch
    from torch import nn

    torch.set_num_threads(os.cpu_count() or 1)
    x = torch.tensor(np.asarray(trainer.prepare(trainer.data["x_train"])).reshape(trainer.num_train, -1))
    y = torch.tensor(np.asarray(trainer.data["y_train"]), dtype=torch.long)
    t_logits = torch.tensor(np.asarray(trainer.teacher_inputs["logits"]["train"]))
    cfg = trainer.config
    n, batch, per_epoch = trainer.num_train, trainer.batch_size, trainer.steps_per_epoch
    w_ce, w_kd, temp = KD["ce"]["weight"], KD["kd"]["weight"], KD["kd"]["temperature"]

    def one(seed, steps):
        torch.manual_seed(seed)
        dims = [x.shape[1], *cfg.model.widths]
        layers = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        model = nn.Sequential(*layers, nn.Linear(dims[-1], trainer.model.num_classes))
        opt = torch.optim.Adam(model.parameters(), lr=cfg.recipe.learning_rate)
        g = torch.Generator().manual_seed(seed)
        for step in range(steps):
            if step % per_epoch == 0:
                perm = torch.randperm(n, generator=g)
            idx = perm[(step % per_epoch) * batch : (step % per_epoch + 1) * batch]
            logits = model(x[idx])
            ce = nn.functional.cross_entropy(logits, y[idx])
            log_ps = torch.log_softmax(logits / temp, -1)
            log_pt = torch.log_softmax(t_logits[idx] / temp, -1)
            kd = (log_pt.exp() * (log_pt - log_ps)).sum(-1).mean() * temp**2
            loss = w_ce * ce + w_kd * kd
            opt.zero_grad()
            loss.backward()
            opt.step()
        return model

    sweep = lambda: [one(s, trainer.steps) for s in range(seeds)]  # noqa: E731
    warm = lambda: one(0, min(trainer.steps, 100))  # noqa: E731
    return sweep, warm, torch.__version__


def student_config(widths, batch, steps) -> RunConfig:
    # One evaluation (test split) at the end only, so the benchmark measures training.
    return RunConfig(
        model=ModelConfig("mlp", widths),
        objective=ObjectiveConfig(KD),
        recipe=RecipeConfig(optimizer="adam", learning_rate=LR, steps=steps, batch_size=batch),
        data=DATA,
        eval=EvalConfig(every=steps, splits=("test",), select=None),
    )


def one_run_costs(trainer, steps) -> dict:
    """Compiled costs of one run's pieces: a training step, an evaluation, the epoch permutations of ``steps``."""
    key = jax.random.key(0)
    state = trainer.init(*jax.random.split(key))
    hp = {k: jnp.asarray(v, jnp.float32) for k, v in trainer.hparams().items()}
    idx = jnp.arange(trainer.batch_size, dtype=jnp.int32)
    step = jax.jit(trainer.train_step).lower(state, hp, trainer.data, trainer.teacher_inputs, idx).compile()
    ev = jax.jit(functools.partial(evaluate, trainer)).lower(state, trainer.data, trainer.teacher_inputs).compile()
    n_perms = steps // trainer.steps_per_epoch + 2  # what Trainer.advance draws
    perms = jax.jit(trainer.epoch_permutations, static_argnums=2).lower(state.perm_key, 0, n_perms).compile()
    return {"train_step": cost(step), "evaluate": cost(ev), "epoch_permutations": {**cost(perms), "count": n_perms}}


def measure(ds, teacher, peak, name, widths, batch, steps):
    cfg = student_config(widths, batch, steps)
    trainer = make_train(cfg, ds, teacher)
    assert not trainer.teacher_live  # cached logits, as in the PyTorch loop
    key = jax.random.key(1)
    seeds = ARGS.seeds
    out = {
        "student_widths": widths,
        "batch": batch,
        "steps": steps,
        "num_train": trainer.num_train,
        "evaluations": steps // trainer.eval_every,
    }

    programs = {
        "i_vmap": dict(shard=False, vmap_width=None),
        "ii_sharded_vmap": dict(shard=True, vmap_width=None),
        "vi_sharded_map": dict(shard=True, vmap_width=1),
    }
    fns, program_costs = {}, {}
    for label, opts in programs.items():
        prog = SweepProgram(trainer, seeds, **opts)
        # The program prog.advance(states, steps) runs, compiled ahead of time so that its per-device cost can be
        # read and the timed calls run exactly it (SweepProgram.advance_program).
        adv = prog.advance_program(steps).lower(prog.init(key), prog.hparams, prog.data, prog.teacher_inputs).compile()
        n_dev = prog.n_devices
        program_costs[label] = {
            **cost(adv),
            "devices": n_dev,
            "vectorised_runs": 1 if opts["vmap_width"] == 1 else prog.padded_seeds // n_dev,
        }
        fns[label] = lambda prog=prog, adv=adv: jax.block_until_ready(
            adv(prog.init(key), prog.hparams, prog.data, prog.teacher_inputs)
        )
    run = jax.jit(trainer.run).lower(key).compile()
    program_costs["iii_loop"] = {**cost(run), "devices": 1, "vectorised_runs": 1}
    keys = jax.random.split(key, seeds)
    fns["iii_loop"] = lambda: [jax.block_until_ready(run(k)) for k in keys]

    log(f"{name}: timing (i), (ii), (vi), (iii) round-robin, {ARGS.repeats} repeats")
    timed = round_robin(fns, ARGS.repeats)
    sec = {k: v[0] for k, v in timed.items()}
    out["seconds"] = sec
    out["seconds_all"] = {k: v[1] for k, v in timed.items()}
    out["first_call_seconds"] = {k: v[2] for k, v in timed.items()}

    if not ARGS.no_torch:
        try:
            sweep, warm, out["torch_version"] = torch_loop(trainer, seeds)
        except ImportError:
            out["torch_version"] = None
        else:
            log(f"{name}: timing (iv) PyTorch, {ARGS.torch_repeats} repeats")
            warm()
            ts = []
            for _ in range(ARGS.torch_repeats):
                t = time.perf_counter()
                sweep()
                ts.append(time.perf_counter() - t)
            sec["iv_torch_loop"] = statistics.median(ts)
            out["seconds_all"]["iv_torch_loop"] = ts

    one = one_run_costs(trainer, steps)
    f_step, f_eval = one["train_step"]["flops"], one["evaluate"]["flops"]
    f_perm = one["epoch_permutations"]["flops"]
    for c in program_costs.values():
        c["expected_flops"] = c["vectorised_runs"] * (f_step + f_eval + f_perm)
        c["flops_over_expected"] = c["flops"] / c["expected_flops"]
    flops = seeds * (steps * f_step + out["evaluations"] * f_eval)
    old = analytic_flops(64, widths, 10, batch, steps, len(ds.y_test), seeds)
    best = min(sec["i_vmap"], sec["ii_sharded_vmap"], sec["vi_sharded_map"])
    out["flops"] = {
        "one_run": one,
        "programs_per_device": program_costs,
        "sweep_flops": flops,
        "permutation_flops": seeds * f_perm,
        "old_analytic_flops": old,
        "sweep_over_old_analytic": flops / old,
        "sweep_flops_per_s": flops / best,
        "fraction_of_matmul_peak": flops / best / peak,
    }
    r = {
        "loop_over_vmap": sec["iii_loop"] / sec["i_vmap"],
        "loop_over_sharded_vmap": sec["iii_loop"] / sec["ii_sharded_vmap"],
        "loop_over_sharded_map": sec["iii_loop"] / sec["vi_sharded_map"],
        "vmap_over_sharded_vmap": sec["i_vmap"] / sec["ii_sharded_vmap"],
        "sharded_map_over_sharded_vmap": sec["vi_sharded_map"] / sec["ii_sharded_vmap"],
    }
    if "iv_torch_loop" in sec:
        r["torch_over_sharded_vmap"] = sec["iv_torch_loop"] / sec["ii_sharded_vmap"]
        r["torch_over_sharded_map"] = sec["iv_torch_loop"] / sec["vi_sharded_map"]
        r["torch_over_loop"] = sec["iv_torch_loop"] / sec["iii_loop"]
    out["ratios"] = r
    return out


def main():
    if ARGS.smoke:
        ARGS.seeds, ARGS.repeats, ARGS.no_torch = 4, 1, True
        for w in WORKLOADS.values():
            w["steps"] = 30
    t_start = time.perf_counter()
    load_start = os.getloadavg()
    ds = load_digits()
    t_steps = 30 if ARGS.smoke else 500
    log(f"training the teacher (MLP 256-256, {t_steps} steps)")
    t_cfg = RunConfig(
        model=ModelConfig("mlp", (256, 256)),
        data=DATA,
        recipe=RecipeConfig(optimizer="adam", learning_rate=LR, steps=t_steps, batch_size=64),
        eval=EvalConfig(every=t_steps, splits=("test",), select=None),
    )
    t_trainer = make_train(t_cfg, ds)
    t_state, t_hist = jax.jit(t_trainer.run)(jax.random.key(0))
    teacher = Teacher(t_trainer.model, t_state.params["model"], t_state.rest)
    log("matmul peak")
    peak = matmul_flops(ARGS.repeats)
    result = {
        "benchmark": "sweep",
        "seeds": ARGS.seeds,
        "dataset": "digits",
        "repeats": ARGS.repeats,
        "torch_repeats": ARGS.torch_repeats,
        "smoke": ARGS.smoke,
        "env": env_stamp(),
        "device_kind": jax.devices()[0].device_kind,
        "n_devices": jax.device_count(),
        "teacher": {"model": "mlp", "widths": [256, 256], "steps": t_steps, "test_acc": float(t_hist["test/acc"][-1])},
        "objective": KD,
        "learning_rate": LR,
        "matmul_peak_flops_per_s": peak,
        "workloads": {},
    }
    for name in ARGS.workloads.split(","):
        w = WORKLOADS[name]
        log(f"{name}: compiling")
        result["workloads"][name] = measure(ds, teacher, peak, name, w["widths"], w["batch"], w["steps"])
    result["load_average_1_5_15"] = {"start": load_start, "end": os.getloadavg()}
    result["total_seconds"] = time.perf_counter() - t_start
    emit_json(result, ARGS.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
