"""A run's fingerprint: everything that defines what a run computes, as JSON.

Checkpoints store it and ``--resume`` refuses a directory whose fingerprint
differs, naming the field. A run is defined by its configuration, its data
(content hash and split sizes), its teacher (content hash, normalisation,
live or cached), its keys and grid, and the program that computes it: the
jaxkd version and commit, the jax/jaxlib versions, the number of devices
(which changes the seed padding) and the sweep's ``vmap_width``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import subprocess

import jax


@functools.cache
def git_commit() -> str | None:
    """The commit of the jaxkd checkout this code runs from (None outside a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=os.path.dirname(os.path.abspath(__file__)),
        ).stdout.strip()
    except Exception:
        return None
    return out or None


def software() -> dict:
    """The versions that define the compiled program: jaxkd (and its commit), jax, jaxlib."""
    import jaxlib

    import jaxkd

    return {
        "jaxkd": jaxkd.__version__,
        "jaxkd_commit": git_commit(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
    }


def run_fingerprint(config, dataset, sizes: dict[str, int], teacher, live: bool) -> dict:
    """The part of a fingerprint a :class:`jaxkd.train.Trainer` knows: config, data and teacher."""
    return {
        "config": dataclasses.asdict(config),
        "dataset": {"name": dataset.name, "sizes": sizes, "hash": dataset.content_hash()},
        "teacher": None
        if teacher is None
        else {
            "model": teacher.model.spec,
            "per_seed": teacher.per_seed,
            "live": bool(live),
            "hash": teacher.content_hash(),
        },
    }
