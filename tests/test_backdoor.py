"""Backdoor triggers and the backdoor_kd experiment: where the trigger goes, what poisoning changes, ASR."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkd.backdoor import Trigger, attack_success_rate, poison
from jaxkd.config import DataConfig, EvalConfig, ModelConfig, RunConfig
from jaxkd.data.dataset import Dataset
from jaxkd.errors import ConfigError
from jaxkd.recipes import RecipeConfig
from tests.test_experiments import check_functional_kd, read_records


def _toy(n=40, shape=(6, 6), classes=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 0.5, (n, *shape)).astype(np.float32)
    y = (np.arange(n) % classes).astype(np.int32)
    return Dataset("toy", x, y, x[:8].copy(), y[:8].copy(), num_classes=classes)


def test_trigger_mask_written_out_by_hand():
    m = Trigger(size=2).mask((8, 8))
    expected = np.zeros((8, 8), bool)
    for i in (6, 7):
        for j in (6, 7):
            expected[i, j] = True
    np.testing.assert_array_equal(m, expected)
    m1 = Trigger(size=3).mask((40,))
    assert m1.sum() == 3 and m1[37:].all() and not m1[:37].any()
    m3 = Trigger(size=2).mask((5, 5, 3))
    assert m3.sum() == 2 * 2 * 3 and m3[3:, 3:, :].all()


def test_trigger_writes_only_its_patch_in_numpy_and_jax():
    x = np.random.default_rng(1).uniform(size=(3, 8, 8)).astype(np.float32)
    t = Trigger(size=2, value=0.7)
    out_np = t.apply(x)
    out_jnp = np.asarray(t.apply(jnp.asarray(x)))
    np.testing.assert_array_equal(out_np, out_jnp)
    assert out_np.dtype == np.float32
    np.testing.assert_array_equal(out_np[:, :6, :], x[:, :6, :])
    np.testing.assert_array_equal(out_np[:, :, :6], x[:, :, :6])
    assert np.all(out_np[:, 6:, 6:] == np.float32(0.7))


def test_trigger_on_uint8_images_is_a_fraction_of_255():
    x = np.full((2, 5, 5, 3), 7, np.uint8)
    white = Trigger(size=2, value=1.0).apply(x)
    assert white.dtype == np.uint8 and np.all(white[:, 3:, 3:, :] == 255) and np.all(white[:, :3] == 7)
    grey = np.asarray(Trigger(size=2, value=0.5).apply(jnp.asarray(x)))
    assert np.all(grey[:, 3:, 3:, :] == 128)  # round(0.5 · 255)
    with pytest.raises(ConfigError, match="fraction of the maximum"):
        Trigger(value=2.0).apply(x)
    with pytest.raises(ConfigError, match="finite"):
        Trigger(value=float("nan"))


def test_poison_changes_exactly_the_chosen_examples():
    d = _toy()
    t = Trigger(size=2, value=1.0, target=1)
    p, idx = poison(d, t, 0.2, seed=3)
    candidates = np.flatnonzero(d.y_train != 1)
    assert len(idx) == round(0.2 * len(candidates)) and len(set(idx)) == len(idx)
    assert np.all(d.y_train[idx] != 1)  # drawn only from other classes
    assert np.all(p.y_train[idx] == 1)
    assert np.all(p.x_train[idx][:, 4:, 4:] == 1.0)
    np.testing.assert_array_equal(p.x_train[idx][:, :4, :], d.x_train[idx][:, :4, :])
    rest = np.setdiff1d(np.arange(len(d.y_train)), idx)
    np.testing.assert_array_equal(p.x_train[rest], d.x_train[rest])
    np.testing.assert_array_equal(p.y_train[rest], d.y_train[rest])
    np.testing.assert_array_equal(p.x_test, d.x_test)  # the test split stays clean
    np.testing.assert_array_equal(p.y_test, d.y_test)
    np.testing.assert_array_equal(poison(d, t, 0.2, seed=3)[1], idx)  # reproducible
    assert not np.array_equal(poison(d, t, 0.2, seed=4)[1], idx)
    assert p.content_hash() != d.content_hash() and p.name != d.name
    assert np.all(d.y_train[:4] == np.arange(4))  # the clean dataset is not modified in place


@pytest.mark.parametrize(
    "kwargs,match", [({"fraction": 0.0}, "fraction"), ({"fraction": 1.5}, "fraction"), ({"target": 7}, "not a class")]
)
def test_poison_bad_input(kwargs, match):
    t = Trigger(target=kwargs.pop("target", 0))
    with pytest.raises(ConfigError, match=match):
        poison(_toy(), t, kwargs.get("fraction", 0.1), seed=0)


def test_trigger_bad_input():
    with pytest.raises(ConfigError, match="size"):
        Trigger(size=0)
    with pytest.raises(ConfigError, match="exceeds"):
        Trigger(size=9).mask((8, 8))


def test_attack_success_rate_by_hand():
    # labels 0..3, target 2: examples 0, 1, 3 are eligible; predictions 2, 0, 2, 2 -> hits on 0 and 3 (not 2).
    labels = jnp.array([0, 1, 2, 3])
    logits = jax.nn.one_hot(jnp.array([2, 0, 2, 2]), 4)
    assert float(attack_success_rate(logits, labels, 2)) == pytest.approx(2 / 3)
    stacked = jnp.stack([logits, jax.nn.one_hot(jnp.array([1, 1, 1, 1]), 4)])
    np.testing.assert_allclose(np.asarray(attack_success_rate(stacked, labels, 2)), [2 / 3, 0.0])


def test_a_teacher_trained_on_poisoned_digits_learns_the_trigger(digits):
    """The poisoning is real: the trigger fires on a poisoned model and not on a clean one."""
    from jaxkd.experiment import train_teacher
    from jaxkd.train import make_train

    t = Trigger(size=2, value=1.0, target=0)
    config = RunConfig(
        model=ModelConfig("mlp", (64,)),
        recipe=RecipeConfig(learning_rate=3e-3, batch_size=64, steps=300),
        data=DataConfig("digits"),
        eval=EvalConfig(every=300),
    )
    out = {}
    for name, data in (("clean", digits), ("poisoned", poison(digits, t, 0.1, seed=0)[0])):
        teacher, _ = train_teacher(config, data, jax.random.key(0), progress=False)
        trainer = make_train(config, digits)
        p = {"model": teacher.params}
        x = trainer.data["x_test"]
        clean = trainer.predict_split(p, teacher.rest, trainer.data, "test")
        trig = trainer.predict_split(p, teacher.rest, {"x_test": t.apply(x)}, "test")
        out[name] = (
            float(jnp.mean(jnp.argmax(clean, -1) == trainer.data["y_test"])),
            float(attack_success_rate(trig, trainer.data["y_test"], 0)),
        )
    assert out["poisoned"][1] > 0.8, out
    assert out["clean"][1] < 0.2, out
    assert out["poisoned"][0] > 0.85 and out["clean"][0] > 0.85, out


def test_backdoor_kd_smoke_outputs(tmp_path):
    import experiments

    mod = experiments.get("backdoor_kd")
    config = mod.runlocal(mod.PRESETS["default"])
    mod.run(config, str(tmp_path), progress=False)
    s = json.loads((tmp_path / "summary.json").read_text())
    setup = s["setups"]["digits:mlp"]
    assert list(setup["conditions"]) == ["base", "siddo", "kd_a0.5_T4", "kd_a0.9_T4", "rcd_fixed", "rcd_step"]
    # Every condition's and the teachers' attack success rates, and every declared test of each test metric,
    # against NumPy and scipy on the per-seed records.
    records = read_records(tmp_path / "records.csv")
    for metric in mod.BACKDOOR_METRICS:
        check_functional_kd(config, s, records, headline=metric)
    assert "kd_a0.9_T4 - base" in setup["tests"]["backdoor/asr"]
    assert s["trigger"]["size"] == 2 and s["trigger"]["poison_fraction"] == 0.1
    # The teachers trained on the poisoned set, the students on the clean one (content hashes).
    from jaxkd.data import load_dataset

    clean = load_dataset("digits")
    poisoned = poison(clean, config.trigger, config.poison_fraction, config.poison_seed)[0]
    assert setup["data_hashes"] == {"teacher": poisoned.content_hash(), "students": clean.content_hash()}
    assert len([r for r in records if r["condition"] == "teacher" and r["metric"] == "backdoor/asr"]) == 2
    assert (tmp_path / "figure.png").read_bytes()[:4] == b"\x89PNG"
