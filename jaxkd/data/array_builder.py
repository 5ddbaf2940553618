"""A tfds builder that writes in-memory numpy arrays as an array_record dataset.

Lets any ``(x, y)`` arrays be stored in the same format as official tfds
datasets, so one reader (:mod:`jaxkd.data.tfds_source`) serves both. Writing
needs no TensorFlow.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds


class JaxkdArrays(tfds.core.GeneratorBasedBuilder):
    """Dataset ``jaxkd_arrays``: features ``image`` (float32 tensor) and ``label``."""

    VERSION = tfds.core.Version("1.0.0")

    def __init__(self, *, splits: dict | None = None, num_classes: int | None = None, **kwargs):
        self._splits = splits or {}
        self._num_classes = num_classes
        super().__init__(**kwargs)

    def _info(self):
        x0 = next(iter(self._splits.values()))[0] if self._splits else None
        if x0 is None:  # reading an existing directory: features come from disk
            shape, num_classes = None, None
        else:
            shape, num_classes = x0.shape[1:], self._num_classes
        features = tfds.features.FeaturesDict(
            {
                "image": tfds.features.Tensor(shape=shape, dtype=np.float32),
                "label": tfds.features.ClassLabel(num_classes=num_classes or 1),
            }
        )
        return self.dataset_info_from_configs(features=features, supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
        return {name: self._generate_examples(x, y) for name, (x, y) in self._splits.items()}

    def _generate_examples(self, x, y):
        for i in range(len(y)):
            yield i, {"image": np.asarray(x[i], np.float32), "label": int(y[i])}


def write_arrays(data_dir, splits: dict, num_classes: int) -> str:
    """Write ``{split: (x, y)}`` under ``data_dir/jaxkd_arrays``; returns the version dir."""
    builder = JaxkdArrays(splits=splits, num_classes=num_classes, data_dir=str(data_dir), file_format="array_record")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(verify_ssl=False))
    return str(builder.data_dir)
