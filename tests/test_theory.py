"""Theory: exact recursions vs Monte Carlo, closed forms, Lemma 2, rates, JSON interface."""

import json

import numpy as np
import pytest

from jaxkd.errors import ConfigError
from theory import rates
from theory.exact import SGD, max_stable_gamma
from theory.query import risk
from theory.simulate import simulate
from theory.spectra import power_law
from theory.transfer import Transfer, transfer_curves


def _random_problem(rng, i):
    D = [5, 20, 60, 200][i % 4]
    lam_T = power_law(D, rng.uniform(0.5, 2.0))
    lam_S = power_law(D, rng.uniform(0.8, 2.5))
    if i % 2 == 0:  # rank-deficient student or teacher: zero-spectrum directions
        lam_S[rng.integers(1, D):] = 0.0
    if i % 3 == 0:
        lam_T[rng.integers(D // 2, D):] = 0.0
    theta_sq = np.arange(1, D + 1.0) ** -rng.uniform(0.5, 1.5)
    batch = int(rng.choice([1, 4]))
    sched = "step_decay" if i % 2 else "constant"
    g = 0.4 * max_stable_gamma(lam_T, batch)
    gs = 0.4 * max_stable_gamma(lam_S, batch)
    return Transfer(
        lam_T=lam_T, lam_S=lam_S, theta_sq=theta_sq, sigma2=float(rng.choice([0.0, 0.1, 0.5])),
        alpha=float(rng.choice([1.0, 0.7, 0.3])),
        teacher=SGD(gamma0=g, steps=int(rng.integers(50, 300)), batch=batch, schedule=sched),
        student=SGD(gamma0=gs, steps=int(rng.integers(50, 400)), batch=batch, schedule=sched,
                    K=float(rng.uniform(20, 80)) if sched == "step_decay" else None),
    )


@pytest.mark.parametrize("features,n_problems", [("gaussian", 10), ("rademacher", 4)])
def test_exact_matches_monte_carlo_on_random_configurations(features, n_problems):
    """Random problems covering zero-spectrum directions, alpha < 1, batch > 1, step decay and
    D up to 200: every curve point of every model within 4 Monte Carlo standard errors."""
    import jax

    rng = np.random.default_rng(0 if features == "gaussian" else 1)
    worst = 0.0
    for i in range(n_problems):
        p = _random_problem(rng, i)
        p = Transfer(**{**p.__dict__, "kappa": 3.0 if features == "gaussian" else 1.0})
        ckT = np.unique(np.linspace(1, p.teacher.steps, 5).astype(int))
        ckS = np.unique(np.linspace(1, p.student.steps, 5).astype(int))
        ex = transfer_curves(p, checkpoints_T=ckT, checkpoints_S=ckS)
        mc = simulate(p, jax.random.key(i), 2000, features=features, checkpoints_T=ckT, checkpoints_S=ckS)
        for name in ("teacher", "direct", "distilled"):
            z = np.abs(mc[name]["mean"] - ex[name]) / np.maximum(mc[name]["se"], 1e-12)
            worst = max(worst, float(z.max()))
            assert np.all(z < 4.0), (i, name, z, ex[name], mc[name]["mean"])
    assert worst > 0.05  # the comparison really ran on noisy estimates


def test_single_direction_noiseless_constant_step_decays_geometrically():
    """D = 1, sigma = 0, B = 1: m_t = (1 - 2γλ + 3γ²λ²)^t m_0 (Gaussian, κ = 3)."""
    lam, g, steps = 0.8, 0.1, 40
    p = Transfer(lam_T=np.array([lam]), lam_S=np.array([lam]), theta_sq=np.array([2.0]), sigma2=0.0, alpha=1.0,
                 teacher=SGD(g, steps), student=SGD(g, steps))
    ck = np.arange(1, steps + 1)
    out = transfer_curves(p, checkpoints_T=ck, checkpoints_S=ck)
    rate = 1 - 2 * g * lam + 3 * g**2 * lam**2
    np.testing.assert_allclose(out["teacher"], 2.0 * rate**ck, rtol=1e-12)


def test_noise_floor_of_constant_step_sgd():
    """Stationary risk of constant-step SGD with theta* = 0: solve m = a m + q Σm + r exactly."""
    D, g, s2, B = 30, 0.05, 0.3, 2
    lam = power_law(D, 1.2)
    p = Transfer(lam_T=lam, lam_S=lam, theta_sq=np.zeros(D), sigma2=s2, alpha=1.0,
                 teacher=SGD(g, 20000, batch=B), student=SGD(g, 10, batch=B))
    out = transfer_curves(p, checkpoints_T=[20000], checkpoints_S=[10])
    a = 1 - 2 * g * lam + g**2 * lam**2 * (1 + 1 / B)
    q = g**2 * lam**2 / B
    # m_i = (q_i T + r_i) / (1 - a_i), T = Σ m  =>  T = Σ (q_i(T + s2)) / (1 - a_i)
    k = np.sum(q / (1 - a))
    floor = k * s2 / (1 - k)
    np.testing.assert_allclose(out["teacher_final"], floor, rtol=1e-8)


def test_lemma2_static_alignment_bias():
    """A long-trained student distilled from a converged teacher pays Σ_{λ_S>0, λ_T=0} θ*² (no ½)."""
    D = 12
    lam_T = power_law(D, 1.0)
    lam_S = power_law(D, 1.0)
    lam_T[6:] = 0.0  # teacher blind beyond 6
    lam_S[9:] = 0.0  # student sees 9
    theta_sq = np.linspace(1.0, 0.2, D)
    p = Transfer(lam_T=lam_T, lam_S=lam_S, theta_sq=theta_sq, sigma2=0.0, alpha=1.0,
                 teacher=SGD(0.2, 20000, schedule="step_decay"), student=SGD(0.2, 20000, schedule="step_decay"))
    out = transfer_curves(p, checkpoints_T=[20000], checkpoints_S=[20000])
    best_direct = theta_sq[9:].sum()
    bias = rates.alignment_bias(lam_T, lam_S, theta_sq)
    np.testing.assert_allclose(bias, theta_sq[6:9].sum(), rtol=1e-12)
    # Step decay drives SGD to the best in class; 20,000 steps leave a ~1e-3 relative variance term.
    np.testing.assert_allclose(out["distilled_final"], best_direct + bias, rtol=3e-3)
    np.testing.assert_allclose(out["direct_final"], best_direct, rtol=3e-3)
    assert out["distilled_final"] - out["direct_final"] > 0.9 * bias


def test_theorem3_rates_recovered_by_fits_on_exact_curves():
    """Theorem 3 (alpha_T = 2, alpha_S = 2.5, beta = 0, D = 2000, N = 2^8..2^11, n = 256 N):
    teacher and distilled risks decay like N^-(alpha_T - 1 - beta)/alpha_T = N^-0.5, the direct
    student like N^-0.4, DER grows like N^kappa, kappa = 0.1. Log factors and finite n bias the
    fits towards zero; the stated tolerances are 0.1 on risk exponents and 0.03 on kappa."""
    a_T, a_S = 2.0, 2.5
    fit = rates.fitted_exponents(alpha_T=a_T, alpha_S=a_S, beta=0.0, D=2000, Ns=[2**k for k in range(8, 12)],
                                 n_factor=256)
    pred = rates.theorem3_exponents(a_T, a_S, 0.0)
    assert abs(fit["teacher"] - pred["teacher_risk"]) < 0.1, fit
    assert abs(fit["distilled"] - pred["teacher_risk"]) < 0.1, fit
    assert abs(fit["direct"] - pred["direct_risk"]) < 0.1, fit
    assert abs(fit["DER"] - pred["kappa"]) < 0.03 and fit["DER"] > 0, fit


def test_corrected_w2s_exponents():
    r = rates.w2s_rates(2.0, 2.0)
    np.testing.assert_allclose([r["stop_exponent"], r["risk_exponent"], r["delta_rate"]], [1 / 5, -9 / 10, 2 / 5])
    np.testing.assert_allclose(r["printed_stop_exponent"], 1 / 10)
    np.testing.assert_allclose(rates.theorem3_exponents(1.5, 2.0, 0.2)["kappa"], (1.5 - 1.2) * (1 / 1.5 - 1 / 2.0))


def test_effective_horizon():
    lam = power_law(1000, 2.0)
    k = rates.effective_horizon(lam, gamma0=0.5, N=10_000)
    thr = 2 * np.log(10_000) * np.log2(10_000) / (0.5 * 10_000)
    assert lam[k - 1] > thr >= lam[k]


BASE = {
    "theta_star": [1.0, 0.5, 0.25], "sigma2": 0.1, "lam_teacher": [1.0, 0.5, 0.3], "lam_student": [1.0, 0.2, 0.0],
    "alpha": 1.0, "teacher": {"gamma0": 0.2, "schedule": "step_decay", "batch": 2, "steps": 200},
    "student": {"gamma0": 0.2, "schedule": "constant", "batch": 1, "steps": 300},
}


def test_json_interface_returns_the_three_risks():
    out = risk(json.loads(json.dumps(BASE)))
    assert set(out) >= {"teacher_excess_risk", "direct_student_excess_risk", "distilled_student_excess_risk"}
    # Student cannot see direction 3: its risk is at least theta_3² = 0.0625.
    assert out["direct_student_excess_risk"] > 0.0625 and out["distilled_student_excess_risk"] > 0.0625
    assert 0 < out["teacher_excess_risk"] < 1.3125


@pytest.mark.parametrize(
    "patch,match",
    [
        ({"bogus": 1}, "unknown key"),
        ({"lam_student": [1.0, 0.5]}, "has length 2 but theta_star has length 3"),
        ({"lam_teacher": [1.0, -0.5, 0.3]}, "negative entries"),
        ({"alpha": 1.5}, r"alpha must lie in \[0, 1\]"),
        ({"sigma2": -1}, "sigma2 must be >= 0"),
        ({"teacher": {"gamma0": 5.0, "schedule": "constant", "batch": 1, "steps": 10}}, "diverge"),
        ({"teacher": {"gamma0": 0.1, "schedule": "cosine", "batch": 1, "steps": 10}}, "schedule must be"),
        ({"student": {"gamma0": 0.1, "schedule": "constant", "batch": 1, "steps": 10, "lr": 1}}, "unknown key"),
        ({"student": {"gamma0": 0.1, "schedule": "constant", "batch": 0, "steps": 10}}, "positive integer"),
        ({"theta_star": "abc"}, "non-empty list"),
    ],
)
def test_json_interface_bad_input(patch, match):
    with pytest.raises(ConfigError, match=match):
        risk({**BASE, **patch})


def test_cli_theory_risk(tmp_path, capsys):
    from jaxkd.cli import main

    path = tmp_path / "c.json"
    path.write_text(json.dumps(BASE))
    assert main(["theory", "risk", str(path)]) == 0
    out = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose(out["teacher_excess_risk"], risk(BASE)["teacher_excess_risk"], rtol=1e-12)
    path.write_text("{not json")
    assert main(["theory", "risk", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not valid JSON" in err[0]
