"""Spectral theory of KD (Wu et al. 2026, Fig. 2a/2b): a strong teacher amplifies data.

Linear regression in function space (``theory/``): teacher spectrum
``i^-alpha_T``, student ``i^-alpha_S``, target prior ``theta*_i² = lam_T,i``
(the paper's ``w* ~ N(0, I)`` in teacher coordinates), noise sigma = 0.1,
step-decay SGD from zero. Three panels, each exact (lines, expected values
from the O(D) recursion) with Monte Carlo SGD (points, mean ± 2 SE over
seeds) from the same run:

1. excess risk vs N for teacher, direct student (N true labels) and distilled
   student (n teacher-labelled inputs) — Fig. 2a;
2. DER_N = direct / distilled vs Δα = alpha_S - alpha_T at N = N_max — Fig. 2b;
3. a DER phase diagram over (alpha_T, alpha_S), one vmapped program.

Command: ``jaxkd run spectral_kd --preset default`` (about 1-2 min on a 2-core
CPU; ``paper`` uses the paper's n = 500,000 and a 32 × 32 diagram). Risks are
E[(f - f*)²] without the ½.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from jaxkd import plotting, stats
from jaxkd.errors import check
from jaxkd.experiment import write_outputs
from theory.exact import SGD
from theory.simulate import simulate
from theory.spectra import power_law
from theory.transfer import Transfer, transfer_curves, transfer_grid


@dataclasses.dataclass(frozen=True)
class Config:
    D: int = 100
    alpha_T: float = 1.0
    alpha_S: float = 1.5
    sigma2: float = 0.01
    gamma0: float = 0.1
    Ns: tuple[int, ...] = (64, 128, 256, 512, 1024, 2000)
    n: int = 20_000  # distilled student's samples (the paper uses 500,000)
    n_seeds: int = 64  # Monte Carlo seeds
    seed: int = 0
    delta_alphas: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    phase_size: int = 12  # phase diagram is phase_size × phase_size
    phase_range: tuple[float, ...] = (1.0, 2.0)

    def __post_init__(self):
        check(self.D > 0 and self.n > 0 and self.n_seeds > 1, "D, n must be positive and n_seeds > 1")
        check(min(self.Ns) > 1, f"Ns must be > 1, got {self.Ns}")
        check(self.sigma2 >= 0, f"sigma2 must be >= 0, got {self.sigma2}")
        check(self.phase_size >= 2 and len(self.phase_range) == 2, "phase_size >= 2 and phase_range = lo,hi")

    def problem(self, N: int, alpha_T=None, alpha_S=None) -> Transfer:
        a_T = self.alpha_T if alpha_T is None else alpha_T
        a_S = self.alpha_S if alpha_S is None else alpha_S
        lam_T, lam_S = power_law(self.D, a_T), power_law(self.D, a_S)
        return Transfer(lam_T=lam_T, lam_S=lam_S, theta_sq=power_law(self.D, self.alpha_T), sigma2=self.sigma2,
                        alpha=1.0, teacher=SGD(self.gamma0, N, schedule="step_decay"),
                        student=SGD(self.gamma0, self.n, schedule="step_decay"))


PRESETS = {
    "smoke": Config(D=20, Ns=(32, 64), n=500, n_seeds=8, delta_alphas=(0.0, 0.5), phase_size=3),
    "default": Config(),
    "paper": Config(n=500_000, n_seeds=64, Ns=(64, 128, 256, 512, 1024, 1500, 2000),
                    delta_alphas=tuple(np.round(np.linspace(0, 1, 9), 3)), phase_size=32),
}


def runlocal(config: Config) -> Config:
    return dataclasses.replace(config, D=8, Ns=(8, 16), n=40, n_seeds=4, delta_alphas=(0.0, 0.5), phase_size=2)


def run(config: Config, out_dir: str, *, resume: bool = False, overwrite: bool = False, progress: bool = True) -> dict:
    key = jax.random.key(config.seed)
    rows, exact_N, mc_N = [], [], []
    for i, N in enumerate(config.Ns):
        p = config.problem(N)
        ex = transfer_curves(p, checkpoints_T=[N], checkpoints_S=[config.n])
        mc = simulate(p, jax.random.fold_in(key, i), config.n_seeds, checkpoints_T=[N], checkpoints_S=[config.n])
        exact_N.append(ex)
        mc_N.append(mc)
        for name in ("teacher", "direct", "distilled"):
            rows.append({"condition": f"{name}/N={N}", "seed": -1, "step": N, "metric": "exact_excess_risk",
                         "value": float(ex[name][-1]), "diverged": False})
            rows.append({"condition": f"{name}/N={N}", "seed": -1, "step": N, "metric": "mc_excess_risk_mean",
                         "value": float(mc[name]["mean"][-1]), "diverged": False})
            rows.append({"condition": f"{name}/N={N}", "seed": -1, "step": N, "metric": "mc_excess_risk_se",
                         "value": float(mc[name]["se"][-1]), "diverged": False})

    # Fig. 2b: DER vs Δα at the largest N (exact: one vmapped program; MC: DER per seed pair).
    N = max(config.Ns)
    das = np.asarray(config.delta_alphas, np.float64)
    grid = transfer_grid([config.problem(N, alpha_S=config.alpha_T + d) for d in das],
                         checkpoints_S=[config.n])
    der_exact = grid["direct"] / grid["distilled"]
    der_mc = []
    for j, d in enumerate(das):
        mc = simulate(config.problem(N, alpha_S=config.alpha_T + d), jax.random.fold_in(key, 1000 + j),
                      config.n_seeds, checkpoints_T=[N], checkpoints_S=[config.n])
        der_mc.append(mc["direct"]["mean"][-1] / mc["distilled"]["mean"][-1])
        rows.append({"condition": f"delta_alpha={d:g}", "seed": -1, "step": N, "metric": "DER_exact",
                     "value": float(der_exact[j]), "diverged": False})
        rows.append({"condition": f"delta_alpha={d:g}", "seed": -1, "step": N, "metric": "DER_mc",
                     "value": float(der_mc[-1]), "diverged": False})

    # Phase diagram over (alpha_T, alpha_S): one vmapped program.
    axis = np.linspace(*config.phase_range, config.phase_size)
    probs = [dataclasses.replace(config.problem(N, a_T, a_S), theta_sq=power_law(config.D, a_T))
             for a_T in axis for a_S in axis]
    phase = transfer_grid(probs, checkpoints_S=[config.n])
    der_map = (phase["direct"] / phase["distilled"]).reshape(config.phase_size, config.phase_size)

    agreement = _agreement(exact_N, mc_N)
    summary = {
        "convention": "excess risk E[(f - f*)^2], no 1/2; exact = expected value; MC = mean over seeds",
        "N": list(config.Ns),
        "exact": {name: [float(e[name][-1]) for e in exact_N] for name in ("teacher", "direct", "distilled")},
        "mc": {name: {"mean": [float(m[name]["mean"][-1]) for m in mc_N],
                      "se": [float(m[name]["se"][-1]) for m in mc_N]} for name in ("teacher", "direct", "distilled")},
        "DER_at_N_max": {"exact": float(exact_N[-1]["DER"]),
                         "mc": float(mc_N[-1]["direct"]["mean"][-1] / mc_N[-1]["distilled"]["mean"][-1])},
        "DER_vs_delta_alpha": {"delta_alpha": das.tolist(), "exact": der_exact.tolist(), "mc": der_mc},
        "DER_vs_delta_alpha_fit": stats.fit_power_law(1 + das, der_exact),
        "phase_diagram": {"alpha_T": axis.tolist(), "alpha_S": axis.tolist(), "DER": der_map.tolist()},
        "exact_vs_mc": agreement,
    }
    fig = _figure(config, exact_N, mc_N, das, der_exact, der_mc, axis, der_map)
    write_outputs(out_dir, config=config, rows=rows, summary=summary, figures={"figure.png": fig})
    return summary


def _agreement(exact_N, mc_N) -> dict:
    z = [abs(m[k]["mean"][-1] - e[k][-1]) / m[k]["se"][-1] for e, m in zip(exact_N, mc_N)
         for k in ("teacher", "direct", "distilled")]
    return {"max_abs_z": float(np.max(z)), "mean_abs_z": float(np.mean(z)), "n_points": len(z)}


def _figure(config, exact_N, mc_N, das, der_exact, der_mc, axis, der_map) -> bytes:
    fig, axes = plotting.figure(ncols=3, width=3.9)
    ax = axes[0, 0]
    Ns = np.asarray(config.Ns)
    for i, name in enumerate(("teacher", "direct", "distilled")):
        ax.plot(Ns, [e[name][-1] for e in exact_N], color=f"C{i}", label=f"{name} (exact)")
        m = np.array([x[name]["mean"][-1] for x in mc_N])
        se = np.array([x[name]["se"][-1] for x in mc_N])
        ax.errorbar(Ns, m, yerr=2 * se, fmt="o", ms=3, color=f"C{i}", capsize=2)
    ax.set(xscale="log", yscale="log", xlabel="N (teacher / direct samples)", ylabel="excess risk",
           title=f"alpha_T={config.alpha_T}, alpha_S={config.alpha_S}, n={config.n}")
    ax.legend(fontsize=7)
    ax = axes[0, 1]
    ax.plot(das, der_exact, color="C0", label="exact")
    ax.plot(das, der_mc, "o", color="C0", ms=3, label=f"MC ({config.n_seeds} seeds)")
    ax.axhline(1, color="k", lw=0.8, ls="--")
    ax.set(xlabel="Δα = alpha_S - alpha_T", ylabel="DER_N (direct / distilled)", title=f"N = {max(config.Ns)}")
    ax.legend(fontsize=7)
    ax = axes[0, 2]
    im = ax.imshow(np.log10(der_map), origin="lower", aspect="auto", cmap="RdBu_r",
                   extent=[axis[0], axis[-1], axis[0], axis[-1]], vmin=-np.abs(np.log10(der_map)).max(),
                   vmax=np.abs(np.log10(der_map)).max())
    ax.set(xlabel="alpha_S (student decay)", ylabel="alpha_T (teacher decay)", title="log10 DER (exact)")
    fig.colorbar(im, ax=ax)
    return plotting.to_png(fig)


