"""On-device image augmentation for CIFAR-style training: jittable, vmapped, one key per example.

The standard CIFAR recipe ``torchvision.transforms.RandomCrop(32, padding=4)`` followed by
``RandomHorizontalFlip()`` is ``augment(key, x, crop_padding=4, flip=True)``; adding
``RandomRotation(d)`` is ``rotation_degrees=d``.

Conventions:

* Images are channels-last, ``x_HxWxC`` for one example and ``x_BxHxWxC`` for a batch. ``augment``
  also takes ``[B, H, W]`` (no channel axis, e.g. 8×8 digits).
* Order within one example: crop, then flip, then rotation; each is skipped when switched off.
  The switches are Python values (static under ``jax.jit``).
* Fill is 0 in the space the pixels are in, as torchvision's default ``fill=0``: augment raw pixels
  (uint8 or [0, 1] floats) *before* ``normalize`` so that padding and rotation corners are black.
* ``augment`` splits ``key`` into one key per example (``jax.random.split(key, B)``), so the examples
  of one batch get independent draws, and within an example the key is split once more into
  crop/flip/rotation keys. The same key and input give bitwise the same output; fold the step into
  the key (``jax.random.fold_in(key, step)``) for a fresh draw each step.
* Output shape and dtype equal the input's. Rotation interpolates in float32 and, for integer
  images, rounds and clips back to the dtype's range.
* Rotation angles are in degrees, positive = counter-clockwise as the image is displayed (row 0 at
  the top), as in torchvision; ``rotate(x, 90)`` equals ``np.rot90(x, 1, axes=(0, 1))`` for square
  images. The centre is ``((H - 1) / 2, (W - 1) / 2)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.ndimage import map_coordinates


def random_crop(key, x_HxWxC, *, padding: int):
    """Zero-pad ``padding`` pixels on each spatial side, then crop a random ``H×W`` window.

    Row and column offsets are independent and uniform in ``[0, 2 * padding]``
    (torchvision ``RandomCrop(size, padding=padding)``).
    """
    if padding < 0:
        raise ValueError(f"crop padding must be >= 0, got {padding}")
    H, W, C = x_HxWxC.shape
    padded = jnp.pad(x_HxWxC, ((padding, padding), (padding, padding), (0, 0)))
    dy, dx = jax.random.randint(key, (2,), 0, 2 * padding + 1)
    zero = jnp.zeros((), dy.dtype)
    return lax.dynamic_slice(padded, (dy, dx, zero), (H, W, C))


def random_flip(key, x_HxWxC):
    """Flip left-right (the width axis) with probability 1/2 (torchvision ``RandomHorizontalFlip()``)."""
    return jnp.where(jax.random.bernoulli(key), x_HxWxC[:, ::-1], x_HxWxC)


def rotate(x_HxWxC, degrees):
    """Rotate counter-clockwise by ``degrees`` about the image centre; bilinear, zero fill.

    Output pixel ``(i, j)`` samples the input at the point that the rotation carries onto it
    (``map_coordinates(order=1)``); points outside the image read 0. torchvision's
    ``RandomRotation`` samples nearest-neighbour by default; bilinear is chosen here (torchvision's
    ``interpolation=BILINEAR``). ``degrees`` may be traced; 0 gives the input back exactly.
    """
    dtype = x_HxWxC.dtype
    H, W, _ = x_HxWxC.shape
    compute = jnp.promote_types(dtype, jnp.float32) if jnp.issubdtype(dtype, jnp.floating) else jnp.float32
    theta = jnp.deg2rad(jnp.asarray(degrees, compute))
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    cy, cx = (H - 1) / 2, (W - 1) / 2
    di = jnp.arange(H, dtype=compute)[:, None] - cy
    dj = jnp.arange(W, dtype=compute)[None, :] - cx
    # Inverse map in (x right, y up) coordinates: x_in = R(-theta) x_out, with y = -row.
    rows = cy + sin * dj + cos * di
    cols = cx + cos * dj - sin * di

    def one_channel(ch_HxW):
        return map_coordinates(ch_HxW, [rows, cols], order=1, mode="constant", cval=0.0)

    out = jax.vmap(one_channel, in_axes=2, out_axes=2)(x_HxWxC.astype(compute))
    if jnp.issubdtype(dtype, jnp.integer):
        info = jnp.iinfo(dtype)
        out = jnp.clip(jnp.round(out), info.min, info.max)
    return out.astype(dtype)


def random_rotation(key, x_HxWxC, *, max_degrees: float):
    """``rotate`` by an angle uniform in ``[-max_degrees, max_degrees]``; identity when it is 0."""
    if max_degrees < 0:
        raise ValueError(f"rotation max_degrees must be >= 0, got {max_degrees}")
    angle = jax.random.uniform(key, (), jnp.float32, -max_degrees, max_degrees)
    return rotate(x_HxWxC, angle)


def augment(key, x_BxHxWxC, *, crop_padding: int = 4, flip: bool = True, rotation_degrees: float = 0.0):
    """Crop, flip and rotate each example of a batch with its own key (see module docstring).

    Args:
      key: a PRNG key; split into one key per example.
      x_BxHxWxC: images ``[B, H, W, C]`` or ``[B, H, W]``, any dtype.
      crop_padding: pad-and-crop margin in pixels; 0 switches cropping off.
      flip: random horizontal flip with probability 1/2.
      rotation_degrees: maximum rotation angle; 0 switches rotation off.

    Returns:
      Augmented images, same shape and dtype as ``x_BxHxWxC``.
    """
    if x_BxHxWxC.ndim not in (3, 4):
        raise ValueError(f"augment expects images [B, H, W, C] or [B, H, W], got shape {x_BxHxWxC.shape}")
    if crop_padding < 0 or rotation_degrees < 0:
        raise ValueError(f"crop_padding and rotation_degrees must be >= 0, got {crop_padding}, {rotation_degrees}")
    no_channel = x_BxHxWxC.ndim == 3
    x = x_BxHxWxC[..., None] if no_channel else x_BxHxWxC

    def one(key_i, x_HxWxC):
        k_crop, k_flip, k_rot = jax.random.split(key_i, 3)
        if crop_padding > 0:
            x_HxWxC = random_crop(k_crop, x_HxWxC, padding=crop_padding)
        if flip:
            x_HxWxC = random_flip(k_flip, x_HxWxC)
        if rotation_degrees > 0:
            x_HxWxC = random_rotation(k_rot, x_HxWxC, max_degrees=rotation_degrees)
        return x_HxWxC

    out = jax.vmap(one)(jax.random.split(key, x.shape[0]), x)
    return out[..., 0] if no_channel else out


def normalize(x, mean=None, std=None):
    """Per-channel ``(x - mean) / std``; integer (uint8) pixels are first scaled to [0, 1] by /255.

    Float input is not rescaled. ``mean`` and ``std`` are scalars or length-``C`` sequences
    broadcast over the last (channel) axis; ``None`` means 0 and 1. Returns float32 (or the
    input's float dtype).
    """
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.floating):
        out = x
    else:
        out = x.astype(jnp.float32) / 255.0
    bshape = (1,) * (out.ndim - 1) + (-1,)
    if mean is not None:
        out = out - jnp.reshape(jnp.asarray(mean, out.dtype), bshape)
    if std is not None:
        out = out / jnp.reshape(jnp.asarray(std, out.dtype), bshape)
    return out
