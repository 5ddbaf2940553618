"""Orbax checkpoints for sweeps: absolute paths, finished writes, keep-N, a fingerprint, checksums.

A checkpoint directory holds numbered steps (orbax), ``fingerprint.json``
(everything that defines the run that wrote it: config, keys, dataset and
teacher identity) and ``checksums.json`` (a SHA-256 of each saved step).
Resuming with a different fingerprint is refused, naming the most telling
field that differs (:func:`mismatch`: another experiment, then another
installation or device count, then any other field); a step whose checksum
does not match is skipped for the one before.

Surviving SIGKILL. Orbax writes a step into a temporary directory and
renames it into place when complete (temporary directories a killed writer
left are removed when the next checkpointer opens the directory). A step
counts as saved only once ``checksums.json`` lists it, and that entry is
written after the step's files are flushed to disk (``fsync``); jaxkd's own
JSON files are written whole to a temporary file, flushed, and renamed over
the old one. A kill at any point therefore leaves the latest listed step
intact, and a later step that is unlisted (its save was cut off), unreadable
(truncated) or fails its checksum is reported in one warning line, removed
(so that it is written again), and the step before it is used.

The checkpointer never deletes a directory it did not create: it refuses a
non-empty directory without a jaxkd fingerprint, and replaces an earlier
sweep's checkpoints only with ``overwrite=True`` (and then only the files it
writes itself).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxkd.distributed import barrier, is_primary
from jaxkd.errors import ConfigError
from jaxkd.outputs import fsync_dir

FINGERPRINT = "fingerprint.json"
CHECKSUMS = "checksums.json"


def tree_checksum(tree) -> str:
    """SHA-256 over the leaves' dtypes, shapes and bytes (host copies)."""
    h = hashlib.sha256()
    from jaxkd.distributed import to_host

    for leaf in jax.tree.leaves(tree):
        a = np.ascontiguousarray(to_host(leaf))  # gathered from every process in a multi-process sweep
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def first_difference(saved, current, path: str = "") -> str | None:
    """Dotted path of the first field where two JSON-like trees differ (None if equal)."""
    if isinstance(saved, dict) and isinstance(current, dict):
        for k in sorted(set(saved) | set(current), key=str):
            if k not in saved or k not in current:
                return f"{path}{k}"
            d = first_difference(saved[k], current[k], f"{path}{k}.")
            if d is not None:
                return d
        return None
    return None if saved == current else path.rstrip(".") or "(root)"


# Fields that say the checkpoints are fine but this machine or installation differs, most telling first.
SAME_SETUP = ("versions", "n_devices", "vmap_width", "compiler_options", "conv_paths", "shared_teacher_pass")


def _at(tree, path: str):
    for part in path.split(".") if path != "(root)" else ():
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


def _shown(value) -> str:
    return "none" if value is None else json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def mismatch(saved: dict, current: dict, directory: str) -> str | None:
    """Why checkpoints with fingerprint ``saved`` cannot resume the run ``current`` (None: they can).

    The most meaningful difference is named first: another experiment, then
    the installation or machine (``versions``, ``n_devices``, ``vmap_width``:
    "resuming needs the same ...", the checkpoints are not damaged), then the
    first other field that differs.
    """
    if isinstance(saved, dict) and saved.get("experiment") != current.get("experiment"):
        if "experiment" in saved and "experiment" in current:
            return (
                f"{directory} holds checkpoints of experiment {saved['experiment']}, not {current['experiment']}; "
                "choose another --out or pass --overwrite"
            )
    for field in SAME_SETUP:
        if isinstance(saved, dict) and field in saved and field in current:
            path = first_difference(saved[field], current[field], f"{field}.")
            if path is not None:
                return (
                    f"resuming needs the same {path}: saved {_shown(_at(saved, path))}, now "
                    f"{_shown(_at(current, path))} (the checkpoints in {directory} are intact); resume where "
                    "they were written, or pass --overwrite to start over"
                )
    path = first_difference(saved, current)
    if path is None:
        return None
    if path == "(root)":
        return f"{directory}/{FINGERPRINT} is not a jaxkd fingerprint; run with --overwrite to start over"
    return (
        f"checkpoints in {directory} were written by a different run ({path} differs: saved "
        f"{_shown(_at(saved, path))}, now {_shown(_at(current, path))}); run with --overwrite to start over, "
        "or use another --out"
    )


def write_json_atomic(path: str, obj, **dump_kwargs) -> None:
    """Write ``obj`` as JSON to ``path`` so that a kill leaves the old file or the new one, never a part.

    Written to ``path + ".tmp"``, flushed to disk, renamed over ``path``; the
    rename is then flushed by syncing the directory.
    """
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, **dump_kwargs)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(path))


def fsync_tree(path: str) -> None:
    """Flush every file and directory under ``path`` to disk (orbax renames a step into place but never syncs it)."""
    for root, _, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(root)
    fsync_dir(os.path.dirname(path))


def _is_step_dir(name: str) -> bool:
    return name.isdigit() or (name.split(".")[0].isdigit() and "orbax-checkpoint-tmp" in name)


class SweepCheckpointer:
    """Save/restore a pytree at chunk boundaries.

    Args:
      directory: where checkpoints live (made absolute: orbax requires it).
      fingerprint: JSON-serialisable description of the run.
      resume: continue from existing checkpoints (after checking the fingerprint).
      overwrite: without ``resume``, replace an earlier sweep's checkpoints.
      max_to_keep: number of most recent checkpoints kept.
    """

    def __init__(
        self, directory: str, fingerprint: dict, *, resume: bool, overwrite: bool = False, max_to_keep: int = 2
    ):
        self.directory = os.path.abspath(os.path.expanduser(directory))
        path = os.path.join(self.directory, FINGERPRINT)
        fingerprint = json.loads(json.dumps(fingerprint))
        if os.path.exists(self.directory) and not os.path.isdir(self.directory):
            raise ConfigError(f"checkpoint path {self.directory} is a file; choose another directory")
        existing = os.listdir(self.directory) if os.path.isdir(self.directory) else []
        if existing and not os.path.exists(path):
            raise ConfigError(
                f"{self.directory} is not empty and holds no jaxkd checkpoint; choose an empty or new directory"
            )
        if existing and resume:
            try:
                with open(path) as f:
                    saved = json.load(f)
            except (OSError, ValueError):
                raise ConfigError(
                    f"checkpoint fingerprint {path} is unreadable; run with --overwrite "
                    "to start over, or use another --out"
                ) from None
            problem = mismatch(saved, fingerprint, self.directory)
            if problem is not None:
                raise ConfigError(problem)
        elif existing:
            if not overwrite:
                raise ConfigError(
                    f"{self.directory} holds checkpoints of an earlier sweep; pass --resume to "
                    "continue it or --overwrite to replace it"
                )
            if is_primary():  # one process changes the directory; the others have checked it as it was
                for name in existing:  # only what this class writes
                    if _is_step_dir(name) or name.removesuffix(".tmp") in (FINGERPRINT, CHECKSUMS):
                        target = os.path.join(self.directory, name)
                        shutil.rmtree(target) if os.path.isdir(target) else os.remove(target)
        barrier("jaxkd-checkpoint-checked")
        if is_primary():
            os.makedirs(self.directory, exist_ok=True)
            write_json_atomic(path, fingerprint, indent=1, sort_keys=True)
        barrier("jaxkd-checkpoint-ready")
        self._sums_path = os.path.join(self.directory, CHECKSUMS)
        self._sums = self._read_sums()
        self._manager = ocp.CheckpointManager(  # removes the temporary step directories of a killed writer
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True, cleanup_tmp_directories=True),
        )

    def _read_sums(self) -> dict:
        try:
            with open(self._sums_path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, tree) -> None:
        """Save ``tree`` as ``step``: orbax's atomic write, flushed to disk, then its checksum recorded."""
        self._manager.save(step, args=ocp.args.StandardSave(tree))
        self._manager.wait_until_finished()
        fsync_tree(os.path.join(self.directory, str(step)))
        kept = {str(s) for s in self._manager.all_steps()}
        self._sums = {k: v for k, v in self._sums.items() if k in kept}
        self._sums[str(step)] = tree_checksum(tree)
        if is_primary():  # orbax wrote each process's shards; the step's checksum is written once
            write_json_atomic(self._sums_path, self._sums, indent=1)  # the step counts from here on
        barrier(f"jaxkd-checkpoint-{step}")

    def restore(self, step: int, target):
        """Restore ``step`` into ``target(step)``, the structure/shardings of abstract arrays.

        Returns ``(step_restored, tree)``.

        A step that has no checksum (its save was cut off), cannot be read or
        whose checksum differs is reported in one warning line and the
        previous kept step is tried; the steps skipped are removed, so that
        resuming writes them again. With none left, one ``ConfigError``.
        """
        problems, skipped = [], []
        for s in sorted((s for s in self._manager.all_steps() if s <= step), reverse=True):
            skipped.append(s)
            if str(s) not in self._sums:
                problems.append(f"step {s} has no checksum (its save was cut off)")
                continue
            try:
                tree = self._manager.restore(s, args=ocp.args.StandardRestore(target(s)))
            except Exception as err:  # orbax raises many types for damaged files
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                problems.append(f"step {s} unreadable ({first[:100]})")
                continue
            if self._sums.get(str(s)) != tree_checksum(tree):
                problems.append(f"step {s} fails its checksum")
                continue
            if problems:
                for bad in skipped[:-1]:  # rewritten when the resumed run gets there
                    self._manager.delete(bad)
                warnings.warn(f"checkpoint {'; '.join(problems)}; resuming from step {s}", RuntimeWarning, stacklevel=2)
            return s, tree
        raise ConfigError(
            f"checkpoints in {self.directory} are unreadable or damaged ({'; '.join(problems)}); "
            "run with --overwrite to start over"
        )

    def close(self) -> None:
        self._manager.close()
