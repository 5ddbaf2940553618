"""The documented numbers of preset runs: marker parsing and rendering, and drift against a fresh run."""

import json
import os
import subprocess
import sys

import pytest

from jaxkd import docnumbers as dn
from jaxkd.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A literal summary in the shape `jaxkd run` writes (keys with dots, slashes and spaces included).
SUMMARY = {
    "teacher": {"test/acc": {"selected": {"mean": 0.99164, "std": None}}},
    "conditions": {
        "ce": {"test/acc": {"selected": {"mean": 0.969533, "std": 0.0068585, "ci_low": 0.96588, "ci_high": 0.97319}}},
        "kd_a0.5_T4": {"test/acc": {"selected": {"mean": 0.962918, "std": 0.0076602, "ci_low": 0.95884}}},
        "kd_a0": {"test/acc": {"selected": {"mean": 0.5}}},
    },
    "comparisons": {
        "test/acc": {
            "selected": {
                "kd_a0.5_T4 - ce": {"diff_mean": -0.0066156, "p_holm": 0.0465676, "p": 2.09e-05},
                "kd_a0 - ce": {"diff_mean": -0.469533, "p_holm": None, "p": 1.3e-12},
            }
        }
    },
    "points": [{"z": -1.2}, {"z": 2.61}, {"z": 0.4}],
}

DOC = """\
# A run

Teacher <!--n digits_kd teacher.test/acc.selected.mean .3f-->0.990<!--/n-->; KD at α = 0.5 differs
by <!--n digits_kd "comparisons.test/acc.selected.kd_a0.5_T4 - ce.diff_mean" x100 +.1f minus-->−0.4<!--/n--> pp
(Holm p = <!--n digits_kd "comparisons.test/acc.selected.kd_a0.5_T4 - ce.p_holm" .2g-->0.047<!--/n-->, raw
p = <!--n digits_kd "comparisons.test/acc.selected.kd_a0.5_T4 - ce.p" .1e sci-->2.1e-5<!--/n-->), all
of the <!--n digits_kd points.*.z len d-->3<!--/n--> points within <!--n digits_kd points.*.z max .1f-->2.6<!--/n--> SE.

<!--rows digits_kd in=conditions ce kd_a0.5_T4="KD, α = 0.5"
| condition | acc | std |
|---|---:|---:|
| {$} | {$.test/acc.selected.mean .3f} | {$.test/acc.selected.std .4f} |
-->
| condition | acc | std |
|---|---:|---:|
| ce | 0.970 | 0.0069 |
| KD, α = 0.5 | 0.963 | 0.0077 |
<!--/rows-->

Code is not a region: `<!--n digits_kd teacher.x .3f-->1<!--/n-->`.
"""


def _write_run(root, summary=SUMMARY, name="digits_kd"):
    os.makedirs(root / name, exist_ok=True)
    (root / name / "summary.json").write_text(json.dumps(summary))


def test_format_value_by_hand():
    assert dn.format_value(-0.0066156, ["x100", "+.1f", "minus"]) == "\u22120.7"
    assert dn.format_value(0.0022980, ["x100", "+.1f"]) == "+0.2"
    assert dn.format_value(2.09e-05, [".1e", "sci"]) == "2.1e-5"
    assert dn.format_value(2.09e-05, [".0e"]) == "2e-05"
    assert dn.format_value(1234.5, [".1e", "sci"]) == "1.2e3"
    assert dn.format_value(0.0465676, [".2g"]) == "0.047"
    assert dn.format_value(3.2e-9, [".2g", "below=1e-6"]) == "< 1e-6"
    assert dn.format_value(0.0146, [".2g", "below=1e-6"]) == "= 0.015"
    assert dn.format_value(None, [".3f"]) == "n/a"
    assert dn.format_value(float("nan"), [".3f"]) == "n/a"
    assert dn.format_value("paired t", ["s"]) == "paired t"
    assert dn.format_value(True, ["s"]) == "true"
    assert dn.format_value(False, ["words=significant/not significant"]) == "not significant"
    assert dn.format_value(True, ["words=significant/not significant"]) == "significant"
    with pytest.raises(ValueError, match="no format spec"):
        dn.format_value(0.5, ["minus"])


def test_resolve_keys_with_dots_globs_and_indices():
    assert dn.resolve(SUMMARY, "conditions.kd_a0.5_T4.test/acc.selected.mean") == [0.962918]
    assert dn.resolve(SUMMARY, "conditions.kd_a0.test/acc.selected.mean") == [0.5]
    assert dn.resolve(SUMMARY, "points.1.z") == [2.61]
    assert dn.resolve(SUMMARY, "points.*.z") == [-1.2, 2.61, 0.4]
    assert dn.resolve(SUMMARY, "conditions.*.test/acc.selected.mean") == [0.969533, 0.962918, 0.5]
    assert dn.resolve(SUMMARY, "comparisons.test/acc.selected.kd_a* - ce.p") == [2.09e-05, 1.3e-12]
    assert dn.resolve(SUMMARY, "conditions.kd_*.test/acc.selected.mean") == [0.962918, 0.5]
    # Where a dotted key and a nested path both match, the longer key wins.
    assert dn.resolve({"x": {"b": {"c": 1}}, "x.b": {"c": 2}}, "x.b.c") == [2]
    for bad in ("conditions.kd.test/acc", "points.3.z", "teacher.test/acc.selected.mean.x"):
        with pytest.raises(KeyError):
            dn.resolve(SUMMARY, bad)


def test_reducers_of_a_pattern():
    p_holm = '"comparisons.test/acc.selected.* - ce.p_holm"'
    assert dn.render_field(SUMMARY, f"{p_holm} count<0.05 d") == "1"  # 0.047 counts, null does not
    assert dn.render_field(SUMMARY, f"{p_holm} len d") == "2"
    assert dn.render_field(SUMMARY, '"comparisons.test/acc.selected.* - ce.p" count<1e-6 d') == "1"
    assert dn.render_field(SUMMARY, "conditions.*.test/acc.selected.mean count>0.9 d") == "2"
    assert dn.render_field({"p": [0.05, 0.01, 0.049]}, "p.* count<0.05 d") == "2"  # strictly below
    assert dn.render_field({"p": [0.05, 0.01, 0.049]}, "p.* count>0.049 d") == "1"
    assert dn.render_field(SUMMARY, "conditions.*.test/acc.selected.mean min .3f") == "0.500"
    assert dn.render_field(SUMMARY, "conditions.*.test/acc.selected.std max .4f") == "0.0077"
    assert dn.render_field(SUMMARY, "*.test/acc.selected.std min .4f", prefix="conditions") == "0.0069"
    with pytest.raises(ValueError, match="and only a pattern"):
        dn.render_field(SUMMARY, "conditions.ce.test/acc.selected.std max .4f")


def test_regions_are_found_and_rendered_as_written_by_hand():
    regions = dn.find_regions(DOC)
    assert [r.kind for r in regions] == ["n"] * 6 + ["rows"]  # the marker in a code span is not one
    assert [r.line for r in regions] == [3, 4, 5, 6, 7, 7, 9]
    rendered = [dn.render_region(r, SUMMARY) for r in regions]
    assert rendered[:6] == ["0.992", "\u22120.7", "0.047", "2.1e-5", "3", "2.6"]
    assert rendered[6] == (
        "| condition | acc | std |\n|---|---:|---:|\n| ce | 0.970 | 0.0069 |\n| KD, α = 0.5 | 0.963 | 0.0077 |\n"
    )


def test_inline_templates_with_a_prefix():
    text = (
        "CE <!--n digits_kd in=conditions.ce.test/acc.selected {mean .3f} ± {std .3f}-->0.9 ± 0.1<!--/n--> and KD\n"
        'at <!--n digits_kd in="comparisons.test/acc.selected.kd_a0.5_T4 - ce" {diff_mean x100 +.1f minus} pp'
        " (Holm p = {p_holm .2g})-->x<!--/n-->.\n"
    )
    assert [dn.render_region(r, SUMMARY) for r in dn.find_regions(text)] == [
        "0.970 ± 0.007",
        "\u22120.7 pp (Holm p = 0.047)",
    ]


def test_check_then_update_then_check(tmp_path):
    _write_run(tmp_path / "results")
    doc = tmp_path / "doc.md"
    doc.write_text(DOC)
    out = dn.check_documents([str(doc)], str(tmp_path / "results"))
    assert out.regions == 7 and not out.broken and not out.missing
    # 0.990 vs 0.992 and -0.4 vs -0.7 differ; 0.047, 2.1e-5, 3, 2.6 and the table match.
    assert len(out.differ) == 2
    assert "documents 0.990, the run gives 0.992" in out.differ[0]
    assert f"doc.md:{3}" in out.differ[0] and "doc.md:4" in out.differ[1]
    assert doc.read_text() == DOC  # check writes nothing
    out = dn.update_documents([str(doc)], str(tmp_path / "results"))
    assert out.changed == {str(doc): 2}
    expected = DOC.replace(">0.990<", ">0.992<").replace(">\u22120.4<", ">\u22120.7<")
    assert doc.read_text() == expected
    assert dn.check_documents([str(doc)], str(tmp_path / "results")).ok


def test_tolerance_is_one_unit_in_the_last_printed_digit():
    assert dn.same_numbers("0.963", "0.964") and dn.same_numbers("0.963", "0.962")
    assert not dn.same_numbers("0.963", "0.965")
    assert dn.same_numbers("\u22120.7 pp [\u22121.8, +2.2]", "\u22120.8 pp [\u22121.8, +2.1]")
    assert not dn.same_numbers("\u22120.7 pp", "\u22120.7 %")
    assert dn.same_numbers("2e-5", "3e-5") and not dn.same_numbers("2e-5", "4e-5")
    assert dn.same_numbers("0.047", "0.05")  # the coarser rendering sets the unit
    assert not dn.same_numbers("0.047", "n/a")
    assert not dn.same_numbers("| a | 0.970 |", "| a | 0.970 | 0.1 |")


def test_a_changed_table_row_is_listed(tmp_path):
    _write_run(tmp_path / "results")
    doc = tmp_path / "doc.md"
    doc.write_text(DOC.replace("| ce | 0.970 | 0.0069 |", "| ce | 0.972 | 0.0069 |"))
    out = dn.check_documents([str(doc)], str(tmp_path / "results"))
    assert len(out.differ) == 3
    assert "rows block, 1 line(s) differ" in out.differ[2] and "| ce | 0.972 |" in out.differ[2]


@pytest.mark.parametrize(
    "text,message",
    [
        ("<!--n digits_kd teacher.test/acc.selected.mean .3f-->0.9<!--/n--> starts a line\n", "starts the line"),
        ("a <!--n digits_kd teacher.test/acc.selected.mean .3f-->0.9 and no end\n", "is not closed"),
        ("a <!--n digits_kd teacher.test/acc.last.mean .3f-->0.9<!--/n-->\n", "has no 'teacher.test/acc.last.mean'"),
        ("a <!--n digits_kd points.*.z .3f-->0.9<!--/n-->\n", "a pattern (*) takes one of min, max, len, count<X"),
        ("a <!--n digits_kd teacher--x .3f-->0.9<!--/n-->\n", "holds '--'"),
        ("a <!--n digits_kd conditions.ce .3f-->0.9<!--/n-->\n", "is a dict, not a number"),
        ("a <!--n digits_kd teacher.test/acc.selected.mean-->0.9<!--/n-->\n", "no format spec"),
        ("a <!--n digits_kdd teacher.test/acc.selected.mean .3f-->0.9<!--/n-->\n", "unknown experiment 'digits_kdd'"),
        ("a <!--n digits_kd:huge teacher.test/acc.selected.mean .3f-->0.9<!--/n-->\n", "unknown preset 'huge'"),
    ],
)
def test_broken_markers_are_named(tmp_path, text, message):
    _write_run(tmp_path / "results")
    doc = tmp_path / "doc.md"
    doc.write_text(text)
    out = dn.check_documents([str(doc)], str(tmp_path / "results"))
    assert not out.ok and len(out.broken) == 1 and message in out.broken[0], out.broken


def test_missing_runs_are_listed_not_guessed(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(DOC + "and a <!--n digits_methods:paper teacher.x .3f-->0.9<!--/n--> from the paper preset\n")
    out = dn.update_documents([str(doc)], str(tmp_path / "results"))
    assert out.missing == {
        os.path.join(str(tmp_path / "results"), "digits_kd"): 7,
        os.path.join(str(tmp_path / "results"), "digits_methods", "paper"): 1,
    }
    assert doc.read_text().startswith(DOC)  # nothing rewritten


def test_cli_check_update_and_runs(tmp_path, capsys):
    _write_run(tmp_path / "results")
    doc = tmp_path / "doc.md"
    doc.write_text(DOC)
    argv = [str(doc), "--results", str(tmp_path / "results")]
    assert main(["docs", "--check", *argv]) == 1
    err = capsys.readouterr().err
    assert "documents 0.990, the run gives 0.992" in err
    assert main(["docs", "--update", *argv]) == 0
    assert "rewritten: " + str(doc) + " (2)" in capsys.readouterr().out
    assert main(["docs", "--check", *argv]) == 0
    assert "7 region(s) match their runs" in capsys.readouterr().out
    assert main(["docs", "--runs", *argv]) == 0
    assert capsys.readouterr().out == f"digits_kd default {tmp_path / 'results' / 'digits_kd'}\n"
    assert main(["docs", "--check", str(tmp_path / "nope.md")]) == 2
    assert "no such document" in capsys.readouterr().err


def test_the_repository_documents_parse():
    """Every region of the README and docs/*.md is well formed and names a registered experiment."""
    paths = dn.document_paths(root=REPO)
    runs = dn.documented_runs(paths)
    assert "digits_kd" in runs
    out = dn.check_documents(paths, os.path.join(REPO, "no-results-here"))
    assert not out.broken and not out.differ and sum(out.missing.values()) == out.regions > 0


def test_documented_numbers_of_digits_kd_match_a_fresh_run(tmp_path):
    """Drift: every number the README and docs quote from digits_kd is what `jaxkd run digits_kd` gives now.

    digits_kd's default preset is the one fast enough for the suite (about 30 s on a 2-core CPU); the
    run goes through the command line, as `make numbers` does.
    """
    out = tmp_path / "digits_kd"
    cmd = [sys.executable, "-m", "jaxkd.cli", "run", "digits_kd", "--preset", "default", "--out", str(out)]
    done = subprocess.run([*cmd, "--no-progress"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    outcome = dn.check_documents(dn.document_paths(root=REPO), str(tmp_path), runs={"digits_kd"})
    assert outcome.regions >= 10  # the README quotes this run
    assert outcome.ok, "\n".join(
        outcome.differ + outcome.broken + ["regenerate with `make numbers` (or `jaxkd docs --update`)"]
    )
