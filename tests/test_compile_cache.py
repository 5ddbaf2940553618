"""XLA's persistent compilation cache under ``jaxkd run``: a rerun reads its programs instead of compiling them."""

import json
import os
import subprocess
import sys

import pytest

from jaxkd.cli import use_compilation_cache

RUN = [sys.executable, "-m", "jaxkd.cli", "run", "digits_kd", "--preset", "smoke", "--no-progress"]


def _entries(folder):
    return sorted(f for f in os.listdir(folder) if not f.startswith(".")) if os.path.isdir(folder) else []


@pytest.fixture
def env(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}  # conftest's shared cache
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"  # every program, not only those over 1 s
    return env


def test_a_rerun_compiles_nothing_and_gives_the_same_records(tmp_path, env):
    folder = tmp_path / "xdg" / "jaxkd" / "xla"
    first = subprocess.run([*RUN, "--out", str(tmp_path / "a")], env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    written = _entries(folder)
    assert len(written) >= 3, written  # init, advance and evaluation programs at least
    stamp = json.loads((tmp_path / "a" / "env.json").read_text())
    assert stamp["compilation_cache"] == str(folder)
    second = subprocess.run([*RUN, "--out", str(tmp_path / "b")], env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    assert _entries(folder) == written  # every program was found: none compiled and written anew
    assert (tmp_path / "a" / "records.csv").read_text() == (tmp_path / "b" / "records.csv").read_text()


def test_no_compile_cache_and_the_users_own_folder():
    import jax

    before = jax.config.jax_enable_compilation_cache, jax.config.jax_compilation_cache_dir
    try:
        assert use_compilation_cache(False) is None and not jax.config.jax_enable_compilation_cache
        jax.config.update("jax_enable_compilation_cache", True)
        # JAX's own setting wins (conftest sets one for the whole suite)
        assert use_compilation_cache(True) == os.path.abspath(os.environ["JAX_COMPILATION_CACHE_DIR"])
    finally:
        jax.config.update("jax_enable_compilation_cache", before[0])
        jax.config.update("jax_compilation_cache_dir", before[1])
