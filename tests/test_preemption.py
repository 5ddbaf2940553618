"""Preemption: a sweep SIGKILLed at several points, each resumed, ends bitwise equal to an uninterrupted one.

One checkpoint directory, four processes: the first is killed right after
its first checkpoint; the second while orbax has written a step into its
temporary directory but not yet renamed it into place; the third after a
step is in place but while ``checksums.json`` is half written; the fourth
resumes (falling back over the step the third left without a checksum) and
finishes. Each process holds still at its kill point (a hook in the child
script, never in jaxkd), so the kill lands exactly there. Then the newest
step is truncated by hand, and resuming uses the one before it.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import warnings

import jax
import numpy as np
import pytest

from jaxkd.config import EvalConfig, ModelConfig, RunConfig
from jaxkd.recipes import RecipeConfig
from jaxkd.sweep import run_sweep
from jaxkd.train import make_train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = RunConfig(
    model=ModelConfig("mlp", (16,)), recipe=RecipeConfig(steps=60, batch_size=32), eval=EvalConfig(every=10)
)
GRID = {"learning_rate": [1e-3, 3e-3]}
SWEEP = {"n_seeds": 2, "chunk_steps": 10, "progress": False}

CHILD = r"""
import json, sys, time
import jax, numpy as np
import jaxkd.checkpoint as ck, jaxkd.sweep as sw
from orbax.checkpoint._src.path import atomicity
from jaxkd.config import EvalConfig, ModelConfig, RunConfig
from jaxkd.data import load_digits
from jaxkd.recipes import RecipeConfig
from jaxkd.train import make_train

ckpt_dir, out, pause = sys.argv[1:4]
where, _, at = pause.partition(":")

def hold(what):  # the parent SIGKILLs the process while it sleeps here
    print("PAUSED", what, flush=True)
    time.sleep(600)

# The sources' hash is part of the fingerprint; pinned, so that an edit elsewhere in the checkout while the test
# runs does not refuse the resume.
sw.software = lambda: {"pinned": "for the test"}
real_resume = sw._resume
def resume(*a):
    done, states, history = real_resume(*a)
    print("RESUMED", done, flush=True)
    return done, states, history
sw._resume = resume

if where == "saved":  # a whole checkpoint written and recorded
    real_save = ck.SweepCheckpointer.save
    def save(self, step, tree):
        real_save(self, step, tree)
        if step == int(at):
            hold(f"after saving step {step}")
    ck.SweepCheckpointer.save = save
elif where == "rename":  # orbax has written the step into its temporary directory; the rename is next
    real_finalize = atomicity.AtomicRenameTemporaryPath.finalize
    async def finalize(self):
        if self._final_path.name == at:
            hold(f"before renaming step {at} into place")
        await real_finalize(self)
    atomicity.AtomicRenameTemporaryPath.finalize = finalize
elif where == "checksums":  # the step is in place; its checksum entry is half written
    real_dump = json.dump
    def dump(obj, f, **kw):
        if "checksums.json" in str(getattr(f, "name", "")) and at in obj:
            text = json.dumps(obj, **kw)
            f.write(text[: len(text) // 2])
            f.flush()
            hold(f"half way through recording step {at}'s checksum")
        real_dump(obj, f, **kw)
    json.dump = dump

cfg = RunConfig(model=ModelConfig("mlp", (16,)), recipe=RecipeConfig(steps=60, batch_size=32),
                eval=EvalConfig(every=10))
trainer = make_train(cfg, load_digits())
res = sw.run_sweep(trainer, jax.random.key(3), 2, {"learning_rate": [1e-3, 3e-3]}, chunk_steps=10,
                   checkpoint_dir=ckpt_dir, resume=True, progress=False)
np.savez(out, **{"h/" + k: v for k, v in res.history.items()},
         **{f"s/{i}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(res.states))})
print("DONE", flush=True)
"""


def _child(tmp_path, pause: str, name: str):
    """Run the child until it pauses (then SIGKILL it) or finishes; returns ``(stdout lines, stderr text)``."""
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "xla-cache"),  # the four children compile once
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }
    err_path = tmp_path / f"{name}.stderr"
    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(tmp_path / "ck"), str(tmp_path / "out.npz"), pause],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
        watchdog = threading.Timer(240, proc.kill)
        watchdog.start()
        lines = []
        try:
            for line in proc.stdout:
                lines.append(line.strip())
                if line.startswith("PAUSED"):
                    os.kill(proc.pid, signal.SIGKILL)
                    break
            rc = proc.wait()
        finally:
            watchdog.cancel()
            proc.stdout.close()
    stderr = err_path.read_text()
    if lines and lines[-1].startswith("PAUSED"):
        assert rc == -signal.SIGKILL, (rc, stderr[-2000:])
    else:
        assert rc == 0 and lines[-1] == "DONE", (rc, lines, stderr[-3000:])
    return lines, stderr


def _resumed_from(lines) -> int:
    return int(next(line for line in lines if line.startswith("RESUMED")).split()[1])


def _assert_same(result, saved: dict):
    for k, v in result.history.items():
        assert np.array_equal(saved[f"h/{k}"], v), k
    leaves = jax.tree.leaves(result.states)
    assert len([k for k in saved if k.startswith("s/")]) == len(leaves)
    for i, leaf in enumerate(leaves):
        assert np.array_equal(saved[f"s/{i}"], np.asarray(leaf)), i


def test_sigkill_at_four_points_then_resume_is_bitwise(digits, tmp_path, monkeypatch):
    monkeypatch.setattr("jaxkd.sweep.software", lambda: {"pinned": "for the test"})  # as in the children
    ck = tmp_path / "ck"
    steps = lambda: sorted(int(d) for d in os.listdir(ck) if d.isdigit())  # noqa: E731

    lines, _ = _child(tmp_path, "saved:10", "1")
    assert _resumed_from(lines) == 0 and lines[-1] == "PAUSED after saving step 10"
    assert steps() == [10]

    lines, _ = _child(tmp_path, "rename:30", "2")
    assert _resumed_from(lines) == 10
    assert steps() == [10, 20]  # step 30 exists only as orbax's temporary directory
    assert any(d.startswith("30.orbax-checkpoint-tmp") for d in os.listdir(ck)), os.listdir(ck)

    lines, _ = _child(tmp_path, "checksums:40", "3")
    assert _resumed_from(lines) == 20
    assert steps() == [30, 40]
    # The file in use is whole and does not list step 40; the half-written one never replaced it.
    assert sorted(json.loads((ck / "checksums.json").read_text())) == ["20", "30"]
    with pytest.raises(ValueError):
        json.loads((ck / "checksums.json.tmp").read_text())

    lines, stderr = _child(tmp_path, "none", "4")
    assert _resumed_from(lines) == 30  # step 40 was in place but never recorded
    warned = [line for line in stderr.splitlines() if "has no checksum" in line]
    assert len(warned) == 1 and "step 40 has no checksum (its save was cut off); resuming from step 30" in warned[0]
    assert not [d for d in os.listdir(ck) if "orbax-checkpoint-tmp" in d]
    assert steps() == [50, 60]

    trainer = make_train(CFG, digits)
    full = run_sweep(trainer, jax.random.key(3), grid=GRID, **SWEEP)
    with np.load(tmp_path / "out.npz") as saved:
        _assert_same(full, dict(saved))

    # A truncated newest step (a disk that filled up, a copy cut short): reported, the step before used, rewritten.
    data = [os.path.join(r, f) for r, _, fs in os.walk(ck / "60") for f in fs]
    target = max(data, key=os.path.getsize)
    with open(target, "r+b") as f:
        f.truncate(os.path.getsize(target) // 2)
    with pytest.warns(RuntimeWarning, match=r"checkpoint step 60 unreadable .*; resuming from step 50$"):
        again = run_sweep(trainer, jax.random.key(3), grid=GRID, checkpoint_dir=str(ck), resume=True, **SWEEP)
    _assert_same(again, {**{f"h/{k}": v for k, v in full.history.items()}, **_leaves(full)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # step 60 was written again: it now resumes without complaint
        last = run_sweep(trainer, jax.random.key(3), grid=GRID, checkpoint_dir=str(ck), resume=True, **SWEEP)
    _assert_same(last, {**{f"h/{k}": v for k, v in full.history.items()}, **_leaves(full)})
    assert sorted(json.loads((ck / "checksums.json").read_text())) == ["50", "60"]


def _leaves(result) -> dict:
    return {f"s/{i}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(result.states))}
