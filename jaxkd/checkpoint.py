"""Orbax checkpoints for sweeps: absolute paths, finished writes, keep-N, a fingerprint.

A checkpoint directory holds numbered steps (orbax) plus ``fingerprint.json``,
the description of the run that wrote it; resuming with a different
description is refused, so a resumed sweep can only continue itself.
"""

from __future__ import annotations

import json
import os
import shutil

import orbax.checkpoint as ocp

from jaxkd.errors import ConfigError

FINGERPRINT = "fingerprint.json"


class SweepCheckpointer:
    """Save/restore a pytree at chunk boundaries.

    Args:
      directory: where checkpoints live (made absolute: orbax requires it).
      fingerprint: JSON-serialisable description of the run.
      resume: keep existing checkpoints (after checking the fingerprint);
        otherwise the directory is cleared, as the run starts over.
      max_to_keep: number of most recent checkpoints kept.
    """

    def __init__(self, directory: str, fingerprint: dict, *, resume: bool, max_to_keep: int = 2):
        self.directory = os.path.abspath(os.path.expanduser(directory))
        path = os.path.join(self.directory, FINGERPRINT)
        fingerprint = json.loads(json.dumps(fingerprint))
        if resume and os.path.exists(path):
            try:
                with open(path) as f:
                    saved = json.load(f)
            except (OSError, ValueError):
                raise ConfigError(
                    f"checkpoint fingerprint {path} is unreadable; delete {self.directory} "
                    "or run without --resume"
                ) from None
            if saved != fingerprint:
                raise ConfigError(
                    f"checkpoints in {self.directory} were written by a different configuration; "
                    "run without --resume to start over, or use another --out"
                )
        elif not resume and os.path.isdir(self.directory):
            shutil.rmtree(self.directory)
        os.makedirs(self.directory, exist_ok=True)
        with open(path, "w") as f:
            json.dump(fingerprint, f, indent=1, sort_keys=True)
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, tree) -> None:
        self._manager.save(step, args=ocp.args.StandardSave(tree))
        self._manager.wait_until_finished()

    def restore(self, step: int, target):
        """Restore ``step`` into the structure/shardings of ``target`` (abstract arrays)."""
        try:
            return self._manager.restore(step, args=ocp.args.StandardRestore(target))
        except Exception as err:  # orbax raises many types for damaged files
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(
                f"checkpoint step {step} in {self.directory} is unreadable ({first[:120]}); "
                "delete that directory or run without --resume"
            ) from None

    def close(self) -> None:
        self._manager.close()
