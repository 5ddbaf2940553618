"""Datasets by name: ``load_dataset("digits")``, ``load_dataset("tfds:cifar10")``.

Offline names need no network. ``tfds:NAME`` reads a dataset prepared with
``jaxkd data prepare NAME``.
"""

from __future__ import annotations

from jaxkd.data.dataset import Dataset
from jaxkd.data.offline import load_digits, load_gaussian_mixture, load_mnist1d
from jaxkd.data.procedural import load_procedural
from jaxkd.errors import check_name

OFFLINE = {
    "digits": load_digits,
    "mnist1d": load_mnist1d,
    "gaussian_mixture": load_gaussian_mixture,
    "procedural32": lambda: load_procedural(resolution=32, num_train=50000, num_test=10000),
    "procedural16": lambda: load_procedural(resolution=16, num_train=10000, num_test=2000),
}


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
    "load_digits",
    "load_mnist1d",
    "load_gaussian_mixture",
    "load_procedural",
]
