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

    @classmethod
    def from_arrays(
        cls,
        x_train,
        y_train,
        x_test,
        y_test,
        *,
        name: str,
        num_classes: int | None = None,
        mean=None,
        std=None,
        register: bool = True,
    ) -> Dataset:
        """A dataset from the user's own arrays, registered under ``name`` (``DataConfig(name)`` then finds it).

        Inputs are ``[N, *in_shape]`` (images ``[N, H, W, C]``), float (kept
        as float32) or uint8 (scaled to [0, 1] when used); labels are integers
        in ``[0, num_classes)`` (default: the largest label + 1). ``mean`` and
        ``std``: per-channel normalisation applied on the fly (None: inputs
        used as given). ``register=False`` only builds the record, for
        :func:`jaxkd.train.make_train`. Every mistake is one line.
        """
        xs, ys = [], []
        for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
            x, y = np.asarray(x), np.asarray(y)
            if not (x.dtype == np.uint8 or np.issubdtype(x.dtype, np.floating)):
                raise ConfigError(f"{name}: x_{split} must hold floats or uint8 pixels, got dtype {x.dtype}")
            if x.ndim < 2 or x.shape[0] == 0:
                raise ConfigError(f"{name}: x_{split} must be [N, ...] with N > 0 examples, got shape {x.shape}")
            if x.dtype != np.uint8 and not np.isfinite(x).all():
                raise ConfigError(f"{name}: x_{split} holds NaN or Inf values; clean the inputs first")
            if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer) or (y == np.round(y)).all()):
                raise ConfigError(f"{name}: y_{split} must be a 1-D array of integer labels, got {y.dtype} {y.shape}")
            xs.append(x if x.dtype == np.uint8 else x.astype(np.float32))
            ys.append(y.astype(np.int32))
        top = int(max(ys[0].max(), ys[1].max())) + 1
        num_classes = top if num_classes is None else int(num_classes)
        for split, y in zip(("train", "test"), ys):
            if y.min() < 0 or y.max() >= num_classes:
                raise ConfigError(
                    f"{name}: y_{split} has labels outside [0, {num_classes}); labels must be 0..num_classes-1"
                )
        if len(np.unique(ys[0])) < 2:
            raise ConfigError(f"{name}: y_train holds a single class; a classification dataset needs at least two")
        if (mean is None) != (std is None):
            raise ConfigError(f"{name}: give both mean and std (per-channel normalisation) or neither")
        norm = [None if v is None else tuple(float(a) for a in np.atleast_1d(v)) for v in (mean, std)]
        if norm[1] is not None and min(norm[1]) <= 0:
            raise ConfigError(f"{name}: std must be positive, got {norm[1]}")
        if norm[0] is not None and len(norm[0]) not in (1, xs[0].shape[-1]):
            raise ConfigError(f"{name}: mean has {len(norm[0])} values for inputs with {xs[0].shape[-1]} channels")
        ds = cls(name, xs[0], ys[0], xs[1], ys[1], num_classes, norm[0], norm[1])
        if register:
            from jaxkd.extend import register_dataset

            register_dataset(name, ds)
        return ds

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
