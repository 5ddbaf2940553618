"""Spectral theory of KD (Wu et al. 2026, Fig. 2a/2b): a strong teacher amplifies data.

Linear regression in function space (``theory/``): teacher spectrum
``i^-alpha_T``, student ``i^-alpha_S`` (optionally rank-deficient,
``student_rank``), target prior ``theta*_i² = lam_T,i`` (the paper's
``w* ~ N(0, I)`` in teacher coordinates), noise sigma = 0.1, SGD from zero.
Three panels, each exact (lines, expected values from the O(D) recursion)
with Monte Carlo SGD (points, mean ± 2 SE over seeds) from the same run:

1. excess risk over f* vs N for teacher, direct student (N true labels) and
   distilled student (n teacher-labelled inputs) — Fig. 2a;
2. DER_N = direct / distilled vs Δα = alpha_S - alpha_T at N = N_max — Fig. 2b;
3. a DER phase diagram over (alpha_T, alpha_S), one vmapped program.

Step sizes: every figure uses the ``schedule`` field, by default the theory's
step decay ``gamma0 · 2^-floor(t/K)``, ``K = steps / log2 steps``
(Algorithm 1); ``--set schedule=flat_then_decay`` uses the paper's
experimental schedule instead (flat for the first half, then halving every
``ln(steps/2)`` steps; App. E). The figure's title names the schedule.

Conventions: excess risks are E[(f - f*)²] without the ½. Panels 2 and 3 show
DER in the paper's convention (excess over the best model in each class, over
the best transfer solution for the distilled student); with full-rank models
(the default) it equals DER over f*. ``summary.json`` holds both.

Command: ``jaxkd run spectral_kd --preset default`` (about 90 s on a 2-core
CPU, progress on stderr; ``paper`` uses the paper's n = 500,000 and a 32 × 32
diagram).
"""

from __future__ import annotations

import dataclasses
import sys

import jax
import numpy as np

from jaxkd import plotting, stats
from jaxkd.errors import check
from jaxkd.outputs import write_outputs
from theory.exact import SCHEDULES, SGD
from theory.simulate import simulate
from theory.spectra import power_law
from theory.transfer import Transfer, best_in_class, transfer_curves, transfer_grid

MODELS = ("teacher", "direct", "distilled")


@dataclasses.dataclass(frozen=True)
class Config:
    D: int = 100
    alpha_T: float = 1.0
    alpha_S: float = 1.5
    sigma2: float = 0.01
    gamma0: float = 0.1
    schedule: str = "step_decay"  # or "flat_then_decay" (the paper's experiments); see theory.exact.SGD
    student_rank: int | None = None  # keep only the student's top-k directions (Theorem 2); None = full rank
    Ns: tuple[int, ...] = (64, 128, 256, 512, 1024, 2000)
    n: int = 20_000  # distilled student's samples (the paper uses 500,000)
    n_seeds: int = 64  # Monte Carlo seeds
    seed: int = 0
    delta_alphas: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    phase_size: int = 12  # phase diagram is phase_size × phase_size
    phase_range: tuple[float, ...] = (1.0, 2.0)

    def __post_init__(self):
        check(self.D > 0 and self.n > 0, f"D and n must be positive, got D={self.D}, n={self.n}")
        check(self.n_seeds > 1, f"n_seeds must be > 1 (Monte Carlo standard errors), got {self.n_seeds}")
        check(len(self.Ns) > 0, "Ns must list at least one teacher sample size, e.g. --set Ns=256,1024")
        check(min(self.Ns) > 1, f"Ns must be > 1, got {self.Ns}")
        check(len(set(self.Ns)) == len(self.Ns), f"Ns repeats a value: {self.Ns}")
        check(len(self.delta_alphas) > 0, "delta_alphas must list at least one value, e.g. --set delta_alphas=0,0.5")
        check(
            all(self.alpha_T + d > 0 for d in self.delta_alphas),
            f"alpha_T + delta_alpha must be > 0 for every delta_alpha, got alpha_T={self.alpha_T}, "
            f"delta_alphas={self.delta_alphas}",
        )
        check(self.alpha_T > 0 and self.alpha_S > 0, "alpha_T and alpha_S must be > 0")
        check(self.sigma2 >= 0, f"sigma2 must be >= 0, got {self.sigma2}")
        check(self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        check(
            self.student_rank is None or 0 < self.student_rank <= self.D,
            f"student_rank must lie in 1..D={self.D} (or none), got {self.student_rank}",
        )
        check(self.phase_size >= 2, f"phase_size must be >= 2, got {self.phase_size}")
        check(
            len(self.phase_range) == 2 and 0 < self.phase_range[0] < self.phase_range[1],
            f"phase_range must be lo,hi with 0 < lo < hi, got {self.phase_range}",
        )

    def problem(self, N: int, alpha_T=None, alpha_S=None, theta_decay=None) -> Transfer:
        a_T = self.alpha_T if alpha_T is None else alpha_T
        a_S = self.alpha_S if alpha_S is None else alpha_S
        lam_T, lam_S = power_law(self.D, a_T), power_law(self.D, a_S, k=self.student_rank)
        return Transfer(
            lam_T=lam_T,
            lam_S=lam_S,
            theta_sq=power_law(self.D, self.alpha_T if theta_decay is None else theta_decay),
            sigma2=self.sigma2,
            alpha=1.0,
            teacher=SGD(self.gamma0, N, schedule=self.schedule),
            student=SGD(self.gamma0, self.n, schedule=self.schedule),
        )

    def problems(self) -> dict:
        """Every problem the run solves: ``{"N": [...], "delta_alpha": [...], "phase": [...]}``."""
        N = max(self.Ns)
        axis = np.linspace(*self.phase_range, self.phase_size)
        return {
            "N": [self.problem(n) for n in self.Ns],
            "delta_alpha": [self.problem(N, alpha_S=self.alpha_T + d) for d in self.delta_alphas],
            "phase": [self.problem(N, a_T, a_S, theta_decay=a_T) for a_T in axis for a_S in axis],
        }


PRESETS = {
    "smoke": Config(D=20, Ns=(32, 64), n=500, n_seeds=8, delta_alphas=(0.0, 0.5), phase_size=3),
    "default": Config(),
    "paper": Config(
        n=500_000,
        n_seeds=64,
        Ns=(64, 128, 256, 512, 1024, 1500, 2000),
        delta_alphas=tuple(np.round(np.linspace(0, 1, 9), 3)),
        phase_size=32,
    ),
}


def runlocal(config: Config) -> Config:
    return dataclasses.replace(
        config,
        D=8,
        Ns=(8, 16),
        n=40,
        n_seeds=4,
        delta_alphas=(0.0, 0.5),
        phase_size=2,
        student_rank=None if config.student_rank is None else min(config.student_rank, 8),
    )


def _row(condition, step, metric, value) -> dict:
    return {
        "condition": condition,
        "seed": -1,
        "step": int(step),
        "metric": metric,
        "value": float(value),
        "diverged": False,
    }


def _progress_bar(progress: bool, total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="run", leave=False, file=sys.stderr, disable=not progress)


def run(config: Config, out_dir: str, *, resume: bool = False, overwrite: bool = False, progress: bool = True) -> dict:
    problems = config.problems()
    for group in problems.values():  # every step size checked before any work
        for p in group:
            p.check()
    key = jax.random.key(config.seed)
    S = config.n_seeds
    chunk = max(1, S // 2)
    bar = _progress_bar(progress, len(config.Ns) * (1 + S) + 1 + len(config.delta_alphas) * S + 1, "spectral_kd")

    def mc(p, k, what, N):
        bar.set_postfix_str(f"Monte Carlo {what}")
        done = [0]

        def advance(seeds):
            bar.update(seeds - done[0])
            done[0] = seeds

        return simulate(p, k, S, checkpoints_T=[N], checkpoints_S=[config.n], seeds_per_call=chunk, on_progress=advance)

    rows, exact_N, mc_N = [], [], []
    for i, (N, p) in enumerate(zip(config.Ns, problems["N"])):
        bar.set_postfix_str(f"exact N={N}")
        ex = transfer_curves(p, checkpoints_T=[N], checkpoints_S=[config.n], validate=False)
        bar.update(1)
        m = mc(p, jax.random.fold_in(key, i), f"N={N}", N)
        exact_N.append(ex)
        mc_N.append(m)
        for name in MODELS:
            rows.append(_row(f"{name}/N={N}", N, "exact_excess_risk", ex[name][-1]))
            rows.append(_row(f"{name}/N={N}", N, "exact_excess_over_best", ex[f"{name}_final_over_best"]))
            rows.append(_row(f"{name}/N={N}", N, "mc_excess_risk_mean", m[name]["mean"][-1]))
            rows.append(_row(f"{name}/N={N}", N, "mc_excess_risk_se", m[name]["se"][-1]))

    # Fig. 2b: DER vs Δα at the largest N (exact: one vmapped program; MC: ratio of seed means).
    N = max(config.Ns)
    das = np.asarray(config.delta_alphas, np.float64)
    bar.set_postfix_str("exact DER vs delta_alpha")
    grid = transfer_grid(problems["delta_alpha"], checkpoints_S=[config.n])
    bar.update(1)
    der_exact, der_exact_f = grid["DER_over_best"], grid["direct"] / grid["distilled"]
    der_mc, der_mc_f = [], []
    for j, (d, p) in enumerate(zip(das, problems["delta_alpha"])):
        m = mc(p, jax.random.fold_in(key, 1000 + j), f"delta_alpha={d:g}", N)
        floor = best_in_class(p)
        der_mc.append((m["direct"]["mean"][-1] - floor["direct"]) / (m["distilled"]["mean"][-1] - floor["distilled"]))
        der_mc_f.append(m["direct"]["mean"][-1] / m["distilled"]["mean"][-1])
        rows.append(_row(f"delta_alpha={d:g}", N, "DER_over_best_exact", der_exact[j]))
        rows.append(_row(f"delta_alpha={d:g}", N, "DER_over_best_mc", der_mc[-1]))
        rows.append(_row(f"delta_alpha={d:g}", N, "DER_exact", der_exact_f[j]))
        rows.append(_row(f"delta_alpha={d:g}", N, "DER_mc", der_mc_f[-1]))

    # Phase diagram over (alpha_T, alpha_S): one vmapped program.
    bar.set_postfix_str("exact phase diagram")
    axis = np.linspace(*config.phase_range, config.phase_size)
    phase = transfer_grid(problems["phase"], checkpoints_S=[config.n])
    bar.update(1)
    bar.close()
    der_map = phase["DER_over_best"].reshape(config.phase_size, config.phase_size)
    der_map_f = (phase["direct"] / phase["distilled"]).reshape(config.phase_size, config.phase_size)

    full_rank = config.student_rank is None
    summary = {
        "convention": (
            "excess risk E[(f - f*)^2], no 1/2; 'exact' = expected value over f*, 'exact_over_best' = the paper's "
            "convention (over the best model in each class, over the best transfer solution for the distilled "
            "student); MC = mean over seeds; "
            + ("full-rank models, so both conventions agree" if full_rank else "rank-deficient student: they differ")
        ),
        "schedule": f"{config.schedule}: {SCHEDULES[config.schedule]}",
        "N": list(config.Ns),
        "exact": {name: [float(e[name][-1]) for e in exact_N] for name in MODELS},
        "exact_over_best": {name: [float(e[f"{name}_final_over_best"]) for e in exact_N] for name in MODELS},
        "best_in_class": exact_N[-1]["best_in_class"],
        "mc": {
            name: {"mean": [float(m[name]["mean"][-1]) for m in mc_N], "se": [float(m[name]["se"][-1]) for m in mc_N]}
            for name in MODELS
        },
        "DER_at_N_max": {
            "exact": _finite(exact_N[-1]["DER"]),
            "exact_over_best": _finite(exact_N[-1]["DER_over_best"]),
            "mc": float(mc_N[-1]["direct"]["mean"][-1] / mc_N[-1]["distilled"]["mean"][-1]),
        },
        "DER_vs_delta_alpha": {
            "delta_alpha": das.tolist(),
            "exact_over_best": der_exact.tolist(),
            "mc_over_best": [float(x) for x in der_mc],
            "exact": der_exact_f.tolist(),
            "mc": [float(x) for x in der_mc_f],
        },
        "DER_vs_delta_alpha_fit": stats.fit_power_law(1 + das, der_exact) if len(set(das)) > 1 else None,
        "phase_diagram": {
            "alpha_T": axis.tolist(),
            "alpha_S": axis.tolist(),
            "DER_over_best": der_map.tolist(),
            "DER": der_map_f.tolist(),
        },
        "exact_vs_mc": _agreement(exact_N, mc_N),
    }
    fig = _figure(config, exact_N, mc_N, das, der_exact, der_mc, der_exact_f, axis, der_map)
    write_outputs(out_dir, config=config, rows=rows, summary=summary, figures={"figure.png": fig})
    return summary


def _finite(x) -> float | None:
    return float(x) if np.isfinite(x) else None


def _agreement(exact_N, mc_N) -> dict:
    z = [abs(m[k]["mean"][-1] - e[k][-1]) / m[k]["se"][-1] for e, m in zip(exact_N, mc_N) for k in MODELS]
    return {"max_abs_z": float(np.max(z)), "mean_abs_z": float(np.mean(z)), "n_points": len(z)}


def _figure(config, exact_N, mc_N, das, der_exact, der_mc, der_exact_f, axis, der_map) -> bytes:
    full_rank = config.student_rank is None
    rank = "full-rank" if full_rank else f"student rank {config.student_rank}"
    fig, axes = plotting.figure(ncols=3, width=4.1)
    fig.suptitle(
        f"D={config.D}, sigma²={config.sigma2:g}, gamma0={config.gamma0:g}, schedule: {config.schedule}, {rank}; "
        f"lines exact, points Monte Carlo mean ± 2 SE ({config.n_seeds} seeds)",
        fontsize=8,
    )
    ax = axes[0, 0]
    Ns = np.asarray(config.Ns)
    for i, name in enumerate(MODELS):
        ax.plot(Ns, [e[name][-1] for e in exact_N], color=f"C{i}", label=f"{name} (exact)")
        m = np.array([x[name]["mean"][-1] for x in mc_N])
        se = np.array([x[name]["se"][-1] for x in mc_N])
        ax.errorbar(
            Ns, m, yerr=2 * se, fmt="o", ms=3, color=f"C{i}", capsize=2, label="Monte Carlo ± 2 SE" if i == 0 else None
        )
        floor = exact_N[-1]["best_in_class"][name]
        if floor > 0:
            ax.axhline(floor, color=f"C{i}", ls=":", lw=0.8, label=f"{name}: best possible")
    ylabel = "excess risk over f* (no ½)" + ("\n(= over best in class: full rank)" if full_rank else "")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="N (teacher / direct-student samples)",
        ylabel=ylabel,
        title=f"alpha_T={config.alpha_T}, alpha_S={config.alpha_S}, distilled on n={config.n}",
    )
    ax.legend(fontsize=7)
    ax = axes[0, 1]
    ax.plot(das, der_exact, color="C0", label="exact")
    ax.plot(das, der_mc, "o", color="C0", ms=3, label=f"Monte Carlo ({config.n_seeds} seeds)")
    if not full_rank:
        ax.plot(das, der_exact_f, color="C1", ls="--", label="exact, over f*")
    ax.axhline(1, color="k", lw=0.8, ls="--")
    conv = "over best in class = over f* (full rank)" if full_rank else "solid: over best in class (paper)"
    ax.set(xlabel="Δα = alpha_S - alpha_T", ylabel="DER_N (direct / distilled)", title=f"N = {max(config.Ns)}; {conv}")
    ax.title.set_fontsize(8)
    ax.legend(fontsize=7)
    ax = axes[0, 2]
    log_der = np.log10(der_map)
    lim = np.nanmax(np.abs(log_der))
    im = ax.imshow(
        log_der,
        origin="lower",
        aspect="auto",
        cmap="RdBu_r",
        vmin=-lim,
        vmax=lim,
        extent=[axis[0], axis[-1], axis[0], axis[-1]],
    )
    ax.grid(False)
    ax.set(
        xlabel="alpha_S (student decay)",
        ylabel="alpha_T (teacher decay)",
        title=f"exact DER, N = {max(config.Ns)} (red: KD helps)",
    )
    fig.colorbar(im, ax=ax, label="log10 DER (paper's convention)")
    return plotting.to_png(fig)
