"""Sweeps over several processes with JAX's own runtime (``jax.distributed``): start-up, the primary, host copies.

Every process runs the same program (JAX's multi-controller model): the
seed axis of a sweep is sharded over every device of every process (one
global mesh, :func:`jaxkd.program.seed_mesh`), each process advances the
seed block on its own devices, and cross-process collectives run over
JAX's transport (gloo on CPU, NCCL on GPU). What reaches the host (the
evaluation history, divergence flags, checksums) is gathered to every
process with ``multihost_utils.process_allgather``; result files, saved
models and checkpoint metadata are written once, by process 0
(:func:`is_primary`), atomically. ``docs/distributed.md`` has the launch
commands.
"""

from __future__ import annotations

import os

import numpy as np

from jaxkd.errors import ConfigError, check

# Environment variables of launchers that jax.distributed.initialize() detects by itself.
_LAUNCHER_ENV = ("SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS")

_STATE = {"initialized": False}


def launcher_detected() -> bool:
    """Whether a cluster launcher (SLURM, Open MPI) that ``jax.distributed`` detects set up this process."""
    return any(v in os.environ for v in _LAUNCHER_ENV) and int(os.environ.get("SLURM_NTASKS", "2")) > 1


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    heartbeat_timeout: int = 100,
    initialization_timeout: int = 300,
) -> dict:
    """Join a multi-process sweep; returns ``{"process_id", "num_processes", "devices", "local_devices"}``.

    Give all three of ``coordinator`` (``HOST:PORT`` of process 0),
    ``num_processes`` and ``process_id``, or none under a launcher that
    ``jax.distributed`` detects (SLURM, Open MPI). On CPU the cross-process
    collectives are gloo's. Must run before JAX computes anything. A process
    that stops answering for ``heartbeat_timeout`` seconds makes the others
    fail (one line from the CLI) instead of waiting forever.
    """
    import jax

    check_arguments(coordinator, num_processes, process_id)
    if _STATE["initialized"]:
        return info()
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU devices' collectives (GPUs use NCCL)
    try:
        jax.distributed.initialize(
            coordinator,
            num_processes,
            process_id,
            heartbeat_timeout_seconds=heartbeat_timeout,
            initialization_timeout=initialization_timeout,
        )
    except (RuntimeError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"could not join the multi-process run at {coordinator or 'the launcher'}: {first}; start every process "
            "with the same --coordinator and --num-processes, process 0 first"
        ) from None
    _STATE["initialized"] = True
    return info()


def check_arguments(coordinator, num_processes, process_id) -> None:
    """One line unless the three are given together and make sense (or are all absent)."""
    given = [coordinator is not None, num_processes is not None, process_id is not None]
    check(
        all(given) or not any(given),
        "a multi-process run needs all of --coordinator HOST:PORT, --num-processes N and --process-id I "
        "(or none, under a launcher such as SLURM)",
    )
    if all(given):
        check(
            isinstance(num_processes, int) and num_processes >= 1,
            f"--num-processes must be >= 1, got {num_processes}",
        )
        check(
            isinstance(process_id, int) and 0 <= process_id < num_processes,
            f"--process-id must lie in [0, {num_processes - 1}] for {num_processes} processes, got {process_id}",
        )
        host, _, port = coordinator.rpartition(":")
        check(
            bool(host) and port.isdigit() and 0 < int(port) < 65536,
            f"--coordinator must be HOST:PORT (process 0's address and a free port), got {coordinator!r}",
        )


def info() -> dict:
    import jax

    return {
        "process_id": jax.process_index(),
        "num_processes": jax.process_count(),
        "devices": jax.device_count(),
        "local_devices": jax.local_device_count(),
    }


def is_primary() -> bool:
    """Whether this process writes results and checkpoint metadata (process 0; always true in one process)."""
    import jax

    return jax.process_index() == 0


def multi_process() -> bool:
    import jax

    return jax.process_count() > 1


def to_host(x) -> np.ndarray:
    """A NumPy copy of ``x`` on every process: gathered across processes where it is sharded over them."""
    import jax

    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        if x.sharding.is_fully_replicated:  # every process holds all of it
            return np.asarray(x.addressable_data(0))
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def tree_to_host(tree):
    """:func:`to_host` on every leaf."""
    import jax

    return jax.tree.map(to_host, tree)


def barrier(name: str) -> None:
    """Wait until every process reaches ``name`` (no-op in one process)."""
    if multi_process():
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
