"""Do distilled students explain their decisions like their teacher? LRP and IG heatmaps of the SubDistill students.

For the students of a finished ``subdistill`` run (every policy, each
(subtask, fraction) read as the saved ensemble at
``students/<subtask>-f<fraction>/``) and their teacher (``teacher/``,
restricted to the subtask's classes as SubDistill's ``SubclassSelection``
does), heatmaps (``jaxkd.attribution``) explain the logit gap of the true
class, ``z_y − max_{c≠y} z_c`` (the target is the label), on the same test
images for every model: up to ``n_images`` test images of the subtask that the
teacher classifies correctly (a seeded choice, ``image_seed``; all of them
when fewer are correct; the summary says how many). Methods: LRP
(``epsilon_gamma_box``, γ = ``gamma``, z^B box from the data normalisation)
and integrated gradients (``ig_steps`` Gauss-Legendre nodes, zero baseline in
normalised input space). Per member and image:

* **agreement with the teacher's heatmap** (same method): Pearson, Spearman and
  top-k overlap (``topk`` of the blocks) after summing relevance to
  ``agreement_size`` x ``agreement_size`` blocks;
* **evidence scores** against the ``procedural`` masks: relevance mass accuracy,
  relevance rank accuracy, pointing game (skipped for datasets without masks:
  CIFAR; the summary says so);
* **pixel flipping** (``patch`` x ``patch`` patches, most relevant first, replaced
  by the data mean): the area under the member's own explained output.

References beside them: the teacher itself (its self-agreement is 1), and two
controls: the teacher's architecture with fresh random weights (the
model-randomisation check) and the Sobel edge map of the image (input only).
A control's agreement and evidence scores are its heatmap's; its flip area is
the trained teacher's output flipped in the control's order.

Statistics: each member's mean over the images; per policy mean ± std and
the Student-t CI over members (seeds); paired t-tests of every policy against
``subdistill_prca_posdef`` on the three agreement metrics (member seed s of
each policy is paired with seed s of SubDistill: the subdistill run gives
them the same initialisation and data order), Holm-corrected over the
policies per metric, Cohen's d_z.

Presets:

- ``smoke``: seconds; the students of ``jaxkd run subdistill --preset smoke``
  (``results/subdistill/smoke``), 8 images, IG with 8 steps.
- ``default``: the students of ``jaxkd run subdistill --preset default --out
  results/subdistill`` (procedural16, subtasks ``square`` and ``plus``, every
  saved fraction, 10 policies x 8 seeds): up to 64 images per subtask, LRP (γ =
  0.25) and IG-50, pooled to 8x8 for agreement, 4x4 flip patches. Offline;
  measured 2026-12-06: 270 s on a 2-core CPU shared with other jobs (two
  fractions). Results and what they show in ``docs/attribution.md`` ("The
  explanations experiment").
- ``paper``: CIFAR-100 superclass subtasks, the students of ``jaxkd run
  subdistill --preset paper`` (``results/subdistill/paper``), 256 images, LRP with
  SubDistill's γ = 1 and IG-50; no evidence masks exist for CIFAR, so the
  evidence scores are skipped; for an accelerator.

Command::

    jaxkd run explanations --preset default --out results/explanations

Output: config.json; records.csv (one row per subtask, fraction, method,
condition, seed and metric: the member's mean over the images; the teacher
and controls once per subtask with an empty fraction; ``images/acc``: the
member's accuracy on the explained images); summary.json (the images chosen;
per subtask, fraction and method: the teacher, the controls, every policy's
summary and the paired tests; per cell and method, the rank correlation of
the students' accuracy with their agreement (``accuracy_vs_agreement``) and
the paired tests repeated on residuals from one line of agreement on accuracy
(``at_equal_accuracy``); a headline of which way the agreement comparisons
fell); figure.png (example heatmaps side by side: image, mask,
teacher, controls, one student per policy, for LRP and IG; and per subtask
and method the members' Spearman agreement with the teacher per policy and
fraction).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments.subdistill import BASELINE
from jaxkd import attribution as at
from jaxkd import plotting, stats
from jaxkd.data import load_dataset
from jaxkd.data.procedural import generate
from jaxkd.ensemble import Ensemble, load_ensemble, predict
from jaxkd.errors import ConfigError, check, check_name
from jaxkd.experiment import label_test
from jaxkd.outputs import write_outputs
from jaxkd.teacher import Teacher

METHODS = ("lrp", "ig")
REFERENCES = ("teacher", "random_teacher", "edge_map")
AGREEMENT = ("agreement/pearson", "agreement/spearman", "agreement/topk")
EVIDENCE = ("evidence/mass_accuracy", "evidence/rank_accuracy", "evidence/pointing_game")
TESTED = AGREEMENT  # the metrics of the paired tests; the headline reads Spearman
# Correlated over a cell's students (every policy and seed) with their accuracy on the explained images.
RELATED = "agreement/spearman"
BOUNDS = {
    "agreement/pearson": (-1.0, 1.0),
    "agreement/spearman": (-1.0, 1.0),
    "agreement/topk": (0.0, 1.0),
    **{m: (0.0, 1.0) for m in EVIDENCE},
    "flip/area": None,
    "images/acc": (0.0, 1.0),
}


@dataclasses.dataclass(frozen=True)
class Config:
    # A finished subdistill run (its --out directory): summary.json, config.json, teacher/, students/.
    subdistill_dir: str = "results/subdistill"
    # Empty: every subtask / fraction the run saved.
    subtasks: tuple[str, ...] = ()
    fractions: tuple[float, ...] = ()
    # At most this many test images per subtask, among those the teacher classifies correctly.
    n_images: int = 64
    image_seed: int = 0
    methods: tuple[str, ...] = METHODS
    composite: str = "epsilon_gamma_box"
    gamma: float = 0.25
    epsilon: float = 1e-6
    ig_steps: int = 50
    ig_method: str = "gausslegendre"
    # Agreement: heatmaps summed to size x size blocks; top-k overlap of this fraction of the blocks.
    agreement_size: int = 8
    topk: float = 0.1
    patch: int = 4  # pixel-flipping patch side
    seed: int = 0  # the randomised teacher's weights

    def __post_init__(self):
        check(self.subdistill_dir, "subdistill_dir must name a finished subdistill run's output directory")
        check(self.methods, "methods must name at least one of: lrp, ig")
        for m in self.methods:
            check_name("explanation method", m, METHODS)
        check(len(set(self.methods)) == len(self.methods), f"methods repeat: {self.methods}")
        check_name("LRP composite", self.composite, at.COMPOSITES)
        check_name("IG method", self.ig_method, at.IG_METHODS)
        check(len(set(self.subtasks)) == len(self.subtasks), f"subtasks repeat: {self.subtasks}")
        check(all(0 < f <= 1 for f in self.fractions), f"fractions must lie in (0, 1]: {self.fractions}")
        check(len(set(self.fractions)) == len(self.fractions), f"fractions repeat: {self.fractions}")
        check(self.n_images >= 2, f"n_images must be at least 2, got {self.n_images}")
        check(math.isfinite(self.gamma) and self.gamma >= 0, f"gamma must be >= 0, got {self.gamma}")
        check(math.isfinite(self.epsilon) and self.epsilon > 0, f"epsilon must be positive, got {self.epsilon}")
        check(self.ig_steps >= 1, f"ig_steps must be at least 1, got {self.ig_steps}")
        check(self.agreement_size >= 2, f"agreement_size must be at least 2 blocks, got {self.agreement_size}")
        check(0 < self.topk < 1, f"topk is a fraction of the blocks in (0, 1), got {self.topk}")
        check(self.patch >= 1, f"patch must be at least 1 pixel, got {self.patch}")

    def explain_kwargs(self, method: str) -> dict:
        """The options of :func:`jaxkd.attribution.explain_ensemble` for ``method``."""
        if method == "lrp":
            return {"composite": self.composite, "gamma": self.gamma, "epsilon": self.epsilon}
        return {"steps": self.ig_steps, "ig_method": self.ig_method}


PRESETS = {
    "smoke": Config(subdistill_dir="results/subdistill/smoke", n_images=8, ig_steps=8),
    "default": Config(),
    "paper": Config(subdistill_dir="results/subdistill/paper", n_images=256, gamma=1.0),
}


# --- the subdistill run -----------------------------------------------------------------------------------------


def _not_finished(config: Config, why: str) -> ConfigError:
    """The one line for a missing or incomplete subdistill run: which command writes it there."""
    path = os.path.abspath(config.subdistill_dir)
    base = os.path.basename(os.path.normpath(config.subdistill_dir))
    preset = base if base in ("smoke", "paper") else "default"  # the presets' own directories
    return ConfigError(
        f"{path} is not a finished subdistill run with saved students ({why}); run `jaxkd run subdistill "
        f"--preset {preset} --out {config.subdistill_dir}` first, or set subdistill_dir to a finished run"
    )


def read_run(config: Config) -> dict:
    """The subdistill run's summary, dataset, teacher (loaded) and the chosen ``{subtask: {fraction: students path}}``.

    A missing or incomplete run is one ConfigError line that says which
    command produces it.
    """
    root = config.subdistill_dir
    try:
        with open(os.path.join(root, "summary.json")) as f:
            summary = json.load(f)
        with open(os.path.join(root, "config.json")) as f:
            run_config = json.load(f)
    except (OSError, ValueError):
        raise _not_finished(config, "no readable summary.json and config.json") from None
    if not all(k in summary for k in ("subtasks", "policies", "baseline")) or "data" not in run_config:
        raise _not_finished(config, "its summary.json is not a subdistill summary")
    teacher = os.path.join(root, "teacher")
    if not os.path.isdir(teacher):  # a run that loaded its teacher by path records where
        teacher = summary.get("teacher", {}).get("path") or teacher
    if not os.path.isfile(os.path.join(teacher, "ensemble.json")):
        raise _not_finished(config, f"no saved teacher at {teacher}")
    teacher_path, teacher = teacher, load_ensemble(teacher)
    recorded = summary.get("teacher", {}).get("hash")  # a teacher the run loaded by path: still the same one?
    check(
        recorded is None or Teacher.from_ensemble(teacher).content_hash() == recorded,
        f"the teacher at {teacher_path} is not the one the subdistill run used (its content hash differs); "
        "rerun subdistill with the teacher it should explain",
    )
    saved = summary["subtasks"]
    for s in config.subtasks:
        check(s in saved, f"the subdistill run at {root} has no subtask {s!r}; it has: {', '.join(saved)}")
    cells = {}
    for name in config.subtasks or tuple(saved):
        fractions = [float(f) for f in saved[name]["fractions"]]
        for f in config.fractions:
            check(
                any(math.isclose(f, g) for g in fractions),
                f"the subdistill run at {root} has no fraction {f:g} of {name}; it has: "
                f"{', '.join(f'{g:g}' for g in fractions)}",
            )
        chosen = [g for g in fractions if not config.fractions or any(math.isclose(f, g) for f in config.fractions)]
        cells[name] = {}
        for g in chosen:
            path = os.path.join(root, "students", f"{name}-f{g:g}")
            if not os.path.isfile(os.path.join(path, "ensemble.json")):
                raise _not_finished(config, f"no saved students at {path}")
            cells[name][g] = path
    return {
        "summary": summary,
        "dataset": run_config["data"]["dataset"],
        "teacher": teacher,
        "teacher_path": os.path.abspath(teacher_path),
        "cells": cells,
        "policies": list(summary["policies"]),
    }


def procedural_masks(dataset) -> np.ndarray | None:
    """The evidence masks ``[N, H, W]`` of ``dataset.x_test`` for ``procedural16/32``; None for other data.

    ``load_procedural`` draws the test split with the second of
    ``SeedSequence(0).generate_state(2)`` and :func:`generate`'s default
    nuisances; the split is drawn again here and its images checked equal to
    the dataset's, so the masks are those of these very images.
    """
    if not dataset.name.startswith("procedural"):
        return None
    seed_test = int(np.random.SeedSequence(0).generate_state(2)[1])
    split = generate(len(dataset.y_test), resolution=dataset.in_shape[0], seed=seed_test)
    if not (np.array_equal(split.images, dataset.x_test) and np.array_equal(split.labels, dataset.y_test)):
        raise RuntimeError(f"the regenerated {dataset.name} test split differs from the dataset's: masks misaligned")
    return split.masks


def choose_images(teacher: Ensemble, classes, x, y, n: int, seed) -> tuple[np.ndarray, int]:
    """Indices (sorted) of at most ``n`` images the subtask teacher classifies correctly, and how many it does."""
    logits = np.asarray(predict(teacher, x)["logits"][0])[:, np.asarray(classes)]
    correct = np.flatnonzero(logits.argmax(-1) == np.asarray(y))
    check(len(correct) >= 2, f"the teacher classifies only {len(correct)} test images of classes {list(classes)} right")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(correct, min(n, len(correct)), replace=False)), len(correct)


# --- heatmaps and scores ------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("size", "k"))
def _image_scores(h_MxBxHxW, ref_BxHxW, masks_BxHxW, *, size: int, k: float) -> dict:
    """Per member and image ``[M, B]``: agreement with ``ref`` and (with masks) the evidence scores, one program."""
    out = {f"agreement/{n}": v for n, v in at.heatmap_agreement(h_MxBxHxW, ref_BxHxW, size=size, k=k).items()}
    if masks_BxHxW is not None:
        ev = at.evidence_scores(h_MxBxHxW, jnp.broadcast_to(masks_BxHxW, h_MxBxHxW.shape))
        out.update({m: ev[m.split("/")[1]] for m in EVIDENCE})
    return out


def _scores(h_MxBxHxW, ref_BxHxW, masks_BxHxW, area_MxB, config: Config) -> dict[str, np.ndarray]:
    """:func:`_image_scores` and the flip area ``[M, B]``, as float64 arrays."""
    masks = None if masks_BxHxW is None else jnp.asarray(masks_BxHxW, bool)
    out = _image_scores(h_MxBxHxW, ref_BxHxW, masks, size=config.agreement_size, k=config.topk)
    out["flip/area"] = area_MxB
    return {n: np.asarray(v, np.float64) for n, v in out.items()}


def analyse_subtask(
    teacher: Ensemble, random_teacher: Ensemble, cells: dict, classes, x, y, masks, config: Config
) -> dict:
    """Heatmaps and per-image scores of the teacher, the controls and every cell's students on images ``x``.

    Args:
      teacher: the full teacher (one member); it is explained on the logits ``classes``.
      random_teacher: the model-randomisation control (:func:`jaxkd.attribution.randomized_ensemble`).
      cells: ``{fraction: Ensemble}`` of the subtask's students.
      x, y: the images (stored form) and their subtask labels; ``masks``: their evidence masks, or None.

    Returns:
      ``{"references": {source: {method: {metric: [1, B]}}}, "cells": {fraction: {"scores": {method:
      {metric: [M, B]}}, "acc": [M, B]}}, "examples": {method: {source or (fraction, member): [H, W]}}}``;
      the examples are the first image's heatmaps.
    """
    classes = tuple(int(c) for c in classes)
    edges = at.edge_map(jnp.asarray(x, jnp.float32) / (255.0 if np.asarray(x).dtype == np.uint8 else 1.0))
    flip = dict(patch=config.patch)
    refs = {s: {} for s in REFERENCES}
    examples = {}
    out = {"references": refs, "cells": {f: {"scores": {}} for f in cells}, "examples": examples}
    for method in config.methods:
        kw = config.explain_kwargs(method)
        h_t = at.heatmap(at.explain_ensemble(teacher, x, y, method=method, classes=classes, **kw))  # [1, B, H, W]
        h_r = at.heatmap(at.explain_ensemble(random_teacher, x, y, method=method, classes=classes, **kw))
        sources = {"teacher": h_t, "random_teacher": h_r, "edge_map": edges[None]}
        examples[method] = {s: np.asarray(h[0, 0]) for s, h in sources.items()}
        for s, h in sources.items():  # the trained teacher flipped in each source's order
            _, area = at.flip_ensemble(teacher, x, y, h, classes=classes, **flip)
            refs[s][method] = _scores(h, h_t[0], masks, area, config)
        for f, ens in cells.items():
            h = at.heatmap(at.explain_ensemble(ens, x, y, method=method, **kw))  # [M, B, H, W]
            _, area = at.flip_ensemble(ens, x, y, h, **flip)
            out["cells"][f]["scores"][method] = _scores(h, h_t[0], masks, area, config)
            examples[method].update({(f, i): np.asarray(h[i, 0]) for i in range(len(ens))})
    for f, ens in cells.items():
        logits = np.asarray(predict(ens, x)["logits"])
        out["cells"][f]["acc"] = (logits.argmax(-1) == np.asarray(y)[None]).astype(np.float64)
    return out


# --- summaries ------------------------------------------------------------------------------------------------------


def _summary(values_MxB, metric: str) -> tuple[dict, list[float]]:
    """Over members (each its mean over images): ``jaxkd.stats.summarize``, and the per-member means."""
    s = at.summarize_members(values_MxB, bounds=BOUNDS[metric])
    means = s.pop("member_means")
    s.pop("images")
    return s, means


def _by_seed(means, members, policy: str, seeds: list[int]) -> np.ndarray:
    """The policy's per-member values in seed order (NaN for a seed the ensemble lacks: a diverged run)."""
    got = {m["seed"]: v for m, v in zip(members, means) if m["condition"] == policy}
    return np.array([got.get(s, np.nan) for s in seeds], np.float64)


def summarise_cell(scores: dict, acc_MxB, members: list[dict], policies: list[str]) -> tuple[dict, list[dict]]:
    """One (subtask, fraction): ``{"acc", "methods": {method: {"conditions", "comparisons"}}}`` and its rows."""
    seeds = sorted({m["seed"] for m in members})
    rows, block = [], {"images/acc": {}, "methods": {}}

    def member_rows(method, metric, means):
        for m, v in zip(members, means):
            rows.append(
                {"method": method, "condition": m["condition"], "seed": m["seed"], "step": m.get("step", ""),
                 "metric": metric, "value": v, "diverged": False}
            )  # fmt: skip

    for p in policies:
        idx = [i for i, m in enumerate(members) if m["condition"] == p]
        s, _ = _summary(acc_MxB[idx], "images/acc")
        block["images/acc"][p] = s
    acc_means = _summary(acc_MxB, "images/acc")[1]
    member_rows("", "images/acc", acc_means)
    for method, per_metric in scores.items():
        conditions = {p: {} for p in policies}
        per_seed = {}
        relation = adjusted = None
        for metric, v in per_metric.items():
            means = _summary(v, metric)[1]
            member_rows(method, metric, means)
            if metric == RELATED:  # does a student that learnt more explain more like the teacher?
                relation = stats.rank_correlation(acc_means, means)
                adjusted = _at_equal_accuracy(acc_means, means, members, policies, seeds)
            for p in policies:
                idx = [i for i, m in enumerate(members) if m["condition"] == p]
                s, means = _summary(v[idx], metric)
                conditions[p][metric] = s
                per_seed[(p, metric)] = _by_seed(means, [members[i] for i in idx], p, seeds)
        comparisons = {
            metric: _against_baseline({p: per_seed[(p, metric)] for p in policies}, metric) for metric in TESTED
        }
        block["methods"][method] = {
            "conditions": conditions,
            "comparisons": comparisons,
            "accuracy_vs_agreement": relation,
            "at_equal_accuracy": adjusted,
        }
    return block, rows


def _at_equal_accuracy(acc, agreement, members: list[dict], policies: list[str], seeds: list[int]) -> dict:
    """Agreement compared at equal accuracy: every policy against SubDistill-PRCA-posdef on residuals.

    One least-squares line ``agreement = intercept + slope * accuracy``
    through all of the cell's students (every policy and seed; an ANCOVA
    with a common slope); a student's residual is its agreement beyond what
    its accuracy predicts. Residuals of seed s of each policy are paired
    with seed s of the baseline: t-test, Cohen's d_z, Holm over the policies.
    """
    acc, agreement = np.asarray(acc, np.float64), np.asarray(agreement, np.float64)
    keep = np.isfinite(acc) & np.isfinite(agreement)
    if keep.sum() < 3 or np.ptp(acc[keep]) == 0:  # no spread in accuracy: nothing to adjust for
        return {"slope": None, "intercept": None, "comparisons": {}}
    slope, intercept = np.polyfit(acc[keep], agreement[keep], 1)
    residual = agreement - (intercept + slope * acc)
    per_seed = {}
    for p in policies:
        idx = [i for i, m in enumerate(members) if m["condition"] == p]
        per_seed[p] = _by_seed(residual[idx], [members[i] for i in idx], p, seeds)
    tests = _against_baseline(per_seed, f"{RELATED} | accuracy")
    return {"slope": float(slope), "intercept": float(intercept), "comparisons": tests}


def _against_baseline(per_seed: dict[str, np.ndarray], metric: str) -> dict:
    """Seed-paired t-tests of every policy's values against the baseline's, Holm-corrected over the policies."""
    tests = {
        f"{p} - {BASELINE}": label_test(stats.paired_test(v, per_seed[BASELINE]), metric, None, f"{p} - {BASELINE}")
        for p, v in per_seed.items()
        if p != BASELINE
    }
    for t, q in zip(tests.values(), stats.holm([t["p"] for t in tests.values()])):
        t["p_holm"] = float(q)
    return tests


def _tally(tests) -> dict:
    """How a family of "policy - SubDistill" tests fell: SubDistill higher, and significantly higher or lower
    (Holm, 0.05)."""
    sig = [t for t in tests if t["p_holm"] is not None and math.isfinite(t["p_holm"]) and t["p_holm"] < 0.05]
    return {
        "comparisons": len(tests),
        "subdistill_higher": sum(t["diff_mean"] < 0 for t in tests),
        "subdistill_higher_significant": sum(t["diff_mean"] < 0 for t in sig),
        "subdistill_lower_significant": sum(t["diff_mean"] > 0 for t in sig),
    }


def summarise_references(references: dict) -> tuple[dict, list[dict]]:
    """``{source: {method: {metric: stats over images}}}`` (one model each: n = 1) and their rows."""
    out, rows = {}, []
    for source, per_method in references.items():
        for method, per_metric in per_method.items():
            for metric, v in per_metric.items():
                s, (mean,) = _summary(v, metric)
                # One model: the spread that matters is over images (their t-CI, beside the model's mean).
                s["over_images"] = stats.summarize(v[0], bounds=BOUNDS[metric])
                out.setdefault(source, {}).setdefault(method, {})[metric] = s
                rows.append(
                    {"method": method, "condition": source, "seed": 0, "step": "", "metric": metric, "value": mean,
                     "diverged": False}
                )  # fmt: skip
    return out, rows


def headline(summary: dict, methods) -> dict:
    """Per method: how the Spearman agreement comparisons of SubDistill against every other policy fell."""
    out = {}
    metric = "agreement/spearman"
    for method in methods:
        tests, ranks, related, adjusted = [], [], [], []
        for name, sub in summary["subtasks"].items():
            for fraction, cell in sub["fractions"].items():
                block = cell["methods"][method]
                tests += list(block["comparisons"][metric].values())
                r = block["accuracy_vs_agreement"]
                related.append({"subtask": name, "fraction": fraction, "rho": r["rho"], "p": r["p"], "n": r["n"]})
                adjusted += list(block["at_equal_accuracy"]["comparisons"].values())
                means = {p: c[metric]["mean"] for p, c in block["conditions"].items()}
                order = sorted((v for v in means.values() if v is not None and math.isfinite(v)), reverse=True)
                b = means[BASELINE]
                ranks.append(order.index(b) + 1 if b is not None and math.isfinite(b) else None)
        out[method] = {
            "metric": metric,
            **_tally(tests),
            "subdistill_rank_per_cell": ranks,
            "policies": len(summary["policies"]),
            "accuracy_vs_agreement": related,
            "accuracy_vs_agreement_positive_significant": sum(
                r["rho"] > 0 and r["p"] < 0.05 for r in related if math.isfinite(r["p"])
            ),
            "accuracy_vs_agreement_negative_significant": sum(
                r["rho"] < 0 and r["p"] < 0.05 for r in related if math.isfinite(r["p"])
            ),
            "at_equal_accuracy": _tally(adjusted),
        }
        h = out[method]
        rhos = ", ".join(f"{r['rho']:.2f}" for r in related)
        h["statement"] = (
            f"{method.upper()}: SubDistill's students agree with the teacher (Spearman) more than the other policy "
            f"in {h['subdistill_higher']} of {h['comparisons']} paired comparisons; significantly more in "
            f"{h['subdistill_higher_significant']}, significantly less in {h['subdistill_lower_significant']} "
            f"(Holm, 0.05); its rank among {h['policies']} policies per cell: {ranks}. Over each cell's students, "
            f"the rank correlation of accuracy and agreement is {rhos} (Spearman rho per cell; p < 0.05 and "
            f"positive in {h['accuracy_vs_agreement_positive_significant']}, negative in "
            f"{h['accuracy_vs_agreement_negative_significant']} of {len(related)}); at equal accuracy (residuals of "
            f"one line per cell) SubDistill is higher in {h['at_equal_accuracy']['subdistill_higher']} of "
            f"{h['at_equal_accuracy']['comparisons']}, significantly in "
            f"{h['at_equal_accuracy']['subdistill_higher_significant']}, significantly lower in "
            f"{h['at_equal_accuracy']['subdistill_lower_significant']}"
        )
    return out


# --- the experiment -------------------------------------------------------------------------------------------------


def run(config: Config, out_dir: str, *, resume: bool = False, overwrite: bool = False, progress: bool = True) -> dict:
    """Explain every chosen cell's students and their teacher; score, summarise and test; write ``out_dir``.

    ``resume`` and ``overwrite`` are accepted for the CLI: this analysis writes no checkpoints.
    """
    del resume, overwrite
    started = time.perf_counter()
    run_info = read_run(config)
    policies = run_info["policies"]
    check(BASELINE in policies, f"the subdistill run has no {BASELINE} students, the policy every test compares to")
    full = load_dataset(run_info["dataset"])
    masks_all = procedural_masks(full)
    teacher = run_info["teacher"]
    # One randomised teacher for every subtask (the control needs fresh weights, not new ones per subtask).
    random_teacher = at.randomized_ensemble(teacher, jax.random.key(config.seed))
    summary: dict = {
        "subdistill_dir": os.path.abspath(config.subdistill_dir),
        "teacher": run_info["teacher_path"],
        "dataset": run_info["dataset"],
        "policies": policies,
        "baseline": BASELINE,
        "scope": {
            "note": "one teacher; intervals are over the student seeds (members) of each policy, each member "
            "averaged over the same images; the teacher's and controls' intervals are over images"
        },
        "explained": "the logit gap z_y - max_{c != y} z_c of the true class, on test images the teacher gets right",
        "evidence": "scored against the procedural evidence masks"
        if masks_all is not None
        else f"skipped: {run_info['dataset']} has no evidence masks (only procedural16/32 do); agreement and "
        "pixel flipping are computed",
        "topk_chance": round(config.topk * config.agreement_size**2) / config.agreement_size**2,
        "subtasks": {},
    }
    rows, figure_data = [], None
    for i, (name, cell_paths) in enumerate(run_info["cells"].items()):
        tic = time.perf_counter()
        classes = run_info["summary"]["subtasks"][name]["classes"]
        data = full.subset_classes(classes)
        idx, n_correct = choose_images(
            teacher, classes, data.x_test, data.y_test, config.n_images, [config.image_seed, i]
        )
        x, y = data.x_test[idx], data.y_test[idx]
        masks = None if masks_all is None else masks_all[np.isin(full.y_test, classes)][idx]
        cells = {f: load_ensemble(p) for f, p in cell_paths.items()}
        for f, ens in cells.items():
            check(
                ens.model.num_classes == len(classes),
                f"the students at {cell_paths[f]} have {ens.model.num_classes} classes, the subtask {len(classes)}",
            )
        got = analyse_subtask(teacher, random_teacher, cells, classes, x, y, masks, config)
        refs, ref_rows = summarise_references(got["references"])
        rows += [{"subtask": name, "fraction": "", **r} for r in ref_rows]
        sub = {
            "classes": list(classes),
            "images": {
                "n": len(idx),
                "teacher_correct": n_correct,
                "test_images": len(data.y_test),
                "indices": idx.tolist(),
                "mask_share": None if masks is None else float(masks.mean()),
            },
            "references": refs,
            "fractions": {},
        }
        for f, ens in cells.items():
            block, cell_rows = summarise_cell(got["cells"][f]["scores"], got["cells"][f]["acc"], ens.members, policies)
            for method in block["methods"]:  # the teacher as the reference row of `jaxkd report`
                block["methods"][method]["teacher"] = refs["teacher"][method]
            block["members"] = len(ens)
            sub["fractions"][str(f)] = block
            rows += [{"subtask": name, "fraction": f, **r} for r in cell_rows]
        summary["subtasks"][name] = sub
        if figure_data is None:
            figure_data = {
                "subtask": name,
                "image": x[0],
                "mask": None if masks is None else masks[0],
                "examples": got["examples"],
                "members": {f: e.members for f, e in cells.items()},
            }
        if progress:
            print(f"explanations: {name} ({len(idx)} images, {len(cells)} fractions) {time.perf_counter() - tic:.1f} s")
    summary["headline"] = headline(summary, config.methods)
    summary["timing"] = {"total_seconds": round(time.perf_counter() - started, 1)}
    figure = _figure(summary, rows, figure_data, config)
    write_outputs(out_dir, config=config, rows=rows, summary=summary, figures={"figure.png": figure})
    return summary


def _show_off(ax, title):
    ax.set_title(title, fontsize=6)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


def _show(ax, h, title):
    """A heatmap on a symmetric scale (red: evidence for the explained output, blue: against)."""
    lim = float(np.max(np.abs(h))) or 1.0
    ax.imshow(h, cmap="bwr", vmin=-lim, vmax=lim)
    _show_off(ax, title)


def _figure(summary, rows, data, config) -> bytes:
    """Example heatmaps side by side (one row per method), then the agreement per policy (subtask x method)."""
    import io

    import matplotlib.pyplot as plt

    policies = summary["policies"]
    methods = list(config.methods)
    subtasks = list(summary["subtasks"])
    f_show = max(data["members"])  # the example's students: the largest fraction, each policy's lowest seed
    members = data["members"][f_show]
    pick = {}
    for i, m in sorted(enumerate(members), key=lambda im: im[1]["seed"]):
        pick.setdefault(m["condition"], i)
    pick = {p: pick[p] for p in policies if p in pick}
    ncol = 2 + len(REFERENCES) + len(pick)
    image = np.asarray(data["image"])
    image = image / 255.0 if image.dtype == np.uint8 else image
    with plt.rc_context(plotting.STYLE):
        fig = plt.figure(
            figsize=(max(11.0, 0.9 * ncol), 1.3 * len(methods) + 3.0 * len(subtasks)), layout="constrained"
        )
        top, bottom = fig.subfigures(2, 1, height_ratios=[1.3 * len(methods), 3.0 * len(subtasks)])
        axes = top.subplots(len(methods), ncol, squeeze=False)
        for r, method in enumerate(methods):
            axes[r, 0].imshow(np.clip(image, 0, 1))
            _show_off(axes[r, 0], f"{method.upper()}: image")
            if data["mask"] is not None:
                axes[r, 1].imshow(data["mask"], cmap="gray")
            _show_off(axes[r, 1], "mask" if data["mask"] is not None else "no mask")
            ex = data["examples"][method]
            for c, source in enumerate(REFERENCES):
                _show(axes[r, 2 + c], ex[source], source.replace("_", " "))
            for c, (p, i) in enumerate(pick.items()):
                _show(axes[r, 2 + len(REFERENCES) + c], ex[(f_show, i)], p.replace("_", "\n", 1))
        top.suptitle(
            f"{data['subtask']}: heatmaps of the logit gap of the true class (students of fraction {f_show:g}, each "
            "policy's lowest seed; red: for, blue: against)",
            fontsize=8,
        )
        panels = bottom.subplots(len(subtasks), len(methods), squeeze=False)
        for s, name in enumerate(subtasks):
            for k, method in enumerate(methods):
                _agreement_panel(panels[s, k], summary["subtasks"][name], rows, name, method, policies)
                panels[s, k].set_title(f"{name}: {method.upper()} agreement with the teacher", fontsize=8)
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _agreement_panel(ax, sub, rows, subtask, method, policies):
    """Per policy and fraction: every member's Spearman agreement with the teacher (dots), mean and 95% CI."""
    metric = "agreement/spearman"
    fractions = list(sub["fractions"])
    width = 0.8 / len(fractions)
    values = {}
    for r in rows:
        if r["subtask"] == subtask and r["method"] == method and r["metric"] == metric and r["fraction"] != "":
            values.setdefault((str(r["fraction"]), r["condition"]), []).append(r["value"])
    for j, f in enumerate(fractions):
        block = sub["fractions"][f]["methods"][method]["conditions"]
        for i, p in enumerate(policies):
            x0 = i - 0.4 + (j + 0.5) * width
            v = np.asarray(values.get((f, p), []), float)
            ax.plot(x0 + np.linspace(-0.25, 0.25, len(v)) * width, v, ".", ms=2, color=f"C{j}", alpha=0.5)
            st = block[p][metric]
            m = np.nan if st["mean"] is None else st["mean"]
            lo, hi = (m if st[k] is None else st[k] for k in ("ci_low", "ci_high"))
            ax.errorbar([x0], [m], yerr=[[m - lo], [hi - m]], fmt="o", ms=3, color=f"C{j}", capsize=2, lw=1,
                        label=f"fraction {float(f):g}" if i == 0 else None)  # fmt: skip
    for source, style in (("random_teacher", "--"), ("edge_map", ":")):
        v = sub["references"][source][method][metric]["mean"]
        if v is not None:
            ax.axhline(v, color="k", ls=style, lw=0.8, label=f"{source.replace('_', ' ')} (mean over images)")
    ax.set_xticks(range(len(policies)), policies, rotation=30, ha="right", fontsize=6)
    ax.set_ylabel("Spearman with the teacher", fontsize=7)
    ax.legend(fontsize=5, loc="best")


def runlocal(config: Config) -> Config:
    """Any preset shrunk to seconds: 8 images, IG with 8 steps, on the subdistill smoke run's students.

    ``results/subdistill/smoke`` is where ``jaxkd run subdistill --preset smoke``
    writes; tests/test_explanations.py points ``subdistill_dir`` at a fresh
    ``subdistill.runlocal`` run instead.
    """
    return dataclasses.replace(
        config,
        subdistill_dir="results/subdistill/smoke",
        n_images=8,
        ig_steps=8,
        gamma=0.25,
        agreement_size=8,
        patch=4,
    )
