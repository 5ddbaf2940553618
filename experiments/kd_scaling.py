"""Distillation scaling: how student error and transfer scale with student size, under KD, Base and RCD.

One fixed teacher (trained once, seed 0) and students over a grid of shapes:
a ``width`` series (one hidden layer of each width) and a ``depth`` series
(1, 2, 3, ... layers at one width). Each distinct shape is ONE compiled
program whose grid points are the conditions, with the same initialisation
and data-order keys across conditions (seed s of every condition is paired):

- ``base``: CE only;
- ``kd``: (1 − α)·CE + α·T²·KL(softmax(t/T) ‖ softmax(s/T));
- ``rcd``: the same loss with the teacher's logits replaced by N(0, 1) noise
  fixed per training example (``jaxkd.terms.rcd``), at the same α and T.

Per student (test set, validation-selected model): ``error`` (1 − accuracy), ``disagreement``
with the teacher (1 − top-1 agreement) and ``js`` (Jensen-Shannon divergence
to the teacher's softmax). For each series, condition and metric the seed means
are fitted by a power law in the parameter count, ``metric ≈ c · P^b``
(least squares in log-log), with a 95% bootstrap CI on ``b`` that resamples
seeds as blocks (seed s is one unit across the shapes of a series: the same
data order at every shape; ``jaxkd.stats.power_law_exponents``, paired across
conditions); the exponents of KD vs Base, KD vs RCD and RCD vs Base are
compared by a two-sided bootstrap test, Holm-corrected within (series, metric).

Command::

    jaxkd run kd_scaling --preset default --out results/kd_scaling/default

Presets: ``smoke`` (seconds); ``default`` (digits, MLP teacher 256-256, MLP
students of widths 4..128 and depths 1..4 at width 16, 10 seeds, offline on a
2-core CPU; runtime below); ``paper`` (CIFAR-10, a ResNet-18 teacher, CIFAR
ResNets resnet8/14/20/32/56 as the depth series and WRN-16-1/2 as the width
series (two points: the zoo has no wider WRN-16), the functional_kd SGD recipe; for an accelerator, not run here).

Output: config.json; records.csv (one row per series × shape × condition ×
seed × metric, with the shape's parameter count); summary.json (per shape and
condition mean ± std and 95% CI; per series, condition and metric the fitted
exponent, coefficient, r², bootstrap CI; the exponent comparisons with
bootstrap p, Holm p); figure.png (log-log metric vs parameters with 95% CIs
and the fitted lines, one panel per series × metric); env.json.

Measured (default preset): see README.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from experiments import functional_kd
from jaxkd import outputs, plotting, stats
from jaxkd.config import DataConfig, EvalConfig, ModelConfig, ObjectiveConfig, RunConfig
from jaxkd.data import load_dataset
from jaxkd.errors import check, check_name
from jaxkd.experiment import check_seeds_fit, label_tests, scope, train_teacher
from jaxkd.metrics import functional_metrics_over_seeds
from jaxkd.models import make_model
from jaxkd.outputs import write_outputs
from jaxkd.recipes import RecipeConfig
from jaxkd.sweep import run_sweep
from jaxkd.train import make_train

CONDITIONS = ("base", "kd", "rcd")
METRICS = ("error", "disagreement", "js")


@dataclasses.dataclass(frozen=True)
class Series:
    """A named family of student shapes (e.g. growing width), each a model config."""

    name: str
    models: tuple[ModelConfig, ...]


@dataclasses.dataclass(frozen=True)
class Config:
    n_seeds: int = 10
    seed: int = 0
    data: DataConfig = DataConfig("digits", val_fraction=0.1)
    teacher: ModelConfig = ModelConfig("mlp", (256, 256))
    teacher_recipe: RecipeConfig = RecipeConfig(learning_rate=3e-3, batch_size=64, steps=600)
    series: tuple[Series, ...] = ()
    recipe: RecipeConfig = RecipeConfig(learning_rate=3e-3, batch_size=64, steps=400)
    conditions: tuple[str, ...] = CONDITIONS
    alpha: float = 0.9
    temperature: float = 4.0
    rcd_scale: float = 1.0
    # "a:b" compares exponent_a - exponent_b; None = kd:base, kd:rcd, rcd:base (those present).
    comparisons: tuple[str, ...] | None = None
    n_resamples: int = 2000
    eval: EvalConfig = EvalConfig(every=None)

    def __post_init__(self):
        check(
            isinstance(self.n_seeds, int) and self.n_seeds >= 2,
            f"n_seeds must be an integer >= 2 (bootstrap over seeds), got {self.n_seeds}",
        )
        check(len(self.series) > 0, "no series: give at least one series of student shapes")
        check(len({s.name for s in self.series}) == len(self.series), "series repeat a name")
        for s in self.series:
            check(len({m for m in s.models}) >= 2, f"series {s.name!r} needs at least two distinct shapes to fit")
        for c in self.conditions:
            check_name("condition", c, CONDITIONS)
        check(len(set(self.conditions)) == len(self.conditions), f"conditions repeat a name: {self.conditions}")
        check(len(self.conditions) >= 1, "no conditions")
        check(0.0 <= self.alpha <= 1.0, f"alpha must lie in [0, 1], got {self.alpha}")
        check(self.temperature > 0, f"temperature must be positive, got {self.temperature}")
        check(self.n_resamples >= 100, f"n_resamples must be >= 100, got {self.n_resamples}")
        family = self.family()
        check(len(family) > 0, "empty family of comparisons: keep at least two conditions or list comparisons as 'a:b'")
        for a, b in family:
            check(
                a in self.conditions and b in self.conditions and a != b,
                f"comparison {a}:{b} must name two different conditions of {self.conditions}",
            )
        RunConfig(model=self.teacher, recipe=self.teacher_recipe, data=self.data, eval=self.eval)
        for m in self.shapes():
            self.student_config(m)

    def family(self) -> list[tuple[str, str]]:
        if self.comparisons is not None:
            out = []
            for c in self.comparisons:
                parts = [p.strip() for p in c.split(":")]
                check(len(parts) == 2 and all(parts), f"comparison {c!r} must read 'a:b', e.g. 'kd:base'")
                out.append((parts[0], parts[1]))
            return out
        default = [("kd", "base"), ("kd", "rcd"), ("rcd", "base")]
        return [(a, b) for a, b in default if a in self.conditions and b in self.conditions]

    def shapes(self) -> list[ModelConfig]:
        """The distinct student shapes over all series, in first-seen order (one program each)."""
        out = []
        for s in self.series:
            out += [m for m in s.models if m not in out]
        return out

    def objective(self) -> ObjectiveConfig:
        terms = {"ce": {"weight": 1.0}, "kd": {"weight": 0.0, "temperature": self.temperature}}
        if "rcd" in self.conditions:
            terms["rcd"] = {
                "kind": "rcd",
                "weight": 0.0,
                "temperature": self.temperature,
                "per_example": True,
                "scale": self.rcd_scale,
            }
        return ObjectiveConfig(terms)

    def grid(self) -> dict[str, list[float]]:
        terms = self.objective().terms
        points = []
        for c in self.conditions:
            p = {f"{t}.weight": 0.0 for t in terms} | {"ce.weight": 1.0}
            if c != "base":
                p |= {"ce.weight": 1.0 - self.alpha, f"{c}.weight": self.alpha}
            points.append(p)
        return {k: [p[k] for p in points] for k in points[0]}

    def student_config(self, model: ModelConfig) -> RunConfig:
        return RunConfig(model=model, objective=self.objective(), recipe=self.recipe, data=self.data, eval=self.eval)


def _mlp_series(widths, depths, depth_width):
    return (
        Series("width", tuple(ModelConfig("mlp", (w,)) for w in widths)),
        Series("depth", tuple(ModelConfig("mlp", (depth_width,) * d) for d in depths)),
    )


# CIFAR-10 with functional_kd's `paper` recipe (SGD 1e-2, momentum 0.9, wd 5e-4, batch 128, 100 epochs).
_CIFAR, _SGD = functional_kd._CIFAR, functional_kd._SGD
PRESETS = {
    "smoke": Config(
        n_seeds=2,
        series=_mlp_series((4, 8), (1, 2), 4),
        teacher=ModelConfig("mlp", (32,)),
        teacher_recipe=RecipeConfig(steps=20),
        recipe=RecipeConfig(steps=20),
        n_resamples=200,
    ),
    "default": Config(series=_mlp_series((4, 8, 16, 32, 64, 128), (1, 2, 3, 4), 16)),
    "paper": Config(
        data=_CIFAR,
        teacher=ModelConfig("resnet18"),
        teacher_recipe=_SGD,
        recipe=_SGD,
        series=(
            Series("depth", tuple(ModelConfig(f"resnet{d}") for d in (8, 14, 20, 32, 56))),
            Series("width", tuple(ModelConfig(f"wrn_16_{k}") for k in (1, 2))),
        ),
    ),
}


def runlocal(config: Config) -> Config:
    """Any preset shrunk to a CPU smoke run: digits, tiny MLPs (one width and one depth step), 4 steps, 2 seeds."""
    return dataclasses.replace(
        config,
        n_seeds=2,
        data=DataConfig("digits", val_fraction=0.1),
        teacher=ModelConfig("mlp", (8,)),
        teacher_recipe=RecipeConfig(batch_size=32, steps=4),
        recipe=RecipeConfig(batch_size=32, steps=4),
        series=_mlp_series((4, 8), (1, 2), 4),
        n_resamples=200,
        eval=EvalConfig(every=2),
    )


def _student_metrics(result, trainer, teacher_logits, labels) -> dict:
    """``{condition index: {metric: [S]}}`` of each run's validation-selected model (NaN where a run diverged)."""
    fn = lambda p, r: trainer.predict_split({"model": p}, r, trainer.data, "test")  # noqa: E731
    logits = jax.jit(jax.vmap(jax.vmap(fn)))(*result.model("selected"))  # [S, G, N, C]
    out = []
    for g in range(logits.shape[1]):
        m = jax.jit(functional_metrics_over_seeds)(logits[:, g], teacher_logits, labels)
        vals = {
            "error": 1.0 - np.asarray(m["all/acc"], np.float64),
            "disagreement": 1.0 - np.asarray(m["all/agreement"], np.float64),
            "js": np.asarray(m["all/js"], np.float64),
        }
        out.append({k: np.where(result.diverged[:, g], np.nan, v) for k, v in vals.items()})
    return out


def run(config: Config, out_dir: str, *, resume: bool = False, overwrite: bool = False, progress: bool = True) -> dict:
    """The teacher, one student program per shape, the fits and tests; writes ``out_dir``."""
    outputs.check_writable(out_dir)
    dataset = load_dataset(config.data.dataset)
    k_teacher, k_student = jax.random.split(jax.random.key(config.seed))
    t_config = RunConfig(model=config.teacher, recipe=config.teacher_recipe, data=config.data, eval=config.eval)
    for model in config.shapes():  # before any training
        check_seeds_fit(config.student_config(model), dataset, config.n_seeds, len(config.conditions))
    teacher, _ = train_teacher(t_config, dataset, k_teacher, overwrite=overwrite, progress=progress)
    per_shape, n_params = [], []
    teacher_acc = None
    for model in config.shapes():
        trainer = make_train(config.student_config(model), dataset, teacher)
        t_logits = trainer.teacher_inputs["logits"]["test"]  # [N, C], one teacher for every seed
        labels = trainer.data["y_test"]
        teacher_acc = float(jnp.mean(jnp.argmax(t_logits, -1) == labels))
        # The same student key for every shape: seed s draws the same data order in every program.
        result = run_sweep(
            trainer,
            k_student,
            config.n_seeds,
            config.grid(),
            progress=progress,
            desc=f"{model.name}{list(model.widths or ())}",
        )
        per_shape.append(_student_metrics(result, trainer, t_logits, labels))
        n_params.append(make_model(model.name, dataset.in_shape, dataset.num_classes, model.widths).num_params())
    shape_index = {m: i for i, m in enumerate(config.shapes())}
    teacher_params = make_model(
        config.teacher.name, dataset.in_shape, dataset.num_classes, config.teacher.widths
    ).num_params()
    rows, fits, shapes_summary = [], {}, {}
    for s in config.series:
        idx = [shape_index[m] for m in s.models]
        sizes = np.array([n_params[i] for i in idx], np.float64)
        fits[s.name] = {}
        for metric in METRICS:
            per_seed = {
                c: np.stack([per_shape[i][g][metric] for i in idx]) for g, c in enumerate(config.conditions)
            }  # [P, S]
            fits[s.name][metric] = stats.power_law_exponents(
                sizes, per_seed, comparisons=config.family(), n_resamples=config.n_resamples, seed=config.seed
            )
        for m, i in zip(s.models, idx):
            label = f"{m.name}{list(m.widths or ())}"
            shapes_summary.setdefault(s.name, {})[label] = {
                "params": n_params[i],
                "conditions": {
                    c: {k: stats.summarize(v) for k, v in per_shape[i][g].items()}
                    for g, c in enumerate(config.conditions)
                },
            }
            for g, c in enumerate(config.conditions):
                for metric, values in per_shape[i][g].items():
                    for seed, v in enumerate(values):
                        rows.append(
                            {
                                "series": s.name,
                                "model": m.name,
                                "widths": "-".join(map(str, m.widths or ())),
                                "params": n_params[i],
                                "condition": c,
                                "seed": seed,
                                "metric": metric,
                                "value": float(v),
                                "diverged": bool(np.isnan(v)),
                            }
                        )
    # The exponents again as condition tables with tests, the layout `jaxkd report` reads.
    exponents = {
        name: {
            "conditions": {
                c: {
                    f"{m}/exponent": {
                        "mean": f[m]["fits"][c]["exponent"],
                        "std": f[m]["fits"][c]["boot_std"],
                        "ci_low": f[m]["fits"][c]["ci_low"],
                        "ci_high": f[m]["fits"][c]["ci_high"],
                        "n": config.n_seeds,
                    }
                    for m in METRICS
                }
                for c in config.conditions
            },
            "tests": {
                f"{m}/exponent": label_tests(
                    {
                        k: {**v, "test": "paired seed bootstrap of the exponent difference", "n": config.n_seeds}
                        for k, v in f[m]["comparisons"].items()
                    },
                    f"{m}/exponent",
                )
                for m in METRICS
            },
            "legend": {
                c: f"{c}: mean = the fitted exponent b of metric ≈ coef·params^b over the {name} series; "
                "± = its bootstrap standard error; CI = 95% percentile bootstrap, seeds resampled as blocks"
                for c in config.conditions
            },
        }
        for name, f in fits.items()
    }
    out = {
        "teacher": {
            "model": config.teacher.name,
            "widths": list(config.teacher.widths or ()),
            "params": teacher_params,
            "test_acc": teacher_acc,
        },
        "shapes": shapes_summary,
        "fits": fits,
        "exponents": exponents,
        "fit": "metric ≈ coef · params^exponent, least squares on seed means in log-log; 95% CI: seeds "
        "resampled as blocks shared by every shape and condition",
        "family": {
            "comparisons": [f"{a} - {b}" for a, b in config.family()],
            "correction": "Holm within each (series, metric)",
        },
        "when": "validation-selected models, test set; disagreement and js against the teacher",
        "scope": scope(True),
        "compiled_programs": 1 + len(config.shapes()),
    }
    write_outputs(out_dir, config=config, rows=rows, summary=out, figures={"figure.png": _figure(config, out)})
    return out


def _figure(config: Config, summary: dict) -> bytes:
    from matplotlib.ticker import NullFormatter

    series = list(summary["fits"])
    fig, axes = plotting.figure(ncols=len(METRICS), nrows=len(series), width=3.4, height=3.0)
    for i, name in enumerate(series):
        shapes = summary["shapes"][name]
        x = np.array([v["params"] for v in shapes.values()], float)
        for j, metric in enumerate(METRICS):
            ax = axes[i, j]
            for k, c in enumerate(config.conditions):
                s = [v["conditions"][c][metric] for v in shapes.values()]
                mean = np.array([q["mean"] for q in s])
                lo = np.clip(mean - np.array([q["ci_low"] for q in s]), 0, None)
                hi = np.clip(np.array([q["ci_high"] for q in s]) - mean, 0, None)
                # A CI reaching below 0 cannot be drawn on a log axis: clip the lower bar at 1% of the mean.
                lo = np.minimum(np.nan_to_num(lo), 0.99 * mean)
                shift = 1.0 + 0.04 * (k - 1)  # side by side, so the bars do not hide each other
                ax.errorbar(
                    x * shift, mean, yerr=[lo, np.nan_to_num(hi)], fmt="o", ms=4, capsize=3, color=f"C{k}", label=None
                )
                f = summary["fits"][name][metric]["fits"][c]
                if np.isfinite(f["exponent"]):
                    xs = np.geomspace(x.min(), x.max(), 20)
                    ax.plot(
                        xs,
                        f["coef"] * xs ** f["exponent"],
                        color=f"C{k}",
                        lw=1,
                        label=f"{c}: b={f['exponent']:.2f} [{f['ci_low']:.2f}, {f['ci_high']:.2f}]",
                    )
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # label the shapes themselves, not log-axis minor ticks
            ax.set_xticks(x, [f"{int(v):,}" for v in x], rotation=30, fontsize=7)
            ax.set_xlabel(f"student parameters ({name} series)")
            ax.set_ylabel(metric)
            ax.legend(fontsize=6)
    fig.suptitle(
        f"distillation scaling: mean and 95% CI over {config.n_seeds} seeds; lines: fitted power laws "
        "(b with 95% bootstrap CI)",
        fontsize=9,
    )
    return plotting.to_png(fig)
