"""Datasets that need no network: sklearn digits, MNIST-1D, Gaussian mixtures."""

from __future__ import annotations

import numpy as np

from jaxkd.data.dataset import Dataset


def _split(x, y, test_fraction, seed):
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(test_fraction * len(y)))
    te, tr = order[:n_test], order[n_test:]
    return x[tr], y[tr], x[te], y[te]


def load_digits(*, test_fraction=0.2, split_seed=0) -> Dataset:
    """scikit-learn's 8×8 handwritten digits (1797 images), pixels scaled to [0, 1].

    Inputs have shape ``[N, 8, 8]``; the split is stratification-free and fixed
    by ``split_seed``.
    """
    from sklearn.datasets import load_digits as _load

    bunch = _load()
    x = (bunch.images / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int32)
    x_tr, y_tr, x_te, y_te = _split(x, y, test_fraction, split_seed)
    return Dataset("digits", x_tr, y_tr, x_te, y_te, num_classes=10)


def load_mnist1d(*, num_samples=5000, seed=42) -> Dataset:
    """MNIST-1D (Greydanus 2020) generated locally with ``mnist1d.make_dataset``.

    ``make_dataset`` reseeds numpy's global RNG; the global state is saved and
    restored around the call so that callers see no side effect. Inputs have
    shape ``[N, 40]``; the package's own 80/20 split is used.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = int(num_samples)
    args.seed = int(seed)
    saved = np.random.get_state()
    try:
        raw = make_dataset(args)
    finally:
        np.random.set_state(saved)
    return Dataset(
        "mnist1d",
        np.asarray(raw["x"], np.float32),
        np.asarray(raw["y"], np.int32),
        np.asarray(raw["x_test"], np.float32),
        np.asarray(raw["y_test"], np.int32),
        num_classes=10,
    )


def load_gaussian_mixture(*, num_classes=10, dim=32, num_train=2000, num_test=1000, separation=3.0, seed=0) -> Dataset:
    """Isotropic Gaussian mixture: class means ~ N(0, separation²/dim · I), unit noise."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, separation / np.sqrt(dim), (num_classes, dim))

    def draw(n):
        y = rng.integers(0, num_classes, n).astype(np.int32)
        x = means[y] + rng.normal(size=(n, dim))
        return x.astype(np.float32), y

    x_tr, y_tr = draw(num_train)
    x_te, y_te = draw(num_test)
    return Dataset("gaussian_mixture", x_tr, y_tr, x_te, y_te, num_classes=num_classes)
