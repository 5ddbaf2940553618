"""Ensembles as artefacts: a sweep's final models saved, loaded and run on data.

An :class:`Ensemble` is M models of one architecture, stacked on a leading
member axis, with the model's spec, the input normalisation, one record per
member (seed, condition, grid point) and the fingerprint of the sweep that
produced it. ``save_ensemble`` writes an orbax checkpoint of the parameters
and BatchNorm state plus ``ensemble.json``; ``load_ensemble`` reads them back
bitwise. ``predict`` returns the logits and named features of every member
in fixed-size batches, vmapped over members; the analyses (agreement
metrics, the interaction tensor, attributions) read models through it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from jaxkd.data.augment import normalize
from jaxkd.errors import ConfigError, check
from jaxkd.evaluate import batched
from jaxkd.models import FunctionalModel, make_model
from jaxkd.teacher import normalisation

META = "ensemble.json"


@dataclasses.dataclass(frozen=True, eq=False)
class Ensemble:
    """M frozen models: leaves of ``params``/``rest`` have a leading member axis."""

    model: FunctionalModel
    params: Any
    rest: Any
    members: list[dict]
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    fingerprint: dict | None = None

    def __len__(self) -> int:
        return len(self.members)

    def select(self, index) -> Ensemble:
        """The sub-ensemble at member indices ``index`` (a list of ints or a boolean mask)."""
        index = np.flatnonzero(index) if np.asarray(index).dtype == bool else np.asarray(index, int)
        take = lambda t: jax.tree.map(lambda a: a[index], t)  # noqa: E731
        return dataclasses.replace(
            self, params=take(self.params), rest=take(self.rest), members=[self.members[i] for i in index]
        )


def from_sweep(
    result,
    trainer,
    conditions: list[str] | None = None,
    *,
    include_diverged: bool = False,
    model: str = "selected",
) -> Ensemble:
    """The student models of a finished sweep, one member per (seed, grid point), seed-major.

    ``model``: each run's validation-selected model (default: the one its
    summary reports) or its ``last``; every member records which, and the
    step it comes from. Diverged runs are left out unless ``include_diverged``.
    """
    s, g = result.diverged.shape
    conditions = conditions or [f"point{i}" for i in range(g)]
    check(len(conditions) == g, f"{len(conditions)} condition names for {g} grid points")
    keep = [(i, j) for i in range(s) for j in range(g) if include_diverged or not result.diverged[i, j]]
    check(keep, "every run of the sweep diverged; there is no ensemble to save")
    si, gi = (np.asarray(v) for v in zip(*keep))
    take = lambda t: jax.tree.map(lambda a: np.asarray(a)[si, gi], t)  # noqa: E731
    steps = result.selected_steps if model == "selected" else np.full(result.diverged.shape, result.steps[-1])
    members = [
        {
            "seed": int(i),
            "condition": conditions[j],
            "grid_point": int(j),
            "hparams": {k: float(v[j]) for k, v in result.grid.items()},
            "model": model,
            "step": int(steps[i, j]),
        }
        for i, j in keep
    ]
    mean, std = normalisation(trainer.mean, trainer.std)
    params, rest = result.model(model)
    return Ensemble(
        model=trainer.model,
        params=take(params),
        rest=take(rest),
        members=members,
        mean=mean,
        std=std,
        fingerprint=result.fingerprint,
    )


def _write(path: str, ensemble: Ensemble) -> None:
    os.makedirs(path, exist_ok=True)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(os.path.join(path, "arrays"), {"params": ensemble.params, "rest": ensemble.rest})
        ckptr.wait_until_finished()
    meta = {
        "model": ensemble.model.spec,
        "members": ensemble.members,
        "mean": ensemble.mean,
        "std": ensemble.std,
        "fingerprint": ensemble.fingerprint,
        "content_hash": content_hash(ensemble),
    }
    with open(os.path.join(path, META), "w") as f:
        json.dump(meta, f, indent=1)


def is_saved_ensemble(path: str) -> bool:
    """Whether ``path`` is a directory holding a saved jaxkd ensemble and nothing else."""
    return os.path.exists(os.path.join(path, META)) and set(os.listdir(path)) <= {META, "arrays"}


def save_ensemble(path: str, ensemble: Ensemble, *, replace: bool = False) -> str:
    """Write ``ensemble`` to directory ``path``; returns its absolute path.

    ``path`` must not exist or be empty; with ``replace=True`` it may also
    hold an ensemble saved before (and nothing else), which is replaced. The
    ensemble is written beside ``path`` and renamed into place, so an
    interrupted save leaves the old ensemble or the new one, never a mix.
    """
    import shutil
    import tempfile

    path = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(path) and os.listdir(path):
        ours = is_saved_ensemble(path)
        if not (replace and ours):
            raise ConfigError(
                f"{path} already exists and is not empty"
                + ("" if ours else " (and is not a saved jaxkd ensemble)")
                + "; choose another directory"
                + (" or pass --overwrite" if ours else "")
            )
    os.makedirs(os.path.dirname(path), exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".jaxkd-ensemble-", dir=os.path.dirname(path))
    try:
        _write(staging, ensemble)
        if os.path.isdir(path) and os.listdir(path):
            aside = tempfile.mkdtemp(prefix=".jaxkd-ensemble-old-", dir=os.path.dirname(path))
            os.rename(path, os.path.join(aside, "old"))
            os.rename(staging, path)
            shutil.rmtree(aside)
        else:
            if os.path.isdir(path):
                os.rmdir(path)  # empty
            os.rename(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def load_ensemble(path: str) -> Ensemble:
    """Read an ensemble written by :func:`save_ensemble`."""
    path = os.path.abspath(os.path.expanduser(path))
    try:
        with open(os.path.join(path, META)) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        raise ConfigError(f"{path} holds no readable jaxkd ensemble ({META} missing or damaged)") from None
    spec = meta["model"]
    model = make_model(
        spec["name"], spec["in_shape"], spec["num_classes"], spec["widths"], spec.get("dtype", "float32")
    )
    m = len(meta["members"])
    one = jax.eval_shape(model.init, jax.random.key(0))
    target = {"params": one[0], "rest": one[1]}
    target = jax.tree.map(lambda a: jax.ShapeDtypeStruct((m, *a.shape), a.dtype), target)
    with ocp.StandardCheckpointer() as ckptr:
        try:
            arrays = ckptr.restore(os.path.join(path, "arrays"), target)
        except Exception as err:
            raise ConfigError(f"the arrays of ensemble {path} are unreadable ({str(err)[:100]})") from None
    tup = lambda v: None if v is None else tuple(v)  # noqa: E731
    ensemble = Ensemble(
        model=model,
        params=arrays["params"],
        rest=arrays["rest"],
        members=meta["members"],
        mean=tup(meta["mean"]),
        std=tup(meta["std"]),
        fingerprint=meta["fingerprint"],
    )
    if meta.get("content_hash") != content_hash(ensemble):
        raise ConfigError(
            f"the arrays of ensemble {path} do not match the content hash recorded in {META} "
            "(changed or damaged since it was saved); save the model again"
        )
    return ensemble


def content_hash(ensemble: Ensemble) -> str:
    """SHA-256 of the model spec, the normalisation and every array: what ``load_ensemble`` verifies."""
    h = hashlib.sha256(json.dumps([ensemble.model.spec, ensemble.mean, ensemble.std]).encode())
    for leaf in jax.tree.leaves((ensemble.params, ensemble.rest)):
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def predict(ensemble: Ensemble, x, *, features=(), batch_size: int = 512) -> dict:
    """Logits and named features of every member on inputs ``x`` (stored form: uint8 or float).

    Returns ``{"logits": [M, N, C], "features": {name: [M, N, ...]}}``;
    inputs are normalised with the ensemble's mean/std, in eval mode, in
    batches of ``batch_size``, vmapped over members.
    """
    x = jnp.asarray(x)
    mean = None if ensemble.mean is None else jnp.asarray(ensemble.mean, jnp.float32)
    std = None if ensemble.std is None else jnp.asarray(ensemble.std, jnp.float32)
    names = tuple(features)
    spec = jax.eval_shape(
        lambda p, r, xb: ensemble.model.apply(p, r, xb, train=False)[1],
        *jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), (ensemble.params, ensemble.rest)),
        jax.ShapeDtypeStruct((1, *x.shape[1:]), jnp.float32),
    )
    for n in names:
        check(n in spec, f"the model has no feature {n!r}; it has: {', '.join(sorted(spec))}")

    def one_member(params, rest):
        def fn(i):
            logits, feats, _ = ensemble.model.apply(params, rest, normalize(x[i], mean, std), train=False)
            return logits, {n: feats[n] for n in names}

        return batched(fn, x.shape[0], batch_size)

    logits, feats = jax.jit(jax.vmap(one_member))(ensemble.params, ensemble.rest)
    return {"logits": logits, "features": feats}
