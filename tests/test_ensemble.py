import jax
import numpy as np
import pytest

from jaxkd.config import EvalConfig, ModelConfig, RunConfig
from jaxkd.ensemble import from_sweep, load_ensemble, predict, save_ensemble
from jaxkd.errors import ConfigError
from jaxkd.recipes import RecipeConfig
from jaxkd.sweep import run_sweep
from jaxkd.train import make_train


@pytest.fixture(scope="module")
def sweep(digits):
    cfg = RunConfig(
        model=ModelConfig("cnn2d", (4, 6)), recipe=RecipeConfig(steps=20, batch_size=32), eval=EvalConfig(every=20)
    )
    trainer = make_train(cfg, digits)
    return trainer, run_sweep(trainer, jax.random.key(0), 2, {"learning_rate": [1e-3, 3e-3]}, progress=False)


def test_ensemble_round_trips_bitwise(sweep, digits, tmp_path):
    trainer, result = sweep
    ens = from_sweep(result, trainer, ["slow", "fast"])
    assert len(ens) == 4 and [m["condition"] for m in ens.members] == ["slow", "fast", "slow", "fast"]
    path = save_ensemble(str(tmp_path / "ens"), ens)
    back = load_ensemble(path)
    for a, b in zip(jax.tree.leaves((ens.params, ens.rest)), jax.tree.leaves((back.params, back.rest))):
        np.testing.assert_array_equal(a, b)
    assert back.members == ens.members and back.fingerprint["dataset"]["hash"] == digits.content_hash()
    p1 = predict(ens, digits.x_test, features=["block1"], batch_size=100)
    p2 = predict(back, digits.x_test, features=["block1"], batch_size=100)
    np.testing.assert_array_equal(p1["logits"], p2["logits"])
    np.testing.assert_array_equal(p1["features"]["block1"], p2["features"]["block1"])
    with pytest.raises(ConfigError, match="not empty"):
        save_ensemble(path, ens)


def test_predict_matches_each_member_and_the_sweeps_evaluation(sweep, digits):
    trainer, result = sweep
    ens = from_sweep(result, trainer)
    out = predict(ens, digits.x_test, features=["block0", "pooled"], batch_size=64)
    n = len(digits.y_test)
    assert out["logits"].shape == (4, n, 10) and out["features"]["block0"].shape == (4, n, 8, 8, 4)
    for m, member in enumerate(ens.members):
        s, g = member["seed"], member["grid_point"]
        params, rest = jax.tree.map(lambda a, s=s, g=g: a[s, g], (result.states.params["model"], result.states.rest))
        ref = trainer.model.apply(params, rest, digits.x_test, train=False)[0]
        np.testing.assert_allclose(out["logits"][m], ref, rtol=1e-5, atol=1e-5)
        acc = np.mean(np.argmax(out["logits"][m], -1) == digits.y_test)
        np.testing.assert_allclose(acc, result.history["test/acc"][s, g, -1], atol=1e-6)
    with pytest.raises(ConfigError, match="no feature 'nope'"):
        predict(ens, digits.x_test, features=["nope"])
    sub = ens.select([1, 3])
    assert [m["condition"] for m in sub.members] == ["point1", "point1"]
