"""experiments/functional_kd.py: exact controls from the experiment's own keys, RCD targets, outputs, bad input."""

import csv
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import functional_kd as fkd
from jaxkd.config import DataConfig, EvalConfig, ModelConfig
from jaxkd.errors import ConfigError
from jaxkd.program import SweepProgram
from jaxkd.recipes import RecipeConfig
from jaxkd.train import make_train
from tests.test_experiments import check_functional_kd

TINY = fkd.Setup(DataConfig("digits"), ModelConfig("mlp", (8,)), RecipeConfig(batch_size=32, steps=4))
CFG = fkd.Config(n_seeds=2, setups=(TINY,), eval=EvalConfig(every=2))


def test_siddo_and_disdo_take_exactly_the_teachers_init_or_data_order(digits):
    """The arrays of the experiment's student program: SIDDO starts from teacher s's initial parameters
    with another data order, DISDO the reverse; base and KD use neither."""
    n, keys = CFG.n_seeds, CFG.keys(0)
    names = CFG.program_conditions()
    # Model parameters come from split(init_key)[0] whatever the objective's terms, so the CE-only
    # trainer builds the same initial models as the student program (and compiles once, not twice).
    trainer = make_train(CFG.teacher_config(TINY), digits)
    grid = {"learning_rate": [TINY.recipe.learning_rate] * len(names)}
    init = SweepProgram(trainer, n, grid).init_from_keys(CFG.run_keys(keys["teacher"], keys["student"]))
    for s in range(n):
        # Teacher s's initial parameters and first epoch's order, by hand from the documented key scheme.
        init_key, data_key = jax.random.split(jax.random.split(keys["teacher"], n)[s])
        t_params, _ = trainer.model.init(jax.random.split(init_key)[0])
        t_order = np.asarray(trainer.epoch_permutations(jax.random.key_data(jax.random.split(data_key)[0]), 0, 1))

        def params_equal(g, s=s, t_params=t_params):
            return all(
                np.array_equal(np.asarray(a[s, g]), np.asarray(b))
                for a, b in zip(jax.tree.leaves(init.params["model"]), jax.tree.leaves(t_params))
            )

        def order(g, s=s):
            return np.asarray(trainer.epoch_permutations(init.perm_key[s, g], 0, 1))

        for g, name in enumerate(names):
            same_init, same_order = params_equal(g), np.array_equal(order(g), t_order)
            assert same_init == (name == "siddo"), name
            assert same_order == (name == "disdo"), name
        # Every non-SIDDO point starts from the student's own parameters, equal across points (paired).
        own = [g for g, c in enumerate(names) if c != "siddo"]
        for g in own[1:]:
            assert all(
                np.array_equal(np.asarray(a[s, g]), np.asarray(a[s, own[0]]))
                for a in jax.tree.leaves(init.params["model"])
            )
    assert fkd._whose("siddo", 3) == ("teacher:3", "student:3") and fkd._whose("disdo", 3) == ("student:3", "teacher:3")


def test_rcd_conditions_use_fixed_and_per_step_random_targets():
    terms, _ = CFG.objective().build()
    logits = jnp.zeros((4, 10))
    batch = {"index": jnp.asarray([3, 7, 3, 9]), "y": jnp.zeros(4, jnp.int32)}
    hp = {"temperature": 1.0, "scale": 2.0}
    values = {}
    for name in ("rcd_fixed", "rcd_step"):
        _, st = terms[name].init(jax.random.key(0), None, None)
        values[name] = [
            np.asarray(terms[name].apply({}, st, (logits, {}), None, batch, jax.random.key(k), hp)[0]) for k in (1, 2)
        ]
    a, b = values["rcd_fixed"]
    np.testing.assert_array_equal(a, b)  # a new step key changes nothing: fixed per example
    assert a[0] == a[2] and a[0] != a[1]  # the same example twice gets the same target
    a, b = values["rcd_step"]
    assert not np.allclose(a, b)
    # The grid puts the RCD weight on its own point only, with CE at 1 - alpha.
    grid, names = CFG.grid(), CFG.program_conditions()
    g = names.index("rcd_fixed")
    assert grid["rcd_fixed.weight"][g] == CFG.rcd_alpha and grid["rcd_step.weight"][g] == 0.0
    assert grid["ce.weight"][g] == pytest.approx(1 - CFG.rcd_alpha) and grid["kd.weight"][g] == 0.0


def _np_kd(student, teacher, t):
    """T²·KL(softmax(teacher/T) ‖ softmax(student/T)) per example, in NumPy."""

    def log_softmax(z):
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    lp, lq = log_softmax(np.float64(teacher) / t), log_softmax(np.float64(student) / t)
    return t * t * np.sum(np.exp(lp) * (lp - lq), axis=-1)


def test_untrained_term_distils_towards_its_own_random_network(digits):
    """rcd_untrained's target is an untrained copy of the model held in the term's state: the loss is KD
    (NumPy) towards that network's eval-mode logits; the network differs between seeds, not between steps."""
    from jaxkd.models import make_model

    terms, _ = CFG.objective(TINY, digits.in_shape).build()
    term = terms["rcd_untrained"]
    spec = (jax.ShapeDtypeStruct((5, 10), jnp.float32), {})
    _, st0 = term.init(jax.random.key(0), spec, None)
    _, st1 = term.init(jax.random.key(1), spec, None)
    assert not np.allclose(np.asarray(st0["params"]["head"]["kernel"]), np.asarray(st1["params"]["head"]["kernel"]))
    x = jnp.asarray(digits.x_test[:5])
    net = make_model("mlp", digits.in_shape, 10, (8,))
    target = np.asarray(net.apply(st0["params"], st0["rest"], x, train=False)[0])
    student = np.asarray(jax.random.normal(jax.random.key(5), (5, 10)))
    values, st_after = term.apply(
        {}, st0, (jnp.asarray(student), {}), None, {"x": x}, jax.random.key(9), {"temperature": 2.0}
    )
    np.testing.assert_allclose(np.asarray(values), _np_kd(student, target, 2.0), rtol=1e-5)
    assert st_after is st0  # the network never changes
    # As a grid point it carries alpha, the other points leave it at weight 0.
    grid, names = CFG.grid(), CFG.program_conditions()
    g = names.index("rcd_untrained")
    assert grid["rcd_untrained.weight"][g] == CFG.rcd_alpha and grid["ce.weight"][g] == pytest.approx(1 - CFG.rcd_alpha)
    assert [w for i, w in enumerate(grid["rcd_untrained.weight"]) if i != g] == [0.0] * (len(names) - 1)


@pytest.mark.parametrize("vmap_width", [1, None])
def test_unweighted_controls_are_skipped_without_changing_the_run(digits, vmap_width):
    """A program with the RCD controls at weight 0 trains exactly like one without them (their value reads 0);
    at a positive weight they are evaluated."""
    from jaxkd.config import ObjectiveConfig, RunConfig
    from jaxkd.sweep import run_sweep

    def trainer(with_rcd):
        terms = {"ce": {"weight": 1.0}}
        if with_rcd:
            terms["rcd"] = {"weight": 0.0, "per_example": True}
            terms["untrained"] = {"weight": 0.0, "model": "mlp", "widths": (8,), "in_shape": digits.in_shape}
        cfg = RunConfig(
            model=ModelConfig("mlp", (8,)),
            objective=ObjectiveConfig(terms),
            recipe=RecipeConfig(batch_size=32, steps=4),
            eval=EvalConfig(every=2),
        )
        return make_train(cfg, digits)

    plain = run_sweep(trainer(False), jax.random.key(0), 2, progress=False, vmap_width=vmap_width)
    grid = {"rcd.weight": [0.0, 0.5], "untrained.weight": [0.0, 0.5]}
    both = run_sweep(trainer(True), jax.random.key(0), 2, grid, progress=False, vmap_width=vmap_width)
    for a, b in zip(jax.tree.leaves(plain.states.params["model"]), jax.tree.leaves(both.states.params["model"])):
        if vmap_width == 1:  # a real branch: the same arithmetic, bit for bit
            np.testing.assert_array_equal(np.asarray(a[:, 0]), np.asarray(b[:, 0]))
        else:  # under vmap both branches run and XLA fuses another program: equal up to float32 round-off
            np.testing.assert_allclose(np.asarray(a[:, 0]), np.asarray(b[:, 0]), rtol=1e-5, atol=1e-7)
    assert np.all(both.history["train/rcd"][:, 0] == 0) and np.all(both.history["train/untrained"][:, 0] == 0)
    assert np.all(both.history["train/rcd"][:, 1] > 0) and np.all(both.history["train/untrained"][:, 1] > 0)


def test_runlocal_outputs_have_the_promised_content(tmp_path, digits):
    config = fkd.runlocal(fkd.PRESETS["default"])
    summary = fkd.run(config, str(tmp_path), progress=False)
    with open(tmp_path / "records.csv") as f:
        rows = list(csv.DictReader(f))
    names = config.condition_names()
    assert {"setup", "condition", "seed", "init_seed", "data_seed", "alpha", "temperature", "metric", "value"} <= set(
        rows[0]
    )
    n_metrics = len(fkd.METRICS)
    assert len(rows) == config.n_seeds * (1 + len(names) * n_metrics)
    by = {(r["condition"], r["seed"], r["metric"]): r for r in rows}
    assert by[("siddo", "1", "all/acc")]["init_seed"] == "teacher:1"
    assert by[("siddo", "1", "all/acc")]["data_seed"] == "student:1"
    assert by[("disdo", "0", "all/acc")]["data_seed"] == "teacher:0"
    assert by[("base", "0", "all/acc")]["init_seed"] == "student:0"
    # Every condition's and the teachers' accuracy recomputed from the per-seed records, every declared test of
    # every test metric against scipy's paired t-test on them (tests/test_experiments.py).
    check_functional_kd(config, json.loads((tmp_path / "summary.json").read_text()), rows)
    n_test = len(digits.y_test)
    for c in names:
        for s in ("0", "1"):
            v = lambda m, c=c, s=s: float(by[(c, s, m)]["value"])  # noqa: E731
            assert v("teacher_correct/n") + v("teacher_incorrect/n") == v("all/n") == n_test
            wrong = v("teacher_incorrect/n")
            assert (
                v("teacher_incorrect/n_copy_error")
                + v("teacher_incorrect/n_other_error")
                + v("teacher_incorrect/n_correct")
                == wrong
            )
    stored = json.loads((tmp_path / "summary.json").read_text())
    setup = stored["setups"]["digits:mlp"]
    assert set(setup) == {"programs", "teacher", "conditions", "tests", "payoff"}
    assert setup["programs"] == 2 and stored["compiled_programs"] == 2  # teachers; every condition in one program
    family = [f"{a} - {b}" for a, b in config.family()]
    assert stored["family"]["comparisons"] == family
    for metric in config.test_metrics:
        assert list(setup["tests"][metric]) == family
        assert all(t["p_holm"] is None or t["p_holm"] >= (t["p"] or 0) for t in setup["tests"][metric].values())
    assert {"kd_a0.9_T4 vs base", "kd_a0.9_T4 vs siddo", "rcd_step vs base", "rcd_untrained vs siddo"} <= set(
        setup["payoff"]
    )
    assert summary["legend"]["siddo"]["init"] == "teacher"
    for fig in ("figure.png", "payoff.png"):
        assert (tmp_path / fig).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "change,message",
    [
        (dict(conditions=("base", "kd", "magic")), "unknown condition 'magic'"),
        (dict(conditions=("base",)), "empty family of comparisons"),
        (dict(comparisons=()), "empty family of comparisons"),
        (dict(comparisons=("kd_a0.9_T4:nobody",)), "names 'nobody', which is not a condition"),
        (dict(comparisons=("kd_a0.9_T4",)), "must read 'condition:control'"),
        (dict(conditions=("kd", "siddo")), "must include 'base'"),
        (dict(kd_alphas=(1.5,)), "alpha must lie in"),
        (dict(test="ttest"), "unknown test 'ttest'"),
        (dict(n_seeds=1), "n_seeds must be an integer >= 2"),
    ],
)
def test_bad_input_is_one_clear_config_error(change, message):
    with pytest.raises(ConfigError, match=message) as err:
        dataclasses.replace(CFG, **change)
    assert "\n" not in str(err.value)


def test_presets_are_valid_and_paper_names_the_zoo():
    paper = fkd.PRESETS["paper"]
    assert [s.name for s in paper.setups] == ["tfds:cifar10:resnet18", "tfds:cifar10:vgg19", "tfds:cifar10:vit_small"]
    default = fkd.PRESETS["default"]
    assert default.n_seeds >= 10 and len(default.setups) == 3
    assert "siddo" in default.condition_names() and "rcd_untrained" in default.condition_names()
