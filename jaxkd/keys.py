"""Initialisation and data-order keys of every run of a sweep.

Seed ``s`` of a sweep draws its keys from ``split(key, S)[s]``, split once
more into an initialisation key and a data-order key
(:func:`seed_run_keys`), shared by every grid point: seed ``s`` starts from
the same parameters and sees the same batches under every condition, so
comparisons between grid points are paired. Explicit :class:`RunKeys` set
both per (seed, grid point) instead, for controls that share a teacher's
initialisation or data order.
"""

from __future__ import annotations

import dataclasses
import hashlib

import jax
import jax.numpy as jnp
import numpy as np

from jaxkd.errors import check


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

    @property
    def data_shared(self) -> bool:
        """Whether every grid point of a seed has the seed's data-order key (and so sees the same batches)."""
        d = np.asarray(jax.random.key_data(self.data))
        return bool(np.all(d == d[:, :1]))

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
