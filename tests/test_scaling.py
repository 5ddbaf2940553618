"""Power-law exponents with seed-bootstrap CIs (jaxkd.stats.power_law_exponents) and the kd_scaling experiment."""

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


def test_exponent_ci_covers_the_planted_exponent():
    """Monte Carlo: the 95% CI covers the true exponent in most of 100 independent data sets."""
    rng = np.random.default_rng(2)
    hits = 0
    for trial in range(100):
        out = stats.power_law_exponents(SIZES, {"a": _planted(-0.5, rng)}, n_resamples=400, seed=trial)
        f = out["fits"]["a"]
        hits += f["ci_low"] <= -0.5 <= f["ci_high"]
    # Percentile intervals from 10 seeds undercover a little; 95% nominal, >= 85% observed.
    assert hits >= 85, hits


def test_exponent_difference_test_has_size_and_power():
    rng = np.random.default_rng(3)
    null_rejections = alt_rejections = 0
    for trial in range(60):
        shared = 0.3 * rng.standard_normal((len(SIZES), 10))  # a seed effect both conditions share
        same = {"a": _planted(-0.5, rng, shared=shared), "b": _planted(-0.5, rng, shared=shared)}
        diff = {"a": _planted(-0.5, rng, shared=shared), "b": _planted(-0.7, rng, shared=shared)}
        null_rejections += (
            stats.power_law_exponents(SIZES, same, comparisons=[("a", "b")], n_resamples=400, seed=trial)[
                "comparisons"
            ]["a - b"]["p"]
            < 0.05
        )
        r = stats.power_law_exponents(SIZES, diff, comparisons=[("a", "b")], n_resamples=400, seed=trial)
        alt_rejections += r["comparisons"]["a - b"]["p"] < 0.05
        assert r["comparisons"]["a - b"]["diff"] == pytest.approx(
            r["fits"]["a"]["exponent"] - r["fits"]["b"]["exponent"]
        )
    assert null_rejections <= 9, null_rejections  # ~5% expected of 60
    assert alt_rejections >= 54, alt_rejections


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
    ps = [out[k]["p"] for k in ("a - b", "a - c", "b - c")]
    np.testing.assert_allclose([out[k]["p_holm"] for k in ("a - b", "a - c", "b - c")], stats.holm(ps))


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
    assert set(s["fits"]) == {"width", "depth"}
    for series in s["fits"].values():
        assert set(series) == {"error", "disagreement", "js"}
        for fit in series.values():
            assert set(fit["fits"]) == {"base", "kd", "rcd"}
            assert set(fit["comparisons"]) == {"kd - base", "kd - rcd", "rcd - base"}
            for f in fit["fits"].values():
                assert f["n"] == 2 and np.isfinite(f["exponent"])
    # Parameter counts of one-hidden-layer MLPs on 8x8 digits, 10 classes: 64·w + w + w·10 + 10.
    assert [v["params"] for v in s["shapes"]["width"].values()] == [75 * 4 + 10, 75 * 8 + 10]
    # mlp (4, 4): 64·4 + 4 + 4·4 + 4 + 4·10 + 10.
    assert s["shapes"]["depth"]["mlp[4, 4]"]["params"] == 256 + 4 + 16 + 4 + 40 + 10
    assert s["compiled_programs"] == 1 + 3  # teacher + mlp[4], mlp[8], mlp[4, 4] (mlp[4] shared by the series)
    rows = (tmp_path / "records.csv").read_text().splitlines()
    assert len(rows) - 1 == (2 + 2) * 3 * 2 * 3  # (width + depth shapes) × conditions × seeds × metrics
    assert (tmp_path / "figure.png").stat().st_size > 0
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
