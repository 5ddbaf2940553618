import dataclasses
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxkd.config import DataConfig, EvalConfig, ModelConfig, ObjectiveConfig, RunConfig
from jaxkd.errors import ConfigError
from jaxkd.recipes import RecipeConfig
from jaxkd.sweep import grid_product, run_sweep
from jaxkd.teacher import Teacher
from jaxkd.train import make_train

CFG = RunConfig(
    model=ModelConfig("mlp", (16,)), recipe=RecipeConfig(steps=60, batch_size=32), eval=EvalConfig(every=20)
)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def trainer(digits):
    return make_train(CFG, digits)


@pytest.fixture(scope="module")
def teachers(digits):
    """Three small MLP teachers (a per-seed stack) from one sweep."""
    t = make_train(dataclasses.replace(CFG, model=ModelConfig("mlp", (24,))), digits)
    res = run_sweep(t, jax.random.key(9), 3, progress=False)
    take = lambda tree: jax.tree.map(lambda x: x[:, 0], tree)  # noqa: E731
    return Teacher(t.model, take(res.states.params["model"]), take(res.states.rest), per_seed=True)


def test_sweep_matches_single_runs(trainer):
    grid = {"learning_rate": [1e-3, 3e-3]}
    res = run_sweep(trainer, jax.random.key(0), 3, grid, progress=False)
    assert res.history["test/acc"].shape == (3, 2, 3)
    assert jax.tree.leaves(res.states.params)[0].shape[:2] == (3, 2)
    run = jax.jit(trainer.run)
    seed_keys = jax.random.split(jax.random.key(0), 3)
    for s in (0, 2):
        for g, lr in enumerate(grid["learning_rate"]):
            _, h = run(seed_keys[s], {**trainer.hparams(), "learning_rate": np.float32(lr)})
            np.testing.assert_allclose(res.history["train/loss"][s, g], h["train/loss"], rtol=1e-4, atol=1e-5)


def test_per_seed_teacher_pairs_student_s_with_teacher_s(digits, teachers):
    cfg = dataclasses.replace(
        CFG,
        objective=ObjectiveConfig({"ce": {"weight": 0.1}, "kd": {"weight": 0.9}}),
        recipe=RecipeConfig(steps=40, batch_size=32),
    )
    trainer = make_train(cfg, digits, teachers)
    res = run_sweep(trainer, jax.random.key(4), 3, progress=False)
    run = jax.jit(trainer.run)
    keys = jax.random.split(jax.random.key(4), 3)
    for s in range(3):
        tin = jax.tree.map(lambda x, s=s: x[s], trainer.teacher_inputs)
        _, h = run(keys[s], None, tin)
        np.testing.assert_allclose(res.history["test/agreement"][s, 0], h["test/agreement"], atol=1e-6)
        np.testing.assert_allclose(res.history["train/kd"][s, 0], h["train/kd"], rtol=1e-4, atol=1e-5)
    # Student 0 paired with teacher 1 gives other numbers: the pairing matters.
    _, other = run(keys[0], None, jax.tree.map(lambda x: x[1], trainer.teacher_inputs))
    assert not np.allclose(other["train/kd"], res.history["train/kd"][0, 0], rtol=1e-3)
    with pytest.raises(ConfigError, match="per-seed teacher has 3 members but the sweep has 2"):
        run_sweep(trainer, jax.random.key(4), 2, progress=False)


def _augmented_kd(steps: int) -> RunConfig:
    """A small CNN under CE + KD + a random control on augmented digits (so the teacher runs live)."""
    return RunConfig(
        model=ModelConfig("cnn2d", (4, 4)),
        objective=ObjectiveConfig({"ce": {"weight": 0.5}, "kd": {"weight": 0.3}, "rcd": {"weight": 0.2}}),
        recipe=RecipeConfig(steps=steps, batch_size=32),
        data=DataConfig(crop_padding=1, flip=True),
        eval=EvalConfig(every=20),
    )


def test_resume_with_augmentation_and_random_terms_is_bitwise(digits, teachers, tmp_path):
    one = Teacher(teachers.model, *jax.tree.map(lambda x: x[0], (teachers.params, teachers.rest)))
    trainer = make_train(_augmented_kd(60), digits, one)
    assert trainer.teacher_live
    ckpt = str(tmp_path / "ck")
    grid = {"kd.weight": [0.3, 0.6]}  # two grid points: the teacher's pass is shared, also across the resume
    full = run_sweep(trainer, jax.random.key(1), 2, grid, chunk_steps=20, checkpoint_dir=ckpt, progress=False)
    assert full.fingerprint["shared_teacher_pass"] is True
    steps = sorted(int(d) for d in os.listdir(ckpt) if d.isdigit())
    assert steps == [40, 60]
    shutil.rmtree(os.path.join(ckpt, "60"))  # a kill after the second chunk
    resumed = run_sweep(
        trainer, jax.random.key(1), 2, grid, chunk_steps=20, checkpoint_dir=ckpt, resume=True, progress=False
    )
    for a, b in zip(jax.tree.leaves(full.states), jax.tree.leaves(resumed.states)):
        np.testing.assert_array_equal(a, b)
    for k in full.history:
        np.testing.assert_array_equal(full.history[k], resumed.history[k])


def test_resume_refuses_a_different_key_dataset_teacher_or_config(digits, trainer, teachers, tmp_path):
    ckpt = str(tmp_path / "ck")
    run_sweep(trainer, jax.random.key(1), 2, chunk_steps=20, checkpoint_dir=ckpt, progress=False)
    kw = dict(chunk_steps=20, checkpoint_dir=ckpt, resume=True, progress=False)
    with pytest.raises(ConfigError, match=r"\(key differs"):
        run_sweep(trainer, jax.random.key(2), 2, **kw)
    with pytest.raises(ConfigError, match=r"\(n_seeds differs"):
        run_sweep(trainer, jax.random.key(1), 4, **kw)
    other_data = dataclasses.replace(digits, x_train=digits.x_train[::-1].copy(), y_train=digits.y_train[::-1].copy())
    with pytest.raises(ConfigError, match=r"\(dataset.hash differs"):
        run_sweep(make_train(CFG, other_data), jax.random.key(1), 2, **kw)
    with pytest.raises(ConfigError, match=r"\(config.recipe.learning_rate differs"):
        run_sweep(
            make_train(
                dataclasses.replace(CFG, recipe=RecipeConfig(steps=60, batch_size=32, learning_rate=5e-3)), digits
            ),
            jax.random.key(1),
            2,
            **kw,
        )
    # Two teachers that differ only in their parameters.
    kd = dataclasses.replace(CFG, objective=ObjectiveConfig({"ce": {"weight": 0.5}, "kd": {"weight": 0.5}}))
    pick = lambda i: Teacher(teachers.model, *jax.tree.map(lambda x: x[i], (teachers.params, teachers.rest)))  # noqa
    ckpt2 = str(tmp_path / "ck2")
    run_sweep(
        make_train(kd, digits, pick(0)), jax.random.key(1), 2, chunk_steps=20, checkpoint_dir=ckpt2, progress=False
    )
    with pytest.raises(ConfigError, match=r"\(teacher.hash differs"):
        run_sweep(make_train(kd, digits, pick(1)), jax.random.key(1), 2, **{**kw, "checkpoint_dir": ckpt2})


def test_checkpointer_never_deletes_what_it_did_not_write(trainer, tmp_path):
    user_dir = tmp_path / "mine"
    user_dir.mkdir()
    (user_dir / "notes.txt").write_text("precious")
    with pytest.raises(ConfigError, match="not empty and holds no jaxkd checkpoint"):
        run_sweep(trainer, jax.random.key(1), 2, chunk_steps=20, checkpoint_dir=str(user_dir), progress=False)
    assert (user_dir / "notes.txt").read_text() == "precious"
    ckpt = tmp_path / "ck"
    run_sweep(trainer, jax.random.key(1), 2, chunk_steps=20, checkpoint_dir=str(ckpt), progress=False)
    (ckpt / "keep.txt").write_text("mine too")
    with pytest.raises(ConfigError, match="--resume to continue it or --overwrite"):
        run_sweep(trainer, jax.random.key(1), 2, chunk_steps=20, checkpoint_dir=str(ckpt), progress=False)
    assert sorted(d for d in os.listdir(ckpt) if d.isdigit()) == ["40", "60"]
    run_sweep(trainer, jax.random.key(3), 2, chunk_steps=60, checkpoint_dir=str(ckpt), overwrite=True, progress=False)
    assert (ckpt / "keep.txt").read_text() == "mine too"
    assert json.loads((ckpt / "fingerprint.json").read_text())["chunk_steps"] == 60
    assert sorted(d for d in os.listdir(ckpt) if d.isdigit()) == ["60"]


def test_damaged_checkpoint_falls_back_then_refuses(trainer, tmp_path):
    ckpt = str(tmp_path / "ck")
    full = run_sweep(trainer, jax.random.key(1), 2, chunk_steps=20, checkpoint_dir=ckpt, progress=False)
    # Flip a byte inside the newest step's largest array-data file (ocdbt ``d/`` chunks), as a disk error would.
    data_files = [
        os.path.join(r, f) for r, _, fs in os.walk(os.path.join(ckpt, "60")) if os.path.basename(r) == "d" for f in fs
    ]
    target = max(data_files, key=os.path.getsize)
    data = bytearray(open(target, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(target, "wb").write(bytes(data))
    with pytest.warns(RuntimeWarning, match="resuming from step 40"):
        resumed = run_sweep(
            trainer, jax.random.key(1), 2, chunk_steps=20, checkpoint_dir=ckpt, resume=True, progress=False
        )
    for k in full.history:
        np.testing.assert_array_equal(full.history[k], resumed.history[k])
    for step in ("40", "60"):
        for root, _, files in os.walk(os.path.join(ckpt, step)):
            for f in files:
                open(os.path.join(root, f), "wb").write(b"garbage")
    with pytest.raises(ConfigError, match="unreadable or damaged"):
        run_sweep(trainer, jax.random.key(1), 2, chunk_steps=20, checkpoint_dir=ckpt, resume=True, progress=False)


def test_diverging_point_is_flagged_and_isolated(digits):
    sgd = make_train(dataclasses.replace(CFG, recipe=RecipeConfig(optimizer="sgd", steps=60, batch_size=32)), digits)
    with pytest.warns(RuntimeWarning, match="seed 0 at grid point 1, seed 1 at grid point 1"):
        res = run_sweep(sgd, jax.random.key(2), 2, {"learning_rate": [0.05, 1e30]}, progress=False)
    assert res.diverged[:, 1].all() and not res.diverged[:, 0].any()
    assert np.isfinite(res.history["train/loss"][:, 0]).all()
    from jaxkd.results import summarize_sweep

    summary = summarize_sweep(res, ["ok", "bad"])
    assert summary["bad"]["n_diverged"] == 2 and summary["bad"]["diverged_seeds"] == [0, 1]
    assert summary["ok"]["n_diverged"] == 0 and summary["ok"]["test/acc"]["last"]["n"] == 2


def test_grid_product_and_bad_grids(trainer):
    g = grid_product(**{"learning_rate": [1e-3, 2e-3], "ce.weight": [1.0, 2.0, 4.0]})
    assert len(g["learning_rate"]) == 6 and sorted(set(g["ce.weight"])) == [1.0, 2.0, 4.0]
    with pytest.raises(ConfigError, match="ce.label_smoothing must lie in"):
        run_sweep(trainer, jax.random.key(0), 2, {"ce.label_smoothing": [0.5, 1.5]}, progress=False)
    with pytest.raises(ConfigError, match="unknown hyper-parameter 'kd.weight'; sweepable: ce.label_smoothing"):
        run_sweep(trainer, jax.random.key(0), 2, {"kd.weight": [0.5]}, progress=False)
    with pytest.raises(ConfigError, match="different lengths"):
        run_sweep(trainer, jax.random.key(0), 2, {"learning_rate": [0.5], "ce.weight": [1.0, 2.0]}, progress=False)
    with pytest.raises(ConfigError, match="positive integer"):
        run_sweep(trainer, jax.random.key(0), -1, progress=False)


SHARDED = r"""
import json, sys
import jax, numpy as np
from jaxkd.config import EvalConfig, ModelConfig, RunConfig
from jaxkd.data import load_digits
from jaxkd.recipes import RecipeConfig
from jaxkd.sweep import run_sweep
from jaxkd.train import make_train
assert jax.device_count() == int(sys.argv[1]), jax.devices()
cfg = RunConfig(model=ModelConfig("mlp", (16,)), recipe=RecipeConfig(steps=40, batch_size=32),
                eval=EvalConfig(every=20))
trainer = make_train(cfg, load_digits())
for seeds in sys.argv[2:]:
    res = run_sweep(trainer, jax.random.key(0), int(seeds), {"learning_rate": [1e-3, 3e-3]}, progress=False)
    leaf = jax.tree.leaves(res.states.params)[0]
    print(json.dumps({"n_shards": len(leaf.sharding.device_set), "shape": list(leaf.shape),
                      "loss": res.history["train/loss"].tolist(), "w": np.asarray(leaf).ravel()[:50].tolist()}))
"""


def _run_devices(n, *seeds):
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={n}", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run(
        [sys.executable, "-c", SHARDED, str(n), *map(str, seeds)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return [json.loads(line) for line in out.stdout.strip().splitlines()[-len(seeds) :]]


def test_sharded_sweep_agrees_with_unsharded_and_pads_odd_seed_counts():
    (one,), (two, odd, single) = _run_devices(1, 4), _run_devices(2, 4, 3, 1)
    assert one["n_shards"] == 1 and two["n_shards"] == 2
    # One seed on 2 devices: not sharded (a padding copy on the other device would only compete for the cores).
    assert single["n_shards"] == 1 and single["shape"][:2] == [1, 2]
    np.testing.assert_allclose(single["loss"], np.asarray(one["loss"])[:1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(two["w"], one["w"], rtol=1e-5, atol=1e-6)
    # 3 seeds on 2 devices: padded to 4 inside, the first 3 returned, equal to the unpadded runs.
    assert odd["shape"][:2] == [3, 2]
    np.testing.assert_allclose(odd["loss"], np.asarray(one["loss"])[:3], rtol=1e-5, atol=1e-6)


def test_vectorisation_width_does_not_change_results(digits, teachers):
    # SGD: Adam would turn round-off in the zero gradients of conv biases before BatchNorm into full steps.
    recipe = RecipeConfig(optimizer="momentum", learning_rate=0.05, steps=20, batch_size=32)
    cfg = dataclasses.replace(
        CFG,
        model=ModelConfig("cnn2d", (4, 4)),
        recipe=recipe,
        objective=ObjectiveConfig({"ce": {"weight": 0.5}, "kd": {"weight": 0.5}}),
    )
    trainer = make_train(cfg, digits, teachers)  # per-seed teacher: the map must pair seed s with teacher s
    grid = {"kd.temperature": [1.0, 4.0]}
    runs = [run_sweep(trainer, jax.random.key(0), 3, grid, vmap_width=w, progress=False) for w in (None, 1, 2)]
    for other in runs[1:]:
        for k in ("train/loss", "test/loss", "test/agreement"):
            np.testing.assert_allclose(other.history[k], runs[0].history[k], rtol=2e-4, atol=2e-5, err_msg=k)


def test_run_keys_give_siddo_and_disdo_controls_exactly(trainer, digits):
    """Explicit (init, data) keys per (seed, grid point): the arrays, not the config, show the controls."""
    from jaxkd.keys import RunKeys, seed_run_keys
    from jaxkd.program import SweepProgram

    n_seeds, key_t, key_s = 2, jax.random.key(5), jax.random.key(6)
    teacher = run_sweep(trainer, key_t, n_seeds, progress=False)  # same architecture as the students
    t_keys = seed_run_keys(key_t, n_seeds)
    # points: 0 base (own keys), 1 SIDDO (teacher's init), 2 DISDO (teacher's data order), 3 both = the teacher
    keys = seed_run_keys(key_s, n_seeds, 4)
    keys = keys.select([1, 3], t_keys, init=True).select([2, 3], t_keys, data=True)
    grid = {"learning_rate": [trainer.hparams()["learning_rate"]] * 4}
    init = SweepProgram(trainer, n_seeds, grid).init_from_keys(keys)
    for s in range(n_seeds):
        # The teacher's initial parameters, derived by hand from the documented key scheme.
        init_key, data_key = jax.random.split(jax.random.split(key_t, n_seeds)[s])
        t_params, _ = trainer.model.init(jax.random.split(init_key)[0])
        t_perm = np.asarray(jax.random.key_data(jax.random.split(data_key)[0]))
        leaves = lambda g, s=s: [np.asarray(a[s, g]) for a in jax.tree.leaves(init.params["model"])]  # noqa: E731
        same = lambda xs, t=t_params: all(np.array_equal(a, b) for a, b in zip(xs, jax.tree.leaves(t)))  # noqa: E731
        assert same(leaves(1)) and same(leaves(3)) and not same(leaves(0)) and not same(leaves(2))
        perm = lambda g, s=s: np.asarray(init.perm_key[s, g])  # noqa: E731
        assert np.array_equal(perm(2), t_perm) and np.array_equal(perm(3), t_perm)
        assert not np.array_equal(perm(0), t_perm) and not np.array_equal(perm(1), t_perm)
    res = run_sweep(trainer, key_s, n_seeds, grid, keys=keys, progress=False)
    # With the teacher's init and data order, a CE run is the teacher's run again.
    np.testing.assert_array_equal(res.history["train/loss"][:, 3], teacher.history["train/loss"][:, 0])
    assert not np.allclose(res.history["train/loss"][:, 1], teacher.history["train/loss"][:, 0])
    # Default keys as explicit RunKeys give the default sweep.
    default = run_sweep(trainer, key_s, n_seeds, progress=False)
    explicit = run_sweep(trainer, key_s, n_seeds, keys=seed_run_keys(key_s, n_seeds), progress=False)
    np.testing.assert_array_equal(explicit.history["train/loss"], default.history["train/loss"])
    with pytest.raises(ConfigError, match="seeds and 4 grid points"):
        run_sweep(trainer, key_s, n_seeds, grid, keys=seed_run_keys(key_s, n_seeds), progress=False)
    with pytest.raises(ConfigError, match="typed keys"):
        RunKeys(jax.random.key_data(keys.init), keys.data)


def test_shared_teacher_pass_matches_single_runs(digits, teachers):
    """Grid points of a seed share its batches, so the sweep runs the live teacher once per seed and step
    (``SweepProgram.shares_teacher``); every run must still be the run it is alone (``trainer.run``), with a
    shared and with a per-seed teacher, under augmentation and a term that draws random numbers, in chunks."""
    cfg = _augmented_kd(80)
    grid = {"kd.weight": [0.0, 0.3, 0.9], "rcd.weight": [0.2, 0.0, 0.0]}
    one = Teacher(teachers.model, *jax.tree.map(lambda x: x[0], (teachers.params, teachers.rest)))
    keys = jax.random.split(jax.random.key(3), 3)
    for teacher in (one, teachers):
        trainer = make_train(cfg, digits, teacher)
        # Two chunks: the second starts in the second epoch (40 steps per epoch).
        res = run_sweep(trainer, jax.random.key(3), 3, grid, chunk_steps=40, progress=False)
        assert 40 // trainer.steps_per_epoch >= 1
        assert res.fingerprint["shared_teacher_pass"] is True
        if teacher.per_seed:  # the seeds and each seed's grid points vmapped (the accelerator default)
            vmapped = run_sweep(trainer, jax.random.key(3), 3, grid, vmap_width=None, progress=False)
            for k in ("train/loss", "test/agreement"):
                np.testing.assert_allclose(vmapped.history[k], res.history[k], rtol=2e-4, atol=2e-5, err_msg=k)
        run = jax.jit(trainer.run)
        for s in (0, 2):
            tin = jax.tree.map(lambda x, s=s: x[s], trainer.teacher_inputs) if teacher.per_seed else None
            for g in range(3):
                hp = {**trainer.hparams(), **{k: np.float32(v[g]) for k, v in grid.items()}}
                _, h = run(keys[s], hp, tin)
                for k in ("train/loss", "train/kd", "train/rcd", "test/agreement", "val/acc"):
                    np.testing.assert_allclose(res.history[k][s, g], h[k], rtol=2e-4, atol=1e-5, err_msg=k)


def test_runs_with_their_own_data_orders_do_not_share_the_teacher(digits, teachers):
    from jaxkd.keys import RunKeys, seed_run_keys
    from jaxkd.program import SweepProgram

    cfg = RunConfig(
        model=ModelConfig("mlp", (8,)),
        objective=ObjectiveConfig({"ce": {"weight": 0.5}, "kd": {"weight": 0.5}}),
        recipe=RecipeConfig(steps=20, batch_size=32),
        eval=EvalConfig(every=20),
        teacher="live",
    )
    one = Teacher(teachers.model, *jax.tree.map(lambda x: x[0], (teachers.params, teachers.rest)))
    trainer = make_train(cfg, digits, one)
    own = seed_run_keys(jax.random.key(0), 2, 2)
    own = RunKeys(own.init, own.data.at[:, 1].set(jax.random.split(jax.random.key(5), 2)))
    assert not own.data_shared and seed_run_keys(jax.random.key(0), 2, 2).data_shared
    grid = {"kd.weight": [0.0, 0.5]}
    res = run_sweep(trainer, jax.random.key(0), 2, grid, keys=own, progress=False)
    assert "shared_teacher_pass" not in res.fingerprint
    with pytest.raises(ConfigError, match="different data orders"):
        SweepProgram(trainer, 2, grid).init_from_keys(own)
    # The grid point with its own data order is the run it is alone.
    hp = {**trainer.hparams(), "kd.weight": np.float32(0.5)}
    run = jax.jit(lambda i, d: trainer.advance(trainer.init(i, d), hp, trainer.data, trainer.teacher_inputs, 20))
    _, h = run(own.init[1, 1], own.data[1, 1])
    np.testing.assert_allclose(res.history["train/loss"][1, 1], h["train/loss"], rtol=2e-4, atol=1e-5)
