import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkd.data.augment import augment, normalize, random_crop, random_flip, random_rotation, rotate
from tests.conftest import TOL

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def _distinct_image(shape, dtype=np.float32, seed=0):
    """An image whose pixels are all different, so that no two crops or flips coincide."""
    values = np.random.default_rng(seed).permutation(np.prod(shape)) + 1
    if dtype == np.uint8:
        values = values % 255 + 1  # 1..255: never equal to the zero fill
    return values.reshape(shape).astype(dtype)


def _keys(n, seed=0):
    return jax.random.split(jax.random.key(seed), n)


def _matching_crops(out, x, padding):
    """All (dy, dx) at which ``out`` equals a crop of the zero-padded ``x`` (NumPy reference)."""
    H, W = x.shape[:2]
    padded = np.pad(x, ((padding, padding), (padding, padding), (0, 0)))
    return [
        (dy, dx)
        for dy in range(2 * padding + 1)
        for dx in range(2 * padding + 1)
        if np.array_equal(out, padded[dy : dy + H, dx : dx + W])
    ]


def _bilinear_rotate_reference(x, degrees):
    """Counter-clockwise rotation about the centre, bilinear, zero outside; float64 NumPy loops."""
    H, W, C = x.shape
    t = np.deg2rad(degrees)
    cy, cx = (H - 1) / 2, (W - 1) / 2
    out = np.zeros((H, W, C))
    for i in range(H):
        for j in range(W):
            # Output point in (x right, y up) coordinates, rotated back by -t onto the input.
            px, py = j - cx, cy - i
            sx, sy = np.cos(t) * px + np.sin(t) * py, -np.sin(t) * px + np.cos(t) * py
            r, c = cy - sy, cx + sx
            r0, c0 = int(np.floor(r)), int(np.floor(c))
            for rr, wr in ((r0, 1 - (r - r0)), (r0 + 1, r - r0)):
                for cc, wc in ((c0, 1 - (c - c0)), (c0 + 1, c - c0)):
                    if 0 <= rr < H and 0 <= cc < W:
                        out[i, j] += wr * wc * x[rr, cc]
    return out


# --- crop -------------------------------------------------------------------------------------


def test_random_crop_is_one_padded_crop_and_offsets_cover_the_range():
    padding, n = 2, 300
    x = _distinct_image((6, 7, 2))
    crop = jax.jit(jax.vmap(functools.partial(random_crop, padding=padding), in_axes=(0, None)))
    outs = np.asarray(crop(_keys(n), x))
    offsets = []
    for out in outs:
        matches = _matching_crops(out, x, padding)
        assert len(matches) == 1, matches
        offsets.append(matches[0])
    dy, dx = np.array(offsets).T
    assert set(dy) == set(dx) == set(range(2 * padding + 1))
    assert np.mean(dy == dx) < 0.5  # independent rows/cols: equal with probability 1/5


def test_cifar_crop_through_augment_with_uint8():
    x = _distinct_image((8, 32, 32, 3), np.uint8)
    out = np.asarray(jax.jit(functools.partial(augment, crop_padding=4, flip=False))(jax.random.key(1), x))
    for o, xi in zip(out, x):
        assert len(_matching_crops(o, xi, 4)) == 1


# --- flip -------------------------------------------------------------------------------------


def test_random_flip_is_left_right_with_probability_half():
    n = 2000
    x = _distinct_image((3, 4, 2))
    outs = np.asarray(jax.jit(jax.vmap(random_flip, in_axes=(0, None)))(_keys(n), x))
    same = np.all(outs == x, axis=(1, 2, 3))
    flipped = np.all(outs == x[:, ::-1], axis=(1, 2, 3))
    assert np.all(same ^ flipped)
    # Binomial(n, 1/2): standard deviation sqrt(n)/2 ≈ 22; allow 5 of them.
    assert abs(flipped.sum() - n / 2) < 5 * np.sqrt(n) / 2


# --- rotation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_zero_rotation_is_exact_identity(dtype):
    x = _distinct_image((9, 9, 3), dtype)
    np.testing.assert_array_equal(jax.jit(rotate)(x, 0.0), x)
    rot0 = jax.jit(functools.partial(random_rotation, max_degrees=0.0))
    np.testing.assert_array_equal(rot0(jax.random.key(3), x), x)


@pytest.mark.parametrize("k", [1, 2, -1])
def test_quarter_turns_match_rot90_counter_clockwise(k):
    x = _distinct_image((7, 7, 2))
    rtol, atol = TOL["float32"]
    # Pixel values reach 98; the tolerance is relative to that scale.
    np.testing.assert_allclose(jax.jit(rotate)(x, 90.0 * k), np.rot90(x, k, axes=(0, 1)), rtol=rtol, atol=100 * atol)


@pytest.mark.parametrize("degrees", [30.0, -17.0])
def test_rotation_matches_numpy_bilinear_with_zero_fill(degrees):
    x = _distinct_image((8, 6, 2))
    expected = _bilinear_rotate_reference(x.astype(np.float64), degrees)
    np.testing.assert_allclose(jax.jit(rotate)(x, degrees), expected, rtol=1e-5, atol=1e-4)
    xu = _distinct_image((8, 6, 2), np.uint8)
    out = np.asarray(jax.jit(rotate)(xu, degrees))
    assert out.dtype == np.uint8
    ref_u = _bilinear_rotate_reference(xu.astype(np.float64), degrees)
    expected_u = np.clip(np.round(ref_u), 0, 255)
    # Rounded, not truncated; float32 and float64 may round a near-.5 tie differently.
    tie = np.abs(ref_u - np.floor(ref_u) - 0.5) < 1e-3
    np.testing.assert_array_equal(out[~tie], expected_u[~tie])
    assert np.max(np.abs(out.astype(np.int64) - expected_u)) <= 1


def test_random_rotation_angles_are_uniform_in_range():
    # A single bright pixel right of the centre; its rotated centroid gives the angle drawn.
    n, max_degrees = 200, 30.0
    x = np.zeros((21, 21, 1), np.float32)
    x[10, 17] = 1.0
    outs = np.asarray(
        jax.jit(jax.vmap(functools.partial(random_rotation, max_degrees=max_degrees), in_axes=(0, None)))(_keys(n), x)
    )[..., 0]
    rows, cols = np.mgrid[:21, :21] - 10.0
    mass = outs.sum((1, 2))
    up, right = -(outs * rows).sum((1, 2)) / mass, (outs * cols).sum((1, 2)) / mass
    angles = np.rad2deg(np.arctan2(up, right))
    assert np.all(np.abs(angles) <= max_degrees + 1.0)
    assert angles.min() < -0.8 * max_degrees and angles.max() > 0.8 * max_degrees
    # Uniform on [-30, 30]: standard deviation 30/sqrt(3) ≈ 17.3, of the mean of 200 ≈ 1.2.
    assert abs(angles.mean()) < 5 * max_degrees / np.sqrt(3) / np.sqrt(n)


# --- augment ----------------------------------------------------------------------------------


AUG = jax.jit(functools.partial(augment, crop_padding=4, flip=True, rotation_degrees=15.0))


def test_same_key_same_output_and_different_keys_differ():
    x = _distinct_image((4, 32, 32, 3), np.uint8)
    a, b = AUG(jax.random.key(7), x), AUG(jax.random.key(7), x)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, AUG(jax.random.key(8), x))


def test_identical_examples_in_a_batch_get_independent_draws():
    n = 50
    x = np.repeat(_distinct_image((1, 8, 8, 3)), 2 * n, axis=0)
    outs = np.asarray(jax.jit(functools.partial(augment, crop_padding=2, flip=True))(jax.random.key(5), x))
    differ = np.any(outs[0::2] != outs[1::2], axis=(1, 2, 3))
    # A pair gets the same crop and flip with probability 1/25 * 1/2 = 0.02: about 1 of 50 pairs.
    assert differ.sum() >= n - 6


def test_everything_off_is_identity():
    x = _distinct_image((3, 5, 5, 2))
    off = jax.jit(functools.partial(augment, crop_padding=0, flip=False, rotation_degrees=0.0))
    np.testing.assert_array_equal(off(jax.random.key(0), x), x)


@pytest.mark.parametrize(
    "options",
    [
        dict(crop_padding=2, flip=False, rotation_degrees=0.0),
        dict(crop_padding=0, flip=True, rotation_degrees=0.0),
        dict(crop_padding=0, flip=False, rotation_degrees=20.0),
    ],
)
def test_each_switch_alone_changes_most_examples(options):
    x = np.repeat(_distinct_image((1, 6, 6, 2)), 16, axis=0)
    out = np.asarray(jax.jit(functools.partial(augment, **options))(jax.random.key(4), x))
    # Unchanged with probability 1/25 (crop), 1/2 (flip), 0 (rotation): 16 draws rarely leave 12 unchanged.
    assert np.sum(np.any(out != x, axis=(1, 2, 3))) >= 4


@pytest.mark.parametrize(
    "shape, dtype", [((4, 32, 32, 3), np.uint8), ((4, 32, 32, 3), np.float32), ((4, 8, 8), np.float32)]
)
def test_shape_and_dtype_are_preserved(shape, dtype):
    x = _distinct_image(shape, dtype)
    out = AUG(jax.random.key(0), x)
    assert out.shape == x.shape and out.dtype == x.dtype


def test_no_channel_axis_equals_single_channel():
    x = _distinct_image((4, 8, 8))
    np.testing.assert_array_equal(AUG(jax.random.key(2), x), AUG(jax.random.key(2), x[..., None])[..., 0])


def test_bad_rank_is_a_one_line_error():
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        augment(jax.random.key(0), np.zeros((32, 32), np.float32))


# --- normalize --------------------------------------------------------------------------------


def test_normalize_matches_numpy():
    x = _distinct_image((2, 4, 4, 3), np.uint8)
    rtol, atol = TOL["float32"]
    expected = (x.astype(np.float64) / 255 - np.array(CIFAR_MEAN)) / np.array(CIFAR_STD)
    out = jax.jit(normalize)(x, jnp.array(CIFAR_MEAN), jnp.array(CIFAR_STD))
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, expected, rtol=rtol, atol=10 * atol)
    xf = x.astype(np.float32) / 255
    np.testing.assert_allclose(normalize(xf, CIFAR_MEAN, CIFAR_STD), expected, rtol=rtol, atol=10 * atol)
    np.testing.assert_array_equal(normalize(xf), xf)
    np.testing.assert_allclose(normalize(x), x / 255.0, rtol=rtol, atol=atol)
    digits = _distinct_image((2, 8, 8)) / 64
    np.testing.assert_allclose(normalize(digits, 0.5, 0.25), (digits - 0.5) / 0.25, rtol=rtol, atol=atol)
