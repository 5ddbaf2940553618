"""The public extension points (docs/extending.md): the worked example as written, plugins and study files on the
command line, user terms, models and datasets, the study helper's tests, and the page against the code."""

import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import jaxkd
from jaxkd import curves, extend, plugins, results, study
from jaxkd.cli import main
from jaxkd.config import DataConfig, EvalConfig, ModelConfig, RunConfig
from jaxkd.data import Dataset, load_dataset
from jaxkd.errors import ConfigError
from jaxkd.models import MODELS, feature_shapes
from jaxkd.recipes import RecipeConfig
from jaxkd.terms import Term
from jaxkd.train import make_train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "extending.md")


def _examples() -> dict[str, str]:
    """``{name: code}`` of every block marked ``<!-- example NAME: ... -->`` in docs/extending.md."""
    with open(DOC, encoding="utf-8") as f:
        text = f.read()
    found = re.findall(r"<!-- example (\S+?):[^>]*-->\n```\w+\n(.*?)```", text, flags=re.S)
    return dict(found)


@pytest.fixture
def clean_registry():
    """Undo the user registrations and plugin records a test makes (they are process-wide)."""
    before = {kind: dict(extend._USER[kind]) for kind in extend.KINDS}
    loaded = dict(plugins._LOADED)
    yield
    for kind in extend.KINDS:
        for name in list(extend._USER[kind]):
            if name not in before[kind]:
                extend.unregister(kind, name)
    plugins._LOADED.clear()
    plugins._LOADED.update(loaded)


def _write_examples(tmp_path, *names):
    ex = _examples()
    for name in names:
        (tmp_path / name).write_text(ex[name])
    return ex


def _err(capsys):
    lines = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("jaxkd: error: ")
    return lines[0]


def test_worked_example_runs_as_written(tmp_path):
    """The two files of the worked example, verbatim from the page, run with `python` from a fresh folder."""
    ex = _write_examples(tmp_path, "my_methods.py", "pkt_study.py")
    lines = [line for name in ("my_methods.py", "pkt_study.py") for line in ex[name].splitlines()]
    assert len(lines) < 40, f"the worked example has {len(lines)} lines; the page promises under 40"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "pkt_study.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "pkt - ce" in out.stdout and "test/acc (at selected)" in out.stdout
    run = tmp_path / "results" / "my_study"
    summary = json.loads((run / "summary.json").read_text())
    df = results.load(str(run))
    # Each seed's selected evaluation, read back from the records, against the summary's mean and the paired test.
    sel = df[df.selected & (df.metric == "test/acc")]
    assert sorted(sel.groupby("condition").size().items()) == [("ce", 4), ("pkt", 4), ("teacher", 1)]
    for cond in ("ce", "pkt"):
        mean = sel[sel.condition == cond].value.mean()
        assert summary["conditions"][cond]["test/acc"]["selected"]["mean"] == pytest.approx(mean, abs=1e-12)
    a = sel[sel.condition == "pkt"].sort_values("seed").value.to_numpy()
    b = sel[sel.condition == "ce"].sort_values("seed").value.to_numpy()
    test = summary["comparisons"]["test/acc"]["selected"]["pkt - ce"]
    if np.std(a - b) > 0:
        assert test["p"] == pytest.approx(scipy.stats.ttest_rel(a, b).pvalue, rel=1e-9)
    assert test["p_holm"] == pytest.approx(test["p"])  # one comparison: Holm leaves it as it is
    # what jaxkd report prints is what the example printed
    assert main(["report", str(run)]) == 0


def test_the_example_term_is_pkt():
    """The page's term, on fixed features, against PKT written from its formula in NumPy."""
    ns = {}
    exec(compile(_examples()["my_methods.py"].replace("@jaxkd.register_term", "# "), "my_methods", "exec"), ns)
    term = ns["my_pkt"]()
    rng = np.random.default_rng(0)
    fs, ft = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))

    def dist(f):
        f = f / (np.sqrt((f**2).sum(1, keepdims=True)) + 1e-7)
        k = (f @ f.T + 1) / 2
        return k / k.sum(1, keepdims=True)

    ps, pt = dist(fs), dist(ft)
    want = (pt * np.log((pt + 1e-7) / (ps + 1e-7))).sum(1)
    got, _ = term.apply({}, {}, (None, {"pooled": jnp.asarray(fs)}), (None, {"pooled": jnp.asarray(ft)}), {}, None, {})
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-6)


def test_plugin_on_the_command_line_is_used_and_recorded(tmp_path, capsys, clean_registry):
    """`jaxkd run --plugin my_methods.py digits_methods ...` trains the user's term, records the file's hash, and a
    resume after the file changed is refused naming the plugins."""
    _write_examples(tmp_path, "my_methods.py")
    plugin = str(tmp_path / "my_methods.py")
    out = str(tmp_path / "pkt_cli")
    argv = ["--plugin", plugin, "digits_methods", "--preset", "smoke", "--set", "objective.my_pkt.weight=30000"]
    argv += ["--set", "methods=ce,my_pkt", "--set", "chunk_steps=20", "--out", out]
    assert main(["run", *argv, "--log", "tensorboard", "--no-progress"]) == 0
    config = json.loads(open(os.path.join(out, "config.json")).read())
    with open(plugin, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    assert config["plugins"] == [{"path": plugin, "sha256": digest, "registers": {"term": ["my_pkt"]}}]
    assert config["registered"]["term"]["my_pkt"]["object"].endswith(".my_pkt")
    assert config["objective"]["terms"]["my_pkt"]["weight"] == 30000.0
    summary = json.loads(open(os.path.join(out, "summary.json")).read())
    assert set(summary["conditions"]) == {"ce", "my_pkt"}
    # the term was active: its training loss was recorded in its condition and is zero-weighted in ce's
    df = results.load(out)
    pkt_loss = df[(df.metric == "train/my_pkt") & (df.condition == "my_pkt")].value
    assert len(pkt_loss) and (pkt_loss > 0).all()
    # TensorBoard: one run per seed and method, its curves those of the records
    for cond in ("ce", "my_pkt"):
        for seed in (0, 1):
            curve = curves.read_scalars(os.path.join(out, "tensorboard", "students", cond, f"seed{seed}"))
            rec = df[(df.condition == cond) & (df.seed == seed) & (df.metric == "test/acc")].sort_values("step")
            assert [s for s, _ in curve["test/acc"]] == rec.step.tolist()
            np.testing.assert_allclose([v for _, v in curve["test/acc"]], rec.value, rtol=1e-6)
    assert sorted(os.listdir(os.path.join(out, "tensorboard"))) == [".jaxkd-curves", "students", "teacher"]
    capsys.readouterr()
    assert main(["report", out]) == 0
    assert "my_pkt - ce" in capsys.readouterr().out
    # a changed plugin: the checkpoints' fingerprint differs, so --resume is refused in one line
    with open(plugin, "a") as f:
        f.write("\n# changed\n")
    assert main(["run", *argv, "--resume", "--no-progress"]) == 2
    assert "plugins" in _err(capsys)


def test_study_file_runs_from_the_command_line(tmp_path, capsys, clean_registry):
    """`jaxkd run my_experiment.py` (the page's study file): presets, --set, report, results.load, show."""
    _write_examples(tmp_path, "my_methods.py", "my_experiment.py")
    path = str(tmp_path / "my_experiment.py")
    out = str(tmp_path / "my_experiment")
    assert main(["show", path, "--preset", "smoke", "--set", "pkt_weight=3000"]) == 0
    assert re.search(r"pkt_weight\s+= 3000.0", capsys.readouterr().out)
    argv = ["run", path, "--preset", "smoke", "--set", "pkt_weight=3000", "--out", out, "--no-progress"]
    assert main(argv) == 0
    config = json.loads(open(os.path.join(out, "config.json")).read())
    assert config["pkt_weight"] == 3000.0 and config["n_seeds"] == 2
    assert [os.path.basename(p["path"]) for p in config["plugins"]] == ["my_experiment.py"]
    assert config["registered"]["term"]["my_pkt"]["source_sha256"]
    df = results.load(out)
    # exactly one selected evaluation per condition x seed x metric
    counts = df[df.selected].groupby(["condition", "seed", "metric"]).size()
    assert (counts == 1).all() and len(counts) == df.groupby(["condition", "seed", "metric"]).ngroups
    capsys.readouterr()
    assert main(["report", out]) == 0
    assert "pkt - ce" in capsys.readouterr().out
    assert main(["run", path, "--preset", "paper", "--out", str(tmp_path / "x")]) == 2
    assert "has no preset 'paper'; it has: smoke, default" in _err(capsys)
    assert not os.path.exists(tmp_path / "x")


@pytest.mark.parametrize(
    "source,match",
    [
        ("x = 1 / 0\n", r"plugin .*bad\.py failed \(line 1\): ZeroDivisionError"),
        ("import jaxkd\njaxkd.register_term('kd', lambda: None)\n", "is a built-in jaxkd term"),
    ],
)
def test_a_failing_plugin_is_one_line(tmp_path, capsys, clean_registry, source, match):
    (tmp_path / "bad.py").write_text(source)
    assert main(["show", "--plugin", str(tmp_path / "bad.py"), "digits_kd"]) == 2
    assert re.search(match, _err(capsys))


def test_plugin_and_study_file_mistakes_are_one_line(tmp_path, capsys, clean_registry):
    assert main(["show", "--plugin", str(tmp_path / "none.py"), "digits_kd"]) == 2
    assert "does not exist" in _err(capsys)
    assert main(["show", "--plugin", "notes.txt", "digits_kd"]) == 2
    assert "ending in .py" in _err(capsys)
    (tmp_path / "terms_only.py").write_text("x = 1\n")
    assert main(["run", str(tmp_path / "terms_only.py")]) == 2
    assert "defines no Config, PRESETS, run" in _err(capsys)


def test_registered_model_and_dataset_train_and_clash(clean_registry):
    """A user model on user arrays learns a separable task; built-in names cannot be taken."""
    from flax import nnx

    @jaxkd.register_model("tiny_mlp", widths="hidden")
    class TinyMLP(nnx.Module):
        def __init__(self, in_shape, num_classes, *, rngs, hidden=(16,)):
            self.body = nnx.Linear(in_shape[0], hidden[0], rngs=rngs)
            self.head = nnx.Linear(hidden[0], num_classes, rngs=rngs)

        def __call__(self, x):
            h = nnx.relu(self.body(x))
            return self.head(h), {"pooled": h}

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 5)) * 4
    y = rng.integers(0, 3, size=600)
    x = centres[y] + rng.normal(size=(600, 5))
    ds = Dataset.from_arrays(x[:500], y[:500], x[500:], y[500:], name="blobs")
    config = RunConfig(
        ModelConfig("tiny_mlp", (8,)),
        recipe=RecipeConfig(learning_rate=1e-2, steps=100, batch_size=50),
        data=DataConfig(ds),
        eval=EvalConfig(every=50),
    )
    assert config.data.dataset == "blobs" and load_dataset("blobs") is ds
    trainer = make_train(config, load_dataset(config.data.dataset))
    assert trainer.model.name == "tiny_mlp" and feature_shapes("tiny_mlp", (5,), 3, (8,)) == {"pooled": (8,)}
    assert trainer.fingerprint["registered"]["model"]["tiny_mlp"]["object"].endswith("TinyMLP")
    _, hist = jax.jit(trainer.run)(jax.random.key(0))
    assert float(hist["test/acc"][-1]) > 0.9  # chance is 1/3
    for kind, builtin in (("term", "kd"), ("model", "resnet8"), ("dataset", "digits")):
        fn = getattr(jaxkd, f"register_{kind}")
        with pytest.raises(ConfigError, match=f"'{builtin}' is a built-in jaxkd {kind}"):
            fn(builtin, lambda: None)
    with pytest.raises(ConfigError, match="must be a Python identifier"):
        jaxkd.register_term("my term", lambda: None)
    jaxkd.register_dataset("lazy", lambda: "not a dataset")
    with pytest.raises(ConfigError, match="returned str, not a jaxkd Dataset"):
        load_dataset("lazy")


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(y_train=np.full(10, 5)), r"labels outside \[0, 3\)"),
        (dict(y_train=np.zeros(10, int)), "a single class"),
        (dict(x_train=np.full((10, 2), np.nan)), "NaN or Inf"),
        (dict(y_train=np.arange(9) % 3), "10 inputs but 9 labels"),
        (dict(x_train=np.array([["a", "b"]] * 10)), "must hold floats or uint8"),
        (dict(mean=(0.5,)), "give both mean and std"),
    ],
)
def test_from_arrays_refuses_bad_arrays(change, match, clean_registry):
    args = dict(x_train=np.zeros((10, 2)), y_train=np.arange(10) % 3, x_test=np.zeros((4, 2)), y_test=np.arange(4) % 3)
    extra = {k: change.pop(k) for k in ("mean",) if k in change}
    args.update(change)
    with pytest.raises(ConfigError, match=match):
        Dataset.from_arrays(**args, name="bad", num_classes=3, **extra)


def test_study_conditions_are_checked(clean_registry):
    trainer = make_train(
        RunConfig(ModelConfig("mlp", (8,)), recipe=RecipeConfig(steps=10), eval=EvalConfig(every=10)),
        load_dataset("digits"),
    )
    with pytest.raises(ConfigError, match="sets kd.weight, which the run does not have; sweepable: ce.label_smoothing"):
        study.fill_conditions(trainer, {"a": {"kd.weight": 1.0}})
    with pytest.raises(ConfigError, match="baseline 'c' is not a condition"):
        study.compare(trainer, jax.random.key(0), 1, {"a": {}, "b": {"learning_rate": 0.01}}, baseline="c")
    full = study.fill_conditions(trainer, {"a": {}, "b": {"learning_rate": 0.5}})
    assert full["a"]["learning_rate"] == trainer.hparams()["learning_rate"] and full["b"]["learning_rate"] == 0.5


def test_holm_and_paired_tests_of_a_study_against_scipy(clean_registry):
    """Three conditions against a baseline: p from scipy's paired t, Holm's step-down from its definition."""
    trainer = make_train(
        RunConfig(ModelConfig("mlp", (8,)), recipe=RecipeConfig(steps=30), eval=EvalConfig(every=10)),
        load_dataset("digits"),
    )
    conds = {"base": {}, "a": {"learning_rate": 3e-3}, "b": {"learning_rate": 3e-4}, "c": {"learning_rate": 0.3}}
    s = study.compare(trainer, jax.random.key(1), 4, conds, progress=False)
    df = s.frame()
    # `selected` marks the evaluation the selection rule picks: highest val/acc, then lowest val/loss, then latest
    val = df[df.metric.isin(["val/acc", "val/loss"])].pivot_table(
        index=["condition", "seed", "step"], columns="metric", values="value"
    )
    for (cond, seed), g in val.groupby(level=[0, 1]):
        best = max(g.itertuples(), key=lambda r: (r._asdict()["_1"], -r._asdict()["_2"], r.Index[2]))
        picked = df[df.selected & (df.condition == cond) & (df.seed == seed) & (df.metric == "val/acc")].step
        assert picked.tolist() == [best.Index[2]], (cond, seed)
    last = df.step.max()
    assert (df[df.selected].step < last).any()  # some run selected an earlier evaluation: the check discriminates
    sel = df[df.selected & (df.metric == "test/acc")]
    vals = {c: sel[sel.condition == c].sort_values("seed").value.to_numpy() for c in conds}
    others = ("a", "b", "c")
    p = {c: scipy.stats.ttest_rel(vals[c], vals["base"]).pvalue for c in others}
    order = sorted(p, key=p.get)
    holm, running = {}, 0.0
    for i, c in enumerate(order):
        running = max(running, min(1.0, (len(others) - i) * p[c]))
        holm[c] = running
    tests = s.summary["comparisons"]["test/acc"]["selected"]
    for c in others:
        assert tests[f"{c} - base"]["p"] == pytest.approx(p[c], rel=1e-9)
        assert tests[f"{c} - base"]["p_holm"] == pytest.approx(holm[c], rel=1e-9)
    assert s.summary["legend"] == {n: {"learning_rate": s.conditions[n]["learning_rate"]} for n in conds}


def test_the_page_lists_every_term_field_and_every_models_features():
    """docs/extending.md against the code: each Term field has a row; each built-in model's features are listed."""
    with open(DOC, encoding="utf-8") as f:
        text = f.read()
    term_rows = re.findall(r"^\| `([a-z_]+)`(?:, `([a-z_]+)`)? \|", text, flags=re.M)
    documented = {name for row in term_rows for name in row if name}
    assert {f.name for f in dataclasses.fields(Term)} <= documented
    table = text.split("| models | features |")[1].split("\n\n")[0]
    rows = []
    for line in table.splitlines()[2:]:
        models_cell, features_cell = line.split("|")[1:3]
        names = re.findall(r"`([a-z0-9_]+)`", features_cell)
        ranges = re.findall(r"`([a-z]+)(\d+)` … `\1(\d+)`", features_cell)
        names += [f"{p}{i}" for p, a, b in ranges for i in range(int(a), int(b) + 1)]
        rows.append((re.findall(r"`([a-z0-9_]+)`", models_cell), set(names)))
    builtin = [m for m in MODELS if not extend.is_user("model", m)]
    assert sorted(m for models, _ in rows for m in models) == sorted(builtin)
    # A row's models are one class at other depths or widths, so their features are named alike; the features
    # of each row's first (smallest) model keep this test in seconds (a ResNet-152 traces for long).
    for models, names in rows:
        assert len({getattr(MODELS[m], "func", MODELS[m]) for m in models}) == 1, models
        shape = {"mlp": (64,), "cnn1d": (40, 1)}.get(models[0], (32, 32, 3))
        assert names == set(feature_shapes(models[0], shape)), models[0]
