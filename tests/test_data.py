import numpy as np
import pytest

from jaxkd.data import load_dataset, load_gaussian_mixture, load_mnist1d
from jaxkd.errors import ConfigError


def test_digits_shapes_and_range(digits):
    assert digits.in_shape == (8, 8) and digits.num_classes == 10
    assert digits.x_train.shape[0] + digits.x_test.shape[0] == 1797
    assert digits.x_train.dtype == np.float32 and 0 <= digits.x_train.min() and digits.x_train.max() <= 1
    assert set(np.unique(digits.y_train)) == set(range(10))


def test_mnist1d_is_generated_locally_without_touching_global_rng():
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    ds = load_mnist1d(num_samples=500)
    after = np.random.get_state()[1]
    np.testing.assert_array_equal(before, after)
    assert ds.in_shape == (40,) and ds.x_train.shape[0] == 400 and ds.x_test.shape[0] == 100
    again = load_mnist1d(num_samples=500)
    np.testing.assert_array_equal(ds.x_train, again.x_train)


def test_gaussian_mixture_is_deterministic_and_learnable():
    a, b = load_gaussian_mixture(seed=3), load_gaussian_mixture(seed=3)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    # Nearest class mean (estimated on train) beats chance by far.
    means = np.stack([a.x_train[a.y_train == c].mean(0) for c in range(a.num_classes)])
    pred = np.argmin(((a.x_test[:, None] - means[None]) ** 2).sum(-1), axis=1)
    assert (pred == a.y_test).mean() > 0.5


def test_subset_classes_relabels(digits):
    sub = digits.subset_classes([3, 7])
    assert sub.num_classes == 2 and set(np.unique(sub.y_train)) == {0, 1}
    np.testing.assert_array_equal(sub.x_train, digits.x_train[np.isin(digits.y_train, [3, 7])])


def test_tfds_reader_on_a_tiny_array_record_dataset(tmp_path):
    from jaxkd.data.array_builder import write_arrays

    rng = np.random.default_rng(0)
    # Each input encodes its label, so pairing can be checked after tfds shuffles.
    def make(n):
        y = rng.integers(0, 3, n)
        x = rng.random((n, 4, 4, 1)).astype(np.float32)
        x[:, 0, 0, 0] = y
        return x, y

    write_arrays(tmp_path, {"train": make(20), "test": make(8)}, num_classes=3)
    ds = load_dataset("tfds:jaxkd_arrays", data_dir=str(tmp_path))
    assert ds.x_train.shape == (20, 4, 4, 1) and ds.x_test.shape == (8, 4, 4, 1) and ds.num_classes == 3
    np.testing.assert_array_equal(ds.x_train[:, 0, 0, 0], ds.y_train)
    np.testing.assert_array_equal(ds.x_test[:, 0, 0, 0], ds.y_test)


def test_missing_tfds_dataset_names_the_prepare_command(tmp_path):
    with pytest.raises(ConfigError, match=r"jaxkd data prepare cifar10 --data-dir"):
        load_dataset("tfds:cifar10", data_dir=str(tmp_path))


def test_prepare_without_tensorflow_is_one_clear_error(tmp_path):
    from jaxkd.data.tfds_source import prepare

    try:
        import tensorflow  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match=r"jaxkd\[prepare\]"):
            prepare("cifar10", data_dir=str(tmp_path))
    else:
        pytest.skip("TensorFlow is installed here; the no-TF path cannot be exercised")


def test_unknown_dataset():
    with pytest.raises(ConfigError, match="unknown dataset 'imagenet'"):
        load_dataset("imagenet")
