"""The interaction tensor Ω of an ensemble, its statistics over groups of models, and confusion as dark knowledge.

Pipeline (docs/interaction.md; papers.md §3.2, from Kang & Kim's ``analysis/build_tensors.py``):

1. per-model PCA of the activations X_m [N, D_m] to K components, P [M, N, K];
2. each component z-scored over the samples (unbiased std), Z [M, N, K];
3. cross-model correlations Λ[m, p, k, q] = (1/N) Σ_n Z[m,n,k] Z[p,n,q], Λ [M, M, K, K];
4. γ = the ``corr_percentile`` of |Λ| over all entries, self-correlations included;
5. greedy clustering of the M·K components into T features (Algorithm 1 of Jiang et al.);
6. D[m,n,k] = P̂[m,n,k] > r_m, with P̂ = P / max_n |P| per (model, component) and r_m the
   ``data_quantile`` of all entries of P̂[m];
7. Ω[m,n,t] = any_k (assign[m,k] = t and D[m,n,k]), Ω [M, N, T] bool.

Symbols: M models, N samples, D_m activation width of model m, K components per model,
T features (clusters). Statistics take a *group*: any index of the model axis (a slice, an
integer array or list, a boolean mask).

References: Jiang, Baek, Kolter, arXiv 2306.04793 (Algorithm 1); Kang & Kim, arXiv 2606.03052
(§3 feature statistics, §4.1 confusion vs teacher).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from scipy import linalg as _sl
from scipy import stats as _st

from jaxkd.errors import ConfigError, check, check_name
from jaxkd.stats import summarize

_HIGHEST = jax.lax.Precision.HIGHEST  # no TF32/bf16 passes on accelerators: correlations near γ matter
_SIGNS = (None, "loading", "projection")
_SOLVERS = ("auto", "gram", "svd", "randomized")
_GRAM_MAX_D = 2048  # solver="auto": D x D covariance + eigh up to here, randomized SVD beyond


@dataclasses.dataclass(frozen=True, eq=False)
class InteractionTensor:
    """Ω and what produced it.

    Attributes:
      omega: [M, N, T] bool; ``omega[m, n, t]``: model m uses feature t on sample n.
      assign: [M, K] int64; the feature id (0..T-1, in the order the clusters were opened)
        of each model's component.
      gamma: the correlation threshold γ.
      data_thresholds: [M] the per-model thresholds r_m on P̂.
      proj: [M, N, K] float32 PCA projections P (after sign fixing and, if asked, alignment).
      timings: wall seconds per stage (``pca``, ``correlation``, ``threshold``, ``clustering``,
        ``binarisation``, ``omega``).
    """

    omega: np.ndarray
    assign: np.ndarray
    gamma: float
    data_thresholds: np.ndarray
    proj: np.ndarray
    timings: dict

    @property
    def num_features(self) -> int:
        return self.omega.shape[-1]


# --------------------------------------------------------------------------------------------
# 1. PCA


def _orient(v_DxK, x_NxD, fix_signs):
    """Flip component signs by a convention (see :func:`pca_project`)."""
    if fix_signs is None:
        return v_DxK
    if fix_signs == "loading":
        ref = jnp.take_along_axis(v_DxK, jnp.argmax(jnp.abs(v_DxK), axis=0, keepdims=True), axis=0)
    else:  # "projection"
        p = jnp.matmul(x_NxD, v_DxK, precision=_HIGHEST)
        ref = jnp.take_along_axis(p, jnp.argmax(jnp.abs(p), axis=0, keepdims=True), axis=0)
    return v_DxK * jnp.where(ref < 0, -1.0, 1.0).astype(v_DxK.dtype)


def _centre(x_NxD, center):
    x = x_NxD.astype(jnp.float32)
    mean = jnp.mean(x, axis=0, keepdims=True) if center else jnp.zeros((1, x.shape[1]), jnp.float32)
    return x - mean, mean


@functools.partial(jax.jit, static_argnames=("center",))
def _gram(x_NxD, *, center):
    """(Xcᵀ Xc [D, D], the column means [1, D]) with Xc the centred (or raw) activations."""
    x, mean = _centre(x_NxD, center)
    return jnp.matmul(x.T, x, precision=_HIGHEST), mean


@functools.partial(jax.jit, static_argnames=("k", "center", "solver", "n_iter", "oversample"))
def _directions(x_NxD, key, *, k, center, solver, n_iter, oversample):
    """Top-k right-singular vectors [D, k] of the centred (or raw) activations, and the means [1, D]."""
    x, mean = _centre(x_NxD, center)
    if solver == "svd":
        return jnp.linalg.svd(x, full_matrices=False)[2][:k].T, mean
    # randomized range finder with QR-normalised power iterations (Halko et al. 2011, Alg. 4.4)
    n, d = x.shape
    width = min(k + oversample, n, d)
    q, _ = jnp.linalg.qr(jnp.matmul(x, jax.random.normal(key, (d, width), jnp.float32), precision=_HIGHEST))
    for _ in range(n_iter):
        q, _ = jnp.linalg.qr(jnp.matmul(x.T, q, precision=_HIGHEST))
        q, _ = jnp.linalg.qr(jnp.matmul(x, q, precision=_HIGHEST))
    return jnp.linalg.svd(jnp.matmul(q.T, x, precision=_HIGHEST), full_matrices=False)[2][:k].T, mean


@functools.partial(jax.jit, static_argnames=("fix_signs",))
def _project(x_NxD, mean_1xD, v_DxK, *, fix_signs):
    x = x_NxD.astype(jnp.float32) - mean_1xD
    return jnp.matmul(x, _orient(v_DxK, x, fix_signs), precision=_HIGHEST)


def pca_project(
    x_NxD,
    k: int,
    *,
    center: bool = True,
    solver: str = "auto",
    fix_signs: str | None = "loading",
    seed: int = 0,
    n_iter: int = 7,
    oversample: int = 10,
) -> jax.Array:
    """Projections of one model's activations on its top-``k`` principal directions, [N, k] float32.

    ``center=True`` projects the mean-centred matrix (sklearn ``PCA``, the reference KD tensor);
    ``center=False`` projects the raw matrix on its top right-singular vectors (``torch.svd``,
    the reference CD tensor). Solvers: ``"gram"`` forms the D x D matrix Xᵀ X on the device and
    takes its top-k eigenvectors on the host (LAPACK ``syevr``; exact, and fast for D up to a few
    thousand); ``"svd"`` is the SVD of X on the device; ``"randomized"`` a randomized SVD with
    ``n_iter`` power iterations (as sklearn's ``svd_solver="randomized"``, keyed by ``seed``);
    ``"auto"`` is gram for D <= 2048, randomized beyond.

    The sign of a component is arbitrary. Correlations |Λ| (hence the clustering) do not depend
    on it; the mask D does, because it keeps the *upper* tail of P̂: flipping a component swaps
    which samples use it. ``fix_signs``: ``"loading"`` makes the largest-magnitude entry of each
    direction positive (sklearn >= 1.5's ``svd_flip(u_based_decision=False)``, so the reference KD
    pipeline); ``"projection"`` makes the largest-magnitude projection positive (older sklearn's
    u-based convention; then max P̂ = 1); ``None`` keeps the solver's sign (as the reference CD
    pipeline's ``torch.svd``), which may differ between solvers, platforms and library versions.
    """
    check(int(k) >= 1, f"k must be >= 1, got {k}")
    check_name("PCA solver", solver, _SOLVERS)
    check(fix_signs in _SIGNS, f"unknown fix_signs {fix_signs!r}; choose one of: None, 'loading', 'projection'")
    x = jnp.asarray(x_NxD)
    check(x.ndim == 2, f"activations of one model must be [N, D], got shape {tuple(x.shape)}")
    n, d = x.shape
    k = int(k)
    check(k <= min(n, d), f"k = {k} exceeds min(N, D) = {min(n, d)}; lower k")
    if solver == "auto":
        solver = "gram" if d <= _GRAM_MAX_D else "randomized"
    if solver == "gram":
        gram, mean = _gram(x, center=bool(center))
        gram = np.asarray(gram)
        check(np.isfinite(gram).all(), "activations contain NaN or Inf")
        v = _sl.eigh(gram, subset_by_index=[d - k, d - 1], driver="evr")[1][:, ::-1]
        v = jnp.asarray(np.ascontiguousarray(v))
    else:
        v, mean = _directions(
            x,
            jax.random.key(seed),
            k=k,
            center=bool(center),
            solver=solver,
            n_iter=int(n_iter),
            oversample=int(oversample),
        )
    proj = _project(x, mean, v, fix_signs=fix_signs)
    check(bool(jnp.all(jnp.isfinite(proj))), "activations contain NaN or Inf")
    return proj


# --------------------------------------------------------------------------------------------
# 2-4. z-scores, cross-model correlations, the threshold


@jax.jit
def zscore(p_MxNxK):
    """Each (model, component) standardised over the samples with the unbiased std; 0 where constant."""
    p = jnp.asarray(p_MxNxK, jnp.float32)
    centred = p - jnp.mean(p, axis=1, keepdims=True)
    std = jnp.std(p, axis=1, keepdims=True, ddof=1)
    return jnp.where(std > 0, centred / jnp.where(std > 0, std, 1.0), 0.0)


@functools.partial(jax.jit, static_argnames=("block",))
def _corr_pair(z_pad, i, j, *, block):
    """Λ[i:i+block, j:j+block] = (1/N) Σ_n z[b,n,k] z[c,n,q], [block, block, K, K]."""
    za = jax.lax.dynamic_slice_in_dim(z_pad, i, block, axis=0)
    zb = jax.lax.dynamic_slice_in_dim(z_pad, j, block, axis=0)
    return jnp.einsum("bnk,cnq->bckq", za, zb, precision=_HIGHEST) / z_pad.shape[1]


def cross_correlation(z_MxNxK, *, block: int = 10) -> np.ndarray:
    """Λ [M, M, K, K] float32 on the host from z-scores, by blocks of ``block`` x ``block`` models.

    Λ[p, m] is Λ[m, p] transposed, so only the blocks on and above the diagonal are computed
    (about half the work) and mirrored. One compiled program serves every block (the model axis
    is zero-padded to a multiple of ``block``); the device holds the z-scores plus one
    [block, block, K, K] slab, and only the host holds all of Λ (M²K² floats: 36 MB for M = 60, K = 50).
    """
    check(int(block) >= 1, f"block must be >= 1, got {block}")
    z = jnp.asarray(z_MxNxK, jnp.float32)
    m, _, k = z.shape
    b = min(int(block), m)
    pad = (-m) % b
    z_pad = jnp.concatenate([z, jnp.zeros((pad, *z.shape[1:]), z.dtype)], axis=0) if pad else z
    lam = np.empty((m, m, k, k), np.float32)
    starts = range(0, m, b)
    for i in starts:
        for j in starts:
            if j < i:
                continue
            ei, ej = min(i + b, m), min(j + b, m)
            out = np.asarray(_corr_pair(z_pad, jnp.int32(i), jnp.int32(j), block=b))[: ei - i, : ej - j]
            lam[i:ei, j:ej] = out
            if j > i:
                lam[j:ej, i:ei] = out.transpose(1, 0, 3, 2)
    return lam


def correlation_threshold(lam, percentile: float) -> float:
    """γ = ``numpy.percentile(|Λ|, percentile)`` over all entries (self-correlations included).

    NumPy's default ``method="linear"`` (interpolating between the two nearest order statistics),
    which is also ``torch.quantile``'s default used by the reference code.
    """
    check(0.0 <= float(percentile) <= 100.0, f"corr_percentile must lie in [0, 100], got {percentile}")
    return float(np.percentile(np.abs(np.asarray(lam)), float(percentile)))


# --------------------------------------------------------------------------------------------
# 5. greedy clustering


def _greedy(a, gamma, int32_quirk):
    m, _, k, _ = a.shape
    raw = np.full((m, k), -1, np.int64)
    best = np.full((m, k), -1, np.int32 if int32_quirk else np.result_type(a.dtype, np.float32))
    seeds = []
    for i in range(m):
        for j in range(k):
            if raw[i, j] >= 0:
                continue
            raw[i, j] = len(seeds)
            row = a[i, :, j, :]
            take = (row > gamma) & (row > best)
            raw[take] = len(seeds)
            best[take] = row[take]  # numpy's unsafe cast truncates toward zero into the int32 buffer
            seeds.append((i, j))
    kept, assign = np.unique(raw, return_inverse=True)
    return assign.reshape(m, k), np.asarray(seeds, np.int64).reshape(-1, 2)[kept]


def greedy_cluster(abs_corr, gamma: float, *, int32_quirk: bool = False) -> np.ndarray:
    """Algorithm 1 of Jiang et al.: cluster ids [M, K] (0..T-1, in the order clusters are opened).

    Components (i, j) are visited in row-major order; an unassigned one opens a new cluster and
    takes it, then every (p, q) with |Λ[i,p,j,q]| > γ and > best[p, q] joins that cluster and
    best[p, q] becomes |Λ[i,p,j,q]| (best starts at -1). A component therefore ends in the
    cluster whose seed it correlates with most (the intended float comparison).

    ``int32_quirk=True`` reproduces the reference code, whose ``best`` buffer is int32: stored
    values truncate to 0, so any later seed with |Λ| > γ takes the component ("stealing").
    A cluster emptied by stealing is dropped and the ids renumbered (the reference asserts
    that none is, so its released tensors are unaffected).
    """
    a = np.asarray(abs_corr)
    check(
        a.ndim == 4 and a.shape[0] == a.shape[1] and a.shape[2] == a.shape[3],
        f"abs_corr must be [M, M, K, K], got shape {a.shape}",
    )
    return _greedy(a, gamma, int32_quirk)[0]


# --------------------------------------------------------------------------------------------
# 6-7. binarisation and Ω


def binarize(proj_MxNxK, data_quantile: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """The data-feature mask D [M, N, K] (bool) and the per-model thresholds r [M].

    P̂ = P / max_n |P| per (model, component) (0 for an all-zero component);
    r_m = ``numpy.quantile(P̂[m], data_quantile)`` over all N·K signed entries (default
    ``method="linear"``, as ``torch.quantile``); D = P̂ > r_m.
    """
    check(0.0 <= float(data_quantile) <= 1.0, f"data_quantile must lie in [0, 1], got {data_quantile}")
    p = np.asarray(proj_MxNxK)
    scale = np.abs(p).max(axis=1, keepdims=True)
    phat = np.divide(p, scale, out=np.zeros_like(p), where=scale > 0)
    r = np.quantile(phat.reshape(p.shape[0], -1), float(data_quantile), axis=1)
    return phat > r[:, None, None], r


def assemble_omega(d_MxNxK, assign_MxK, num_features: int | None = None) -> np.ndarray:
    """Ω[m, n, t] = any_k (assign[m, k] = t and D[m, n, k]), [M, N, T] bool."""
    d, a = np.asarray(d_MxNxK, bool), np.asarray(assign_MxK)
    m, n, _ = d.shape
    t = int(a.max()) + 1 if num_features is None else int(num_features)
    omega = np.zeros((m, n, t), bool)
    for i in range(m):
        order = np.argsort(a[i], kind="stable")
        ids, starts = np.unique(a[i][order], return_index=True)
        omega[i][:, ids] = np.logical_or.reduceat(d[i][:, order], starts, axis=1)
    return omega


def ensemble_activations(groups: Mapping[str, object], x, layers, *, batch_size: int = 512) -> dict:
    """Every member's flattened activations at a named layer, and its logits, for groups of ensembles.

    The analyses read models through :func:`jaxkd.ensemble.predict`; this gathers what
    :func:`interaction_tensor` takes from several groups of (possibly different) architectures.

    Args:
      groups: ``{group: ensemble}``, each an :class:`jaxkd.ensemble.Ensemble` or the directory of one saved
        with :func:`jaxkd.ensemble.save_ensemble` (loaded, content hash verified).
      x: inputs ``[N, ...]`` in stored form (the ensembles normalise them).
      layers: one feature name for every group, or ``{group: name}``.

    Returns ``{"activations": [[N, D_m] float32 per member], "logits": [M, N, C], "group": [M] group names,
    "members": [M] member records (seed, condition, ...)}``, members in group order.
    """
    from jaxkd.ensemble import load_ensemble, predict

    check(len(groups) > 0, "no ensembles given: pass {group: ensemble or saved-ensemble directory}")
    names = {g: layers for g in groups} if isinstance(layers, str) else dict(layers)
    for g in groups:
        check(g in names, f"no layer named for group {g!r}; give layers as one name or {{group: name}}")
    acts, logits, group_of, members = [], [], [], []
    for g, ens in groups.items():
        ens = load_ensemble(ens) if isinstance(ens, str) else ens
        out = predict(ens, x, features=(names[g],), batch_size=batch_size)
        f = np.asarray(out["features"][names[g]], np.float32)
        acts.extend(list(f.reshape(f.shape[0], f.shape[1], -1)))
        logits.append(np.asarray(out["logits"], np.float32))
        group_of += [g] * len(ens)
        members += list(ens.members)
    shapes = {a.shape[1:] for a in logits}
    check(len(shapes) == 1, f"the groups' logits differ in shape {sorted(shapes)}: analyse models of one task")
    return {"activations": acts, "logits": np.concatenate(logits), "group": np.asarray(group_of), "members": members}


def _as_models(activations) -> list:
    if isinstance(activations, (list, tuple)):
        xs = list(activations)
    else:
        check(
            np.ndim(activations) == 3,
            f"activations must be [M, N, D] or a list of [N, D_m], got shape {np.shape(activations)}",
        )
        xs = [activations[i] for i in range(np.shape(activations)[0])]
    check(len(xs) >= 1, "activations hold no models")
    shapes = [np.shape(x) for x in xs]
    check(all(len(s) == 2 for s in shapes), f"each model's activations must be [N, D_m], got {shapes}")
    check(len({s[0] for s in shapes}) == 1, f"every model needs the same N samples, got N = {[s[0] for s in shapes]}")
    return xs


def interaction_tensor(
    activations,
    *,
    k: int = 50,
    corr_percentile: float = 99.0,
    data_quantile: float = 0.9,
    center: bool = True,
    int32_quirk: bool = False,
    block: int = 10,
    fix_signs: str | None = "loading",
    align_signs: bool = False,
    solver: str = "auto",
    seed: int = 0,
) -> InteractionTensor:
    """The interaction tensor Ω of M models on N samples (steps 1-7 of the module docstring).

    Args:
      activations: [M, N, D] array, or a list of [N, D_m] arrays (models of different widths).
      k: principal components per model.
      corr_percentile: γ is this percentile of |Λ| (:func:`correlation_threshold`).
      data_quantile: r_m is this quantile of P̂[m] (:func:`binarize`).
      center: centred PCA (reference KD tensor) or uncentred SVD (reference CD tensor).
      int32_quirk: the reference's integer ``best`` buffer in the clustering (:func:`greedy_cluster`).
      block: models per block of the correlation program (:func:`cross_correlation`).
      fix_signs, solver, seed: PCA options (:func:`pca_project`). The sign convention changes D
        and Ω, not Λ's magnitudes or the clusters.
      align_signs: after clustering, flip every component whose correlation with its cluster's
        seed is negative, so that the members of a feature mark the same tail of the data (not
        in the reference, where two models may "use" one feature on opposite tails).

    Computation is float32; PCA and correlations run on the default device, the clustering,
    thresholds and Ω on the host. Ω takes M·N·T bytes.
    """
    xs = _as_models(activations)
    check(0.0 <= float(corr_percentile) <= 100.0, f"corr_percentile must lie in [0, 100], got {corr_percentile}")
    check(0.0 <= float(data_quantile) <= 1.0, f"data_quantile must lie in [0, 1], got {data_quantile}")
    check(int(block) >= 1, f"block must be >= 1, got {block}")
    n = np.shape(xs[0])[0]
    for i, x in enumerate(xs):
        check(
            1 <= k <= min(n, np.shape(x)[1]),
            f"k = {k} must lie in [1, min(N, D)] = [1, {min(n, np.shape(x)[1])}] for model {i}; lower k",
        )
    times = {}
    t0 = time.perf_counter()
    projs = []
    for i, x in enumerate(xs):
        try:
            projs.append(pca_project(x, k, center=center, solver=solver, fix_signs=fix_signs, seed=seed + i))
        except ConfigError as e:
            raise ConfigError(f"model {i}: {e}") from None
    proj = jnp.stack(projs)
    del projs
    times["pca"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    lam = cross_correlation(zscore(proj), block=block)
    times["correlation"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    abs_lam = np.abs(lam)
    gamma = correlation_threshold(abs_lam, corr_percentile)
    times["threshold"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    assign, seeds = _greedy(abs_lam, gamma, int32_quirk)
    del abs_lam
    proj = np.asarray(proj)
    if align_signs:
        si, sj = seeds[assign, 0], seeds[assign, 1]
        mm, kk = np.indices(assign.shape)
        proj = proj * np.where(lam[si, mm, sj, kk] < 0, -1.0, 1.0).astype(proj.dtype)[:, None, :]
    del lam
    times["clustering"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    d, r = binarize(proj, data_quantile)
    times["binarisation"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    omega = assemble_omega(d, assign)
    times["omega"] = time.perf_counter() - t0
    return InteractionTensor(omega=omega, assign=assign, gamma=gamma, data_thresholds=r, proj=proj, timings=times)


# --------------------------------------------------------------------------------------------
# Statistics of Ω over groups of models (Kang & Kim §3; the reference's analysis/analyze_kd.py)


def _models(omega, group) -> np.ndarray:
    idx = np.arange(np.shape(omega)[0])[group]
    idx = np.atleast_1d(idx)
    check(idx.size >= 1, "a group must hold at least one model")
    return idx


def feature_frequency(omega, group) -> np.ndarray:
    """freq_G(t) = #{n : some model of G uses t on n}, [T] int64."""
    return np.asarray(omega)[_models(omega, group)].any(axis=0).sum(axis=0, dtype=np.int64)


def frequency_curve(omega, group, *, used_only: bool = False) -> np.ndarray:
    """freq_G sorted ascending (Fig. 1a of Kang & Kim); ``used_only`` drops the features G never uses."""
    f = np.sort(feature_frequency(omega, group))
    return f[f > 0] if used_only else f


def sample_feature_count(omega, group) -> np.ndarray:
    """count_G(n) = #{t : some model of G uses t on n}, [N] int64 (Fig. 2d)."""
    return np.asarray(omega)[_models(omega, group)].any(axis=0).sum(axis=1, dtype=np.int64)


def _summary_from_freq(freq, n_samples, n_models) -> dict:
    used = int(np.count_nonzero(freq))
    total = int(freq.sum())
    return {
        "unique_features": used,
        "occurrences_per_feature": total / used if used else float("nan"),
        "total_occurrences": total,
        "features_per_sample": total / n_samples,
        "n_models": int(n_models),
    }


def group_summary(omega, group) -> dict:
    """Unique features used by G, mean occurrences per used feature (Σ_t freq_G / #used), total
    occurrences, mean features per sample (mean_n count_G(n) = Σ_t freq_G / N) and the group size."""
    idx = _models(omega, group)
    return _summary_from_freq(feature_frequency(omega, idx), np.shape(omega)[1], idx.size)


def common_features(omega, groups: Mapping[str, object]) -> tuple[np.ndarray, dict]:
    """Features used by every group, and freq_G on them for each group (Fig. 1b).

    Returns ``(ids, {name: freq_G[ids]})`` with ``ids`` ascending.
    """
    freqs = {name: feature_frequency(omega, g) for name, g in groups.items()}
    check(len(freqs) >= 1, "common_features needs at least one group")
    ids = np.flatnonzero(np.logical_and.reduce([f > 0 for f in freqs.values()]))
    return ids, {name: f[ids] for name, f in freqs.items()}


def confidence_vs_count(omega, group, true_probs, *, count: str = "total") -> dict:
    """Per-sample mean confidence of G against its feature count (Fig. 2a-c), with rank and linear correlations.

    Args:
      true_probs: [M, N] (or [|G|, N]) each model's probability of the true class.
      count: ``"total"`` = Σ_{m∈G, t} Ω[m,n,t] (the reference's count, with multiplicity over
        models) or ``"union"`` = count_G(n).

    Returns ``{"confidence", "count", "spearman", "spearman_p", "pearson", "pearson_p"}``.
    """
    check_name("feature count", count, ("total", "union"))
    omega = np.asarray(omega)
    idx = _models(omega, group)
    probs = np.asarray(true_probs, np.float64)
    check(
        probs.ndim == 2 and probs.shape[1] == omega.shape[1] and probs.shape[0] in (omega.shape[0], idx.size),
        f"true_probs must be [M, N] or [|G|, N] with N = {omega.shape[1]}, got shape {probs.shape}",
    )
    conf = (probs[idx] if probs.shape[0] == omega.shape[0] else probs).mean(axis=0)
    cnt = omega[idx].sum(axis=(0, 2), dtype=np.int64) if count == "total" else sample_feature_count(omega, idx)
    rho, p_rho = _st.spearmanr(cnt, conf)
    r, p_r = _st.pearsonr(cnt, conf)
    return {
        "confidence": conf,
        "count": cnt,
        "spearman": float(rho),
        "spearman_p": float(p_rho),
        "pearson": float(r),
        "pearson_p": float(p_r),
    }


class _Packed:
    """Ω bit-packed along the samples, for fast unions over many resampled groups."""

    def __init__(self, omega):
        omega = np.asarray(omega, bool)
        self.n_samples = omega.shape[1]
        bits = np.packbits(omega, axis=1)  # [M, ceil(N/8), T], padding bits 0
        self.shape = bits.shape[1:]
        flat = bits.reshape(bits.shape[0], -1)
        pad = (-flat.shape[1]) % 8
        self.words = np.ascontiguousarray(np.pad(flat, ((0, 0), (0, pad)))).view(np.uint64)

    def freq(self, idx) -> np.ndarray:
        acc = self.words[idx[0]].copy()
        for i in idx[1:]:
            np.bitwise_or(acc, self.words[i], out=acc)
        u8 = acc.view(np.uint8)[: self.shape[0] * self.shape[1]].reshape(self.shape)
        return np.bitwise_count(u8).sum(axis=0, dtype=np.int64)


_STATS = ("unique_features", "occurrences_per_feature", "features_per_sample")


def bootstrap_group_stats(omega, group, *, n_resamples: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """Percentile bootstrap CIs of :func:`group_summary`'s statistics, resampling G's models with replacement.

    Returns ``{stat: {"value", "ci_low", "ci_high"}}`` for unique features, occurrences per
    feature and features per sample. A resample holds about 63 % distinct models and a union
    statistic only sees distinct ones, so size-dependent statistics (unique features, features
    per sample) are biased low in the resamples: use the CIs for spread, and
    :func:`permutation_test` to compare groups.
    """
    check(int(n_resamples) >= 1, f"n_resamples must be >= 1, got {n_resamples}")
    idx = _models(omega, group)
    packed = _Packed(np.asarray(omega)[idx])
    rng = np.random.default_rng(seed)
    n = packed.n_samples
    point = _summary_from_freq(packed.freq(np.arange(idx.size)), n, idx.size)
    draws = {s: np.empty(int(n_resamples)) for s in _STATS}
    for b in range(int(n_resamples)):
        sub = np.unique(rng.integers(0, idx.size, idx.size))
        res = _summary_from_freq(packed.freq(sub), n, idx.size)
        for s in _STATS:
            draws[s][b] = res[s]
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    return {
        s: {
            "value": point[s],
            "ci_low": float(np.nanpercentile(draws[s], lo)),
            "ci_high": float(np.nanpercentile(draws[s], hi)),
        }
        for s in _STATS
    }


def permutation_test(omega, group_a, group_b, *, n_permutations: int = 1000, seed: int = 0) -> dict:
    """Does A use fewer unique features, each more often, than B? One-sided permutation tests.

    The models of A ∪ B are reshuffled into groups of the original sizes ``n_permutations``
    times (seeded). Statistics: Δ_unique = unique(A) - unique(B) (claim: < 0) and Δ_occ =
    occurrences_per_feature(A) - occurrences_per_feature(B) (claim: > 0), with p-values
    (1 + #{perm: Δ* <= Δ_obs}) / (1 + n) and (1 + #{perm: Δ* >= Δ_obs}) / (1 + n).
    ``p_both`` = max of the two is the intersection-union test of the joint claim.
    """
    check(int(n_permutations) >= 1, f"n_permutations must be >= 1, got {n_permutations}")
    a, b = _models(omega, group_a), _models(omega, group_b)
    check(np.intersect1d(a, b).size == 0, "the two groups share models; a permutation test needs disjoint groups")
    pooled = np.concatenate([a, b])
    packed = _Packed(np.asarray(omega)[pooled])
    n = packed.n_samples

    def deltas(ia, ib):
        sa = _summary_from_freq(packed.freq(ia), n, len(ia))
        sb = _summary_from_freq(packed.freq(ib), n, len(ib))
        return (
            sa["unique_features"] - sb["unique_features"],
            sa["occurrences_per_feature"] - sb["occurrences_per_feature"],
            sa,
            sb,
        )

    order = np.arange(pooled.size)
    du, do, sa, sb = deltas(order[: a.size], order[a.size :])
    rng = np.random.default_rng(seed)
    perm_u, perm_o = np.empty(int(n_permutations)), np.empty(int(n_permutations))
    for i in range(int(n_permutations)):
        p = rng.permutation(pooled.size)
        perm_u[i], perm_o[i], _, _ = deltas(p[: a.size], p[a.size :])
    p_u = (1 + np.count_nonzero(perm_u <= du)) / (1 + n_permutations)
    p_o = (1 + np.count_nonzero(perm_o >= do)) / (1 + n_permutations)
    return {
        "a": sa,
        "b": sb,
        "delta_unique": float(du),
        "delta_occurrences": float(do),
        "p_fewer_unique": float(p_u),
        "p_more_occurrences": float(p_o),
        "p_both": float(max(p_u, p_o)),
        "n_permutations": int(n_permutations),
        "seed": int(seed),
    }


# --------------------------------------------------------------------------------------------
# Confusion as dark knowledge (Kang & Kim §4.1; the reference's analysis/analyze_confusion.py)


def _check_classes(labels, num_classes):
    labels = np.asarray(labels)
    c = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    counts = np.bincount(labels, minlength=c)
    check(counts.size == c, f"labels exceed num_classes = {c}")
    missing = np.flatnonzero(counts == 0)
    check(missing.size == 0, f"classes {missing.tolist()} have no samples; every class needs one")
    return labels, c, counts


def class_average_probs(probs_NxC, labels_N, num_classes: int | None = None) -> np.ndarray:
    """S̄[j, :] = mean of the predicted distributions over the samples of class j, [C, C].

    Pass softmax probabilities (the reference uses the teacher's softmax at T = 1)."""
    probs = np.asarray(probs_NxC, np.float64)
    labels, c, counts = _check_classes(labels_N, num_classes)
    check(probs.shape == (labels.size, c), f"probs must be [N, C] = [{labels.size}, {c}], got {probs.shape}")
    sums = np.zeros((c, c))
    np.add.at(sums, labels, probs)
    return sums / counts[:, None]


def confusion_ratios(preds_N, labels_N, num_classes: int | None = None, *, eps: float = 1e-8) -> np.ndarray:
    """P̄[j, :] = (CM[j, :] + eps) / Σ_c CM[j, c], rows of the confusion matrix (true j, predicted c).

    As the reference, ``eps`` is added to the counts and not to the row sum."""
    labels, c, counts = _check_classes(labels_N, num_classes)
    preds = np.asarray(preds_N)
    check(preds.shape == labels.shape, f"preds and labels must have the same shape, got {preds.shape}, {labels.shape}")
    check(preds.min() >= 0 and preds.max() < c, f"predictions must lie in [0, {c})")
    cm = np.zeros((c, c))
    np.add.at(cm, (labels, preds), 1.0)
    return (cm + eps) / counts[:, None]


def confusion_similarity(avg_probs_CxC, ratios_CxC) -> dict:
    """How well confusion ratios P̄ match a teacher's class-average softmax S̄, diagonal excluded.

    ``pearson`` and ``spearman`` over all C(C-1) off-diagonal entries; ``cosine`` and ``soft_iou``
    (Σ min / Σ max; 0 where Σ max = 0) per class over its C-1 off-diagonal entries, then averaged.
    Per-class values are returned as ``cosine_per_class`` and ``soft_iou_per_class``.
    """
    s, p = np.asarray(avg_probs_CxC, np.float64), np.asarray(ratios_CxC, np.float64)
    check(
        s.ndim == 2 and s.shape[0] == s.shape[1] and s.shape == p.shape,
        f"both matrices must be [C, C] of one shape, got {s.shape} and {p.shape}",
    )
    c = s.shape[0]
    off = ~np.eye(c, dtype=bool)
    so, po = s[off].reshape(c, c - 1), p[off].reshape(c, c - 1)
    norms = np.linalg.norm(so, axis=1) * np.linalg.norm(po, axis=1)
    cos = np.divide((so * po).sum(axis=1), norms, out=np.zeros(c), where=norms > 0)
    union = np.maximum(so, po).sum(axis=1)
    iou = np.divide(np.minimum(so, po).sum(axis=1), union, out=np.zeros(c), where=union >= 1e-12)
    return {
        "pearson": float(np.corrcoef(so.ravel(), po.ravel())[0, 1]),
        "spearman": float(_st.spearmanr(so.ravel(), po.ravel()).statistic),
        "cosine": float(cos.mean()),
        "soft_iou": float(iou.mean()),
        "cosine_per_class": cos,
        "soft_iou_per_class": iou,
    }


_CONFUSION_METRICS = ("pearson", "spearman", "cosine", "soft_iou")


def confusion_similarity_over_seeds(
    avg_probs_CxC, preds_SxN: Sequence, labels_N, *, eps: float = 1e-8, level: float = 0.95
) -> dict:
    """:func:`confusion_similarity` of the teacher's S̄ against each baseline seed's P̄, summarised over seeds.

    Returns ``{metric: jaxkd.stats.summarize(values) | {"values": [...]}}`` (mean, std, Student-t
    CI over the S seeds) for pearson, spearman, cosine and soft_iou.
    """
    c = np.shape(avg_probs_CxC)[0]
    per_seed = [confusion_similarity(avg_probs_CxC, confusion_ratios(p, labels_N, c, eps=eps)) for p in preds_SxN]
    check(len(per_seed) >= 1, "preds_SxN holds no seeds")
    out = {}
    for name in _CONFUSION_METRICS:
        vals = [r[name] for r in per_seed]
        out[name] = {**summarize(vals, level=level), "values": vals}
    return out
