"""What do KD students learn? The interaction tensor over teachers, baselines and KD students (Kang & Kim §3).

Three groups of ``n_seeds`` models each, every group ONE vmapped program
(:func:`jaxkd.sweep.run_sweep`): teachers; baselines (CE only, their own
keys); KD students, student s distilled from teacher s (the reference's
"20 teachers" pairing) with ``L = alpha·T²·KL(p_T ‖ p_S) + (1 − alpha)·CE``,
T = 2, alpha = 0.85 (arXiv 2606.03052, §3.3 of docs/papers.md). The validation-selected
models' activations at the named layer (flattened) on the whole test set
go into one interaction tensor Ω [M, N, T] (:func:`jaxkd.interaction.
interaction_tensor`: per-model PCA to ``k``, correlations, greedy clustering
at the ``corr_percentile`` of |Λ|, binarisation at ``data_quantile``).

Statistics per group: unique features used, occurrences per used feature,
features per sample (percentile-bootstrap CIs over the group's models), the
sorted frequency curve and the per-sample feature counts; features common to
the three groups; mean confidence vs feature count (Spearman). The paper's
claim "KD students use fewer unique features, each reused more often, than
baselines" is a one-sided permutation test (group labels permuted across the
2·n_seeds student models; ``p_both`` is the intersection-union test of both
parts), reported whichever way it falls. Confusion as dark knowledge (§4.1):
teacher 0's class-average softmax S̄ on the test set against each baseline
seed's off-diagonal confusion ratios (Pearson, Spearman, mean cosine, mean
soft-IoU; t-CIs over baseline seeds); also against the teachers' mean S̄.

Command::

    jaxkd run interaction_tensor --preset default --out results/interaction_tensor/default

Presets:

- ``smoke``: seconds; 2 models per group, a few steps.
- ``default``: offline, digits (8x8, 10 classes; N = 359 test images):
  16 cnn2d(32, 64) teachers, 16 cnn2d(16, 32) baselines, 16 KD students,
  400 Adam steps each, layer ``block1`` flattened (4x4x32 = 512 for the
  students, as the reference's flattened conv5_x), K = 50. Measured
  2026-11-24: 76 s on an idle 2-core CPU (5 min 13 s beside other jobs).
  Results in docs/wdsl.md, regenerated from this preset's summary.json by
  ``make numbers``. Digits is small: its confusion matrices have few
  off-diagonal counts, so the §4.1 correlations are weak here.
- ``paper``: CIFAR-100 (``jaxkd data prepare cifar100`` first), 20 ResNet-152
  teachers → 20 ResNet-18 KD students vs 20 ResNet-18 baselines, the WDSL
  recipe (``recipes.RECIPES["wdsl_cifar"]``: SGD 0.1, momentum 0.9, wd 5e-4,
  batch 128, 1 warm-up epoch, x0.2 at 60/120/160 of 200 epochs; crop 4, flip,
  rotation 15), layer ``stage4`` (conv5_x) flattened; for an accelerator.
  Config only: exercised here through ``runlocal``.

Output: config.json, records.csv (training curves: one row per group, seed,
metric and evaluation), interaction.csv (tidy: group × statistic with CI),
summary.json, omega.npz (Ω, cluster assignment, group of each model),
figure.png (sorted frequency curves; per-sample feature counts), env.json.
"""

from __future__ import annotations

import dataclasses
import io

import jax
import numpy as np

from jaxkd import interaction, plotting, results, stats
from jaxkd.config import DataConfig, EvalConfig, ModelConfig, ObjectiveConfig, RunConfig
from jaxkd.data import load_dataset
from jaxkd.ensemble import from_sweep
from jaxkd.errors import check
from jaxkd.experiment import check_seeds_fit
from jaxkd.models import make_model
from jaxkd.outputs import write_outputs
from jaxkd.recipes import RecipeConfig, recipe
from jaxkd.sweep import run_sweep
from jaxkd.teacher import Teacher, normalisation
from jaxkd.train import check_objective, make_train

GROUPS = ("teacher", "baseline", "kd")
_WDSL = recipe("wdsl_cifar")

FINGERPRINT = {"experiment": "interaction_tensor"}  # in every checkpoint: resuming another experiment is refused


@dataclasses.dataclass(frozen=True)
class Config:
    n_seeds: int = 16  # models per group; KD student s distils from teacher s
    seed: int = 0
    data: DataConfig = DataConfig("digits")
    teacher_model: ModelConfig = ModelConfig("cnn2d", (32, 64))
    teacher_recipe: RecipeConfig = RecipeConfig(learning_rate=5e-3, steps=400)
    model: ModelConfig = ModelConfig("cnn2d", (16, 32))
    recipe: RecipeConfig = RecipeConfig(learning_rate=5e-3, steps=400)
    temperature: float = 2.0
    alpha: float = 0.85  # KD weight; CE gets 1 - alpha
    layer: str = "block1"  # student feature (flattened) that feeds the tensor
    teacher_layer: str | None = None  # None: the same name as ``layer``
    k: int = 50
    corr_percentile: float = 99.0
    data_quantile: float = 0.9
    center: bool = True
    int32_quirk: bool = False
    n_bootstrap: int = 1000
    n_permutations: int = 1000
    eval: EvalConfig = EvalConfig(every=100)
    chunk_steps: int | None = None

    def __post_init__(self):
        check(
            self.n_seeds >= 2, f"n_seeds (models per group) must be at least 2 for group statistics, got {self.n_seeds}"
        )
        check(self.temperature > 0, f"temperature must be positive, got {self.temperature}")
        check(0 < self.alpha < 1, f"alpha must lie in (0, 1), got {self.alpha}")
        check(self.k >= 1, f"k must be >= 1, got {self.k}")
        check(0 <= self.corr_percentile <= 100, f"corr_percentile must lie in [0, 100], got {self.corr_percentile}")
        check(0 <= self.data_quantile <= 1, f"data_quantile must lie in [0, 1], got {self.data_quantile}")
        check(self.n_bootstrap >= 1 and self.n_permutations >= 1, "n_bootstrap and n_permutations must be >= 1")
        check(self.chunk_steps is None or self.chunk_steps > 0, f"chunk_steps must be positive, got {self.chunk_steps}")
        self.run_configs()

    def run_configs(self) -> dict[str, RunConfig]:
        """The teachers', baselines' and KD students' RunConfig."""
        kd = ObjectiveConfig(
            {"ce": {"weight": 1.0 - self.alpha}, "kd": {"weight": self.alpha, "temperature": self.temperature}}
        )
        return {
            "teacher": RunConfig(model=self.teacher_model, recipe=self.teacher_recipe, data=self.data, eval=self.eval),
            "baseline": RunConfig(model=self.model, recipe=self.recipe, data=self.data, eval=self.eval),
            "kd": RunConfig(model=self.model, objective=kd, recipe=self.recipe, data=self.data, eval=self.eval),
        }

    def layers(self) -> dict[str, str]:
        t = self.teacher_layer or self.layer
        return {"teacher": t, "baseline": self.layer, "kd": self.layer}


PRESETS = {
    "smoke": Config(
        n_seeds=2,
        teacher_model=ModelConfig("cnn2d", (8, 16)),
        teacher_recipe=RecipeConfig(steps=40),
        model=ModelConfig("cnn2d", (4, 8)),
        recipe=RecipeConfig(steps=40),
        eval=EvalConfig(every=20),
        k=10,
        n_bootstrap=100,
        n_permutations=100,
    ),
    "default": Config(),
    "paper": Config(
        n_seeds=20,
        data=DataConfig("tfds:cifar100", crop_padding=4, flip=True, rotation=15.0),
        teacher_model=ModelConfig("resnet152"),
        teacher_recipe=_WDSL,
        model=ModelConfig("resnet18"),
        recipe=_WDSL,
        layer="stage4",
        eval=EvalConfig(every=None),
        chunk_steps=None,
    ),
}


def _check_layers(config: Config, dataset, n_test: int) -> None:
    """Layer names exist and k fits every model's flattened layer; one ConfigError, no FLOPs."""
    cfgs, layers = config.run_configs(), config.layers()
    specs = {}
    for group in ("teacher", "baseline"):
        m = cfgs[group].model
        model = make_model(m.name, dataset.in_shape, dataset.num_classes, m.widths, m.dtype)
        specs[group] = model
        x = jax.ShapeDtypeStruct((1, *dataset.in_shape), np.float32)
        feats = jax.eval_shape(
            lambda k, x, model=model: model.apply(*model.init(k), x, train=False)[1], jax.random.key(0), x
        )
        name = layers[group]
        who = "teacher" if group == "teacher" else "student"
        check(name in feats, f"the {who} model {m.name} has no layer {name!r}; it has: {', '.join(sorted(feats))}")
        d = int(np.prod(feats[name].shape[1:]))
        check(
            config.k <= min(d, n_test),
            f"k = {config.k} exceeds min(D, N) = {min(d, n_test)} for the {who}'s "
            f"layer {name!r} (D = {d}, N = {n_test} test samples); lower k",
        )
    check_objective(cfgs["kd"], specs["baseline"], specs["teacher"])


def run(config: Config, out_dir: str, *, resume: bool = False, overwrite: bool = False, progress: bool = True) -> dict:
    """Train the three groups, build Ω over all their models, test the claim; write results to ``out_dir``."""
    dataset = load_dataset(config.data.dataset)
    _check_layers(config, dataset, int(dataset.y_test.shape[0]))
    cfgs, layers, n = config.run_configs(), config.layers(), config.n_seeds
    keys = dict(zip(GROUPS, jax.random.split(jax.random.key(config.seed), 3)))
    ckpt = (lambda name: f"{out_dir}/checkpoints/{name}") if config.chunk_steps else (lambda name: None)
    sweep_kw = dict(chunk_steps=config.chunk_steps, resume=resume, overwrite=overwrite, progress=progress)
    for group in GROUPS:  # before any training
        check_seeds_fit(cfgs[group], dataset, n)

    trainers, sweeps = {}, {}
    trainers["teacher"] = make_train(cfgs["teacher"], dataset)
    sweeps["teacher"] = run_sweep(
        trainers["teacher"],
        keys["teacher"],
        n,
        checkpoint_dir=ckpt("teacher"),
        fingerprint=FINGERPRINT,
        desc="teachers",
        **sweep_kw,
    )
    check(
        not sweeps["teacher"].diverged.any(),
        f"teacher seeds {np.flatnonzero(sweeps['teacher'].diverged[:, 0]).tolist()} diverged; lower the "
        "teacher's learning rate",
    )
    t_params, t_rest = sweeps["teacher"].model("selected")
    teacher = Teacher(
        trainers["teacher"].model,
        jax.tree.map(lambda a: a[:, 0], t_params),
        jax.tree.map(lambda a: a[:, 0], t_rest),
        per_seed=True,
        **dict(zip(("mean", "std"), normalisation(dataset.mean, dataset.std))),
        normalisation_known=True,
    )
    trainers["baseline"] = make_train(cfgs["baseline"], dataset)
    trainers["kd"] = make_train(cfgs["kd"], dataset, teacher)
    for group in ("baseline", "kd"):
        sweeps[group] = run_sweep(
            trainers[group], keys[group], n, checkpoint_dir=ckpt(group), fingerprint=FINGERPRINT, desc=group, **sweep_kw
        )

    # Validation-selected models of each group -> test-set logits and activations at the layer (flattened), read as
    # ensembles through `predict` exactly as saved ensembles would be (interaction.ensemble_activations).
    x_test, y_test = dataset.x_test, np.asarray(dataset.y_test)
    ensembles = {}
    for group in GROUPS:
        ensembles[group] = from_sweep(sweeps[group], trainers[group], [group])
        check(
            len(ensembles[group]) >= 2,
            f"only {len(ensembles[group])} {group} model(s) finished without diverging; every group needs "
            "at least 2 (lower the learning rate)",
        )
    got = interaction.ensemble_activations(ensembles, x_test, layers, batch_size=config.eval.batch_size)
    acts, group_of = got["activations"], list(got["group"])
    seeds = {g: [m["seed"] for m in ensembles[g].members] for g in GROUPS}
    probs_all = np.asarray(jax.nn.softmax(got["logits"], axis=-1), np.float64)  # [M, N, C], members in group order
    preds = [probs_all[got["group"] == g].argmax(-1) for g in GROUPS]
    it = interaction.interaction_tensor(
        acts,
        k=config.k,
        corr_percentile=config.corr_percentile,
        data_quantile=config.data_quantile,
        center=config.center,
        int32_quirk=config.int32_quirk,
        seed=config.seed,
    )
    del acts
    omega = it.omega
    group_of = np.asarray(group_of)
    idx = {g: np.flatnonzero(group_of == g) for g in GROUPS}

    summary, rows = _analyse(config, it, idx, probs_all, preds, y_test, sweeps, dataset.num_classes)
    summary["tensor"].update({"layers": layers, "members": {g: seeds[g] for g in GROUPS}})
    train_rows = []
    for group in GROUPS:
        train_rows += results.records_from_sweep(sweeps[group], [group])
    figure = _figure(omega, idx, summary, config, dataset)
    buf = io.BytesIO()
    np.savez_compressed(buf, omega=omega, assign=it.assign, group=group_of.astype("U8"))
    write_outputs(
        out_dir,
        config=config,
        rows=train_rows,
        summary=summary,
        figures={"figure.png": figure},
        extra={"interaction.csv": results.records_csv(rows), "omega.npz": buf.getvalue()},
    )
    return summary


def _binned(count, confidence, n_bins: int = 10) -> list[dict]:
    """Mean confidence per count decile (ties keep a decile's edges together): the figure's curve."""
    edges = np.unique(np.quantile(count, np.linspace(0, 1, n_bins + 1)))
    if edges.size < 2:
        return [{"count": float(count.mean()), "confidence": float(confidence.mean()), "n": int(count.size)}]
    b = np.clip(np.searchsorted(edges, count, side="right") - 1, 0, edges.size - 2)
    return [
        {"count": float(count[b == i].mean()), "confidence": float(confidence[b == i].mean()), "n": int((b == i).sum())}
        for i in range(edges.size - 1)
        if (b == i).any()
    ]


def _analyse(config, it, idx, probs, preds, y_test, sweeps, num_classes):
    """summary.json's content and the tidy rows of interaction.csv."""
    omega = it.omega
    m, n, t = omega.shape
    groups = {}
    rows = []
    for g in GROUPS:
        boot = interaction.bootstrap_group_stats(omega, idx[g], n_resamples=config.n_bootstrap, seed=config.seed)
        counts = interaction.sample_feature_count(omega, idx[g])
        true_p = probs[idx[g][:, None], np.arange(n)[None, :], y_test[None, :]]
        conf = interaction.confidence_vs_count(omega, idx[g], true_p)
        acc = preds[GROUPS.index(g)] == y_test[None, :]
        groups[g] = {
            "n_models": int(len(idx[g])),
            "stats": interaction.group_summary(omega, idx[g]),
            "bootstrap": boot,
            "per_sample_count": {
                "mean": float(counts.mean()),
                "median": float(np.median(counts)),
                "max": int(counts.max()),
            },
            "confidence_vs_count": {
                **{k: conf[k] for k in ("spearman", "spearman_p", "pearson", "pearson_p")},
                "binned": _binned(conf["count"], conf["confidence"]),
            },
            "selected_test_acc": stats.summarize(acc.mean(axis=1)),
            "training": results.summarize_sweep(sweeps[g], [g])[g].get("test/acc"),
        }
        for stat, ci in boot.items():
            rows.append(
                {
                    "group": g,
                    "condition": g,
                    "seed": "",
                    "step": "",
                    "metric": f"it/{stat}",
                    "value": ci["value"],
                    "ci_low": ci["ci_low"],
                    "ci_high": ci["ci_high"],
                    "diverged": False,
                }
            )
        rows.append(
            {
                "group": g,
                "condition": g,
                "seed": "",
                "step": "",
                "metric": "it/spearman_conf_count",
                "value": conf["spearman"],
                "diverged": False,
            }
        )
    claim = interaction.permutation_test(
        omega, idx["kd"], idx["baseline"], n_permutations=config.n_permutations, seed=config.seed
    )
    claim["claim"] = "KD students use fewer unique features, each reused more often, than baselines"
    claim["holds_at_0.05"] = bool(claim["p_both"] < 0.05)
    claim["direction_agrees"] = bool(claim["delta_unique"] < 0 and claim["delta_occurrences"] > 0)
    ids, freq = interaction.common_features(omega, {g: idx[g] for g in GROUPS})
    common = {"n": int(ids.size), "mean_frequency": {g: float(f.mean()) if f.size else None for g, f in freq.items()}}

    base_preds = preds[GROUPS.index("baseline")]
    t_probs = probs[idx["teacher"]]
    s_bar = {
        "teacher0": interaction.class_average_probs(t_probs[0], y_test, num_classes),
        "teacher_mean": np.mean([interaction.class_average_probs(p, y_test, num_classes) for p in t_probs], 0),
    }
    confusion = {}
    for name, s in s_bar.items():
        res = interaction.confusion_similarity_over_seeds(s, list(base_preds), y_test)
        confusion[name] = res
        for metric, v in res.items():
            rows.append(
                {
                    "group": "baseline",
                    "condition": f"confusion_vs_{name}",
                    "seed": "",
                    "step": "",
                    "metric": f"confusion/{metric}",
                    "value": v["mean"],
                    "ci_low": v["ci_low"],
                    "ci_high": v["ci_high"],
                    "diverged": False,
                }
            )
    acc_b = groups["baseline"]["selected_test_acc"]
    summary = {
        "tensor": {
            "shape": [int(m), int(n), int(t)],
            "num_features": int(t),
            "gamma": float(it.gamma),
            "timings_s": it.timings,
            "k": config.k,
        },
        "groups": groups,
        "claim_test": claim,
        "common_features": common,
        "confusion_vs_teacher": confusion,
        "accuracy_note": f"validation-selected models' test accuracy: baseline {acc_b['mean']:.3f}, "
        f"kd {groups['kd']['selected_test_acc']['mean']:.3f}, "
        f"teacher {groups['teacher']['selected_test_acc']['mean']:.3f}",
    }
    rows.append(
        {
            "group": "kd-baseline",
            "condition": "claim",
            "seed": "",
            "step": "",
            "metric": "it/delta_unique",
            "value": claim["delta_unique"],
            "p": claim["p_fewer_unique"],
            "diverged": False,
        }
    )
    rows.append(
        {
            "group": "kd-baseline",
            "condition": "claim",
            "seed": "",
            "step": "",
            "metric": "it/delta_occurrences",
            "value": claim["delta_occurrences"],
            "p": claim["p_more_occurrences"],
            "diverged": False,
        }
    )
    return summary, rows


def _figure(omega, idx, summary, config, dataset) -> bytes:
    fig, axes = plotting.figure(ncols=3, width=4.4)
    colors = {"teacher": "tab:gray", "baseline": "tab:blue", "kd": "tab:orange"}
    for g in GROUPS:
        curve = interaction.frequency_curve(omega, idx[g], used_only=True)[::-1]
        s = summary["groups"][g]["stats"]
        axes[0, 0].plot(
            np.arange(1, curve.size + 1),
            curve,
            color=colors[g],
            label=f"{g}: {s['unique_features']} used, {s['occurrences_per_feature']:.0f} occ./feature",
        )
        counts = interaction.sample_feature_count(omega, idx[g])
        axes[0, 1].hist(counts, bins=30, histtype="step", color=colors[g], label=f"{g} (mean {counts.mean():.1f})")
        cvc = summary["groups"][g]["confidence_vs_count"]
        axes[0, 2].plot(
            [b["count"] for b in cvc["binned"]],
            [b["confidence"] for b in cvc["binned"]],
            "o-",
            color=colors[g],
            ms=3,
            label=f"{g}: Spearman {cvc['spearman']:.2f}",
        )
    axes[0, 0].set_xlabel("feature rank (used features, by frequency)")
    axes[0, 0].set_ylabel("frequency (test samples using it)")
    axes[0, 0].legend(fontsize=6)
    axes[0, 1].set_xlabel("features per sample (union over the group)")
    axes[0, 1].set_ylabel("test samples")
    axes[0, 1].legend(fontsize=6)
    axes[0, 2].set_xlabel("features per sample, summed over models (deciles)")
    axes[0, 2].set_ylabel("mean probability of the true class")
    axes[0, 2].legend(fontsize=6)
    c = summary["claim_test"]
    fig.suptitle(
        f"{dataset.name}: {config.n_seeds} per group; Ω {tuple(summary['tensor']['shape'])}; "
        f"KD−baseline Δunique {c['delta_unique']:.0f} (p {c['p_fewer_unique']:.3g}), "
        f"Δocc {c['delta_occurrences']:.0f} (p {c['p_more_occurrences']:.3g})",
        fontsize=7,
    )
    return plotting.to_png(fig)


def runlocal(config: Config) -> Config:
    """Any preset shrunk to a CPU smoke run: digits, tiny cnn2d models, 2 per group, a few steps."""
    layer = "block1"
    return dataclasses.replace(
        config,
        n_seeds=2,
        data=DataConfig("digits"),
        teacher_model=ModelConfig("cnn2d", (4, 8)),
        model=ModelConfig("cnn2d", (4, 4)),
        teacher_recipe=RecipeConfig(steps=4),
        recipe=RecipeConfig(steps=4),
        eval=EvalConfig(every=2),
        layer=layer,
        teacher_layer=None,
        k=min(config.k, 8),
        n_bootstrap=20,
        n_permutations=20,
        chunk_steps=2 if config.chunk_steps else None,
    )
