"""What is reported is what is kept: selection inside the compiled run, its rule, and what reads it.

Every expected value here is computed outside the code under test: the selection rule from the history
with NumPy's lexsort, accuracies from the kept parameters with the model applied by hand and NumPy's argmax.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkd.config import EvalConfig, ModelConfig, ObjectiveConfig, RunConfig
from jaxkd.ensemble import from_sweep
from jaxkd.errors import ConfigError
from jaxkd.experiment import run_methods, train_teacher
from jaxkd.models import make_model
from jaxkd.recipes import RecipeConfig
from jaxkd.results import summarize_sweep
from jaxkd.selection import init_selected, update_selected
from jaxkd.sweep import run_sweep
from jaxkd.teacher import Teacher
from jaxkd.terms import Term
from jaxkd.train import make_train

# Few validation examples and frequent evaluations: ties in val/acc are the rule, not the exception.
CFG = RunConfig(
    model=ModelConfig("mlp", (16,)),
    recipe=RecipeConfig(steps=120, batch_size=32, learning_rate=2e-2),
    eval=EvalConfig(every=6),
)


def _untrained_teacher(model: ModelConfig, data) -> Teacher:
    m = make_model(model.name, data.in_shape, data.num_classes, model.widths)
    return Teacher(m, *m.init(jax.random.key(5)))


def _rule_index(acc_E, loss_E) -> int:
    """Independent statement of the rule: highest accuracy, then lowest loss, then the latest evaluation."""
    order = np.lexsort((np.arange(len(acc_E)), -loss_E, acc_E))  # last key is primary; ascending
    return int(order[-1])


def test_update_selected_follows_the_rule_on_a_literal_sequence():
    acc = [0.5, 0.9, 0.9, 0.9, np.nan, 0.8]
    loss = [1.0, 0.40, 0.30, 0.30, 0.1, 0.1]
    sel = init_selected({"w": jnp.zeros(())}, {})
    for t, (a, lo) in enumerate(zip(acc, loss), start=1):
        sel = update_selected(sel, {"w": jnp.float32(t)}, {}, t, jnp.float32(a), jnp.float32(lo), lower=False)
    # Evaluations 3 and 4 tie on accuracy and loss: the later one (step 4) wins; NaN (5) is never taken.
    assert int(sel.step) == 4 and float(sel.params["w"]) == 4.0
    # A loss metric is minimised: the lowest value wins, the later of equals.
    sel = init_selected({"w": jnp.zeros(())}, {})
    for t, v in enumerate([0.5, 0.3, 0.3, 0.4], start=1):
        sel = update_selected(sel, {"w": jnp.float32(t)}, {}, t, jnp.float32(v), jnp.float32(v), lower=True)
    assert int(sel.step) == 3


def test_selected_model_is_the_reported_one_and_ties_go_to_the_later_step(digits):
    trainer = make_train(CFG, digits)
    res = run_sweep(trainer, jax.random.key(0), 4, progress=False)
    acc, loss = res.history["val/acc"][:, 0], res.history["val/loss"][:, 0]  # [S, E]
    want = np.array([_rule_index(a, lo) for a, lo in zip(acc, loss)])
    np.testing.assert_array_equal(res.selected_index[:, 0], want)
    # The rule matters here: the earliest maximum (np.argmax) differs from it for some seed.
    assert (np.argmax(acc, axis=-1) != want).any()
    # The kept parameters reproduce the reported test accuracy at the selected evaluation exactly.
    params, rest = res.model("selected")
    x = trainer.prepare(trainer.data["x_test"])
    y = np.asarray(trainer.data["y_test"])
    for s in range(4):
        p, r = jax.tree.map(lambda a, s=s: a[s, 0], (params, rest))
        logits = trainer.model.apply(p, r, x, train=False)[0]
        kept_acc = np.mean(np.argmax(np.asarray(logits), -1) == y)
        assert kept_acc == pytest.approx(res.history["test/acc"][s, 0, want[s]], abs=1e-6)
    summary = summarize_sweep(res, ["ce"])["ce"]
    assert summary["selected_steps"] == [int(res.steps[i]) for i in want]
    assert summary["selected_by"] == "val/acc"


def test_teacher_students_distil_from_and_ensembles_hold_the_selected_model(digits):
    teacher, t_res = train_teacher(CFG, digits, jax.random.key(1), progress=False)
    i = int(t_res.selected_index[0, 0])
    assert i != len(t_res.steps) - 1  # selected before the end, so "last" would be another model
    x = jnp.asarray(digits.x_test, jnp.float32)
    x = (x - jnp.asarray(digits.mean)) / jnp.asarray(digits.std) if digits.mean is not None else x
    t_acc = np.mean(np.argmax(np.asarray(teacher.apply(teacher.inputs, x)[0]), -1) == digits.y_test)
    assert t_acc == pytest.approx(t_res.history["test/acc"][0, 0, i], abs=1e-6)
    assert t_acc != pytest.approx(t_res.history["test/acc"][0, 0, -1], abs=1e-6)
    # Students: the ensemble saved from a sweep is each run's selected model, and says so.
    student = dataclasses.replace(CFG, objective=ObjectiveConfig({"ce": {"weight": 0.5}, "kd": {"weight": 0.5}}))
    trainer = make_train(student, digits, teacher)
    conds = {"ce": {"ce.weight": 1.0, "kd.weight": 0.0}, "kd": {"ce.weight": 0.5, "kd.weight": 0.5}}
    res, _, summary = run_methods(trainer, jax.random.key(2), 2, conds, t_res, progress=False)
    ens = from_sweep(res, trainer, list(conds))
    assert [m["model"] for m in ens.members] == ["selected"] * 4
    assert [m["step"] for m in ens.members] == list(res.selected_steps.reshape(-1))
    logits = np.asarray(trainer.model.apply(*jax.tree.map(lambda a: a[3], (ens.params, ens.rest)), x, train=False)[0])
    assert np.mean(np.argmax(logits, -1) == digits.y_test) == pytest.approx(
        res.history["test/acc"][1, 1, res.selected_index[1, 1]], abs=1e-6
    )
    assert summary["teacher"]["distilled_from"] == "selected"
    assert summary["scope"]["shared_teacher"] and "student seeds only" in summary["scope"]["note"]


def test_eval_select_is_honoured_and_never_the_test_set(digits):
    cfg = dataclasses.replace(CFG, eval=EvalConfig(every=6, select="val/loss"))
    res = run_sweep(make_train(cfg, digits), jax.random.key(0), 2, progress=False)
    loss = res.history["val/loss"][:, 0]
    want = [_rule_index(-lo, lo) for lo in loss]  # lower is better for a loss
    np.testing.assert_array_equal(res.selected_index[:, 0], want)
    assert summarize_sweep(res, ["ce"])["ce"]["selected_by"] == "val/loss"
    with pytest.raises(ConfigError, match="selects on the test set"):
        EvalConfig(select="test/acc")
    with pytest.raises(ConfigError, match="not a metric this run evaluates"):
        make_train(dataclasses.replace(CFG, eval=EvalConfig(every=6, select="val/agreement")), digits)


def test_a_term_reading_an_undeclared_feature_is_refused_when_built(digits):
    from jaxkd import terms as terms_mod

    def sneaky(**_):
        def apply(aux, state, s_out, t_out, batch, key, hp):
            return jnp.sum(t_out[1]["block0"], axis=-1), state  # never declared

        return Term(kind="sneaky", apply=apply, needs_teacher=True)

    teacher = _untrained_teacher(ModelConfig("mlp", (8,)), digits)
    terms_mod.TERMS["sneaky"] = sneaky
    try:
        cfg = dataclasses.replace(CFG, objective=ObjectiveConfig({"ce": {}, "sneaky": {"weight": 1.0}}))
        for mode in ("cached", "live"):
            with pytest.raises(ConfigError, match="reads the teacher feature 'block0' without declaring it"):
                make_train(dataclasses.replace(cfg, teacher=mode), digits, teacher)
    finally:
        del terms_mod.TERMS["sneaky"]


def test_weight_decay_mask_pairs_aux_params_with_their_term_by_name(digits):
    cfg = dataclasses.replace(
        CFG,
        model=ModelConfig("cnn2d", (4, 8)),
        objective=ObjectiveConfig(
            {
                "ce": {},
                "hint1": {"kind": "fitnet", "student": "block0", "teacher": "block0", "weight": 1.0},
                "hint2": {"kind": "fitnet", "student": "block1", "teacher": "block1", "weight": 1.0},
            }
        ),
    )
    trainer = make_train(cfg, digits, _untrained_teacher(cfg.model, digits))
    trainer = dataclasses.replace(
        trainer, terms={**trainer.terms, "hint2": dataclasses.replace(trainer.terms["hint2"], decay_aux=False)}
    )
    params = trainer.init(jax.random.key(0), jax.random.key(1)).params
    # Another order than the objective's (ce, hint1, hint2), as a restore may give: pairing by position would
    # hand hint2 the mask of ce (decay on) and hint1 that of hint2 (decay off).
    reordered = {**params, "terms": dict(reversed(list(params["terms"].items())))}
    mask = trainer._decay_mask(reordered)
    assert set(jax.tree.leaves(mask["terms"]["hint1"])) == {True}
    assert set(jax.tree.leaves(mask["terms"]["hint2"])) == {False}


def test_resume_refuses_another_vmap_width_and_records_the_program(digits, tmp_path):
    trainer = make_train(CFG, digits)
    ckpt = str(tmp_path / "ck")
    res = run_sweep(trainer, jax.random.key(0), 2, chunk_steps=60, checkpoint_dir=ckpt, progress=False, vmap_width=1)
    fp = res.fingerprint
    assert fp["vmap_width"] == 1 and fp["n_devices"] == jax.device_count()
    assert fp["versions"]["jax"] == jax.__version__ and "jaxkd_commit" in fp["versions"]
    with pytest.raises(ConfigError, match="vmap_width"):
        run_sweep(trainer, jax.random.key(0), 2, chunk_steps=60, checkpoint_dir=ckpt, resume=True, vmap_width=None)


def test_a_sweep_that_cannot_fit_is_refused_before_it_starts(digits):
    trainer = make_train(CFG, digits)
    with pytest.raises(ConfigError, match=r"seeds fit: lower --seeds"):
        run_sweep(trainer, jax.random.key(0), 10**9, progress=False)


def test_no_selection_keeps_the_last_model(digits):
    cfg = dataclasses.replace(CFG, eval=EvalConfig(every=6, splits=("test",), select=None))
    res = run_sweep(make_train(cfg, digits), jax.random.key(0), 2, progress=False)
    np.testing.assert_array_equal(res.selected_steps, np.full((2, 1), res.steps[-1]))
    for a, b in zip(jax.tree.leaves(res.model("selected")), jax.tree.leaves(res.model("last"))):
        np.testing.assert_array_equal(a, b)
