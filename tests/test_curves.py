"""Training curves (jaxkd.curves): TensorBoard event files read back and compared with the sweep's history."""

import os
import subprocess
import sys
import types
from collections import Counter

import jax
import numpy as np
import pytest

from jaxkd import curves
from jaxkd.config import EvalConfig, ModelConfig, RunConfig
from jaxkd.errors import ConfigError
from jaxkd.program import SweepProgram
from jaxkd.recipes import RecipeConfig
from jaxkd.sweep import run_sweep
from jaxkd.train import make_train

CFG = RunConfig(
    model=ModelConfig("mlp", (16,)), recipe=RecipeConfig(steps=60, batch_size=32), eval=EvalConfig(every=20)
)
GRID = {"learning_rate": [1e-3, 3e-3]}
NAMES = ["slow lr", "fast/lr"]  # a space and a slash: both made filesystem-safe
SAFE = ["slow_lr", "fast_lr"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def trainer(digits):
    return make_train(CFG, digits)


def _sweep(trainer, **kw):
    return run_sweep(trainer, jax.random.key(0), 3, GRID, chunk_steps=20, progress=False, **kw)


def _runs(tb_root):
    """Relative paths of every folder holding event files."""
    return sorted(
        os.path.relpath(d, tb_root) for d, _, files in os.walk(tb_root) if any(f.startswith("events.") for f in files)
    )


def _open_event_files():
    """Event files this process holds open (Linux ``/proc``; empty elsewhere)."""
    fd_dir = "/proc/self/fd"
    if not os.path.isdir(fd_dir):
        return []
    out = []
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:  # closed meanwhile
            continue
        if "tfevents" in target:
            out.append(target)
    return out


def _assert_curves_equal_history(res, tb_root, desc, names):
    """Every (seed, grid point, metric, step) read back from the event files equals the history (float32)."""
    for g, cond in enumerate(names):
        for s in range(res.n_seeds):
            scalars = curves.read_scalars(os.path.join(tb_root, desc, cond, f"seed{s}"))
            assert set(scalars) == set(res.history)
            for metric, hist in res.history.items():
                steps, values = zip(*scalars[metric])
                np.testing.assert_array_equal(steps, res.steps, err_msg=f"{cond}/seed{s} {metric}")
                np.testing.assert_array_equal(
                    np.asarray(values, np.float32), hist[s, g].astype(np.float32), err_msg=f"{cond}/seed{s} {metric}"
                )


def test_curves_are_the_history_per_seed_and_condition_with_hparams(trainer, tmp_path, monkeypatch):
    plain_dir = tmp_path / "plain"
    plain_dir.mkdir()
    monkeypatch.chdir(plain_dir)
    plain = _sweep(trainer, names=NAMES)  # outside logging_to: nothing is written anywhere
    assert os.listdir(plain_dir) == []

    out = tmp_path / "out"
    with curves.logging_to(["tensorboard"], str(out)):
        res = _sweep(trainer, names=NAMES)
    assert os.listdir(plain_dir) == []
    assert _open_event_files() == []  # closed at the end of the sweep
    # Logging reads the history on the host only: the results are bitwise those of a run without it.
    for a, b in zip(jax.tree.leaves(plain.states), jax.tree.leaves(res.states), strict=True):
        np.testing.assert_array_equal(a, b)
    for k in plain.history:
        np.testing.assert_array_equal(plain.history[k], res.history[k])

    tb = str(out / "tensorboard")
    assert os.path.isfile(os.path.join(tb, curves.MARKER))
    assert _runs(tb) == sorted(f"sweep/{c}/seed{s}" for c in SAFE for s in range(3))
    assert len(res.steps) == 3 and list(res.steps) == [20, 40, 60]  # three chunks, one evaluation each
    _assert_curves_equal_history(res, tb, "sweep", SAFE)
    # The HParams view: each run's grid point (every sweepable hparam), its seed, condition and sweep.
    for g, cond in enumerate(SAFE):
        for s in range(3):
            hp = curves.read_hparams(os.path.join(tb, "sweep", cond, f"seed{s}"))
            expected = {k: float(v[g]) for k, v in res.grid.items()}
            assert hp == {**expected, "seed": float(s), "condition": cond, "sweep": "sweep"}
            assert hp["learning_rate"] == pytest.approx(GRID["learning_rate"][g], rel=1e-12)
            ends = [
                v
                for e in curves.read_events(os.path.join(tb, "sweep", cond, f"seed{s}"))
                for v in e.summary.value
                if v.tag == "_hparams_/session_end_info"
            ]
            assert len(ends) == 1  # the session is marked finished once


def test_crc_and_framing_are_checked(trainer, tmp_path):
    assert curves._crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value (RFC 3720, B.4)
    assert curves._crc32c(b"") == 0
    # A masked CRC is rotated right by 15 and offset by 0xa282ead8 (TFRecord's format).
    crc = 0xE3069283
    assert curves.masked_crc32c(b"123456789") == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) % 2**32
    with curves.logging_to(["tensorboard"], str(tmp_path)):
        run_sweep(trainer, jax.random.key(0), 1, chunk_steps=20, progress=False)
    run_dir = tmp_path / "tensorboard" / "sweep" / "seed0"
    (path,) = curves.event_files(str(run_dir))
    data = bytearray(open(path, "rb").read())
    assert len(curves.read_scalars(str(run_dir))["train/loss"]) == 3
    data[-6] ^= 0x01  # inside the last record's data
    open(path, "wb").write(bytes(data))
    with pytest.raises(ValueError, match="bad data CRC"):
        curves.read_scalars(str(run_dir))
    open(path, "wb").write(bytes(data[:-3]))  # a record cut short
    with pytest.raises(ValueError, match="truncated"):
        curves.read_scalars(str(run_dir))


def test_layout_unique_sweep_names_and_fresh_run_replaces_old_curves(trainer, tmp_path):
    out = str(tmp_path)
    with curves.logging_to(["tensorboard"], out):
        run_sweep(trainer, jax.random.key(0), 2, GRID, chunk_steps=60, progress=False)
    tb = os.path.join(out, "tensorboard")
    assert _runs(tb) == ["sweep/point0/seed0", "sweep/point0/seed1", "sweep/point1/seed0", "sweep/point1/seed1"]
    with curves.logging_to(["tensorboard"], out):  # a fresh run: the earlier curves go (jaxkd wrote them) ...
        assert sorted(os.listdir(tb)) == sorted([curves.MARKER, "sweep"])  # ... once its first sweep starts
        a = run_sweep(trainer, jax.random.key(0), 1, chunk_steps=60, progress=False, desc="teacher")
        b = run_sweep(trainer, jax.random.key(1), 1, chunk_steps=60, progress=False, desc="teacher")
    assert _runs(tb) == ["teacher-2/seed0", "teacher/seed0"]  # one unnamed point: seeds straight under desc
    for res, desc in ((a, "teacher"), (b, "teacher-2")):
        got = curves.read_scalars(os.path.join(tb, desc, "seed0"))["test/acc"]
        np.testing.assert_array_equal(np.float32([v for _, v in got]), res.history["test/acc"][0, 0])
        assert curves.read_hparams(os.path.join(tb, desc, "seed0"))["sweep"] == desc


class _Killed(Exception):
    pass


def test_resume_writes_each_step_once(trainer, tmp_path, monkeypatch):
    ckpt, out = str(tmp_path / "ck"), str(tmp_path / "out")
    real_advance, calls = SweepProgram.advance, []

    def advance_then_die(self, states, chunk):
        calls.append(chunk)
        if len(calls) == 3:  # killed during the third chunk
            raise _Killed
        return real_advance(self, states, chunk)

    monkeypatch.setattr(SweepProgram, "advance", advance_then_die)
    with curves.logging_to(["tensorboard"], out), pytest.raises(_Killed) as killed:
        _sweep(trainer, names=NAMES, checkpoint_dir=ckpt)
    monkeypatch.setattr(SweepProgram, "advance", real_advance)
    # Closed on the error, not by garbage collection: the traceback still holds run_sweep's frame.
    assert killed.tb is not None and _open_event_files() == []
    del killed
    tb = os.path.join(out, "tensorboard")
    run0 = os.path.join(tb, "sweep", SAFE[1], "seed2")
    # Closed on the error with the two finished chunks on disk.
    assert [s for s, _ in curves.read_scalars(run0)["val/acc"]] == [20, 40]
    assert curves.read_hparams(run0)["seed"] == 2.0

    with curves.logging_to(["tensorboard"], out, resume=True):
        res = _sweep(trainer, names=NAMES, checkpoint_dir=ckpt, resume=True)
    _assert_curves_equal_history(res, tb, "sweep", SAFE)
    for cond in SAFE:
        for s in range(3):
            run_dir = os.path.join(tb, "sweep", cond, f"seed{s}")
            assert len(curves.event_files(run_dir)) == 2
            raw = Counter((v.tag, e.step) for e in curves.read_events(run_dir) for v in e.summary.value)
            assert raw and max(raw.values()) == 1, "a step was written twice"
            assert curves.read_hparams(run_dir)["condition"] == cond

    # A kill after the curves of the last chunk were written but before its checkpoint: the step is
    # written again, and the restart marker hides the first copy (as TensorBoard does).
    import shutil

    shutil.rmtree(os.path.join(ckpt, "60"))
    with curves.logging_to(["tensorboard"], out, resume=True):
        res = _sweep(trainer, names=NAMES, checkpoint_dir=ckpt, resume=True)
    _assert_curves_equal_history(res, tb, "sweep", SAFE)
    raw = Counter(e.step for e in curves.read_events(run0) for v in e.summary.value if v.tag == "val/acc")
    assert raw == {20: 1, 40: 1, 60: 2}


def test_foreign_folder_is_refused_and_left_alone(trainer, tmp_path):
    tb = tmp_path / "tensorboard"
    tb.mkdir()
    (tb / "notes.txt").write_text("precious")
    for resume in (False, True):
        with pytest.raises(ConfigError, match="not written by jaxkd") as err:
            with curves.logging_to(["tensorboard"], str(tmp_path), resume=resume):
                raise AssertionError("the block must not run")
        assert "\n" not in str(err.value)
    assert sorted(os.listdir(tb)) == ["notes.txt"] and (tb / "notes.txt").read_text() == "precious"


def test_unknown_kind_missing_packages_and_bad_names(trainer, tmp_path, monkeypatch):
    assert curves.check_kinds(["tensorboard", "tensorboard"]) == ("tensorboard",)
    assert curves.check_kinds([]) == ()
    with pytest.raises(ConfigError, match=r"unknown --log kind 'tensorbord'; choose one of: tensorboard, wandb"):
        curves.check_kinds(["tensorbord"])
    with pytest.raises(ConfigError, match="unknown --log kind"):
        with curves.logging_to(["csv"], str(tmp_path)):
            pass
    monkeypatch.setitem(sys.modules, "wandb", None)  # an import of wandb fails as where it is not installed
    with pytest.raises(ConfigError, match=r"^--log wandb needs the wandb package: pip install wandb$"):
        curves.check_kinds(["tensorboard", "wandb"])
    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(__version__="0.16.6"))
    with pytest.raises(ConfigError, match=r"needs wandb >= 0\.19\.10 .* found 0\.16\.6"):
        curves.check_kinds(["wandb"])
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    with pytest.raises(
        ConfigError, match=r"^--log tensorboard needs tensorboardX: pip install -e '\.\[tensorboard\]'$"
    ):
        curves.check_kinds(["tensorboard"])
    assert os.listdir(tmp_path) == []
    with pytest.raises(ConfigError, match="names has 1 entries but the sweep has 2 grid points"):
        run_sweep(trainer, jax.random.key(0), 1, GRID, names=["only"], progress=False)


def test_importing_jaxkd_does_not_import_tensorboardx():
    code = (
        "import sys, jaxkd, jaxkd.sweep, jaxkd.curves, jaxkd.cli\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorboardX', 'wandb', 'torch', 'tensorflow'))\n"
        "assert not bad, bad\n"
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env=env, timeout=120)
