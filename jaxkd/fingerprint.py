"""A run's fingerprint: everything that defines what a run computes, as JSON.

Checkpoints store it and ``--resume`` refuses a directory whose fingerprint
differs, naming the field. A run is defined by its configuration, its data
(content hash and split sizes), its teacher (content hash, normalisation,
live or cached), its keys and grid, and the program that computes it: the
jaxkd version, commit and a hash of its sources (uncommitted edits count),
the jax/jaxlib versions, the number of devices (which changes the seed
padding) and the sweep's ``vmap_width``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
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


@functools.cache
def source_hash() -> str:
    """SHA-256 (16 hex digits) of the Python sources of jaxkd, theory and experiments: uncommitted edits count."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    h = hashlib.sha256()
    for package in ("jaxkd", "theory", "experiments"):
        for folder, dirs, files in sorted(os.walk(os.path.join(root, package))):
            dirs.sort()
            for name in sorted(f for f in files if f.endswith(".py")):
                path = os.path.join(folder, name)
                h.update(os.path.relpath(path, root).encode())
                with open(path, "rb") as f:
                    h.update(f.read())
    return h.hexdigest()[:16]


def software() -> dict:
    """What defines the compiled program: jaxkd's version, commit and sources, the jax and jaxlib versions."""
    import jaxlib

    import jaxkd

    return {
        "jaxkd": jaxkd.__version__,
        "jaxkd_commit": git_commit(),
        "jaxkd_sources": source_hash(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
    }


def run_fingerprint(config, dataset, sizes: dict[str, int], teacher, live: bool) -> dict:
    """The part of a fingerprint a :class:`jaxkd.train.Trainer` knows: config, data and teacher.

    With user plugins or registrations in the process, their provenance too
    (:func:`jaxkd.plugins.provenance`: files with content hashes, registered
    objects with source hashes), so a resume after a user's method changed is
    refused; without them the fingerprint is as before.
    """
    from jaxkd.plugins import provenance

    return {
        **provenance(),
        "config": dataclasses.asdict(config),
        "dataset": {"name": dataset.name, "sizes": sizes, "hash": dataset.content_hash()},
        "teacher": None
        if teacher is None
        else {
            "model": teacher.model.spec,
            "per_seed": teacher.per_seed,
            "live": bool(live),
            "classes": None if teacher.classes is None else list(teacher.classes),
            "hash": teacher.content_hash(),
        },
    }
