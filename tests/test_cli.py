import json
import os

import pytest

from jaxkd.cli import main


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
        (["run", "digits_kd", "--set", "temperature_grid=2,-1"], "kd.temperature must be positive"),
        (["run", "digits_kd", "--set", "temperature_grid=4"], "repeats a temperature"),
        (["run", "digits_kd", "--set", "temperature_grid="], "cannot read ''"),
        (["run", "digits_kd", "--seeds", "-2"], "--seeds must be a positive integer"),
        (["run", "digits_kd", "--seeds", "0"], "--seeds must be a positive integer"),
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
        (["run", "digits_kd", "--preset", "huge"], "invalid choice"),
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
