"""A procedurally generated, CIFAR-shaped dataset: 100 classes in 20 superclasses, no files, no network.

Every image holds one *object* drawn over a cluttered background. What the
object is made of decides its class:

* **superclass** (20, :data:`SUPERCLASS_NAMES`): the silhouette, i.e. which
  parts the object has and how they are laid out (a disc, an H of three bars,
  two discs side by side, a frame ...). Parts are discs, boxes and convex
  polygons combined by union and difference.
* **fine class** (5 per superclass): the texture painted on the object in the
  object's own frame (stripes of one of four orientations, a checker, dots,
  rings, coarse stripes, plain; :data:`TEXTURE_NAMES`). Superclass ``s`` uses
  the five textures ``(2s + j) mod 10`` for ``j = 0..4``, so its fine classes
  differ only in a low-contrast pattern (stripes 45° apart, stripes against
  the checker made of two of them) while superclasses differ in shape: a
  model's confusions follow the superclass structure.

``label = 5 * superclass + j``; :func:`superclass_of` is ``label // 5``;
:data:`CLASS_NAMES` names all 100 (``"H/stripes-90"``).

Nuisances, drawn independently of the label: object and background colours
(the object differs from the background by at least ``min_contrast``, RGB
distance in [0, 1] units), a linear background gradient, position, scale,
rotation (textures turn with the object), texture phase and a ±10% period
jitter, distractor shapes behind the object (small discs, squares, triangles,
bars carrying random textures of the same bank) and uniform pixel noise.

The per-image mask marks the pixels where the object is visible (its
anti-aliased coverage is at least 1/4); distractors never cover the object,
so every masked pixel carries class evidence and no other pixel does.

The class definitions are constants: a seed draws only the nuisances and the
(exactly balanced) label order, so splits drawn from different seeds share
the same 100 concepts, and a seed fixes the output bit for bit. Geometry is
defined in image units ``[-1, 1]``, so the same seed gives the same scenes at
16x16 and 32x32 up to sampling (and pixel noise). Rendering is vectorised
numpy on one core: about 15 CPU-seconds for the 60k images of
``procedural32``, 1 for the 12k of ``procedural16``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxkd.data.dataset import Dataset
from jaxkd.errors import check

NUM_SUPERCLASSES = 20
FINE_PER_SUPERCLASS = 5
NUM_CLASSES = NUM_SUPERCLASSES * FINE_PER_SUPERCLASS

SUPERCLASS_NAMES = (
    "disc",
    "square",
    "triangle",
    "diamond",
    "ring",
    "plus",
    "T",
    "L",
    "H",
    "U",
    "two-discs",
    "dumbbell",
    "frame",
    "half-disc",
    "hourglass",
    "arrow",
    "ellipse",
    "three-discs",
    "crescent",
    "two-bars",
)
TEXTURE_NAMES = (
    "stripes-0",
    "stripes-45",
    "stripes-90",
    "stripes-135",
    "checker",
    "dots",
    "rings",
    "coarse-stripes-0",
    "coarse-stripes-90",
    "plain",
)

# Texture periods in object units (the object spans about [-1, 1]); at 16x16 the smallest object's
# fine period is ~3 pixels, above the sampling limit.
_PERIOD, _COARSE = 0.7, 1.15
# Each texture is a sum of two gratings (angle in degrees, period, weight) plus concentric rings
# (weight, period); the weights sum to at most 1 so the pattern stays in [0, 1].
_GRATINGS = (
    ((0, _PERIOD, 1.0), (0, _PERIOD, 0.0)),
    ((45, _PERIOD, 1.0), (0, _PERIOD, 0.0)),
    ((90, _PERIOD, 1.0), (0, _PERIOD, 0.0)),
    ((135, _PERIOD, 1.0), (0, _PERIOD, 0.0)),
    ((45, _PERIOD, 0.5), (135, _PERIOD, 0.5)),
    ((0, _PERIOD, 0.5), (90, _PERIOD, 0.5)),
    ((0, _PERIOD, 0.0), (0, _PERIOD, 0.0)),
    ((0, _COARSE, 1.0), (0, _PERIOD, 0.0)),
    ((90, _COARSE, 1.0), (0, _PERIOD, 0.0)),
    ((0, _PERIOD, 0.0), (0, _PERIOD, 0.0)),
)
_TEX_ANGLE = np.deg2rad(np.array([[g[0] for g in t] for t in _GRATINGS], np.float32))
_TEX_PERIOD = np.array([[g[1] for g in t] for t in _GRATINGS], np.float32)
_TEX_WEIGHT = np.array([[g[2] for g in t] for t in _GRATINGS], np.float32)
_RING_WEIGHT = np.array([1.0 if name == "rings" else 0.0 for name in TEXTURE_NAMES], np.float32)


def superclass_of(label):
    """Superclass of a fine label (int or array): ``label // 5``."""
    return np.asarray(label) // FINE_PER_SUPERCLASS


def texture_of(label):
    """Index into :data:`TEXTURE_NAMES` of the texture that defines fine label ``label`` (int or array)."""
    label = np.asarray(label)
    return (2 * (label // FINE_PER_SUPERCLASS) + label % FINE_PER_SUPERCLASS) % len(TEXTURE_NAMES)


CLASS_NAMES = tuple(
    f"{SUPERCLASS_NAMES[c // FINE_PER_SUPERCLASS]}/{TEXTURE_NAMES[texture_of(c)]}" for c in range(NUM_CLASSES)
)


# Signed distances (negative inside) in object units; shapes are unions (min) and differences.
def _circle(u, v, cx, cy, r):
    return np.hypot(u - cx, v - cy) - r


def _box(u, v, cx, cy, hx, hy):
    qx, qy = np.abs(u - cx) - hx, np.abs(v - cy) - hy
    return np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0)


def _polygon(u, v, points):
    """Convex polygon (vertices in either winding): the largest distance past an edge."""
    pts = np.asarray(points, np.float32)
    cx, cy = pts.mean(0)
    d = None
    for (x0, y0), (x1, y1) in zip(pts, np.roll(pts, -1, axis=0)):
        nx, ny = (y1 - y0, x0 - x1) / np.hypot(x1 - x0, y1 - y0)
        if (cx - x0) * nx + (cy - y0) * ny > 0:  # make the normal point outwards
            nx, ny = -nx, -ny
        e = (u - x0) * nx + (v - y0) * ny
        d = e if d is None else np.maximum(d, e)
    return d


def _ellipse(u, v, a, b):
    """Centred ellipse with semi-axes ``a`` (along u) and ``b``: Quilez's first-order distance."""
    k0 = np.hypot(u / a, v / b)
    k1 = np.hypot(u / a**2, v / b**2)
    return np.where(k1 > 1e-6, k0 * (k0 - 1) / np.maximum(k1, 1e-6), -b)


def _union(*ds):
    return np.minimum.reduce(ds)


def _minus(a, b):
    return np.maximum(a, -b)


_TRIANGLE = ((0.0, -0.9), (-0.9, 0.7), (0.9, 0.7))
# One signed distance per superclass, in SUPERCLASS_NAMES order; u points right, v down.
_SILHOUETTES = (
    lambda u, v: _circle(u, v, 0, 0, 0.9),
    lambda u, v: _box(u, v, 0, 0, 0.72, 0.72),
    lambda u, v: _polygon(u, v, _TRIANGLE),
    lambda u, v: (np.abs(u) + np.abs(v) - 0.95) / np.sqrt(2),
    lambda u, v: np.abs(np.hypot(u, v) - 0.66) - 0.27,
    lambda u, v: _union(_box(u, v, 0, 0, 0.88, 0.3), _box(u, v, 0, 0, 0.3, 0.88)),
    lambda u, v: _union(_box(u, v, 0, -0.6, 0.88, 0.28), _box(u, v, 0, 0.15, 0.3, 0.75)),
    lambda u, v: _union(_box(u, v, -0.55, 0, 0.32, 0.88), _box(u, v, 0, 0.56, 0.88, 0.32)),
    lambda u, v: _union(_box(u, v, -0.6, 0, 0.28, 0.88), _box(u, v, 0.6, 0, 0.28, 0.88), _box(u, v, 0, 0, 0.6, 0.22)),
    lambda u, v: _union(
        _box(u, v, -0.6, 0, 0.28, 0.88), _box(u, v, 0.6, 0, 0.28, 0.88), _box(u, v, 0, 0.6, 0.88, 0.28)
    ),
    lambda u, v: _union(_circle(u, v, -0.6, 0, 0.4), _circle(u, v, 0.6, 0, 0.4)),
    lambda u, v: _union(_circle(u, v, -0.55, 0, 0.38), _circle(u, v, 0.55, 0, 0.38), _box(u, v, 0, 0, 0.55, 0.16)),
    lambda u, v: _minus(_box(u, v, 0, 0, 0.82, 0.82), _box(u, v, 0, 0, 0.4, 0.4)),
    lambda u, v: np.maximum(_circle(u, v, 0, 0.35, 0.95), v - 0.35),
    lambda u, v: _union(
        _polygon(u, v, ((0, 0), (0.8, -0.9), (-0.8, -0.9))), _polygon(u, v, ((0, 0), (-0.8, 0.9), (0.8, 0.9)))
    ),
    lambda u, v: _union(_polygon(u, v, ((0.95, 0), (0.1, 0.75), (0.1, -0.75))), _box(u, v, -0.3, 0, 0.62, 0.2)),
    lambda u, v: _ellipse(u, v, 0.95, 0.52),
    lambda u, v: _union(*(_circle(u, v, 0.6 * np.cos(a), 0.6 * np.sin(a), 0.38) for a in np.deg2rad([-90, 30, 150]))),
    lambda u, v: _minus(_circle(u, v, 0, 0, 0.9), _circle(u, v, 0.45, 0, 0.68)),
    lambda u, v: _union(_box(u, v, 0, -0.46, 0.88, 0.27), _box(u, v, 0, 0.46, 0.88, 0.27)),
)
# Distractors: small parts like the objects' own, so clutter competes with the object for attention.
_PRIMITIVES = (_SILHOUETTES[0], _SILHOUETTES[1], _SILHOUETTES[2], lambda u, v: _box(u, v, 0, 0, 0.9, 0.3))
_PRIMITIVE_EXTENT = 1.15  # no primitive reaches further than this from its centre (object units)
_DISTRACTOR_RADIUS = (0.15, 0.35)  # as a fraction of half the image side


@dataclasses.dataclass(frozen=True)
class ProceduralSplit:
    """One generated split.

    Attributes:
      images: uint8 ``[N, H, W, 3]``.
      labels: int32 fine labels ``[N]`` in ``0..99``.
      superclasses: int32 ``[N]`` in ``0..19`` (``labels // 5``).
      masks: bool ``[N, H, W]``, True where the object (the class evidence) is visible.
    """

    images: np.ndarray
    labels: np.ndarray
    superclasses: np.ndarray
    masks: np.ndarray


def generate(
    num: int,
    *,
    resolution: int = 32,
    seed: int = 0,
    noise: float = 0.04,
    clutter: float = 2.0,
    texture_contrast: float = 0.35,
    min_contrast: float = 0.5,
    gradient: float = 0.15,
    max_rotation: float = 15.0,
    scale: tuple[float, float] = (0.55, 0.85),
) -> ProceduralSplit:
    """Draw ``num`` images; each class appears ``num // 100`` or ``num // 100 + 1`` times, in shuffled order.

    Args:
      num: number of images.
      resolution: height and width in pixels (16 and 32 are the presets; >= 8).
      seed: fixes every draw; the same seed gives bitwise-equal output.
      noise: standard deviation of the (uniform, independent) pixel noise, in [0, 1] units.
      clutter: expected number of distractor shapes per image (0: none).
      texture_contrast: amplitude of the class-defining texture, in [0, 1] RGB units.
      min_contrast: least RGB distance between object and background colours;
        must exceed ``texture_contrast`` so that every object pixel differs
        from the background.
      gradient: largest slope of the background's linear luminance ramp, per half image side.
      max_rotation: objects are rotated uniformly within ± this many degrees.
      scale: range of the object's radius as a fraction of half the image side.
    """
    check(num >= 0, f"num must be >= 0, got {num}")
    check(resolution >= 8, f"resolution must be at least 8 pixels, got {resolution}")
    check(
        noise >= 0 and clutter >= 0 and gradient >= 0 and max_rotation >= 0,
        "noise, clutter, gradient and max_rotation must be >= 0",
    )
    check(
        0 <= texture_contrast < min_contrast <= 1,
        f"need 0 <= texture_contrast < min_contrast <= 1, got {texture_contrast} and {min_contrast}",
    )
    check(0 < scale[0] <= scale[1] <= 1, f"scale must satisfy 0 < low <= high <= 1, got {scale}")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(num) % NUM_CLASSES).astype(np.int32)
    supers = superclass_of(labels).astype(np.int32)

    # Every nuisance is drawn here, before rendering, so the draws do not depend on chunking.
    # A shape is a dict of per-image arrays: centre, angle, radius, colour, direction (of the texture's
    # colour swing) and the texture's kind, phase and stretch.
    radius = rng.uniform(*scale, num).astype(np.float32)
    centre = (rng.uniform(-1, 1, (num, 2)) * (1 - 0.8 * radius[:, None])).astype(np.float32)
    angle = np.deg2rad(rng.uniform(-max_rotation, max_rotation, num)).astype(np.float32)
    obj = {"centre": centre, "angle": angle, "radius": radius, **_texture_params(rng, texture_of(labels), num)}
    background = rng.uniform(0, 1, (num, 3)).astype(np.float32)
    obj["colour"] = _colour_apart(rng, background, min_contrast)
    obj["direction"] = _unit(obj["colour"] - background)
    ramp = _unit(rng.normal(size=(num, 2))) * rng.uniform(0, gradient, (num, 1)).astype(np.float32)
    slots = int(np.ceil(2 * clutter))
    active = rng.random((num, slots)) < (clutter / slots if slots else 0)
    kind = rng.integers(0, len(_PRIMITIVES), (num, slots))
    bulk = {
        "radius": rng.uniform(*_DISTRACTOR_RADIUS, (num, slots)).astype(np.float32),
        "centre": rng.uniform(-1, 1, (num, slots, 2)).astype(np.float32),
        "angle": rng.uniform(0, 2 * np.pi, (num, slots)).astype(np.float32),
        "colour": rng.uniform(0, 1, (num, slots, 3)).astype(np.float32),
        "direction": _unit(rng.normal(size=(num, slots, 3))),
    }
    distractors = [
        {
            **{k: v[:, slot] for k, v in bulk.items()},
            **_texture_params(rng, rng.integers(0, len(TEXTURE_NAMES), num), num),
        }
        for slot in range(slots)
    ]

    grid = (np.arange(resolution, dtype=np.float32) + 0.5) / resolution * 2 - 1
    px_per_unit = resolution / 2
    # Distractors are drawn in a square window around their centre, large enough for the biggest one.
    half = int(np.ceil(_PRIMITIVE_EXTENT * _DISTRACTOR_RADIUS[1] * px_per_unit)) + 2
    window = min(resolution, 2 * half)
    top_left = np.floor((bulk["centre"][..., ::-1] + 1) * px_per_unit).astype(int) - half
    corner = np.clip(top_left, 0, resolution - window)  # [num, slots, (row, col)]
    origin = np.zeros((num, 2), int)
    images = np.empty((num, resolution, resolution, 3), np.uint8)
    masks = np.zeros((num, resolution, resolution), bool)
    chunk = max(1, 2**16 // resolution)
    for start in range(0, num, chunk):
        sl = slice(start, min(num, start + chunk))
        slope = ramp[sl, :, None, None]
        canvas = background[sl, None, None, :] + (slope[:, 0] * grid + slope[:, 1] * grid[:, None])[..., None]
        for slot, shape in enumerate(distractors):
            for k, sdf in enumerate(_PRIMITIVES):
                rows = np.flatnonzero(active[sl, slot] & (kind[sl, slot] == k))
                if rows.size:
                    i = rows + start
                    _paint(canvas, rows, corner[i, slot], window, grid, sdf, _take(shape, i), texture_contrast)
        for s, sdf in enumerate(_SILHOUETTES):
            rows = np.flatnonzero(supers[sl] == s)
            if rows.size:
                i = rows + start
                masks[i] = _paint(canvas, rows, origin[i], resolution, grid, sdf, _take(obj, i), texture_contrast)
        if noise > 0:  # uniform noise of standard deviation `noise` (4x cheaper to draw than Gaussian)
            canvas += (2 * np.sqrt(3) * noise) * (rng.random(canvas.shape, dtype=np.float32) - 0.5)
        images[sl] = np.rint(np.clip(canvas, 0, 1) * 255).astype(np.uint8)
    return ProceduralSplit(images=images, labels=labels, superclasses=supers, masks=masks)


def load_procedural(
    *, resolution: int = 32, num_train: int = 50000, num_test: int = 10000, seed: int = 0, **difficulty
) -> Dataset:
    """Train and test splits of :func:`generate` as a :class:`Dataset` named ``procedural<resolution>``.

    The splits come from two independent seeds derived from ``seed``
    (``np.random.SeedSequence(seed).generate_state(2)``); ``difficulty``
    passes :func:`generate`'s nuisance settings. Images stay uint8; ``mean``
    and ``std`` are the training split's per-channel statistics in [0, 1]
    units, as for real CIFAR.
    """
    seed_train, seed_test = (int(s) for s in np.random.SeedSequence(seed).generate_state(2))
    train = generate(num_train, resolution=resolution, seed=seed_train, **difficulty)
    test = generate(num_test, resolution=resolution, seed=seed_test, **difficulty)
    # Per-channel statistics from 256-bin histograms: exact, and no float copy of the images.
    levels = np.arange(256) / 255.0
    counts = np.stack([np.bincount(train.images[..., c].ravel(), minlength=256) for c in range(3)])
    mean = counts @ levels / counts.sum(1)
    std = np.sqrt(counts @ levels**2 / counts.sum(1) - mean**2)
    return Dataset(
        f"procedural{resolution}",
        train.images,
        train.labels,
        test.images,
        test.labels,
        num_classes=NUM_CLASSES,
        mean=tuple(mean.tolist()),
        std=tuple(std.tolist()),
    )


def _unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _colour_apart(rng, background, min_distance):
    """Uniform RGB colours at least ``min_distance`` from ``background`` (rejection sampling)."""
    colour = rng.uniform(0, 1, background.shape).astype(np.float32)
    bad = np.linalg.norm(colour - background, axis=-1) < min_distance
    while bad.any():
        colour[bad] = rng.uniform(0, 1, (int(bad.sum()), 3))
        bad = np.linalg.norm(colour - background, axis=-1) < min_distance
    return colour


def _texture_params(rng, kind, num):
    """Per-image texture: its kind, a random phase per component and a ±10% period jitter."""
    return {
        "texture": np.asarray(kind),
        "phase": rng.uniform(0, 2 * np.pi, (num, 3)).astype(np.float32),
        "stretch": rng.uniform(0.9, 1.1, num).astype(np.float32),
    }


def _take(shape, i):
    return {k: v[i] for k, v in shape.items()}


def _pattern(shape, n, u, v):
    """Texture in [0, 1] at object-frame points ``u, v`` ``[P]`` of the shapes' rows ``n`` ``[P]``."""
    kind, phase, stretch = shape["texture"], shape["phase"], shape["stretch"]
    wave = 2 * np.pi / (_TEX_PERIOD[kind] * stretch[:, None])  # per image [m, 2], then per point
    kx, ky = (wave * np.cos(_TEX_ANGLE[kind]))[n], (wave * np.sin(_TEX_ANGLE[kind]))[n]
    weight, phase = _TEX_WEIGHT[kind][n], phase[n]
    total = np.zeros_like(u)
    for j in range(2):
        if weight[:, j].any():
            total += weight[:, j] * np.cos(kx[:, j] * u + ky[:, j] * v + phase[:, j])
    ring = _RING_WEIGHT[kind][n]
    if ring.any():
        total += ring * np.cos(np.hypot(u, v) * (2 * np.pi / (_PERIOD * stretch))[n] + phase[:, 2])
    return 0.5 + 0.5 * total


def _paint(canvas, rows, corner, size, grid, sdf, shape, contrast):
    """Composite one textured shape onto each of ``canvas[rows]`` (in place).

    The shape is evaluated on the ``size x size`` pixel window whose top-left
    pixel is ``corner`` ``[n, 2]``; returns its mask on that window ``[n, size, size]``.
    """
    offsets = np.arange(size)
    ys, xs = grid[corner[:, 0, None] + offsets][:, :, None], grid[corner[:, 1, None] + offsets][:, None, :]
    cos, sin = np.cos(shape["angle"])[:, None, None], np.sin(shape["angle"])[:, None, None]
    dx, dy = xs - shape["centre"][:, 0, None, None], ys - shape["centre"][:, 1, None, None]
    r = shape["radius"][:, None, None]
    u, v = (cos * dx + sin * dy) / r, (cos * dy - sin * dx) / r
    # Distance in pixels; coverage is a 1-pixel linear ramp across the edge, cut below 1/4 so that
    # every masked pixel is visibly changed and every unmasked pixel untouched.
    dist = sdf(u, v) * r * (len(grid) / 2)
    mask = dist <= 0.25
    n, i, j = np.nonzero(mask)  # the texture is only evaluated where the shape is drawn
    cover = np.minimum(0.5 - dist[n, i, j], 1)[:, None]
    # Moving along the object-minus-background direction keeps the object at least
    # min_contrast - contrast away from the background (clipping only moves it further).
    shade = contrast * (2 * _pattern(shape, n, u[n, i, j], v[n, i, j]) - 1)
    paint = np.clip(shape["colour"][n] + shade[:, None] * shape["direction"][n], 0, 1)
    at = (rows[n], corner[n, 0] + i, corner[n, 1] + j)
    canvas[at] += cover * (paint - canvas[at])
    return mask
