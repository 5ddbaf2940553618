"""Benchmark: an 8-seed resnet32x4 → resnet8x4 KD sweep on 32x32 images, run up to eight ways in one process.

The workload is RepDistiller's CIFAR-100 KD step: batch 64, random crop (pad 4)
+ horizontal flip, 0.1·CE + 0.9·KD (T = 4), SGD momentum 0.9, weight decay
5e-4, lr 0.05, a live shared frozen resnet32x4 teacher run on every augmented
batch. Data are synthetic uint8 images with 100 classes (no files, no network;
only speed is measured). Variants (``--variants``, all on the same seeds, the
same initial states and the same per-step keys):

vmap          the engine's sweep program, one device, all seeds vmapped
              (``SweepProgram(shard=False, vmap_width=None)``)
vmap_sharded  the same sharded over the host devices with ``shard_map``, each
              device vmapping its seeds (``shard=True, vmap_width=None``)
map_sharded   sharded, each device running its seeds one after another with
              ``lax.map`` inside the program (``vmap_width=1``, the CPU default)
map_sharded_neither
              map_sharded with neither (the CPU program before 2026-12-06)
map_sharded_nowinograd
              map_sharded with XLA's convolution on every map, not the
              engine's CPU choice of Winograd F(2x2, 3x3) on small maps
map_sharded_winograd_8x8
              map_sharded with the engine's Winograd rule before 2026-12-07:
              8x8 maps of 128 channels or more, 16x16 maps of 256 or more
              (now 16x16 maps of 128 or more)
map_sharded_winograd_f4
              map_sharded with Winograd F(4x4, 3x3) instead of the engine's
              F(2x2, 3x3) where the map divides by 4 (layers.WINOGRAD_TILE)
map_sharded_nofence
              map_sharded traced without the engine's CPU fence on the inputs
              of differentiated convolutions (``jaxkd.models.layers._fence``)
map_sharded_jaxlib
              map_sharded compiled with jaxlib's default XLA:CPU options
              (``compiler_options=None``: YNNPACK fusions on) instead of the
              engine's CPU options (benchmarks/conv_cpu.py)
map_sharded_ynn
              map_sharded with jaxlib's experimental YNNPACK fusions for dots,
              element-wise ops and reductions (convolutions stay XLA's)
map           one device, all seeds one after another inside the program
step_loop     separate calls: one ``jit(train_step)`` call per seed per step
              (a top-level program, no loop inside)
vmap_step     ``jit(vmap(train_step))`` over all seeds, called per step (the
              vmapped step without the engine's ``lax.scan`` around it)
grouped       an explicit grouped-convolution student: the seeds' channels side
              by side ([B, H, W, S·C]), every convolution one
              ``feature_group_count = S`` convolution, the teacher run once on
              the S·B images; one top-level program per step on one device
torch         a plain PyTorch loop (CPU wheel, imported lazily; skipped with a
              note when absent) of the same architectures, recipe and batch,
              augmentation done in torch on the batch, ``--torch-seeds`` (2)
              seeds one after another (a sequential loop's images/s over all
              its seeds does not depend on how many seeds it runs)
torch_cl      the same PyTorch loop with models and inputs in channels-last
              memory format (NHWC; oneDNN's preferred CPU layout, 1.1-1.3x
              NCHW per model in ``cpu_profile.py``)

Default: every variant but ``map`` and ``vmap_step`` (``--variants all`` adds them).

Timing: every program advances all its seeds by one step per call. Each is
compiled ahead of time (``lower_s``, ``compile_s``; not in the step time), then
called ``--warmup`` times (excluded; ``first_call_s``), then ``--steps`` times;
calls go round-robin over the variants so that a change in machine load hits
them alike, and ``seconds_per_step`` is the median. One step of one seed
processes ``batch`` images, so images/s per seed = batch / seconds_per_step and
``images_per_s`` = seeds · batch / seconds_per_step. Ratios (``speedups``,
``targets``) compare ``images_per_s``: the PyTorch loop runs fewer seeds.

FLOPs: ``F_step`` is XLA's ``cost_analysis()`` of one seed's compiled
``jit(trainer.train_step)`` (teacher forward, student forward and backward,
augmentation, SGD update); achieved FLOP/s = seeds · F_step / seconds_per_step,
also for PyTorch, as a fraction of the matmul FLOP/s measured in the same run
(a 2048² float32 matmul, timed at the start and the end; the higher is used).
Each program's own per-device count is recorded next to vectorised runs ·
F_step as a check. Memory per seed: the compiled program's
``memory_analysis()`` (temp + argument + output, per device) over the seeds a
device holds. ``convolutions`` counts each program's convolutions, the grouped
ones (vmapping a convolution over per-seed weights gives
``feature_group_count`` > 1) and those left with non-canonical dimension labels,
which XLA:CPU runs on a slow generic emitter instead of Eigen: it canonicalises
only top-level convolutions, so the backward convolutions JAX emits inside a
loop body (the engine's ``lax.scan``, ``lax.map``) stay slow (jax-ml/jax#12868),
as do the ``batch_group_count`` kernel gradients of an explicitly grouped
convolution.

Checks, recorded in ``checks``: the PyTorch models' logits against the zoo's on
one batch, eval and train mode, with the JAX weights copied in and every
BatchNorm's statistics and affine parameters perturbed (the independent check
of the layout: padding 1 on each side, BN eps 1e-5, HWIO → OIHW kernels; pass:
max |diff| < 1e-3 in eval mode); every JAX variant's first-step loss against
``vmap``'s, and the grouped student's parameters after that step against
``vmap``'s.

The H100 figure in ``projection_h100`` is arithmetic, not a measurement:
F_step / batch FLOPs per training image, 45,000 images per epoch (the paper
preset's CIFAR-100 training split), at 40 % of 989 TFLOP/s (dense bf16).

Usage::

    python benchmarks/cnn_sweep.py --out benchmarks/results/cnn_sweep.json
    python benchmarks/cnn_sweep.py --quick          # 2 seeds, 16x16, small widths, 2 steps: end-to-end check
    python benchmarks/cnn_sweep.py --torch-check    # only the PyTorch/JAX logits check at full size
    python benchmarks/cnn_sweep.py --variants step_loop,vmap_step,grouped,torch   # the loop-free programs

Runtime, measured while the 2-core CPU was shared with other jobs (load 3-6):
``--quick`` 3.5 to 5.5 minutes (9.7 with ``--variants all``), most of it compiling;
``--torch-check`` 1.5 minutes. The default run was not timed when this was
written. Estimate for an idle 2-core CPU: a seed-step is 190 GFLOP (about 4 s
here), so each JAX variant costs about 30 s per step for 8 seeds, and 1 warm-up
+ 2 timed steps of the six default variants plus about 4 minutes of compiling
and checks make about 13 minutes, **if** the engine's programs run their
convolutions on the fast path. With the engine as of this writing they do not
(``convolutions.noncanonical`` > 0 for vmap, vmap_sharded, map_sharded, map):
one such step at full size took about 20x as long as the same step compiled at
top level, which would make the default run take hours. The log warns at
compile time and gives the expected time after the warm-up round;
``--variants`` restricts the run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from typing import Any, NamedTuple

ALL_VARIANTS = (
    "vmap",
    "vmap_sharded",
    "map_sharded",
    "map_sharded_neither",
    "map_sharded_nowinograd",
    "map_sharded_nofence",
    "map_sharded_winograd_8x8",
    "map_sharded_winograd_f4",
    "map_sharded_jaxlib",
    "map_sharded_ynn",
    "map",
    "step_loop",
    "vmap_step",
    "grouped",
    "torch",
    "torch_cl",
)
DEFAULT_VARIANTS = ("vmap", "vmap_sharded", "map_sharded", "step_loop", "grouped", "torch")


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--steps", type=int, default=2, help="timed steps (one call each) per variant")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per variant before the timed ones")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument(
        "--torch-seeds",
        type=int,
        default=2,
        help="seeds the PyTorch loop runs (one after another, so its images/s over all seeds does not depend on it)",
    )
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--devices", type=int, default=2, help="host devices to force on CPU")
    p.add_argument(
        "--variants", default=",".join(DEFAULT_VARIANTS), help=f"comma list of {', '.join(ALL_VARIANTS)}, or 'all'"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="2 seeds, 16x16, small widths, 2 steps: an end-to-end check (minutes, mostly compiling)",
    )
    p.add_argument("--torch-check", action="store_true", help="only the PyTorch/JAX logits check, then exit")
    p.add_argument("--out", default=None, help="write the JSON result here (else it is printed)")
    return p.parse_args()


ARGS = parse()
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    # Must be set before jax initialises its CPU client.
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={ARGS.devices}"
    ).strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402
from jax import lax  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from jaxkd import losses, recipes  # noqa: E402
from jaxkd.config import DataConfig, EvalConfig, ModelConfig, ObjectiveConfig, RunConfig  # noqa: E402
from jaxkd.data import Dataset  # noqa: E402
from jaxkd.data.augment import normalize  # noqa: E402
from jaxkd.models import layers, make_model  # noqa: E402
from jaxkd.program import SweepProgram, default_compiler_options  # noqa: E402
from jaxkd.recipes import RecipeConfig  # noqa: E402
from jaxkd.results import emit_json, env_stamp  # noqa: E402
from jaxkd.teacher import Teacher  # noqa: E402
from jaxkd.train import make_train  # noqa: E402

TEACHER, STUDENT = "resnet32x4", "resnet8x4"
QUICK_WIDTHS = {TEACHER: (8, 16, 16, 32), STUDENT: (8, 8, 16, 16)}  # stem + 3 stages
NUM_CLASSES = 100
KD = {"ce": {"weight": 0.1}, "kd": {"weight": 0.9, "temperature": 4.0}}
RECIPE = dict(optimizer="momentum", learning_rate=0.05, momentum=0.9, weight_decay=5e-4)
CROP_PADDING, FLIP = 4, True
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)  # RepDistiller's
STEPS_PER_DATA_EPOCH = 8  # synthetic training set = 8 batches
H100_BF16_DENSE_FLOPS, H100_UTILISATION, PAPER_TRAIN_IMAGES, PAPER_EPOCHS = 989e12, 0.40, 45_000, 240
TORCH_PASS_TOL = 1e-3
YNN_ALL = "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_ELTWISE,LIBRARY_FUSION_TYPE_REDUCE"
X4_CHANNELS = (32, 64, 128, 256)


def log(msg):
    print(f"[cnn_sweep {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- compiled-program facts -------------------------------------------------------------------------------------


def cost(compiled) -> dict | None:
    """``{"flops", "bytes accessed"}`` of a compiled program (per device), or None."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    if not analysis:
        return None
    return {k: float(analysis[k]) for k in ("flops", "bytes accessed") if k in analysis}


def memory(compiled) -> dict | None:
    """Per-device buffer sizes in bytes from ``memory_analysis()``, or None where the backend gives none."""
    m = compiled.memory_analysis()
    if m is None:
        return None
    return {k: int(getattr(m, f"{k}_size_in_bytes")) for k in ("argument", "output", "alias", "temp")}


def conv_census(compiled) -> dict:
    """Convolutions of the optimised program: all, grouped, and those XLA:CPU left non-canonical (slow path)."""
    out = {"total": 0, "grouped": 0, "noncanonical": 0}
    for line in compiled.as_text().splitlines():
        if " convolution(" not in line:
            continue
        out["total"] += 1
        groups = [int(g) for g in re.findall(r"(?:feature|batch)_group_count=(\d+)", line)]
        out["grouped"] += any(g > 1 for g in groups)
        labels = re.search(r"dim_labels=([^,\s]+)", line)
        out["noncanonical"] += bool(labels) and labels.group(1) != "b01f_01io->b01f"
    return out


def matmul_peak(n: int, reps: int = 10, repeats: int = 3) -> dict:
    """FLOP/s of an ``n x n`` float32 matmul on the default device (median of ``repeats`` runs of ``reps``)."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    f = jax.jit(lambda a, b: a @ b)
    f(a, b).block_until_ready()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(reps):
            f(a, b).block_until_ready()
        times.append(time.perf_counter() - t)
    return {"n": n, "reps": reps, "seconds_all": times, "flops_per_s": 2 * n**3 * reps / statistics.median(times)}


# --- workload ---------------------------------------------------------------------------------------------------


def synthetic_dataset(image_size: int, num_train: int) -> Dataset:
    rng = np.random.default_rng(0)
    shape = (image_size, image_size, 3)
    x = rng.integers(0, 256, (num_train + 8, *shape), dtype=np.uint8)
    y = rng.integers(0, NUM_CLASSES, num_train + 8).astype(np.int32)
    return Dataset(
        "synthetic_uint8",
        x[:num_train],
        y[:num_train],
        x[num_train:],
        y[num_train:],
        NUM_CLASSES,
        mean=CIFAR100_MEAN,
        std=CIFAR100_STD,
    )


def student_config(widths) -> RunConfig:
    # One step per call, no evaluation: a call is exactly one training step of every seed.
    # The dataset name is only a label: make_train is handed the synthetic arrays.
    return RunConfig(
        model=ModelConfig(STUDENT, widths),
        objective=ObjectiveConfig(KD),
        recipe=RecipeConfig(**RECIPE, batch_size=ARGS.batch, steps=1),
        data=DataConfig("digits", val_fraction=0.0, crop_padding=CROP_PADDING, flip=FLIP),
        eval=EvalConfig(every=1, splits=(), select=None),
        teacher="live",
    )


def hparams_of(trainer) -> dict:
    return {k: jnp.asarray(v, jnp.float32) for k, v in trainer.hparams().items()}


def seed_states(trainer, key, seeds):
    """Per-seed initial states stacked on a leading axis, drawn as ``SweepProgram.init`` draws them (no grid axis)."""

    def one(seed_key):
        return trainer.init(*jax.random.split(seed_key))

    return jax.jit(jax.vmap(one))(jax.random.split(key, seeds))


def step_program(trainer):
    """``(state, hp, data, tin) -> (state, metrics)``: one step at the batch ``advance`` would draw, no loop."""

    def step(state, hp, data, tin):
        first = state.step // trainer.steps_per_epoch
        idx = trainer.batch_indices(trainer.epoch_permutations(state.perm_key, first, 1), first, state.step)
        return trainer.train_step(state, hp, data, tin, idx)

    return step


# --- variants ---------------------------------------------------------------------------------------------------


class Variant:
    """A way to advance every seed by one step; ``call()`` runs it once and returns the seconds it took."""

    name = description = ""
    devices = 1
    vectorised_runs = 1
    compiled = convolutions = None

    def __init__(self, seeds):
        self.seeds = seeds
        self.seeds_per_device = seeds
        self.program_seeds = seeds  # the seeds one call of the compiled program holds (memory per seed divides by it)
        self.warm, self.times, self.first_losses = [], [], None
        self.lower_s = self.compile_s = None

    def compile(self, lower):
        t = time.perf_counter()
        lowered = lower()
        self.lower_s = time.perf_counter() - t
        t = time.perf_counter()
        self.compiled = lowered.compile()
        self.compile_s = time.perf_counter() - t
        self.convolutions = conv_census(self.compiled)
        return self.compiled

    def timed_call(self, losses_of) -> float:
        """Seconds for one call ``self.states, out = self.fn(self.states, *self.args)``; records ``losses_of(out)``."""
        t = time.perf_counter()
        self.states, out = self.fn(self.states, *self.args)
        jax.block_until_ready(self.states)
        dt = time.perf_counter() - t
        self.record_losses(losses_of(out))
        return dt

    def record_losses(self, losses_S):
        if self.first_losses is None:
            self.first_losses = [float(v) for v in np.asarray(losses_S).reshape(-1)[: self.seeds]]

    def facts(self) -> dict:
        out = {
            "description": self.description,
            "devices": self.devices,
            "seeds_per_device": self.seeds_per_device,
            "vectorised_runs": self.vectorised_runs,
            "program_seeds": self.program_seeds,
            "lower_s": self.lower_s,
            "compile_s": self.compile_s,
        }
        if self.compiled is not None:
            out.update(program_cost=cost(self.compiled), memory=memory(self.compiled), convolutions=self.convolutions)
        else:
            out.update(program_cost=None, memory=None, convolutions=None)
        return out


class EngineVariant(Variant):
    """The engine's sweep program (``SweepProgram.advance_program(1)``)."""

    def __init__(
        self,
        name,
        trainer,
        seeds,
        init,
        *,
        shard,
        vmap_width,
        description,
        compiler_options="auto",
        conv_fence=None,
        conv_winograd=None,
        winograd_min_channels=None,
        winograd_tile=None,
    ):
        # conv_fence, conv_winograd: jaxkd.models.layers.CONV_INPUT_FENCE and CONV_WINOGRAD while the program is
        # traced (None: the engine's default, both on for CPU); winograd_min_channels: {positions: channels}, the
        # maps Winograd takes instead of the engine's (layers.use_winograd), for an earlier rule; winograd_tile:
        # layers.WINOGRAD_TILE while traced (None: the engine's)
        previous = layers.CONV_INPUT_FENCE, layers.CONV_WINOGRAD, layers.use_winograd, layers.WINOGRAD_TILE
        layers.CONV_INPUT_FENCE, layers.CONV_WINOGRAD = conv_fence, conv_winograd
        if winograd_tile is not None:
            layers.WINOGRAD_TILE = winograd_tile
        if winograd_min_channels is not None:
            engine_rule = layers.use_winograd

            def rule(x_shape, w_shape, stride, pad, dtype):
                _, h, w, c = x_shape
                small = any(h * w <= n and min(c, w_shape[-1]) >= m for n, m in winograd_min_channels.items())
                return small and engine_rule(x_shape, w_shape, stride, pad, dtype)

            layers.use_winograd = rule
        try:
            self._build(name, trainer, seeds, init, shard, vmap_width, description, compiler_options)
        finally:
            layers.CONV_INPUT_FENCE, layers.CONV_WINOGRAD, layers.use_winograd, layers.WINOGRAD_TILE = previous

    def _build(self, name, trainer, seeds, init, shard, vmap_width, description, compiler_options):
        super().__init__(seeds)
        self.name, self.description = name, description
        self.prog = SweepProgram(trainer, seeds, shard=shard, vmap_width=vmap_width, compiler_options=compiler_options)
        self.devices = self.prog.n_devices
        self.seeds_per_device = self.program_seeds = self.prog.padded_seeds // self.devices
        self.vectorised_runs = 1 if vmap_width == 1 else self.seeds_per_device
        # prog.init(key)'s states, built from the shared initial states instead of compiling another init program:
        # a grid axis of 1, the seed axis padded with copies of the last seed and sharded as SweepProgram does.
        pad = self.prog.padded_seeds - seeds
        states = jax.tree.map(lambda a: jnp.copy(jnp.concatenate([a, jnp.repeat(a[-1:], pad, 0)])[:, None]), init)
        if self.prog.mesh is not None:
            states = jax.device_put(states, NamedSharding(self.prog.mesh, P("seed")))
        self.states = states
        self.args = (self.prog.hparams, self.prog.data, self.prog.teacher_inputs)
        self.fn = self.compile(lambda: self.prog.advance_program(1).lower(self.states, *self.args))

    def call(self) -> float:
        return self.timed_call(lambda hist: np.asarray(hist["train/loss"])[:, 0, -1])

    def student_params(self):
        return jax.tree.map(lambda a: np.asarray(a)[: self.seeds, 0], nnx.to_pure_dict(self.states.params["model"]))


class StepLoopVariant(Variant):
    """One ``jit(train_step)`` call per seed per step."""

    name = "step_loop"
    description = "separate calls: jit(train_step) once per seed per step, a top-level program without a loop"

    def __init__(self, trainer, seeds, init):
        super().__init__(seeds)
        self.program_seeds = 1
        self.states = [jax.tree.map(lambda a, i=i: jnp.copy(a[i]), init) for i in range(seeds)]
        self.args = (hparams_of(trainer), trainer.data, trainer.teacher_inputs)
        fn = jax.jit(step_program(trainer), donate_argnums=0, compiler_options=default_compiler_options())
        self.fn = self.compile(lambda: fn.lower(self.states[0], *self.args))

    def call(self) -> float:
        t = time.perf_counter()
        out = []
        for i, s in enumerate(self.states):
            self.states[i], metrics = self.fn(s, *self.args)
            jax.block_until_ready(self.states[i])
            out.append(metrics["train/loss"])
        dt = time.perf_counter() - t
        self.record_losses(np.stack([np.asarray(v) for v in out]))
        return dt


class VmapStepVariant(Variant):
    """``jit(vmap(train_step))`` over all seeds on one device, one call per step."""

    name = "vmap_step"
    description = "jit(vmap(train_step)) over all seeds on one device, called per step (no lax.scan around it)"

    def __init__(self, trainer, seeds, init):
        super().__init__(seeds)
        self.vectorised_runs = seeds
        self.states = jax.tree.map(jnp.copy, init)
        self.args = (hparams_of(trainer), trainer.data, trainer.teacher_inputs)
        fn = jax.jit(jax.vmap(step_program(trainer), in_axes=(0, None, None, None)), donate_argnums=0)
        self.fn = self.compile(lambda: fn.lower(self.states, *self.args))

    def call(self) -> float:
        return self.timed_call(lambda metrics: metrics["train/loss"])


# --- the explicit grouped-convolution student -------------------------------------------------------------------


class GroupedState(NamedTuple):
    """S students side by side: every leaf has a leading seed axis ``[S, ...]``."""

    step: jax.Array
    params: Any  # the zoo's parameter tree as a pure dict
    rest: Any  # BatchNorm statistics, pure dict
    opt_state: Any
    perm_key: jax.Array
    step_key: jax.Array


def grouped_conv(x_BxHxWxSI, kernel_SxKxKxIxO, stride):
    """S convolutions as one: seed s's I input channels map to its O output channels (padding k // 2)."""
    s, kh, kw, i, o = kernel_SxKxKxIxO.shape
    k = jnp.moveaxis(kernel_SxKxKxIxO, 0, 3).reshape(kh, kw, i, s * o)  # output channel s·O + o
    pad = ((kh // 2, kh // 2), (kw // 2, kw // 2))
    return lax.conv_general_dilated(
        x_BxHxWxSI, k, (stride, stride), pad, dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=s
    )


def grouped_batch_norm(x_BxHxWxSC, p, r, *, momentum=0.9, eps=1e-5):
    """Train-mode BatchNorm as flax's (biased batch variance E[x²] − E[x]², running averages with ``momentum``)."""
    s, c = p["scale"].shape
    mean = jnp.mean(x_BxHxWxSC, axis=(0, 1, 2))
    var = jnp.maximum(jnp.mean(jnp.square(x_BxHxWxSC), axis=(0, 1, 2)) - jnp.square(mean), 0.0)
    y = (x_BxHxWxSC - mean) * (p["scale"].reshape(s * c) * lax.rsqrt(var + eps)) + p["bias"].reshape(s * c)
    new = {
        "mean": momentum * r["mean"] + (1 - momentum) * mean.reshape(s, c),
        "var": momentum * r["var"] + (1 - momentum) * var.reshape(s, c),
    }
    return y, new


def grouped_resnet(params, rest, x_BxHxWxSC):
    """RepDistiller's CIFAR ResNet (``jaxkd.models.resnet.CifarResNet``) for S seeds at once, train mode.

    Returns ``(logits_SxBxK, new_rest)``. Stage i > 0 starts with a stride-2 block, as in the zoo.
    """
    new_rest = {"stages": {}}
    h, new_rest["stem_bn"] = grouped_batch_norm(
        grouped_conv(x_BxHxWxSC, params["stem_conv"]["kernel"], 1), params["stem_bn"], rest["stem_bn"]
    )
    h = jax.nn.relu(h)
    for i in sorted(params["stages"]):
        new_rest["stages"][i] = {}
        for j in sorted(params["stages"][i]):
            p, r, nr = params["stages"][i][j], rest["stages"][i][j], {}
            stride = 2 if i > 0 and j == 0 else 1
            y, nr["bn1"] = grouped_batch_norm(grouped_conv(h, p["conv1"]["kernel"], stride), p["bn1"], r["bn1"])
            y, nr["bn2"] = grouped_batch_norm(grouped_conv(jax.nn.relu(y), p["conv2"]["kernel"], 1), p["bn2"], r["bn2"])
            if "shortcut" in p:
                sc, bn = grouped_batch_norm(
                    grouped_conv(h, p["shortcut"]["conv"]["kernel"], stride), p["shortcut"]["bn"], r["shortcut"]["bn"]
                )
                nr["shortcut"] = {"bn": bn}
            else:
                sc = h
            h = jax.nn.relu(y + sc)
            new_rest["stages"][i][j] = nr
    s, c, _ = params["head"]["kernel"].shape
    pooled_BxSxC = jnp.mean(h, axis=(1, 2)).reshape(h.shape[0], s, c)
    logits = jnp.einsum("bsc,sck->sbk", pooled_BxSxC, params["head"]["kernel"]) + params["head"]["bias"][:, None]
    return logits, new_rest


def make_grouped_step(trainer):
    """One KD step of S students as a grouped-convolution program; same batches, loss and update as the engine."""
    cfg, t = trainer.config, trainer

    def draw(step, perm_key, step_key, data):
        key = jax.random.fold_in(jax.random.wrap_key_data(step_key), step)
        aug_key, _ = jax.random.split(key)  # as Trainer.train_step splits it
        first = step // t.steps_per_epoch
        idx = t.batch_indices(t.epoch_permutations(perm_key, first, 1), first, step)
        return t.train_batch(data, idx, aug_key)

    def step_fn(gs: GroupedState, hp, data, tin):
        batch = jax.vmap(draw, in_axes=(0, 0, 0, None))(gs.step, gs.perm_key, gs.step_key, data)
        s, b, h, w, c = batch["x"].shape
        t_logits, _ = t.teacher.apply(tin, batch["x"].reshape(s * b, h, w, c))  # the shared teacher, once
        t_logits_SxBxK = t_logits.reshape(s, b, -1)
        x = jnp.moveaxis(batch["x"], 0, 3).reshape(b, h, w, s * c)

        def loss_fn(params):
            logits, rest = grouped_resnet(params, gs.rest, x)
            ce = losses.label_smoothing_ce(logits, batch["y"], smoothing=hp["ce.label_smoothing"])
            kd = losses.kd_loss(logits, t_logits_SxBxK, temperature=hp["kd.temperature"])
            per_seed = hp["ce.weight"] * jnp.mean(ce, 1) + hp["kd.weight"] * jnp.mean(kd, 1)
            return jnp.sum(per_seed), (per_seed, rest)  # seeds share no parameter: each gets its own gradient

        (_, (per_seed, rest)), grads = jax.value_and_grad(loss_fn, has_aux=True)(gs.params)
        updates, opt_state = recipes.make_optimizer(cfg.recipe, hp).update(grads, gs.opt_state, gs.params)
        lr = recipes.learning_rate(cfg.recipe, hp, gs.step[0], t.steps_per_epoch)
        params = recipes.apply_updates(gs.params, updates, lr)
        return GroupedState(gs.step + 1, params, rest, opt_state, gs.perm_key, gs.step_key), {"train/loss": per_seed}

    return step_fn


class GroupedVariant(Variant):
    name = "grouped"
    description = (
        "explicit grouped convolutions: the seeds' channels side by side, one feature_group_count=S "
        "convolution per layer, the shared teacher once on all S*B images; one device, one call per step"
    )

    def __init__(self, trainer, seeds, init):
        super().__init__(seeds)
        self.vectorised_runs = seeds
        hp = hparams_of(trainer)

        def to_grouped(ts):
            params = nnx.to_pure_dict(ts.params["model"])
            opt = recipes.make_optimizer(trainer.config.recipe, hp).init(params)
            return GroupedState(ts.step, params, nnx.to_pure_dict(ts.rest), opt, ts.perm_key, ts.step_key)

        self.states = jax.jit(to_grouped)(init)
        self.args = (hp, trainer.data, trainer.teacher_inputs)
        fn = jax.jit(make_grouped_step(trainer), donate_argnums=0)
        self.fn = self.compile(lambda: fn.lower(self.states, *self.args))

    def call(self) -> float:
        return self.timed_call(lambda metrics: metrics["train/loss"])

    def student_params(self):
        return jax.tree.map(np.asarray, self.states.params)


# --- PyTorch ----------------------------------------------------------------------------------------------------


def torch_resnet(torch, depth, channels, num_classes):
    """RepDistiller's CIFAR ResNet in PyTorch, with the zoo's module names so weights copy over by path."""
    nn = torch.nn

    class Shortcut(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, 1, stride, 0, bias=False)
            self.bn = nn.BatchNorm2d(cout)

        def forward(self, x):
            return self.bn(self.conv(x))

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.shortcut = Shortcut(cin, cout, stride) if stride != 1 or cin != cout else None

        def forward(self, x):
            h = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
            return torch.relu(h + (x if self.shortcut is None else self.shortcut(x)))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            n = (depth - 2) // 6
            self.stem_conv = nn.Conv2d(3, channels[0], 3, 1, 1, bias=False)
            self.stem_bn = nn.BatchNorm2d(channels[0])
            stages, cin = [], channels[0]
            for i, c in enumerate(channels[1:]):
                stages.append(
                    nn.ModuleList([Block(cin if j == 0 else c, c, 2 if i > 0 and j == 0 else 1) for j in range(n)])
                )
                cin = c
            self.stages = nn.ModuleList(stages)
            self.head = nn.Linear(cin, num_classes)

        def forward(self, x):
            h = torch.relu(self.stem_bn(self.stem_conv(x)))
            for blocks in self.stages:
                for blk in blocks:
                    h = blk(h)
            return self.head(h.mean(dim=(2, 3)))

    return Net()


def load_into_torch(torch, net, params, rest):
    """Copy the zoo's weights (pure dicts) into ``net``: HWIO → OIHW kernels, [in, out] → [out, in] linear."""
    state = {}
    for tree, names in (
        (params, {"scale": "weight", "bias": "bias"}),
        (rest, {"mean": "running_mean", "var": "running_var"}),
    ):
        for path, a in jax.tree_util.tree_flatten_with_path(tree)[0]:
            keys = [str(k.key) for k in path]
            a = np.array(a, np.float32)  # a writable copy, as torch.from_numpy wants
            if keys[-1] == "kernel":
                a, leaf = (a.transpose(3, 2, 0, 1) if a.ndim == 4 else a.T), "weight"
            else:
                leaf = names[keys[-1]]
            state[".".join([*keys[:-1], leaf])] = torch.from_numpy(np.ascontiguousarray(a))
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise RuntimeError(f"weight copy mismatch: missing {missing}, unexpected {unexpected}")
    return net


def perturbed(params, rest, seed):
    """BatchNorm statistics and affine parameters drawn away from their init, so the check sees them."""
    rng = np.random.default_rng(seed)

    def bn(path, a):
        leaf = str(path[-1].key)
        a = np.asarray(a)
        if leaf in ("scale", "var"):
            return rng.uniform(0.5, 1.5, a.shape).astype(np.float32)
        if leaf == "mean" or (leaf == "bias" and "head" not in str(path[0].key)):
            return rng.normal(0.0, 0.1, a.shape).astype(np.float32)
        return a

    return jax.tree_util.tree_map_with_path(bn, params), jax.tree_util.tree_map_with_path(bn, rest)


def torch_logits_check(torch, models, ds, batch) -> dict:
    """Max |logit difference| between the zoo's models and the PyTorch ones on one batch, eval and train mode."""
    x = normalize(jnp.asarray(ds.x_train[:batch]), jnp.asarray(ds.mean), jnp.asarray(ds.std))
    x_t = torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))
    out = {}
    for role, model in models.items():
        params, rest = model.init(jax.random.key(7))
        p, r = perturbed(nnx.to_pure_dict(params), nnx.to_pure_dict(rest), seed=len(out))
        nnx.replace_by_pure_dict(params, p)  # fresh local states, outside any jit
        nnx.replace_by_pure_dict(rest, r)
        net = load_into_torch(torch, torch_net(torch, model), p, r)
        res = {}
        apply = jax.jit(lambda p, r, x, train, m=model: m.apply(p, r, x, train=train)[0], static_argnums=3)
        for mode, train in (("eval", False), ("train", True)):
            ref = np.asarray(apply(params, rest, x, train))
            net.train(train)
            with torch.no_grad():
                got = net(x_t).numpy()
            res[f"{mode}_max_abs_diff"] = float(np.max(np.abs(got - ref)))
            res[f"{mode}_max_abs_logit"] = float(np.max(np.abs(ref)))
            res[f"{mode}_max_rel_diff"] = res[f"{mode}_max_abs_diff"] / res[f"{mode}_max_abs_logit"]
        res["passed"] = res["eval_max_abs_diff"] < TORCH_PASS_TOL
        out[role] = {"model": model.name, **res}
    return out


def torch_net(torch, model):
    """The PyTorch twin of a zoo CIFAR ResNet (``resnet<depth>`` / ``resnet<depth>x4``)."""
    depth = int(re.search(r"resnet(\d+)", model.name).group(1))
    default = X4_CHANNELS if model.name.endswith("x4") else (16, 16, 32, 64)
    return torch_resnet(torch, depth, model.widths or default, model.num_classes)


class TorchVariant(Variant):
    name = "torch"
    description = (
        "plain PyTorch loop, the seeds one after another: crop+flip on the uint8 batch, normalise, "
        "teacher forward (no_grad, eval), student forward/backward, SGD(momentum, weight_decay)"
    )

    def __init__(self, torch, trainer, seeds, init, t_params, t_rest, channels_last=False):
        super().__init__(seeds)
        self.torch = torch
        self.channels_last = channels_last
        if channels_last:
            self.name = "torch_cl"
            self.description += "; models and inputs in channels-last memory format"
        torch.set_num_threads(os.cpu_count() or 1)
        torch.set_flush_denormal(True)  # as XLA:CPU, which flushes denormals to zero by default
        cfg = trainer.config
        self.teacher = load_into_torch(torch, torch_net(torch, trainer.teacher.model), t_params, t_rest).eval()
        for q in self.teacher.parameters():
            q.requires_grad_(False)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.memory_format = fmt
        self.teacher = self.teacher.to(memory_format=fmt)
        # The same initial students as the JAX variants' first ``seeds``.
        sp, sr = nnx.to_pure_dict(init.params["model"]), nnx.to_pure_dict(init.rest)
        self.students, self.opts, self.gens, self.perms = [], [], [], {}
        for i in range(seeds):
            net = load_into_torch(
                torch,
                torch_net(torch, trainer.model),
                jax.tree.map(lambda a, i=i: a[i], sp),
                jax.tree.map(lambda a, i=i: a[i], sr),
            ).train()
            net = net.to(memory_format=fmt)  # before the optimiser takes its parameters
            self.students.append(net)
            self.opts.append(
                torch.optim.SGD(
                    net.parameters(),
                    lr=cfg.recipe.learning_rate,
                    momentum=cfg.recipe.momentum,
                    weight_decay=cfg.recipe.weight_decay,
                )
            )
            self.gens.append(torch.Generator().manual_seed(i))
        self.x = torch.from_numpy(np.array(trainer.data["x_train"]))  # uint8 [N, H, W, C], a writable copy
        self.y = torch.from_numpy(np.asarray(trainer.data["y_train"]).astype(np.int64))
        self.mean = torch.tensor(CIFAR100_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(CIFAR100_STD).view(1, 3, 1, 1)
        self.batch, self.n, self.step = trainer.batch_size, trainer.num_train, 0
        self.w = {k: float(v["weight"]) for k, v in KD.items()}
        self.temp = float(KD["kd"]["temperature"])

    def augment(self, x_BxHxWxC, gen):
        """Zero-pad 4, crop a random window, flip half the examples left-right: one gather per batch."""
        torch = self.torch
        b, h, w, _ = x_BxHxWxC.shape
        p = CROP_PADDING
        padded = torch.nn.functional.pad(x_BxHxWxC, (0, 0, p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (b,), generator=gen)
        dx = torch.randint(0, 2 * p + 1, (b,), generator=gen)
        flip = torch.rand(b, generator=gen) < 0.5
        cols = torch.where(flip[:, None], torch.arange(w - 1, -1, -1), torch.arange(w))
        rows = dy[:, None] + torch.arange(h)
        cols = dx[:, None] + cols
        return padded[torch.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]

    def one_step(self, i):
        torch, F = self.torch, self.torch.nn.functional
        per_epoch = self.n // self.batch
        if self.step % per_epoch == 0:
            self.perms[i] = torch.randperm(self.n, generator=self.gens[i])
        start = (self.step % per_epoch) * self.batch
        idx = self.perms[i][start : start + self.batch]
        x = self.augment(self.x[idx], self.gens[i]).permute(0, 3, 1, 2).float().div_(255.0)
        x = ((x - self.mean) / self.std).contiguous(memory_format=self.memory_format)
        y = self.y[idx]
        with torch.no_grad():
            t_logits = self.teacher(x)
        logits = self.students[i](x)
        ce = F.cross_entropy(logits, y)
        kd = (
            F.kl_div(
                F.log_softmax(logits / self.temp, -1),
                F.log_softmax(t_logits / self.temp, -1),
                reduction="batchmean",
                log_target=True,
            )
            * self.temp**2
        )
        loss = self.w["ce"] * ce + self.w["kd"] * kd
        self.opts[i].zero_grad(set_to_none=True)
        loss.backward()
        self.opts[i].step()
        return float(loss.detach())

    def call(self) -> float:
        t = time.perf_counter()
        out = [self.one_step(i) for i in range(self.seeds)]
        dt = time.perf_counter() - t
        self.step += 1
        self.record_losses(out)
        return dt


# --- main -------------------------------------------------------------------------------------------------------


def ratio(a, b):
    return a / b if a is not None and b else None


def build_variants(names, trainer, seeds, init, teacher_pure):
    out, notes = {}, []
    engine = {
        "vmap": dict(
            shard=False,
            vmap_width=None,
            description="engine sweep program, one device, all seeds vmapped (vmap_width=None)",
        ),
        "vmap_sharded": dict(
            shard=True,
            vmap_width=None,
            description="engine sweep program sharded over the "
            "host devices (shard_map), each device vmapping its seeds",
        ),
        "map_sharded": dict(
            shard=True,
            vmap_width=1,
            description="engine sweep program sharded, each device "
            "running its seeds one after another with lax.map (vmap_width=1)",
        ),
        "map_sharded_neither": dict(
            shard=True,
            vmap_width=1,
            conv_fence=False,
            conv_winograd=False,
            description="map_sharded without the CPU fence and without Winograd: the engine's CPU program before "
            "2026-12-06's convolution changes",
        ),
        "map_sharded_nowinograd": dict(
            shard=True,
            vmap_width=1,
            conv_winograd=False,
            description="map_sharded with XLA's convolution everywhere instead of the engine's CPU choice of "
            "Winograd F(2x2, 3x3) on small maps (jaxkd.models.layers.use_winograd)",
        ),
        "map_sharded_winograd_8x8": dict(
            shard=True,
            vmap_width=1,
            winograd_min_channels={64: 128, 256: 256},
            description="map_sharded with Winograd only on 8x8 maps of 128 channels or more and 16x16 maps of 256 or "
            "more (the engine's rule before 2026-12-07), not on 16x16 maps of 128",
        ),
        "map_sharded_winograd_f4": dict(
            shard=True,
            vmap_width=1,
            winograd_tile=4,
            description="map_sharded with Winograd F(4x4, 3x3) where the map divides by 4 instead of the engine's "
            "F(2x2, 3x3) (jaxkd.models.layers.WINOGRAD_TILE)",
        ),
        "map_sharded_nofence": dict(
            shard=True,
            vmap_width=1,
            conv_fence=False,
            description="map_sharded without the engine's CPU fence on differentiated convolutions' inputs "
            "(jaxkd.models.layers._fence): XLA recomputes BatchNorm and ReLU inside the weight gradients' "
            "transposed copies (benchmarks/cpu_profile.py)",
        ),
        "map_sharded_jaxlib": dict(
            shard=True,
            vmap_width=1,
            compiler_options=None,
            description="map_sharded compiled with jaxlib's default XLA:CPU options (YNNPACK fusions on), not "
            "the engine's CPU options (SweepProgram's compiler_options='auto'; benchmarks/conv_cpu.py)",
        ),
        "map_sharded_ynn": dict(
            shard=True,
            vmap_width=1,
            compiler_options={"xla_cpu_experimental_ynn_fusion_type": YNN_ALL},
            description="map_sharded with YNNPACK fusions for dots, element-wise ops and reductions (convolutions "
            "on XLA's kernels); an experimental jaxlib option, see benchmarks/conv_cpu.py",
        ),
        "map": dict(
            shard=False,
            vmap_width=1,
            description="engine sweep program, one device, all seeds one after another with lax.map (vmap_width=1)",
        ),
    }
    for name in names:
        log(f"building and compiling {name}")
        if name in engine:
            out[name] = EngineVariant(name, trainer, seeds, init, **engine[name])
        elif name == "step_loop":
            out[name] = StepLoopVariant(trainer, seeds, init)
        elif name == "vmap_step":
            out[name] = VmapStepVariant(trainer, seeds, init)
        elif name == "grouped":
            out[name] = GroupedVariant(trainer, seeds, init)
        elif name in ("torch", "torch_cl"):
            try:
                import torch
            except ImportError:
                notes.append(f"torch is not installed: {name} was skipped (pip install -e '.[bench-torch]')")
                continue
            out[name] = TorchVariant(
                torch, trainer, min(ARGS.torch_seeds, seeds), init, *teacher_pure, channels_last=name == "torch_cl"
            )
        c = out[name].convolutions
        if c and c["noncanonical"]:
            log(
                f"  {name}: {c['noncanonical']} of {c['total']} convolutions have non-canonical dimension labels; "
                "XLA:CPU runs them on its slow generic emitter (see convolutions in the module docstring)"
            )
    return out, notes


def checks_after_first_step(variants) -> dict:
    ref = variants.get("vmap")
    out = {}
    if ref is not None:
        base = np.asarray(ref.first_losses)
        out["first_step_loss_max_abs_diff_vs_vmap"] = {
            n: float(np.max(np.abs(np.asarray(v.first_losses) - base)))
            for n, v in variants.items()
            if n not in ("vmap", "torch", "torch_cl")
        }
        if "grouped" in variants:
            a, b = ref.student_params(), variants["grouped"].student_params()
            diffs = jax.tree.leaves(jax.tree.map(lambda x, y: float(np.max(np.abs(x - y))), a, b))
            out["grouped_params_after_step_max_abs_diff_vs_vmap"] = max(diffs)
    for n in ("torch", "torch_cl"):
        if n in variants:  # their own augmentation draws: close to the JAX variants' losses, not equal
            out[f"{n}_first_step_losses"] = variants[n].first_losses
    return out


def main():
    t_start = time.perf_counter()
    load_start = os.getloadavg()
    names = list(ALL_VARIANTS if ARGS.variants == "all" else ARGS.variants.split(","))
    bad = [n for n in names if n not in ALL_VARIANTS]
    if bad:
        sys.exit(f"unknown variant(s) {', '.join(bad)}; choose from {', '.join(ALL_VARIANTS)} or 'all'")
    if ARGS.quick:
        ARGS.seeds, ARGS.image_size, ARGS.steps = 2, 16, 2
    widths = QUICK_WIDTHS if ARGS.quick else {TEACHER: None, STUDENT: None}
    seeds, batch, size = ARGS.seeds, ARGS.batch, ARGS.image_size
    ds = synthetic_dataset(size, STEPS_PER_DATA_EPOCH * batch)
    t_model = make_model(TEACHER, ds.in_shape, NUM_CLASSES, widths[TEACHER])
    s_model = make_model(STUDENT, ds.in_shape, NUM_CLASSES, widths[STUDENT])

    checks, notes = {}, []
    try:
        import torch
    except ImportError:
        torch = None
        notes.append("torch is not installed: no PyTorch logits check")
    if torch is not None:
        log("PyTorch/JAX logits check")
        torch.set_num_threads(os.cpu_count() or 1)
        checks["torch_logits"] = torch_logits_check(torch, {"student": s_model, "teacher": t_model}, ds, batch)
        checks["torch_logits"]["tolerance_eval"] = TORCH_PASS_TOL
        log(
            "  "
            + ", ".join(
                f"{k}: eval {v['eval_max_abs_diff']:.2e}, train {v['train_max_abs_diff']:.2e}"
                for k, v in checks["torch_logits"].items()
                if isinstance(v, dict)
            )
        )
    if ARGS.torch_check:
        text = json.dumps(
            {
                "benchmark": "cnn_sweep/torch_check",
                "image_size": size,
                "batch": batch,
                "checks": checks,
                "notes": notes,
                "torch_version": getattr(torch, "__version__", None),
            },
            indent=2,
        )
        print(text)
        return 0

    log("matmul peak")
    peak_start = matmul_peak(1024 if ARGS.quick else 2048)
    # The teacher's quality is irrelevant to speed: a frozen random initialisation.
    t_params, t_rest = t_model.init(jax.random.key(0))
    teacher = Teacher(t_model, t_params, t_rest)
    trainer = make_train(student_config(widths[STUDENT]), ds, teacher)
    assert trainer.teacher_live

    log("one seed's training step: cost_analysis")
    init = seed_states(trainer, jax.random.key(1), seeds)  # every seed's initial state, as SweepProgram.init draws it
    state1 = jax.tree.map(lambda a: a[0], init)
    one = (
        jax.jit(trainer.train_step)
        .lower(state1, hparams_of(trainer), trainer.data, trainer.teacher_inputs, jnp.arange(batch, dtype=jnp.int32))
        .compile()
    )
    step_cost = {**cost(one), "memory": memory(one), "convolutions": conv_census(one)}
    f_step = step_cost["flops"]

    teacher_pure = (nnx.to_pure_dict(t_params), nnx.to_pure_dict(t_rest))
    variants, more_notes = build_variants(names, trainer, seeds, init, teacher_pure)
    notes += more_notes

    log(f"warm-up: {ARGS.warmup} step(s) per variant")
    for _ in range(ARGS.warmup):
        for v in variants.values():
            v.warm.append(v.call())
            log(f"  {v.name}: {v.warm[-1]:.2f} s")
    if ARGS.warmup:
        checks.update(checks_after_first_step(variants))
        expected = ARGS.steps * sum(v.warm[-1] for v in variants.values())
        log(f"timing {ARGS.steps} step(s) round-robin; about {expected / 60:.1f} min at the warm-up's pace")
    for r in range(ARGS.steps):
        for v in variants.values():
            v.times.append(v.call())
        log(f"  step {r + 1}/{ARGS.steps}: " + ", ".join(f"{n} {v.times[-1]:.2f} s" for n, v in variants.items()))
    if not ARGS.warmup:
        checks.update(checks_after_first_step(variants))
    peak_end = matmul_peak(1024 if ARGS.quick else 2048)
    peak = max(peak_start["flops_per_s"], peak_end["flops_per_s"])

    results = {}
    for name, v in variants.items():
        sec = statistics.median(v.times) if v.times else None
        m = v.facts()
        m.update(
            first_call_s=v.warm[0] if v.warm else None, warmup_seconds=v.warm, seconds_all=v.times, seconds_per_step=sec
        )
        m["images_per_s_per_seed"] = ratio(batch, sec)
        m["seeds"] = v.seeds
        m["images_per_s"] = ratio(v.seeds * batch, sec)
        m["flops_per_s"] = ratio(v.seeds * f_step, sec)
        m["fraction_of_matmul_peak"] = ratio(m["flops_per_s"], peak)
        pc, mem = m["program_cost"], m["memory"]
        m["program_flops_over_expected"] = (
            ratio(pc["flops"], v.vectorised_runs * f_step) if pc and "flops" in pc else None
        )
        m["memory_per_seed_bytes"] = (mem["temp"] + mem["argument"] + mem["output"]) / v.program_seeds if mem else None
        m["first_step_losses"] = v.first_losses
        results[name] = m

    speedups, targets = compare(results)

    steps_per_epoch = PAPER_TRAIN_IMAGES // batch
    sustained = H100_UTILISATION * H100_BF16_DENSE_FLOPS
    epoch_s = steps_per_epoch * f_step / sustained
    projection = {
        "what": f"a projection, not a measurement: one paper-preset epoch ({PAPER_TRAIN_IMAGES} training images, "
        f"{steps_per_epoch} steps of batch {batch}) of {TEACHER} -> {STUDENT} KD (teacher forward + student "
        "train per image) at 40% of an H100's dense bf16 peak, from XLA:CPU's float32 FLOP count of one "
        "training step (GPU compilation and bf16 would fuse and count differently)",
        "image_size": size,
        "h100_dense_bf16_flops_per_s": H100_BF16_DENSE_FLOPS,
        "utilisation": H100_UTILISATION,
        "flops_per_training_image": f_step / batch,
        "steps_per_epoch": steps_per_epoch,
        "seconds_per_epoch_per_seed": epoch_s,
        "seconds_per_epoch_all_seeds": seeds * epoch_s,
        f"hours_{PAPER_EPOCHS}_epochs_per_seed": PAPER_EPOCHS * epoch_s / 3600,
    }
    if any((r["convolutions"] or {}).get("noncanonical") for r in results.values()):
        notes.append(
            "Some programs keep convolutions with non-canonical dimension labels (convolutions.noncanonical):"
            " XLA:CPU canonicalises only top-level convolutions, so the backward convolutions JAX emits "
            "inside a loop body (the engine's lax.scan, lax.map) run on its slow generic emitter "
            "(jax-ml/jax#12868). Compare vmap with vmap_step, and map with step_loop, to see the cost."
        )
    if "grouped" not in variants:
        notes.append("grouped was not run (--variants)")
    notes.append(
        "grouped runs on one device. The engine's vmapped programs lower the student's convolutions to grouped "
        "convolutions too (convolutions.grouped) and run the shared teacher as one convolution over all S*B images, "
        "as grouped does; grouped differs in keeping the seeds' channels side by side throughout (no transposes "
        "between layers) and in its backward pass (the kernel gradients of a grouped convolution are "
        "batch_group_count convolutions)"
    )
    if ARGS.quick:
        notes.append("--quick: 2 seeds, 16x16, small widths, 2 steps; the numbers only show that the script runs")

    result = {
        "benchmark": "cnn_sweep",
        "quick": ARGS.quick,
        "env": env_stamp(),
        "n_devices": jax.device_count(),
        "device_kind": jax.devices()[0].device_kind,
        "torch_version": getattr(torch, "__version__", None) if torch is not None else None,
        "settings": {
            "seeds": seeds,
            "timed_steps": ARGS.steps,
            "warmup_steps": ARGS.warmup,
            "image_size": size,
            "batch": batch,
            "num_train": trainer.num_train,
            "num_classes": NUM_CLASSES,
            "data": "synthetic uint8 images and labels (speed only)",
            "teacher": {
                "model": TEACHER,
                "widths": widths[TEACHER],
                "params": t_model.num_params(),
                "live": True,
                "shared": True,
                "init": "random, frozen",
            },
            "student": {"model": STUDENT, "widths": widths[STUDENT], "params": s_model.num_params()},
            "objective": KD,
            "recipe": RECIPE,
            "augmentation": {"crop_padding": CROP_PADDING, "flip": FLIP},
            "variants": list(variants),
        },
        "matmul": {"start": peak_start, "end": peak_end},
        "matmul_peak_flops_per_s": peak,
        "step_cost": step_cost,
        "flops_per_step_per_seed": f_step,
        "flops_per_image": f_step / batch,
        "variants": results,
        "speedups_definition": "A_over_B = images/s (all seeds) of A / that of B (above 1: A is faster)",
        "speedups": speedups,
        "targets": targets,
        "projection_h100": projection,
        "checks": checks,
        "notes": notes,
        "load_average_1_5_15": {"start": load_start, "end": os.getloadavg()},
        "total_seconds": time.perf_counter() - t_start,
    }
    print(table(results, peak, f_step), file=sys.stderr)
    emit_json(result, ARGS.out, print_always=False)
    return 0


def compare(results: dict) -> tuple[dict, dict]:
    """``(speedups, targets)`` from each variant's ``images_per_s``: the images all its seeds process per second.

    That is the sweep's throughput, and the measure that compares a loop over
    seeds with a vectorised program: a sequential loop's throughput does not
    depend on how many seeds it runs (its images/s per seed does).
    """
    ips = {n: r["images_per_s"] for n, r in results.items()}
    pairs = [
        ("vmap_sharded", "map_sharded"),
        ("vmap", "map"),
        ("vmap", "step_loop"),
        ("vmap_sharded", "step_loop"),
        ("vmap", "torch"),
        ("vmap_sharded", "torch"),
        ("map_sharded", "torch"),
        ("step_loop", "torch"),
        ("map_sharded", "torch_cl"),
        ("step_loop", "torch_cl"),
        ("torch_cl", "torch"),
        ("grouped", "vmap"),
        ("grouped", "vmap_step"),
        ("vmap_step", "vmap"),
        ("vmap_step", "step_loop"),
        ("grouped", "step_loop"),
        ("grouped", "torch"),
        ("vmap_sharded", "vmap"),
        ("map_sharded", "map"),
    ]
    speedups = {f"{a}_over_{b}": ratio(ips[a], ips[b]) for a, b in pairs if a in ips and b in ips}

    def best(group):
        have = [(ips[n], n) for n in group if ips.get(n)]
        return max(have) if have else (None, None)

    vec, vec_name = best(("vmap", "vmap_sharded"))
    seq, seq_name = best(("map_sharded", "map", "step_loop"))
    targets = {
        "definition": "throughput ratios (images/s over all seeds); 'vmapped' = the faster of the engine's vmap and "
        "vmap_sharded programs, 'sequential' = the fastest of map_sharded, map, step_loop",
        "vmapped_over_sequential": {
            "target": 1.3,
            "measured": ratio(vec, seq),
            "vmapped": vec_name,
            "sequential": seq_name,
        },
        "vmapped_over_torch": {"target": 2.0, "measured": ratio(vec, ips.get("torch")), "vmapped": vec_name},
        # Issue #20: the engine's CPU default (map_sharded) against the faster of the two PyTorch loops (stretch 1.5).
        "cpu_default_over_torch": {
            "target": 1.0,
            "stretch": 1.5,
            "measured": ratio(ips.get("map_sharded"), best(("torch", "torch_cl"))[0]),
            "torch": best(("torch", "torch_cl"))[1],
        },
        # Issue #20: the engine's batched-seed program against the same seeds as separate top-level steps.
        "batched_over_separate_steps": {
            "target": 1.3,
            "measured": ratio(ips.get("map_sharded"), ips.get("step_loop")),
        },
        "fraction_of_matmul_peak": {
            "target": 0.4,
            "measured": (results[vec_name]["fraction_of_matmul_peak"] if vec_name else None),
            "variant": vec_name,
        },
    }
    for t in targets.values():
        if isinstance(t, dict):
            t["met"] = None if t["measured"] is None else t["measured"] >= t["target"]

    return speedups, targets


def table(results, peak, f_step) -> str:
    f = lambda x, fmt: "n/a" if x is None else format(x, fmt)  # noqa: E731
    rows = [
        f"{STUDENT} <- {TEACHER}, {ARGS.seeds} seeds, batch {ARGS.batch}, {ARGS.image_size}x{ARGS.image_size}, "
        f"{f_step / 1e9:.2f} GFLOP per seed-step, matmul peak {peak / 1e9:.1f} GFLOP/s",
        f"{'variant':<14}{'s/step':>9}{'img/s':>12}{'GFLOP/s':>10}{'% peak':>8}{'compile s':>11}"
        f"{'MiB/seed':>10}{'convs':>7}{'grouped':>9}{'noncanon':>10}",
    ]
    for name, r in results.items():
        c = r["convolutions"] or {}
        rows.append(
            f"{name:<14}{f(r['seconds_per_step'], '.3f'):>9}{f(r['images_per_s'], '.1f'):>12}"
            f"{f(r['flops_per_s'] and r['flops_per_s'] / 1e9, '.1f'):>10}"
            f"{f(r['fraction_of_matmul_peak'] and 100 * r['fraction_of_matmul_peak'], '.1f'):>8}"
            f"{f(r['compile_s'], '.1f'):>11}"
            f"{f(r['memory_per_seed_bytes'] and r['memory_per_seed_bytes'] / 2**20, '.1f'):>10}"
            f"{c.get('total', ''):>7}{c.get('grouped', ''):>9}{c.get('noncanonical', ''):>10}"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
