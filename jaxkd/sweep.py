"""Seeds × hyper-parameters as one compiled program.

``run_sweep(trainer, key, n_seeds, grid)`` trains ``n_seeds × G`` runs with
``jit(vmap(vmap(advance)))``: the outer vmap is over seeds (sharded across
devices when there are several), the inner one over the ``G`` points of the
hyper-parameter grid. Seed ``s`` uses the same initialisation and data order at
every grid point, so comparisons between grid points are paired; explicit
:class:`RunKeys` set both per (seed, grid point) instead, for controls that
share a teacher's initialisation or data order.

Long sweeps run in chunks of steps; after each chunk the host updates a
progress bar and, given a checkpoint directory, writes an orbax checkpoint.
``resume=True`` continues from the last complete checkpoint and gives the same
result as an uninterrupted sweep (the same compiled chunk program runs on the
same state; per-step randomness comes from ``fold_in``).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxkd.checkpoint import SweepCheckpointer
from jaxkd.errors import ConfigError, check
from jaxkd.train import Trainer, TrainState, check_hparams


@dataclasses.dataclass
class SweepResult:
    """A finished sweep; an ensemble is ``states.params`` (leaves ``[S, G, ...]``).

    Attributes:
      states: final :class:`TrainState`, leaves with leading axes ``[S, G]``.
      history: ``{metric: [S, G, E]}`` numpy arrays.
      steps: ``[E]`` step index at each evaluation.
      grid: ``{hparam: [G]}`` the grid points (all sweepable hparams filled in).
      diverged: ``[S, G]`` True where parameters or losses became NaN/Inf.
    """

    states: TrainState
    history: dict[str, np.ndarray]
    steps: np.ndarray
    grid: dict[str, np.ndarray]
    diverged: np.ndarray
    fingerprint: dict | None = None

    @property
    def n_seeds(self) -> int:
        return int(self.diverged.shape[0])


@dataclasses.dataclass(frozen=True)
class RunKeys:
    """Initialisation and data-order keys for every run of a sweep, each ``[S, G]``.

    A sweep normally derives both from one key per seed (:func:`seed_run_keys`),
    shared by every grid point, so seed ``s`` starts from the same parameters
    and sees the same batches under every condition. Explicit keys decouple
    them: e.g. a student that starts from its teacher's initialisation with
    another data order (SIDDO) takes the teacher's ``init`` keys and its own
    ``data`` keys, at its own grid points of the same program.
    """

    init: jax.Array
    data: jax.Array

    def __post_init__(self):
        for name in ("init", "data"):
            a = getattr(self, name)
            check(
                jnp.issubdtype(a.dtype, jax.dtypes.prng_key) and a.ndim == 2,
                f"RunKeys.{name} must be a [seeds, grid points] array of typed keys (jax.random.key), "
                f"got {a.dtype} {a.shape}",
            )
        check(
            self.init.shape == self.data.shape,
            f"RunKeys.init {self.init.shape} and RunKeys.data {self.data.shape} differ in shape",
        )

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.init.shape)

    def select(self, grid_points, other: RunKeys, *, init: bool = False, data: bool = False) -> RunKeys:
        """These keys with ``other``'s init and/or data keys at ``grid_points`` (broadcast over its grid)."""
        cols = np.zeros(self.shape[1], bool)
        cols[list(grid_points)] = True

        def mix(mine, theirs, use):
            if not use:
                return mine
            theirs = jnp.broadcast_to(theirs[:, :1], mine.shape) if theirs.shape[1] == 1 else theirs
            return jnp.where(jnp.asarray(cols)[None, :], theirs, mine)

        return RunKeys(mix(self.init, other.init, init), mix(self.data, other.data, data))

    def fingerprint(self) -> dict:
        return {
            name: hashlib.sha256(np.asarray(jax.random.key_data(getattr(self, name))).tobytes()).hexdigest()[:16]
            for name in ("init", "data")
        }


def seed_run_keys(key, n_seeds: int, grid_size: int = 1) -> RunKeys:
    """The keys a sweep uses by default: ``init, data = split(split(key, S)[s])``, equal at every grid point."""
    seeds = jax.random.split(key, n_seeds)
    pairs = jax.vmap(jax.random.split)(seeds)  # [S, 2]
    tile = lambda k: jnp.broadcast_to(k[:, None], (n_seeds, grid_size))  # noqa: E731
    return RunKeys(tile(pairs[:, 0]), tile(pairs[:, 1]))


def grid_product(**axes) -> dict[str, np.ndarray]:
    """Cartesian product of 1-D value lists: ``grid_product(alpha=[0, .5], temperature=[1, 4])``."""
    names = list(axes)
    points = list(itertools.product(*(list(np.atleast_1d(axes[n])) for n in names)))
    return {n: np.asarray([p[i] for p in points], np.float64) for i, n in enumerate(names)}


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


def seed_mesh(n_seeds: int | None = None):
    """A 1-D ``("seed",)`` mesh over all devices, or None with a single device."""
    del n_seeds
    n_dev = jax.device_count()
    if n_dev < 2:
        return None
    return jax.make_mesh((n_dev,), ("seed",), axis_types=(AxisType.Auto,))


def _finite(tree) -> jax.Array:
    """Per-(seed, grid) flag: every leaf is finite. Leaves have leading ``[S, G]``."""
    flags = [
        jnp.all(jnp.isfinite(leaf.reshape(leaf.shape[0], leaf.shape[1], -1)), axis=-1)
        for leaf in jax.tree.leaves(tree)
        if jnp.issubdtype(leaf.dtype, jnp.inexact)
    ]
    return jnp.all(jnp.stack(flags), axis=0)


def _default_width():
    return 1 if jax.default_backend() == "cpu" else None


def _pad_seeds(tree, n: int):
    """Repeat the last entry of the leading axis up to length ``n``."""
    return jax.tree.map(lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], n - a.shape[0], axis=0)]), tree)


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
    """

    def __init__(
        self,
        trainer: Trainer,
        n_seeds: int,
        grid: dict | None = None,
        *,
        shard: bool = True,
        vmap_width: int | None | str = "auto",
    ):
        self.trainer, self.n_seeds = trainer, int(n_seeds)
        self.grid = _full_grid(trainer, grid)
        self.grid_size = g = len(next(iter(self.grid.values())))
        self.mesh = seed_mesh() if shard else None
        n_dev = 1 if self.mesh is None else jax.device_count()
        self.padded_seeds = -(-self.n_seeds // n_dev) * n_dev
        seed_sharding = NamedSharding(self.mesh, P("seed")) if self.mesh is not None else None
        replicated = NamedSharding(self.mesh, P()) if self.mesh is not None else None
        self._seed_sharding = seed_sharding

        def place(tree, sharding):
            return tree if sharding is None else jax.device_put(tree, sharding)

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

        def init_one(seed_key):
            init_key, data_key = jax.random.split(seed_key)
            state = trainer.init(init_key, data_key)
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
        self.init_fn = jax.jit(lambda keys: jax.lax.map(init_one, keys), out_shardings=seed_sharding)
        self.init_keys_fn = jax.jit(init_keys, out_shardings=seed_sharding)
        self.per_seed = per_seed
        self.vmap_width = _default_width() if vmap_width == "auto" else vmap_width
        self._advance_fns = {}

    def _local_advance(self, states, hp, data, tin, num_steps: int):
        """Advance one device's block of runs (leaves ``[S_local, G, ...]``)."""
        trainer, g, per_seed, width = self.trainer, self.grid_size, self.per_seed, self.vmap_width
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
            fn = self._advance_fns[num_steps] = jax.jit(local, donate_argnums=0)
        return fn

    def seed_keys(self, key):
        """The sweep's per-seed keys ``split(key, S)``, padded for sharding."""
        keys = jax.random.split(key, self.n_seeds)
        return _pad_seeds(keys, self.padded_seeds) if self.padded_seeds != self.n_seeds else keys

    def init(self, key) -> TrainState:
        """States of all seeds × grid points; seed ``s`` from ``split(key, S)[s]``."""
        return self.init_fn(self._place(self.seed_keys(key), self._seed_sharding))

    def init_from_keys(self, keys: RunKeys) -> TrainState:
        """States from explicit per-(seed, grid point) initialisation and data-order keys."""
        pad = (lambda k: _pad_seeds(k, self.padded_seeds)) if self.padded_seeds != self.n_seeds else (lambda k: k)
        init, data = (self._place(pad(k), self._seed_sharding) for k in (keys.init, keys.data))
        return self.init_keys_fn(init, data)

    def advance(self, states: TrainState, num_steps: int):
        """``num_steps`` more steps of every run; returns ``(states, history)`` (donates ``states``)."""
        return self.advance_program(num_steps)(states, self.hparams, self.data, self.teacher_inputs)


def run_sweep(
    trainer: Trainer,
    key,
    n_seeds: int,
    grid: dict | None = None,
    *,
    chunk_steps: int | None = None,
    checkpoint_dir: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    fingerprint: dict | None = None,
    shard: bool = True,
    vmap_width: int | None | str = "auto",
    progress: bool = True,
    desc: str = "sweep",
    keys: RunKeys | None = None,
) -> SweepResult:
    """Train ``n_seeds`` seeds at every grid point in one compiled program.

    Args:
      trainer: from :func:`jaxkd.train.make_train`.
      key: the sweep's key; seed ``s`` uses ``split(key, n_seeds)[s]``.
      n_seeds: positive number of seeds.
      grid: ``{hparam: [G] values}`` zipped points (see :func:`grid_product`);
        hparams not given take the config's value.
      chunk_steps: steps per compiled chunk (a multiple of the evaluation
        interval dividing the run's steps); default: the whole run in one chunk.
      checkpoint_dir: write an orbax checkpoint after every chunk.
      resume: continue from the latest checkpoint in ``checkpoint_dir``.
      overwrite: replace the checkpoints of an earlier sweep in ``checkpoint_dir``.
      fingerprint: extra description stored with the checkpoints.
      shard: shard the seed axis over devices when more than one is present.
      vmap_width: how many runs one device vectorises at a time (see :class:`SweepProgram`).
      keys: explicit initialisation and data-order keys per (seed, grid point)
        (:class:`RunKeys`, ``[n_seeds, G]``); ``key`` is then only recorded.
    """
    check(isinstance(n_seeds, (int, np.integer)) and n_seeds > 0, f"--seeds must be a positive integer, got {n_seeds}")
    total, every = trainer.steps, trainer.eval_every
    chunk = total if chunk_steps is None else int(chunk_steps)
    check(
        chunk > 0 and chunk % every == 0 and total % chunk == 0,
        f"chunk_steps ({chunk}) must be a multiple of the evaluation interval ({every}) dividing the run's "
        f"{total} steps",
    )
    if resume and checkpoint_dir is None:
        raise ConfigError("--resume needs a checkpoint directory")
    program = SweepProgram(trainer, n_seeds, grid, shard=shard, vmap_width=vmap_width)
    s_pad = program.padded_seeds
    if keys is not None:
        check(
            keys.shape == (int(n_seeds), program.grid_size),
            f"keys are {keys.shape} (seeds, grid points) but the sweep has {n_seeds} seeds and "
            f"{program.grid_size} grid points",
        )
    full_fingerprint = {
        **trainer.fingerprint,
        "key": np.asarray(jax.random.key_data(key)).tolist(),
        "n_seeds": int(n_seeds),
        "chunk_steps": chunk,
        "grid": {k: v.tolist() for k, v in program.grid.items()},
        **(fingerprint or {}),
    }
    if keys is not None:
        full_fingerprint["run_keys"] = keys.fingerprint()
    ckpt = None
    if checkpoint_dir is not None:  # before any work: a wrong directory fails fast
        ckpt = SweepCheckpointer(checkpoint_dir, full_fingerprint, resume=resume, overwrite=overwrite)
    states = program.init(key) if keys is None else program.init_from_keys(keys)
    history: list[dict] = []
    done = 0
    if ckpt is not None:
        latest = ckpt.latest_step() if resume else None
        if resume and latest is None:
            print(f"jaxkd: no checkpoint in {ckpt.directory} yet; starting from step 0", file=sys.stderr)
        if latest is not None:
            hist_shape = jax.eval_shape(lambda s: program.advance(s, every)[1], states)
            state_target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), states)

            def target_for(step):
                n_eval = step // every
                return {
                    "state": state_target,
                    "history": {
                        k: jax.ShapeDtypeStruct((s_pad, program.grid_size, n_eval), v.dtype)
                        for k, v in hist_shape.items()
                    },
                }

            latest, restored = ckpt.restore(latest, target_for)
            states = restored["state"]
            if not isinstance(states, TrainState):
                states = TrainState(*states)
            history = [{k: np.asarray(v) for k, v in restored["history"].items()}]
            done = latest

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=done, desc=desc, unit="step", leave=False, file=sys.stderr)
    while done < total:
        states, chunk_hist = program.advance(states, chunk)
        history.append({k: np.asarray(v) for k, v in chunk_hist.items()})
        done += chunk
        if ckpt is not None:
            ckpt.save(done, {"state": states, "history": _concat(history)})
        if bar is not None:
            bar.update(chunk)
    if bar is not None:
        bar.close()
    if ckpt is not None:
        ckpt.close()

    hist = {k: v[:n_seeds] for k, v in _concat(history).items()}
    if s_pad != n_seeds:
        states = jax.tree.map(lambda a: a[:n_seeds], states)
    finite_hist = np.all(np.stack([np.isfinite(v).all(-1) for v in hist.values()]), axis=0)
    diverged = ~(np.asarray(_finite(states.params)) & finite_hist)
    if diverged.any():
        bad = ", ".join(f"seed {s} at grid point {g}" for s, g in zip(*np.nonzero(diverged)))
        warnings.warn(
            f"{int(diverged.sum())} of {diverged.size} runs diverged (NaN/Inf) and are excluded from summaries: {bad}",
            RuntimeWarning,
            stacklevel=2,
        )
    steps = np.arange(1, total // every + 1) * every
    return SweepResult(
        states=states, history=hist, steps=steps, grid=program.grid, diverged=diverged, fingerprint=full_fingerprint
    )


def _concat(history: list[dict]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([h[k] for h in history], axis=-1) for k in history[0]}
