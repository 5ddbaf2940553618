"""Datasets by name: ``load_dataset("digits")``, ``load_dataset("tfds:cifar10")``.

Offline names need no network. ``tfds:NAME`` reads a dataset prepared with
``jaxkd data prepare NAME``.
"""

from __future__ import annotations

from jaxkd.data.dataset import Dataset
from jaxkd.data.offline import load_digits, load_gaussian_mixture, load_mnist1d
from jaxkd.data.procedural import load_procedural
from jaxkd.errors import ConfigError, check_name

OFFLINE = {
    "digits": load_digits,
    "mnist1d": load_mnist1d,
    "gaussian_mixture": load_gaussian_mixture,
    "procedural32": lambda: load_procedural(resolution=32, num_train=50000, num_test=10000),
    "procedural16": lambda: load_procedural(resolution=16, num_train=10000, num_test=2000),
}


# What the built-in datasets' labels survive: ``flip`` (horizontal flips keep every class) and ``rotation`` (the
# largest rotation augmentation in degrees that keeps every class), with the reason. Absent: not known, not checked.
_PROCEDURAL_LIMITS = {
    "flip": False,
    "rotation": 7.5,
    "why": "its textures include stripes at 45 and 135 degrees, mirror images of each other, as fine classes of one "
    "superclass (and L, arrow, half-disc and crescent are asymmetric); objects are already rotated by up to 15 "
    "degrees, and stripes 45 degrees apart are told apart only while the total stays under 22.5",
}
AUGMENTATION_LIMITS = {"procedural16": _PROCEDURAL_LIMITS, "procedural32": _PROCEDURAL_LIMITS}


def check_augmentation(name: str, *, flip: bool, rotation: float) -> None:
    """One line when an augmentation would change the labels of dataset ``name`` (:data:`AUGMENTATION_LIMITS`)."""
    limits = AUGMENTATION_LIMITS.get(name)
    if limits is None:
        return
    if flip and limits.get("flip") is False:
        raise ConfigError(
            f"data.flip: {name}'s classes are not invariant under horizontal flips ({limits['why']}); "
            "set data.flip=false"
        )
    top = limits.get("rotation")
    if top is not None and rotation > top:
        raise ConfigError(
            f"data.rotation={rotation:g} would change {name}'s classes ({limits['why']}); use at most {top:g} degrees"
        )


def check_dataset_name(name: str) -> None:
    """Raise a one-line ConfigError for an unknown dataset name."""
    if not name.startswith("tfds:"):
        check_name("dataset", name, [*OFFLINE, "tfds:<name>"])


def load_dataset(name: str, *, data_dir: str | None = None) -> Dataset:
    """Load a dataset by registry name (see module docstring)."""
    check_dataset_name(name)
    if name.startswith("tfds:"):
        from jaxkd.data.tfds_source import load_tfds

        return load_tfds(name.removeprefix("tfds:"), data_dir=data_dir)
    return OFFLINE[name]()


__all__ = [
    "Dataset",
    "OFFLINE",
    "load_dataset",
    "check_dataset_name",
    "check_augmentation",
    "AUGMENTATION_LIMITS",
    "load_digits",
    "load_mnist1d",
    "load_gaussian_mixture",
    "load_procedural",
]
