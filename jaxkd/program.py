"""The compiled program of a sweep: seeds × grid points, placed on devices.

:class:`SweepProgram` builds, once, the jitted ``init`` (states of every
run from their keys) and ``advance`` (``n`` more steps of every run) of a
sweep: the seed axis is sharded over devices (each device advances its own
block of seeds with ``shard_map``), the data and grid are replicated, and
within a device runs are vectorised ``vmap_width`` at a time. Before the
first chunk runs, its compiled memory (XLA's ``memory_analysis``) is checked
against the device's memory, so a sweep that cannot fit is refused in one
line that says how many seeds fit.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxkd.distributed import multi_process, to_host
from jaxkd.errors import ConfigError, check
from jaxkd.keys import RunKeys, seed_run_keys
from jaxkd.train import Trainer, TrainState, check_hparams


def _full_grid(trainer: Trainer, grid: dict | None) -> dict[str, np.ndarray]:
    """Every sweepable hyper-parameter at every grid point (float64, the values as given)."""
    grid = dict(grid or {})
    check_hparams(grid, trainer.constraints())
    sizes = {len(np.atleast_1d(v)) for v in grid.values()}
    check(len(sizes) <= 1, f"hyper-parameter grid axes have different lengths {sorted(sizes)}; use grid_product")
    g = sizes.pop() if sizes else 1
    defaults = trainer.hparams()
    return {
        name: np.broadcast_to(np.asarray(grid.get(name, defaults[name]), np.float64), (g,)).copy() for name in defaults
    }


def _global_array(x, sharding):
    """``x`` (the same on every process) as a global array with ``sharding`` over every process's devices."""
    if isinstance(x, jax.core.Tracer):  # shapes only (eval_shape): placement does not matter
        return x
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        data = _global_array(jax.random.key_data(x), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    host = to_host(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def seed_mesh(n_seeds: int | None = None):
    """A 1-D ``("seed",)`` mesh over the devices, or None where it would hold one device.

    With ``n_seeds`` fewer than the devices (in one process), the mesh holds
    only ``n_seeds`` of them: a device with no seed of its own would train a
    padding copy, which on a CPU's host devices competes for the same cores
    (a one-seed teacher 1.55-1.68x slower on two host devices than on one,
    benchmarks/method_sweep.py). Several processes always use every device.
    """
    devices = jax.devices()
    if n_seeds is not None and not multi_process():
        devices = devices[: max(1, min(int(n_seeds), len(devices)))]
    if len(devices) < 2:
        return None
    return jax.make_mesh((len(devices),), ("seed",), axis_types=(AxisType.Auto,), devices=devices)


def _default_width():
    return 1 if jax.default_backend() == "cpu" else None


# XLA:CPU: dots (among them the sums of the zoo's BatchNorm, jaxkd.models.layers.BatchNorm) and convolutions on
# XLA's own kernels instead of jaxlib's YNNPACK fusions: with that BatchNorm, the 8-seed resnet32x4 -> resnet8x4 KD
# sweep 1.24x faster on the 2-core CPU (benchmarks/RESULTS.md).
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


@functools.cache
def default_compiler_options() -> dict | None:
    """``SweepProgram``'s ``"auto"`` options: :data:`CPU_COMPILER_OPTIONS` on CPU where this jaxlib knows them.

    ``JAXKD_XLA_OPTIONS=jaxlib`` in the environment gives XLA's defaults (to measure the difference).
    """
    if jax.default_backend() != "cpu" or os.environ.get("JAXKD_XLA_OPTIONS", "").strip() == "jaxlib":
        return None
    try:  # an older or newer jaxlib that does not know an option refuses it at compile time
        jax.jit(lambda x: x + 1, compiler_options=CPU_COMPILER_OPTIONS).lower(1.0).compile()
    except Exception:  # noqa: BLE001 - INVALID_ARGUMENT from XLA
        return None
    return dict(CPU_COMPILER_OPTIONS)


def _pad_seeds(tree, n: int):
    """Repeat the last entry of the leading axis up to length ``n``."""
    return jax.tree.map(lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], n - a.shape[0], axis=0)]), tree)


def _over_runs(width):
    """``over(f, *trees)``: ``f`` on every slice of the trees' leading axis, stacked: ``vmap`` (``width`` None) or
    ``lax.map`` in groups of ``width``."""

    def over(f, *xs):
        if width is None:
            return jax.vmap(f)(*xs)
        return jax.lax.map(lambda a: f(*a), xs, batch_size=width if width > 1 else None)

    return over


class SweepProgram:
    """The compiled pieces of a sweep: ``init(key)`` and ``advance(states, n)``.

    Built once and reused (a new instance compiles anew). ``states`` leaves
    have leading axes ``[S', G]``; with several devices the seed axis is
    sharded and the data and grid are replicated. When the seed count does
    not divide over the devices, the seed axis is padded (``S'`` ≥ ``S``,
    copies of the last seed) and the padding is dropped from results.

    Each device advances its own block of seeds (``shard_map``); within a
    device the runs are vectorised ``vmap_width`` at a time: ``None`` vmaps
    all of them at once, ``1`` runs them one after another inside the same
    program (``lax.map``), ``k`` in groups of k. ``"auto"`` is ``None`` on
    accelerators and ``1`` on CPU, where vmapped convolutions become grouped
    convolutions that XLA's CPU backend runs about 1.7x slower than a loop
    (benchmarks/RESULTS.md). Every choice gives the same numbers up to float
    round-off.

    ``share_teacher``: with a live teacher and several grid points, the runs
    of one seed see the same batches (they share its data-order and step
    keys, :func:`jaxkd.keys.seed_run_keys`), so each step draws the batch and
    runs the teacher's forward pass once per seed and hands both to the
    seed's grid points (:meth:`Trainer.advance_grid`); then ``vmap_width``
    applies to the seeds and, within each, to its grid points. On the
    2-core CPU this made ``cifar_kd``'s six methods' students 1.56-1.77x faster
    (benchmarks/method_sweep.py). The numbers are those of separate runs up
    to float round-off; keys that give a seed's grid points different data
    orders are refused (build with ``share_teacher=False``).

    ``compiler_options``: XLA compile options for the ``advance`` program
    (``jax.jit(..., compiler_options=...)``); ``"auto"`` is
    :func:`default_compiler_options` (on CPU, :data:`CPU_COMPILER_OPTIONS`),
    None XLA's defaults. They change results by round-off at most and are
    recorded in the sweep's fingerprint, so a checkpoint resumes only under
    the same options. benchmarks/RESULTS.md (``conv_cpu.py``,
    ``cnn_sweep.py``) says what each CPU option did.
    """

    def __init__(
        self,
        trainer: Trainer,
        n_seeds: int,
        grid: dict | None = None,
        *,
        shard: bool = True,
        vmap_width: int | None | str = "auto",
        compiler_options: dict | None | str = "auto",
        share_teacher: bool = True,
    ):
        self.trainer, self.n_seeds = trainer, int(n_seeds)
        if compiler_options == "auto":
            compiler_options = default_compiler_options()
        self.compiler_options = dict(compiler_options) if compiler_options else None
        self.grid = _full_grid(trainer, grid)
        self.grid_size = g = len(next(iter(self.grid.values())))
        self.mesh = seed_mesh(self.n_seeds) if shard else None
        n_dev = self.n_devices
        self.padded_seeds = -(-self.n_seeds // n_dev) * n_dev
        seed_sharding = NamedSharding(self.mesh, P("seed")) if self.mesh is not None else None
        replicated = NamedSharding(self.mesh, P()) if self.mesh is not None else None
        self._seed_sharding = seed_sharding

        def place(tree, sharding):
            if sharding is None:
                return tree
            if multi_process():  # global arrays built from each process's identical host copy
                return jax.tree.map(lambda x: _global_array(x, sharding), tree)
            return jax.device_put(tree, sharding)

        self._place = place
        self.data = place(trainer.data, replicated)
        self.hparams = place({k: jnp.asarray(v, jnp.float32) for k, v in self.grid.items()}, replicated)
        per_seed = trainer.teacher is not None and trainer.teacher.per_seed
        tin = trainer.teacher_inputs
        if per_seed:
            check(
                trainer.teacher.n_seeds == self.n_seeds,
                f"the per-seed teacher has {trainer.teacher.n_seeds} members but the sweep has {self.n_seeds} "
                "seeds; they must match",
            )
            tin = place(_pad_seeds(tin, self.padded_seeds), seed_sharding)
        else:
            tin = place(tin, replicated)
        self.teacher_inputs = tin

        def init_one(keys):  # one seed's state, the same at every grid point
            state = trainer.init(*keys)
            return jax.tree.map(lambda x: jnp.broadcast_to(x, (g, *x.shape)), state)

        def init_keys(init_keys_SxG, data_keys_SxG):
            s, g_ = init_keys_SxG.shape[:2]
            flat = jax.lax.map(
                lambda k: trainer.init(*k),
                (
                    init_keys_SxG.reshape(s * g_, *init_keys_SxG.shape[2:]),
                    data_keys_SxG.reshape(s * g_, *data_keys_SxG.shape[2:]),
                ),
            )
            return jax.tree.map(lambda a: a.reshape(s, g_, *a.shape[1:]), flat)

        # lax.map, not vmap: XLA:CPU takes ~15 s to compile two partitionable-threefry draws under a double
        # vmap (a two-layer MLP's init) and ~1 s as a loop; init runs once, so the loop costs nothing.
        self.init_fn = jax.jit(lambda i, d: jax.lax.map(init_one, (i, d)), out_shardings=seed_sharding)
        self.init_keys_fn = jax.jit(init_keys, out_shardings=seed_sharding)
        self.per_seed = per_seed
        self.vmap_width = _default_width() if vmap_width == "auto" else vmap_width
        self.shares_teacher = bool(share_teacher and trainer.teacher_live and g > 1)
        self._advance_fns = {}
        self._compiled = {}

    @property
    def n_devices(self) -> int:
        """The devices the seed axis is sharded over (1: not sharded)."""
        return 1 if self.mesh is None else self.mesh.size

    def _local_advance(self, states, hp, data, tin, num_steps: int):
        """Advance one device's block of runs (leaves ``[S_local, G, ...]``)."""
        trainer, g, per_seed, width = self.trainer, self.grid_size, self.per_seed, self.vmap_width
        if self.shares_teacher:  # per seed: one batch and one teacher pass per step for all its grid points
            over = _over_runs(width)
            if per_seed:
                return over(lambda st, t: trainer.advance_grid(st, hp, data, t, num_steps, over), states, tin)
            return over(lambda st: trainer.advance_grid(st, hp, data, tin, num_steps, over), states)
        if width is None:  # one vmap over seeds and grid points
            adv_g = jax.vmap(trainer.advance, in_axes=(0, 0, None, None, None))
            adv = jax.vmap(adv_g, in_axes=(0, None, None, 0 if per_seed else None, None))
            return adv(states, hp, data, tin, num_steps)
        s_local = jax.tree.leaves(states)[0].shape[0]
        flat = jax.tree.map(lambda a: a.reshape(s_local * g, *a.shape[2:]), states)

        def one(args):
            state, i = args
            h = jax.tree.map(lambda v: v[i % g], hp)
            t = jax.tree.map(lambda v: v[i // g], tin) if per_seed else tin
            return trainer.advance(state, h, data, t, num_steps)

        new, hist = jax.lax.map(one, (flat, jnp.arange(s_local * g)), batch_size=width if width > 1 else None)
        unflat = lambda a: a.reshape(s_local, g, *a.shape[1:])  # noqa: E731
        return jax.tree.map(unflat, new), jax.tree.map(unflat, hist)

    def advance_program(self, num_steps: int):
        """The jitted ``(states, hparams, data, teacher_inputs) -> (states, history)`` for ``num_steps`` (cached)."""
        fn = self._advance_fns.get(num_steps)
        if fn is None:
            local = functools.partial(self._local_advance, num_steps=num_steps)
            if self.mesh is not None:  # each device advances its own seeds; nothing is gathered
                local = jax.shard_map(
                    local,
                    mesh=self.mesh,
                    check_vma=False,
                    in_specs=(P("seed"), P(), P(), P("seed") if self.per_seed else P()),
                    out_specs=(P("seed"), P("seed")),
                )
            fn = jax.jit(local, donate_argnums=0, compiler_options=self.compiler_options)
            self._advance_fns[num_steps] = fn
        return fn

    def _padded(self, keys):
        keys = _pad_seeds(keys, self.padded_seeds) if self.padded_seeds != self.n_seeds else keys
        return self._place(keys, self._seed_sharding)

    def init(self, key) -> TrainState:
        """States of all seeds × grid points, from :func:`jaxkd.keys.seed_run_keys` (one state per seed)."""
        keys = seed_run_keys(key, self.n_seeds)
        return self.init_fn(self._padded(keys.init[:, 0]), self._padded(keys.data[:, 0]))

    def init_from_keys(self, keys: RunKeys) -> TrainState:
        """States from explicit per-(seed, grid point) initialisation and data-order keys."""
        check(
            not self.shares_teacher or keys.data_shared,
            "these keys give one seed's grid points different data orders, but the program shares the teacher's "
            "forward pass between them; build it with share_teacher=False",
        )
        return self.init_keys_fn(self._padded(keys.init), self._padded(keys.data))

    def state_spec(self, key=None) -> TrainState:
        """Shapes, dtypes and shardings of the sweep's states (no work done)."""
        spec = jax.eval_shape(self.init, jax.random.key(0) if key is None else key)
        return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=self._seed_sharding), spec)

    def compiled_advance(self, num_steps: int):
        """The advance program for ``num_steps``, compiled ahead of time (cached)."""
        fn = self._compiled.get(num_steps)
        if fn is None:
            lowered = self.advance_program(num_steps).lower(
                self.state_spec(), self.hparams, self.data, self.teacher_inputs
            )
            fn = self._compiled[num_steps] = lowered.compile()
        return fn

    def memory_need(self, num_steps: int) -> int:
        """Bytes one device needs to advance ``num_steps`` (XLA's ``memory_analysis`` of the compiled chunk; 0
        where the backend does not report)."""
        m = self.compiled_advance(num_steps).memory_analysis()
        if m is None:
            return 0
        return int(m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes)

    def check_memory(self, num_steps: int) -> int:
        """Bytes one device needs to advance ``num_steps`` (XLA's ``memory_analysis``); refuses what cannot fit.

        One ``ConfigError`` when the compiled chunk needs more memory than the
        device has, saying about how many seeds would fit (memory grows
        linearly with the seeds a device holds).
        """
        need = self.memory_need(num_steps)
        have = memory_limit()
        if not need:  # a backend that does not report
            return 0
        if have is not None and need > have:
            n_dev = self.n_devices
            fits = int(self.padded_seeds * have / need) // n_dev * n_dev
            raise ConfigError(
                f"{self.n_seeds} seeds x {self.grid_size} grid points need about {need / 2**30:.1f} GiB per device "
                f"but the device has {have / 2**30:.1f} GiB available; about {fits} seeds fit: lower --seeds"
                + (" or set chunk_steps" if num_steps > self.trainer.eval_every else "")
            )
        return need

    def advance(self, states: TrainState, num_steps: int):
        """``num_steps`` more steps of every run; returns ``(states, history)`` (donates ``states``).

        ``states`` come from :meth:`init` or :meth:`init_from_keys` (or a checkpoint of them): where the
        program shares the teacher's pass, it reads each seed's batch from its first grid point's keys.
        """
        return self.compiled_advance(num_steps)(states, self.hparams, self.data, self.teacher_inputs)


_MEMORY_LIMIT: contextvars.ContextVar[int | None] = contextvars.ContextVar("jaxkd_memory_limit", default=None)


@contextlib.contextmanager
def limit_memory(num_bytes: int | None):
    """Inside: every sweep plans for at most ``num_bytes`` per device (``--max-memory``) instead of what the
    device has; a sweep that needs more runs its seeds in blocks that fit (:func:`jaxkd.sweep.run_sweep`)."""
    token = _MEMORY_LIMIT.set(None if num_bytes is None else int(num_bytes))
    try:
        yield
    finally:
        _MEMORY_LIMIT.reset(token)


def memory_limit() -> int | None:
    """Bytes a sweep may use per device: the ``--max-memory`` in force, else :func:`device_memory`."""
    given = _MEMORY_LIMIT.get()
    return given if given is not None else device_memory()


def parse_size(text: str) -> int:
    """``"512MiB"``, ``"2GiB"``, ``"1.5GB"``, ``"800000"`` (bytes) -> bytes; one line for anything else."""
    units = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
    t = str(text).strip().lower().replace(" ", "")
    number = t.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = t[len(number) :]
    try:
        value = float(number)
    except ValueError:
        value = float("nan")
    if unit not in units or not value > 0 or value != value or value == float("inf"):
        raise ConfigError(f"--max-memory must be a positive size such as 512MiB, 2GiB or 1.5GB, got {text!r}")
    return int(value * units[unit])


def device_memory() -> int | None:
    """Bytes one device may use: the accelerator's limit, or on CPU its share of the host's available memory."""
    dev = jax.devices()[0]
    if dev.platform != "cpu":
        stats = dev.memory_stats() or {}
        if "bytes_limit" not in stats:
            return None
        return stats["bytes_limit"] - stats.get("bytes_in_use", 0)  # a teacher's arrays may still be held
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        avail = int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            return None
    return avail // jax.local_device_count()
