"""The WDSL experiments (Kang & Kim 2026): interaction tensor over KD groups, and Confusion Distillation."""

import csv
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import confusion_distillation as cd
from experiments import interaction_tensor as it
from jaxkd import terms
from jaxkd.data import load_dataset
from jaxkd.errors import ConfigError
from jaxkd.recipes import RecipeConfig
from jaxkd.terms import confusion
from jaxkd.train import make_train


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


# --- interaction_tensor ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def it_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("it")
    config = it.runlocal(it.PRESETS["paper"])  # the paper preset's wiring, shrunk
    it.run(config, str(out), progress=False)
    return out, config


def test_interaction_smoke_outputs(it_out):
    out, config = it_out
    summary = json.loads((out / "summary.json").read_text())
    n_test = load_dataset("digits").y_test.shape[0]
    with np.load(out / "omega.npz") as z:
        omega, assign, group = z["omega"], z["assign"], z["group"]
    m = 3 * config.n_seeds
    assert omega.dtype == bool and omega.shape == (m, n_test, summary["tensor"]["num_features"])
    assert list(summary["tensor"]["shape"]) == list(omega.shape)
    assert assign.shape == (m, config.k) and assign.min() == 0 and assign.max() == omega.shape[2] - 1
    assert [int((group == g).sum()) for g in it.GROUPS] == [config.n_seeds] * 3
    assert set(summary) >= {"tensor", "groups", "claim_test", "common_features", "confusion_vs_teacher"}
    for g in it.GROUPS:
        s = summary["groups"][g]
        assert s["n_models"] == config.n_seeds
        used = int(omega[group == g].any(axis=(0, 1)).sum())
        assert s["stats"]["unique_features"] == used
        for stat, ci in s["bootstrap"].items():
            assert np.isfinite([ci["value"], ci["ci_low"], ci["ci_high"]]).all(), (g, stat)
            assert ci["ci_low"] <= ci["ci_high"]
        # Decile means of (feature count, confidence): every test sample in exactly one bin, in count order.
        binned = s["confidence_vs_count"]["binned"]
        assert sum(b["n"] for b in binned) == n_test
        counts = omega[group == g].sum(axis=(0, 2))
        assert sum(b["count"] * b["n"] for b in binned) == pytest.approx(counts.sum())
        assert all(0.0 <= b["confidence"] <= 1.0 for b in binned)
        assert [b["count"] for b in binned] == sorted(b["count"] for b in binned)
    claim = summary["claim_test"]
    assert 0 < claim["p_fewer_unique"] <= 1 and 0 < claim["p_both"] <= 1
    assert claim["a"]["n_models"] == claim["b"]["n_models"] == config.n_seeds
    for name in ("teacher0", "teacher_mean"):
        assert set(summary["confusion_vs_teacher"][name]) == {"pearson", "spearman", "cosine", "soft_iou"}
        assert len(summary["confusion_vs_teacher"][name]["cosine"]["values"]) == config.n_seeds
    rows = _rows(out / "interaction.csv")
    assert {r["metric"] for r in rows} >= {"it/unique_features", "it/occurrences_per_feature", "confusion/pearson"}
    assert (out / "figure.png").stat().st_size > 0 and (out / "records.csv").stat().st_size > 0


def test_interaction_bad_input():
    base = it.runlocal(it.PRESETS["default"])
    with pytest.raises(ConfigError, match="at least 2"):
        dataclasses.replace(base, n_seeds=1)
    with pytest.raises(ConfigError, match="no layer 'conv5_x'") as err:
        it.run(dataclasses.replace(base, layer="conv5_x"), "/nonexistent/never-written", progress=False)
    assert "\n" not in str(err.value) and "block1" in str(err.value)
    with pytest.raises(ConfigError, match="lower k"):
        it.run(dataclasses.replace(base, k=5000), "/nonexistent/never-written", progress=False)
    with pytest.raises(ConfigError, match="alpha"):
        dataclasses.replace(base, alpha=1.5)


# --- confusion_distillation ------------------------------------------------------------------------

# 12 steps, phases 1:1:2:1:1 (hard, soft, hard, soft, hard) -> boundaries 2, 4, 8, 10.
_SOFT = np.array([0, 0, 1, 1, 0, 0, 0, 0, 1, 1, 0, 0], bool)


@pytest.fixture(scope="module")
def cd_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("cd")
    config = dataclasses.replace(
        cd.runlocal(cd.PRESETS["paper"]),
        phases=(1.0, 1.0, 2.0, 1.0, 1.0),
        recipe=RecipeConfig(learning_rate=5e-3, batch_size=64, steps=12),
    )
    cd.run(config, str(out), progress=False)
    return out, config


def test_cd_smoke_outputs(cd_out):
    out, config = cd_out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_label_leakage"] is False and summary["confusion_split"] == "train"
    s = summary["archs"]["cnn2d"]
    assert set(s["conditions"]) == set(cd.CONDITIONS)
    assert s["phases"]["boundaries_steps"] == [2, 4, 8, 10]
    assert s["Q"]["row_sum_max_abs_dev"] < 1e-5 and s["Q"]["min_entry"] > 0  # Q stays row-stochastic
    for name in ("label_smoothing - baseline", "cd - baseline"):
        t = s["comparisons"]["test/acc"]["selected"][name]
        assert t["n"] == config.n_seeds and "p_holm" in t and "cohens_dz" in t
    for c in cd.CONDITIONS:
        acc = s["conditions"][c]["test/acc"]["selected"]["mean"]
        assert 0 <= acc <= 1


def test_cd_phase_weights_per_step(cd_out):
    """Each step's logged terms follow the hand-written schedule; the loss is their weighted sum."""
    out, config = cd_out
    rows = [r for r in _rows(out / "records.csv") if r["condition"] == "cd" and r["seed"] == "0"]
    h = {
        m: np.array(
            [float(r["value"]) for r in sorted((r for r in rows if r["metric"] == m), key=lambda r: int(r["step"]))]
        )
        for m in ("train/ce", "train/ce_hard", "train/confusion", "train/loss")
    }
    assert all(v.shape == (12,) for v in h.values())
    np.testing.assert_array_equal(h["train/confusion"][~_SOFT], 0.0)
    assert (h["train/confusion"][_SOFT] > 0).all()
    np.testing.assert_array_equal(h["train/ce_hard"][_SOFT], 0.0)
    np.testing.assert_allclose(h["train/ce_hard"][~_SOFT], h["train/ce"][~_SOFT], rtol=1e-6)
    weights = config.conditions()["cd"]
    expected = (
        weights["ce.weight"] * h["train/ce"]
        + weights["ce_hard.weight"] * h["train/ce_hard"]
        + weights["confusion.weight"] * h["train/confusion"]
    )
    np.testing.assert_allclose(h["train/loss"], expected, rtol=1e-5)
    # The effective weights per step: CE 1 in hard steps and 0.3 in soft ones; CD 0.7 in soft ones.
    ce_eff = weights["ce.weight"] + weights["ce_hard.weight"] * ~_SOFT
    np.testing.assert_allclose(ce_eff, [1, 1, 0.3, 0.3, 1, 1, 1, 1, 0.3, 0.3, 1, 1], rtol=1e-6)


def test_phase_boundaries_and_mask():
    assert terms.phase_boundaries((3, 3, 6, 3, 15), 600, 20) == [60, 120, 240, 300]  # 30 epochs: 3, 3, 6, 3, 15
    assert terms.phase_boundaries((3, 3, 3, 3, 8), 200 * 391, 391) == [391 * e for e in (30, 60, 90, 120)]
    assert terms.phase_boundaries((1, 1, 2, 1, 1), 12, 20) == [2, 4, 8, 10]  # fewer epochs than ratios: steps
    mask = jax.jit(jax.vmap(lambda s: terms.soft_mask(s, [2, 4, 8, 10])))(jnp.arange(12))
    np.testing.assert_array_equal(np.asarray(mask), _SOFT.astype(np.float32))


def test_gated_confusion_update_waits_for_first_hard_phase():
    term = terms.gate_by_phase(dataclasses.replace(confusion(), phases=(1.0, 1.0), phase="soft"), [2, 4])
    spec = (jax.ShapeDtypeStruct((4, 3), jnp.float32), {})
    _, state = term.init(jax.random.key(0), spec, None)
    q0 = np.asarray(state["inner"]["Q"])
    np.testing.assert_allclose(q0, 0.9 * np.eye(3) + 0.1 / 3, rtol=1e-6)
    logits, labels = jnp.eye(3)[jnp.array([0, 0, 2, 2])], jnp.array([0, 1, 2, 2])  # class 1 predicted as 0
    hp = {"temperature": 2.0, "momentum": 0.9}
    before = term.eval_update({**state, "step": jnp.int32(2)}, logits, labels, hp)
    np.testing.assert_array_equal(np.asarray(before["inner"]["Q"]), q0)
    after = term.eval_update({**state, "step": jnp.int32(3)}, logits, labels, hp)
    p = np.array([[1, 0, 0], [1, 0, 0], [0, 0, 1]]) + 1e-8
    np.testing.assert_allclose(np.asarray(after["inner"]["Q"]), 0.9 * q0 + 0.1 * p / p.sum(1, keepdims=True), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(after["inner"]["Q"]).sum(1), 1.0, rtol=1e-6)


def test_confusion_at_smoothing_zero_is_finite_and_smoothing_is_checked():
    """smoothing 0: Q = I, one-hot targets; the value is T²·(−log softmax(z/T)_y) (0·log 0 = 0), finite gradient."""
    term = confusion(smoothing=0.0)
    spec = (jax.ShapeDtypeStruct((4, 3), jnp.float32), {})
    _, state = term.init(jax.random.key(0), spec, None)
    np.testing.assert_array_equal(np.asarray(state["Q"]), np.eye(3))
    logits = np.array([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0], [1.0, 1.0, 1.0], [-4.0, 0.0, 6.0]], np.float32)
    labels = np.array([0, 2, 1, 2])
    hp = {"temperature": 2.0, "momentum": 0.9}

    def mean_value(z):
        return jnp.mean(term.apply({}, state, (z, {}), None, {"y": labels}, None, hp)[0])

    values = jax.jit(lambda z: term.apply({}, state, (z, {}), None, {"y": labels}, None, hp)[0])(logits)
    z = logits.astype(np.float64) / 2.0
    log_p = z - np.log(np.exp(z).sum(1, keepdims=True))
    np.testing.assert_allclose(values, -4.0 * log_p[np.arange(4), labels], rtol=1e-5)
    grad = jax.jit(jax.grad(mean_value))(logits)
    assert np.isfinite(np.asarray(values)).all() and np.isfinite(np.asarray(grad)).all()
    _, uniform = confusion(smoothing=1.0).init(jax.random.key(0), spec, None)
    np.testing.assert_allclose(uniform["Q"], np.full((3, 3), 1 / 3), rtol=1e-6)
    for bad in (-0.1, 1.5):
        with pytest.raises(ConfigError, match="smoothing must lie in"):
            confusion(smoothing=bad)


def test_gate_by_phase_gates_step_and_eval_updates_by_one_rule():
    """A counting term through gate_by_phase: both of its state updates start with its first active segment."""

    def count_apply(aux, state, s_out, t_out, batch, key, hp):
        return jnp.ones(s_out[0].shape[:1]), {"n": state["n"] + 1}

    def count_init(key, s_spec, t_spec):
        return {}, {"n": jnp.zeros((), jnp.int32)}

    def count_eval(state, logits, labels, hp):
        return {"n": state["n"] + 100}

    spec = (jax.ShapeDtypeStruct((2, 3), jnp.float32), {})
    # Boundaries 2, 5 over 8 steps: steps 0-1 hard, 2-4 soft, 5-7 hard. Written out by hand: a soft term's
    # updates start at step 2 (its first active segment) and go on through the later hard segment; a hard
    # term's start at step 0. Values follow the phase mask exactly.
    expected = {"soft": [0, 0, 1, 2, 3, 4, 5, 6], "hard": [1, 2, 3, 4, 5, 6, 7, 8]}
    active = {"soft": [0, 0, 1, 1, 1, 0, 0, 0], "hard": [1, 1, 0, 0, 0, 1, 1, 1]}
    # An evaluation after `step` steps applies once more steps have run than the first active segment's start.
    evals_apply = {"soft": {1: False, 2: False, 3: True, 6: True}, "hard": {1: True, 3: True}}
    for phase in ("soft", "hard"):
        base = terms.Term(
            "count", count_apply, init=count_init, eval_update=count_eval, phases=(2.0, 3.0, 3.0), phase=phase
        )
        term = terms.gate_by_phase(base, [2, 5])
        _, state = term.init(jax.random.key(0), spec, None)

        def step(state, _, term=term):
            values, state = term.apply({}, state, (jnp.zeros((2, 3)), {}), None, {}, None, {})
            return state, (values[0], state["inner"]["n"])

        final, (values, counts) = jax.jit(lambda s, step=step: jax.lax.scan(step, s, None, length=8))(state)
        np.testing.assert_array_equal(np.asarray(counts), expected[phase], err_msg=phase)
        np.testing.assert_array_equal(np.asarray(values), active[phase], err_msg=phase)
        assert int(final["step"]) == 8
        for at, applies in evals_apply[phase].items():
            s = {"inner": {"n": jnp.int32(0)}, "step": jnp.int32(at)}
            assert int(term.eval_update(s, None, None, {})["inner"]["n"]) == (100 if applies else 0), (phase, at)


def test_confusion_target_split_is_never_val_or_test_by_default():
    """Q's labels come from the training set by default; val selects checkpoints, test needs an explicit leak flag."""
    assert confusion().eval_split == "train"
    assert terms.build_term("confusion", {"weight": 0.7})[0].eval_split == "train"
    with pytest.raises(ConfigError, match="leak_test_labels=True"):
        confusion(split="test")
    with pytest.raises(ConfigError, match="leak_test_labels=True"):
        terms.build_term("confusion", {"split": "test"})
    with pytest.raises(ConfigError, match="leak_test_labels must be true or false"):
        confusion(split="test", leak_test_labels="false")
    assert confusion(split="test", leak_test_labels=True).eval_split == "test"
    for name, preset in cd.PRESETS.items():  # every preset, as built and as the trainer gates it
        assert preset.confusion_split == "train" and not preset.leaks_test_labels, name
        assert preset.run_config(preset.archs[0]).objective.build()[0]["confusion"].eval_split == "train", name
    trainer = make_train(cd.runlocal(cd.PRESETS["default"]).run_config("cnn2d"), load_dataset("digits"))
    assert trainer.terms["confusion"].eval_split == "train" and trainer.terms["confusion"].phase == "soft"


def test_cd_leaky_option_is_explicit():
    base = cd.runlocal(cd.PRESETS["default"])
    with pytest.raises(ConfigError, match="leak_test_labels=True"):
        dataclasses.replace(base, confusion_split="test")
    leaky = dataclasses.replace(base, confusion_split="test", leak_test_labels=True)
    assert leaky.leaks_test_labels
    assert leaky.run_config("cnn2d").objective.build()[0]["confusion"].eval_split == "test"
    with pytest.raises(ConfigError, match="eval.select"):  # val picks the checkpoint: it cannot feed Q
        dataclasses.replace(base, confusion_split="val")
    with pytest.raises(ConfigError, match="confusion_split"):
        dataclasses.replace(base, confusion_split="tset")
    with pytest.raises(ConfigError, match="phases"):
        dataclasses.replace(base, phases=(1.0,))
    with pytest.raises(ConfigError, match="at least 2"):
        dataclasses.replace(base, n_seeds=1)
    with pytest.raises(ConfigError, match="model"):
        dataclasses.replace(base, archs=("resnet9000",))
