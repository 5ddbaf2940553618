"""Read prepared tensorflow-datasets (array_record) without TensorFlow.

Preparing an official dataset needs the network and TensorFlow, so it is an
explicit command (``jaxkd data prepare NAME``, extra ``jaxkd[prepare]``) and
never happens implicitly: a missing dataset is one clear error naming that
command.
"""

from __future__ import annotations

import glob
import os

import numpy as np

from jaxkd.data.dataset import Dataset
from jaxkd.errors import ConfigError

DEFAULT_DATA_DIR = os.path.expanduser(os.environ.get("JAXKD_DATA_DIR", "~/tensorflow_datasets"))


def _find_version_dir(name: str, data_dir: str) -> str | None:
    candidates = sorted(glob.glob(os.path.join(data_dir, name, "*", "dataset_info.json")))
    if not candidates:  # builders with configs: name/config/version
        candidates = sorted(glob.glob(os.path.join(data_dir, name, "*", "*", "dataset_info.json")))
    return os.path.dirname(candidates[-1]) if candidates else None


def load_tfds(name: str, *, data_dir: str | None = None, train_split="train", test_split="test") -> Dataset:
    """Load a prepared array_record tfds dataset fully into host memory.

    uint8 images stay uint8 (4x less memory on device); the trainer scales
    them to [0, 1] and normalises them on the fly with the per-channel mean
    and std of the training split, which are recorded on the Dataset.

    Raises:
      ConfigError: the dataset is not prepared under ``data_dir`` or is not in
        array_record format.
    """
    import tensorflow_datasets as tfds

    data_dir = os.path.abspath(os.path.expanduser(data_dir or DEFAULT_DATA_DIR))
    version_dir = _find_version_dir(name, data_dir)
    if version_dir is None:
        raise ConfigError(
            f"dataset {name!r} is not prepared in {data_dir}; run `jaxkd data prepare {name} "
            f"--data-dir {data_dir}` (needs network and `pip install 'jaxkd[prepare]'`)"
        )
    builder = tfds.builder_from_directory(version_dir)
    if builder.info.file_format is None or builder.info.file_format.value != "array_record":
        raise ConfigError(
            f"dataset {name!r} in {version_dir} is not array_record; re-run `jaxkd data prepare {name}`"
        )
    image_key, label_key = builder.info.supervised_keys or ("image", "label")
    num_classes = builder.info.features[label_key].num_classes
    sources = builder.as_data_source()

    def read(split):
        if split not in sources:
            raise ConfigError(f"dataset {name!r} has no split {split!r}; splits: {', '.join(sources)}")
        src = sources[split]
        records = src.__getitems__(list(range(len(src))))
        x = np.stack([np.asarray(r[image_key]) for r in records])
        y = np.asarray([r[label_key] for r in records], np.int32)
        return (x if x.dtype == np.uint8 else x.astype(np.float32)), y

    x_tr, y_tr = read(train_split)
    x_te, y_te = read(test_split)
    mean = std = None
    if x_tr.dtype == np.uint8:
        scaled = x_tr.reshape(-1, x_tr.shape[-1]).astype(np.float64) / 255.0
        mean, std = tuple(scaled.mean(0).tolist()), tuple(scaled.std(0).tolist())
    return Dataset(f"tfds:{name}", x_tr, y_tr, x_te, y_te, num_classes=num_classes, mean=mean, std=std)


def prepare(name: str, *, data_dir: str | None = None) -> str:
    """Download and prepare official tfds dataset ``name`` as array_record.

    Needs the network and TensorFlow (``pip install 'jaxkd[prepare]'``).
    Returns the directory written.
    """
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        raise ConfigError(
            f"preparing {name!r} needs TensorFlow; install it with `pip install 'jaxkd[prepare]'`"
        ) from None
    import tensorflow_datasets as tfds

    data_dir = os.path.abspath(os.path.expanduser(data_dir or DEFAULT_DATA_DIR))
    try:
        builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
    except tfds.core.registered.DatasetNotFoundError:
        raise ConfigError(f"tfds has no dataset {name!r}; see `tfds.list_builders()`") from None
    builder.download_and_prepare()
    return str(builder.data_dir)
