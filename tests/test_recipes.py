"""Optimisers and schedules against NumPy written from PyTorch's documented update rules."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkd.errors import ConfigError
from jaxkd.recipes import RECIPES, RecipeConfig, apply_updates, make_optimizer, recipe

P0 = np.array([1.0, -2.0, 0.5], np.float64)
GRADS = [np.array([0.3, -0.1, 0.2]), np.array([-0.5, 0.4, 0.1]), np.array([0.2, 0.2, -0.3])]
LR, WD, MOM = 0.1, 0.05, 0.9


def _jax_steps(optimizer, wd=WD):
    cfg = RecipeConfig(optimizer=optimizer)
    hp = {"weight_decay": jnp.float32(wd), "momentum": jnp.float32(MOM), "learning_rate": jnp.float32(LR)}
    tx = make_optimizer(cfg, hp)
    p = jnp.asarray(P0, jnp.float32)
    state = tx.init(p)
    for g in GRADS:
        u, state = jax.jit(tx.update)(jnp.asarray(g, jnp.float32), state, p)
        p = apply_updates(p, u, LR)
    return np.asarray(p)


def _torch_sgd(nesterov=False, momentum=MOM):
    """torch.optim.SGD (dampening 0): d = g + wd p; buf = d, then m buf + d; p -= lr (d + m buf | buf)."""
    p, buf = P0.copy(), None
    for g in GRADS:
        d = g + WD * p
        if momentum:
            buf = d.copy() if buf is None else momentum * buf + d
            d = d + momentum * buf if nesterov else buf
        p = p - LR * d
    return p


def _adam(decoupled):
    """torch.optim.Adam (L2 in the gradient) or AdamW (p -= lr wd p), eps 1e-8, betas (0.9, 0.999)."""
    p, m, v = P0.copy(), 0.0, 0.0
    for t, g in enumerate(GRADS, 1):
        d = g if decoupled else g + WD * p
        m = 0.9 * m + 0.1 * d
        v = 0.999 * v + 0.001 * d**2
        step = (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
        p = p - LR * step - (LR * WD * p if decoupled else 0.0)
    return p


@pytest.mark.parametrize(
    "optimizer,expected",
    [
        ("sgd", lambda: _torch_sgd(momentum=0.0)),
        ("momentum", _torch_sgd),
        ("nesterov", lambda: _torch_sgd(nesterov=True)),
        ("adam", lambda: _adam(False)),
        ("adamw", lambda: _adam(True)),
    ],
)
def test_optimizer_matches_pytorch_update_rule(optimizer, expected):
    np.testing.assert_allclose(_jax_steps(optimizer), expected(), rtol=1e-5, atol=1e-6)


def test_weight_decay_goes_before_momentum():
    # Decay applied after momentum (the old order) gives a different trajectory than PyTorch's.
    p, buf = P0.copy(), None
    for g in GRADS:
        buf = g.copy() if buf is None else MOM * buf + g
        p = p - LR * (buf + WD * p)
    assert not np.allclose(_jax_steps("momentum"), p, rtol=1e-4)


def test_decay_mask_leaves_masked_leaves_alone():
    tx = make_optimizer(RecipeConfig(optimizer="sgd"), {"weight_decay": 0.5, "momentum": 0.0}, {"a": True, "b": False})
    params = {"a": jnp.ones(2), "b": jnp.ones(2)}
    u, _ = tx.update({"a": jnp.zeros(2), "b": jnp.zeros(2)}, tx.init(params), params)
    np.testing.assert_allclose(u["a"], 0.5)
    np.testing.assert_allclose(u["b"], 0.0)


def test_multistep_with_warmup_in_epochs():
    cfg = RecipeConfig(schedule="multistep", milestones=(3, 6), decay_rate=0.1, warmup=1.0, steps=None, epochs=8)
    f = cfg.schedule_fn(steps_per_epoch=10)
    assert cfg.total_steps(10) == 80
    expected = {0: 0.0, 5: 0.5, 10: 1.0, 29: 1.0, 30: 0.1, 59: 0.1, 60: 0.01, 79: 0.01}
    for t, v in expected.items():
        np.testing.assert_allclose(float(f(t)), v, rtol=1e-6, atol=1e-7, err_msg=f"step {t}")


def test_repdistiller_recipe_decays_after_epoch_150():
    cfg = RECIPES["repdistiller_cifar"]
    spe = 781  # 50,000 / 64
    f = cfg.schedule_fn(spe)
    assert cfg.total_steps(spe) == 240 * spe
    # RepDistiller decays when epoch > 150 with 1-based epochs: 0-based epoch 150 is the first decayed one.
    assert float(f(150 * spe - 1)) == pytest.approx(1.0)
    assert float(f(150 * spe)) == pytest.approx(0.1)
    assert float(f(180 * spe)) == pytest.approx(0.01)
    assert float(f(210 * spe)) == pytest.approx(0.001)
    assert recipe("wdsl_cifar", epochs=300).epochs == 300


def test_cosine_schedule():
    cfg = RecipeConfig(schedule="cosine", steps=100)
    f = cfg.schedule_fn(steps_per_epoch=7)
    for t in (0, 13, 50, 99, 100):
        np.testing.assert_allclose(float(f(t)), 0.5 * (1 + np.cos(np.pi * t / 100)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs,match",
    [({"warmup": 200.0, "steps": 100}, "warm-up"), ({"milestones": (0,)}, "positive and increasing")],
)
def test_bad_schedules(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        RecipeConfig(schedule="multistep", **kwargs).schedule_fn(10)
