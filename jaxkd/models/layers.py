"""Layers with PyTorch's conventions, shared by the CIFAR model zoo.

The zoo reproduces the reference implementations' parameter counts and
initialisation (RepDistiller, pytorch-cifar100): 3x3 convolutions padded by 1
on each side (XLA's "SAME" pads stride-2 convolutions asymmetrically),
Kaiming-normal (fan-out) convolution kernels, BatchNorm with PyTorch's
momentum 0.1 (flax's 0.9) and eps 1e-5, and linear layers initialised
uniformly in ±1/sqrt(fan_in) as ``torch.nn.Linear`` is. ``dtype`` is the
compute dtype (e.g. bfloat16); parameters stay float32.

Convolutions differentiate through :func:`canonical_conv`, whose backward
pass is written as two forward convolutions on explicitly transposed
operands. XLA:CPU rewrites only top-level convolutions into its fast layout;
the gradient convolutions JAX emits inside a loop (the trainer's
``lax.scan``) kept a non-canonical layout and ran on a slow generic path,
16x slower per step for a small ResNet here (jax-ml/jax#12868). The explicit
form is the same arithmetic on every backend. On CPU two more choices
(benchmarks/RESULTS.md, ``cpu_profile.py`` and ``cnn_sweep.py``): the
differentiated convolution fences its input (:func:`_fence`), so that XLA
writes the activation once instead of recomputing it inside the transposed
copy its weight gradient reads (the 8-seed CIFAR ResNet KD sweep 1.05-1.08x
faster), and 3x3 convolutions on small maps with many channels run as
Winograd F(2x2, 3x3) (:func:`use_winograd`; the sweep 1.06-1.07x faster).
Both change results by float round-off only; ``env.json`` records both.
"""

from __future__ import annotations

import contextlib
import functools
import os

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

_NHWC = ("NHWC", "HWIO", "NHWC")


# None: fence on CPU only (fence_conv_inputs); True / False force it (benchmarks/cnn_sweep.py measures both).
CONV_INPUT_FENCE: bool | None = None


def _cpu_choice(forced: bool | None) -> bool:
    """``forced`` where set, else on for CPU unless ``JAXKD_XLA_OPTIONS=jaxlib`` asks for XLA's defaults."""
    if forced is not None:
        return forced
    return jax.default_backend() == "cpu" and os.environ.get("JAXKD_XLA_OPTIONS", "").strip() != "jaxlib"


def fence_conv_inputs() -> bool:
    """Whether a differentiated convolution fences its input (:func:`_fence`): ``CONV_INPUT_FENCE``, else CPU."""
    return _cpu_choice(CONV_INPUT_FENCE)


def _fence(x):
    """``x`` divided by ones made from ``x``: the same normal finite values bit for bit (subnormals are flushed to
    zero, as XLA:CPU does everywhere), written to memory once.

    The fenced tensor is unchanged, but the program around it fuses
    differently, so a whole training run can differ by float round-off
    (``cifar_kd``'s default moved by several points; docs/cifar.md).

    The weight gradient below reads the convolution's input transposed
    (channels first, batch last). Left alone, XLA:CPU fuses the element-wise
    ops that produced the input (BatchNorm, ReLU, the shortcut) into that
    transposed copy and recomputes them there, in an order its loop emitter
    handles badly: about 24 ms instead of 2.5 ms for a [64, 32, 32, 64]
    activation on one core (benchmarks/RESULTS.md, ``cpu_profile.py``).
    Through this expression, which reads ``x`` twice, XLA writes the input
    once and the transpose reads it (``tests/test_compiler_options.py``
    checks the compiled program). Multiplying by the same ones left two
    such copies in the test's small ResNet; dividing by a scalar one does not
    work at all (XLA turns it into a multiplication and recomputes the rest
    inside the copy). Non-finite entries become NaN (``inf / nan``); a run
    with those has diverged anyway.
    """
    return x / (x * 0 + 1)


# None: Winograd for small maps on CPU only (use_winograd); True / False force it (benchmarks measure both).
CONV_WINOGRAD: bool | None = None

# Winograd F(m x m, 3x3) (Lavin & Gray 2016, arXiv 1509.09308): y = A^T [(G w G^T) * (B^T d B)] A per input tile of
# m + 2, from the interpolation points 0, 1, -1 (m = 2) and 0, 1, -1, 2, -2 (m = 4), each with the point at infinity.
_WINO = {
    2: (
        ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1)),
        ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0)),
        ((1, 1, 1, 0), (0, 1, -1, -1)),
    ),
    4: (
        (
            (4, 0, -5, 0, 1, 0),
            (0, -4, -4, 1, 1, 0),
            (0, 4, -4, -1, 1, 0),
            (0, -2, -1, 2, 1, 0),
            (0, 2, -1, -2, 1, 0),
            (0, 4, 0, -5, 0, 1),
        ),
        (
            (1 / 4, 0, 0),
            (-1 / 6, -1 / 6, -1 / 6),
            (-1 / 6, 1 / 6, -1 / 6),
            (1 / 24, 1 / 12, 1 / 6),
            (1 / 24, -1 / 12, 1 / 6),
            (0, 0, 1),
        ),
        ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1)),
    ),
}
# The output tile: 2, F(2x2, 3x3) everywhere; 4, F(4x4, 3x3) where both sides of the map divide by 4. On the AMD VM
# F(4x4) ran at 0.32-0.87x XLA's convolution inside the engine's lax.map (F(2x2) 1.0-1.6x; benchmarks/winograd.py) and
# the 8-seed CIFAR ResNet KD sweep at 0.90x F(2x2) (cnn_sweep.py's map_sharded_winograd_f4): kept for measuring.
WINOGRAD_TILE = 2


def winograd_enabled() -> bool:
    """Whether :func:`use_winograd` may pick Winograd: ``CONV_WINOGRAD``, else CPU."""
    return _cpu_choice(CONV_WINOGRAD)


# Winograd's map sizes: at most this many positions (16x16) with at least this many channels in and out.
WINOGRAD_MAX_POSITIONS, WINOGRAD_MIN_CHANNELS = 256, 128


def winograd_maps() -> str | None:
    """The maps :func:`use_winograd` takes, for ``env.json`` and fingerprints (the rule changes round-off), or
    None where Winograd is off."""
    if not winograd_enabled():
        return None
    maps = f"3x3 stride 1, <= {WINOGRAD_MAX_POSITIONS} positions, >= {WINOGRAD_MIN_CHANNELS} channels"
    if WINOGRAD_TILE == 2:  # F(2x2) everywhere: the string of every run so far
        return maps
    return f"{maps}, F({WINOGRAD_TILE}x{WINOGRAD_TILE}) where the map divides, else F(2x2)"


def use_winograd(x_shape, w_shape, stride, pad, dtype) -> bool:
    """Winograd for a float32 3x3, stride-1, padding-1 convolution on an even map of at most 256 positions (16x16)
    with 128 channels or more in and out, where it beat XLA:CPU's convolution on one core at batch 64: 1.4-1.7x at
    8x8x128-256 and 16x16x256 on the Intel AVX-512 VM, 1.1-1.2x there at 16x16x128; 1.7-1.9x at 8x8 and 1.45x at
    16x16x128 on the AMD AVX2 VM (benchmarks/RESULTS.md), and 1.03-1.25x there with the gradients inside the engine's
    ``lax.map`` (``winograd.py``). XLA's convolution elsewhere: at 32x32x64 Winograd was 1.4x slower on the Intel VM
    (1.2x faster on the AMD one in a scratch measurement), and at 16x16x64 no faster."""
    _, h, w, c = x_shape
    o = w_shape[-1]
    small = h * w <= WINOGRAD_MAX_POSITIONS and min(c, o) >= WINOGRAD_MIN_CHANNELS
    return (
        winograd_enabled()
        and dtype == jnp.float32
        and tuple(w_shape[:2]) == (3, 3)
        and tuple(stride) == (1, 1)
        and tuple(map(tuple, pad)) == ((1, 1), (1, 1))
        and h % 2 == 0
        and w % 2 == 0
        and small
    )


def _combine(rows, xs):
    """``[sum_j rows[i][j] * xs[j] for each row]`` over arrays, skipping zero coefficients."""
    out = []
    for row in rows:
        acc = None
        for coef, v in zip(row, xs):
            if coef == 0:
                continue
            term = v if coef == 1 else -v if coef == -1 else coef * v
            acc = term if acc is None else acc + term
        out.append(acc)
    return out


def winograd_tile(h: int, w: int) -> int:
    """The output tile :func:`winograd_conv` uses on an ``h x w`` map: ``WINOGRAD_TILE`` where it divides both, else
    2."""
    m = WINOGRAD_TILE
    return m if h % m == 0 and w % m == 0 else 2


def winograd_conv(x_BxHxWxC, w_3x3xCxO, tile: int | None = None):
    """``lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)))`` (NHWC, HWIO) by Winograd F(m x m, 3x3).

    The map is cut into m x m output tiles, each read from an (m+2) x (m+2)
    input tile; the (m+2)^2 entries of the transformed tiles are as many
    matmuls with the transformed kernel: 2.25x fewer multiplications than the
    direct convolution for m = 2, 4x fewer for m = 4. ``tile``: m, 2 or 4
    (default :func:`winograd_tile`); H and W must divide by it. Errors are
    float round-off: about 1e-6 of the largest output in float32 for m = 2,
    1-2e-5 for m = 4 (its transforms have entries up to 8 and 1/24).
    """
    b, h, w, c = x_BxHxWxC.shape
    o = w_3x3xCxO.shape[-1]
    m = winograd_tile(h, w) if tile is None else tile
    if m not in _WINO or h % m or w % m:
        raise ValueError(f"winograd_conv: tile {m} on a {h}x{w} map; the tile must be 2 or 4 and divide both sides")
    bt, g_rows, at = _WINO[m]
    n = m + 2
    th, tw = h // m, w // m
    g = jnp.asarray(g_rows, w_3x3xCxO.dtype)
    u = jnp.einsum("ia,jb,abco->ijco", g, g, w_3x3xCxO, precision=lax.Precision.HIGHEST)  # [n, n, C, O]
    xp = jnp.pad(x_BxHxWxC, ((0, 0), (1, 1), (1, 1), (0, 0)))
    d = [[xp[:, a : a + m * th : m, e : e + m * tw : m] for e in range(n)] for a in range(n)]  # tile entry (a, e)
    cols = [_combine(bt, [d[a][e] for a in range(n)]) for e in range(n)]  # B^T d: cols[e][i]
    v = [_combine(bt, [cols[e][i] for e in range(n)]) for i in range(n)]  # (B^T d) B: v[i][j]
    prods = [
        [
            jnp.dot(v[i][j].reshape(-1, c), u[i, j], precision=lax.Precision.HIGHEST).reshape(b, th, tw, o)
            for j in range(n)
        ]
        for i in range(n)
    ]
    r = [_combine(at, [prods[i][j] for i in range(n)]) for j in range(n)]  # A^T M: r[j][p]
    y = [_combine(at, [r[j][p] for j in range(n)]) for p in range(m)]  # (A^T M) A: y[p][q]
    tiles = jnp.stack([jnp.stack(y[p], axis=3) for p in range(m)], axis=2)  # [B, H/m, m, W/m, m, O]
    return tiles.reshape(b, h, w, o)


# Few-channel convolutions as fused multiply-adds (direct_conv): on by default, CPU only; a run may turn them off
# (direct_convolutions(False)). cifar_kd's default students 1.55x, subdistill's program 1.00x (benchmarks/RESULTS.md).
CONV_DIRECT: bool = True


def direct_conv_enabled() -> bool:
    """Whether :func:`use_direct` may pick :func:`direct_conv`: ``CONV_DIRECT`` (on unless :func:`direct_convolutions`
    turns it off) on the CPU backend, unless ``JAXKD_XLA_OPTIONS=jaxlib`` asks for XLA's defaults."""
    return bool(CONV_DIRECT) and _cpu_choice(None)


@contextlib.contextmanager
def direct_convolutions(on: bool = True):
    """Within the block, few-channel stride-1 convolutions on CPU run as :func:`direct_conv` (``on``), or not.

    The choice is read when a program is traced, so jax's caches are
    cleared where it changes (every cached compilation of the process, not
    only convolutions): a program traced under the other choice is not
    reused. A program compiled ahead of time and held (``SweepProgram``'s
    ``compiled_advance``) keeps the choice it was compiled under. Sweeps
    record the choice in their fingerprint (``conv_paths``; it says the path
    was enabled, not that a convolution took it) and ``env.json`` records
    it, so a checkpoint resumes only under the same one. A process-wide
    setting: not for threads that trace under different choices.
    """
    global CONV_DIRECT
    before = CONV_DIRECT
    if bool(on) != before:
        jax.clear_caches()
    CONV_DIRECT = bool(on)
    try:
        yield
    finally:
        if CONV_DIRECT != before:
            jax.clear_caches()
        CONV_DIRECT = before


def use_direct(x_shape, w_shape, stride, pad, dtype) -> bool:
    """:func:`direct_conv` for a float32 stride-1 convolution, kernel at most 3x3, no negative padding, with at most 8
    channels in and out on an output map of at least 16x16, where XLA:CPU's convolution runs at 3-11 GFLOP/s:
    ``cifar_kd``'s default resnet8 and resnet20 at widths 4-8 on 16x16 and ``subdistill``'s student at 8 channels
    on 16x16 (benchmarks/RESULTS.md, ``method_sweep.py``, ``subdistill.py``).
    Other shapes (1-D sequences, larger kernels) are unmeasured and keep XLA's convolution."""
    _, h, w, c = x_shape
    kh, kw, _, o = w_shape
    (pt, pb), (pl, pr) = pad
    return (
        direct_conv_enabled()
        and dtype == jnp.float32
        and tuple(stride) == (1, 1)
        and kh <= 3
        and kw <= 3
        and min(pt, pb, pl, pr) >= 0
        and max(c, o) <= 8
        and min(h + pt + pb - kh + 1, w + pl + pr - kw + 1) >= 16
    )


def direct_conv(x_BxHxWxC, w_KxKxCxO, pad):
    """A stride-1 convolution as ``K·K·C`` multiply-adds of shifted input slices by kernel rows, in one fused loop.

    With few channels XLA:CPU's convolution spends its time outside the
    arithmetic (4.4 GFLOP/s for 4 -> 4 channels on 64x16x16, one core); the
    sum of shifted slices is one element-wise loop XLA fuses whole, 4x
    faster there. Input and output are fenced (:func:`_fence`): without the
    fences XLA fuses the producer (BatchNorm, ReLU) into every one of the
    ``K·K·C`` reads, and the consumers into the sum, and the student step
    ran 6.6x slower. The same convolution up to float round-off (the terms
    are summed in another order).
    """
    kh, kw, c, _ = w_KxKxCxO.shape
    xp = _fence(jnp.pad(x_BxHxWxC, ((0, 0), *pad, (0, 0))))
    ho, wo = xp.shape[1] - kh + 1, xp.shape[2] - kw + 1
    out = None
    for i in range(kh):
        for j in range(kw):
            tap = xp[:, i : i + ho, j : j + wo, :]
            for k in range(c):
                term = tap[..., k : k + 1] * w_KxKxCxO[i, j, k][None, None, None, :]
                out = term if out is None else out + term
    return _fence(out)


def _conv_primal(x, w, stride, pad):
    if use_winograd(x.shape, w.shape, stride, pad, x.dtype):
        return winograd_conv(x, w)
    if use_direct(x.shape, w.shape, stride, pad, x.dtype):
        return direct_conv(x, w, pad)
    return lax.conv_general_dilated(x, w, stride, pad, dimension_numbers=_NHWC)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x, w, stride, pad):
    return _conv_primal(x, w, stride, pad)


def _conv_fwd(x, w, stride, pad):
    if fence_conv_inputs():  # only where the convolution is differentiated; a forward pass alone stays as it was
        x = _fence(x)
    return _conv(x, w, stride, pad), (x, w)


def _conv_bwd(stride, pad, res, g):
    x, w = res
    (sh, sw), ((pt, _), (pl, _)) = stride, pad
    kh, kw = w.shape[:2]
    h, wd = x.shape[1:3]
    ho, wo = g.shape[1:3]
    # dL/dw: correlate the input (channels as batch) with the output gradient dilated by the stride.
    dw = lax.conv_general_dilated(
        jnp.transpose(x, (3, 1, 2, 0)),
        jnp.transpose(g, (1, 2, 0, 3)).astype(x.dtype),
        (1, 1),
        ((pt, kh + (ho - 1) * sh - h - pt), (pl, kw + (wo - 1) * sw - wd - pl)),
        rhs_dilation=(sh, sw),
        dimension_numbers=_NHWC,
    )
    dw = jnp.transpose(dw, (1, 2, 0, 3)).astype(w.dtype)
    # dL/dx: the output gradient, dilated by the stride, convolved with the flipped, transposed kernel.
    wt = jnp.transpose(jnp.flip(w, (0, 1)), (0, 1, 3, 2))
    lo_h, lo_w = kh - 1 - pt, kw - 1 - pl
    dx_pad = ((lo_h, h + kh - 1 - lo_h - ((ho - 1) * sh + 1)), (lo_w, wd + kw - 1 - lo_w - ((wo - 1) * sw + 1)))
    if (sh, sw) == (1, 1):  # a stride-1 convolution of the output gradient: Winograd where it pays
        dx = _conv_primal(g.astype(w.dtype), wt, (1, 1), dx_pad)
    else:
        dx = lax.conv_general_dilated(
            g.astype(w.dtype), wt, (1, 1), dx_pad, lhs_dilation=(sh, sw), dimension_numbers=_NHWC
        )
    return dx.astype(x.dtype), dw


_conv.defvjp(_conv_fwd, _conv_bwd)


def canonical_conv(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    precision=None,
    preferred_element_type=None,
    **_,
):
    """``lax.conv_general_dilated`` for channels-last, undilated, ungrouped convolutions with explicit padding.

    2-D (NHWC/HWIO) goes through the explicit-transpose gradient directly; 1-D
    (NWC/WIO) as a 2-D convolution over a width-1 axis. Anything else falls
    back to ``lax.conv_general_dilated``.
    """
    nd = lhs.ndim - 2
    if (
        nd not in (1, 2)
        or feature_group_count != 1
        or tuple(lhs_dilation or (1,) * nd) != (1,) * nd
        or tuple(rhs_dilation or (1,) * nd) != (1,) * nd
        or isinstance(padding, str)
    ):
        return lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation,
            rhs_dilation,
            dimension_numbers,
            feature_group_count,
            precision=precision,
            preferred_element_type=preferred_element_type,
        )
    padding = tuple(tuple(p) for p in padding)
    if nd == 1:
        out = _conv(lhs[:, :, None, :], rhs[:, None], (window_strides[0], 1), (padding[0], (0, 0)))
        return out[:, :, 0, :]
    return _conv(lhs, rhs, tuple(window_strides), padding)


KAIMING_FAN_OUT = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")
TORCH_LINEAR = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def conv(in_ch, out_ch, kernel, *, stride=1, bias=False, dtype=None, rngs: nnx.Rngs) -> nnx.Conv:
    """``kernel x kernel`` convolution, zero-padded by ``kernel // 2`` on every side."""
    pad = kernel // 2
    return nnx.Conv(
        in_ch,
        out_ch,
        kernel_size=(kernel, kernel),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        use_bias=bias,
        kernel_init=KAIMING_FAN_OUT,
        dtype=dtype,
        param_dtype=jnp.float32,
        rngs=rngs,
        conv_general_dilated=canonical_conv,
    )


def _column_sums(a_MxC):
    """Per-channel sums of ``[M, C]`` as a ones-vector matmul (XLA:CPU's dot kernels, not its reduction emitter)."""
    return jnp.dot(jnp.ones((1, a_MxC.shape[0]), a_MxC.dtype), a_MxC, precision=lax.Precision.HIGHEST)[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _bn_train(x_MxC, scale, bias, eps):
    return _bn_train_fwd(x_MxC, scale, bias, eps)[0]


def _bn_train_fwd(x_MxC, scale, bias, eps):
    m = x_MxC.shape[0]
    mean = _column_sums(x_MxC) / m
    var = jnp.maximum(_column_sums(x_MxC * x_MxC) / m - mean * mean, 0.0)  # E[x²] - E[x]², as flax's default
    inv = lax.rsqrt(var + eps)
    xhat = (x_MxC - mean[None]) * inv[None]
    return (xhat * scale[None] + bias[None], mean, var), (xhat, inv, scale)


def _bn_train_bwd(eps, res, cotangents):
    del eps
    xhat, inv, scale = res
    g, g_mean, g_var = cotangents
    m = xhat.shape[0]
    g_bias = _column_sums(g)
    g_scale = _column_sums(g * xhat)
    # through the normalisation: inv · (g·scale − mean(g·scale) − x̂ · mean(g·scale·x̂)); and through the
    # returned batch statistics (read only by the running averages): g_mean / m + g_var · 2 (x − mean) / m
    gx = (inv * scale)[None] * (g - g_bias[None] / m - xhat * (g_scale / m)[None])
    gx = gx + g_mean[None] / m + (g_var * (2.0 / m) / inv)[None] * xhat
    return gx, g_scale, g_bias


_bn_train.defvjp(_bn_train_fwd, _bn_train_bwd)


class BatchNorm(nnx.BatchNorm):
    """``nnx.BatchNorm`` whose training-mode statistics and their gradients are column sums done as matmuls.

    The same function (flax's fast variance E[x²] − E[x]², the same running
    averages, parameters and state) up to float round-off. XLA:CPU's
    reduction emitter made BatchNorm most of a ResNet block's time on a
    2-core CPU (benchmarks/conv_cpu.py); five per-channel sums per layer as
    ones-vector matmuls run on its dot kernels instead. Evaluation mode,
    masks, named axes, low-precision compute and other backends than CPU
    (where the matmul form is unmeasured) take flax's own path.
    """

    def __call__(self, x, use_running_average=None, *, mask=None):
        use_running = self.use_running_average if use_running_average is None else use_running_average
        plain = (
            use_running
            or jax.default_backend() != "cpu"
            or mask is not None
            or self.axis_name is not None
            or self.axis not in (-1, x.ndim - 1)
            or self.scale is None
            or self.bias is None
            or jnp.dtype(self.dtype or x.dtype) != jnp.float32
            or x.dtype != jnp.float32
        )
        if plain:
            return super().__call__(x, use_running_average, mask=mask)
        c = x.shape[-1]
        y, mean, var = _bn_train(x.reshape(-1, c), self.scale[...], self.bias[...], self.epsilon)
        stop = jax.lax.stop_gradient if (self.mean._can_update or self.var._can_update) else (lambda v: v)
        self.mean[...] = stop(self.momentum * self.mean[...] + (1 - self.momentum) * mean)
        self.var[...] = stop(self.momentum * self.var[...] + (1 - self.momentum) * var)
        return y.reshape(x.shape)


def batch_norm(ch, *, dtype=None, rngs: nnx.Rngs) -> nnx.BatchNorm:
    return BatchNorm(ch, momentum=0.9, epsilon=1e-5, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)


def linear(in_f, out_f, *, dtype=None, kernel_init=TORCH_LINEAR, zero_bias=False, rngs: nnx.Rngs) -> nnx.Linear:
    bound = 0.0 if zero_bias else 1.0 / in_f**0.5

    def bias_init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return nnx.Linear(
        in_f, out_f, kernel_init=kernel_init, bias_init=bias_init, dtype=dtype, param_dtype=jnp.float32, rngs=rngs
    )


def global_avg_pool(h_BxHxWxC):
    return jnp.mean(h_BxHxWxC, axis=(1, 2))


def max_pool2(h_BxHxWxC):
    return nnx.max_pool(h_BxHxWxC, window_shape=(2, 2), strides=(2, 2))


def as_float32(logits, features):
    """Logits and features leave the model in float32 whatever the compute dtype."""
    return logits.astype(jnp.float32), {k: v.astype(jnp.float32) for k, v in features.items()}
