"""Does KD transfer a backdoor? A poisoned teacher, students distilled on clean data only.

Per setup (dataset × architecture, self-distillation as in ``functional_kd``):
``n_seeds`` teachers are trained in one program on the training set with a
planted trigger (:mod:`jaxkd.backdoor`: a ``size × size`` patch of ``value``
in the bottom-right corner of ``poison_fraction`` of the examples of other
classes, relabelled ``target``). Then ONE student program trains every
condition of ``functional_kd`` as grid points, on the CLEAN training set,
student seed s distilling from teacher s: ``base`` (CE), ``siddo`` (the
teacher's initialisation, CE), ``disdo``, ``kd_a{α}_T{T}``, ``rcd_fixed`` /
``rcd_step`` (random targets through the same loss), and optionally
``rcd_untrained`` (an untrained network, also a grid point). The students never see a triggered
input, so anything trigger-specific they acquire came through the teacher's
soft labels on clean inputs.

Metrics per student (test set, validation-selected model): ``backdoor/asr``, the attack
success rate (the fraction of triggered test inputs of other classes
classified as the target: :func:`jaxkd.backdoor.attack_success_rate`),
``backdoor/target_rate_clean`` (the same fraction WITHOUT the trigger, the
false-positive floor), and every functional metric of ``functional_kd``
against the student's own teacher on clean inputs. The teachers' clean
accuracy and ASR are recorded too. Tests: the ``functional_kd`` family (every
condition vs base, every KD point vs each RCD condition and vs SIDDO), paired
over seeds, Holm-corrected within (setup, metric), with effect sizes.

Command::

    jaxkd run backdoor_kd --preset default --out results/backdoor_kd/default

Presets: ``smoke`` (seconds); ``default`` (digits with cnn2d and with an MLP,
10 seeds, trigger 2×2 of 1.0 → class 0 on 10% of the other classes' training
images; offline on a 2-core CPU, runtime below); ``paper`` (CIFAR-10 with
``resnet18``, the ``functional_kd`` recipe, a 3×3 white trigger; prepare the
data with ``jaxkd data prepare cifar10``; for an accelerator, not run here).

Output: config.json, records.csv (one row per setup × condition × seed × metric,
teachers included), summary.json (per condition and metric mean ± std and 95%
CI; the tests; the teachers' clean accuracy and ASR; the trigger), figure.png
(attack success rate and clean accuracy by condition with 95% CIs), env.json.

Measured (default preset, idle 2-core CPU): 80 s wall, 4 compiled training sweeps; results in
``docs/backdoor_kd.md``.
"""

from __future__ import annotations

import dataclasses

from experiments import functional_kd as fk
from jaxkd import outputs
from jaxkd.backdoor import Trigger, attack_success_rate, poison
from jaxkd.config import EvalConfig, ModelConfig
from jaxkd.errors import check
from jaxkd.outputs import write_outputs
from jaxkd.recipes import RecipeConfig

BACKDOOR_METRICS = ("backdoor/asr", "backdoor/target_rate_clean")
PLOT_METRICS = ("backdoor/asr", "all/acc", "all/agreement")


@dataclasses.dataclass(frozen=True)
class Config(fk.Config):
    conditions: tuple[str, ...] = ("base", "siddo", "kd", "rcd_fixed", "rcd_step")
    kd_alphas: tuple[float, ...] = (0.5, 0.9)
    test_metrics: tuple[str, ...] = ("backdoor/asr", "all/acc", "all/agreement")
    trigger: Trigger = Trigger()
    poison_fraction: float = 0.1
    poison_seed: int = 0

    def __post_init__(self):
        super().__post_init__()
        check(0.0 < self.poison_fraction <= 1.0, f"poison_fraction must lie in (0, 1], got {self.poison_fraction}")

    def metric_names(self) -> tuple[str, ...]:
        return fk.METRICS + BACKDOOR_METRICS


class _Probe:
    """The teacher trains on the poisoned set; every model is scored on triggered and clean test inputs."""

    def __init__(self, config: Config):
        self.trigger = config.trigger
        self.fraction = config.poison_fraction
        self.seed = config.poison_seed

    def teacher_dataset(self, dataset):
        return poison(dataset, self.trigger, self.fraction, self.seed)[0]

    def metrics(self, trainer, params, rest) -> dict:
        x, y = trainer.data["x_test"], trainer.data["y_test"]
        target = self.trigger.target
        triggered = trainer.predict_split(params, rest, {"x_test": self.trigger.apply(x)}, "test")
        clean = trainer.predict_split(params, rest, trainer.data, "test")
        return {
            "backdoor/asr": attack_success_rate(triggered, y, target),
            "backdoor/target_rate_clean": attack_success_rate(clean, y, target),
        }


_SMALL = RecipeConfig(learning_rate=3e-3, batch_size=64, steps=300)
PRESETS = {
    "smoke": Config(
        n_seeds=2,
        setups=(fk.Setup(fk._DIGITS, ModelConfig("mlp", (16,)), RecipeConfig(steps=20)),),
        eval=EvalConfig(every=10),
    ),
    "default": Config(
        setups=(
            fk.Setup(fk._DIGITS, ModelConfig("cnn2d", (16, 32)), _SMALL),
            fk.Setup(fk._DIGITS, ModelConfig("mlp", (128, 128)), _SMALL),
        )
    ),
    "paper": Config(
        setups=(fk.Setup(fk._CIFAR, ModelConfig("resnet18"), fk._SGD),),
        trigger=Trigger(size=3),
        kd_alphas=(0.5, 0.9),
        eval=EvalConfig(every=None),
    ),
}


def runlocal(config: Config) -> Config:
    """Any preset shrunk to a CPU smoke run (functional_kd's: one tiny digits MLP, 4 steps, 2 seeds)."""
    small = fk.runlocal(config)
    trigger = dataclasses.replace(config.trigger, size=min(config.trigger.size, 2))
    return dataclasses.replace(
        config,
        n_seeds=small.n_seeds,
        setups=small.setups,
        eval=small.eval,
        chunk_steps=small.chunk_steps,
        trigger=trigger,
    )


def run(config: Config, out_dir: str, *, resume: bool = False, overwrite: bool = False, progress: bool = True) -> dict:
    """Every setup: poisoned teachers, the student program(s) on clean data, metrics, tests; writes ``out_dir``."""
    outputs.check_writable(out_dir)
    probe = _Probe(config)
    rows, summary = [], {}
    programs = 0
    for i in range(len(config.setups)):
        r = fk.run_setup(config, i, out_dir=out_dir, resume=resume, overwrite=overwrite, progress=progress, probe=probe)
        rows += r["records"]
        programs += r["programs"]
        s = fk.analyse(config, r["per_seed"], r["teacher"])
        s.pop("payoff")  # functional_kd's question; here the question is the trigger
        # Which data each side saw, by content hash: the teachers' poisoned set, the students' clean one.
        summary[r["setup"].name] = {"programs": r["programs"], "data_hashes": r["data_hashes"], **s}
    t = config.trigger
    out = {
        "setups": summary,
        "legend": config.legend(),
        "trigger": {
            **dataclasses.asdict(t),
            "poison_fraction": config.poison_fraction,
            "poison_seed": config.poison_seed,
            "where": f"bottom-right {t.size}x{t.size} patch of value {t.value:g} (raw input units)",
            "asr": "fraction of triggered test inputs with label != target classified as target",
        },
        "family": {
            "comparisons": [f"{a} - {b}" for a, b in config.family()],
            "test": config.test,
            "correction": "Holm within each (setup, metric)",
            "metrics": list(config.test_metrics),
        },
        "when": "validation-selected models; teachers trained on the poisoned set, students on the clean set",
        "compiled_programs": programs,
    }
    write_outputs(out_dir, config=config, rows=rows, summary=out, figures={"figure.png": _figure(config, out)})
    return out


def _figure(config: Config, summary: dict) -> bytes:
    return fk._metric_figure(
        config,
        summary,
        PLOT_METRICS,
        teacher_label="poisoned teacher",
        title="students distilled on clean data from a backdoored teacher",
    )
