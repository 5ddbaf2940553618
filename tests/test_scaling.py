"""Power-law exponents with seed-bootstrap CIs (jaxkd.stats.power_law_exponents) and the kd_scaling experiment."""

import csv
import json

import numpy as np
import pytest

from jaxkd import stats
from jaxkd.errors import ConfigError

SIZES = np.array([100.0, 300.0, 1000.0, 3000.0, 10000.0])


def _planted(exponent, rng, *, s=10, coef=2.0, noise=0.1, shared=None):
    """``[P, S]`` values ``coef · x^exponent · exp(noise)``; ``shared`` adds a seed effect common to conditions."""
    eps = noise * rng.standard_normal((len(SIZES), s))
    if shared is not None:
        eps = eps + shared
    return coef * SIZES[:, None] ** exponent * np.exp(eps)


def test_point_estimate_is_the_log_log_least_squares_fit_of_seed_means():
    rng = np.random.default_rng(0)
    y = _planted(-0.4, rng)
    y[2, 3] = np.nan  # a diverged seed is left out of its shape's mean
    out = stats.power_law_exponents(SIZES, {"a": y}, n_resamples=200)
    means = np.array([np.mean(row[np.isfinite(row)]) for row in y])
    slope, intercept = np.polyfit(np.log(SIZES), np.log(means), 1)  # NumPy, from the formula
    assert out["fits"]["a"]["exponent"] == pytest.approx(slope, rel=1e-10)
    assert out["fits"]["a"]["coef"] == pytest.approx(np.exp(intercept), rel=1e-10)


def test_bootstrap_slopes_match_polyfit_row_by_row():
    rng = np.random.default_rng(1)
    ly = rng.standard_normal((7, len(SIZES)))
    slope, intercept = stats._loglog_slopes(np.log(SIZES), ly)
    for r in range(7):
        s, i = np.polyfit(np.log(SIZES), ly[r], 1)
        assert slope[r] == pytest.approx(s, rel=1e-10) and intercept[r] == pytest.approx(i, rel=1e-10)


@pytest.mark.parametrize("shared,at_least", [(True, 0.86), (False, 0.91)])
def test_exponent_ci_covers_the_planted_exponent(shared, at_least):
    """Monte Carlo: the 95% CI covers the true exponent in 200 independent data sets (noise independent over
    sizes and seeds). Observed here: 0.90 with seed blocks shared by all sizes (percentile intervals from 10
    seeds undercover a little), 0.945 with seeds drawn per size; an 80% interval would give about 0.75."""
    rng = np.random.default_rng(2)
    hits = 0
    for trial in range(200):
        out = stats.power_law_exponents(
            SIZES, {"a": _planted(-0.5, rng)}, n_resamples=400, seed=trial, seeds_shared_across_sizes=shared
        )
        f = out["fits"]["a"]
        hits += f["ci_low"] <= -0.5 <= f["ci_high"]
    assert hits >= at_least * 200, hits


def test_seed_blocks_follow_a_seed_effect_shared_by_all_sizes():
    """A seed that is better at every size (a multiplicative effect common to its points) moves its whole
    curve, not the slope: resampling seeds as blocks sees that; resampling per size mistakes it for noise."""
    rng = np.random.default_rng(6)
    seed_effect = 0.5 * rng.standard_normal((1, 10))  # the same for every size
    y = _planted(-0.5, rng, noise=0.02, shared=seed_effect)
    width = {}
    for shared in (True, False):
        f = stats.power_law_exponents(SIZES, {"a": y}, n_resamples=1000, seeds_shared_across_sizes=shared)["fits"]["a"]
        width[shared] = f["ci_high"] - f["ci_low"]
        assert f["ci_low"] <= -0.5 <= f["ci_high"]
    assert width[True] < 0.3 * width[False], width


def test_exponent_difference_test_has_size_and_power():
    rng = np.random.default_rng(3)
    null_rejections = alt_rejections = 0
    for trial in range(200):
        shared = 0.3 * rng.standard_normal((len(SIZES), 10))  # a seed effect both conditions share
        same = {"a": _planted(-0.5, rng, shared=shared), "b": _planted(-0.5, rng, shared=shared)}
        diff = {"a": _planted(-0.5, rng, shared=shared), "b": _planted(-0.7, rng, shared=shared)}
        r0 = stats.power_law_exponents(SIZES, same, comparisons=[("a", "b")], n_resamples=400, seed=trial)
        null_rejections += r0["comparisons"]["a - b"]["p"] < 0.05
        r = stats.power_law_exponents(SIZES, diff, comparisons=[("a", "b")], n_resamples=400, seed=trial)
        alt_rejections += r["comparisons"]["a - b"]["p"] < 0.05
        assert r["comparisons"]["a - b"]["diff"] == pytest.approx(
            r["fits"]["a"]["exponent"] - r["fits"]["b"]["exponent"]
        )
    assert null_rejections <= 22, null_rejections  # 5% nominal; observed 9% (18 of 200) with 10 seeds
    assert alt_rejections >= 190, alt_rejections


def test_pairing_narrows_the_difference_ci_under_a_shared_seed_effect():
    rng = np.random.default_rng(4)
    shared = 0.5 * rng.standard_normal((len(SIZES), 10))
    values = {"a": _planted(-0.5, rng, shared=shared, noise=0.02), "b": _planted(-0.6, rng, shared=shared, noise=0.02)}
    width = {}
    for paired in (True, False):
        c = stats.power_law_exponents(SIZES, values, comparisons=[("a", "b")], paired=paired, n_resamples=1000)[
            "comparisons"
        ]["a - b"]
        width[paired] = c["ci_high"] - c["ci_low"]
    assert width[True] < 0.5 * width[False], width


def test_holm_over_the_declared_comparisons():
    rng = np.random.default_rng(5)
    values = {c: _planted(e, rng) for c, e in (("a", -0.5), ("b", -0.52), ("c", -0.9))}
    out = stats.power_law_exponents(SIZES, values, comparisons=[("a", "b"), ("a", "c"), ("b", "c")], n_resamples=500)[
        "comparisons"
    ]
    names = ("a - b", "a - c", "b - c")
    p = np.array([out[k]["p"] for k in names])
    # Holm by hand: sort ascending, multiply the i-th smallest by (m - i), running maximum, cap at 1.
    order = np.argsort(p)
    adj = np.minimum(1.0, np.maximum.accumulate((3 - np.arange(3)) * p[order]))
    want = np.empty(3)
    want[order] = adj
    np.testing.assert_allclose([out[k]["p_holm"] for k in names], want)


def test_a_size_with_no_positive_mean_is_left_out_of_each_resample_as_of_the_estimate():
    rng = np.random.default_rng(7)
    y = _planted(-0.5, rng)
    y[0] = 0.0  # the smallest size never errs: log undefined, the fit uses the other four
    out = stats.power_law_exponents(SIZES, {"a": y}, n_resamples=300)["fits"]["a"]
    assert out["n"] == 4 and out["n_resamples_used"] == 300
    assert out["ci_low"] <= out["exponent"] <= out["ci_high"]


@pytest.mark.parametrize(
    "sizes,values,comparisons,match",
    [
        ([10.0, 10.0], {"a": np.ones((2, 3))}, (), "distinct"),
        ([10.0, -1.0], {"a": np.ones((2, 3))}, (), "positive"),
        ([10.0, 20.0], {"a": np.ones((3, 3))}, (), r"\[P=2, S\]"),
        ([10.0, 20.0], {"a": np.ones((2, 3)), "b": np.ones((2, 4))}, (), "one seed count"),
        ([10.0, 20.0], {"a": np.ones((2, 3))}, [("a", "zz")], "'zz'"),
    ],
)
def test_bad_input_is_one_config_error(sizes, values, comparisons, match):
    with pytest.raises(ConfigError, match=match):
        stats.power_law_exponents(sizes, values, comparisons=comparisons)


def test_kd_scaling_smoke_outputs(tmp_path):
    import experiments

    mod = experiments.get("kd_scaling")
    config = mod.runlocal(mod.PRESETS["default"])
    mod.run(config, str(tmp_path), progress=False)
    s = json.loads((tmp_path / "summary.json").read_text())
    with open(tmp_path / "records.csv") as f:
        records = list(csv.DictReader(f))
    assert set(s["fits"]) == {"width", "depth"}
    for name, series in s["fits"].items():
        assert set(series) == {"error", "disagreement", "js"}
        for metric, fit in series.items():
            assert set(fit["fits"]) == {"base", "kd", "rcd"}
            assert set(fit["comparisons"]) == {"kd - base", "kd - rcd", "rcd - base"}
            for cond, f in fit["fits"].items():
                # The exponent from the records: NumPy's log-log least squares on the seed means per shape.
                by_size = {}
                for r in records:
                    if (r["series"], r["metric"], r["condition"]) == (name, metric, cond):
                        by_size.setdefault(float(r["params"]), []).append(float(r["value"]))
                sizes = np.array(sorted(by_size))
                means = np.array([np.nanmean(by_size[x]) for x in sizes])
                assert all(len(v) == config.n_seeds for v in by_size.values())
                keep = means > 0  # a shape whose mean is 0 has no logarithm and leaves the fit
                assert f["n"] == keep.sum() == 2, (name, metric, cond, means)
                slope = np.polyfit(np.log(sizes[keep]), np.log(means[keep]), 1)[0]
                np.testing.assert_allclose(f["exponent"], slope, rtol=1e-9, err_msg=f"{name} {metric} {cond}")
    # Parameter counts of one-hidden-layer MLPs on 8x8 digits, 10 classes: 64·w + w + w·10 + 10.
    assert [v["params"] for v in s["shapes"]["width"].values()] == [75 * 4 + 10, 75 * 8 + 10]
    # mlp (4, 4): 64·4 + 4 + 4·4 + 4 + 4·10 + 10.
    assert s["shapes"]["depth"]["mlp[4, 4]"]["params"] == 256 + 4 + 16 + 4 + 40 + 10
    assert s["compiled_programs"] == 1 + 3  # teacher + mlp[4], mlp[8], mlp[4, 4] (mlp[4] shared by the series)
    rows = (tmp_path / "records.csv").read_text().splitlines()
    assert len(rows) - 1 == (2 + 2) * 3 * 2 * 3  # (width + depth shapes) × conditions × seeds × metrics
    assert (tmp_path / "figure.png").read_bytes()[:4] == b"\x89PNG"
    # `jaxkd report` reads the exponents as condition tables with their tests.
    from jaxkd.report import build_report

    report = build_report(str(tmp_path))
    assert {r["table"] for r in report["conditions"]} == {"exponents/width", "exponents/depth"}
    row = next(
        r
        for r in report["conditions"]
        if r["table"] == "exponents/width" and r["condition"] == "kd" and r["metric"] == "error/exponent"
    )
    assert row["mean"] == s["fits"]["width"]["error"]["fits"]["kd"]["exponent"]
    assert len(report["comparisons"]) == 2 * 3 * 3  # series × metrics × comparisons


def test_kd_scaling_bad_input():
    import experiments

    mod = experiments.get("kd_scaling")
    base = mod.PRESETS["smoke"]
    import dataclasses

    with pytest.raises(ConfigError, match="condition"):
        dataclasses.replace(base, conditions=("base", "nope"))
    with pytest.raises(ConfigError, match="empty family"):
        dataclasses.replace(base, conditions=("base",))
    with pytest.raises(ConfigError, match="two distinct shapes"):
        dataclasses.replace(base, series=(mod.Series("w", (base.series[0].models[0],) * 2),))
