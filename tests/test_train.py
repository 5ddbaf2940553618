import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkd.config import DataConfig, EvalConfig, ModelConfig, ObjectiveConfig, RunConfig
from jaxkd.errors import ConfigError
from jaxkd.recipes import RecipeConfig
from jaxkd.teacher import Teacher
from jaxkd.train import make_train

KD = {"ce": {"weight": 0.5}, "kd": {"weight": 0.5, "temperature": 2.0}}
CFG = RunConfig(
    model=ModelConfig("mlp", (16,)),
    objective=ObjectiveConfig(KD),
    recipe=RecipeConfig(steps=40, batch_size=32),
    eval=EvalConfig(every=20),
)
CE = dataclasses.replace(CFG, objective=ObjectiveConfig())


@pytest.fixture(scope="module")
def teacher(digits):
    cfg = RunConfig(
        model=ModelConfig("mlp", (32,)), recipe=RecipeConfig(steps=60, batch_size=32), eval=EvalConfig(every=30)
    )
    trainer = make_train(cfg, digits)
    state, _ = jax.jit(trainer.run)(jax.random.key(7))
    return Teacher(trainer.model, state.params["model"], state.rest)


@pytest.fixture(scope="module")
def cnn_teacher(digits):
    cfg = RunConfig(
        model=ModelConfig("cnn2d", (8, 8)), recipe=RecipeConfig(steps=20, batch_size=32), eval=EvalConfig(every=20)
    )
    trainer = make_train(cfg, digits)
    state, _ = jax.jit(trainer.run)(jax.random.key(3))
    return Teacher(trainer.model, state.params["model"], state.rest)


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
        for a, b in zip(jax.tree.leaves(s.params), jax.tree.leaves(vstates.params)):
            np.testing.assert_allclose(b[i], a, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(vhist["train/loss"][i], h["train/loss"], rtol=1e-4, atol=1e-5)


def test_init_and_data_order_keys_are_separate(digits):
    trainer = make_train(CE, digits)
    a = trainer.init(jax.random.key(1), jax.random.key(10))
    b = trainer.init(jax.random.key(1), jax.random.key(11))
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_array_equal(x, y)
    adv = jax.jit(trainer.advance, static_argnums=4)
    fa, _ = adv(a, trainer.hparams(), trainer.data, None, 20)
    fb, _ = adv(b, trainer.hparams(), trainer.data, None, 20)
    assert not np.allclose(jax.tree.leaves(fa.params)[0], jax.tree.leaves(fb.params)[0])


def test_each_epoch_visits_every_example_once(digits):
    trainer = make_train(CE, digits)
    per_epoch = trainer.steps_per_epoch
    perms = trainer.epoch_permutations(jax.random.key_data(jax.random.key(5)), 0, 2)
    idx = np.concatenate([np.asarray(trainer.batch_indices(perms, 0, jnp.int32(s))) for s in range(per_epoch)])
    assert len(np.unique(idx)) == per_epoch * trainer.batch_size
    second = np.asarray(trainer.batch_indices(perms, 0, jnp.int32(per_epoch)))
    assert not np.array_equal(second, idx[: trainer.batch_size])


def test_validation_split_is_stratified_disjoint_and_recorded(digits):
    trainer = make_train(CE, digits)
    n_val, n_tr = trainer.data["y_val"].shape[0], trainer.data["y_train"].shape[0]
    assert n_val + n_tr == digits.y_train.shape[0] and abs(n_val - 0.1 * digits.y_train.shape[0]) <= 1
    # Stratified: each class's share in val is within one example of its share overall.
    for c in range(10):
        share = np.mean(digits.y_train == c) * n_val
        assert abs(np.sum(np.asarray(trainer.data["y_val"]) == c) - share) <= 1.0
    rows = {tuple(np.round(r, 4)) for r in np.asarray(trainer.data["x_val"]).reshape(n_val, -1)}
    assert not any(tuple(np.round(r, 4)) in rows for r in np.asarray(trainer.data["x_train"]).reshape(n_tr, -1)[:200])
    assert trainer.fingerprint["dataset"]["sizes"] == {"train": n_tr, "val": n_val, "test": len(digits.y_test)}


def test_split_advance_equals_single_advance(digits, teacher):
    trainer = make_train(CFG, digits, teacher)
    state = trainer.init(jax.random.key(1), jax.random.key(2))
    adv = jax.jit(trainer.advance, static_argnums=4)
    hp, tin = trainer.hparams(), trainer.teacher_inputs
    full, h_full = adv(state, hp, trainer.data, tin, 40)
    half, h1 = adv(state, hp, trainer.data, tin, 20)
    half, h2 = adv(half, hp, trainer.data, tin, 20)
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(half)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(h_full["test/acc"], np.concatenate([h1["test/acc"], h2["test/acc"]]))


def test_training_learns_and_logs_named_weighted_terms(digits, teacher):
    cfg = dataclasses.replace(
        CFG,
        objective=ObjectiveConfig({"ce": {"weight": 0.3}, "kd": {"weight": 0.7}}),
        recipe=RecipeConfig(steps=200, batch_size=64),
        eval=EvalConfig(every=100),
    )
    _, hist = jax.jit(make_train(cfg, digits, teacher).run)(jax.random.key(0))
    assert {"train/loss", "train/ce", "train/kd", "val/acc", "test/acc", "test/loss", "test/agreement"} <= set(hist)
    assert hist["test/acc"][-1] > 0.6  # chance is 0.1; the 60-step teacher itself is near 0.8
    # 0.3 and 0.7 are not interchangeable: this fails if the weights were swapped.
    np.testing.assert_allclose(hist["train/loss"], 0.3 * hist["train/ce"] + 0.7 * hist["train/kd"], rtol=1e-5)
    assert not np.allclose(hist["train/loss"], 0.7 * hist["train/ce"] + 0.3 * hist["train/kd"], rtol=1e-3)


def test_live_teacher_equals_cached_logits_without_augmentation(digits, cnn_teacher):
    # SGD, not Adam: Adam turns round-off in the exactly-zero gradients of conv biases before
    # BatchNorm into full-size steps, which would hide what this test compares.
    cfg = dataclasses.replace(
        CFG,
        model=ModelConfig("cnn2d", (4, 8)),
        recipe=RecipeConfig(optimizer="momentum", learning_rate=0.05, steps=40, batch_size=32),
    )
    cached = make_train(dataclasses.replace(cfg, teacher="cached"), digits, cnn_teacher)
    live = make_train(dataclasses.replace(cfg, teacher="live"), digits, cnn_teacher)
    assert live.teacher_live and not cached.teacher_live
    sc, hc = jax.jit(cached.run)(jax.random.key(5))
    sl, hl = jax.jit(live.run)(jax.random.key(5))
    # Batch-size-dependent float round-off only (argmax metrics may flip on near-ties, so compare losses).
    for k in ("train/kd", "train/loss", "test/loss", "val/loss"):
        np.testing.assert_allclose(hl[k], hc[k], rtol=2e-4, atol=2e-5, err_msg=k)
    for a, b in zip(jax.tree.leaves(sl.params), jax.tree.leaves(sc.params)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
    # auto picks the fast path without augmentation, the live teacher with it
    assert not make_train(cfg, digits, cnn_teacher).teacher_live
    assert make_train(dataclasses.replace(cfg, data=DataConfig(crop_padding=1)), digits, cnn_teacher).teacher_live


def test_fitnet_aux_params_get_gradients_and_change(digits, cnn_teacher):
    obj = ObjectiveConfig({"ce": {"weight": 1.0}, "fitnet": {"weight": 1.0, "student": "block1", "teacher": "block1"}})
    cfg = dataclasses.replace(CFG, model=ModelConfig("cnn2d", (4, 6)), objective=obj)
    trainer = make_train(cfg, digits, cnn_teacher)
    state = trainer.init(jax.random.key(0), jax.random.key(1))
    kernel0 = np.asarray(state.params["terms"]["fitnet"]["kernel"])
    assert kernel0.shape == (6, 8)
    batch = trainer.train_batch(trainer.data, jnp.arange(32), jax.random.key(0))
    t_out = trainer.teacher_train_out(trainer.teacher_inputs, batch)
    grads = jax.grad(lambda p: trainer.loss(p, state, trainer.hparams(), batch, t_out, jax.random.key(0))[0])(
        state.params
    )
    assert np.abs(np.asarray(grads["terms"]["fitnet"]["kernel"])).max() > 0
    # The hint equals the NumPy squared error of the projected student feature.
    fs = np.asarray(
        trainer.model.apply(state.params["model"], state.rest, batch["x"], train=True)[1]["block1"], np.float64
    )
    ft = np.asarray(t_out[1]["block1"], np.float64)
    ref = np.mean((fs @ kernel0 + np.asarray(state.params["terms"]["fitnet"]["bias"]) - ft) ** 2)
    _, (_, _, means) = trainer.loss(state.params, state, trainer.hparams(), batch, t_out, jax.random.key(0))
    np.testing.assert_allclose(means["fitnet"], ref, rtol=1e-4)
    final, _ = jax.jit(trainer.run)(jax.random.key(0))
    assert np.abs(np.asarray(final.params["terms"]["fitnet"]["kernel"]) - kernel0).max() > 1e-3


def test_confusion_state_updates_exactly(digits):
    from jaxkd.terms import confusion

    term = confusion(momentum=0.9, smoothing=0.1, update="eval")
    spec = (jax.ShapeDtypeStruct((4, 3), jnp.float32), {})
    _, state = term.init(jax.random.key(0), spec, None)
    np.testing.assert_allclose(state["Q"], 0.9 * np.eye(3) + 0.1 / 3, rtol=1e-6)
    logits = jnp.asarray([[5.0, 0, 0], [0, 5.0, 0], [5.0, 0, 0], [0, 0, 5.0]])  # predicts 0, 1, 0, 2
    labels = jnp.asarray([0, 0, 1, 2])
    new = jax.jit(term.eval_update)(state, logits, labels, {"momentum": 0.9, "temperature": 2.0})
    counts = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 1]], np.float64) + 1e-8
    p = counts / counts.sum(1, keepdims=True)
    np.testing.assert_allclose(new["Q"], 0.9 * np.asarray(state["Q"]) + 0.1 * p, rtol=1e-6)
    # Per-example value: T² KL(Q[y] || softmax(z/T)).
    values, _ = term.apply({}, new, (logits, {}), None, {"y": labels}, None, {"temperature": 2.0, "momentum": 0.9})
    q = np.asarray(new["Q"], np.float64)[np.asarray(labels)]
    z = np.asarray(logits, np.float64) / 2
    log_p = z - np.log(np.exp(z).sum(1, keepdims=True))
    np.testing.assert_allclose(values, 4 * np.sum(q * (np.log(q) - log_p), 1), rtol=1e-5)


def test_eval_boundary_term_state_changes_during_training(digits):
    obj = ObjectiveConfig({"ce": {"weight": 1.0}, "confusion": {"weight": 0.5}})
    trainer = make_train(dataclasses.replace(CE, objective=obj), digits)
    state, _ = jax.jit(trainer.run)(jax.random.key(0))
    q = np.asarray(state.term_state["confusion"]["Q"])
    np.testing.assert_allclose(q.sum(1), 1.0, rtol=1e-5)
    assert np.abs(q - (0.9 * np.eye(10) + 0.01)).max() > 1e-3


def test_random_targets_differ_per_step_and_stay_fixed_per_example(digits):
    from jaxkd.terms import rcd

    logits = jnp.zeros((4, 10))
    batch = {"index": jnp.asarray([3, 7, 3, 9]), "y": jnp.zeros(4, jnp.int32)}
    hp = {"temperature": 1.0, "scale": 2.0}
    step_term = rcd()
    a, _ = step_term.apply({}, {}, (logits, {}), None, batch, jax.random.key(1), hp)
    b, _ = step_term.apply({}, {}, (logits, {}), None, batch, jax.random.key(2), hp)
    assert not np.allclose(a, b)
    fixed = rcd(per_example=True)
    _, st = fixed.init(jax.random.key(0), None, None)
    a, _ = fixed.apply({}, st, (logits, {}), None, batch, jax.random.key(1), hp)
    b, _ = fixed.apply({}, st, (logits, {}), None, batch, jax.random.key(2), hp)
    np.testing.assert_array_equal(a, b)
    assert a[0] == a[2] and a[0] != a[1]


def test_batched_evaluation_equals_unbatched(digits):
    trainer = make_train(CE, digits)
    state = trainer.init(jax.random.key(0), jax.random.key(1))
    full = trainer.model.apply(state.params["model"], state.rest, trainer.data["x_test"], train=False)[0]
    for bs in (7, 64, 359, 1000):
        t = dataclasses.replace(trainer, config=dataclasses.replace(CE, eval=EvalConfig(every=20, batch_size=bs)))
        got = jax.jit(lambda s, t=t: t.predict_split(s.params, s.rest, t.data, "test"))(state)
        assert got.shape == (len(digits.y_test), 10)
        np.testing.assert_allclose(got, full, rtol=1e-5, atol=1e-5)


def test_hot_step_does_not_recompile(digits):
    trainer = make_train(CE, digits)
    adv = jax.jit(trainer.advance, static_argnums=4)
    state = trainer.init(jax.random.key(1), jax.random.key(2))
    for lr in (1e-3, 2e-3, 5e-3):
        state, _ = adv(state, {**trainer.hparams(), "learning_rate": jnp.float32(lr)}, trainer.data, None, 20)
    assert adv._cache_size() == 1


def test_teacher_with_other_class_count_is_rejected(digits, teacher):
    sub = digits.subset_classes([0, 1, 2])
    with pytest.raises(ConfigError, match="teacher has 10 classes but the student's data has 3"):
        make_train(CFG, sub, teacher)


def test_term_that_needs_a_teacher_is_refused_without_one(digits):
    with pytest.raises(ConfigError, match="term\\(s\\) kd need a teacher"):
        make_train(CFG, digits)


@pytest.mark.parametrize(
    "terms,match",
    [
        ({"nope": {}}, "unknown term 'nope'"),
        ({"kd": {"weight": -1.0}}, "kd.weight must be >= 0"),
        ({"kd": {"temperature": 0.0}}, "kd.temperature must be positive"),
        ({"kd": {"temp": 1.0}}, "has no option 'temp'"),
        ({}, "at least one term"),
        ({"confusion": {"split": "valid"}}, "confusion split must be 'val'"),
        ({"ce": {"phase": "soft"}}, "ce.phase is set but ce.phases is not"),
        ({"ce": {"phases": [1.0]}}, "at least two positive ratios"),
        ({"ce": {"phases": [1.0, 1.0], "phase": "warm"}}, "must be 'soft' or 'hard'"),
    ],
)
def test_bad_objectives(terms, match):
    with pytest.raises(ConfigError, match=match):
        ObjectiveConfig(terms)


def test_feature_the_model_does_not_have(digits, cnn_teacher):
    obj = ObjectiveConfig({"fitnet": {"student": "block9", "teacher": "block1"}})
    with pytest.raises(ConfigError, match="student has no feature 'block9'; it has: block0, block1, pooled"):
        make_train(dataclasses.replace(CFG, model=ModelConfig("cnn2d", (4, 4)), objective=obj), digits, cnn_teacher)
    obj = ObjectiveConfig({"at": {"student": ("block0",), "teacher": ("pooled",)}})
    with pytest.raises(ConfigError, match="must both be spatial maps"):
        make_train(dataclasses.replace(CFG, model=ModelConfig("cnn2d", (4, 4)), objective=obj), digits, cnn_teacher)


@pytest.mark.parametrize(
    "part,kwargs,match",
    [
        (RecipeConfig, {"learning_rate": -1.0}, "learning_rate must be positive"),
        (RecipeConfig, {"optimizer": "lion9"}, "unknown optimizer"),
        (RecipeConfig, {"momentum": 1.0}, "momentum must lie in"),
        (RecipeConfig, {"steps": None}, "exactly one of"),
        (RecipeConfig, {"milestones": (5, 2)}, "increasing"),
        (ModelConfig, {"name": "nope"}, "unknown model"),
        (DataConfig, {"dataset": "imagenet"}, "unknown dataset"),
        (EvalConfig, {"splits": ("val", "holdout")}, "unknown evaluation split"),
    ],
)
def test_bad_config_parts(part, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        part(**kwargs)


def test_eval_interval_must_divide_the_run(digits):
    with pytest.raises(ConfigError, match="must divide the run's 40 steps"):
        make_train(dataclasses.replace(CE, eval=EvalConfig(every=7)), digits)


def test_uint8_images_are_normalised_on_device(digits):
    from jaxkd.data import Dataset

    to8 = lambda x: np.round(x * 255).astype(np.uint8)  # noqa: E731
    ds = Dataset(
        "digits",
        to8(digits.x_train)[..., None],
        digits.y_train,
        to8(digits.x_test)[..., None],
        digits.y_test,
        num_classes=10,
        mean=(0.3,),
        std=(0.4,),
    )
    trainer = make_train(dataclasses.replace(CE, model=ModelConfig("cnn2d", (4, 4))), ds)
    assert trainer.data["x_train"].dtype == jnp.uint8
    batch = trainer.train_batch(trainer.data, jnp.arange(5), jax.random.key(0))
    raw = np.asarray(trainer.data["x_train"][:5], np.float64)
    np.testing.assert_allclose(batch["x"], (raw / 255 - 0.3) / 0.4, rtol=1e-5, atol=1e-6)
    _, hist = jax.jit(trainer.run)(jax.random.key(0))
    assert np.isfinite(hist["test/loss"]).all()


def test_term_weight_ramp(digits, teacher):
    obj = ObjectiveConfig({"ce": {"weight": 1.0}, "kd": {"weight": 2.0, "ramp_steps": 10}})
    trainer = make_train(dataclasses.replace(CFG, objective=obj), digits, teacher)
    state = trainer.init(jax.random.key(0), jax.random.key(1))
    batch = trainer.train_batch(trainer.data, jnp.arange(32), jax.random.key(0))
    t_out = trainer.teacher_train_out(trainer.teacher_inputs, batch)
    for step, factor in ((0, 0.0), (4, 0.4), (10, 1.0), (25, 1.0)):
        s = state._replace(step=jnp.int32(step))
        total, (_, _, means) = trainer.loss(s.params, s, trainer.hparams(), batch, t_out, jax.random.key(0))
        np.testing.assert_allclose(total, means["ce"] + 2.0 * factor * means["kd"], rtol=1e-6)
    with pytest.raises(ConfigError, match="ramp_steps must be a non-negative integer"):
        ObjectiveConfig({"kd": {"ramp_steps": -3}})


def test_static_float_options_reach_the_term():
    # confusion's smoothing is fixed at init (not a swept hyper-parameter); it once never reached the factory.
    from jaxkd.terms import build_term

    term, values = build_term("confusion", {"smoothing": 0.3, "temperature": 3.0})
    assert "smoothing" not in values and values["temperature"] == 3.0
    spec = (jax.ShapeDtypeStruct((4, 5), jnp.float32), {})
    _, state = term.init(jax.random.key(0), spec, None)
    np.testing.assert_allclose(state["Q"], 0.7 * np.eye(5) + 0.3 / 5, rtol=1e-6)
