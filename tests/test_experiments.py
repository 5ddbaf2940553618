"""A 1–2 step smoke run of every preset of every registered experiment, with its outputs' content checked.

Presets that shrink to the same smoke configuration (``runlocal``; up to a subset of its methods) run once, and
not at all here when an experiment's own test file runs that configuration and checks its outputs
(``CONTENT_TESTED``); every preset's full configuration is still built and validated.

Each run's ``summary.json`` is checked against its configuration and against ``records.csv`` (the per-seed values
the summary summarises): the conditions the experiment declares, in order; every seed in every condition, none
diverged; each headline statistic recomputed in NumPy from the records (mean, sample std) with a finite interval
around the mean; one test per declared comparison, its mean difference recomputed and its p-value that of
``scipy.stats.ttest_rel`` on the records wherever the paired differences vary (undefined, ``null``, where they do
not). The spectral experiments have no seeds per condition; their summaries are checked against identities that
relate their own fields (ratios, z-scores, relative gains) and against the configuration's grids.
"""

import csv
import dataclasses
import json
import math

import jax
import numpy as np
import pytest
from scipy import stats as st

import experiments
from jaxkd.models.layers import direct_conv_enabled

# Experiments whose shrunk preset (named here) already runs, with its outputs' content checked, in its own
# test file: the same configuration is not trained twice.
CONTENT_TESTED = {
    "functional_kd": "default",
    "interaction_tensor": "paper",
    "backdoor_kd": "default",
    "kd_scaling": "default",
    "subdistill": "default",
    "explanations": "default",
}


def _shape(config) -> tuple[str, frozenset]:
    """A shrunk configuration without its method list, and that list (empty for experiments without one)."""
    fields = dataclasses.asdict(config)
    methods = frozenset(fields.pop("methods", ()))
    return repr(sorted(fields.items(), key=lambda kv: kv[0])), methods


def _cases():
    """(experiment, preset) pairs whose shrunk runs differ: a run equal to an earlier one, or to one with a superset
    of its methods (cifar_kd's capacity preset: CE and KD of the smoke run's six), adds no code path."""
    for name in experiments.EXPERIMENTS:
        mod, seen = experiments.get(name), []
        if name in CONTENT_TESTED:
            seen.append(_shape(mod.runlocal(mod.PRESETS[CONTENT_TESTED[name]])))
        for preset, config in mod.PRESETS.items():
            local, methods = _shape(mod.runlocal(config))
            if not any(local == s and methods <= m for s, m in seen):
                seen.append((local, methods))
                yield name, preset


# --- reading records ----------------------------------------------------------------------------------------


def read_records(path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


class Records:
    """``records.csv`` rows of one sweep as per-seed arrays: ``values(condition, metric, steps)``."""

    def __init__(self, rows):
        self.table = {}
        self.steps = {}
        for r in rows:
            key = (r["condition"], int(r["seed"]), r["metric"])
            self.table.setdefault(key, {})[int(r["step"])] = float(r["value"])
            self.steps.setdefault(r["condition"], set()).add(int(r["step"]))

    def values(self, condition, metric, steps) -> np.ndarray:
        """Seed s's value at ``steps[s]``."""
        return np.array([self.table[(condition, s, metric)][int(t)] for s, t in enumerate(steps)])

    def per_seed(self, condition, metric) -> dict[int, dict[int, float]]:
        return {s: v for (c, s, m), v in self.table.items() if c == condition and m == metric}


def check_stats(stat: dict, values: np.ndarray, what: str) -> None:
    """A ``stats.summarize`` entry against the values it summarises: n, mean and sample std recomputed here, a
    finite interval that holds the mean (n >= 2)."""
    n = len(values)
    assert stat["n"] == n, what
    np.testing.assert_allclose(stat["mean"], values.mean(), rtol=1e-9, atol=1e-12, err_msg=what)
    if n >= 2:
        np.testing.assert_allclose(stat["std"], values.std(ddof=1), rtol=1e-9, atol=1e-12, err_msg=what)
        assert all(math.isfinite(stat[k]) for k in ("ci_low", "ci_high")), (what, stat)
        assert stat["ci_low"] <= stat["mean"] <= stat["ci_high"], (what, stat)


def check_paired_test(test: dict, a: np.ndarray, b: np.ndarray, what: str) -> None:
    """A paired t-test entry against scipy on the per-seed values it compares."""
    d = a - b
    diff = test["diff_mean"] if "diff_mean" in test else test["diff"]
    np.testing.assert_allclose(diff, d.mean(), rtol=1e-9, atol=1e-12, err_msg=what)
    assert test["test"] == "paired t", what
    if np.ptp(d) > 0:  # the differences vary: t and p are defined
        p = st.ttest_rel(a, b).pvalue
        assert test["p"] is not None and math.isfinite(test["p"]), (what, test)
        np.testing.assert_allclose(test["p"], p, rtol=1e-6, err_msg=what)
    else:
        assert test["p"] is None, (what, test)  # a constant difference has no t statistic


# --- teacher-student and method experiments (jaxkd.experiment.run_methods) --------------------------------


def check_sweep_summary(per: dict, rec: Records, condition: str, n_seeds: int, metric: str) -> dict:
    """One condition's entry of ``results.summarize_sweep``; returns ``{"last", "selected"}`` per-seed values."""
    assert per["n_seeds"] == n_seeds and per["n_diverged"] == 0 and per["diverged_seeds"] == [], (condition, per)
    last = max(rec.steps[condition])
    picked = per["selected_steps"]
    assert len(picked) == n_seeds, (condition, picked)
    # The selected evaluation is a best one of its seed by the selection metric (whatever breaks ties).
    select = per["selected_by"]
    assert not select.startswith("test/"), select
    for s, t in enumerate(picked):
        by_step = rec.per_seed(condition, select)[s]
        best = min(by_step.values()) if select.endswith("loss") else max(by_step.values())
        assert by_step[t] == best, (condition, s, select, by_step, t)
    out = {"last": rec.values(condition, metric, [last] * n_seeds), "selected": rec.values(condition, metric, picked)}
    for when, values in out.items():
        check_stats(per[metric][when], values, f"{condition} {metric} {when}")
    return out


def check_methods(part: dict, rows: list[dict], *, conditions: list[str], n_seeds: int, teacher_seeds: int | None):
    """The summary of one ``run_methods`` sweep (``part``) against its records; ``conditions[0]`` is the baseline."""
    rec = Records(rows)
    assert list(part["conditions"]) == conditions
    metrics = ["test/acc"] + (["test/agreement"] if teacher_seeds else [])
    values = {m: {} for m in metrics}
    for c in conditions:
        for m in metrics:
            values[m][c] = check_sweep_summary(part["conditions"][c], rec, c, n_seeds, m)
    if teacher_seeds:
        check_sweep_summary(part["teacher"], rec, "teacher", teacher_seeds, "test/acc")
    baseline = conditions[0]
    assert set(metrics) <= set(part["comparisons"])
    for m in metrics:
        for when in ("selected", "last"):
            tests = part["comparisons"][m][when]
            assert list(tests) == [f"{c} - {baseline}" for c in conditions[1:]], (m, when)
            for c in conditions[1:]:
                t = tests[f"{c} - {baseline}"]
                check_paired_test(t, values[m][c][when], values[m][baseline][when], f"{m} {when} {c}")
                assert t["n"] == n_seeds


def _teacher_seeds(config):
    return config.n_seeds if getattr(config, "per_seed_teacher", False) else 1


def check_digits_kd(config, summary, rows):
    check_methods(
        summary,
        rows,
        conditions=list(config.conditions()),
        n_seeds=config.n_seeds,
        teacher_seeds=_teacher_seeds(config),
    )


def check_digits_methods(config, summary, rows):
    check_methods(
        summary, rows, conditions=list(config.methods), n_seeds=config.n_seeds, teacher_seeds=_teacher_seeds(config)
    )


def check_cifar_kd(config, summary, rows):
    assert list(summary["pairs"]) == list(config.pairs)
    for pair in config.pairs:
        check_methods(
            summary["pairs"][pair],
            [r for r in rows if r["pair"] == pair],
            conditions=list(config.methods),
            n_seeds=config.n_seeds,
            teacher_seeds=1,
        )


def check_confusion_distillation(config, summary, rows):
    assert list(summary["archs"]) == list(config.archs)
    for arch in config.archs:
        part = summary["archs"][arch]
        check_methods(
            part,
            [r for r in rows if r["arch"] == arch],
            conditions=list(config.conditions()),
            n_seeds=config.n_seeds,
            teacher_seeds=None,
        )
        # Q is an EMA of row-normalised confusion ratios started at a row-stochastic matrix: its rows sum to 1.
        assert part["Q"]["row_sum_max_abs_dev"] < 1e-5 and part["Q"]["min_entry"] >= 0, part["Q"]


# --- functional_kd: per-seed metrics of the selected models, a family of paired tests ---------------------------


def check_functional_kd(config, summary, rows, headline="all/acc"):
    names = config.condition_names()
    family = [f"{a} - {b}" for a, b in config.family()]
    assert summary["family"]["comparisons"] == family
    assert list(summary["setups"]) == [s.name for s in config.setups]
    for setup in config.setups:
        part = summary["setups"][setup.name]
        rec = Records([r for r in rows if r["setup"] == setup.name])

        def seeds(condition, metric, rec=rec):
            v = rec.per_seed(condition, metric)
            assert sorted(v) == list(range(config.n_seeds)), (condition, metric)
            return np.array([next(iter(v[s].values())) for s in range(config.n_seeds)])

        assert list(part["conditions"]) == names
        check_stats(part["teacher"][headline], seeds("teacher", headline), f"teacher {headline}")
        for c in names:
            check_stats(part["conditions"][c][headline], seeds(c, headline), f"{c} {headline}")
        assert set(config.test_metrics) <= set(part["tests"])
        for metric in config.test_metrics:
            assert list(part["tests"][metric]) == family, metric
            if config.test != "paired":
                continue
            for name, (a, b) in zip(family, config.family()):
                check_paired_test(part["tests"][metric][name], seeds(a, metric), seeds(b, metric), f"{metric} {name}")


# --- the spectral experiments: exact curves and Monte Carlo, no seeds per condition ---------------------------


def check_spectral_kd(config, summary, rows):
    models = ("teacher", "direct", "distilled")
    k = len(config.Ns)
    assert summary["N"] == list(config.Ns)
    for name in models:
        exact, mc = np.array(summary["exact"][name]), summary["mc"][name]
        mean, se = np.array(mc["mean"]), np.array(mc["se"])
        assert exact.shape == mean.shape == se.shape == (k,), name
        assert np.all(exact > 0) and np.all(mean > 0) and np.all(se > 0), name  # excess risks over noise
    # DER = direct / distilled excess risk, at the largest N, exactly and by Monte Carlo.
    der = summary["DER_at_N_max"]
    np.testing.assert_allclose(der["exact"], summary["exact"]["direct"][-1] / summary["exact"]["distilled"][-1])
    np.testing.assert_allclose(der["mc"], summary["mc"]["direct"]["mean"][-1] / summary["mc"]["distilled"]["mean"][-1])
    # The agreement of the exact curves with Monte Carlo, in standard errors, over every model and N.
    z = np.concatenate(
        [
            np.abs(np.array(summary["mc"][m]["mean"]) - np.array(summary["exact"][m]))
            / np.array(summary["mc"][m]["se"])
            for m in models
        ]
    )
    agree = summary["exact_vs_mc"]
    assert agree["n_points"] == 3 * k
    np.testing.assert_allclose([agree["max_abs_z"], agree["mean_abs_z"]], [z.max(), z.mean()], rtol=1e-9)
    sweep = summary["DER_vs_delta_alpha"]
    assert sweep["delta_alpha"] == list(config.delta_alphas)
    for key in ("exact_over_best", "mc_over_best", "exact", "mc"):
        assert len(sweep[key]) == len(config.delta_alphas) and np.all(np.isfinite(sweep[key])), key
    axis = np.linspace(*config.phase_range, config.phase_size)
    phase = summary["phase_diagram"]
    np.testing.assert_allclose(phase["alpha_T"], axis)
    assert np.array(phase["DER_over_best"]).shape == (config.phase_size, config.phase_size)
    assert np.all(np.isfinite(phase["DER_over_best"]))


def check_spectral_w2s(config, summary, rows):
    per = summary["per_d_signal"]
    assert list(per) == [str(d) for d in config.d_signals]
    for d, c in per.items():
        assert 0 < c["student_best"] <= c["student_final"] and c["teacher"] > 0, (d, c)
        assert c["w2s_at_best"] == (c["student_best"] < c["teacher"]), (d, c)
        assert c["u_shaped"] == (c["student_best"] < c["student_final"]), (d, c)
        assert 1 <= c["best_n"] <= config.n, (d, c)
    assert list(summary["exact_vs_mc_max_abs_z"]) == [str(d) for d in config.mc_d_signals]
    gain = summary["gain_map"]
    assert gain["decay"] == list(config.map_decays) and gain["k_dagger"] == list(config.map_k_daggers)
    g = np.array(gain["relative_gain_at_best_n"])
    assert g.shape == (len(config.map_decays), len(config.map_k_daggers)) and np.all(np.isfinite(g))
    # Where the gain map holds a run of the per-d_signal table (same decay, k_dagger = d_signal), its relative gain is
    # 1 - best student / teacher of that run.
    checked = 0
    for d in config.d_signals:
        if config.decay in config.map_decays and d in config.map_k_daggers:
            c = per[str(d)]
            i, j = config.map_decays.index(config.decay), config.map_k_daggers.index(d)
            np.testing.assert_allclose(g[i, j], 1 - c["student_best"] / c["teacher"], rtol=1e-9)
            checked += 1
    assert checked > 0 or config.decay not in config.map_decays


CHECKS = {
    "cifar_kd": check_cifar_kd,
    "confusion_distillation": check_confusion_distillation,
    "digits_kd": check_digits_kd,
    "digits_methods": check_digits_methods,
    "functional_kd": check_functional_kd,
    "spectral_kd": check_spectral_kd,
    "spectral_w2s": check_spectral_w2s,
}


def test_every_smoke_run_has_a_content_check():
    assert {name for name, _ in _cases()} <= set(CHECKS)


@pytest.mark.parametrize("name,preset", list(_cases()))
def test_preset_smoke(name, preset, tmp_path):
    mod = experiments.get(name)
    config = mod.runlocal(mod.PRESETS[preset])
    assert dataclasses.asdict(config)  # presets are dataclasses
    mod.run(config, str(tmp_path), progress=False)
    summary = json.loads((tmp_path / "summary.json").read_text())
    CHECKS[name](config, summary, read_records(tmp_path / "records.csv"))
    # a run's convolution choices are recorded, and an experiment's own choice ends with its run
    env = json.loads((tmp_path / "env.json").read_text())
    cpu = jax.default_backend() == "cpu"
    assert env["conv_direct"] is (getattr(config, "direct_conv", True) and cpu)  # on CPU unless the run turns it off
    assert direct_conv_enabled() is cpu


def test_cifar_kd_runs_under_its_own_convolution_choice_and_restores_the_default(monkeypatch, tmp_path):
    # The smoke runs above keep the default (on); a run that turns direct convolutions off traces under that
    # choice, and the engine's default is back after it, also when the run raises.
    mod = experiments.get("cifar_kd")
    seen = []

    def fake_run(config, out_dir, **kwargs):
        seen.append(direct_conv_enabled())
        if len(seen) == 2:
            raise RuntimeError("the run failed")
        return {}

    monkeypatch.setattr(mod, "_run", fake_run)
    config = dataclasses.replace(mod.PRESETS["smoke"], direct_conv=False)
    mod.run(config, str(tmp_path), progress=False)
    with pytest.raises(RuntimeError, match="failed"):
        mod.run(config, str(tmp_path), progress=False)
    cpu = jax.default_backend() == "cpu"
    assert seen == [False, False] and direct_conv_enabled() is cpu
