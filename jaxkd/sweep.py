"""Seeds × hyper-parameters as one compiled program, run in chunks with checkpoints.

``run_sweep(trainer, key, n_seeds, grid)`` trains ``n_seeds × G`` runs in
one compiled program (:class:`jaxkd.program.SweepProgram`: seeds sharded
over devices, grid points beside them). Seed ``s`` uses the same
initialisation and data order at every grid point, so comparisons between
grid points are paired; explicit :class:`jaxkd.keys.RunKeys` set both per
(seed, grid point) instead, for controls that share a teacher's
initialisation or data order.

Every run carries the model it selects on the validation split
(:mod:`jaxkd.selection`) beside its current one: ``SweepResult.model()``
returns either, ``SweepResult.selected_index`` the evaluation it was
selected at.

Long sweeps run in chunks of steps; after each chunk the host updates a
progress bar and, given a checkpoint directory, writes an orbax checkpoint.
``resume=True`` continues from the last complete checkpoint and gives the same
result as an uninterrupted sweep (the same compiled chunk program runs on the
same state; per-step randomness comes from ``fold_in``). A process killed
outright (SIGKILL) at any point resumes the same way (see
:mod:`jaxkd.checkpoint` for how each write survives it).

A run whose loss or update turns NaN/Inf (a learning rate too large for its
grid point) is stopped inside the compiled program (:func:`jaxkd.train.guard_step`):
its parameters and optimiser state stay at their last finite values, its
records are NaN from then on, and ``SweepResult.diverged_step`` says when.
The other runs' numbers are bitwise what they would be without it.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from jaxkd import curves
from jaxkd.checkpoint import SweepCheckpointer
from jaxkd.distributed import is_primary, to_host
from jaxkd.errors import ConfigError, check
from jaxkd.fingerprint import software
from jaxkd.keys import RunKeys
from jaxkd.models.layers import direct_conv_enabled, fence_conv_inputs, winograd_enabled, winograd_maps
from jaxkd.program import SweepProgram
from jaxkd.train import Trainer, TrainState

MODELS = ("selected", "last")


@dataclasses.dataclass
class SweepResult:
    """A finished sweep: every run's final state, its selected model and its evaluation history.

    Attributes:
      states: final :class:`TrainState`, leaves with leading axes ``[S, G]``;
        ``states.selected`` holds each run's validation-selected model.
      history: ``{metric: [S, G, E]}`` numpy arrays.
      steps: ``[E]`` step index at each evaluation.
      grid: ``{hparam: [G]}`` the grid points (all sweepable hparams filled in).
      diverged: ``[S, G]`` True where parameters or losses became NaN/Inf.
      diverged_step: ``[S, G]`` the training step whose loss or update was
        NaN/Inf (1-based; 0 where the run stayed finite). Inside the compiled
        program a diverging run's parameters and optimiser state stay at their
        last finite values from that step on, its records are NaN from the
        evaluation interval that holds the step, and its selected model is
        the one selected before; the other runs' numbers are bitwise those of
        a sweep without it.
    """

    states: TrainState
    history: dict[str, np.ndarray]
    steps: np.ndarray
    grid: dict[str, np.ndarray]
    diverged: np.ndarray
    fingerprint: dict | None = None
    diverged_step: np.ndarray | None = None

    @property
    def n_seeds(self) -> int:
        return int(self.diverged.shape[0])

    @property
    def selected_steps(self) -> np.ndarray:
        """``[S, G]`` training step of each run's selected evaluation (0 where none was selected)."""
        return to_host(self.states.selected.step)

    @property
    def selected_index(self) -> np.ndarray:
        """``[S, G]`` index into ``steps`` (and the history's last axis) of each run's selected evaluation.

        A run with no finite evaluation (diverged) points at its last one; a
        finite run that selected none is a bug and raises.
        """
        idx = np.searchsorted(self.steps, self.selected_steps)
        found = (idx < len(self.steps)) & (self.steps[np.minimum(idx, len(self.steps) - 1)] == self.selected_steps)
        lost = ~found & ~self.diverged
        if lost.any():  # a finite run always selects one of its evaluations
            raise RuntimeError(f"runs {np.argwhere(lost).tolist()} selected no evaluation; this is a bug in jaxkd")
        return np.where(found, idx, len(self.steps) - 1)

    def model(self, which: str = "selected") -> tuple:
        """``(params, rest)`` of every run's model, leaves ``[S, G, ...]``: ``selected`` (default) or ``last``."""
        check(which in MODELS, f"model must be one of {', '.join(MODELS)}, got {which!r}")
        if which == "selected":
            return self.states.selected.params, self.states.selected.rest
        return self.states.params["model"], self.states.rest


def grid_product(**axes) -> dict[str, np.ndarray]:
    """Cartesian product of 1-D value lists: ``grid_product(alpha=[0, .5], temperature=[1, 4])``."""
    names = list(axes)
    points = list(itertools.product(*(list(np.atleast_1d(axes[n])) for n in names)))
    return {n: np.asarray([p[i] for p in points], np.float64) for i, n in enumerate(names)}


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
    names: list[str] | None = None,
    compiler_options: dict | None | str = "auto",
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
      names: the grid points' condition names (``[G]``), used by the training
        curves written inside :func:`jaxkd.curves.logging_to` (default ``point<g>``).
      compiler_options: XLA compile options of the training program (see :class:`SweepProgram`).
    """
    chunk = _check_plan(trainer, n_seeds, chunk_steps, checkpoint_dir, resume)
    program = SweepProgram(
        trainer,
        n_seeds,
        grid,
        shard=shard,
        vmap_width=vmap_width,
        compiler_options=compiler_options,
        share_teacher=keys is None or keys.data_shared,
    )
    if keys is not None:
        check(
            keys.shape == (int(n_seeds), program.grid_size),
            f"keys are {keys.shape} (seeds, grid points) but the sweep has {n_seeds} seeds and "
            f"{program.grid_size} grid points",
        )
    check(
        names is None or len(names) == program.grid_size,
        f"names has {0 if names is None else len(names)} entries but the sweep has {program.grid_size} grid points",
    )
    full_fingerprint = sweep_fingerprint(program, key, chunk, keys, fingerprint)
    block = _seed_block(program, chunk, progress, desc)
    if block is not None:  # the seeds do not fit in one program: blocks of seeds that do, one after another
        return _run_seed_blocks(
            trainer,
            key,
            n_seeds,
            grid,
            block,
            full_fingerprint,
            keys=keys,
            names=names,
            chunk_steps=chunk,
            checkpoint_dir=checkpoint_dir,
            resume=resume,
            overwrite=overwrite,
            fingerprint=fingerprint,
            shard=shard,
            vmap_width=vmap_width,
            progress=progress,
            desc=desc,
        )
    ckpt = None
    if checkpoint_dir is not None:  # before any work: a wrong directory fails fast
        ckpt = SweepCheckpointer(checkpoint_dir, full_fingerprint, resume=resume, overwrite=overwrite)
    bar = log = None
    if progress and is_primary():  # shown before compiling (minutes for many seeds); by one process
        from tqdm.auto import tqdm

        bar = tqdm(total=trainer.steps, desc=f"{desc} (compiling)", unit="step", leave=False, file=sys.stderr)
    try:
        program.check_memory(chunk)  # compiles the chunk program; refuses a sweep that cannot fit
        states = program.init(key) if keys is None else program.init_from_keys(keys)
        done, history = 0, []
        if ckpt is not None and resume:
            done, states, history = _resume(ckpt, program, states)
        if bar is not None:
            bar.set_description(desc)
            bar.update(done)
        # Training curves (inside jaxkd.curves.logging_to only): written on the host after each chunk.
        log = curves.open_sweep(desc, names, program.grid, n_seeds, trainer.eval_every, done, trainer.steps)
        states, history = _advance_in_chunks(program, states, history, done, chunk, ckpt, bar, log)
        if log is not None:
            log, finished = None, log
            finished.close(ok=True)
    finally:
        if bar is not None:
            bar.close()  # leave=False: the bar disappears, so an error that follows stays one line
        if log is not None:
            log.close(ok=False)

    hist = {k: v[:n_seeds] for k, v in _concat(history).items()}
    if program.padded_seeds != n_seeds:
        states = jax.tree.map(lambda a: a[:n_seeds], states)
    every = trainer.eval_every
    diverged, diverged_step = _diverged(states, hist)
    return SweepResult(
        states=states,
        history=hist,
        steps=np.arange(1, trainer.steps // every + 1) * every,
        grid=program.grid,
        diverged=diverged,
        fingerprint=full_fingerprint,
        diverged_step=diverged_step,
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _fmt_bytes(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _seed_block(program: SweepProgram, chunk: int, progress: bool, desc: str) -> int | None:
    """Seeds per program when all of them do not fit in the memory limit (None: they fit, or nothing is known).

    Compiles the chunk program and reads XLA's ``memory_analysis``; prints the
    estimate per device (with ``progress``). Memory grows linearly with the
    seeds a device holds, so the block is the largest multiple of the device
    count that fits, checked by compiling it. One line when not even one seed
    per device fits.
    """
    from jaxkd.program import memory_limit

    need = program.memory_need(chunk)
    limit = memory_limit()
    n_dev = program.n_devices
    if progress and is_primary() and need:
        print(
            f"jaxkd: {desc}: {_count(program.n_seeds, 'seed')} x {_count(program.grid_size, 'grid point')} need about "
            f"{_fmt_bytes(need)} "
            f"per device ({n_dev} device{'s' if n_dev > 1 else ''}; XLA's memory analysis of a {chunk}-step chunk)"
            + (f", {_fmt_bytes(limit)} available" if limit is not None else ""),
            file=sys.stderr,
        )
    if not need or limit is None or need <= limit:
        return None
    # Blocks bound what one program needs while it trains; the final states of every seed are still held
    # together (the sweep's result), so they must fit.
    held = sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(program.state_spec())) // n_dev
    if held > limit:
        fits = int(program.padded_seeds * limit / held) // n_dev * n_dev
        raise ConfigError(
            f"{program.n_seeds} seeds x {program.grid_size} grid points hold {_fmt_bytes(held)} of states per device "
            f"but {_fmt_bytes(limit)} are available; about {fits} seeds fit: lower --seeds"
        )
    per_device = program.padded_seeds // n_dev
    block = per_device
    while block > 1:
        block = min(block - 1, max(1, int(per_device * limit / need)))
        trial = SweepProgram(
            program.trainer,
            block * n_dev,
            program.grid,
            shard=program.mesh is not None,
            vmap_width=program.vmap_width,
            compiler_options=program.compiler_options,
            share_teacher=program.shares_teacher,
        )
        if trial.memory_need(chunk) <= limit:
            return block * n_dev
    raise ConfigError(
        f"{desc}: even {n_dev} seed{'s' if n_dev > 1 else ''} ({'one per device' if n_dev > 1 else 'one'}) x "
        f"{program.grid_size} grid points need more than the {_fmt_bytes(limit)} available per device; "
        "use fewer grid points per sweep, a smaller batch, or chunk_steps"
    )


def _run_seed_blocks(trainer, key, n_seeds, grid, block, full_fingerprint, *, keys, names, **kw) -> SweepResult:
    """Seeds ``[i, i + block)`` as separate programs with the keys they have in one program, results joined.

    Every run's keys are the ones it gets in one program and runs do not
    interact, so the records are those of one program (bitwise where each run
    is traced alone, the CPU default ``vmap_width=1``). Checkpoints go to
    ``<checkpoint_dir>/seeds<i>-<j>``; training curves are written once all
    blocks are done.
    """
    from jaxkd.keys import seed_run_keys

    g = len(next(iter(grid.values()))) if grid else 1
    all_keys = keys if keys is not None else seed_run_keys(key, n_seeds, g)
    ckpt_dir, desc = kw.pop("checkpoint_dir"), kw.pop("desc")
    fp = kw.pop("fingerprint")
    if kw["progress"] and is_primary():
        print(f"jaxkd: {desc}: running the {n_seeds} seeds in blocks of {block}", file=sys.stderr)
    parts = []
    with curves.suspended():  # curves of the whole sweep, written below
        for i in range(0, n_seeds, block):
            j = min(i + block, n_seeds)
            sub = RunKeys(all_keys.init[i:j], all_keys.data[i:j])
            parts.append(
                run_sweep(
                    trainer,
                    key,
                    j - i,
                    grid,
                    keys=sub,
                    names=names,
                    checkpoint_dir=None if ckpt_dir is None else os.path.join(ckpt_dir, f"seeds{i}-{j - 1}"),
                    fingerprint={**(fp or {}), "seed_block": [i, j]},
                    desc=f"{desc} seeds {i}-{j - 1}",
                    **kw,
                )
            )
    join = lambda *a: np.concatenate(a, axis=0)  # noqa: E731
    history = {k: join(*(p.history[k] for p in parts)) for k in parts[0].history}
    states = jax.tree.map(lambda *a: jnp.concatenate(a, axis=0), *(p.states for p in parts))
    every = trainer.eval_every
    log = curves.open_sweep(desc, names, parts[0].grid, n_seeds, every, 0, trainer.steps)
    if log is not None:
        log.write_chunk(history)
        log.close(ok=True)
    return SweepResult(
        states=states,
        history=history,
        steps=parts[0].steps,
        grid=parts[0].grid,
        diverged=join(*(p.diverged for p in parts)),
        fingerprint={**full_fingerprint, "seed_blocks": block},
        diverged_step=join(*(p.diverged_step for p in parts)),
    )


def _check_plan(trainer: Trainer, n_seeds, chunk_steps, checkpoint_dir, resume) -> int:
    """The chunk length, after checking the seeds, the chunking and resuming against the run (one line each)."""
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
    return chunk


def sweep_fingerprint(program: SweepProgram, key, chunk: int, keys: RunKeys | None, extra: dict | None) -> dict:
    """Everything that defines a sweep (:mod:`jaxkd.fingerprint`): the trainer's part, keys, grid and program."""
    out = {
        **program.trainer.fingerprint,
        "key": np.asarray(jax.random.key_data(key)).tolist(),
        "n_seeds": program.n_seeds,
        "chunk_steps": chunk,
        "grid": {k: v.tolist() for k, v in program.grid.items()},
        "versions": software(),
        "n_devices": program.n_devices,
        "vmap_width": program.vmap_width,
        **(extra or {}),
    }
    if program.compiler_options:  # only when set, so that checkpoints written before the option still resume
        out["compiler_options"] = program.compiler_options
    # The CPU convolution's choices (jaxkd.models.layers) change results by round-off, as the options do; only
    # when on, as above.
    conv = {
        k: True
        for k, on in (
            ("conv_input_fence", fence_conv_inputs()),
            ("conv_winograd", winograd_enabled()),
            ("conv_direct", direct_conv_enabled()),
        )
        if on
    }
    if conv.get("conv_winograd"):  # which maps take it: the rule was widened on 2026-12-07
        conv["conv_winograd_maps"] = winograd_maps()
    if conv:
        out["conv_paths"] = conv
    if program.shares_teacher:  # round-off again; only when on
        out["shared_teacher_pass"] = True
    if keys is not None:
        out["run_keys"] = keys.fingerprint()
    return out


def _resume(ckpt: SweepCheckpointer, program: SweepProgram, states):
    """``(steps done, states, history chunks)`` from the latest readable checkpoint (nothing done if none)."""
    latest = ckpt.latest_step()
    if latest is None:
        print(f"jaxkd: no checkpoint in {ckpt.directory} yet; starting from step 0", file=sys.stderr)
        return 0, states, []
    every = program.trainer.eval_every
    # the history's shapes from the lowered program (a jit with compiler options cannot be traced inside another)
    hist_shape = program.advance_program(every).lower(states, program.hparams, program.data, program.teacher_inputs)
    hist_shape = hist_shape.out_info[1]
    state_target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), states)

    def target_for(step):
        shape = (program.padded_seeds, program.grid_size, step // every)
        return {
            "state": state_target,
            "history": {k: jax.ShapeDtypeStruct(shape, v.dtype) for k, v in hist_shape.items()},
        }

    latest, restored = ckpt.restore(latest, target_for)
    states = restored["state"]
    if not isinstance(states, TrainState):
        states = TrainState(*states)
    return latest, states, [{k: to_host(v) for k, v in restored["history"].items()}]


def _advance_in_chunks(program: SweepProgram, states, history, done, chunk, ckpt, bar, log=None):
    """Advance chunk by chunk to the end of the run, checkpointing (and writing curves to ``log``) after each.

    Returns ``(states, history)``.
    """
    total = program.trainer.steps
    while done < total:
        states, chunk_hist = program.advance(states, chunk)
        history.append({k: to_host(v) for k, v in chunk_hist.items()})  # gathered from every process
        if log is not None:
            log.write_chunk(history[-1])
        done += chunk
        if ckpt is not None:
            ckpt.save(done, {"state": states, "history": _concat(history)})
        if bar is not None:
            bar.update(chunk)
    if ckpt is not None:
        ckpt.close()
    return states, history


def _diverged(states, hist) -> tuple[np.ndarray, np.ndarray]:
    """``([S, G] diverged, [S, G] step)``: runs stopped inside the program, or with NaN/Inf parameters or records.

    Warned about by seed, grid point and step. The step is the one the
    compiled program recorded (0 for a run that only produced a non-finite
    evaluation, which it does not stop for).
    """
    step = to_host(states.diverged_at)
    finite_hist = np.all(np.stack([np.isfinite(v).all(-1) for v in hist.values()]), axis=0)
    diverged = (step > 0) | ~(to_host(_finite(states.params)) & finite_hist)
    if diverged.any():
        where = list(zip(*np.nonzero(diverged)))
        bad = ", ".join(f"seed {s} at grid point {g}" for s, g in where)
        at = ", ".join(str(step[s, g]) if step[s, g] > 0 else "eval" for s, g in where)
        warnings.warn(
            f"{int(diverged.sum())} of {diverged.size} runs diverged (NaN/Inf) and are excluded from summaries: {bad} "
            f"(at step{'s' if len(where) > 1 else ''} {at})",
            RuntimeWarning,
            stacklevel=3,
        )
    return diverged, step


def _finite(tree) -> jax.Array:
    """Per-(seed, grid) flag: every leaf is finite. Leaves have leading ``[S, G]``."""
    flags = [
        jnp.all(jnp.isfinite(leaf.reshape(leaf.shape[0], leaf.shape[1], -1)), axis=-1)
        for leaf in jax.tree.leaves(tree)
        if jnp.issubdtype(leaf.dtype, jnp.inexact)
    ]
    return jnp.all(jnp.stack(flags), axis=0)


def _concat(history: list[dict]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([h[k] for h in history], axis=-1) for k in history[0]}
