"""Memory-aware seed blocks (jaxkd.sweep, --max-memory): the estimate is printed, and seeds that do not fit in one
program run in blocks that do, with bitwise the records and models of one program."""

import os

import jax
import numpy as np
import pytest

from jaxkd.cli import main
from jaxkd.config import DataConfig, EvalConfig, ModelConfig, RunConfig
from jaxkd.data import load_dataset
from jaxkd.errors import ConfigError
from jaxkd.program import SweepProgram, limit_memory, parse_size
from jaxkd.recipes import RecipeConfig
from jaxkd.sweep import run_sweep
from jaxkd.train import make_train

N_SEEDS = 4
GRID = {"learning_rate": [1e-2, 3e-3]}


@pytest.fixture(scope="module")
def trainer():
    config = RunConfig(
        ModelConfig("mlp", (32,)),
        recipe=RecipeConfig(learning_rate=1e-2, steps=20, batch_size=64),
        data=DataConfig("digits", crop_padding=0),
        eval=EvalConfig(every=10),
    )
    return make_train(config, load_dataset("digits"))


def test_seeds_that_do_not_fit_run_in_blocks_with_the_same_records(trainer, tmp_path, capsys):
    full = SweepProgram(trainer, N_SEEDS, GRID).memory_need(20)
    n_dev = jax.device_count()
    small = SweepProgram(trainer, n_dev, GRID).memory_need(20)
    assert small < full  # memory grows with the seeds a device holds
    limit = (small + full) // 2
    one = run_sweep(trainer, jax.random.key(3), N_SEEDS, GRID, chunk_steps=20, progress=False)
    capsys.readouterr()
    with limit_memory(limit):
        blocks = run_sweep(
            trainer,
            jax.random.key(3),
            N_SEEDS,
            GRID,
            chunk_steps=20,
            checkpoint_dir=str(tmp_path / "ckpt"),
            progress=True,
        )
    err = capsys.readouterr().err
    assert f"{N_SEEDS} seeds x 2 grid points need about" in err and "running the 4 seeds in blocks of" in err
    block = blocks.fingerprint["seed_blocks"]
    assert n_dev <= block < N_SEEDS and block % n_dev == 0
    assert SweepProgram(trainer, block, GRID).memory_need(20) <= limit  # each block's program fits
    starts = range(0, N_SEEDS, block)
    assert sorted(os.listdir(tmp_path / "ckpt")) == sorted(f"seeds{i}-{min(i + block, N_SEEDS) - 1}" for i in starts)
    assert sorted(one.history) == sorted(blocks.history)
    for k in one.history:
        assert np.array_equal(one.history[k], blocks.history[k], equal_nan=True), k
    for a, b in zip(jax.tree.leaves(one.states), jax.tree.leaves(blocks.states)):
        a, b = (jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x for x in (a, b))
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert np.array_equal(one.diverged, blocks.diverged) and np.array_equal(one.selected_steps, blocks.selected_steps)


def test_states_or_one_seed_per_device_that_do_not_fit_are_one_line(trainer):
    """Blocks bound what a program needs while it trains; the states of every seed must still fit together."""
    n_dev = jax.device_count()
    program = SweepProgram(trainer, 2 * n_dev, GRID)
    held = sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(program.state_spec())) // n_dev
    assert held < SweepProgram(trainer, n_dev, GRID).memory_need(20)  # data and temporaries come on top
    with limit_memory(held // 2), pytest.raises(ConfigError, match=r"of states per device .* seeds fit: lower --seeds"):
        run_sweep(trainer, jax.random.key(0), 2 * n_dev, GRID, chunk_steps=20, progress=False)
    with limit_memory(held + 1), pytest.raises(ConfigError, match="per device; use fewer grid points per sweep"):
        run_sweep(trainer, jax.random.key(0), 2 * n_dev, GRID, chunk_steps=20, progress=False)


@pytest.mark.parametrize(
    "text,value", [("512MiB", 512 * 2**20), ("2GiB", 2 * 2**30), ("1.5GB", 1_500_000_000), ("800000", 800000)]
)
def test_sizes_are_read(text, value):
    assert parse_size(text) == value


def test_a_bad_max_memory_is_one_line(capsys, tmp_path):
    assert main(["run", "digits_kd", "--preset", "smoke", "--max-memory", "lots", "--out", str(tmp_path / "x")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err == ["jaxkd: error: --max-memory must be a positive size such as 512MiB, 2GiB or 1.5GB, got 'lots'"]
    assert not os.path.exists(tmp_path / "x")
