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
import jax.numpy as jnp
import numpy as np

from jaxkd.models import FunctionalModel


@dataclasses.dataclass(frozen=True, eq=False)
class Teacher:
    """A frozen model: ``model`` with ``params`` and BatchNorm state ``rest``.

    With ``per_seed=True`` every leaf of ``params``/``rest`` has a leading
    seed axis, which must match the sweep's number of seeds. ``mean``/``std``:
    the per-channel input normalisation the teacher was trained with (None:
    none) when ``normalisation_known``; a teacher built by hand from
    parameters leaves it unknown, and is taken to match the student's data.
    """

    model: FunctionalModel
    params: Any
    rest: Any
    per_seed: bool = False
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    normalisation_known: bool = False
    classes: tuple[int, ...] | None = None

    @property
    def num_classes(self) -> int:
        """The number of logits the teacher hands over (the subtask's size for a subtask teacher)."""
        return self.model.num_classes if self.classes is None else len(self.classes)

    def subtask(self, classes) -> Teacher:
        """This teacher restricted to ``classes`` without retraining: its logits are those columns, in that order.

        SubDistill's ``SubclassSelection``: a teacher trained on all classes
        distils into a student of the subtask ``classes``, whose data is
        relabelled ``0..C-1`` in the same order (``Dataset.subset_classes``).
        Features are the full model's. Restricting a subtask teacher again
        selects among its subtask's classes.
        """
        from jaxkd.errors import check

        classes = tuple(int(c) for c in classes)
        n = self.num_classes
        check(
            len(classes) >= 1 and len(set(classes)) == len(classes) and all(0 <= c < n for c in classes),
            f"a subtask needs distinct classes in 0..{n - 1} of the teacher's {n}, got {classes}",
        )
        full = classes if self.classes is None else tuple(self.classes[c] for c in classes)
        return dataclasses.replace(self, classes=full)

    def select(self, logits, inputs=None):
        """The subtask's columns of the model's logits (all of them for a full teacher).

        ``inputs``: the teacher's arrays (:attr:`inputs`); a shared subtask
        teacher reads its column indices from them, so that programs for
        different subtasks of one teacher lower to the same HLO (and the
        second reuses the first's compilation from XLA's persistent cache).
        """
        if self.classes is None:
            return logits
        idx = inputs["classes"] if inputs is not None and "classes" in inputs else np.asarray(self.classes)
        return jnp.take(logits, idx, axis=-1)

    @property
    def inputs(self) -> dict:
        """The arrays a program reads: parameters and state, and a shared subtask teacher's class indices."""
        out = {"params": self.params, "rest": self.rest}
        if self.classes is not None and not self.per_seed:
            out["classes"] = np.asarray(self.classes, np.int32)
        return out

    @property
    def n_seeds(self) -> int | None:
        return int(jax.tree.leaves(self.params)[0].shape[0]) if self.per_seed else None

    def apply(self, inputs, x):
        """``(logits, features)`` in eval mode; gradients never reach the teacher."""
        params, rest = jax.lax.stop_gradient((inputs["params"], inputs["rest"]))
        logits, feats, _ = self.model.apply(params, rest, x, train=False)
        return self.select(logits, inputs), feats

    def features_and_gradients(self, inputs, x, names, explained):
        """``(logits, features, grads)`` in eval mode: the gradient of ``Σ_b explained(logits)_b`` with respect
        to each named feature (:func:`jaxkd.models.probe.feature_gradients`), logits the subtask's."""
        from jaxkd.models.probe import feature_gradients

        params, rest = jax.lax.stop_gradient((inputs["params"], inputs["rest"]))
        logits, feats, grads = feature_gradients(
            self.model, params, rest, x, names, lambda z: explained(self.select(z, inputs))
        )
        return self.select(logits, inputs), feats, grads

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
            return cls(
                ensemble.model, take(ensemble.params), take(ensemble.rest), **_known(ensemble.mean, ensemble.std)
            )
        return cls(ensemble.model, ensemble.params, ensemble.rest, per_seed=True, **_known(ensemble.mean, ensemble.std))

    def content_hash(self) -> str:
        """SHA-256 of the parameters, state and input normalisation: the teacher's identity in fingerprints."""
        norm = (self.mean, self.std) if self.normalisation_known else "unknown"
        subtask = "" if self.classes is None else f":classes={list(self.classes)}"
        h = hashlib.sha256(f"{self.model.name}:{self.per_seed}:{norm}{subtask}".encode())
        for leaf in jax.tree.leaves({"params": self.params, "rest": self.rest}):
            a = np.ascontiguousarray(np.asarray(leaf))
            h.update(f"{a.dtype}{a.shape}".encode())
            h.update(a.tobytes())
        return h.hexdigest()


def _known(mean, std) -> dict:
    return {"mean": mean, "std": std, "normalisation_known": True}


def normalisation(mean, std) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """Per-channel mean and std as tuples of floats (None stays None): how teachers and ensembles store them."""
    tup = lambda v: None if v is None else tuple(float(x) for x in np.atleast_1d(np.asarray(v)))  # noqa: E731
    return tup(mean), tup(std)


def teacher_inputs(teacher: Teacher, live: bool, data: dict, prepare, splits, batch_size: int) -> dict:
    """The teacher's arrays for the step: its parameters if live, and its eval-mode logits on ``splits``."""
    from jaxkd.evaluate import batched

    def logits_of(inputs):
        out = {}
        for split in splits:
            x = data[f"x_{split}"]
            out[split] = batched(lambda i, x=x: teacher.apply(inputs, prepare(x[i]))[0], x.shape[0], batch_size)
        return out

    fn = jax.jit(jax.vmap(logits_of) if teacher.per_seed else logits_of)
    tin = {"logits": fn(teacher.inputs)}
    if live:
        tin.update(teacher.inputs)
    return tin


def save_teacher(
    path: str, teacher: Teacher, *, fingerprint: dict | None = None, replace: bool = False, member: dict | None = None
) -> str:
    """Save a shared teacher as a one-member ensemble at ``path``; returns its absolute path.

    ``member`` describes the saved model (e.g. ``{"model": "selected", "step": 180}``).
    The ensemble is written beside ``path`` and renamed into place, so an
    interrupted save leaves the old teacher or the new one. ``replace=True``
    replaces a teacher saved there before (a directory holding a jaxkd
    ensemble and nothing else); any other non-empty directory is refused.
    """
    from jaxkd.ensemble import Ensemble, save_ensemble
    from jaxkd.errors import ConfigError

    if teacher.per_seed:
        raise ConfigError("save_teacher saves a shared teacher; save a per-seed teacher as an ensemble")
    expand = lambda t: jax.tree.map(lambda a: np.asarray(a)[None], t)  # noqa: E731
    ens = Ensemble(
        teacher.model,
        expand(teacher.params),
        expand(teacher.rest),
        members=[
            {
                "seed": 0,
                "condition": "teacher",
                **(member or {}),
                **({} if teacher.classes is None else {"classes": list(teacher.classes)}),
            }
        ],
        mean=teacher.mean,
        std=teacher.std,
        fingerprint=fingerprint,
    )
    return save_ensemble(path, ens, replace=replace)


def load_teacher(path: str, model: FunctionalModel | None = None) -> Teacher:
    """A teacher saved by :func:`save_teacher` (content hash verified); ``model``: the architecture expected."""
    from jaxkd.ensemble import load_ensemble
    from jaxkd.errors import check

    ens = load_ensemble(path)
    if model is not None:
        check(
            ens.model.spec == model.spec,
            f"the teacher saved in {path} is {ens.model.spec['name']} {ens.model.spec['in_shape']}, "
            f"not the expected {model.name} {model.in_shape}",
        )
    teacher = Teacher.from_ensemble(ens)
    classes = ens.members[0].get("classes") if ens.members else None
    return teacher if classes is None else teacher.subtask(classes)
