"""`jaxkd report`: numbers checked against NumPy/scipy on a run written by the library's own writers."""

import csv
import dataclasses
import io
import json
import os

import numpy as np
import pytest
from scipy import stats as st

from jaxkd import results, stats
from jaxkd.cli import main
from jaxkd.experiment import compare_to_baseline, label_tests
from jaxkd.outputs import write_outputs
from jaxkd.sweep import SweepResult

NAMES = ["ce", "kd", "dkd"]
STEPS = np.array([10, 20, 30])
S, G, E = 6, len(NAMES), len(STEPS)
DIVERGED = (4, 2)  # seed 4 of "dkd"


@dataclasses.dataclass(frozen=True)
class _Config:
    n_seeds: int = S


def _history(rng, s, g):
    return {
        "test/acc": rng.uniform(0.5, 0.95, (s, g, E)),
        "test/loss": rng.uniform(0.1, 2.0, (s, g, E)),
        "val/acc": rng.uniform(0.5, 1.0, (s, g, E)),
        "train/loss": rng.uniform(0.1, 2.0, (s, g, E)),
    }


def _fake_runs():
    """Hand-made sweeps (students: 6 seeds × 3 conditions × 3 evaluations; teacher: one seed)."""
    rng = np.random.default_rng(0)
    diverged = np.zeros((S, G), bool)
    diverged[DIVERGED] = True
    hist = _history(rng, S, G)
    hist["test/acc"][:, 1] += 0.05  # kd clearly differs from ce
    for v in hist.values():
        v[DIVERGED] = np.nan
    t_hist = _history(rng, 1, 1)
    students = SweepResult(
        states=_selected(hist),
        history=hist,
        steps=STEPS,
        grid={"kd.weight": np.array([0.0, 0.9, 0.0])},
        diverged=diverged,
    )
    teacher = SweepResult(
        states=_selected(t_hist), history=t_hist, steps=STEPS, grid={}, diverged=np.zeros((1, 1), bool)
    )
    return students, teacher


def _selected(hist):
    """The part of a final state the summaries read: each run's selected step (argmax of val/acc; no ties here)."""
    from types import SimpleNamespace

    pick = np.argmax(np.nan_to_num(hist["val/acc"], nan=-np.inf), axis=-1)
    return SimpleNamespace(selected=SimpleNamespace(step=np.where(np.isnan(hist["val/acc"]).all(-1), 0, STEPS[pick])))


def _write(out, summary, rows=()):
    write_outputs(str(out), config=_Config(), rows=list(rows), summary=summary, figures={})
    return str(out)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    students, teacher = _fake_runs()
    summary = {
        "teacher": results.summarize_sweep(teacher, ["teacher"])["teacher"],
        "conditions": results.summarize_sweep(students, NAMES),
        "comparisons": compare_to_baseline(students, NAMES, "ce", ("test/acc", "test/loss")),
        "legend": {"ce": "CE only", "kd": {"ce.weight": 0.1, "kd.weight": 0.9}, "dkd": "DKD"},
    }
    rows = results.records_from_sweep(teacher, ["teacher"]) + results.records_from_sweep(students, NAMES)
    return _write(tmp_path_factory.mktemp("run") / "out", summary, rows), students, teacher


def _values(result, g, metric, at):
    """Per-seed values of condition ``g`` at ``at``, computed here with NumPy (diverged seeds dropped)."""
    ok = ~result.diverged[:, g]
    v = result.history[metric][ok, g]
    if at == "last":
        return v[:, -1]
    if at == "selected":
        return v[np.arange(len(v)), np.argmax(result.history["val/acc"][ok, g], axis=-1)]
    return v.min(-1) if metric.endswith("loss") else v.max(-1)


def _expected(x):
    m, s = np.mean(x), np.std(x, ddof=1)
    lo, hi = st.t.interval(0.95, len(x) - 1, loc=m, scale=s / np.sqrt(len(x)))
    return {"mean": m, "std": s, "ci_low": lo, "ci_high": hi, "n": len(x)}


def _expected_tests(students, metric, at):
    """Paired t of kd and dkd against ce (pairs with a diverged seed dropped), Holm over the two, d_z."""
    h = np.where(students.diverged[..., None], np.nan, students.history[metric])
    if at == "selected":
        pick = np.argmax(students.history["val/acc"], axis=-1)
        h = np.take_along_axis(h, pick[..., None], -1)[..., 0]
    else:
        h = h[..., -1]
    out = {}
    for g, name in ((1, "kd"), (2, "dkd")):
        keep = np.isfinite(h[:, g]) & np.isfinite(h[:, 0])
        d = h[keep, g] - h[keep, 0]
        res = st.ttest_rel(h[keep, g], h[keep, 0])
        ci = _expected(d)
        out[f"{name} - ce"] = {
            "diff_mean": d.mean(),
            "diff_ci_low": ci["ci_low"],
            "diff_ci_high": ci["ci_high"],
            "statistic": res.statistic,
            "p": res.pvalue,
            "effect_size": d.mean() / d.std(ddof=1),
            "n": int(keep.sum()),
        }
    p = np.array([out["kd - ce"]["p"], out["dkd - ce"]["p"]])
    lo, hi = np.argmin(p), np.argmax(p)
    adj = np.empty(2)
    adj[lo] = min(1.0, 2 * p[lo])
    adj[hi] = min(1.0, max(adj[lo], p[hi]))
    for t, a in zip(out.values(), adj):
        t["p_adjusted"] = a
    return out


def _report(capsys, *argv):
    assert main(["report", *argv]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    return captured.out


@pytest.mark.parametrize("at", ["selected", "last", "max_over_evals"])
def test_json_numbers_match_numpy_and_scipy(run, at, capsys):
    out, students, teacher = run
    report = json.loads(_report(capsys, out, "--format", "json", "--at", at))
    assert report["metrics"] == ["test/acc", "test/loss"]  # the default: the test metrics only
    got = {(r["condition"], r["metric"]): r for r in report["conditions"]}
    assert set(got) == {(c, m) for c in ["teacher", *NAMES] for m in ("test/acc", "test/loss")}
    for metric in ("test/acc", "test/loss"):
        for g, name in enumerate(NAMES):
            want, row = _expected(_values(students, g, metric, at)), got[name, metric]
            for k in ("mean", "std", "ci_low", "ci_high"):
                np.testing.assert_allclose(row[k], want[k], rtol=1e-12, err_msg=f"{name} {metric} {k}")
            assert row["n"] == want["n"] == (S - 1 if name == "dkd" else S)
            assert (row["n_seeds"], row["n_diverged"], row["at"]) == (S, int(name == "dkd"), at)
        t = got["teacher", metric]
        assert t["kind"] == "teacher" and t["n"] == 1 and t["std"] is None and t["ci_low"] is None
        np.testing.assert_allclose(t["mean"], _values(teacher, 0, metric, at)[0], rtol=1e-12)
    if at == "max_over_evals":
        assert report["comparisons"] == []
        assert any("TEST-SET MAXIMUM" in n and "optimistic" in n for n in report["notes"])
        return
    assert len(report["comparisons"]) == 4
    for metric in ("test/acc", "test/loss"):
        want = _expected_tests(students, metric, at)
        rows = {r["comparison"]: r for r in report["comparisons"] if r["metric"] == metric}
        assert set(rows) == set(want)
        for name, w in want.items():
            r = rows[name]
            assert (r["test"], r["correction"], r["effect_size_kind"], r["at"]) == ("paired t", "holm", "cohens_dz", at)
            for k in ("diff_mean", "diff_ci_low", "diff_ci_high", "statistic", "p", "p_adjusted", "effect_size"):
                np.testing.assert_allclose(r[k], w[k], rtol=1e-10, err_msg=f"{metric} {name} {k}")
            assert r["n"] == w["n"]
    assert any("5 of 6 seeds" not in n and "1 of 6 seeds diverged (NaN/Inf; seed 4)" in n for n in report["notes"])


def test_csv_parses_back_to_the_same_rows(run, capsys):
    out, students, _ = run
    rows = list(csv.DictReader(io.StringIO(_report(capsys, out, "--format", "csv", "--metric", "test/acc"))))
    assert [r["kind"] for r in rows] == ["teacher", "condition", "condition", "condition", "comparison", "comparison"]
    for g, name in enumerate(NAMES):
        r = next(r for r in rows if r["condition"] == name)
        want = _expected(_values(students, g, "test/acc", "selected"))
        np.testing.assert_allclose(
            [float(r[k]) for k in ("mean", "std", "ci_low", "ci_high")],
            [want[k] for k in ("mean", "std", "ci_low", "ci_high")],
            rtol=1e-12,
        )
        assert int(r["n"]) == want["n"]
    assert rows[0]["std"] == "" and rows[0]["ci_low"] == ""  # one teacher seed: no std, no CI
    want = _expected_tests(students, "test/acc", "selected")
    for r in rows[4:]:
        np.testing.assert_allclose(
            [float(r["p"]), float(r["p_adjusted"]), float(r["effect_size"])],
            [want[r["comparison"]][k] for k in ("p", "p_adjusted", "effect_size")],
            rtol=1e-10,
        )


def test_text_shows_mean_std_ci_n_and_the_tests(run, capsys):
    out, students, _ = run
    text = _report(capsys, out)
    for g, name in enumerate(NAMES):
        w = _expected(_values(students, g, "test/acc", "selected"))
        line = next(ln for ln in text.splitlines() if ln.split()[:1] == [name])  # the first block is test/acc
        assert f"{w['mean']:.4f} ± {w['std']:.4f}" in line
        assert f"[{w['ci_low']:.4f}, {w['ci_high']:.4f}]" in line
        assert line.endswith("5/6" if name == "dkd" else "6")
    assert "teacher (reference)" in text and "val/acc (at" not in text and "train/loss" not in text
    want = _expected_tests(students, "test/acc", "selected")["kd - ce"]
    line = next(ln for ln in text.splitlines() if "test/acc" in ln and "kd - ce" in ln)
    assert f"{want['statistic']:.2f}" in line and f"{want['effect_size']:.2f}" in line
    assert "paired t" in text and "Holm" in text and "Cohen's d_z" in text
    assert "legend: ce = CE only; kd = ce.weight=0.1, kd.weight=0.9; dkd = DKD" in text


def _md_tables(text):
    """Each markdown table as a list of rows (cells stripped), the separator row dropped."""
    tables, cur = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            cur.append([c.strip() for c in line.strip("|").split(" | ")])
        elif cur:
            tables.append([cur[0], *cur[2:]])
            cur = []
    return tables


def test_markdown_tables(run, capsys):
    out, students, _ = run
    text = _report(capsys, out, "--format", "markdown", "--metric", "test/acc,test/loss", "--at", "last")
    assert "#### test/acc (at last)" in text and "#### test/loss (at last)" in text
    acc, loss, tests = _md_tables(text)
    assert acc[0] == loss[0] == ["condition", "mean ± std", "95% CI", "n"]
    assert [r[0] for r in acc[1:]] == ["teacher (reference)", *NAMES]
    w = _expected(_values(students, 1, "test/loss", "last"))
    assert loss[3] == ["kd", f"{w['mean']:.4f} ± {w['std']:.4f}", f"[{w['ci_low']:.4f}, {w['ci_high']:.4f}]", "6"]
    assert tests[0] == ["metric", "comparison", "diff", "95% CI", "t", "p", "p (Holm)", "d_z", "n"]
    assert [(r[0], r[1]) for r in tests[1:]] == [
        ("test/acc", "kd - ce"),
        ("test/acc", "dkd - ce"),
        ("test/loss", "kd - ce"),
        ("test/loss", "dkd - ce"),
    ]


def test_max_over_evals_is_labelled_optimistic(run, capsys):
    text = _report(capsys, run[0], "--at", "max_over_evals")
    assert "test/acc: test-set maximum over evaluations (optimistic)" in text
    assert "test/loss: test-set minimum over evaluations (optimistic)" in text
    assert "comparisons" not in text and "the run's tests are at selected and last" in text


def test_chosen_metrics(run, capsys):
    report = json.loads(_report(capsys, run[0], "--format", "json", "--metric", "val/acc", "--metric", "test/loss"))
    assert report["metrics"] == ["val/acc", "test/loss"]
    assert {r["metric"] for r in report["conditions"]} == {"val/acc", "test/loss"}
    assert {r["metric"] for r in report["comparisons"]} == {"test/loss"}  # the run tested no val/ metric


def test_nested_tables_of_several_pairs(run, tmp_path, capsys):
    block = json.loads(open(os.path.join(run[0], "summary.json")).read())
    del block["teacher"]  # a loaded teacher is not summarised
    out = _write(tmp_path / "pairs", {"pairs": {"wrn40:wrn16": block, "r56:r20": block}})
    report = json.loads(_report(capsys, out, "--format", "json"))
    assert [r["table"] for r in report["conditions"]] == ["pairs/wrn40:wrn16"] * 6 + ["pairs/r56:r20"] * 6
    assert len(report["comparisons"]) == 8
    text = _report(capsys, out)
    assert text.index("== pairs/wrn40:wrn16 ==") < text.index("== pairs/r56:r20 ==")


def test_a_summary_without_conditions_prints_its_scalars(tmp_path, capsys):
    out = _write(
        tmp_path / "theory",
        {"convention": "no 1/2", "N": [1, 2, 3], "fit": {"exponent": 0.625, "n": 5}, "exact": {"teacher": [0.1, 0.2]}},
    )
    text = _report(capsys, out)
    assert text.splitlines()[0] == (
        f"jaxkd: {out}/summary.json has no condition table (no 'conditions' entry); its "
        "scalar entries follow, its 2 lists (curves) are in summary.json"
    )
    assert "fit.exponent  0.625" in text and "convention    no 1/2" in text
    rows = list(csv.reader(io.StringIO(_report(capsys, out, "--format", "csv"))))
    assert rows == [["key", "value"], ["convention", "no 1/2"], ["fit.exponent", "0.625"], ["fit.n", "5"]]
    assert json.loads(_report(capsys, out, "--format", "json"))["scalars"] == {
        "convention": "no 1/2",
        "fit.exponent": 0.625,
        "fit.n": 5,
    }
    assert main(["report", out, "--metric", "test/acc"]) == 2
    assert "has no condition table" in _err(capsys)


def _err(capsys):
    captured = capsys.readouterr()
    lines = [ln for ln in captured.err.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("jaxkd: error: ") and captured.out == ""
    return lines[0]


def test_bad_input_is_one_line_and_exit_2(run, tmp_path, capsys):
    out = run[0]
    (tmp_path / "empty").mkdir()
    (tmp_path / "interrupted" / "checkpoints").mkdir(parents=True)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "summary.json").write_text("{not json")
    parent = os.path.dirname(out)
    cases = [
        ([str(tmp_path / "nope")], "does not exist"),
        ([os.path.join(out, "summary.json")], f"is not a directory; give its directory, {out}"),
        ([str(tmp_path / "empty")], "has no summary.json, so it is not a jaxkd results directory"),
        ([str(tmp_path / "interrupted")], "is not a finished run (no summary.json yet)"),
        ([parent], f"holds no summary.json but runs below it do: {os.path.basename(out)}"),
        ([str(tmp_path / "broken")], "cannot read"),
        (
            [out, "--metric", "test/nope"],
            "unknown metric 'test/nope'; choose one of: test/acc, test/loss, train/loss, val/acc",
        ),
        ([out, "--at", "best"], "argument --at: invalid choice: 'best'"),
        ([out, "--format", "html"], "argument --format: invalid choice: 'html'"),
    ]
    for argv, match in cases:
        assert main(["report", *argv]) == 2, argv
        assert match in _err(capsys), argv


def test_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["report", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "usage: jaxkd report" in text and "95% CI" in text and "max_over_evals" in text


def test_final_step_runs_report_their_tables_and_tests(tmp_path, capsys):
    """functional_kd / backdoor_kd layout: per-setup blocks, stats without evaluation points, tests under "tests"."""
    from jaxkd import stats

    rng = np.random.default_rng(3)
    base, kd = rng.uniform(0.8, 0.9, 8), rng.uniform(0.85, 0.95, 8)
    block = {
        "teacher": {"all/acc": stats.summarize(rng.uniform(0.9, 1.0, 8))},
        "conditions": {"base": {"all/acc": stats.summarize(base)}, "kd": {"all/acc": stats.summarize(kd)}},
        "tests": {"all/acc": label_tests(stats.compare_family({"kd - base": (kd, base)}, test="paired"), "all/acc")},
    }
    out = _write(tmp_path / "final", {"setups": {"digits:mlp": block}})
    report = json.loads(_report(capsys, out, "--format", "json"))
    assert report["final_only"] and report["metrics"] == ["all/acc"]
    rows = {r["condition"]: r for r in report["conditions"]}
    ci = st.t.interval(0.95, 7, loc=kd.mean(), scale=st.sem(kd))
    np.testing.assert_allclose([rows["kd"]["mean"], rows["kd"]["ci_low"], rows["kd"]["ci_high"]], [kd.mean(), *ci])
    (c,) = report["comparisons"]
    t = st.ttest_rel(kd, base)
    d = kd - base
    np.testing.assert_allclose([c["diff_mean"], c["statistic"], c["p"]], [d.mean(), t.statistic, t.pvalue])
    np.testing.assert_allclose([c["diff_ci_low"], c["diff_ci_high"]], st.t.interval(0.95, 7, d.mean(), st.sem(d)))
    np.testing.assert_allclose(c["effect_size"], d.mean() / d.std(ddof=1))
    assert c["effect_size_kind"] == "cohens_dz" and c["table"] == "setups/digits:mlp"
    text = _report(capsys, out)
    assert "all/acc (final step)" in text and "comparisons at the final step" in text
    assert main(["report", out, "--at", "max_over_evals"]) == 2
    assert "final step only" in _err(capsys)
    # The report reads a test by its fields, never by where it sits: without them it is refused in one line.
    del block["tests"]["all/acc"]["kd - base"]["metric"]
    old = _write(tmp_path / "old", {"setups": {"digits:mlp": block}})
    assert main(["report", old]) == 2
    assert "has no metric field(s): it was written by an older jaxkd" in _err(capsys)


def test_differences_below_the_display_precision_print_as_zero(tmp_path, capsys):
    """Two identical conditions differ by float round-off (-3.725e-09): shown as 0 at the table's precision."""
    acc = np.array([0.90625, 0.875, 0.9375])
    same = acc - 3.725290298461914e-09  # the same accuracies, summed in another order in float32
    tiny = np.array([3.1e-6, 2.9e-6, 3.3e-6])  # a metric of size 1e-6 keeps 3 significant digits
    summary = {
        "conditions": {
            "ce": {"test/acc": stats.summarize(acc), "test/mse": stats.summarize(tiny)},
            "ce_again": {"test/acc": stats.summarize(same), "test/mse": stats.summarize(tiny + 1e-7)},
        },
        "tests": {
            "test/acc": label_tests({"ce_again - ce": stats.paired_test(same, acc)}, "test/acc"),
            "test/mse": label_tests({"ce_again - ce": stats.paired_test(tiny + 1e-7, tiny)}, "test/mse"),
        },
    }
    out = _write(tmp_path / "same", summary)
    text = _report(capsys, out)
    assert "e-0" not in text and "-0.0000" not in text
    acc_line = next(ln for ln in text.splitlines() if ln.split()[:2] == ["test/acc", "ce_again"])
    assert acc_line.split()[4:7] == ["0.0000", "[0.0000,", "0.0000]"]  # after "test/acc ce_again - ce"
    mse_line = next(ln for ln in text.splitlines() if ln.split()[:2] == ["test/mse", "ce_again"])
    assert mse_line.split()[4] == f"{1e-7:.8f}" == "0.00000010"
    ce = next(ln for ln in text.splitlines() if ln.split()[:1] == ["ce"] and "0.000003" in ln)
    assert f"{tiny.mean():.8f} ± {tiny.std(ddof=1):.8f}" in ce
    # The data formats keep every digit.
    report = json.loads(_report(capsys, out, "--format", "json"))
    diff = next(r for r in report["comparisons"] if r["metric"] == "test/acc")["diff_mean"]
    np.testing.assert_allclose(diff, -3.725290298461914e-09, rtol=1e-6)


def test_summary_notes_and_scope_are_printed_under_their_tables(tmp_path, capsys):
    two = stats.summarize([0.5, 0.9])
    note = "n = 2 seeds: the interval is too wide to be useful"
    scope = "one shared teacher and one validation split: the CIs cover student seeds only"
    summary = {
        "scope": {"shared_teacher": True, "note": scope},
        "conditions": {"ce": {"test/acc": {**two, "note": note}}, "kd": {"test/acc": {**two, "note": note}}},
    }
    out = _write(tmp_path / "notes", summary)
    lines = _report(capsys, out).splitlines()
    table_end = max(i for i, ln in enumerate(lines) if ln.split()[:1] in (["ce"], ["kd"]))
    assert lines[table_end + 1] == f"  note: {note} (ce, kd)"
    assert lines[-1] == f"scope: {scope}"
    md = _report(capsys, out, "--format", "markdown")
    assert f"Note: {note} (ce, kd)" in md and f"Scope: {scope}" in md
    rows = list(csv.DictReader(io.StringIO(_report(capsys, out, "--format", "csv"))))
    assert [r["note"] for r in rows] == [note, note]


def test_bounded_intervals_are_drawn_within_their_bounds():
    from jaxkd import plotting

    # Two seeds of an agreement: the t interval is [-4.92, 5.77] (the smoke run); unclipped here.
    wide = {"mean": 0.425, "std": 0.6, "ci_low": -4.92, "ci_high": 5.77, "n": 2}
    narrow = {"mean": 0.9, "std": 0.01, "ci_low": 0.88, "ci_high": 0.92, "n": 8}
    for bounds, summaries in (((0, 1), [wide, narrow]), (None, [{**wide, "bounds": [0, 1]}, narrow])):
        fig, axes = plotting.figure()
        ax = axes[0, 0]
        plotting.points_with_ci(ax, ["a", "b"], summaries, ylabel="agreement", bounds=bounds)
        bars = np.concatenate([seg[:, 1] for seg in ax.collections[0].get_segments()])
        assert bars.min() == 0.0 and bars.max() == 1.0
        lo, hi = ax.get_ylim()
        assert -0.05 <= lo < 0 and 1 < hi <= 1.05
        plotting.to_png(fig)
    fig, axes = plotting.figure()  # an unbounded metric keeps its whole interval
    plotting.points_with_ci(axes[0, 0], ["a"], [wide], ylabel="loss")
    assert axes[0, 0].get_ylim()[0] < -4.92
    plotting.to_png(fig)


def test_digits_methods_figure_labels_do_not_overlap_the_title(monkeypatch):
    from types import SimpleNamespace

    import experiments.digits_methods as dm
    from jaxkd import plotting

    rng = np.random.default_rng(0)
    names, s, e = list(dm.METHODS), 8, 4
    result = SimpleNamespace(
        diverged=np.zeros((s, len(names)), bool),
        steps=np.arange(1, e + 1) * 100,
        history={"val/acc": rng.uniform(0.8, 1.0, (s, len(names), e))},
        n_seeds=s,
    )
    summary = {
        "conditions": {
            n: {m: {"selected": stats.summarize(rng.uniform(0.8, 0.95, s))} for m in ("test/acc", "test/agreement")}
            for n in names
        },
        "teacher": {"test/acc": {"selected": {"mean": 0.98}}},
    }
    drawn = []
    real = plotting.to_png

    def keep(fig):
        png = real(fig)  # tight_layout and draw, as the figure is saved
        drawn.append(fig)
        return png

    monkeypatch.setattr(plotting, "to_png", keep)
    dm._figure(result, names, summary, SimpleNamespace(name="digits"), dm.PRESETS["default"])
    (fig,) = drawn
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    title = fig._suptitle.get_window_extent(renderer)
    for ax in fig.axes:
        label = ax.yaxis.label.get_window_extent(renderer)
        assert not label.overlaps(title), ax.get_ylabel()
        assert label.y1 <= title.y0, ax.get_ylabel()
