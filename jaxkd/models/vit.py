"""A small Vision Transformer for 32x32 inputs whose tokens are a spatial map.

Non-overlapping ``patch x patch`` patches are embedded by a strided
convolution, a learned position embedding is added, and ``depth`` pre-norm
blocks (multi-head self-attention, GELU MLP) follow; there is no class token:
a final LayerNorm and the mean over tokens feed the linear head, so every
block's tokens reshape to a ``[B, H/patch, W/patch, dim]`` map that
feature-map methods (FitNet, AT) and analyses can read like a CNN stage.

Features: ``block{i}`` (i = 0..depth-1) the tokens after block i, as a map;
``stage1``, ``stage2``, ``stage3`` aliases of the blocks at one, two and three
thirds of the depth; ``pooled``.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from jaxkd.models.layers import as_float32, linear
from jaxkd.models.probe import tap


class _Block(nnx.Module):
    def __init__(self, dim, heads, mlp_dim, *, dtype, rngs: nnx.Rngs):
        self.ln1 = nnx.LayerNorm(dim, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(
            num_heads=heads, in_features=dim, decode=False, dtype=dtype, param_dtype=jnp.float32, rngs=rngs
        )
        self.ln2 = nnx.LayerNorm(dim, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)
        self.fc1 = linear(dim, mlp_dim, dtype=dtype, rngs=rngs)
        self.fc2 = linear(mlp_dim, dim, dtype=dtype, rngs=rngs)

    def __call__(self, x_BxNxD):
        x = x_BxNxD + self.attn(self.ln1(x_BxNxD))
        return x + self.fc2(nnx.gelu(self.fc1(self.ln2(x))))


class ViT(nnx.Module):
    def __init__(
        self, in_shape, num_classes, *, patch=4, dim=192, depth=6, heads=3, mlp_ratio=2, dtype=None, rngs: nnx.Rngs
    ):
        h, w, c = in_shape
        if h % patch or w % patch:
            raise ValueError(f"ViT patch size {patch} must divide the input size {h}x{w}")
        self.grid = (h // patch, w // patch)
        self.embed = nnx.Conv(
            c,
            dim,
            kernel_size=(patch, patch),
            strides=(patch, patch),
            padding="VALID",
            dtype=dtype,
            param_dtype=jnp.float32,
            rngs=rngs,
        )
        n = self.grid[0] * self.grid[1]
        self.pos = nnx.Param(0.02 * nnx.initializers.truncated_normal()(rngs.params(), (1, n, dim)))
        self.blocks = nnx.List([_Block(dim, heads, dim * mlp_ratio, dtype=dtype, rngs=rngs) for _ in range(depth)])
        self.ln = nnx.LayerNorm(dim, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)
        self.head = linear(dim, num_classes, dtype=dtype, rngs=rngs)
        thirds = {max(1, round(depth * k / 3)) - 1: k for k in (1, 2, 3)}
        self.stage_of = tuple(thirds.get(i, 0) for i in range(depth))

    def __call__(self, x_BxHxWxC):
        t = self.embed(x_BxHxWxC)
        b, gh, gw, d = t.shape
        t = t.reshape(b, gh * gw, d) + self.pos[...].astype(t.dtype)
        features = {}
        for i, blk in enumerate(self.blocks):
            f = tap(f"block{i}", blk(t).reshape(b, gh, gw, d))
            features[f"block{i}"] = f
            if self.stage_of[i]:
                f = tap(f"stage{self.stage_of[i]}", f)
                features[f"stage{self.stage_of[i]}"] = f
            t = f.reshape(b, gh * gw, d)
        pooled = tap("pooled", jnp.mean(self.ln(t), axis=1))
        features["pooled"] = pooled
        return as_float32(self.head(pooled), features)
