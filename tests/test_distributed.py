"""Sweeps over several processes (jaxkd.distributed, docs/distributed.md): 2 processes on localhost give the records
of 1 process bit for bit, checkpoints included; a process that dies stops the others with one line."""

import os
import socket
import subprocess
import sys

import pytest

from jaxkd.cli import main

pytestmark = pytest.mark.xdist_group("distributed")  # one worker: the processes of a run share the machine

STUDY = """
import dataclasses
import os

import jax

from jaxkd import study
from jaxkd.config import DataConfig, EvalConfig, ModelConfig, RunConfig
from jaxkd.recipes import RecipeConfig

MULTI_PROCESS = True


@dataclasses.dataclass(frozen=True)
class Config:
    n_seeds: int = 3
    steps: int = 20
    chunk_steps: int | None = 10
    die: int = -1  # this process exits after the first sweep (a test of a dead peer)


PRESETS = {"default": Config()}


def run(config, out_dir, *, resume=False, overwrite=False, progress=True):
    recipe = RecipeConfig(learning_rate=1e-2, steps=config.steps, batch_size=32)
    rc = RunConfig(ModelConfig("mlp", (16,)), recipe=recipe, data=DataConfig("digits"), eval=EvalConfig(every=10))
    ckpt = os.path.join(out_dir, "checkpoints") if config.chunk_steps else None
    conditions = {"a": {}, "b": {"learning_rate": 3e-3}}
    kw = dict(n_seeds=config.n_seeds, progress=progress, chunk_steps=config.chunk_steps, resume=resume)
    s = study.run(rc, conditions, checkpoint_dir=ckpt, overwrite=overwrite, **kw)
    if config.die == jax.process_index():
        os._exit(9)
    if config.die >= 0:  # the survivors go on with a dead peer
        study.run(rc, conditions, **{**kw, "chunk_steps": None})
    s.write(out_dir, config=dataclasses.asdict(config))
    return s.summary
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _start(argv, devices: int):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    env.pop("JAXKD_SUPERVISED", None)
    cmd = [sys.executable, "-m", "jaxkd.cli", "run", *argv, "--no-progress"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(p, timeout=240):
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


def _files(directory):
    return {n: open(os.path.join(directory, n), "rb").read() for n in ("records.csv", "summary.json")}


def test_two_processes_give_the_records_of_one_bit_for_bit(tmp_path):
    """2 processes x 1 device against 1 process x 2 devices: the same global program, the same bytes; checkpoints are
    written by every process's shards and the metadata once."""
    study = tmp_path / "tiny_study.py"
    study.write_text(STUDY)
    port = _free_port()
    one = _start([str(study), "--out", str(tmp_path / "one")], devices=2)
    two = [
        _start(
            [str(study), "--out", str(tmp_path / "two"), "--coordinator", f"localhost:{port}"]
            + ["--num-processes", "2", "--process-id", str(i)],
            devices=1,
        )
        for i in range(2)
    ]
    results = [_finish(p) for p in (one, *two)]
    for rc, _, err in results:
        assert rc == 0, err[-3000:]
    assert _files(tmp_path / "one") == _files(tmp_path / "two")
    assert "finished" in results[1][1] and "finished" not in results[2][1]  # process 0 reports, process 1 does not
    ckpt = tmp_path / "two" / "checkpoints"
    assert sorted(p for p in os.listdir(ckpt) if p.isdigit()) == ["10", "20"]
    assert {"fingerprint.json", "checksums.json"} <= set(os.listdir(ckpt))


def test_a_dead_process_stops_the_others_with_one_line(tmp_path):
    study = tmp_path / "tiny_study.py"
    study.write_text(STUDY)
    port = _free_port()
    procs = [
        _start(
            [str(study), "--out", str(tmp_path / "run"), "--coordinator", f"localhost:{port}"]
            + ["--num-processes", "2", "--process-id", str(i), "--heartbeat-timeout", "3"]
            + ["--set", "die=1", "--set", "chunk_steps=none"],
            devices=1,
        )
        for i in range(2)
    ]
    rc0, _, err0 = _finish(procs[0])
    rc1, _, _ = _finish(procs[1])
    assert rc1 == 9
    lines = [line for line in err0.splitlines() if line.strip()]
    assert rc0 == 2 and len(lines) == 1, err0[-3000:]
    assert lines[0].startswith("jaxkd: error: another process of this 2-process run stopped answering")
    assert "restart every process with the same command" in lines[0]
    assert not os.path.exists(tmp_path / "run")  # nothing left behind


@pytest.mark.parametrize(
    "extra,match",
    [
        (["--num-processes", "2"], "needs all of --coordinator HOST:PORT, --num-processes N and --process-id I"),
        (["--coordinator", "localhost:1", "--num-processes", "2", "--process-id", "2"], r"must lie in \[0, 1\]"),
        (["--coordinator", "nohost", "--num-processes", "2", "--process-id", "0"], "must be HOST:PORT"),
        (["--heartbeat-timeout", "0"], "--heartbeat-timeout must be a positive"),
    ],
)
def test_bad_process_flags_are_one_line(extra, match, capsys, tmp_path):
    assert main(["run", "digits_kd", "--preset", "smoke", "--out", str(tmp_path / "x"), *extra]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("jaxkd: error: ")
    assert __import__("re").search(match, err[0])
    assert not os.path.exists(tmp_path / "x")


def test_an_experiment_without_multi_process_support_is_refused(capsys, tmp_path):
    argv = ["run", "spectral_kd", "--preset", "smoke", "--out", str(tmp_path / "x")]
    argv += ["--coordinator", "localhost:1", "--num-processes", "2", "--process-id", "0"]
    assert main(argv) == 2
    assert "does not run over several processes yet" in capsys.readouterr().err
