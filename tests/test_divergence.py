"""Divergence isolation: a run whose loss or update turns NaN/Inf is stopped inside the compiled program.

One grid point with an absurd SGD learning rate (1e12) diverges at step 3;
the others must be bitwise what a sweep without that point gives, and the
diverging run must be reported with the step a plain host-side replay (NumPy
``isfinite`` after every step, no masking) finds.

With runs vectorised one at a time (``vmap_width=1``, the CPU default) the
reference is the grid without the point. Fully vmapped (``None``) XLA:CPU
rounds some reductions differently for another number of grid points even
when every run is finite (1 ulp in ``val/loss``), so there the reference is
the same grid with the point's learning rate made finite.
"""

import dataclasses
import functools

import jax
import numpy as np
import pytest

from jaxkd.config import EvalConfig, ModelConfig, RunConfig
from jaxkd.keys import seed_run_keys
from jaxkd.program import default_compiler_options
from jaxkd.recipes import RecipeConfig
from jaxkd.results import summarize_sweep
from jaxkd.sweep import run_sweep
from jaxkd.train import make_train

CFG = RunConfig(
    model=ModelConfig("mlp", (16,)),
    recipe=RecipeConfig(optimizer="sgd", learning_rate=0.05, steps=12, batch_size=32),
    eval=EvalConfig(every=2),
)
BAD_LR = 1e12
KEY = 5


@pytest.fixture(scope="module")
def sgd(digits):
    return make_train(CFG, digits)


def host_replay(trainer, lr: float, n_steps: int):
    """``(step, params)``: the first 1-based step whose loss or new parameters are NaN/Inf, and the params before it.

    Plain SGD (``p - lr * g``, the recipe has no weight decay and a constant
    rate) on the host, one step at a time, seed 0's keys and data order; the
    check is NumPy's, not the trainer's.
    """
    keys = seed_run_keys(jax.random.key(KEY), 1)
    state = trainer.init(keys.init[0, 0], keys.data[0, 0])
    hp = {**trainer.hparams(), "learning_rate": np.float32(lr)}

    # compiled with the sweep's own XLA options, so that both run the same kernels (the update is NumPy's)
    @functools.partial(jax.jit, compiler_options=default_compiler_options())
    def loss_and_grads(params, t):
        perms = trainer.epoch_permutations(state.perm_key, 0, n_steps // trainer.steps_per_epoch + 2)
        aug_key, term_key = jax.random.split(jax.random.fold_in(jax.random.wrap_key_data(state.step_key), t))
        batch = trainer.train_batch(trainer.data, trainer.batch_indices(perms, 0, t), aug_key)
        (loss, _), grads = jax.value_and_grad(trainer.loss, has_aux=True)(
            params, state._replace(step=t), hp, batch, None, term_key
        )
        return loss, grads

    params = jax.tree.map(np.asarray, state.params)
    for t in range(n_steps):
        loss, grads = loss_and_grads(params, np.int32(t))
        new = jax.tree.map(lambda p, g: p - np.float32(lr) * np.asarray(g), params, grads)
        if not np.isfinite(loss) or not all(np.isfinite(x).all() for x in jax.tree.leaves(new)):
            return t + 1, params
        params = new
    return 0, params


@pytest.mark.parametrize(("width", "ref_grid"), [(1, [0.05, 0.5]), (None, [0.05, 0.1, 0.5])])
def test_diverging_point_leaves_the_others_bitwise_and_is_reported_with_its_step(sgd, width, ref_grid):
    with pytest.warns(RuntimeWarning, match=r"seed 0 at grid point 1, seed 1 at grid point 1 \(at steps 3, 3\)"):
        res = run_sweep(
            sgd, jax.random.key(KEY), 2, {"learning_rate": [0.05, BAD_LR, 0.5]}, vmap_width=width, progress=False
        )
    ref = run_sweep(sgd, jax.random.key(KEY), 2, {"learning_rate": ref_grid}, vmap_width=width, progress=False)
    assert not ref.diverged.any()
    keep, ref_keep = np.array([0, 2]), np.array([0, len(ref_grid) - 1])
    for k, v in ref.history.items():
        assert np.array_equal(res.history[k][:, keep], v[:, ref_keep]), k
    leaves, ref_leaves = jax.tree.leaves(res.states), jax.tree.leaves(ref.states)
    assert len(leaves) == len(ref_leaves)
    for a, b in zip(leaves, ref_leaves):  # params, optimiser, selected model, keys, counters
        assert np.array_equal(np.asarray(a)[:, keep], np.asarray(b)[:, ref_keep])

    # The diverging run: flagged at the step the host replay finds, frozen at the parameters before it.
    step, params_before = host_replay(sgd, BAD_LR, CFG.recipe.steps)
    assert step == 3
    assert res.diverged.tolist() == [[False, True, False]] * 2
    assert res.diverged_step.tolist() == [[0, step, 0]] * 2
    frozen = jax.tree.map(lambda a: np.asarray(a)[0, 1], res.states.params)
    for a, b in zip(jax.tree.leaves(frozen), jax.tree.leaves(params_before)):
        assert np.isfinite(a).all()
        np.testing.assert_allclose(a, b, rtol=1e-6)
    # Records: real before the interval that holds step 3 (evaluated at step 2), NaN from it on.
    assert np.isfinite(res.history["train/loss"][:, 1, 0]).all() and np.isfinite(res.history["val/acc"][:, 1, 0]).all()
    for k, v in res.history.items():
        assert np.isnan(v[:, 1, 1:]).all(), k
    assert res.selected_steps[:, 1].tolist() == [2, 2]  # no later model is selected
    summary = summarize_sweep(res, ["a", "bad", "b"])
    assert summary["bad"]["n_diverged"] == 2 and summary["bad"]["diverged_seeds"] == [0, 1]
    assert summary["bad"]["diverged_steps"] == [3, 3]
    assert summary["a"]["n_diverged"] == 0 and summary["a"]["test/acc"]["last"]["n"] == 2
    ok = summarize_sweep(ref, ["a", "mid", "b"] if len(ref_grid) == 3 else ["a", "b"])
    assert summary["a"]["test/acc"] == ok["a"]["test/acc"] and summary["b"]["test/loss"] == ok["b"]["test/loss"]


def test_adam_divergence_freezes_the_optimiser_state(digits):
    """Adam's step count and moments stay at their values before the diverging step; the run's clock goes on."""
    cfg = dataclasses.replace(CFG, recipe=RecipeConfig(optimizer="adam", learning_rate=1e-3, steps=12, batch_size=32))
    trainer = make_train(cfg, digits)
    # Adam's first update is about +-1 per weight: at 3e38 the weights reach float32's range, the next forward
    # pass overflows.
    with pytest.warns(RuntimeWarning, match=r"seed 0 at grid point 1 \(at step 2\)"):
        res = run_sweep(trainer, jax.random.key(KEY), 1, {"learning_rate": [1e-3, 3e38]}, progress=False)
    assert res.diverged_step.tolist() == [[0, 2]]
    adam = res.states.opt_state[1]  # chain(decay, scale_by_adam): ScaleByAdamState
    assert adam.count[0].tolist() == [12, 1]  # one update applied to the diverged run, then none
    assert int(res.states.step[0, 1]) == 12
    for leaf in jax.tree.leaves((res.states.params, adam.mu, adam.nu)):
        assert np.isfinite(np.asarray(leaf)[0, 1]).all()
