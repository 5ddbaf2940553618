import numpy as np
import pytest

from jaxkd.data import load_dataset, load_gaussian_mixture, load_mnist1d
from jaxkd.errors import ConfigError


def test_digits_shapes_and_range(digits):
    assert digits.in_shape == (8, 8) and digits.num_classes == 10
    assert digits.x_train.shape[0] + digits.x_test.shape[0] == 1797
    assert digits.x_train.dtype == np.float32
    assert set(np.unique(digits.y_train)) == set(range(10))
    # Train and test together are scikit-learn's images / 16 with their labels, each exactly once (as multisets of
    # (label, pixels) rows, whatever the split's order).
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()

    def rows(x, y):
        r = np.concatenate([np.asarray(y, np.float64)[:, None], np.asarray(x, np.float64).reshape(len(y), -1)], 1)
        return r[np.lexsort(r.T[::-1])]

    ours = rows(np.concatenate([digits.x_train, digits.x_test]), np.concatenate([digits.y_train, digits.y_test]))
    np.testing.assert_array_equal(ours, rows(bunch.images / 16.0, bunch.target))


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
    # The documented distribution: unit noise around each class mean (pooled within-class variance 1, from 2000 x 32
    # values: standard error 0.5%), and class means ~ N(0, separation²/dim · I), so E‖μ‖² = separation² = 9 (the mean
    # of 10 scaled χ²_32 has sd 0.71; the estimated means add 32/200 = 0.16).
    resid = a.x_train - means[a.y_train]
    np.testing.assert_allclose(resid.var(), 1.0, rtol=0.03)
    assert 9.0 - 3 * 0.71 < np.mean(np.sum(means**2, axis=1)) < 9.16 + 3 * 0.71
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


def _write_uint8_tfds(data_dir, name, version, splits, num_classes):
    """A tiny prepared array_record dataset ``name:version`` with uint8 images (no TF, no network)."""
    import tensorflow_datasets as tfds

    class Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version(version)

        def _info(self):
            shape = next(iter(splits.values()))[0].shape[1:]
            features = tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=shape, dtype=np.uint8),
                    "label": tfds.features.ClassLabel(num_classes=num_classes),
                }
            )
            return self.dataset_info_from_configs(features=features, supervised_keys=("image", "label"))

        def _split_generators(self, dl_manager):
            return {split: self._generate_examples(x, y) for split, (x, y) in splits.items()}

        def _generate_examples(self, x, y):
            for i in range(len(y)):
                yield i, {"image": x[i], "label": int(y[i])}

    Builder.name = name
    Builder(data_dir=str(data_dir), file_format="array_record").download_and_prepare()


def _uint8_split(n, value):
    return np.full((n, 2, 2, 3), value, np.uint8), np.arange(n) % 2


def test_tfds_reads_the_newest_version_by_version_order_not_by_name(tmp_path):
    # "10.0.0" sorts before "9.0.0" as text; tfds's version order must pick 10.0.0.
    _write_uint8_tfds(tmp_path, "two_versions", "9.0.0", {"train": _uint8_split(4, 9), "test": _uint8_split(2, 9)}, 2)
    _write_uint8_tfds(
        tmp_path, "two_versions", "10.0.0", {"train": _uint8_split(6, 10), "test": _uint8_split(2, 10)}, 2
    )
    ds = load_dataset("tfds:two_versions", data_dir=str(tmp_path))
    assert ds.x_train.shape == (6, 2, 2, 3) and np.all(ds.x_train == 10)
    old = load_dataset("tfds:two_versions:9.0.0", data_dir=str(tmp_path))  # a pinned version is honoured
    assert old.x_train.shape == (4, 2, 2, 3) and np.all(old.x_train == 9)


def test_tfds_uint8_images_stay_uint8_with_per_channel_mean_and_std(tmp_path):
    x = np.zeros((4, 2, 2, 3), np.uint8)
    x[:2, ..., 0], x[..., 1] = 255, 51  # channel 0: half 1.0, half 0.0; channel 1: 0.2; channel 2: 0
    _write_uint8_tfds(
        tmp_path, "uint8_images", "1.0.0", {"train": (x, np.arange(4) % 2), "test": _uint8_split(2, 0)}, 2
    )
    ds = load_dataset("tfds:uint8_images", data_dir=str(tmp_path))
    assert ds.x_train.dtype == np.uint8 and ds.num_classes == 2
    np.testing.assert_allclose(ds.mean, (0.5, 0.2, 0.0), atol=1e-12)
    np.testing.assert_allclose(ds.std, (0.5, 0.0, 0.0), atol=1e-12)


def test_tfds_data_not_in_array_record_is_refused(tmp_path):
    import json

    _write_uint8_tfds(tmp_path, "old_format", "1.0.0", {"train": _uint8_split(2, 0), "test": _uint8_split(2, 0)}, 2)
    info_path = tmp_path / "old_format" / "1.0.0" / "dataset_info.json"
    info = json.loads(info_path.read_text())
    info_path.write_text(json.dumps({**info, "fileFormat": "tfrecord"}))
    with pytest.raises(ConfigError, match=r"stored as tfrecord.*jaxkd data prepare old_format --data-dir OTHER_DIR"):
        load_dataset("tfds:old_format", data_dir=str(tmp_path))


def test_missing_tfds_dataset_names_the_prepare_command(tmp_path):
    with pytest.raises(ConfigError, match=r"jaxkd data prepare cifar10 --data-dir") as err:
        load_dataset("tfds:cifar10", data_dir=str(tmp_path))
    assert "\n" not in str(err.value)


def test_data_dir_order_argument_then_jaxkd_then_tfds_then_home(tmp_path, monkeypatch):
    from jaxkd.data.tfds_source import resolve_data_dir

    monkeypatch.delenv("JAXKD_DATA_DIR", raising=False)
    monkeypatch.delenv("TFDS_DATA_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_data_dir() == str(tmp_path / "home" / "tensorflow_datasets")
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    assert resolve_data_dir() == str(tmp_path / "tfds")
    monkeypatch.setenv("JAXKD_DATA_DIR", str(tmp_path / "jaxkd"))
    assert resolve_data_dir() == str(tmp_path / "jaxkd")
    assert resolve_data_dir(str(tmp_path / "arg")) == str(tmp_path / "arg")
    # The loader follows the same order: the error names the directory it looked in.
    with pytest.raises(ConfigError, match=f"not prepared in {tmp_path / 'jaxkd'};"):
        load_dataset("tfds:cifar10")


def test_prepare_without_tensorflow_is_one_clear_error(tmp_path, monkeypatch):
    import sys

    from jaxkd.data.tfds_source import PREPARE_INSTALL, prepare

    monkeypatch.setitem(sys.modules, "tensorflow", None)  # as if TensorFlow were not installed
    with pytest.raises(ConfigError, match="needs TensorFlow") as err:
        prepare("cifar10", data_dir=str(tmp_path))
    assert f"`{PREPARE_INSTALL}`" in str(err.value)
    assert not any(tmp_path.iterdir())


def test_install_hint_is_the_readmes():
    from pathlib import Path

    from jaxkd.data.tfds_source import PREPARE_INSTALL

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert PREPARE_INSTALL in readme


def test_unknown_dataset():
    with pytest.raises(ConfigError, match="unknown dataset 'imagenet'"):
        load_dataset("imagenet")


def test_augmentations_that_change_procedural_labels_are_refused():
    """A horizontal mirror turns stripes at 45 degrees into stripes at 180 - 45 = 135: the procedural task has
    both as fine classes of one superclass, so flips change labels and are refused; rotations beyond the limit too."""
    from jaxkd.config import DataConfig
    from jaxkd.data.procedural import CLASS_NAMES, FINE_PER_SUPERCLASS

    supers = [CLASS_NAMES[s : s + FINE_PER_SUPERCLASS] for s in range(0, len(CLASS_NAMES), FINE_PER_SUPERCLASS)]
    mirrored = [s for s in supers if {n.split("/")[1] for n in s} >= {"stripes-45", "stripes-135"}]
    assert mirrored  # the premise: some superclass holds a texture and its mirror image
    for name in ("procedural16", "procedural32"):
        with pytest.raises(ConfigError, match="not invariant under horizontal flips"):
            DataConfig(name, flip=True)
        with pytest.raises(ConfigError, match="use at most 7.5 degrees"):
            DataConfig(name, rotation=10.0)
        assert DataConfig(name, crop_padding=2, rotation=7.5).rotation == 7.5
    assert DataConfig("digits", flip=True).flip  # no limits declared: not checked
