"""Read prepared tensorflow-datasets (array_record) without TensorFlow.

Preparing an official dataset needs the network and TensorFlow, so it is an
explicit command (``jaxkd data prepare NAME``, extra ``prepare``) and never
happens implicitly: a missing dataset is one clear error naming that command.

The data directory is, in order: the ``data_dir`` argument (``--data-dir``),
``$JAXKD_DATA_DIR``, ``$TFDS_DATA_DIR``, ``~/tensorflow_datasets``. Which
version and config are read is tfds's own resolution of prepared files (what
``tfds.builder`` does for data it reads from disk): a name may pin them
(``cifar100/coarse``, ``cifar10:3.0.2``); unpinned, the newest version on disk
by version order and the default config (from tfds's code for the dataset, or
the dataset's metadata).
"""

from __future__ import annotations

import contextlib
import logging
import os

import numpy as np

from jaxkd.data.dataset import Dataset
from jaxkd.errors import ConfigError

# The install command for the ``prepare`` extra, word for word as in the README.
PREPARE_INSTALL = ".venv/bin/pip install -e '.[prepare]'"


def resolve_data_dir(data_dir: str | None = None) -> str:
    """The tfds data directory: ``data_dir`` > $JAXKD_DATA_DIR > $TFDS_DATA_DIR > ~/tensorflow_datasets."""
    for candidate in (data_dir, os.environ.get("JAXKD_DATA_DIR"), os.environ.get("TFDS_DATA_DIR")):
        if candidate:
            return os.path.abspath(os.path.expanduser(candidate))
    return os.path.abspath(os.path.expanduser("~/tensorflow_datasets"))


@contextlib.contextmanager
def _quiet_absl():
    # tfds logs an absl warning for every absent version folder it probes; the
    # missing-dataset error below says all there is to say.
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _prepared_builder(name: str, data_dir: str):
    """tfds's builder for ``name`` in ``data_dir``, offline; ConfigError if it is not prepared."""
    import tensorflow_datasets as tfds

    builder = None
    with _quiet_absl():
        try:  # never the generation code: reading needs only the prepared files
            builder = tfds.core.read_only_builder.builder_from_files(name, data_dir=data_dir)
        except tfds.core.registered.DatasetNotFoundError:
            pass
    if builder is None or not builder.is_prepared():
        base = name.split(":")[0].split("/")[0]
        found = os.path.join(data_dir, base)
        present = sorted(os.listdir(found)) if os.path.isdir(found) else []
        hint = f" ({found} holds {', '.join(present)}; pin one as tfds:{base}/CONFIG or :VERSION)" if present else ""
        raise ConfigError(
            f"dataset {name!r} is not prepared in {data_dir}{hint}; run `jaxkd data prepare {name} "
            f"--data-dir {data_dir}` (needs the network and TensorFlow: `{PREPARE_INSTALL}`)"
        )
    return builder


def load_tfds(name: str, *, data_dir: str | None = None, train_split="train", test_split="test") -> Dataset:
    """Load a prepared array_record tfds dataset fully into host memory.

    uint8 images stay uint8 (4x less memory on device); the trainer scales
    them to [0, 1] and normalises them on the fly with the per-channel mean
    and std of the training split, which are recorded on the Dataset.

    Args:
      name: tfds name, optionally with config and version (``cifar10``,
        ``cifar100/coarse``, ``cifar10:3.0.2``).
      data_dir: see :func:`resolve_data_dir`.

    Raises:
      ConfigError: the dataset is not prepared under the data directory, is
        not in array_record format, or lacks a split.
    """
    data_dir = resolve_data_dir(data_dir)
    builder = _prepared_builder(name, data_dir)
    version_dir = str(builder.data_dir)
    file_format = builder.info.file_format.value if builder.info.file_format is not None else "tfrecord"
    if file_format != "array_record":  # tfds reuses a prepared version: preparing again in place changes nothing
        raise ConfigError(
            f"dataset {name!r} in {version_dir} is stored as {file_format}, which cannot be read without "
            f"TensorFlow; prepare it as array_record in another directory: `jaxkd data prepare {name} "
            "--data-dir OTHER_DIR`"
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

    Needs the network and TensorFlow (the ``prepare`` extra). Returns the
    directory written.
    """
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        raise ConfigError(f"preparing {name!r} needs TensorFlow; install it with `{PREPARE_INSTALL}`") from None
    import tensorflow_datasets as tfds

    data_dir = resolve_data_dir(data_dir)
    try:
        builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
    except tfds.core.registered.DatasetNotFoundError:
        raise ConfigError(f"tfds has no dataset {name!r}; see `tfds.list_builders()`") from None
    builder.download_and_prepare()
    return str(builder.data_dir)
