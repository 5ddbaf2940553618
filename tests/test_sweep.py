import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxkd.errors import ConfigError
from jaxkd.sweep import grid_product, run_sweep
from jaxkd.train import TrainConfig, make_train

CFG = TrainConfig(widths=(16,), steps=60, eval_every=20, batch_size=32)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def trainer(digits):
    return make_train(CFG, digits)


def test_sweep_matches_single_runs(trainer):
    grid = {"learning_rate": [1e-3, 3e-3]}
    res = run_sweep(trainer, jax.random.key(0), 3, grid, progress=False)
    assert res.history["test/acc"].shape == (3, 2, 3)
    assert jax.tree.leaves(res.states.params)[0].shape[:2] == (3, 2)
    run = jax.jit(trainer.run)
    seed_keys = jax.random.split(jax.random.key(0), 3)
    for s in (0, 2):
        for g, lr in enumerate(grid["learning_rate"]):
            _, h = run(seed_keys[s], {**CFG.hparams(), "learning_rate": np.float32(lr)})
            np.testing.assert_allclose(res.history["train/loss"][s, g], h["train/loss"], rtol=1e-4, atol=1e-5)


def test_resume_after_interruption_gives_the_same_result(trainer, tmp_path):
    ckpt = str(tmp_path / "ck")
    full = run_sweep(trainer, jax.random.key(1), 2, chunk_steps=20, checkpoint_dir=ckpt, progress=False)
    # Simulate a kill after the second chunk: drop the last checkpoint.
    steps = sorted(int(d) for d in os.listdir(ckpt) if d.isdigit())
    assert steps == [40, 60]
    shutil.rmtree(os.path.join(ckpt, "60"))
    resumed = run_sweep(trainer, jax.random.key(1), 2, chunk_steps=20, checkpoint_dir=ckpt, resume=True,
                        progress=False)
    for a, b in zip(jax.tree.leaves(full.states), jax.tree.leaves(resumed.states)):
        np.testing.assert_array_equal(a, b)
    for k in full.history:
        np.testing.assert_array_equal(full.history[k], resumed.history[k])


def test_resume_refuses_other_config_and_corrupt_checkpoint(trainer, tmp_path):
    ckpt = str(tmp_path / "ck")
    run_sweep(trainer, jax.random.key(1), 2, chunk_steps=20, checkpoint_dir=ckpt, progress=False)
    with pytest.raises(ConfigError, match="different configuration"):
        run_sweep(trainer, jax.random.key(1), 4, chunk_steps=20, checkpoint_dir=ckpt, resume=True, progress=False)
    for root, _, files in os.walk(os.path.join(ckpt, "60")):
        for f in files:
            with open(os.path.join(root, f), "wb") as fh:
                fh.write(b"garbage")
    with pytest.raises(ConfigError, match="unreadable"):
        run_sweep(trainer, jax.random.key(1), 2, chunk_steps=20, checkpoint_dir=ckpt, resume=True, progress=False)


def test_diverging_point_is_flagged_and_isolated(digits, capsys):
    sgd = make_train(TrainConfig(widths=(16,), steps=60, eval_every=20, batch_size=32, optimizer="sgd"), digits)
    res = run_sweep(sgd, jax.random.key(2), 2, {"learning_rate": [0.05, 1e30]}, progress=False)
    assert res.diverged[:, 1].all() and not res.diverged[:, 0].any()
    assert "seed 0 at grid point 1, seed 1 at grid point 1" in capsys.readouterr().err
    assert np.isfinite(res.history["train/loss"][:, 0]).all()
    from jaxkd.results import summarize_sweep

    summary = summarize_sweep(res, ["ok", "bad"])
    assert summary["bad"]["n_diverged"] == 2 and summary["bad"]["diverged_seeds"] == [0, 1]
    assert summary["ok"]["n_diverged"] == 0 and summary["ok"]["test/acc"]["last"]["n"] == 2


def test_grid_product_and_bad_grids(trainer):
    g = grid_product(alpha=[0.0, 0.5], temperature=[1.0, 2.0, 4.0])
    assert len(g["alpha"]) == 6 and sorted(set(g["temperature"])) == [1.0, 2.0, 4.0]
    with pytest.raises(ConfigError, match="alpha must lie"):
        run_sweep(trainer, jax.random.key(0), 2, {"alpha": [0.5, 1.5]}, progress=False)
    with pytest.raises(ConfigError, match="different lengths"):
        run_sweep(trainer, jax.random.key(0), 2, {"alpha": [0.5], "temperature": [1.0, 2.0]}, progress=False)
    with pytest.raises(ConfigError, match="positive integer"):
        run_sweep(trainer, jax.random.key(0), -1, progress=False)


SHARDED = r"""
import json, os, sys
import jax, numpy as np
from jaxkd.data import load_digits
from jaxkd.sweep import run_sweep, seed_mesh
from jaxkd.train import TrainConfig, make_train
assert jax.device_count() == int(sys.argv[1]), jax.devices()
trainer = make_train(TrainConfig(widths=(16,), steps=40, eval_every=20, batch_size=32), load_digits())
res = run_sweep(trainer, jax.random.key(0), 4, {"learning_rate": [1e-3, 3e-3]}, progress=False)
leaf = jax.tree.leaves(res.states.params)[0]
print(json.dumps({"sharded": seed_mesh(4) is not None, "n_shards": len(leaf.sharding.device_set),
                  "loss": res.history["train/loss"].tolist(), "w": np.asarray(leaf).ravel()[:50].tolist()}))
"""


def _run_devices(n):
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={n}", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", SHARDED, str(n)], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_sharded_sweep_agrees_with_unsharded():
    one, two = _run_devices(1), _run_devices(2)
    assert not one["sharded"] and two["sharded"] and two["n_shards"] == 2
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(two["w"], one["w"], rtol=1e-5, atol=1e-6)
