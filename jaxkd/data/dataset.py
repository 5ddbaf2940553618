"""The in-memory dataset record every loader returns."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from jaxkd.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Train/test arrays held on the host (moved to device by the trainer).

    Attributes:
      name: registry name (``digits``, ``mnist1d``, ``tfds:cifar10`` ...).
      x_train, x_test: float32 inputs ``[N, *in_shape]``.
      y_train, y_test: int32 labels ``[N]``.
      num_classes: number of classes.
      mean, std: per-channel statistics used to normalise inputs on the fly
        (None: inputs are used as stored; uint8 inputs are scaled to [0, 1]
        before normalising).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self):
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.shape[0] != y.shape[0]:
                raise ConfigError(f"{self.name}: {split} has {x.shape[0]} inputs but {y.shape[0]} labels")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ConfigError(f"{self.name}: train and test inputs differ in shape")

    @property
    def in_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def subset_classes(self, classes) -> Dataset:
        """Keep only ``classes`` and relabel them ``0..len(classes)-1``."""
        classes = np.asarray(classes)
        remap = np.full(self.num_classes, -1, np.int32)
        remap[classes] = np.arange(len(classes), dtype=np.int32)
        tr = np.isin(self.y_train, classes)
        te = np.isin(self.y_test, classes)
        return Dataset(
            name=f"{self.name}[{','.join(map(str, classes))}]",
            x_train=self.x_train[tr],
            y_train=remap[self.y_train[tr]],
            x_test=self.x_test[te],
            y_test=remap[self.y_test[te]],
            num_classes=len(classes),
            mean=self.mean,
            std=self.std,
        )

    def content_hash(self) -> str:
        """SHA-256 of every array (and the normalisation): the dataset's identity in fingerprints."""
        h = hashlib.sha256()
        for a in (self.x_train, self.y_train, self.x_test, self.y_test):
            a = np.ascontiguousarray(a)
            h.update(f"{a.dtype}{a.shape}".encode())
            h.update(a.tobytes())
        h.update(repr((self.num_classes, self.mean, self.std)).encode())
        return h.hexdigest()


def split_validation(y, fraction: float, seed: int):
    """Stratified ``(train_idx, val_idx)`` of a label array; ``fraction = 0`` gives an empty validation set."""
    idx = np.arange(len(y))
    if fraction == 0:
        return idx, idx[:0]
    from sklearn.model_selection import train_test_split

    try:
        tr, va = train_test_split(idx, test_size=fraction, random_state=seed, stratify=y)
    except ValueError as err:
        raise ConfigError(f"cannot carve a stratified validation split of {fraction:g}: {err}") from None
    return np.sort(tr), np.sort(va)


def subsample(idx, y, fraction: float, seed: int):
    """A stratified ``fraction`` of the indices ``idx`` (labels ``y[idx]``), sorted; every class keeps one at least."""
    if fraction >= 1:
        return idx
    from sklearn.model_selection import train_test_split

    try:
        kept, _ = train_test_split(idx, train_size=fraction, random_state=seed, stratify=y[idx])
    except ValueError as err:
        raise ConfigError(
            f"cannot keep a stratified training fraction of {fraction:g} of {len(idx)} examples: {err}; "
            "raise data.train_fraction"
        ) from None
    return np.sort(kept)


def run_splits(
    dataset: Dataset, val_fraction: float, split_seed: int, train_fraction: float = 1.0, fraction_seed: int = 0
) -> dict[str, np.ndarray]:
    """The arrays a run reads: ``x_/y_`` of ``train`` (without the validation examples), ``val`` and ``test``.

    The validation split is carved from the training data (stratified, fixed
    by ``split_seed``); ``train_fraction`` < 1 then keeps a stratified part of
    the rest (fixed by ``fraction_seed``), so the validation split does not
    depend on the fraction. The test split is the dataset's own.
    """
    tr, va = split_validation(dataset.y_train, val_fraction, split_seed)
    tr = subsample(tr, dataset.y_train, train_fraction, fraction_seed)
    return {
        "x_train": dataset.x_train[tr],
        "y_train": dataset.y_train[tr],
        "x_val": dataset.x_train[va],
        "y_val": dataset.y_train[va],
        "x_test": dataset.x_test,
        "y_test": dataset.y_test,
    }
