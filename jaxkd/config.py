"""A run's configuration, by concern: model, objective, recipe, data, evaluation.

Every part is a frozen dataclass validated on construction. Floats that may
be swept without recompiling are the recipe's ``learning_rate``,
``weight_decay`` and ``momentum`` and every float of every objective term
(its ``weight`` and what its factory declares); in a grid they are named
``learning_rate`` and ``<term>.<name>`` (``kd.temperature``, ``dkd.weight``).

From the command line, dotted keys reach any field:
``--set recipe.learning_rate=0.1 --set objective.dkd.beta=4``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from jaxkd.errors import check, check_name
from jaxkd.recipes import RECIPE_HPARAMS, RecipeConfig

TEACHER_MODES = ("auto", "live", "cached")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """A registry model (``jaxkd.models.MODELS``), its layer sizes (None: the model's own) and compute dtype."""

    name: str = "mlp"
    widths: tuple[int, ...] | None = None
    dtype: str = "float32"

    def __post_init__(self):
        from jaxkd.models import DTYPES, MODELS

        check_name("model", self.name, MODELS)
        check_name("model dtype", self.dtype, DTYPES)
        check(
            self.widths is None or (len(self.widths) > 0 and min(self.widths) > 0),
            f"model widths must be positive integers, got {self.widths}",
        )


@dataclasses.dataclass(frozen=True)
class ObjectiveConfig:
    """Named terms and their options: ``{"ce": {"weight": 0.1}, "kd": {"weight": 0.9, "temperature": 4}}``.

    Each entry may name its factory with ``kind`` (default: the entry's
    name), so one objective can hold two terms of a kind
    (``{"hint1": {"kind": "fitnet", "student": "block0", "teacher": "block0"}}``).
    """

    terms: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=lambda: {"ce": {"weight": 1.0}})

    def __post_init__(self):
        check(len(self.terms) > 0, "the objective needs at least one term")
        self.build()

    def build(self):
        """``({name: Term}, {"<name>.<hp>": value})``; raises one-line errors for bad terms."""
        from jaxkd.terms import build_term

        terms, hparams = {}, {}
        for name, options in self.terms.items():
            check("." not in name, f"term name {name!r} may not contain '.'")
            terms[name], values = build_term(name, options)
            hparams.update({f"{name}.{k}": v for k, v in values.items()})
        return terms, hparams


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Dataset, subtask, validation split, training fraction and on-device augmentation.

    ``classes``: a subtask, the dataset restricted to these classes and
    relabelled ``0..C-1`` in this order (:meth:`jaxkd.data.Dataset.subset_classes`);
    a teacher trained on all classes is restricted to the same columns
    (:meth:`jaxkd.teacher.Teacher.subtask`). The validation split is carved
    from the training data, stratified by class and fixed by ``split_seed``;
    model selection uses it, never the test set. ``train_fraction`` keeps a
    stratified part of what remains for training, drawn with
    ``fraction_seed``: the validation split is the same at every fraction.
    """

    dataset: str = "digits"
    val_fraction: float = 0.1
    split_seed: int = 0
    crop_padding: int = 0
    flip: bool = False
    rotation: float = 0.0  # degrees
    classes: tuple[int, ...] | None = None
    train_fraction: float = 1.0
    fraction_seed: int = 0

    def __post_init__(self):
        from jaxkd.data import Dataset, check_augmentation, check_dataset_name

        if isinstance(self.dataset, Dataset):  # DataConfig(Dataset.from_arrays(...)): by its registered name
            from jaxkd.extend import is_builtin, register_dataset

            if not is_builtin("dataset", self.dataset.name):  # a built-in's record stands for its name
                register_dataset(self.dataset.name, self.dataset)
            object.__setattr__(self, "dataset", self.dataset.name)
        check(isinstance(self.dataset, str), f"data.dataset must be a dataset name or a Dataset, got {self.dataset!r}")
        check_dataset_name(self.dataset)
        check(0 <= self.val_fraction < 1, f"val_fraction must lie in [0, 1), got {self.val_fraction}")
        check(self.crop_padding >= 0, f"crop_padding must be >= 0, got {self.crop_padding}")
        check(0 <= self.rotation <= 180, f"rotation must lie in [0, 180] degrees, got {self.rotation}")
        check_augmentation(self.dataset, flip=self.flip, rotation=self.rotation)  # labels the augmentation would change
        check(0 < self.train_fraction <= 1, f"data.train_fraction must lie in (0, 1], got {self.train_fraction}")
        if self.classes is not None:
            c = tuple(self.classes)
            check(
                len(c) >= 2 and all(int(k) == k and k >= 0 for k in c) and len(set(c)) == len(c),
                f"data.classes must be at least two distinct class indices (a subtask), got {self.classes}",
            )

    @property
    def augmented(self) -> bool:
        return bool(self.crop_padding or self.flip or self.rotation)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """When and on what to evaluate.

    ``every``: steps between evaluations (None: once per epoch); it must
    divide the run's steps. Evaluation runs in fixed-size batches of
    ``batch_size`` inside the compiled program. ``splits`` are evaluated
    every time (``train`` is the full, un-augmented training set).
    ``select`` is the metric that picks the model each run keeps
    (:mod:`jaxkd.selection`: ties broken by that split's loss, then the
    later evaluation); it may not read the test set, and a metric the run
    does not evaluate is refused when the trainer is built. ``None``: no
    selection, every run keeps its last model (for benchmarks that evaluate nothing).
    """

    every: int | None = None
    batch_size: int = 512
    splits: tuple[str, ...] = ("val", "test")
    select: str | None = "val/acc"

    def __post_init__(self):
        check(self.every is None or self.every > 0, f"eval.every must be positive, got {self.every}")
        check(self.batch_size > 0, f"eval.batch_size must be positive, got {self.batch_size}")
        for s in self.splits:
            check_name("evaluation split", s, ("train", "val", "test"))
        if self.select is None:  # no selection: the kept model is the last one (benchmarks)
            return
        split = self.select.split("/")[0]
        check(
            split != "test",
            f"eval.select {self.select!r} selects on the test set; select on the validation split (e.g. val/acc)",
        )
        check(
            split in self.splits or (split == "train_eval" and "train" in self.splits),
            f"eval.select {self.select!r} names a split that is not evaluated ({', '.join(self.splits)}); "
            "the full training set's metrics are train_eval/...",
        )


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One run: what to train, towards what, how, on what, and how to measure it.

    ``teacher``: ``auto`` caches the teacher's logits when the inputs are not
    augmented and no term reads teacher features (the fast path), else runs
    it live; ``live`` and ``cached`` force one.
    """

    model: ModelConfig = ModelConfig()
    objective: ObjectiveConfig = ObjectiveConfig()
    recipe: RecipeConfig = RecipeConfig()
    data: DataConfig = DataConfig()
    eval: EvalConfig = EvalConfig()
    teacher: str = "auto"

    def __post_init__(self):
        check_name("teacher mode", self.teacher, TEACHER_MODES)

    def hparams(self) -> dict[str, float]:
        """Default values of every sweepable float, by grid name."""
        return {**self.recipe.hparams(), **self.objective.build()[1]}

    def constraints(self) -> dict[str, str]:
        terms, _ = self.objective.build()
        out = dict(RECIPE_HPARAMS)
        for name, term in terms.items():
            out[f"{name}.weight"] = "nonneg"
            out.update({f"{name}.{k}": c for k, c in term.constraints.items()})
        return out
