"""Superclass subtasks: the classes of one superclass, as SubDistill's ``cifar100-<superclass>`` subtasks.

``superclass_classes(dataset, name)`` gives the fine class indices of a
superclass, in increasing order, for the datasets whose classes come in
superclasses: ``procedural16``/``procedural32`` (superclass ``s`` holds
classes ``5s..5s+4``; names :data:`jaxkd.data.procedural.SUPERCLASS_NAMES`)
and ``tfds:cifar100`` (the 20 superclasses of CIFAR-100 fine labels, whose
alphabetical order interleaves them: :data:`CIFAR100_COARSE`). A subtask's
data is the dataset restricted to those classes and relabelled ``0..4`` in
that order (``DataConfig.classes``).
"""

from __future__ import annotations

from jaxkd.data import procedural
from jaxkd.errors import ConfigError, check_name

CIFAR100_SUPERCLASSES = (
    "aquatic_mammals",
    "fish",
    "flowers",
    "food_containers",
    "fruit_and_vegetables",
    "household_electrical_devices",
    "household_furniture",
    "insects",
    "large_carnivores",
    "large_man-made_outdoor_things",
    "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores",
    "medium_mammals",
    "non-insect_invertebrates",
    "people",
    "reptiles",
    "small_mammals",
    "trees",
    "vehicles_1",
    "vehicles_2",
)

# The coarse (superclass) label of each CIFAR-100 fine label 0..99 (fine labels in alphabetical order of names).
CIFAR100_COARSE = (
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
)  # fmt: skip


def superclass_names(dataset: str) -> tuple[str, ...]:
    """The superclass names of ``dataset`` (a ConfigError for a dataset without superclasses)."""
    if dataset.startswith("procedural"):
        return procedural.SUPERCLASS_NAMES
    if dataset == "tfds:cifar100":
        return CIFAR100_SUPERCLASSES
    raise ConfigError(
        f"{dataset} has no superclasses; superclass subtasks exist for procedural16, procedural32 and tfds:cifar100 "
        "(for another dataset give the subtask's classes with data.classes)"
    )


def superclass_classes(dataset: str, name: str) -> tuple[int, ...]:
    """The fine classes of superclass ``name`` of ``dataset``, in increasing order."""
    names = superclass_names(dataset)
    check_name(f"{dataset} superclass", name, names)
    s = names.index(name)
    if dataset.startswith("procedural"):
        k = procedural.FINE_PER_SUPERCLASS
        return tuple(range(k * s, k * s + k))
    return tuple(i for i, c in enumerate(CIFAR100_COARSE) if c == s)
