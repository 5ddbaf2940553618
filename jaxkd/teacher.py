"""Frozen teachers: a model with its parameters, applied in eval mode, never differentiated.

A :class:`Teacher` is one model (``per_seed=False``: every student seed
distils from it) or a stack of models with a leading seed axis
(``per_seed=True``: student seed ``s`` distils from teacher ``s``). The
trainer either runs it live inside the step, on the same augmented batch as
the student, or caches its logits on each split when the inputs are not
augmented and no term reads its features (the fast path; same numbers).
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import jax
import numpy as np

from jaxkd.models import FunctionalModel


@dataclasses.dataclass(frozen=True, eq=False)
class Teacher:
    """A frozen model: ``model`` with ``params`` and BatchNorm state ``rest``.

    With ``per_seed=True`` every leaf of ``params``/``rest`` has a leading
    seed axis, which must match the sweep's number of seeds.
    """

    model: FunctionalModel
    params: Any
    rest: Any
    per_seed: bool = False

    @property
    def inputs(self) -> dict:
        return {"params": self.params, "rest": self.rest}

    @property
    def n_seeds(self) -> int | None:
        return int(jax.tree.leaves(self.params)[0].shape[0]) if self.per_seed else None

    def apply(self, inputs, x):
        """``(logits, features)`` in eval mode; gradients never reach the teacher."""
        params, rest = jax.lax.stop_gradient((inputs["params"], inputs["rest"]))
        logits, feats, _ = self.model.apply(params, rest, x, train=False)
        return logits, feats

    @classmethod
    def from_ensemble(cls, ensemble, *, per_seed: bool = False) -> Teacher:
        """A saved ensemble as a teacher: its only member, or (``per_seed``) all members, one per student seed."""
        from jaxkd.errors import check

        if not per_seed:
            check(
                len(ensemble) == 1,
                f"a shared teacher is one model, but the ensemble holds {len(ensemble)}; "
                "set per_seed_teacher=true to pair member s with student seed s",
            )
            take = lambda t: jax.tree.map(lambda a: a[0], t)  # noqa: E731
            return cls(ensemble.model, take(ensemble.params), take(ensemble.rest))
        return cls(ensemble.model, ensemble.params, ensemble.rest, per_seed=True)

    def content_hash(self) -> str:
        """SHA-256 of the parameters and state: the teacher's identity in fingerprints."""
        h = hashlib.sha256(f"{self.model.name}:{self.per_seed}".encode())
        for leaf in jax.tree.leaves(self.inputs):
            a = np.ascontiguousarray(np.asarray(leaf))
            h.update(f"{a.dtype}{a.shape}".encode())
            h.update(a.tobytes())
        return h.hexdigest()
