"""The in-memory dataset record every loader returns."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Train/test arrays held on the host (moved to device by the trainer).

    Attributes:
      name: registry name (``digits``, ``mnist1d``, ``tfds:cifar10`` ...).
      x_train, x_test: float32 inputs ``[N, *in_shape]``.
      y_train, y_test: int32 labels ``[N]``.
      num_classes: number of classes.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    def __post_init__(self):
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.shape[0] != y.shape[0]:
                raise ValueError(f"{self.name}: {split} has {x.shape[0]} inputs but {y.shape[0]} labels")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(f"{self.name}: train and test inputs differ in shape")

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
        )
