import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkd.errors import ConfigError
from jaxkd.train import Teacher, TrainConfig, make_train

CFG = TrainConfig(widths=(16,), steps=40, eval_every=20, batch_size=32, alpha=0.5, temperature=2.0)


@pytest.fixture(scope="module")
def teacher(digits):
    trainer = make_train(TrainConfig(widths=(32,), steps=60, eval_every=30, batch_size=32), digits)
    state, _ = jax.jit(trainer.run)(jax.random.key(7))
    return Teacher.from_model(trainer.model, state.params, state.rest, digits)


def test_same_key_is_bitwise_identical(digits, teacher):
    run = jax.jit(make_train(CFG, digits, teacher).run)
    s1, h1 = run(jax.random.key(3))
    s2, h2 = run(jax.random.key(3))
    for a, b in zip(jax.tree.leaves((s1, h1)), jax.tree.leaves((s2, h2))):
        np.testing.assert_array_equal(a, b)
    s3, _ = run(jax.random.key(4))
    assert not np.array_equal(jax.tree.leaves(s1.params)[0], jax.tree.leaves(s3.params)[0])


def test_vmap_matches_one_by_one(digits, teacher):
    trainer = make_train(CFG, digits, teacher)
    keys = jax.random.split(jax.random.key(0), 3)
    vstates, vhist = jax.jit(jax.vmap(trainer.run))(keys)
    run = jax.jit(trainer.run)
    for i in range(3):
        s, h = run(keys[i])
        # vmap changes the order of float reductions only: agreement to float32 round-off.
        for a, b in zip(jax.tree.leaves(s.params), jax.tree.leaves(vstates.params)):
            np.testing.assert_allclose(b[i], a, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(vhist["train/loss"][i], h["train/loss"], rtol=1e-4, atol=1e-5)


def test_init_and_data_order_keys_are_separate(digits):
    trainer = make_train(CFG, digits)
    a = trainer.init(jax.random.key(1), jax.random.key(10))
    b = trainer.init(jax.random.key(1), jax.random.key(11))
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_array_equal(x, y)
    hp = CFG.hparams()
    adv = jax.jit(trainer.advance, static_argnums=3)
    fa, _ = adv(a, hp, trainer.data, 20)
    fb, _ = adv(b, hp, trainer.data, 20)
    assert not np.allclose(jax.tree.leaves(fa.params)[0], jax.tree.leaves(fb.params)[0])


def test_each_epoch_visits_every_example_once(digits):
    trainer = make_train(CFG, digits)
    per_epoch = trainer.steps_per_epoch
    key = jax.random.key_data(jax.random.key(5))
    perms = trainer.epoch_permutations(key, 0, 2)
    idx = np.concatenate([np.asarray(trainer.batch_indices(perms, 0, jnp.int32(s))) for s in range(per_epoch)])
    assert len(np.unique(idx)) == per_epoch * CFG.batch_size
    second = np.asarray(trainer.batch_indices(perms, 0, jnp.int32(per_epoch)))
    assert not np.array_equal(second, idx[: CFG.batch_size])  # a new order in epoch 2


def test_split_advance_equals_single_advance(digits, teacher):
    """advance(20) twice == advance(40): the basis of chunked sweeps and resume."""
    trainer = make_train(CFG, digits, teacher)
    state = trainer.init(jax.random.key(1), jax.random.key(2))
    adv = jax.jit(trainer.advance, static_argnums=3)
    hp = CFG.hparams()
    full, h_full = adv(state, hp, trainer.data, 40)
    half, h1 = adv(state, hp, trainer.data, 20)
    half, h2 = adv(half, hp, trainer.data, 20)
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(half)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(h_full["test/acc"], np.concatenate([h1["test/acc"], h2["test/acc"]]))


def test_training_learns_and_logs_named_terms(digits, teacher):
    trainer = make_train(TrainConfig(widths=(32,), steps=200, eval_every=100, alpha=0.5, temperature=2.0),
                         digits, teacher)
    _, hist = jax.jit(trainer.run)(jax.random.key(0))
    assert {"train/loss", "train/ce", "train/kd", "test/acc", "test/loss", "test/agreement", "train/acc"} <= set(hist)
    assert hist["test/acc"][-1] > 0.85
    np.testing.assert_allclose(hist["train/loss"], 0.5 * hist["train/ce"] + 0.5 * hist["train/kd"], rtol=1e-5)


def test_hot_step_does_not_recompile(digits):
    trainer = make_train(CFG, digits)
    adv = jax.jit(trainer.advance, static_argnums=3)
    state = trainer.init(jax.random.key(1), jax.random.key(2))
    for lr in (1e-3, 2e-3, 5e-3):
        state, _ = adv(state, {**CFG.hparams(), "learning_rate": jnp.float32(lr)}, trainer.data, 20)
    assert adv._cache_size() == 1


def test_teacher_with_other_class_count_is_rejected(digits, teacher):
    bad = Teacher(teacher.logits_train[:, :5], teacher.logits_test[:, :5])
    with pytest.raises(ConfigError, match="teacher has 5 classes but the student's data has 10"):
        make_train(CFG, digits, bad)
    sub = digits.subset_classes([0, 1, 2])
    with pytest.raises(ConfigError, match="shape"):
        make_train(CFG, sub, teacher)


@pytest.mark.parametrize(
    "kwargs,match",
    [({"alpha": 1.5}, "alpha must lie in"), ({"temperature": 0.0}, "temperature must be positive"),
     ({"temperature": -1.0}, "temperature must be positive"), ({"model": "nope"}, "unknown model"),
     ({"optimizer": "lion9"}, "unknown optimizer"), ({"eval_every": 7}, "must divide steps"),
     ({"learning_rate": float("nan")}, "must be finite")],
)
def test_bad_train_config(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**kwargs)
