"""Benchmark: a 16-seed KD sweep run five ways, side by side in one process.

(i)   vmapped on one device            (SweepProgram, shard=False)
(ii)  vmapped and sharded over devices (host devices on CPU: --devices)
(iii) the 16 runs one after another through the same JAX code (jit(trainer.run))
(iv)  a plain PyTorch loop of the same model, data, optimiser, loss and steps
      (only if torch is importable; never a dependency)
(v)   this machine's matmul FLOP/s, measured in the same process

Compilation is excluded everywhere (a warm-up call first); every timing is the
median of --repeats runs. Achieved FLOP/s uses the analytic matmul FLOP count
of the training steps (6 · batch · weights per step: forward, input grads,
weight grads) plus the evaluation passes, so it is directly comparable with
the matmul peak. Usage::

    python benchmarks/sweep.py --out benchmarks/results/sweep.json
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
    p.add_argument("--seeds", type=int, default=16)
    p.add_argument("--workloads", default="small,medium,large",
                   help="comma list of: small (the demo's student: MLP 16, batch 64, 1500 steps), "
                        "medium (MLP 128-128, batch 256, 500 steps), large (MLP 256-256, batch 128, 500 steps)")
    p.add_argument("--devices", type=int, default=os.cpu_count() or 2, help="host devices to force on CPU")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--out", default=None, help="write the JSON result here as well as to stdout")
    return p.parse_args()


ARGS = parse()
if "XLA_FLAGS" not in os.environ:  # must be set before jax initialises its CPU client
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={ARGS.devices}"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from jaxkd.data import load_digits  # noqa: E402
from jaxkd.results import env_stamp  # noqa: E402
from jaxkd.sweep import SweepProgram  # noqa: E402
from jaxkd.train import Teacher, TrainConfig, make_train  # noqa: E402


def timed(fn, repeats):
    fn()  # warm-up / compile
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def matmul_flops(repeats, n=2048):
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    f = jax.jit(lambda a, b: a @ b)
    reps = 10
    t, _ = timed(lambda: [f(a, b).block_until_ready() for _ in range(reps)], repeats)
    return 2 * n**3 * reps / t


def mlp_weights(in_dim, widths, classes):
    dims = [in_dim, *widths, classes]
    return sum(a * b for a, b in zip(dims[:-1], dims[1:]))


def torch_loop(ds, teacher_logits, cfg, seeds):
    import torch
    from torch import nn

    torch.set_num_threads(os.cpu_count() or 1)
    x = torch.tensor(ds.x_train.reshape(len(ds.x_train), -1))
    y = torch.tensor(ds.y_train, dtype=torch.long)
    t_logits = torch.tensor(teacher_logits)
    n = len(y)
    per_epoch = n // cfg.batch_size

    def one(seed):
        torch.manual_seed(seed)
        dims = [x.shape[1], *cfg.widths]
        layers = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        model = nn.Sequential(*layers, nn.Linear(dims[-1], 10))
        opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
        g = torch.Generator().manual_seed(seed)
        T, alpha = cfg.temperature, cfg.alpha
        for step in range(cfg.steps):
            if step % per_epoch == 0:
                perm = torch.randperm(n, generator=g)
            idx = perm[(step % per_epoch) * cfg.batch_size:(step % per_epoch + 1) * cfg.batch_size]
            logits = model(x[idx])
            ce = nn.functional.cross_entropy(logits, y[idx])
            log_ps = torch.log_softmax(logits / T, -1)
            log_pt = torch.log_softmax(t_logits[idx] / T, -1)
            kd = (log_pt.exp() * (log_pt - log_ps)).sum(-1).mean() * T**2
            loss = (1 - alpha) * ce + alpha * kd
            opt.zero_grad()
            loss.backward()
            opt.step()
        return model

    return lambda: [one(s) for s in range(seeds)], torch.__version__


WORKLOADS = {
    "small": {"widths": (16,), "batch": 64, "steps": 1500},
    "medium": {"widths": (128, 128), "batch": 256, "steps": 500},
    "large": {"widths": (256, 256), "batch": 128, "steps": 500},
}


def measure(ds, teacher, peak, widths, batch, steps):
    # One evaluation at the end only, so the benchmark measures training.
    cfg = TrainConfig(widths=widths, steps=steps, eval_every=steps, batch_size=batch,
                      learning_rate=1e-3, alpha=0.9, temperature=4.0, eval_train=False)
    trainer = make_train(cfg, ds, teacher)
    key = jax.random.key(1)
    out = {"student_widths": widths, "batch": batch, "steps": steps, "seconds": {}}

    def sweep_fn(shard):
        prog = SweepProgram(trainer, ARGS.seeds, shard=shard)
        return lambda: jax.block_until_ready(prog.advance(prog.init(key), cfg.steps)), prog

    sec = out["seconds"]
    fn, _ = sweep_fn(False)
    sec["i_vmap"], _ = timed(fn, ARGS.repeats)
    fn, prog = sweep_fn(True)
    out["sharded"] = prog.mesh is not None
    sec["ii_vmap_sharded"], _ = timed(fn, ARGS.repeats)
    run = jax.jit(trainer.run)
    keys = jax.random.split(key, ARGS.seeds)
    sec["iii_loop"], _ = timed(lambda: [jax.block_until_ready(run(k)) for k in keys], ARGS.repeats)
    if not ARGS.no_torch:
        try:
            fn, out["torch_version"] = torch_loop(ds, teacher.logits_train, cfg, ARGS.seeds)
            sec["iv_torch_loop"], _ = timed(fn, max(1, ARGS.repeats - 1))
        except ImportError:
            out["torch_version"] = None

    weights = mlp_weights(64, widths, 10)
    flops = ARGS.seeds * (6 * batch * weights * steps + 2 * len(ds.x_test) * weights)
    best = min(sec["i_vmap"], sec["ii_vmap_sharded"])
    out["flops"] = {"sweep_matmul_flops": flops, "sweep_flops_per_s": flops / best,
                    "fraction_of_matmul_peak": flops / best / peak}
    out["ratios"] = {
        "loop_over_vmap": sec["iii_loop"] / sec["i_vmap"],
        "loop_over_sharded": sec["iii_loop"] / sec["ii_vmap_sharded"],
        "vmap_over_sharded": sec["i_vmap"] / sec["ii_vmap_sharded"],
    }
    if "iv_torch_loop" in sec:
        out["ratios"]["torch_over_sharded"] = sec["iv_torch_loop"] / sec["ii_vmap_sharded"]
        out["ratios"]["torch_over_vmap"] = sec["iv_torch_loop"] / sec["i_vmap"]
    return out


def main():
    ds = load_digits()
    teacher_trainer = make_train(TrainConfig(widths=(256, 256), steps=500, eval_every=500), ds)
    t_state, _ = jax.jit(teacher_trainer.run)(jax.random.key(0))
    teacher = Teacher.from_model(teacher_trainer.model, t_state.params, t_state.rest, ds)
    peak = matmul_flops(ARGS.repeats)
    result = {"benchmark": "sweep", "seeds": ARGS.seeds, "dataset": "digits", "repeats": ARGS.repeats,
              "env": env_stamp(), "device_kind": jax.devices()[0].device_kind, "n_devices": jax.device_count(),
              "matmul_peak_flops_per_s": peak, "workloads": {}}
    for name in ARGS.workloads.split(","):
        w = WORKLOADS[name]
        result["workloads"][name] = measure(ds, teacher, peak, w["widths"], w["batch"], w["steps"])
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if ARGS.out:
        os.makedirs(os.path.dirname(os.path.abspath(ARGS.out)), exist_ok=True)
        with open(ARGS.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
