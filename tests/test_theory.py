"""Theory: exact recursions against Monte Carlo and against references written independently of
``theory.exact`` (full second-moment matrices from Isserlis' theorem, Feuer–Weinstein's LMS noise
floor, Gauss–Hermite quadrature, hand-computed values), conventions, rates, JSON interface."""

import json

import jax
import numpy as np
import pytest

from jaxkd.errors import ConfigError
from theory import rates
from theory.exact import SGD, max_stable_gamma, train_curve
from theory.query import EPILOG, KEYS, SGD_KEYS, risk
from theory.simulate import simulate
from theory.spectra import power_law
from theory.transfer import Transfer, transfer_curves

# ---------------------------------------------------------------------------------------------
# An independent reference: the paper's operator form with full D×D second moments (App. A), in
# function space u = sqrt(lam) ⊙ w, error e = u - theta*. For G = mean of B outer products z zᵀ,
# Isserlis gives E[G A G] = A + (A + tr(A) I + (kappa - 3) diag(A)) / B for symmetric A.


def _gamma_ref(sgd: dict, t: int) -> float:
    """Step size of step t (1-based), the schedules as the paper states them."""
    g0, H, sched = sgd["gamma0"], sgd["steps"], sgd["schedule"]
    if sched == "constant":
        return g0
    if sched == "step_decay":  # Algorithm 1: gamma0 2^-floor(t/K), K = H / log2 H
        return g0 * 0.5 ** np.floor(t / sgd.get("K", H / np.log2(H)))
    K = sgd.get("K", max(1.0, np.log(H / 2)))  # App. E: flat for t <= H/2, then halve every log(H/2)
    return g0 if t <= H / 2 else g0 * 0.5 ** np.floor((t - H / 2) / K)


def _EGAG(A, B, kappa):
    return A + (A + np.trace(A) * np.eye(len(A)) + (kappa - 3) * np.diag(np.diag(A))) / B


def _true_label_phase(lam, theta, sigma2, sgd, kappa):
    """Mean and full second moment of e after SGD on y = <theta, z> + eps, from e_0 = -theta."""
    L = np.diag(lam)
    mu, M = -theta.copy(), np.outer(theta, theta)
    for t in range(1, sgd["steps"] + 1):
        g = _gamma_ref(sgd, t)
        M = (
            M
            - g * (L @ M + M @ L)
            + g**2 * L @ _EGAG(M, sgd["batch"], kappa) @ L
            + g**2 * sigma2 / sgd["batch"] * L @ L
        )
        mu = mu - g * lam * mu
    return mu, M


def _reference(cfg: dict) -> dict:
    """Teacher, direct and distilled risks E||e||² (no ½) of a JSON config, full matrices."""
    kappa = {"gaussian": 3.0, "rademacher": 1.0}[cfg.get("features", "gaussian")]
    theta = np.array(cfg["theta_star"], float)
    lam_T, lam_S = np.array(cfg["lam_teacher"], float), np.array(cfg["lam_student"], float)
    s2, alpha, st = cfg["sigma2"], cfg["alpha"], cfg["student"]
    mu_T, M_T = _true_label_phase(lam_T, theta, s2, cfg["teacher"], kappa)
    _, M_D = _true_label_phase(lam_S, theta, s2, cfg["teacher"], kappa)
    # Distillation: d = e_S - alpha e_T follows SGD on noise (1 - alpha) eps; e_T is fixed.
    L = np.diag(lam_S)
    Mdd = np.outer(theta, theta) + alpha * (np.outer(theta, mu_T) + np.outer(mu_T, theta)) + alpha**2 * M_T
    MdT = -np.outer(theta, mu_T) - alpha * M_T
    for t in range(1, st["steps"] + 1):
        g = _gamma_ref(st, t)
        Mdd = (
            Mdd
            - g * (L @ Mdd + Mdd @ L)
            + g**2 * L @ _EGAG(Mdd, st["batch"], kappa) @ L
            + g**2 * (1 - alpha) ** 2 * s2 / st["batch"] * L @ L
        )
        MdT = MdT - g * L @ MdT
    distilled = np.trace(Mdd) + 2 * alpha * np.trace(MdT) + alpha**2 * np.trace(M_T)
    return {"teacher": np.trace(M_T), "direct": np.trace(M_D), "distilled": distilled}


# A rank-deficient teacher (blind to direction 2) and student (blind to direction 3).
BASE = {
    "theta_star": [1.0, 0.5, 0.25],
    "sigma2": 0.1,
    "lam_teacher": [1.0, 0.0, 0.3],
    "lam_student": [1.0, 0.2, 0.0],
    "alpha": 0.7,
    "teacher": {"gamma0": 0.2, "schedule": "step_decay", "batch": 2, "steps": 200},
    "student": {"gamma0": 0.2, "schedule": "flat_then_decay", "batch": 1, "steps": 300},
}


# ---------------------------------------------------------------------------------------------
# Exact recursion vs Monte Carlo


def _random_problem(rng, i):
    D = [5, 20, 60, 200][i % 4]
    lam_T = power_law(D, rng.uniform(0.5, 2.0))
    lam_S = power_law(D, rng.uniform(0.8, 2.5))
    if i % 2 == 0:  # rank-deficient student or teacher: zero-spectrum directions
        lam_S[rng.integers(1, D) :] = 0.0
    if i % 3 == 0:
        lam_T[rng.integers(D // 2, D) :] = 0.0
    theta_sq = np.arange(1, D + 1.0) ** -rng.uniform(0.5, 1.5)
    batch = int(rng.choice([1, 4]))
    sched = "constant" if i % 2 == 0 else "flat_then_decay" if i % 4 == 3 else "step_decay"
    g = 0.4 * max_stable_gamma(lam_T, batch)
    gs = 0.4 * max_stable_gamma(lam_S, batch)
    return Transfer(
        lam_T=lam_T,
        lam_S=lam_S,
        theta_sq=theta_sq,
        sigma2=float(rng.choice([0.0, 0.1, 0.5])),
        alpha=float(rng.choice([1.0, 0.7, 0.3])),
        teacher=SGD(gamma0=g, steps=int(rng.integers(50, 300)), batch=batch, schedule=sched),
        student=SGD(
            gamma0=gs,
            steps=int(rng.integers(50, 400)),
            batch=batch,
            schedule=sched,
            K=float(rng.uniform(20, 80)) if sched != "constant" else None,
        ),
    )


@pytest.mark.parametrize(
    "features,n_problems", [("gaussian", 4), ("rademacher", 3)]
)  # i = 0..3 covers every D, schedule and zero pattern
def test_exact_matches_monte_carlo_on_random_configurations(features, n_problems):
    """Random problems covering zero-spectrum directions, alpha < 1, batch > 1, all three schedules
    and D up to 200: every curve point of every model within 4 Monte Carlo standard errors. The
    seeds run in two chunks (the progress-bar path of the experiments)."""
    import jax

    rng = np.random.default_rng(0 if features == "gaussian" else 1)
    worst = 0.0
    for i in range(n_problems):
        p = _random_problem(rng, i)
        p = Transfer(**{**p.__dict__, "kappa": 3.0 if features == "gaussian" else 1.0})
        ckT = np.unique(np.linspace(1, p.teacher.steps, 5).astype(int))
        ckS = np.unique(np.linspace(1, p.student.steps, 5).astype(int))
        ex = transfer_curves(p, checkpoints_T=ckT, checkpoints_S=ckS)
        done = []  # seeds in two vmapped chunks, as the experiments run them for their progress bars
        mc = simulate(
            p,
            jax.random.key(i),
            1200,
            features=features,
            checkpoints_T=ckT,
            checkpoints_S=ckS,
            seeds_per_call=600,
            on_progress=done.append,
        )
        assert done == [600, 1200]
        for name in ("teacher", "direct", "distilled"):
            z = np.abs(mc[name]["mean"] - ex[name]) / np.maximum(mc[name]["se"], 1e-12)
            worst = max(worst, float(z.max()))
            assert np.all(z < 4.0), (i, name, z, ex[name], mc[name]["mean"])
    assert worst > 0.05  # the comparison really ran on noisy estimates


# ---------------------------------------------------------------------------------------------
# Closed forms written independently of the recursion's a_i, q_i


@pytest.mark.parametrize("features", ["gaussian", "rademacher"])
def test_single_direction_matches_quadrature(features):
    """D = 1, B = 1: e <- e - g z (z e - eps), so E[e'²] = E[(1 - g lam z²)²] E[e²] + g² lam² σ² E[z²].
    The factor is integrated numerically (Gauss–Hermite for Gaussian z, z = ±1 for Rademacher),
    step by step through a step-decay schedule."""
    lam, g0, steps, s2, theta_sq = 0.8, 0.3, 60, 0.05, 2.0
    if features == "gaussian":
        z, w = np.polynomial.hermite_e.hermegauss(20)
        w = w / w.sum()
    else:
        z, w = np.array([-1.0, 1.0]), np.array([0.5, 0.5])
    sgd = {"gamma0": g0, "steps": steps, "schedule": "step_decay", "K": 7.5}
    m, expected = theta_sq, []
    for t in range(1, steps + 1):
        x = _gamma_ref(sgd, t) * lam
        m = np.sum(w * (1 - x * z**2) ** 2) * m + x**2 * s2 * np.sum(w * z**2)
        expected.append(m)
    kappa = 3.0 if features == "gaussian" else 1.0
    ck = np.arange(1, steps + 1)
    with jax.enable_x64(True):
        _, got, _ = train_curve(
            np.array([lam]),
            np.array([theta_sq]),
            s2,
            SGD(g0, steps, schedule="step_decay", K=7.5),
            checkpoints=ck,
            kappa=kappa,
        )
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-12)


def test_noise_floor_is_feuer_weinstein():
    """Constant-step LMS with Gaussian inputs of covariance diag(lam), theta* = 0, B = 1: the
    stationary excess MSE is σ² η / (1 - η), η = Σ μλ_i / (2 (1 - μλ_i)) (Feuer & Weinstein 1985,
    IEEE TASSP 33(1), with their step 2μ written as μ)."""
    D, g, s2 = 30, 0.05, 0.3
    lam = power_law(D, 1.2)
    eta = np.sum(g * lam / (2 * (1 - g * lam)))
    p = Transfer(
        lam_T=lam, lam_S=lam, theta_sq=np.zeros(D), sigma2=s2, alpha=1.0, teacher=SGD(g, 30000), student=SGD(g, 10)
    )
    out = transfer_curves(p, checkpoints_T=[30000], checkpoints_S=[10])
    np.testing.assert_allclose(out["teacher_final"], s2 * eta / (1 - eta), rtol=1e-8)


def test_max_stable_gamma_is_the_stability_boundary_of_the_full_operator():
    """D = 1: E[(1 - x z²)²] < 1 iff x < 2/3, so gamma_max = 2 / (3 lam). D = 4, B = 2: the spectral
    radius of the full second-moment map M -> E[(I - gΛG) M (I - gΛG)] (on all D² entries) crosses
    1 at gamma_max."""
    np.testing.assert_allclose(max_stable_gamma(np.array([0.5]), 1), 2 / (3 * 0.5), rtol=1e-12)
    lam, B = np.array([1.0, 0.6, 0.3, 0.1]), 2
    L = np.diag(lam)

    def radius(g):
        basis = np.eye(16).reshape(16, 4, 4)
        cols = [
            (E - g * (L @ E + E @ L) + g**2 * L @ _EGAG(E, B, 3.0) @ L).ravel()
            for E in (basis + basis.transpose(0, 2, 1)) / 2
        ]
        return np.max(np.abs(np.linalg.eigvals(np.array(cols).T)))

    g = max_stable_gamma(lam, B)
    assert radius(0.999 * g) < 1 < radius(1.001 * g)


def test_effective_horizon_hand_value():
    """lam_k = k^-2, gamma0 = 0.5, N = 10⁴: threshold 2 ln(N) log2(N) / (gamma0 N) = 0.04895, and
    k^-2 > 0.04895 iff k <= 4 (by hand). Zeros and order of the input do not matter."""
    lam = power_law(1000, 2.0)
    assert rates.effective_horizon(lam, gamma0=0.5, N=10_000) == 4
    shuffled = np.concatenate([np.zeros(5), np.random.default_rng(0).permutation(lam)])
    assert rates.effective_horizon(shuffled, gamma0=0.5, N=10_000) == 4
    assert rates.effective_horizon(lam, gamma0=0.5, N=100) == 0  # threshold 1.84 > lam_1


def test_flat_then_decay_schedule_values():
    """App. E's schedule, H = 10 steps, gamma0 = 1: flat for t <= 5, then halving every ln 5 = 1.609
    steps: levels floor((t - 5) / 1.609) = 0, 1, 1, 2, 3 for t = 6..10 (by hand)."""
    s = SGD(1.0, 10, schedule="flat_then_decay")
    np.testing.assert_allclose(s.decay_interval, np.log(5), rtol=1e-15)
    expected = [1, 1, 1, 1, 1, 1, 0.5, 0.5, 0.25, 0.125]
    np.testing.assert_array_equal(np.asarray(s.gamma(np.arange(1.0, 11.0))), expected)
    np.testing.assert_array_equal(2.0 ** -s.level(np.arange(1, 11)), expected)  # the exact recursion's levels
    theory = SGD(1.0, 16, schedule="step_decay")  # K = 16 / log2 16 = 4
    np.testing.assert_array_equal(
        np.asarray(theory.gamma(np.array([1.0, 3.0, 4.0, 8.0, 16.0]))), [1, 1, 0.5, 0.25, 0.0625]
    )


def test_constant_step_intervals_follow_the_schedule():
    """The exact recursion groups steps into intervals of one step size: on random schedules (K from
    1e-3 to 300 steps) every interval has one level, and intervals end exactly at level changes and
    checkpoints (brute force over every step)."""
    from theory.exact import _intervals

    rng = np.random.default_rng(1)
    for trial in range(60):
        H = int(rng.integers(2, 2000))
        sched = ["constant", "step_decay", "flat_then_decay"][trial % 3]
        s = SGD(0.1, H, schedule=sched, K=None if trial % 2 else float(10 ** rng.uniform(-3, 2.5)))
        ck = np.unique(np.concatenate([rng.integers(1, H + 1, 5), [H]]))
        lengths, level, _, ends = _intervals(s, ck)
        every = s.level(np.arange(1, H + 1))
        for a, b, lev in zip(ends - lengths, ends, level):
            assert np.all(every[a:b] == lev), (trial, a, b)
        changes = set((np.flatnonzero(np.diff(every)) + 1).tolist())
        assert set(ends.tolist()) == changes | set(ck.tolist()), trial


# ---------------------------------------------------------------------------------------------
# Conventions (item 8a): excess over f* and over the best in class


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_best_in_class_is_the_limit_of_long_training(alpha):
    """Noiseless, long step-decay training: each model approaches its best in class, so the excess
    over best -> 0 while the excess over f* -> the closed forms Σ_{lam_S=0} θ² (direct) and
    Σ_{lam_S=0} θ² + alpha² Σ_{lam_S>0, lam_T=0} θ² (distilled; Lemma 2's bias at alpha = 1)."""
    D = 12
    lam_T, lam_S = power_law(D, 1.0), power_law(D, 1.0)
    lam_T[6:] = 0.0  # teacher blind beyond 6
    lam_S[9:] = 0.0  # student sees 9
    theta_sq = np.linspace(1.0, 0.2, D)
    p = Transfer(
        lam_T=lam_T,
        lam_S=lam_S,
        theta_sq=theta_sq,
        sigma2=0.0,
        alpha=alpha,
        teacher=SGD(0.2, 20000, schedule="step_decay"),
        student=SGD(0.2, 20000, schedule="step_decay"),
    )
    out = transfer_curves(p, checkpoints_T=[20000], checkpoints_S=[20000])
    best_direct = theta_sq[9:].sum()
    bias = theta_sq[6:9].sum()
    np.testing.assert_allclose(rates.alignment_bias(lam_T, lam_S, theta_sq), bias, rtol=1e-12)
    np.testing.assert_allclose(out["best_in_class"]["distilled"], best_direct + alpha**2 * bias, rtol=1e-12)
    np.testing.assert_allclose(out["best_in_class"]["teacher"], theta_sq[6:].sum(), rtol=1e-12)
    # Step decay drives SGD to the best in class; 20,000 steps leave a ~1e-3 relative variance term.
    np.testing.assert_allclose(out["distilled_final"], best_direct + alpha**2 * bias, rtol=3e-3)
    np.testing.assert_allclose(out["direct_final"], best_direct, rtol=3e-3)
    total = theta_sq.sum()
    for name in ("teacher", "direct", "distilled"):
        assert 0 <= out[f"{name}_final_over_best"] < 3e-3 * total, (name, out)


def test_json_interface_risks_match_the_full_matrix_reference():
    """Rank-deficient teacher and student, alpha = 0.7, batch 2, step decay and flat-then-decay:
    every risk, both conventions, DER and PGR against the NumPy reference (relative 1e-10)."""
    cfg = json.loads(json.dumps(BASE))
    out = risk(cfg)
    ref = _reference(cfg)
    floor = {"teacher": 0.5**2, "direct": 0.25**2, "distilled": 0.25**2 + 0.7**2 * 0.5**2}  # by hand
    names = {"teacher": "teacher", "direct": "direct_student", "distilled": "distilled_student"}
    for k, name in names.items():
        np.testing.assert_allclose(out[f"{name}_excess_risk"], ref[k], rtol=1e-10)
        np.testing.assert_allclose(out["best_in_class_risk"][name], floor[k], rtol=1e-12)
        np.testing.assert_allclose(out[f"{name}_excess_over_best"], ref[k] - floor[k], rtol=1e-9)
    np.testing.assert_allclose(out["DER"], ref["direct"] / ref["distilled"], rtol=1e-10)
    der_best = (ref["direct"] - floor["direct"]) / (ref["distilled"] - floor["distilled"])
    np.testing.assert_allclose(out["DER_over_best"], der_best, rtol=1e-9)
    assert abs(out["DER_over_best"] - out["DER"]) > 0.05  # the two conventions really differ here
    # Here the direct student (blind to direction 3, θ² = 0.0625) beats the teacher (blind to direction 2, 0.25).
    assert ref["teacher"] - ref["direct"] > 0.01 * ref["teacher"]
    pgr = (ref["teacher"] - ref["distilled"]) / (ref["teacher"] - ref["direct"])
    np.testing.assert_allclose(out["PGR"], pgr, rtol=1e-9)
    assert set(out["conventions"]) == {"excess_risk", "excess_over_best"}


def test_pgr_only_where_defined():
    """Self-distillation (identical models: R_S = R_T), a student weaker than its teacher, and a
    student better by under 1% (0.4% here) have no usable weak-to-strong gap: PGR is null with a
    reason, and the output stays strict JSON."""
    full = [1.0, 0.5, 0.3]
    out = risk({**BASE, "lam_teacher": BASE["lam_student"], "alpha": 1.0})
    assert out["PGR"] is None and "not better than the teacher" in out["PGR_note"]
    out = risk({**BASE, "lam_teacher": full, "lam_student": [1.0, 0.0, 0.0]})
    assert out["PGR"] is None and "not better than the teacher" in out["PGR_note"]
    out = risk({**BASE, "lam_teacher": full, "lam_student": [1.0, 0.5, 0.302]})
    gap = 1 - out["direct_student_excess_risk"] / out["teacher_excess_risk"]
    assert 0 < gap < 0.01 and out["PGR"] is None and "within 1%" in out["PGR_note"], out
    json.loads(json.dumps(out, allow_nan=False))


# ---------------------------------------------------------------------------------------------
# Rates


def test_theorem3_rates_recovered_by_fits_on_exact_curves():
    """Theorem 3 (alpha_T = 2, alpha_S = 2.5, beta = 0, D = 2000, N = 2^8..2^11, n = 256 N):
    teacher and distilled risks decay like N^-(alpha_T - 1 - beta)/alpha_T = N^-0.5, the direct
    student like N^-0.4, DER grows like N^kappa, kappa = 0.1. Log factors and finite n bias the
    fits towards zero; the stated tolerances are 0.1 on risk exponents and 0.03 on kappa."""
    a_T, a_S = 2.0, 2.5
    fit = rates.fitted_exponents(
        alpha_T=a_T, alpha_S=a_S, beta=0.0, D=2000, Ns=[2**k for k in range(8, 12)], n_factor=256
    )
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


def test_theorem5_early_stopping_fitted_from_the_exact_recursion():
    """Self-distillation, alpha = 2, k† = 1, N = 2^10, 2^13, 2^16, a student without SGD noise.

    Minimum risk: the fitted exponent is within 0.1 of the corrected -9/10. Stopping time: the
    exact optimum grows like log N, not like a power: the signal direction's bias decays like
    (1 - gamma lam_1)^(2n) while the inherited teacher error is O(1/N), so n* ≈ ln N / (2 |ln(1 -
    gamma lam_1)|) + c. Its power-law fit is well below Theorem 5's corrected N^(1/5) (which is
    the optimum of the paper's upper bound, not of the exact risk)."""
    pred = rates.w2s_rates(2.0, 2.0)
    r = rates.w2s_early_stopping(alpha=2.0, k_dagger=1, D=500, Ns=[2**10, 2**13, 2**16], n_max=64)
    assert np.all(r["best_n"] < 64) and np.all(np.diff(r["best_n"]) > 0), r
    assert np.all(r["min_risk"] < r["teacher_risk"]), r  # weak-to-strong at the optimum
    assert abs(r["risk_exponent"] - pred["risk_exponent"]) < 0.1, r
    slope = np.polyfit(np.log(r["N"]), r["best_n"], 1)[0]
    predicted = 1 / (2 * abs(np.log(1 - r["gamma"])))
    assert 0.75 < slope / predicted < 1.25, (slope, predicted, r)
    assert r["stop_exponent"] < 0.6 * pred["stop_exponent"], r


# ---------------------------------------------------------------------------------------------
# Validation (items 8b, 9) and the JSON / CLI interface (item 18)


def test_checkpoints_are_validated_against_steps():
    p = Transfer(**{**_problem_kwargs(), "teacher": SGD(0.1, 20), "student": SGD(0.1, 30)})
    for bad, match in [
        ([5, 25], "go beyond the run's steps=20"),
        ([5, 10], "must end at the run's steps=20"),
        ([10, 5, 20], "strictly increasing"),
        ([0, 20], ">= 1"),
        ([2.5, 20], "whole step counts"),
        ([], "non-empty"),
    ]:
        with pytest.raises(ConfigError, match=match) as err:
            transfer_curves(p, checkpoints_T=bad, checkpoints_S=[30])
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="checkpoints_S go beyond the run's steps=30"):
        transfer_curves(p, checkpoints_T=[20], checkpoints_S=[10, 40])
    with pytest.raises(ConfigError, match="checkpoints_S must end"):
        simulate(p, None, 2, checkpoints_T=[20], checkpoints_S=[10])
    with pytest.raises(ConfigError, match="must end at the run's steps=20"):
        train_curve(p.lam_T, p.theta_sq, 0.1, p.teacher, checkpoints=[10])


def _problem_kwargs():
    lam = power_law(4, 1.0)
    return {"lam_T": lam, "lam_S": lam, "theta_sq": np.ones(4), "sigma2": 0.1, "alpha": 1.0}


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
        ({"student": {"gamma0": 0.1, "schedule": "step_decay", "batch": 1, "steps": 10, "K": -1}}, "K must be"),
        ({"theta_star": "abc"}, "non-empty list"),
    ],
)
def test_json_interface_bad_input(patch, match):
    with pytest.raises(ConfigError, match=match):
        risk({**BASE, **patch})


def test_help_lists_every_key():
    for key in [*KEYS, *SGD_KEYS]:
        assert f"  {key} " in EPILOG
    assert "length D" in EPILOG and "1 = pure distillation" in EPILOG and "decay interval in steps" in EPILOG


def test_cli_theory_risk(tmp_path, capsys):
    from jaxkd.cli import main

    path = tmp_path / "c.json"
    path.write_text(json.dumps(BASE))
    assert main(["theory", "risk", str(path)]) == 0
    out = json.loads(capsys.readouterr().out)
    ref = _reference(BASE)
    np.testing.assert_allclose(out["teacher_excess_risk"], ref["teacher"], rtol=1e-10)
    np.testing.assert_allclose(out["distilled_student_excess_risk"], ref["distilled"], rtol=1e-10)
    path.write_text("{not json")
    assert main(["theory", "risk", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not valid JSON" in err[0]


@pytest.mark.parametrize(
    "argv,match",
    [
        (["spectral_kd", "--set", "Ns="], "Ns"),
        (["spectral_kd", "--set", "delta_alphas=-1.5"], "alpha_T + delta_alpha must be > 0"),
        (["spectral_kd", "--set", "schedule=cosine"], "schedule must be one of"),
        (["spectral_kd", "--set", "gamma0=5"], "diverge"),
        (["spectral_w2s", "--set", "map_k_daggers="], "map_k_daggers"),
        (["spectral_w2s", "--set", "mc_d_signals=7"], "subset of d_signals"),
    ],
)
def test_spectral_configs_refused_before_any_work(argv, match, tmp_path, capsys, monkeypatch):
    from experiments import spectral_kd, spectral_w2s
    from jaxkd.cli import main

    def work(*args, **kwargs):
        raise AssertionError("work started before the configuration was validated")

    for module in (spectral_kd, spectral_w2s):
        for name in ("simulate", "transfer_curves", "transfer_grid"):
            monkeypatch.setattr(module, name, work)
    assert main(["run", *argv, "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("jaxkd: error: ") and match in err[0], err


def test_spectral_configs_refuse_empty_lists():
    from experiments import spectral_kd, spectral_w2s

    for module, field in [
        (spectral_kd, "Ns"),
        (spectral_kd, "delta_alphas"),
        (spectral_w2s, "map_k_daggers"),
        (spectral_w2s, "map_decays"),
        (spectral_w2s, "d_signals"),
    ]:
        with pytest.raises(ConfigError, match=f"{field} must list at least one"):
            module.Config(**{field: ()})
