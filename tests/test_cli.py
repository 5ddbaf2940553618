import hashlib
import importlib.metadata
import json
import os
import re

import numpy as np
import pytest

import experiments
from jaxkd import outputs
from jaxkd.cli import main
from jaxkd.data.tfds_source import PREPARE_INSTALL
from jaxkd.errors import ConfigError
from jaxkd.overrides import apply_overrides


def _err(capsys):
    lines = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("jaxkd: error: ")
    return lines[0]


@pytest.mark.parametrize(
    "argv,match",
    [
        (["run", "nope"], "unknown experiment 'nope'"),
        (["run", "digits_kd", "--set", "objective.kd.weight=-1"], "kd.weight must be >= 0"),
        (["run", "digits_kd", "--set", "objective.kd.temperature=0"], "kd.temperature must be positive"),
        (["run", "digits_kd", "--set", "objective.terms.kd.temperature=0"], "kd.temperature must be positive"),
        (["run", "digits_kd", "--set", "temperature_grid=2,-1"], "temperature_grid values must be positive"),
        (["run", "digits_kd", "--set", "temperature_grid=0,1"], "temperature_grid values must be positive"),
        (
            ["run", "digits_methods", "--set", "objective.ce.label_smoothing=abc"],
            "--set objective.ce.label_smoothing=abc: cannot read 'abc' as a number",
        ),
        (
            ["run", "digits_methods", "--set", "objective.dist.temperature=x"],
            "--set objective.dist.temperature=x: cannot read 'x' as a number",
        ),
        (
            ["run", "digits_methods", "--set", "objective.rcd.per_example=maybe"],
            "--set objective.rcd.per_example=maybe: cannot read 'maybe' as true/false",
        ),
        (["run", "digits_kd", "--set", "seed=99999999999999999999"], "seed must be an integer in [0, 2**32 - 1]"),
        (["run", "digits_kd", "--set", "seed=-1"], "seed must be an integer in [0, 2**32 - 1]"),
        (["run", "digits_kd", "--set", "data.split_seed=4294967296"], "data.split_seed must be an integer in [0, 2**3"),
        (["run", "digits_kd", "--set", "temperature_grid=4"], "repeats a temperature"),
        (["run", "digits_kd", "--set", "temperature_grid="], "cannot read ''"),
        (["run", "digits_kd", "--seeds", "-2"], "--seeds must be a positive integer"),
        (["run", "digits_kd", "--seeds", "0"], "--seeds must be a positive integer"),
        (["run", "digits_kd", "--preset", "smoke", "--seeds", "100000000"], "seeds fit: lower --seeds"),
        (["run", "digits_kd", "--set", "eval.select=test/acc"], "selects on the test set"),
        (["run", "digits_kd", "--set", "model.name=resnet"], "unknown model 'resnet'"),
        (["run", "digits_kd", "--set", "data.dataset=imagenet"], "unknown dataset 'imagenet'"),
        (["run", "digits_kd", "--set", "nokey=1"], "unknown config key 'nokey'"),
        (["run", "digits_kd", "--set", "recipe.lr=1"], "unknown config key 'recipe.lr'; valid keys: recipe.batch_size"),
        (["run", "digits_kd", "--set", "objective.kd.temp=1"], "has no option 'temp'"),
        (["run", "digits_methods", "--set", "objective.nope.weight=1"], "unknown term 'nope'"),
        (["run", "digits_methods", "--set", "objective.fitnet.student=block9"], "student has no feature 'block9'"),
        (["run", "digits_methods", "--set", "objective.at.teacher=block0,pooled"], "must both be spatial maps"),
        (["run", "digits_kd", "--set", "recipe.steps=abc"], "cannot read 'abc' as an integer or none"),
        (["run", "digits_kd", "--set", "recipe.optimizer=lion9"], "unknown optimizer 'lion9'"),
        (["run", "digits_kd", "--preset", "huge"], "digits_kd has no preset 'huge'; it has: smoke, default, paper"),
        (["run", "digits_kd", "--preset", "capacity"], "digits_kd has no preset 'capacity'"),  # cifar_kd's own
        (["run", "digits_kd", "--set", "chunk_steps=0"], "chunk_steps must be positive"),
        (["run", "digits_kd", "--set", "chunk_steps=50"], "multiple of the evaluation interval (eval.every = 100)"),
        (
            ["run", "digits_kd", "--set", "chunk_steps=500", "--set", "recipe.steps=1200"],
            "must divide the student's 1200 steps",
        ),
        (["run", "digits_kd", "--resume"], "--resume needs checkpoints, but preset 'default' of digits_kd writes no"),
        (["run", "spectral_kd", "--resume"], "--resume needs checkpoints, but spectral_kd writes no checkpoints"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, match, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path / "o")] if argv[0] == "run" else argv) == 2
    assert match in _err(capsys)


def test_unwritable_output_directory(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["run", "digits_kd", "--preset", "smoke", "--out", str(blocker / "sub")]) == 2
    assert "not writable" in _err(capsys)
    assert main(["run", "digits_kd", "--preset", "smoke", "--out", str(blocker)]) == 2
    assert "not a directory" in _err(capsys)


def test_run_writes_results_and_a_failed_resume_keeps_them(tmp_path, capsys):
    out = tmp_path / "res"
    args = ["run", "digits_kd", "--preset", "smoke", "--out", str(out), "--no-progress", "--set", "chunk_steps=20"]
    assert main(args) == 0
    names = {"config.json", "records.csv", "summary.json", "figure.png", "env.json"}
    assert names <= set(os.listdir(out))
    summary = (out / "summary.json").read_text()
    assert set(json.loads(summary)["conditions"]) == {"ce", "kd", "kd_T2"}
    capsys.readouterr()
    # Corrupt the student checkpoints: --resume must fail with one line and leave results as they were.
    for root, _, files in os.walk(out / "checkpoints" / "students"):
        for f in files:
            if f != "fingerprint.json":
                (tmp_path / root / f).write_bytes(b"junk")
    assert main([*args, "--resume"]) == 2
    assert "unreadable or damaged" in _err(capsys)
    assert (out / "summary.json").read_text() == summary
    # Without --resume or --overwrite complete results are not replaced.
    assert main(args) == 2
    assert "already holds complete results; pass --overwrite" in _err(capsys)
    assert main([*args, "--overwrite"]) == 0


def test_one_seed_runs_and_reports_no_ci(tmp_path, capsys):
    out = tmp_path / "one"
    assert main(["run", "digits_kd", "--preset", "smoke", "--seeds", "1", "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    acc = summary["conditions"]["kd"]["test/acc"]["selected"]
    assert acc["n"] == 1 and acc["ci_low"] is None and acc["std"] is None and 0 <= acc["mean"] <= 1
    assert "NaN" not in (out / "summary.json").read_text()


def test_list_and_help(capsys):
    assert main(["list"]) == 0
    assert "digits_kd" in capsys.readouterr().out
    for argv in (["--help"], ["run", "--help"], ["data", "prepare", "--help"], ["theory", "risk", "--help"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0
        assert "usage:" in capsys.readouterr().out


@pytest.fixture
def no_training(monkeypatch):
    """Replace digits_kd's ``run`` by a recorder: the CLI's checks are tested without any training."""
    calls = []

    def record(config, out_dir, **kwargs):
        calls.append((config, out_dir))

    monkeypatch.setattr(experiments.get("digits_kd"), "run", record)
    return calls


def test_config_errors_come_before_any_work(no_training, tmp_path, capsys):
    # The teacher's 1500 steps are a multiple of chunk_steps, the student's 1200 are not: refused before the
    # teacher trains, not after.
    args = ["run", "digits_kd", "--set", "chunk_steps=500", "--set", "recipe.steps=1200", "--out", str(tmp_path / "o")]
    assert main(args) == 2
    assert "chunk_steps (500) must divide the student's 1200 steps" in _err(capsys)
    assert no_training == [] and not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "setting",
    [
        "n_seeds=abc",
        "seed=1.5",
        "model.widths=a",
        "objective=1",
        "eval=3",
        "objective.terms=1",
        "objective.kd=3",
    ],
)
def test_errors_name_no_python_types(setting, capsys):
    assert main(["run", "digits_kd", "--set", setting]) == 2
    line = _err(capsys)
    assert not re.search(r"<class|NoneType|[a-z]Config\b|Mapping", line), line


def _shown(capsys, argv):
    assert main(["show", *argv]) == 0
    lines = [l for l in capsys.readouterr().out.splitlines() if l and not l.startswith("#")]
    return [tuple(part.strip() for part in l.split(" = ", 1)) for l in lines]


@pytest.mark.parametrize(
    "experiment,preset,onto", [("digits_kd", "smoke", "default"), ("spectral_kd", "paper", "smoke")]
)
def test_show_prints_every_field_as_a_working_set_line(experiment, preset, onto, capsys):
    overrides = ["--set", "seed=3"] if experiment == "spectral_kd" else ["--set", "objective.kd.temperature=2.5"]
    pairs = _shown(capsys, [experiment, "--preset", preset, *overrides])
    mod = experiments.get(experiment)
    expected = apply_overrides(mod.PRESETS[preset], [overrides[1]])
    # Applying every shown line to another preset reproduces the shown configuration exactly.
    # (An empty tuple cannot be given with --set; those fields are the same in both presets.)
    rebuilt = apply_overrides(mod.PRESETS[onto], [f"{k}={v}" for k, v in pairs if v != ""])
    assert rebuilt == expected
    shown = dict(pairs)
    assert all("np." not in v and "(" not in v for v in shown.values()), shown
    if experiment == "digits_kd":
        # Terms are shown as the README and --set write them, objective.kd.temperature.
        assert shown["objective.kd.temperature"] == "2.5" and shown["n_seeds"] == "2"
        assert not any(".terms." in k for k in shown), shown
        assert shown["chunk_steps"] == "none" and shown["data.flip"] == "false"
    else:
        assert shown["delta_alphas"] == "0.0,0.125,0.25,0.375,0.5,0.625,0.75,0.875,1.0" and shown["seed"] == "3"


def test_show_json_and_bad_input(capsys):
    assert main(["show", "digits_kd", "--preset", "paper", "--seeds", "5", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["n_seeds"] == 5 and shown["chunk_steps"] == 1000
    assert shown["objective"]["terms"]["kd"] == {"weight": 0.9, "temperature": 4.0}
    assert main(["show", "digits_kd", "--set", "nokey=1"]) == 2
    assert "unknown config key 'nokey'" in _err(capsys)


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"jaxkd {importlib.metadata.version('jaxkd')}"


def _interrupted(config, out_dir, **kwargs):
    raise KeyboardInterrupt


def test_interrupt_without_checkpoints_says_to_start_again(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(experiments.get("digits_kd"), "run", _interrupted)
    out = tmp_path / "new" / "out"
    assert main(["run", "digits_kd", "--out", str(out)]) == 130
    line = capsys.readouterr().err.strip()
    assert line.startswith("jaxkd: interrupted; preset 'default' of digits_kd writes no checkpoints")
    assert "rerun the same command to start again" in line and "with --resume" not in line
    assert not (tmp_path / "new").exists()  # the directories the CLI made for --out, still empty, are gone


def test_interrupt_with_checkpoints_says_resume_and_keeps_them(monkeypatch, tmp_path, capsys):
    def interrupted_after_a_checkpoint(config, out_dir, **kwargs):
        os.makedirs(os.path.join(out_dir, "checkpoints"))
        raise KeyboardInterrupt

    monkeypatch.setattr(experiments.get("digits_kd"), "run", interrupted_after_a_checkpoint)
    out = tmp_path / "out"
    assert main(["run", "digits_kd", "--preset", "paper", "--out", str(out)]) == 130
    line = capsys.readouterr().err.strip()
    assert (
        line
        == f"jaxkd: interrupted; rerun the same command with --resume to continue from the last checkpoint in {out}"
    )
    assert (out / "checkpoints").is_dir()


def _tiny_tfds(data_dir):
    from jaxkd.data.array_builder import write_arrays

    rng = np.random.default_rng(0)
    split = lambda n: (rng.random((n, 8, 8)).astype(np.float32), np.arange(n) % 3)  # noqa: E731
    write_arrays(data_dir, {"train": split(30), "test": split(9)}, num_classes=3)


@pytest.mark.parametrize("route", ["--data-dir", "TFDS_DATA_DIR", "JAXKD_DATA_DIR"])
def test_run_reads_tfds_data_from_data_dir(route, monkeypatch, tmp_path, capsys):
    from jaxkd.data import load_dataset

    loaded = []
    monkeypatch.setattr(
        experiments.get("digits_kd"),
        "run",
        lambda config, out_dir, **kw: loaded.append(load_dataset(config.data.dataset)),
    )
    for var in ("JAXKD_DATA_DIR", "TFDS_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)
    _tiny_tfds(tmp_path / "data")
    args = [
        "run",
        "digits_kd",
        "--preset",
        "smoke",
        "--set",
        "data.dataset=tfds:jaxkd_arrays",
        "--out",
        str(tmp_path / "out"),
    ]
    if route == "--data-dir":
        args += ["--data-dir", str(tmp_path / "data")]
        monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "elsewhere"))  # --data-dir wins
    else:
        monkeypatch.setenv(route, str(tmp_path / "data"))
    assert main(args) == 0
    assert loaded[0].name == "tfds:jaxkd_arrays" and loaded[0].num_classes == 3
    assert loaded[0].x_train.shape[0] + loaded[0].x_test.shape[0] == 39
    assert os.environ.get("JAXKD_DATA_DIR") == (str(tmp_path / "data") if route == "JAXKD_DATA_DIR" else None)


def test_missing_dataset_is_one_line_and_leaves_no_out_directory(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("JAXKD_DATA_DIR", raising=False)
    data = tmp_path / "data"
    for out, made_here in ((tmp_path / "a" / "b", False), (tmp_path / "mine", True)):
        if made_here:
            out.mkdir()
        argv = [
            "run",
            "digits_kd",
            "--preset",
            "smoke",
            "--set",
            "data.dataset=tfds:cifar10",
            "--data-dir",
            str(data),
            "--out",
            str(out),
        ]
        assert main(argv) == 2
        line = _err(capsys)
        assert (
            f"dataset 'cifar10' is not prepared in {data}; run `jaxkd data prepare cifar10 --data-dir {data}`" in line
        )
        assert f"`{PREPARE_INSTALL}`" in line
        assert out.exists() == made_here  # a directory the user made is kept, even empty
    assert not (tmp_path / "a").exists() and "JAXKD_DATA_DIR" not in os.environ


def test_data_dir_with_an_offline_dataset_warns(no_training, tmp_path):
    with pytest.warns(UserWarning, match="--data-dir is read only for tfds: datasets; this run uses digits"):
        assert main(["run", "digits_kd", "--data-dir", str(tmp_path), "--out", str(tmp_path / "o")]) == 0
    assert len(no_training) == 1


def test_term_options_are_typed_by_their_factory_signature():
    # rcd has no per_example entry in digits_methods' objective, so nothing but rcd's signature
    # (per_example: bool) says what the text means: "false" must be False, not the truthy string.
    base = experiments.get("digits_methods").PRESETS["smoke"]
    for text, want in (("false", False), ("0", False), ("true", True), ("TRUE", True)):
        config = apply_overrides(base, ["objective.rcd.weight=0", f"objective.rcd.per_example={text}"])
        assert config.objective.terms["rcd"]["per_example"] is want
    # Floats, and the options every term takes (typed by build_term's reading of them), from text.
    config = apply_overrides(
        base,
        [
            "objective.ce.label_smoothing=0.25",
            "objective.kd.phases=3,3,6",
            "objective.kd.phase=hard",
            "objective.kd.ramp_steps=10",
        ],
    )
    assert config.objective.terms["ce"] == {"weight": 1.0, "label_smoothing": 0.25}
    assert config.objective.terms["kd"] == {
        "weight": 0.9,
        "temperature": 4.0,
        "phases": (3.0, 3.0, 6.0),
        "phase": "hard",
        "ramp_steps": 10,
    }


def test_seed_range_is_what_the_generators_keep():
    import jax

    # Without x64, jax.random.key keeps a seed's low 32 bits: 2**32 would silently repeat seed 0.
    assert (jax.random.key_data(jax.random.key(2**32)) == jax.random.key_data(jax.random.key(0))).all()
    base = experiments.get("digits_kd").PRESETS["smoke"]
    assert apply_overrides(base, [f"seed={2**32 - 1}", f"data.split_seed={2**32 - 1}"]).seed == 2**32 - 1
    for setting in (f"seed={2**32}", "data.split_seed=-1"):
        with pytest.raises(ConfigError, match=r"must be an integer in \[0, 2\*\*32 - 1\] = \[0, 4294967295\]"):
            apply_overrides(base, [setting])


_NO_JAX = """
import sys
from jaxkd import outputs
from jaxkd.cli import main
rc = main(["run", "nope"])
main(["list"])
print("RC", rc, "HEAVY", sorted(m for m in ("jax", "scipy") if m in sys.modules))
"""


def test_unknown_experiment_and_list_import_no_jax(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _NO_JAX], capture_output=True, text=True, timeout=120)
    assert "jaxkd: error: unknown experiment 'nope'" in proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1] == "RC 2 HEAVY []", proc.stdout
    # `jaxkd list`: one aligned column of summaries, each the first line of the experiment's docstring.
    listed = {}
    for line in lines[:-1]:
        name, summary = line.split(None, 1)
        listed[name] = (line.index(summary), summary)
    assert list(listed) == list(experiments.EXPERIMENTS)
    assert len({col for col, _ in listed.values()}) == 1
    assert listed["confusion_distillation"][0] > len("confusion_distillation")
    for name in ("digits_kd", "confusion_distillation"):
        assert listed[name][1] == experiments.get(name).__doc__.strip().splitlines()[0]


def test_run_help_names_the_preset_that_runs_by_default(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    helptext = " ".join(capsys.readouterr().out.split())
    assert "(default: default, what runs without --preset)" in helptext


# --- result files: a manifest of what jaxkd wrote, swapped in as one set -------------------------------------------

OLD = {"summary.json": '{"run": "old"}', "records.csv": "seed,value\n0,1\n", "payoff.png": b"\x89old"}
NEW = {"summary.json": '{"run": "new"}', "records.csv": "seed,value\n0,2\n", "figure.png": b"\x89new"}
NOTES = b"my notes"


def _entries(out) -> dict:
    """Every entry of ``out`` (hidden ones too) as ``{name: bytes}``; a directory would fail the comparison."""
    return {p.name: p.read_bytes() if p.is_file() else "<dir>" for p in out.iterdir()}


def _complete(files) -> dict:
    """What ``out`` holds after writing ``files``: them, the user's notes, and a manifest of their SHA-256."""
    raw = {n: c.encode() if isinstance(c, str) else c for n, c in files.items()}
    return {
        **raw,
        "notes.txt": NOTES,
        ".jaxkd-manifest.json": {n: hashlib.sha256(c).hexdigest() for n, c in raw.items()},
    }


def _state(out) -> dict:
    state = _entries(out)
    if ".jaxkd-manifest.json" in state:
        state[".jaxkd-manifest.json"] = json.loads(state[".jaxkd-manifest.json"])["files"]
    return state


def test_results_replace_only_files_jaxkd_wrote(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_bytes(NOTES)
    (out / "summary.json").write_text('{"mine": true}')
    with pytest.raises(ConfigError, match=r"summary.json was not written by jaxkd .*; move it out of .* or choose"):
        outputs.write_files(str(out), NEW)
    assert _entries(out) == {"notes.txt": NOTES, "summary.json": b'{"mine": true}'}
    (out / "summary.json").unlink()
    outputs.write_files(str(out), OLD)
    assert _state(out) == _complete(OLD)
    outputs.write_files(str(out), NEW)  # payoff.png was jaxkd's and is not in the new set: it goes
    assert _state(out) == _complete(NEW)
    (out / "records.csv").write_text("edited by hand\n")
    with pytest.raises(ConfigError, match="records.csv has changed since jaxkd wrote it"):
        outputs.write_files(str(out), OLD)
    assert (out / "records.csv").read_text() == "edited by hand\n"


class _Cut(Exception):
    pass


def test_an_interrupted_swap_leaves_the_old_complete_results(tmp_path, monkeypatch):
    """A failure at every rename of the swap in turn: each time ``out`` holds exactly the old set."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_bytes(NOTES)
    outputs.write_files(str(out), OLD)
    real, calls = os.replace, []

    def cut_at(k):
        def replace(src, dst, **kw):
            calls.append(src)
            if len(calls) == k:
                raise _Cut(f"cut at rename {k}")
            return real(src, dst, **kw)

        return replace

    for k in range(1, 20):
        calls.clear()
        monkeypatch.setattr(os, "replace", cut_at(k))
        try:
            outputs.write_files(str(out), NEW)
        except _Cut:
            monkeypatch.setattr(os, "replace", real)
            assert _state(out) == _complete(OLD), k
            continue
        monkeypatch.setattr(os, "replace", real)
        break
    # The last k wrote without a cut: the new set, and every earlier k was a cut inside the write.
    assert k > 5 and _state(out) == _complete(NEW)


_KILLED = """
import os, signal, sys
from jaxkd import outputs
real, calls, k = os.replace, [], int(sys.argv[2])
def replace(src, dst, **kw):
    calls.append(src)
    if len(calls) == k:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst, **kw)
os.replace = replace
outputs.write_files(sys.argv[1], {new!r})
"""


def test_a_killed_swap_is_completed_before_the_results_are_read(tmp_path, capsys):
    """SIGKILL at every rename in turn (no undo possible): the next reader finds the old or the new complete set."""
    import signal
    import subprocess
    import sys

    script = _KILLED.format(new=NEW)
    seen = set()
    for k in range(1, 10):  # 9 renames: the staged manifest, then 1 + 3 old files aside, 3 new files and 1 in
        out = tmp_path / f"out{k}"
        out.mkdir()
        (out / "notes.txt").write_bytes(NOTES)
        outputs.write_files(str(out), OLD)
        proc = subprocess.run([sys.executable, "-c", script, str(out), str(k)], capture_output=True, timeout=60)
        assert proc.returncode == -signal.SIGKILL, proc.stderr  # killed at rename k
        if ".jaxkd-manifest.json" in _entries(out):
            outputs.recover(str(out))  # what the next `jaxkd run` into ``out`` does first
        else:  # cut mid-swap: `jaxkd report` completes the swap, then reads the new summary
            assert main(["report", str(out)]) == 0
            assert re.search(r"^  run +new$", capsys.readouterr().out, re.M)
        state = _state(out)
        assert state in (_complete(OLD), _complete(NEW)), (k, state)
        seen.add("new" if state == _complete(NEW) else "old")
    assert seen == {"old", "new"}


def test_overwrite_refuses_a_summary_the_user_wrote(no_training, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "summary.json").write_text('{"my": "numbers"}')
    (out / "notes.txt").write_bytes(NOTES)
    assert main(["run", "digits_kd", "--out", str(out), "--overwrite"]) == 2
    assert f"{out / 'summary.json'} was not written by jaxkd" in _err(capsys)
    assert _entries(out) == {"summary.json": b'{"my": "numbers"}', "notes.txt": NOTES}
    assert no_training == []  # refused before any work


def test_sigterm_stops_a_run_as_ctrl_c_does(tmp_path):
    """`timeout` (SIGTERM) and Ctrl-C (SIGINT) both leave no empty --out directory behind."""
    import signal
    import subprocess
    import sys
    import time

    # As from a terminal, where Ctrl-C raises KeyboardInterrupt (a shell starts background jobs, such as this
    # test's, with SIGINT ignored, and Python would keep ignoring it).
    launch = "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); from jaxkd.cli import main"
    runs = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        out = tmp_path / sig.name / "out"
        argv = ["run", "digits_kd", "--preset", "smoke", "--no-progress", "--out", str(out)]
        code = f"{launch}; sys.exit(main({argv!r}))"
        runs[sig] = (out, subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True))
    for sig, (out, proc) in runs.items():
        deadline = time.monotonic() + 120
        while not out.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert out.exists(), "the run never made its --out directory"
        proc.send_signal(sig)
    for sig, (_, proc) in runs.items():
        err = proc.communicate(timeout=120)[1]
        assert proc.returncode == 128 + sig, err
        said = "terminated (SIGTERM)" if sig == signal.SIGTERM else "interrupted"
        assert f"jaxkd: {said}; preset 'smoke' of digits_kd writes no checkpoints" in err
        assert not (tmp_path / sig.name).exists()  # the directories the run made, empty, are gone


# --- resuming: the checkpoints' fingerprint names what differs ------------------------------------------------------


def _fingerprint(**changes):
    base = {
        "experiment": "digits_kd",
        "versions": {"jaxkd": "0.1.0", "jax": "0.7.0", "jaxlib": "0.7.0"},
        "n_devices": 2,
        "vmap_width": 4,
        "chunk_steps": 20,
        "config": {"recipe": {"steps": 40}},
    }
    return {**base, **changes}


@pytest.mark.parametrize(
    "changes,message",
    [
        # Another experiment differs in many fields (chunk_steps first by name): the experiment is what is said.
        (
            {"experiment": "digits_methods", "chunk_steps": 100, "config": {}},
            "{d} holds checkpoints of experiment digits_kd, not digits_methods; choose another --out or pass "
            "--overwrite",
        ),
        (
            {"versions": {"jaxkd": "0.1.0", "jax": "0.7.1", "jaxlib": "0.7.0"}, "chunk_steps": 100},
            "resuming needs the same versions.jax: saved 0.7.0, now 0.7.1 (the checkpoints in {d} are intact)",
        ),
        ({"n_devices": 1}, "resuming needs the same n_devices: saved 2, now 1 (the checkpoints in {d} are intact)"),
        ({"vmap_width": 8}, "resuming needs the same vmap_width: saved 4, now 8"),
        (
            {"config": {"recipe": {"steps": 80}}},
            "checkpoints in {d} were written by a different run (config.recipe.steps differs: saved 40, now 80)",
        ),
    ],
)
def test_resume_mismatch_names_the_most_telling_field(changes, message, tmp_path):
    from jaxkd.checkpoint import SweepCheckpointer

    d = str(tmp_path / "ckpt")
    SweepCheckpointer(d, _fingerprint(), resume=False).close()
    with pytest.raises(ConfigError) as err:
        SweepCheckpointer(d, _fingerprint(**changes), resume=True)
    assert message.format(d=d) in str(err.value)
    assert "damaged" not in str(err.value) and "\n" not in str(err.value)
    SweepCheckpointer(d, _fingerprint(), resume=True).close()  # the same run resumes


def test_a_stop_dropped_inside_a_gc_callback_is_delivered_again():
    """JAX runs Python in a garbage-collector callback; a SIGTERM raised there is dropped by Python ("Exception
    ignored"), so the run would go on. The CLI sends it again, to be raised in the code that runs next."""
    import gc
    import time

    from jaxkd import cli

    dropped = []

    def callback(phase, info):
        if not dropped:
            dropped.append(phase)
            raise cli.Terminated  # what the SIGTERM handler raises when the signal lands here

    gc.callbacks.append(callback)
    try:
        with pytest.raises(cli.Terminated), cli._sigterm_as_interrupt():
            gc.collect()
            assert dropped  # the callback ran and its Terminated was dropped...
            for _ in range(500):  # ...and comes back here, in ordinary code
                time.sleep(0.01)
    finally:
        gc.callbacks.remove(callback)


def test_overrides_are_validated_once_on_the_result_in_any_order():
    import experiments

    cd = experiments.get("confusion_distillation").PRESETS["smoke"]
    one = apply_overrides(cd, ["confusion_split=test", "leak_test_labels=true"])
    other = apply_overrides(cd, ["leak_test_labels=true", "confusion_split=test"])
    assert one == other and (one.confusion_split, one.leak_test_labels) == ("test", True)
    # A new term with several required options, one --set at a time.
    dm = experiments.get("digits_methods").PRESETS["smoke"]
    sets = [
        "objective.h.kind=fitnet",
        "objective.h.student=block0",
        "objective.h.teacher=block0",
        "objective.h.weight=2",
    ]
    assert apply_overrides(dm, sets).objective.terms["h"] == {
        "kind": "fitnet",
        "student": "block0",
        "teacher": "block0",
        "weight": 2.0,
    }
    with pytest.raises(ConfigError, match="missing 2 required keyword-only arguments"):
        apply_overrides(dm, sets[:1])
