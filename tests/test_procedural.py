import socket

import numpy as np
import pytest
from scipy.ndimage import binary_erosion

from jaxkd.data import OFFLINE, load_dataset, load_procedural
from jaxkd.data.procedural import (
    CLASS_NAMES,
    NUM_CLASSES,
    SUPERCLASS_NAMES,
    TEXTURE_NAMES,
    generate,
    superclass_of,
    texture_of,
)
from jaxkd.errors import ConfigError

# Nothing but the object on a flat background: every pixel is either background or object.
PLAIN = {"noise": 0.0, "clutter": 0.0, "gradient": 0.0}


@pytest.mark.parametrize("resolution", [16, 32])
def test_shapes_and_dtypes(resolution):
    split = generate(30, resolution=resolution, seed=0)
    assert split.images.shape == (30, resolution, resolution, 3) and split.images.dtype == np.uint8
    assert split.masks.shape == (30, resolution, resolution) and split.masks.dtype == np.bool_
    assert split.labels.shape == split.superclasses.shape == (30,)
    assert split.labels.dtype == split.superclasses.dtype == np.int32


def test_same_seed_is_bitwise_equal_and_another_seed_differs():
    a, b, c = (generate(120, resolution=16, seed=s) for s in (7, 7, 8))
    for field in ("images", "labels", "superclasses", "masks"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.labels, c.labels)
    assert np.mean(a.images != c.images) > 0.5


def test_class_balance_is_exact_and_the_order_shuffled():
    split = generate(300, resolution=16, seed=1)
    np.testing.assert_array_equal(np.bincount(split.labels, minlength=NUM_CLASSES), np.full(NUM_CLASSES, 3))
    assert not np.array_equal(split.labels, np.arange(300) % NUM_CLASSES)
    counts = np.bincount(generate(250, resolution=16, seed=1).labels, minlength=NUM_CLASSES)
    assert set(counts) == {2, 3} and counts.sum() == 250 and (counts == 3).sum() == 50


def test_twenty_superclasses_of_five_fine_classes_that_differ_in_texture():
    labels = np.arange(NUM_CLASSES)
    np.testing.assert_array_equal(np.bincount(superclass_of(labels)), np.full(20, 5))
    assert len(SUPERCLASS_NAMES) == 20 and len(set(CLASS_NAMES)) == NUM_CLASSES
    for s in range(20):
        members = labels[superclass_of(labels) == s]
        # One silhouette per superclass; five distinct textures inside it.
        assert {CLASS_NAMES[c].split("/")[0] for c in members} == {SUPERCLASS_NAMES[s]}
        assert len({TEXTURE_NAMES[texture_of(c)] for c in members}) == 5
    split = generate(200, resolution=16, seed=2)
    np.testing.assert_array_equal(split.superclasses, split.labels // 5)


@pytest.mark.parametrize("resolution", [16, 32])
def test_masks_mark_exactly_the_pixels_that_differ_from_a_plain_background(resolution):
    split = generate(100, resolution=resolution, seed=3, **PLAIN)
    for image, mask in zip(split.images, split.masks):
        assert 0.05 < mask.mean() < 0.95
        outside = np.unique(image[~mask], axis=0)
        assert len(outside) == 1, "the background is one flat colour"
        assert np.all(np.any(image[mask] != outside[0], axis=-1)), "every masked pixel shows the object"


def test_noise_and_clutter_leave_the_object_and_labels_in_place():
    clean = generate(60, resolution=16, seed=4, **PLAIN)
    noisy = generate(60, resolution=16, seed=4, **{**PLAIN, "noise": 0.05})
    cluttered = generate(60, resolution=16, seed=4, **{**PLAIN, "clutter": 3.0})
    for other in (noisy, cluttered):
        np.testing.assert_array_equal(clean.labels, other.labels)
        np.testing.assert_array_equal(clean.masks, other.masks)
    # The noise is uniform with standard deviation `noise` (half-width sqrt(3)·noise), in [0, 1] units. Where the
    # clean pixel lies in (0.1, 0.9) nothing clips: the difference's std is sqrt(0.05² + 2/(12·255²)) (two
    # roundings to uint8) = 0.05003 (standard error of the estimate from ~38k values: 0.4%), and no difference
    # exceeds the support by more than one rounding step.
    diff = (noisy.images.astype(np.float64) - clean.images) / 255
    inner = (clean.images > 0.1 * 255) & (clean.images < 0.9 * 255)
    assert inner.mean() > 0.5
    np.testing.assert_allclose(diff[inner].std(), np.sqrt(0.05**2 + 2 / 12 / 255**2), rtol=0.02)
    assert np.abs(diff).max() <= np.sqrt(3) * 0.05 + 1 / 255
    # Distractors are drawn behind the object: away from its anti-aliased edge its pixels are unchanged.
    interior = binary_erosion(clean.masks, np.ones((1, 3, 3), bool))
    assert interior.sum() > 500
    np.testing.assert_array_equal(cluttered.images[interior], clean.images[interior])
    assert np.any(cluttered.images[~clean.masks] != clean.images[~clean.masks])


def test_bad_settings_are_one_line_errors():
    with pytest.raises(ConfigError, match="texture_contrast < min_contrast"):
        generate(10, texture_contrast=0.5, min_contrast=0.4)
    with pytest.raises(ConfigError, match="resolution"):
        generate(10, resolution=4)


def test_procedural16_loads_offline_with_train_statistics(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("procedural datasets must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    assert {"procedural16", "procedural32"} <= set(OFFLINE)
    ds = load_dataset("procedural16")
    assert ds.name == "procedural16" and ds.num_classes == 100
    assert ds.x_train.shape == (10000, 16, 16, 3) and ds.x_test.shape == (2000, 16, 16, 3)
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int32
    np.testing.assert_array_equal(np.bincount(ds.y_test, minlength=100), np.full(100, 20))
    scaled = ds.x_train.reshape(-1, 3) / 255.0
    np.testing.assert_allclose(ds.mean, scaled.mean(0), rtol=1e-10)
    np.testing.assert_allclose(ds.std, scaled.std(0), rtol=1e-10)


def test_load_procedural_draws_train_and_test_from_the_documented_seeds():
    ds = load_procedural(resolution=16, num_train=200, num_test=100, seed=5)
    seed_train, seed_test = np.random.SeedSequence(5).generate_state(2)
    np.testing.assert_array_equal(ds.x_train, generate(200, resolution=16, seed=int(seed_train)).images)
    np.testing.assert_array_equal(ds.y_test, generate(100, resolution=16, seed=int(seed_test)).labels)
    assert seed_train != seed_test
