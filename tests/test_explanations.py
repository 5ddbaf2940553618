"""The explanations experiment on a fresh subdistill smoke run: its outputs' content recomputed independently."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats as st

import experiments.explanations as ex
import experiments.subdistill as sd
from jaxkd import attribution as at
from jaxkd.data import load_dataset
from jaxkd.data.augment import normalize
from jaxkd.data.procedural import generate
from jaxkd.ensemble import load_ensemble
from jaxkd.errors import ConfigError
from jaxkd.teacher import Teacher

pytestmark = pytest.mark.xdist_group("subdistill")  # shares one subdistill smoke run with test_subdistill


@pytest.fixture(scope="session")
def subdistill_dir(subdistill_smoke_dir):
    return subdistill_smoke_dir


@pytest.fixture(scope="session")  # session: a module fixture reruns when xdist interleaves other modules' tests
def run(subdistill_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("explanations")
    config = dataclasses.replace(ex.runlocal(ex.PRESETS["default"]), subdistill_dir=str(subdistill_dir))
    ex.run(config, str(out), progress=False)
    with open(out / "records.csv") as f:
        rows = list(csv.DictReader(f))
    return config, out, json.loads((out / "summary.json").read_text()), rows


def _member_values(rows, subtask, fraction, method, condition, metric) -> dict[int, float]:
    """seed -> the member's recorded value (its mean over the images)."""
    return {
        int(r["seed"]): float(r["value"])
        for r in rows
        if r["subtask"] == subtask and r["fraction"] == fraction and r["method"] == method
        and r["condition"] == condition and r["metric"] == metric
    }  # fmt: skip


def _cells(summary):
    for name, sub in summary["subtasks"].items():
        for fraction, cell in sub["fractions"].items():
            yield name, fraction, cell


def _holm(p):
    """Holm's step-down adjusted p-values from the definition; an untested comparison (None) counts as p = 1 in the
    family and gets no adjusted p (jaxkd.stats.holm's rule)."""
    untested = np.array([v is None for v in p])
    p = np.where(untested, 1.0, np.array([1.0 if v is None else v for v in p]))
    order = np.argsort(p, kind="stable")
    m = len(p)
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, (m - rank) * p[i])
        adj[i] = min(1.0, running)
    return np.where(untested, np.nan, adj)


def test_summaries_are_the_records_statistics(run):
    config, _, summary, rows = run
    policies = summary["policies"]
    assert policies == list(sd.POLICIES) and summary["baseline"] == sd.BASELINE
    n_seeds = sd.runlocal(sd.PRESETS["default"]).n_seeds
    cells = list(_cells(summary))
    assert [(n, f) for n, f, _ in cells] == [("square", "0.5")]
    for name, fraction, cell in cells:
        assert cell["members"] == n_seeds * len(policies)
        for p in policies:
            acc = _member_values(rows, name, fraction, "", p, "images/acc")
            assert sorted(acc) == list(range(n_seeds))
            v = np.array(list(acc.values()))
            assert cell["images/acc"][p]["mean"] == pytest.approx(v.mean(), abs=1e-12)
        for method in config.methods:
            block = cell["methods"][method]
            for p in policies:
                metrics = block["conditions"][p]
                assert set(metrics) == {*ex.AGREEMENT, *ex.EVIDENCE, "flip/area"}
                for metric, s in metrics.items():
                    v = np.array(list(_member_values(rows, name, fraction, method, p, metric).values()))
                    assert len(v) == n_seeds == s["n"], (p, metric)
                    assert s["mean"] == pytest.approx(v.mean(), abs=1e-12), (p, metric)
                    assert s["std"] == pytest.approx(v.std(ddof=1), abs=1e-12), (p, metric)
                    assert s["ci_low"] <= s["mean"] <= s["ci_high"]


def test_paired_tests_are_scipys_on_the_per_seed_values_holm_corrected(run):
    config, _, summary, rows = run
    tested = 0
    for name, fraction, cell in _cells(summary):
        for method in config.methods:
            comparisons = cell["methods"][method]["comparisons"]
            assert set(comparisons) == set(ex.TESTED)
            for metric, tests in comparisons.items():
                others = [p for p in summary["policies"] if p != sd.BASELINE]
                assert list(tests) == [f"{p} - {sd.BASELINE}" for p in others]
                base = _member_values(rows, name, fraction, method, sd.BASELINE, metric)
                b = np.array([base[s] for s in sorted(base)])
                raw = []
                for p in others:
                    got = _member_values(rows, name, fraction, method, p, metric)
                    a = np.array([got[s] for s in sorted(base)])  # seed s of p against seed s of SubDistill
                    t = tests[f"{p} - {sd.BASELINE}"]
                    assert t["metric"] == metric and t["comparison"] == f"{p} - {sd.BASELINE}" and t["n"] == len(b)
                    assert t["diff_mean"] == pytest.approx((a - b).mean(), abs=1e-12)
                    d = a - b
                    if np.ptp(d) > 0:
                        assert t["p"] == pytest.approx(st.ttest_rel(a, b).pvalue, rel=1e-9)
                        assert t["cohens_dz"] == pytest.approx(d.mean() / d.std(ddof=1), rel=1e-9)
                    else:  # a constant difference (top-k overlap is a count) has no t statistic
                        assert t["p"] is None and t["cohens_dz"] is None
                    raw.append(t["p"])
                    tested += t["p"] is not None
                holm = [np.nan if t["p_holm"] is None else t["p_holm"] for t in tests.values()]
                np.testing.assert_allclose(holm, _holm(raw))
    assert tested > 0
    for method in config.methods:  # the headline counts the Spearman comparisons
        (cell,) = [c for _, _, c in _cells(summary)]
        tests = cell["methods"][method]["comparisons"]["agreement/spearman"].values()
        h = summary["headline"][method]
        assert h["comparisons"] == len(tests) == len(summary["policies"]) - 1
        assert h["subdistill_higher"] == sum(t["diff_mean"] < 0 for t in tests)


def test_accuracy_agreement_relation_is_scipys_spearman_over_the_cells_students(run):
    config, _, summary, rows = run
    tested = 0
    for name, fraction, cell in _cells(summary):
        members = [
            (p, s)
            for p in summary["policies"]
            for s in sorted(_member_values(rows, name, fraction, "", p, "images/acc"))
        ]
        acc = {p: _member_values(rows, name, fraction, "", p, "images/acc") for p in summary["policies"]}
        for method in config.methods:
            agree = {p: _member_values(rows, name, fraction, method, p, ex.RELATED) for p in summary["policies"]}
            a = np.array([acc[p][s] for p, s in members])
            b = np.array([agree[p][s] for p, s in members])
            got = cell["methods"][method]["accuracy_vs_agreement"]
            assert got["n"] == len(members) == cell["members"]
            related = summary["headline"][method]["accuracy_vs_agreement"]
            assert {"subtask": name, "fraction": fraction, "rho": got["rho"], "p": got["p"], "n": got["n"]} in related
            if np.ptp(a) == 0 or np.ptp(b) == 0:  # students all alike on these images: no correlation to report
                assert got["rho"] is None
                continue
            want = st.spearmanr(a, b)
            assert got["rho"] == pytest.approx(want.statistic, rel=1e-9)
            assert got["p"] == pytest.approx(want.pvalue, rel=1e-9)
            assert got["ci_low"] < got["rho"] < got["ci_high"]
            tested += 1
    assert tested > 0


def test_agreement_at_equal_accuracy_is_a_common_line_and_paired_tests_on_its_residuals(run):
    config, _, summary, rows = run
    policies = summary["policies"]
    tested = 0
    for name, fraction, cell in _cells(summary):
        acc = {p: _member_values(rows, name, fraction, "", p, "images/acc") for p in policies}
        for method in config.methods:
            agree = {p: _member_values(rows, name, fraction, method, p, ex.RELATED) for p in policies}
            got = cell["methods"][method]["at_equal_accuracy"]
            x = np.array([acc[p][s] for p in policies for s in sorted(acc[p])])
            y = np.array([agree[p][s] for p in policies for s in sorted(acc[p])])
            if np.ptp(x) == 0:
                assert got == {"slope": None, "intercept": None, "comparisons": {}}
                continue
            # least squares from the normal equations, not np.polyfit
            slope = np.sum((x - x.mean()) * (y - y.mean())) / np.sum((x - x.mean()) ** 2)
            intercept = y.mean() - slope * x.mean()
            assert got["slope"] == pytest.approx(slope, rel=1e-9, abs=1e-12)
            assert got["intercept"] == pytest.approx(intercept, rel=1e-9, abs=1e-12)
            resid = {
                p: np.array([agree[p][s] - intercept - slope * acc[p][s] for s in sorted(acc[p])]) for p in policies
            }
            raw = []
            for p in policies:
                if p == sd.BASELINE:
                    continue
                t = got["comparisons"][f"{p} - {sd.BASELINE}"]
                d = resid[p] - resid[sd.BASELINE]
                assert t["diff_mean"] == pytest.approx(d.mean(), abs=1e-9)
                if np.ptp(d) > 0:
                    assert t["p"] == pytest.approx(st.ttest_rel(resid[p], resid[sd.BASELINE]).pvalue, rel=1e-6)
                    tested += 1
                raw.append(t["p"])
            holm = [np.nan if t["p_holm"] is None else t["p_holm"] for t in got["comparisons"].values()]
            np.testing.assert_allclose(holm, _holm(raw), rtol=1e-6)
            # a residual difference is the raw agreement difference less slope times the accuracy difference
            for p in policies:
                if p != sd.BASELINE:
                    raw_diff = np.mean([agree[p][s] - agree[sd.BASELINE][s] for s in sorted(acc[p])])
                    acc_diff = np.mean([acc[p][s] - acc[sd.BASELINE][s] for s in sorted(acc[p])])
                    want = raw_diff - slope * acc_diff
                    assert got["comparisons"][f"{p} - {sd.BASELINE}"]["diff_mean"] == pytest.approx(want, abs=1e-9)
    assert tested > 0


def test_references_scores_in_range_and_figure(run):
    config, out, summary, rows = run
    for method in config.methods:
        for metric in ex.AGREEMENT:  # the teacher against itself
            (v,) = _member_values(rows, "square", "", method, "teacher", metric).values()
            assert v == pytest.approx(1.0, abs=1e-6), (method, metric)
        for source in ex.REFERENCES:
            assert summary["subtasks"]["square"]["references"][source][method]["flip/area"]["n"] == 1
    evidence = [float(r["value"]) for r in rows if r["metric"].startswith("evidence/")]
    assert len(evidence) > 0 and all(0 <= v <= 1 for v in evidence)
    topk = [float(r["value"]) for r in rows if r["metric"] == "agreement/topk"]
    assert all(0 <= v <= 1 for v in topk)
    assert "scored against the procedural evidence masks" in summary["evidence"]
    png = (out / "figure.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def _lrp_heatmaps(ens, j, x, y, classes=None, gamma=0.25):
    """Member ``j``'s LRP heatmaps, called on the model directly (not through explain_ensemble)."""
    take = lambda t: jax.tree.map(lambda a: a[j], t)  # noqa: E731
    xn = normalize(jnp.asarray(x), jnp.asarray(ens.mean, jnp.float32), jnp.asarray(ens.std, jnp.float32))
    lo, hi = at.box_bounds(ens.mean, ens.std)
    rel = at.lrp(ens.model, take(ens.params), take(ens.rest), xn, jnp.asarray(y), gamma=gamma, low=lo, high=hi,
                 classes=classes)  # fmt: skip
    return np.asarray(rel, np.float64).sum(-1), xn, take


def _gap(model, params, rest, xn, y):
    logits = np.asarray(model.apply(params, rest, xn, train=False)[0], np.float64)
    z_y = logits[np.arange(len(y)), y]
    other = np.where(np.arange(logits.shape[1])[None] == y[:, None], -np.inf, logits)
    return z_y - other.max(-1)


def test_records_are_the_heatmaps_scored_by_numpy(run, subdistill_dir):
    """The teacher's LRP and IG heatmaps and one SubDistill student's LRP heatmaps, recomputed on the recorded images
    and scored here."""
    config, _, summary, rows = run
    sub = summary["subtasks"]["square"]
    classes = sub["classes"]
    full = load_dataset("procedural16")
    data = full.subset_classes(classes)
    idx = np.asarray(sub["images"]["indices"])
    x, y = data.x_test[idx], data.y_test[idx]
    seed_test = int(np.random.SeedSequence(0).generate_state(2)[1])
    split = generate(len(full.y_test), resolution=16, seed=seed_test)
    assert np.array_equal(split.images, full.x_test)
    masks = split.masks[np.isin(full.y_test, classes)][idx]
    assert sub["images"]["mask_share"] == pytest.approx(masks.mean())

    teacher = load_ensemble(str(subdistill_dir / "teacher"))
    h_t, _, _ = _lrp_heatmaps(teacher, 0, x, y, classes=classes)
    pos = np.maximum(h_t, 0)
    mass = (pos * masks).sum((1, 2)) / pos.sum((1, 2))
    (want,) = _member_values(rows, "square", "", "lrp", "teacher", "evidence/mass_accuracy").values()
    assert want == pytest.approx(np.nanmean(mass), abs=1e-5)  # an image without positive relevance has none
    xn_t = normalize(jnp.asarray(x), jnp.asarray(teacher.mean, jnp.float32), jnp.asarray(teacher.std, jnp.float32))
    take_t = lambda t: jax.tree.map(lambda a: a[0], t)  # noqa: E731
    fn = at.output_fn(teacher.model, take_t(teacher.params), take_t(teacher.rest), jnp.asarray(y), "gap", classes)
    ig = np.asarray(at.integrated_gradients(fn, xn_t, steps=config.ig_steps).attributions, np.float64).sum(-1)
    pos_ig = np.maximum(ig, 0)
    (want,) = _member_values(rows, "square", "", "ig", "teacher", "evidence/mass_accuracy").values()
    assert want == pytest.approx(np.nanmean((pos_ig * masks).sum((1, 2)) / pos_ig.sum((1, 2))), abs=1e-5)
    flat = h_t.reshape(len(y), -1)
    pointing = masks.reshape(len(y), -1)[np.arange(len(y)), flat.argmax(-1)]
    (want,) = _member_values(rows, "square", "", "lrp", "teacher", "evidence/pointing_game").values()
    assert want == pytest.approx(pointing.mean(), abs=1e-6)

    students = load_ensemble(str(subdistill_dir / "students" / "square-f0.5"))
    j = next(i for i, m in enumerate(students.members) if m["condition"] == sd.BASELINE and m["seed"] == 0)
    h_s, xn, take = _lrp_heatmaps(students, j, x, y)
    pool = lambda h: h.reshape(len(y), 8, 2, 8, 2).sum((2, 4)).reshape(len(y), -1)  # noqa: E731
    rho = [st.spearmanr(a, b).statistic for a, b in zip(pool(h_s), pool(h_t))]
    got = _member_values(rows, "square", "0.5", "lrp", sd.BASELINE, "agreement/spearman")[0]
    assert got == pytest.approx(np.mean(rho), abs=1e-4)

    # Pixel flipping from its definition: 4x4 patches, most relevant first, replaced by 0 (the data mean).
    patches = h_s.reshape(len(y), 4, 4, 4, 4).sum((2, 4)).reshape(len(y), -1)
    order = np.argsort(-patches, axis=1, kind="stable")
    curve = []
    for n in range(17):
        keep = np.ones((len(y), 16))
        np.put_along_axis(keep, order[:, :n], 0.0, axis=1)
        keep_px = np.repeat(np.repeat(keep.reshape(len(y), 4, 4), 4, 1), 4, 2)[..., None]
        curve.append(_gap(students.model, take(students.params), take(students.rest), xn * keep_px, y))
    curve = np.stack(curve, 1)
    area = ((curve[:, 1:] + curve[:, :-1]) / 2 / 16).sum(1)
    got = _member_values(rows, "square", "0.5", "lrp", sd.BASELINE, "flip/area")[0]
    assert got == pytest.approx(area.mean(), rel=1e-4, abs=1e-5)


def test_images_are_a_seeded_choice_of_those_the_teacher_gets_right(run, subdistill_dir):
    config, _, summary, _ = run
    sub = summary["subtasks"]["square"]
    data = load_dataset("procedural16").subset_classes(sub["classes"])
    teacher = load_ensemble(str(subdistill_dir / "teacher"))
    take = lambda t: jax.tree.map(lambda a: a[0], t)  # noqa: E731
    xn = normalize(jnp.asarray(data.x_test), jnp.asarray(teacher.mean), jnp.asarray(teacher.std))
    logits = np.asarray(teacher.model.apply(take(teacher.params), take(teacher.rest), xn, train=False)[0])
    correct = np.flatnonzero(logits[:, sub["classes"]].argmax(-1) == data.y_test)
    images = sub["images"]
    assert images["teacher_correct"] == len(correct) and images["test_images"] == len(data.y_test)
    assert images["n"] == min(config.n_images, len(correct)) == len(images["indices"])
    assert set(images["indices"]) <= set(correct.tolist()) and images["indices"] == sorted(set(images["indices"]))


def test_without_masks_the_evidence_scores_are_left_out(run, subdistill_dir):
    config, _, summary, _ = run
    assert ex.procedural_masks(load_dataset("digits")) is None
    classes = summary["subtasks"]["square"]["classes"]
    data = load_dataset("procedural16").subset_classes(classes)
    idx = np.asarray(summary["subtasks"]["square"]["images"]["indices"])
    teacher = load_ensemble(str(subdistill_dir / "teacher"))
    cells = {0.5: load_ensemble(str(subdistill_dir / "students" / "square-f0.5"))}
    lrp_only = dataclasses.replace(config, methods=("lrp",))
    got = ex.analyse_subtask(
        teacher, teacher, cells, classes, data.x_test[idx], data.y_test[idx], None, lrp_only
    )  # the trained teacher as its own "random" control: its agreement is then 1
    scores = got["cells"][0.5]["scores"]["lrp"]
    assert set(scores) == {*ex.AGREEMENT, "flip/area"} and scores["flip/area"].shape == (len(cells[0.5]), len(idx))
    np.testing.assert_allclose(got["references"]["random_teacher"]["lrp"]["agreement/pearson"], 1.0, atol=1e-6)


def test_a_missing_run_or_cell_is_one_config_error_line(tmp_path, subdistill_dir):
    config = ex.runlocal(ex.PRESETS["default"])
    for bad, says in (
        (dataclasses.replace(config, subdistill_dir=str(tmp_path / "none")), "jaxkd run subdistill --preset default"),
        (dataclasses.replace(config, subdistill_dir=str(subdistill_dir), subtasks=("plus",)), "no subtask 'plus'"),
        (dataclasses.replace(config, subdistill_dir=str(subdistill_dir), fractions=(0.3,)), "no fraction 0.3"),
    ):
        with pytest.raises(ConfigError, match=says) as err:
            ex.run(bad, str(tmp_path / "out"), progress=False)
        assert "\n" not in str(err.value)
    # A run that loaded its teacher by path: the teacher found there must be the one it used.
    moved = tmp_path / "moved"
    shutil.copytree(subdistill_dir, moved, ignore=shutil.ignore_patterns("students"))
    shutil.move(moved / "teacher", tmp_path / "elsewhere")
    summary = json.loads((moved / "summary.json").read_text())
    summary["teacher"] = {"path": str(tmp_path / "elsewhere"), "hash": "0" * 64}
    (moved / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ConfigError, match="not the one the subdistill run used"):
        ex.run(dataclasses.replace(config, subdistill_dir=str(moved)), str(tmp_path / "out"), progress=False)
    teacher = load_ensemble(str(tmp_path / "elsewhere"))
    summary["teacher"]["hash"] = Teacher.from_ensemble(teacher).content_hash()
    (moved / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ConfigError, match="no saved students"):  # the right teacher: on to the students
        ex.run(dataclasses.replace(config, subdistill_dir=str(moved)), str(tmp_path / "out"), progress=False)
    with pytest.raises(ConfigError, match="unknown explanation method 'shap'"):
        dataclasses.replace(config, methods=("shap",))
    assert not (tmp_path / "out").exists()


def test_presets_shrink_to_one_smoke_configuration():
    local = {name: ex.runlocal(c) for name, c in ex.PRESETS.items()}
    assert len({repr(c) for c in local.values()}) == 1  # tests/test_experiments.py runs none of them twice
    paper = ex.PRESETS["paper"]
    assert paper.gamma == 1.0 and paper.subdistill_dir == "results/subdistill/paper"  # SubDistill's γ
    assert ex.PRESETS["default"].subdistill_dir == "results/subdistill" and ex.PRESETS["default"].ig_steps == 50
