"""Subtask-relevant subspaces of a teacher's layers (SubDistill, Chormai et al., arXiv 2601.05913).

At a teacher layer the activation at one spatial position is ``a ∈ R^d``;
its *context* is the gradient ``c = ∂f/∂a`` of the explained output, the
subtask teacher's winning logit minus its runner-up (:func:`top2_gap`). Both
are collected over the un-augmented training inputs at ``positions`` random
spatial positions per image (:func:`collect`; the same positions for ``a``
and ``c``), ``μ`` is the mean activation over the kept rows and ``A = a − μ``
(contexts are not centred). From the second moments

    Σ_a = AᵀA/N,  Σ_c = CᵀC/N,  Σ_ac = AᵀC/N,  tr_a = tr Σ_a,  tr_c = tr Σ_c

the bases (:func:`basis`) are the eigenvectors, by decreasing eigenvalue, of

* ``pca``: Σ_a;  ``gradpca``: Σ_c;  ``prca``: Σ_ac + Σ_acᵀ (indefinite: the
  relevance ``2 E[(uᵀa)(uᵀc)]`` of a direction, sorted signed);
* ``prca_posdef`` (the default, SubDistill's): ``M = (Σ_ac + Σ_acᵀ) +
  2 √(tr_c/tr_a) Σ_a + 2 √(tr_a/tr_c) Σ_c``. With ``â = a/√tr_a``,
  ``ĉ = c/√tr_c`` it is ``√(tr_a tr_c)`` times ``E[(â+ĉ)(â+ĉ)ᵀ] + E[ââᵀ] + E[ĉĉᵀ]``,
  positive semi-definite, with the same eigenvectors;
* ``random``: a Haar-distributed orthogonal matrix; ``identity``: the
  standard basis. Neither has eigenvalues: :func:`basis` returns, for them,
  the activation variance along each column (``u_jᵀ Σ_a u_j``) in the
  basis' own column order.

Each column's sign is fixed so that the activation projects positively on
more than half of the rows (cosmetic; the loss does not depend on it).

:func:`energy` is the loss normaliser ``α = Σ_{j≤k} u_jᵀ Σ_a u_j``, the
teacher's activation energy in the top-k subspace, and
:func:`rank_k_accuracy` the diagnostic ``basis@k``: the teacher's subtask
accuracy with the layer replaced by ``μ + U_k U_kᵀ (a − μ)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxkd.errors import check_name
from jaxkd.models.probe import probe

BASES = ("prca_posdef", "prca", "pca", "gradpca", "random", "identity")
_HI = jax.lax.Precision.HIGHEST


def top2_gap(logits_BxC):
    """The winning logit minus the runner-up, per example (SubDistill's ``MultiClassDifferenceTop2Logits``)."""
    top = jax.lax.top_k(logits_BxC, 2)[0]
    return top[..., 0] - top[..., 1]


def _rows(f, positions: int, keys):
    """``positions`` (at most the map's size) distinct random spatial rows of each example's map: ``[B, P, d]``."""
    if f.ndim == 2:  # a vector feature: one row per example
        return f[:, None, :], None
    b, d = f.shape[0], f.shape[-1]
    flat = f.reshape(b, -1, d)
    n = flat.shape[1]
    p = min(int(positions), n)
    picks = jax.vmap(lambda k: jax.random.permutation(k, n)[:p])(keys)
    return jnp.take_along_axis(flat, picks[..., None], axis=1), picks


def collect(ctx, layers, *, positions: int = 20, seed: int = 0) -> dict:
    """Activations and contexts of the teacher's ``layers`` over the training split: ``{layer: (a, c)}``.

    ``ctx`` is a :class:`jaxkd.terms.Prepass`. Each image ``i`` keeps
    ``min(positions, h·w)`` distinct spatial positions drawn with
    ``fold_in(key(seed), i)`` (the same for every layer of that size and for
    ``a`` and ``c``); ``a``, ``c`` are ``[N·P, d]``, not centred.
    """
    layers = tuple(layers)
    teacher = ctx.teacher
    memo = ("subspace.collect", layers, int(positions), int(seed))
    if memo in ctx.cache:
        return ctx.cache[memo]
    key = jax.random.key(int(seed))

    def per_batch(tin, x, y, index):
        _, feats, grads = teacher.features_and_gradients(tin, x, layers, top2_gap)
        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(index)
        out = {}
        for name in layers:
            a, picks = _rows(feats[name], positions, keys)
            c = grads[name].reshape(a.shape[0], -1, a.shape[-1])
            c = c if picks is None else jnp.take_along_axis(c, picks[..., None], axis=1)
            out[name] = (a, c)
        return out

    rows = ctx.map(per_batch)
    out = {n: tuple(v.reshape(-1, v.shape[-1]) for v in rows[n]) for n in layers}
    ctx.cache[memo] = out
    return out


def moments(A, C):
    """``(Σ_a, Σ_c, Σ_ac)`` of centred activations ``A`` and contexts ``C``, ``[N, d]`` each."""
    n = A.shape[0]
    return (
        jnp.matmul(A.T, A, precision=_HI) / n,
        jnp.matmul(C.T, C, precision=_HI) / n,
        jnp.matmul(A.T, C, precision=_HI) / n,
    )


def posdef_matrix(A, C):
    """SubDistill's PRCA-posdef matrix ``M`` (module docstring)."""
    sa, sc, sac = moments(A, C)
    ta, tc = jnp.trace(sa), jnp.trace(sc)
    return (sac + sac.T) + 2.0 * jnp.sqrt(tc / ta) * sa + 2.0 * jnp.sqrt(ta / tc) * sc


def _eig_desc(m):
    w, u = jnp.linalg.eigh(0.5 * (m + m.T))
    return w[::-1], u[:, ::-1]


def _fix_signs(U, A):
    """Flip each column so that ``A`` projects positively on more than half of the rows."""
    positive = jnp.mean(jnp.matmul(A, U, precision=_HI) > 0, axis=0)
    return U * jnp.where(positive > 0.5, 1.0, -1.0)[None, :]


def prca_posdef(A, C):
    """``(eigenvalues_desc, U)`` of the PRCA-posdef matrix of centred activations ``A`` and contexts ``C``."""
    w, u = _eig_desc(posdef_matrix(A, C))
    return w, _fix_signs(u, A)


def haar_orthogonal(key, d: int):
    """A Haar-distributed ``d x d`` orthogonal matrix (QR of a Gaussian matrix, signs fixed by R's diagonal)."""
    q, r = jnp.linalg.qr(jax.random.normal(key, (d, d)))
    return q * jnp.sign(jnp.diag(r))[None, :]


def basis(name: str, A, C, key):
    """``(eigenvalues_desc, U)`` of basis ``name`` (:data:`BASES`) for centred ``A`` and contexts ``C`` ``[N, d]``.

    ``U``'s columns are orthonormal and sorted by decreasing eigenvalue;
    ``key`` draws the ``random`` basis (unused otherwise). For ``random``
    and ``identity`` the returned values are the activation variances
    along the columns, in the basis' own order (module docstring).
    """
    check_name("subspace basis", name, BASES)
    sa, sc, sac = moments(A, C)
    d = A.shape[1]
    if name == "prca_posdef":
        return prca_posdef(A, C)
    if name in ("pca", "gradpca", "prca"):
        w, u = _eig_desc({"pca": sa, "gradpca": sc, "prca": sac + sac.T}[name])
        return w, _fix_signs(u, A)
    u = haar_orthogonal(key, d) if name == "random" else jnp.eye(d, dtype=A.dtype)
    return column_energies(u, sa), u


def column_energies(U, sigma_a):
    """``u_jᵀ Σ_a u_j`` for every column of ``U``: the activation variance along each direction."""
    return jnp.einsum("dj,de,ej->j", U, sigma_a, U, precision=_HI)


def energy(U_k, sigma_a):
    """SubDistill's loss normaliser ``α = Σ_j u_jᵀ Σ_a u_j`` over the columns of ``U_k``."""
    return jnp.sum(column_energies(U_k, sigma_a))


def layer_basis(name: str, a, c, key):
    """``{"mu", "U", "eigenvalues", "energies"}`` of one layer from raw rows ``a``, ``c`` ``[N, d]``.

    ``energies[j] = u_jᵀ Σ_a u_j``, so ``α`` at rank k is ``energies[:k].sum()``.
    """
    mu = jnp.mean(a, axis=0)
    A = a - mu[None, :]
    w, u = basis(name, A, c, key)
    return {"mu": mu, "U": u, "eigenvalues": w, "energies": column_energies(u, moments(A, c)[0])}


def reconstruct(a, mu, U_k):
    """``μ + U_k U_kᵀ (a − μ)`` on the channel axis of ``a``."""
    mu = jnp.reshape(mu, (1,) * (a.ndim - 1) + (-1,))
    z = jnp.einsum("...d,dk->...k", a - mu, U_k, precision=_HI)
    return mu + jnp.einsum("...k,dk->...d", z, U_k, precision=_HI)


def rank_k_accuracy(teacher, tin, x, y, layer: str, mu, U_k, *, prepare=lambda v: v, batch_size: int = 256):
    """The teacher's (subtask) accuracy with ``layer`` replaced by its rank-k reconstruction (``basis@k``).

    ``x``: stored inputs ``[N, ...]`` (``prepare`` normalises them), ``y``
    the subtask labels. At full rank (``U_k`` square) it equals the
    teacher's own accuracy up to rounding.
    """
    from jaxkd.evaluate import batched

    def fn(tin, x, y):
        def one(i):
            params, rest = tin["params"], tin["rest"]
            with probe({layer: lambda a: reconstruct(a, mu.astype(a.dtype), U_k.astype(a.dtype))}):
                logits = teacher.select(teacher.model.apply(params, rest, prepare(x[i]), train=False)[0], tin)
            return jnp.argmax(logits, -1) == y[i]

        return jnp.mean(batched(one, x.shape[0], batch_size))

    return float(jax.jit(fn)(tin, x, y))
