"""Fuzzed bad input for ``jaxkd run``, ``show``, ``report`` and ``theory risk`` (issue #21, item 4).

Hypothesis draws invalid configurations (``--set`` keys and values, presets, ``--seeds``, study files and
``--plugin`` files, ``--log`` kinds) and bad paths (missing, a file where a directory goes, below a file, a
directory of finished results or of the user's files, odd characters), and bad ``summary.json`` and theory
CONFIG files. Every one must end in exactly one stderr line ``jaxkd: error: ...`` and exit status 2, with no
traceback, and must leave the sandbox it runs in exactly as it was: a finished-looking result and the user's
files keep their bytes and mtimes, and no directory (empty or not) is left behind.

The inputs are invalid by construction (a valid key paired with a value its type cannot hold, a seed outside
[0, 2**32), ...), and every experiment's ``run`` (and the study file's) is replaced by one that fails the test:
an input the CLI wrongly accepts is reported as such, never trained on. The budget is fixed and derandomised
(about 400 examples in all, a few seconds).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import math
import os
import sys
import warnings

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import experiments
from jaxkd import extend, plugins
from jaxkd.cli import PRESET_NAMES, main


def fuzz(max_examples: int):
    """A fixed, derandomised budget: the same examples on every run, no example database."""
    return settings(
        max_examples=max_examples,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
        print_blob=False,
    )


class TrainedOnBadInput(AssertionError):
    """The CLI accepted an input the fuzzer built to be invalid and started training."""


def _no_training(config, out_dir, **kwargs):
    raise TrainedOnBadInput(f"the CLI accepted an invalid input and called run() with out_dir={out_dir!r}")


def _tree(root: str) -> dict:
    """Every entry under ``root`` (directories too) with its content and mtime: any change shows."""
    state = {}
    for folder, dirs, files in os.walk(root):
        for d in dirs:
            path = os.path.join(folder, d)
            state[os.path.relpath(path, root)] = ("<dir>", os.stat(path).st_mtime_ns)
        for f in files:
            path = os.path.join(folder, f)
            with open(path, "rb") as fh:
                state[os.path.relpath(path, root)] = (fh.read(), os.stat(path).st_mtime_ns)
    return state


def _write_result(out: str, summary: dict) -> None:
    """A finished-looking run in ``out``: its files, a manifest of their SHA-256, and a file of the user's."""
    os.makedirs(out)
    files = {
        "summary.json": json.dumps(summary).encode(),
        "config.json": b'{"experiment": "digits_kd"}',
        "records.csv": b"seed,condition,step,metric,value\n0,kd,40,test/acc,0.5\n",
    }
    for name, data in files.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    with open(os.path.join(out, ".jaxkd-manifest.json"), "w") as f:
        json.dump({"files": {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}}, f)
    with open(os.path.join(out, "my_notes.txt"), "w") as f:
        f.write("the user's own notes\n")


def _stats(mean):
    return {"mean": mean, "std": 0.01, "ci_low": mean - 0.02, "ci_high": mean + 0.02, "n": 2}


def _condition(mean):
    return {
        "n_seeds": 2,
        "n_diverged": 0,
        "selected_by": "val/acc",
        "test/acc": {"last": _stats(mean), "selected": _stats(mean), "max_over_evals": _stats(mean + 0.01)},
    }


SUMMARY = {
    "teacher": _condition(0.9),
    "conditions": {"ce": _condition(0.8), "kd": _condition(0.82)},
    "comparisons": {
        "test/acc": {
            "selected": {
                "kd - ce": {
                    "test": "paired t",
                    "diff_mean": 0.02,
                    "diff_ci_low": 0.0,
                    "diff_ci_high": 0.04,
                    "t": 2.5,
                    "p": 0.04,
                    "p_holm": 0.04,
                    "cohens_dz": 1.1,
                    "n": 2,
                }
            }
        }
    },
    "scope": {"note": "student seeds under one shared teacher"},
}

STUDY = """
import dataclasses
from jaxkd.errors import check


@dataclasses.dataclass(frozen=True)
class Config:
    n_seeds: int = 2
    seed: int = 0
    learning_rate: float = 0.1

    def __post_init__(self):
        check(self.learning_rate > 0, f"learning_rate must be positive, got {self.learning_rate}")


PRESETS = {"smoke": Config(), "default": Config(n_seeds=3)}


def run(config, out_dir, *, resume, overwrite, progress):
    raise AssertionError("the study file was run on invalid input")
"""

# Plugins and study files that must each be refused in one line, by name.
BAD_MODULES = {
    "raises.py": "raise RuntimeError('the plugin failed\\nacross two lines')\n",
    "config_error.py": "from jaxkd.errors import ConfigError\nraise ConfigError('a setting of the plugin is wrong')\n",
    "syntax.py": "def broken(:\n    pass\n",
    "imports.py": "import jaxkd_no_such_module_for_the_fuzzer\n",
    "exits.py": "import sys\nsys.exit(3)\n",
    "no_run.py": "PRESETS = {'smoke': None}\n",
    "presets_list.py": "Config = object\nPRESETS = ['smoke']\ndef run(config, out, **kw):\n    raise AssertionError\n",
}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """A working directory with a finished result, a folder of the user's files, plugins and a study file.

    The CLI runs with this as its current directory (default ``--out`` paths land here, and are checked),
    every experiment's ``run`` fails the test, and the plugin registry is restored afterwards.
    """
    root = str(tmp_path_factory.mktemp("fuzz"))
    _write_result(os.path.join(root, "done"), SUMMARY)
    os.makedirs(os.path.join(root, "mine"))
    for name in ("summary.json", "records.csv"):  # the user's files, named as jaxkd's results are
        with open(os.path.join(root, "mine", name), "w") as f:
            f.write("written by hand\n")
    with open(os.path.join(root, "a_file"), "w") as f:
        f.write("not a directory\n")
    os.makedirs(os.path.join(root, "a_dir.py"))
    os.makedirs(os.path.join(root, "empty_run"))
    with open(os.path.join(root, "empty_run", "config.json"), "w") as f:
        f.write("{}")
    modules = os.path.join(root, "modules")
    os.makedirs(modules)
    for name, text in {**BAD_MODULES, "study.py": STUDY, "ok_plugin.py": "VALUE = 1\n"}.items():
        with open(os.path.join(modules, name), "w") as f:
            f.write(text)
    with pytest.MonkeyPatch.context() as mp:
        for name in experiments.EXPERIMENTS:
            mp.setattr(experiments.get(name), "run", _no_training)
        mp.setattr(plugins, "_LOADED", {})
        mp.setattr(extend, "_USER", copy.deepcopy(extend._USER))
        mp.chdir(root)
        before = set(sys.modules)
        yield root
        for name in set(sys.modules) - before:
            if name.startswith("jaxkd_plugin_"):
                del sys.modules[name]


def _one_error(argv, root) -> str:
    """Run ``jaxkd argv`` in-process; assert one ``jaxkd: error:`` line, exit 2, and ``root`` untouched."""
    before = _tree(root)
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out), warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        status = main(argv)
    # The CLI prints a user warning as its own stderr line (`jaxkd: warning: ...`); pytest would swallow it here.
    lines = [f"jaxkd: warning: {x.message}" for x in w if x.category is UserWarning] + err.getvalue().splitlines()
    assert status == 2, (argv, status, lines)
    assert len(lines) == 1 and lines[0].startswith("jaxkd: error: "), (argv, lines)
    assert "Traceback" not in lines[0]
    assert _tree(root) == before, argv
    return lines[0]


# --- configurations: experiments, keys and values -------------------------------------------------------------

# Cheap to resolve and covering the config shapes: RunConfig with objective terms, a grid of setups, theory.
CONFIG_EXPERIMENTS = (
    "digits_kd",
    "digits_methods",
    "spectral_kd",
    "kd_scaling",
    "confusion_distillation",
    "functional_kd",
    "explanations",
)


def _keys(experiment: str) -> dict[str, str]:
    """``{key: value}`` as ``jaxkd show`` prints them for the smoke preset."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["show", experiment, "--preset", "smoke"]) == 0
    lines = [l for l in out.getvalue().splitlines() if " = " in l and not l.startswith("#")]
    return {k.strip(): v.strip() for k, v in (l.split(" = ", 1) for l in lines)}


_KEYS: dict[str, dict[str, str]] = {}


def keys_of(experiment: str) -> dict[str, str]:
    if experiment not in _KEYS:
        _KEYS[experiment] = _keys(experiment)
    return _KEYS[experiment]


def _kind(value: str) -> str:
    """The kind of a setting from how ``show`` prints it: bool, int, float or other (text, none, lists)."""
    if value in ("true", "false"):
        return "bool"
    try:
        int(value)
        return "int"
    except ValueError:
        pass
    try:
        float(value)
        return "float" if "," not in value else "other"
    except ValueError:
        return "other"


NON_FINITE = st.sampled_from(["nan", "NaN", "inf", "-inf", "Infinity", "1e400", "-1e999", "nan,1", "1,inf"])
JUNK = st.one_of(
    st.sampled_from(["", " ", "abc", "∞", "é", "1.2.3", "{}", "=", "0x", "--", "1;2", "true1", "ünïcödé"]),
    st.text(alphabet=st.characters(categories=["L", "S", "Zs"]), min_size=1, max_size=12).filter(
        lambda t: t.strip().lower() not in ("true", "false", "none", "nan", "inf", "infinity")
    ),
    st.integers(200, 5000).map(lambda n: "x" * n),  # very long
)
# A value no number, integer or true/false setting (nor a list of numbers) can hold.
NOT_A_NUMBER = st.one_of(NON_FINITE, JUNK)
NOT_AN_INT = st.one_of(NOT_A_NUMBER, st.sampled_from(["1.5", "1e3", "2.0", "[1, 2]", "1,2", "0.1"]))
NOT_A_BOOL = st.one_of(NOT_A_NUMBER, st.sampled_from(["2", "-1", "yes", "no", "on", "[true]", "true,false", "1.0"]))
SEEDS_OUT_OF_RANGE = st.one_of(st.integers(max_value=-1), st.integers(min_value=2**32)).map(str)
# Values outside what a setting's validation allows, by the setting's name.
OUT_OF_RANGE = {
    "weight": st.floats(max_value=-1e-6, allow_nan=False, allow_infinity=False),
    "temperature": st.floats(max_value=0.0, allow_nan=False, allow_infinity=False),
    "learning_rate": st.floats(max_value=0.0, allow_nan=False, allow_infinity=False),
    "batch_size": st.integers(max_value=0),
    "val_fraction": st.one_of(st.floats(max_value=-1e-6), st.floats(min_value=1.0)).filter(math.isfinite),
}


@st.composite
def bad_settings(draw, experiment: str) -> list[str]:
    """``--set`` lines with at least one invalid by construction (others may be valid)."""
    keys = keys_of(experiment)
    key = draw(st.sampled_from(sorted(keys)))
    leaf, kind = key.rsplit(".", 1)[-1], _kind(keys[key])
    choices = ["unknown_key", "below_leaf", "no_equals", "group"]
    if kind == "bool":
        choices.append("bool")
    if kind == "int":
        choices.append("int")
    if kind in ("int", "float"):
        choices.append("number")
    if leaf == "seed" or leaf.endswith("_seed"):
        choices.append("seed")
    if leaf in OUT_OF_RANGE and kind in ("int", "float"):
        choices.append("range")
    how = draw(st.sampled_from(choices))
    if how == "bool":
        bad = f"{key}={draw(NOT_A_BOOL)}"
    elif how == "int":
        bad = f"{key}={draw(NOT_AN_INT)}"
    elif how == "number":
        bad = f"{key}={draw(NOT_A_NUMBER)}"
    elif how == "seed":
        bad = f"{key}={draw(SEEDS_OUT_OF_RANGE)}"
    elif how == "range":
        bad = f"{key}={draw(OUT_OF_RANGE[leaf])}"
    elif how == "unknown_key":
        name = draw(st.text(min_size=1, max_size=20).filter(lambda t: "=" not in t))
        prefix = draw(st.sampled_from(["", key.rsplit(".", 1)[0] + "." if "." in key else "", "data.", "x.y."]))
        assume(f"{prefix}{name}" not in keys and not name.startswith("objective"))
        bad = f"{prefix}{name}={draw(st.text(max_size=10))}"
    elif how == "below_leaf":
        bad = f"{key}.{draw(st.sampled_from(['x', 'weight', 'a.b', '']))}=1"
    elif how == "group":
        group = key.split(".")[0]
        assume(group != key)  # a key with parts below it, set as if it were one value
        bad = f"{group}={draw(st.sampled_from(['1', '', 'none', '{}', 'x']))}"
    else:
        bad = draw(st.text(max_size=30).filter(lambda t: "=" not in t))
    others = draw(st.lists(st.sampled_from([f"{k}={v}" for k, v in keys.items()]), max_size=2))
    lines = [*others, bad]
    return draw(st.permutations(lines))


@st.composite
def bad_config_argv(draw):
    """``[experiment, options...]`` that cannot resolve to a valid configuration."""
    how = draw(st.sampled_from(["set", "set", "set", "seeds", "preset", "experiment"]))
    experiment = draw(st.sampled_from(CONFIG_EXPERIMENTS))
    preset = draw(st.sampled_from(PRESET_NAMES))
    argv = [experiment, "--preset", preset]
    if how == "set":
        for line in draw(bad_settings(experiment)):
            argv += ["--set", line]
    elif how == "seeds":
        seeds = draw(
            st.one_of(
                st.integers(max_value=0).map(str),
                st.integers(min_value=2**32).map(str),
                st.sampled_from(["", "1.5", "nan", "inf", "two", "1e3", "[3]", "3,4"]),
            )
        )
        argv += [f"--seeds={seeds}"]
    elif how == "preset":
        bad = draw(st.text(max_size=12).filter(lambda t: t not in experiments.get(experiment).PRESETS))
        argv[2] = f"--preset={bad}"
        argv[1:3] = [argv[2]]
    else:
        name = draw(st.text(max_size=40))
        assume(name not in experiments.EXPERIMENTS and not name.endswith(".py") and not name.startswith("-"))
        argv[0] = name
    return argv


@fuzz(150)
@given(argv=bad_config_argv(), command=st.sampled_from(["run", "show"]), out=st.sampled_from([None, "fresh", "done"]))
def test_invalid_configurations_are_one_line(sandbox, argv, command, out):
    if command == "run" and out is not None:
        argv = [*argv, "--out", out]
    line = _one_error([command, *argv], sandbox)
    assert "Error:" not in line.split("jaxkd: error: ", 1)[1][:12]  # not a Python exception's name


# --- run: output paths, --log, --resume, --data-dir ----------------------------------------------------------------

ODD = st.text(
    alphabet=st.characters(categories=["L", "N", "P", "S", "Zs"], exclude_characters="/\x00"), min_size=1, max_size=12
).filter(lambda t: t not in (".", ".."))


@st.composite
def bad_out(draw):
    """An ``--out`` that cannot take new results, and the options that go with it."""
    how = draw(st.sampled_from(["finished", "a_file", "below_file", "user_files", "user_file_itself", "log"]))
    if how == "finished":  # complete results, neither --overwrite nor --resume
        return ["--out", "done"]
    if how == "a_file":
        return ["--out", draw(st.sampled_from(["a_file", "done/summary.json", "done/my_notes.txt"]))]
    if how == "below_file":
        return ["--out", os.path.join("a_file", *draw(st.lists(ODD, min_size=1, max_size=3)))]
    if how == "user_files":  # files named as results that jaxkd did not write: never replaced
        return ["--out", "mine", *draw(st.sampled_from([[], ["--overwrite"]]))]
    if how == "user_file_itself":
        return ["--out", "mine/summary.json", "--overwrite"]
    kind = draw(st.text(min_size=1, max_size=15).filter(lambda t: t.strip(" ,") and "=" not in t))
    assume(all(k.strip() in ("", "tensorboard", "wandb") for k in kind.split(",")) is False)
    return ["--out", os.path.join("fresh", draw(ODD)), f"--log={kind}"]


@fuzz(60)
@given(
    out=bad_out(),
    experiment=st.sampled_from(["digits_kd", "spectral_kd"]),
    extra=st.lists(st.sampled_from(["--no-progress", "--data-dir=nowhere", "--seeds=2"]), max_size=2, unique=True),
)
def test_bad_output_paths_touch_nothing(sandbox, out, experiment, extra):
    _one_error(["run", experiment, "--preset", "smoke", *extra, *out], sandbox)


@fuzz(15)
@given(
    experiment=st.sampled_from(["digits_kd", "spectral_kd"]),
    out=st.one_of(st.sampled_from(["done", "fresh/x", "mine"]), ODD.map(lambda t: os.path.join("fresh", t))),
)
def test_resume_without_checkpoints_touches_nothing(sandbox, experiment, out):
    assert "--resume needs checkpoints" in _one_error(["run", experiment, "--resume", "--out", out], sandbox)


# --- study files and --plugin files --------------------------------------------------------------------------------


@st.composite
def bad_modules_argv(draw):
    """A study file or ``--plugin`` that cannot be used, or a usable study file with a bad setting."""
    how = draw(st.sampled_from(["plugin", "plugin", "study", "study_setting"]))
    module = draw(
        st.one_of(
            st.sampled_from([f"modules/{n}" for n in BAD_MODULES]),
            st.sampled_from(["a_file", "a_dir.py", "modules", "", "done/summary.json", "modules/STUDY.PY"]),
            ODD.map(lambda t: f"missing/{t}.py"),
            ODD.map(lambda t: f"modules/{t}"),
        )
    )
    if how == "plugin":
        assume(module not in ("modules/no_run.py", "modules/presets_list.py"))  # fine as plugins, not as studies
        return ["digits_kd", "--preset", "smoke", "--plugin", "modules/ok_plugin.py", "--plugin", module]
    if how == "study":
        assume(module.endswith(".py"))  # a name without .py is an experiment's name: refused as unknown
        return [module, "--preset", "smoke"]
    setting = draw(
        st.sampled_from(
            [
                ["--set", "learning_rate=-1"],
                ["--set", "learning_rate=nan"],
                ["--set", "seed=-1"],
                ["--set", f"seed={2**32}"],
                ["--set", "n_seeds=0"],
                ["--set", "nope=1"],
                ["--preset", "paper"],
                ["--seeds", "0"],
            ]
        )
    )
    return ["modules/study.py", *setting]


@fuzz(60)
@given(argv=bad_modules_argv(), command=st.sampled_from(["run", "show"]))
def test_bad_plugins_and_study_files_are_one_line(sandbox, argv, command):
    _one_error([command, *argv], sandbox)


# --- jaxkd report ----------------------------------------------------------------------------------------------

JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6,
)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


@st.composite
def bad_summaries(draw):
    """``summary.json`` text: malformed, or the finished run's summary with parts replaced or removed."""
    how = draw(st.sampled_from(["mutate", "mutate", "mutate", "mutate", "text", "json"]))
    if how == "text":
        return draw(st.one_of(st.text(max_size=40), st.just(""), st.just('{"conditions": '), st.just("\ufeff{}")))
    if how == "json":
        return json.dumps(draw(JSON_VALUES))
    summary = copy.deepcopy(SUMMARY)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(_paths(summary))[1:]))
        parent = summary
        for part in path[:-1]:
            parent = parent[part]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(JSON_VALUES)
        summary = copy.deepcopy(summary)
    return json.dumps(summary)


@fuzz(120)
@given(
    text=bad_summaries(),
    at=st.sampled_from(["selected", "last", "max_over_evals"]),
    fmt=st.sampled_from(["text", "csv", "json", "markdown"]),
    metrics=st.lists(st.sampled_from(["test/acc", "val/acc", "test/nll", "nope", ",", "test/acc,"]), max_size=2),
)
def test_report_of_a_damaged_summary_is_a_table_or_one_line(sandbox, text, at, fmt, metrics, tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    (folder / "summary.json").write_text(text)
    before = _tree(str(folder))
    err, out = io.StringIO(), io.StringIO()
    argv = ["report", str(folder), "--at", at, "--format", fmt, *[f"--metric={m}" for m in metrics]]
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        status = main(argv)
    lines = err.getvalue().splitlines()
    if status == 0:  # a summary that still reads as one: a table, and nothing on stderr
        assert lines == [] and out.getvalue().strip()
    else:
        assert status == 2 and len(lines) == 1 and lines[0].startswith("jaxkd: error: "), (text, argv, lines)
    assert _tree(str(folder)) == before


@fuzz(30)
@given(
    path=st.one_of(
        st.sampled_from(["a_file", "done/summary.json", "mine/summary.json", "empty_run", "modules", "", "."]),
        ODD.map(lambda t: os.path.join("missing", t)),
        ODD.map(lambda t: os.path.join("a_file", t)),
    ),
    extra=st.lists(st.sampled_from(["--at=best", "--format=html", "--metric=test/acc"]), max_size=1),
)
def test_report_of_a_path_that_holds_no_run_is_one_line(sandbox, path, extra):
    assume(path != "." or extra)  # the sandbox holds runs below it: refused, naming them
    _one_error(["report", path, *extra], sandbox)


# --- jaxkd theory risk ---------------------------------------------------------------------------------------------

RISK = {
    "theta_star": [1.0, 0.5],
    "sigma2": 0.1,
    "lam_teacher": [1.0, 0.5],
    "lam_student": [1.0, 0.0],
    "alpha": 1.0,
    "teacher": {"gamma0": 0.1, "schedule": "constant", "batch": 1, "steps": 10},
    "student": {"gamma0": 0.1, "schedule": "step_decay", "batch": 2, "steps": 10},
}
NAN = st.sampled_from([math.nan, math.inf, -math.inf])
NOT_A_LIST = st.one_of(
    st.none(), st.booleans(), st.floats(), st.text(max_size=5), st.dictionaries(st.text(), st.none())
)


@st.composite
def bad_risk_configs(draw):
    """CONFIG text for ``jaxkd theory risk`` that is invalid by construction."""
    cfg = copy.deepcopy(RISK)
    who = draw(st.sampled_from(["teacher", "student"]))
    how = draw(
        st.sampled_from(
            [
                "text",
                "not_object",
                "missing",
                "unknown",
                "vector",
                "vector_entry",
                "length",
                "negative_spectrum",
                "scalar",
                "alpha",
                "sgd_missing",
                "sgd_unknown",
                "sgd_size",
                "sgd_gamma",
                "schedule",
                "features",
            ]
        )
    )
    if how == "text":
        return draw(st.sampled_from(["", "{", '{"theta_star": [1,]}', "nan", "\x00", "[1, 2", "{'a': 1}"]))
    if how == "not_object":
        return json.dumps(draw(st.one_of(st.lists(JSON_LEAVES, max_size=3), JSON_LEAVES)))
    if how == "missing":
        del cfg[draw(st.sampled_from(sorted(cfg)))]
    elif how == "unknown":
        cfg[draw(st.text(max_size=10).filter(lambda k: k not in RISK and k != "features"))] = draw(JSON_VALUES)
    elif how == "vector":
        cfg[draw(st.sampled_from(["theta_star", "lam_teacher", "lam_student"]))] = draw(
            st.one_of(NOT_A_LIST, st.just([]))
        )
    elif how == "vector_entry":
        key = draw(st.sampled_from(["theta_star", "lam_teacher", "lam_student"]))
        cfg[key][draw(st.integers(0, 1))] = draw(
            st.one_of(NAN, st.text(max_size=3), st.none(), st.booleans(), st.lists(st.floats()))
        )
    elif how == "length":
        key = draw(st.sampled_from(["lam_teacher", "lam_student"]))
        cfg[key] = draw(st.lists(st.floats(0, 2), max_size=6).filter(lambda v: len(v) not in (0, 2)))
    elif how == "negative_spectrum":
        cfg[draw(st.sampled_from(["lam_teacher", "lam_student"]))][1] = draw(st.floats(max_value=-1e-9, min_value=-1e9))
    elif how == "scalar":
        cfg[draw(st.sampled_from(["sigma2", "alpha"]))] = draw(
            st.one_of(NAN, st.text(max_size=3), st.none(), st.lists(st.floats(), max_size=2), st.booleans())
        )
    elif how == "alpha":
        cfg["alpha"] = draw(st.one_of(st.floats(max_value=-1e-9), st.floats(min_value=1.000001)).filter(math.isfinite))
    elif how == "sgd_missing":
        del cfg[who][draw(st.sampled_from(["gamma0", "schedule", "batch", "steps"]))]
    elif how == "sgd_unknown":
        cfg[who][draw(st.text(max_size=6).filter(lambda k: k not in ("gamma0", "schedule", "batch", "steps", "K")))] = 1
    elif how == "sgd_size":
        cfg[who][draw(st.sampled_from(["batch", "steps"]))] = draw(
            st.one_of(st.integers(max_value=0), st.floats(), NAN, st.text(max_size=3), st.none(), st.booleans())
        )
    elif how == "sgd_gamma":
        cfg[who]["gamma0"] = draw(
            st.one_of(st.floats(max_value=0.0), NAN, st.text(max_size=3), st.none(), st.just(1e6))
        )
    elif how == "schedule":
        cfg[who]["schedule"] = draw(
            st.one_of(
                st.text(max_size=10).filter(lambda s: s not in ("constant", "step_decay", "flat_then_decay")),
                st.integers(),
                st.none(),
            )
        )
    else:
        cfg["features"] = draw(
            st.one_of(
                st.text(max_size=10).filter(lambda s: s not in ("gaussian", "rademacher")), st.integers(), st.none()
            )
        )
    return json.dumps(cfg)


@fuzz(120)
@given(text=bad_risk_configs())
def test_theory_risk_of_a_bad_config_is_one_line(sandbox, text):
    path = os.path.join(sandbox, "risk.json")
    with open(path, "w", encoding="utf-8", errors="surrogatepass") as f:
        f.write(text)
    try:
        _one_error(["theory", "risk", "risk.json"], sandbox)
    finally:
        os.remove(path)


@fuzz(10)
@given(
    path=st.one_of(
        st.sampled_from(["a_dir.py", "modules", "", "done/records.csv"]), ODD.map(lambda t: f"missing/{t}.json")
    )
)
def test_theory_risk_of_a_bad_path_is_one_line(sandbox, path):
    _one_error(["theory", "risk", path], sandbox)


def test_the_valid_risk_config_is_accepted(sandbox, capsys):
    """The fuzzer's starting point is valid: each failure above is the one change it made."""
    path = os.path.join(sandbox, "risk_ok.json")
    with open(path, "w") as f:
        json.dump(RISK, f)
    try:
        assert main(["theory", "risk", path]) == 0
    finally:
        os.remove(path)
    assert json.loads(capsys.readouterr().out)["teacher_excess_risk"] > 0


@pytest.mark.parametrize(
    "experiment,setting",
    [
        ("functional_kd", "chunk_steps=0"),  # ZeroDivisionError in Config.__post_init__ (steps % chunk_steps)
        ("backdoor_kd", "chunk_steps=0"),  # the same check, inherited from functional_kd
    ],
)
def test_found_bugs_outside_the_cli(sandbox, experiment, setting):
    _one_error(["show", experiment, "--preset", "smoke", "--set", setting], sandbox)


def test_confusion_distillation_without_selection_is_accepted(sandbox, capsys):
    """``eval.select=none`` (the last evaluation is kept) was an AttributeError in the confusion split's check."""
    assert main(["show", "confusion_distillation", "--preset", "smoke", "--set", "eval.select=none"]) == 0
    assert "eval.select" in capsys.readouterr().out
