"""The subdistill experiment: its smoke run's outputs checked for content, and the paper preset's wiring."""

from __future__ import annotations

import csv
import dataclasses
import json

import jax
import numpy as np
import pytest
from scipy import stats as st

import experiments.subdistill as sd
from jaxkd.data import load_dataset
from jaxkd.ensemble import load_ensemble
from jaxkd.errors import ConfigError
from jaxkd.models import make_model
from jaxkd.teacher import load_teacher
from jaxkd.train import check_objective

pytestmark = pytest.mark.xdist_group("subdistill")  # shares one subdistill smoke run with test_explanations


@pytest.fixture(scope="module")
def smoke(subdistill_smoke_dir):
    out = subdistill_smoke_dir
    config = sd.runlocal(sd.PRESETS["default"])
    with open(out / "records.csv") as f:
        rows = list(csv.DictReader(f))
    return config, out, json.loads((out / "summary.json").read_text()), rows


def _per_seed(rows, subtask, fraction, policy, metric, steps):
    table = {
        (int(r["seed"]), int(r["step"])): float(r["value"])
        for r in rows
        if r["subtask"] == subtask and float(r["fraction"]) == fraction and r["condition"] == policy
        and r["metric"] == metric
    }  # fmt: skip
    return np.array([table[(s, t)] for s, t in enumerate(steps)])


def test_summary_holds_every_policy_with_statistics_recomputed_from_the_records(smoke):
    config, _, summary, rows = smoke
    assert summary["policies"] == list(config.policies) and summary["baseline"] == sd.BASELINE
    (subtask,) = config.subtasks
    sub = summary["subtasks"][subtask]
    assert sub["classes"] == [5, 6, 7, 8, 9]
    (fraction,) = config.fractions
    cell = sub["fractions"][str(fraction)]
    assert list(cell["conditions"]) == list(config.policies)
    for policy, c in cell["conditions"].items():
        assert c["n_seeds"] == config.n_seeds and c["n_diverged"] == 0
        vals = _per_seed(rows, subtask, fraction, policy, "test/acc", c["selected_steps"])
        assert c["test/acc"]["selected"]["mean"] == pytest.approx(vals.mean(), abs=1e-9)
        assert c["test/acc"]["selected"]["std"] == pytest.approx(vals.std(ddof=1), abs=1e-9)
    tests = cell["comparisons"]["test/acc"]["selected"]
    assert set(tests) == {f"{p} - {sd.BASELINE}" for p in config.policies if p != sd.BASELINE}
    base = cell["conditions"][sd.BASELINE]
    b = _per_seed(rows, subtask, fraction, sd.BASELINE, "test/acc", base["selected_steps"])
    for p in config.policies:
        if p == sd.BASELINE:
            continue
        v = _per_seed(rows, subtask, fraction, p, "test/acc", cell["conditions"][p]["selected_steps"])
        t = tests[f"{p} - {sd.BASELINE}"]
        assert t["diff_mean"] == pytest.approx((v - b).mean(), abs=1e-9)
        if np.ptp(v - b) > 0:
            assert t["p"] == pytest.approx(st.ttest_rel(v, b).pvalue, rel=1e-6)
        assert t["metric"] == "test/acc" and t["at"] == "selected"
    # the conditions switch the policies' own terms on and every other one off
    legend = {
        p: {k for k, w in cell["conditions"][p]["hparams"].items() if k.endswith(".weight") and w}
        for p in config.policies
    }
    assert legend["student"] == {"ce.weight"} and legend["kd"] == {"kd.weight"}
    assert legend[sd.BASELINE] == {"kd.weight", f"{sd.BASELINE}.weight"}
    assert legend["fitnet"] == {"kd.weight"} | {f"fitnet{i}.weight" for i in range(len(config.layers))}
    timing = summary["timing"]
    assert 0 < timing["prepass_seconds"] < timing["total_seconds"]


def test_teacher_subtask_accuracy_and_rank_k_table_are_those_of_the_saved_teacher(smoke):
    config, out, summary, _ = smoke
    sub = summary["subtasks"]["square"]
    dataset = load_dataset("procedural16").subset_classes(sub["classes"])
    from jaxkd.data.augment import normalize
    from jaxkd.data.dataset import run_splits

    teacher = load_teacher(str(out / "teacher")).subtask(sub["classes"])
    x_test = normalize(dataset.x_test, np.asarray(dataset.mean), np.asarray(dataset.std))
    logits = np.asarray(teacher.apply(teacher.inputs, x_test)[0])
    acc = float(np.mean(logits.argmax(-1) == dataset.y_test))
    assert sub["teacher"]["test/acc"] == pytest.approx(acc, abs=1e-6)
    splits = run_splits(dataset, config.data.val_fraction, config.data.split_seed)
    assert len(splits["y_test"]) == len(dataset.y_test)
    for row in sub["rank_k"].values():
        assert row["k"] <= row["d"]
        for basis in ("pca", "prca_posdef", "random"):
            assert row[f"{basis}@full"] == pytest.approx(acc, abs=1e-6)  # full rank: the teacher itself
            assert 0 <= row[basis] <= 1 and 0 < row[f"{basis}/energy_share"] <= 1 + 1e-6


def test_saved_students_are_the_reported_models(smoke):
    config, out, summary, rows = smoke
    (fraction,) = config.fractions
    ens = load_ensemble(str(out / "students" / f"square-f{fraction:g}"))
    assert len(ens) == config.n_seeds * len(config.policies)
    dataset = load_dataset("procedural16").subset_classes(summary["subtasks"]["square"]["classes"])
    from jaxkd.data.augment import normalize

    x = normalize(dataset.x_test, np.asarray(ens.mean), np.asarray(ens.std))
    for i, m in enumerate(ens.members[:: len(config.policies) - 1]):  # a few members of different policies
        member = ens.members.index(m)
        take = lambda t, j=member: jax.tree.map(lambda a: a[j], t)  # noqa: E731
        logits = np.asarray(ens.model.apply(take(ens.params), take(ens.rest), x, train=False)[0])
        acc = float(np.mean(logits.argmax(-1) == dataset.y_test))
        cond = summary["subtasks"]["square"]["fractions"][str(fraction)]["conditions"][m["condition"]]
        assert m["model"] == "selected" and m["step"] == cond["selected_steps"][m["seed"]]  # the reported model
        want = _per_seed(rows, "square", fraction, m["condition"], "test/acc", [m["step"]] * (m["seed"] + 1))[-1]
        assert acc == pytest.approx(want, abs=1e-6), (i, m)


def test_paper_preset_wires_resnet18_stages_to_the_student():
    config = sd.PRESETS["paper"]
    from jaxkd.data.subtasks import superclass_classes

    classes = superclass_classes("tfds:cifar100", config.subtasks[0])
    s_cfg = config.student_config(classes, 1.0, 32)
    teacher = make_model("resnet18", (32, 32, 3), 100)
    student = make_model(s_cfg.model.name, (32, 32, 3), len(classes), s_cfg.model.widths)
    check_objective(s_cfg, student, teacher, classes)


def test_bad_configurations_are_refused_in_one_line():
    base = sd.PRESETS["default"]
    with pytest.raises(ConfigError, match="superclass"):
        dataclasses.replace(base, subtasks=("nope",))
    with pytest.raises(ConfigError, match="flips"):
        dataclasses.replace(base, data=dataclasses.replace(base.data, flip=True))
    with pytest.raises(ConfigError, match="fractions"):
        dataclasses.replace(base, fractions=(0.0, 1.0))
    with pytest.raises(ConfigError, match=sd.BASELINE):
        dataclasses.replace(base, policies=("student", "kd"))


@pytest.mark.parametrize("size,pool_to,stages", [(16, 1, (8, 4, 2, 1)), (32, 2, (16, 8, 4, 2))])
def test_sdstudent_layout_from_its_description(size, pool_to, stages):
    from jaxkd.models.sdstudent import HIDDEN

    widths, c = (32, 24, 16, 8), 5
    model = make_model("sdstudent_32_24_16_8", (size, size, 3), c)
    conv = lambda i, o, k=3: i * o * k * k + 2 * o  # noqa: E731  (no bias; BatchNorm scale and offset)
    count = conv(3, widths[0]) + conv(widths[0], widths[0])
    prev = widths[0]
    for w in widths:
        count += conv(prev, w) + conv(w, w) + conv(w, w)
        prev = w
    flat = pool_to * pool_to * widths[-1]
    count += conv(widths[-1], widths[-1], 1) + flat * HIDDEN + HIDDEN + HIDDEN * HIDDEN + HIDDEN + HIDDEN * c + c
    assert model.num_params() == count
    params, rest = model.init(jax.random.key(0))
    _, feats, _ = model.apply(params, rest, np.zeros((2, size, size, 3), np.float32), train=False)
    for i, (w, s) in enumerate(zip(widths, stages), start=1):
        assert feats[f"stage{i}"].shape == (2, s, s, w)
    assert feats["pooled"].shape == (2, flat)
