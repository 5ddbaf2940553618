"""The rest of RepDistiller's CIFAR-100 table as terms: SP, CC, RKD, PKT, NST, FSP, FT, AB and CRD.

Each factory returns a :class:`jaxkd.terms.Term` (the contract is in that
module's docstring) computing the method as RepDistiller's ``distiller_zoo``
and ``crd`` code does (HobbitLong/RepDistiller, read at commit b84f547);
each pure loss here is one value per example whose batch mean is the
reference's batch loss. Conventions shared by all of them:

* Features are channels-last (``[B, H, W, C]``, ``[B, L, C]``; vectors
  ``[B, D]``); maps whose spatial sizes differ are brought to the smaller
  size per axis with :func:`jaxkd.features.adaptive_avg_pool` (RepDistiller
  pools the larger of the two by its height).
* The teacher's features are not differentiated. Learned modules (CC's and
  CRD's embeddings, FT's paraphraser and translator, AB's connectors) are aux
  params, trained by the run's optimiser with weight decay, as RepDistiller
  puts them in its ``trainable_list``.
* Relational methods (SP, CC, RKD, PKT) compute one batch quantity; the
  value of example ``i`` is its row (``i``'s similarities, distances,
  angles; CC: its product with the next example), so an example's value
  depends on the whole batch, as with DIST: compute them on the real batch.
* Norms follow ``torch.nn.functional.normalize`` (``x / max(‖x‖, 1e-12)``),
  so a zero vector gives a zero direction and finite gradients.
* Every term has ``skip_unweighted``: a grid point that gives it weight 0
  does not compute it where runs are traced one by one (the CPU default),
  and its state (CRD's memory, FT's step counter) stays as it was.

RepDistiller's CIFAR-100 settings (``scripts/run_cifar_distill.sh``: all
with ``-a 0``, CE weight 1; feature lists ``feat`` as its models return
them: ``feat[0]`` the stem, ``feat[1:-1]`` the stages, ``feat[-1]`` the
pooled vector), the defaults jaxkd's experiments use:

======  ======  ===============================================================
method  ``-b``  reads
======  ======  ===============================================================
SP      3000    the last stage map (``feat[-2]``)
CC      0.02    128-d linear embeddings (learned, both sides) of the pooled vector
RKD     1       the pooled vector; distance weight 25, angle weight 50
PKT     30000   the pooled vector
NST     50      every stage map (``feat[1:-1]``), summed
FSP     (50)    consecutive maps ``feat[:-1]`` (stem and stages): init stage only
FT      200     the last stage map (paraphraser trained first on the teacher's)
AB      (1)     every stage's pre-activation (``feat[1:-1]``, ``preact=True``):
                init stage only
CRD     0.8     the pooled vector; 128-d embeddings, 16384 negatives, T 0.07,
                memory momentum 0.5
======  ======  ===============================================================

**The init stage.** RepDistiller trains AB, FT and FSP in two stages
(``helper/pretrain.py``: ``--init_epochs 30``, then the 240 epochs): AB's
connectors with the student's feature layers on the AB loss, FT's
paraphraser alone on reconstructing the teacher's map, FSP's student
feature layers on the FSP loss; no cross-entropy. Its main stage then
trains with CE, plus ``-b 200`` × FT; AB's and FSP's main-stage loss is 0
(``loss_kd = 0`` in ``helper/loops.py``), so their ``-b`` is unused and the
init-stage loss is unweighted. jaxkd expresses this in one run with the
engine's phases (:func:`jaxkd.terms.gate_by_phase`): :func:`init_stage_objective`
gives AB and FSP ``phases = (30, 210), phase = "hard"`` (active in the
first eighth of the run) and adds ``ce_main``, a CE term active in the rest,
which replaces CE in those methods' grid points
(:func:`init_stage_conditions`); FT switches itself at ``init_steps`` (set to
the same boundary by :func:`fill_run_sizes`), because one term must train
its paraphraser first and use it frozen after. Deviations, on purpose: the
init stage is taken out of the run's budget (30 + 210 epochs, not 30 + 240),
one optimiser runs through both stages (its momentum carries over; weight
decay shrinks the classifier, which gets no gradient, during the init
stage), and FT's init learning rate (RepDistiller: 0.01 for ResNet and WRN
students) is expressed as ``init_scale`` (the init loss's factor relative
to the term's weight).

References: SP Tung & Mori 2019 (arXiv 1907.09682); CC Peng et al. 2019
(arXiv 1904.01802); RKD Park et al. 2019 (arXiv 1904.05068); PKT Passalis &
Tefas 2018 (arXiv 1803.10837); NST Huang & Wang 2017 (arXiv 1707.01219);
FSP Yim et al. 2017 (CVPR); FT Kim et al. 2018 (arXiv 1802.04977); AB Heo
et al. 2019 (arXiv 1811.03233); CRD Tian et al. 2020 (arXiv 1910.10699).

Registration: :data:`PEER_TERMS` maps each kind to its factory. This module
imports :mod:`jaxkd.terms` only when a factory runs, so ``jaxkd.terms`` can
import it to merge :data:`PEER_TERMS` into ``TERMS`` without an import cycle.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxkd.errors import ConfigError, check
from jaxkd.features import adaptive_avg_pool, attention_map

_HI = jax.lax.Precision.HIGHEST  # the relational products are small; full f32 on every backend
_EPS = 1e-12  # torch.nn.functional.normalize's eps


def _term(*args, **kwargs):
    from jaxkd.terms import Term  # here, not at import: jaxkd.terms imports this module to register it

    return Term(*args, **kwargs)


# --- pure pieces -----------------------------------------------------------------------------------


def _normalize(x, axis=-1):
    """``x / max(‖x‖₂, 1e-12)`` along ``axis`` (``F.normalize``), finite gradients at zero."""
    sq = jnp.sum(x * x, axis=axis, keepdims=True)
    return x / jnp.sqrt(jnp.maximum(sq, _EPS * _EPS))


def _norm(x, axis=-1):
    """``‖x‖₂`` (keepdims) with a zero, not NaN, gradient at the zero vector."""
    sq = jnp.sum(x * x, axis=axis, keepdims=True)
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def _flat(x):
    return x.reshape(x.shape[0], -1)


def _gram(a_BxD, b_BxD):
    return jnp.matmul(a_BxD, b_BxD.T, precision=_HI)


def _pair_maps(s, t):
    """Two maps at one spatial size: each axis pooled to the smaller of the two."""
    common = tuple(min(a, b) for a, b in zip(s.shape[1:-1], t.shape[1:-1]))
    return adaptive_avg_pool(s, common), adaptive_avg_pool(t, common)


def _smooth_l1(x):
    """``F.smooth_l1_loss`` elementwise with beta 1: ``x²/2`` below 1 in magnitude, ``|x| − 1/2`` above."""
    a = jnp.abs(x)
    return jnp.where(a < 1.0, 0.5 * x * x, a - 0.5)


def sp_loss(student_feature, teacher_feature):
    """Similarity-preserving KD, per example: ``Σ_j (Ĝ_t − Ĝ_s)²_ij / B``.

    ``G = F Fᵀ`` is the ``[B, B]`` Gram matrix of the flattened features and
    ``Ĝ`` its rows L2-normalised. The batch mean is RepDistiller's
    ``‖Ĝ_t − Ĝ_s‖²_F / B²`` (``Similarity``). References: Tung & Mori 2019, eq. 2-4.
    """
    fs, ft = _flat(student_feature), _flat(jax.lax.stop_gradient(teacher_feature))
    g_s = _normalize(_gram(fs, fs), axis=1)
    g_t = _normalize(_gram(ft, ft), axis=1)
    return jnp.sum((g_t - g_s) ** 2, axis=1) / fs.shape[0]


def cc_loss(student_embedding_BxD, teacher_embedding_BxD):
    """Correlation congruence as RepDistiller computes it, per example.

    With ``δ = |e_s − e_t|`` the reference's loss is the mean over
    ``i < B − 1`` of ``⟨δ_i, δ_{i+1}⟩`` (consecutive examples of the batch;
    ``Correlation``, the authors' code). Example ``i < B − 1`` gets
    ``B/(B−1) · ⟨δ_i, δ_{i+1}⟩`` and the last one 0, so the batch mean is the
    reference's. Both embeddings are learned (no stop-gradient here); a
    batch of one gives 0. References: Peng et al. 2019.
    """
    b = student_embedding_BxD.shape[0]
    if b < 2:
        return jnp.zeros((b,), student_embedding_BxD.dtype)
    delta = jnp.abs(student_embedding_BxD - teacher_embedding_BxD)
    pairs = jnp.sum(delta[:-1] * delta[1:], axis=1)
    return jnp.concatenate([pairs, jnp.zeros((1,), pairs.dtype)]) * (b / (b - 1))


def pairwise_distances(e_BxD):
    """RepDistiller's ``pdist``: ``sqrt(max(‖e_i‖² + ‖e_j‖² − 2⟨e_i, e_j⟩, 1e-12))``, zero diagonal."""
    sq = jnp.sum(e_BxD * e_BxD, axis=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * _gram(e_BxD, e_BxD)
    d = jnp.sqrt(jnp.maximum(d2, _EPS))
    return d * (1.0 - jnp.eye(e_BxD.shape[0], dtype=d.dtype))


def _by_mean_positive(d):
    """``d`` divided by the mean of its positive entries (1 if none)."""
    positive = d > 0
    mean = jnp.sum(jnp.where(positive, d, 0.0)) / jnp.maximum(jnp.sum(positive), 1)
    return d / jnp.where(mean > 0, mean, 1.0)


def _angles(e_BxD):
    """``[B, B, B]``: ``⟨u_ij, u_ik⟩`` with ``u_ij`` the unit vector from ``e_i`` to ``e_j`` (0 for ``i = j``)."""
    u = _normalize(e_BxD[None, :, :] - e_BxD[:, None, :], axis=2)
    return jnp.einsum("ijd,ikd->ijk", u, u, precision=_HI)


def rkd_loss(student_feature, teacher_feature, *, distance_weight=25.0, angle_weight=50.0):
    """Relational KD, per example: ``w_d · mean_j ℓ(ψ_D) + w_a · mean_{j,k} ℓ(ψ_A)`` for anchor ``i``.

    ``ψ_D``: pairwise distances, each divided by the mean of the batch's
    positive distances; ``ψ_A``: cosines of the angle at ``e_i`` between
    ``e_j`` and ``e_k``; ``ℓ`` the smooth-L1 (Huber, beta 1) of student minus
    teacher. The batch mean is RepDistiller's ``RKDLoss`` (its means run over
    all ``B²`` distances and ``B³`` angles, diagonals included). Zero
    distances (tied examples) are clamped as the reference does (squared
    distance at least 1e-12) and zero directions are 0, so gradients stay
    finite. References: Park et al. 2019, eq. 4-7.
    """
    s, t = _flat(student_feature), _flat(jax.lax.stop_gradient(teacher_feature))
    d_s, d_t = _by_mean_positive(pairwise_distances(s)), _by_mean_positive(pairwise_distances(t))
    loss_d = jnp.mean(_smooth_l1(d_s - d_t), axis=1)
    loss_a = jnp.mean(_smooth_l1(_angles(s) - _angles(t)), axis=(1, 2))
    return distance_weight * loss_d + angle_weight * loss_a


def _cosine_probabilities(x_BxD, eps):
    x = x_BxD / (_norm(x_BxD, axis=1) + eps)
    sim = (_gram(x, x) + 1.0) / 2.0
    return sim / jnp.sum(sim, axis=1, keepdims=True)


def pkt_loss(student_feature, teacher_feature, *, eps=1e-7):
    """Probabilistic KT, per example: ``mean_j p_t(j|i) · log((p_t + eps) / (p_s + eps))``.

    ``p(j|i)`` is the cosine similarity rescaled to ``[0, 1]`` and normalised
    over ``j`` (each vector divided by ``‖x‖ + eps`` first); the batch mean is
    RepDistiller's ``PKT.cosine_similarity_loss`` (the mean over all ``B²``
    entries). References: Passalis & Tefas 2018, eq. 9-11.
    """
    p_s = _cosine_probabilities(_flat(student_feature), eps)
    p_t = _cosine_probabilities(_flat(jax.lax.stop_gradient(teacher_feature)), eps)
    return jnp.mean(p_t * jnp.log((p_t + eps) / (p_s + eps)), axis=1)


def _channel_maps(f):
    """``[B, C, N]``: each channel's spatial map, flattened and L2-normalised."""
    x = jnp.swapaxes(f.reshape(f.shape[0], -1, f.shape[-1]), 1, 2)
    return _normalize(x, axis=2)


def _poly_mean(a, b):
    """Mean over channel pairs of the degree-2 polynomial kernel ``⟨a_c, b_d⟩²``, per example."""
    return jnp.mean(jnp.einsum("bcn,bdn->bcd", a, b, precision=_HI) ** 2, axis=(1, 2))


def nst_loss(student_feature, teacher_feature):
    """Neuron selectivity transfer: squared MMD with the kernel ``k(x, y) = (xᵀy)²``, per example.

    The samples are the channels' spatial maps, each L2-normalised;
    ``mean k(t, t) + mean k(s, s) − 2 mean k(s, t)`` over channel pairs
    (RepDistiller's ``NSTLoss`` with ``full_loss``). Channel counts may differ.
    References: Huang & Wang 2017, eq. 10.
    """
    s, t = _pair_maps(student_feature, jax.lax.stop_gradient(teacher_feature))
    a, b = _channel_maps(s), _channel_maps(t)
    return _poly_mean(b, b) + _poly_mean(a, a) - 2.0 * _poly_mean(a, b)


def fsp_matrix(bottom, top):
    """The ``[B, C_top, C_bottom]`` flow matrix: the mean over positions of ``top_c · bottom_d``."""
    bottom, top = _pair_maps(bottom, top)
    n = int(np.prod(bottom.shape[1:-1]))
    flat = lambda f: f.reshape(f.shape[0], -1, f.shape[-1])  # noqa: E731
    return jnp.einsum("bnc,bnd->bdc", flat(bottom), flat(top), precision=_HI) / n


def fsp_loss(student_features: Sequence, teacher_features: Sequence):
    """FSP, per example: ``Σ_pairs mean_{c,d} (G_s − G_t)²`` over consecutive pairs of the given maps.

    RepDistiller's ``FSP`` sums ``(G_s − G_t).pow(2).mean()`` over the pairs
    ``(feat[i], feat[i+1])``. Student and teacher maps must have the same
    channel counts. References: Yim et al. 2017, eq. 1-2.
    """
    total = 0.0
    teacher_features = [jax.lax.stop_gradient(f) for f in teacher_features]
    for i in range(len(student_features) - 1):
        g_s = fsp_matrix(student_features[i], student_features[i + 1])
        g_t = fsp_matrix(teacher_features[i], teacher_features[i + 1])
        total = total + jnp.mean((g_s - g_t) ** 2, axis=(1, 2))
    return total


def ab_loss(source, target, *, margin=1.0):
    """Activation-boundary loss, per example: the sum over elements of
    ``(s + m)² [s > −m, t ≤ 0] + (s − m)² [s ≤ m, t > 0]``.

    ``s`` is the student's (connected) pre-activation, ``t`` the teacher's;
    RepDistiller's ``criterion_alternative_l2`` (summed over the batch there).
    References: Heo et al. 2019, eq. 6.
    """
    t = jax.lax.stop_gradient(target)
    m = margin
    loss = (source + m) ** 2 * ((source > -m) & (t <= 0)) + (source - m) ** 2 * ((source <= m) & (t > 0))
    return jnp.sum(loss, axis=tuple(range(1, source.ndim)))


def factor_loss(student_factor, teacher_factor):
    """Factor transfer, per example: mean over positions of ``|a(F_s) − a(F_t)|``.

    ``a`` is the L2-normalised channel mean of the squared factor
    (:func:`jaxkd.features.attention_map`, p = 2); RepDistiller's
    ``FactorTransfer`` with ``p1 = 2, p2 = 1``. References: Kim et al. 2018, eq. 3.
    """
    s, t = _pair_maps(student_factor, jax.lax.stop_gradient(teacher_factor))
    return jnp.mean(jnp.abs(attention_map(s, p=2) - attention_map(t, p=2)), axis=1)


def nce_loss(p_BxK1, n_data: int, *, eps=1e-7):
    """CRD's NCE loss (RepDistiller's ``ContrastLoss``, eq. 18 of the paper), per example.

    ``p[:, 0]`` is the positive's normalised score and ``p[:, 1:]`` the ``K``
    negatives'; with the noise probability ``P_n = 1/N``:
    ``−log(p₀ / (p₀ + K P_n + eps)) − Σ_k log(K P_n / (p_k + K P_n + eps))``.
    """
    k = p_BxK1.shape[1] - 1
    noise = k / n_data
    log_d1 = jnp.log(p_BxK1[:, 0] / (p_BxK1[:, 0] + noise + eps))
    log_d0 = jnp.log(noise / (p_BxK1[:, 1:] + noise + eps))
    return -(log_d1 + jnp.sum(log_d0, axis=1))


def memory_update(memory_NxD, index_B, v_BxD, momentum):
    """CRD's momentum memory: rows ``index`` become ``normalize(m · memory[i] + (1 − m) · v)``."""
    memory_NxD = jnp.asarray(memory_NxD)
    rows = memory_NxD[index_B] * momentum + (1.0 - momentum) * v_BxD
    return memory_NxD.at[index_B].set(_normalize(rows, axis=1).astype(memory_NxD.dtype))


def contrast_scores(memory_NxD, contrast_BxK1, v_BxD, temperature):
    """``exp(⟨memory[contrast[b, k]], v_b⟩ / T)``, ``[B, K+1]``.

    Computed as ``memory · vᵀ`` (``[N, B]``) and gathered, so memory holds
    ``N·B`` scores rather than the ``B·(K+1)·D`` rows RepDistiller gathers.
    """
    scores_NxB = jnp.matmul(memory_NxD, v_BxD.T, precision=_HI)
    return jnp.exp(scores_NxB[contrast_BxK1, jnp.arange(v_BxD.shape[0])[:, None]] / temperature)


NEGATIVES = ("other_class", "uniform")


def contrast_indices(key, index_B, labels_B, labels_N, num_negatives: int, negatives: str = "other_class"):
    """``[B, K+1]`` memory rows: the example itself, then ``K`` negatives drawn with replacement.

    ``"other_class"`` draws uniformly among the examples whose recorded label
    differs from the anchor's (RepDistiller's ``mode='exact'``; examples not
    seen yet, label −1, count as other classes); ``"uniform"`` among all ``N``.
    """
    n = labels_N.shape[0]
    shape = (index_B.shape[0], num_negatives)
    if negatives == "uniform":
        neg = jax.random.randint(key, shape, 0, n)
    else:
        order = jnp.argsort(labels_N, stable=True)
        sorted_labels = labels_N[order]
        start = jnp.searchsorted(sorted_labels, labels_B, side="left")
        count = jnp.searchsorted(sorted_labels, labels_B, side="right") - start
        u = jax.random.randint(key, shape, 0, jnp.maximum(n - count, 1)[:, None])
        pos = jnp.where(u < start[:, None], u, u + count[:, None])  # skip the anchor's class block
        neg = order[jnp.minimum(pos, n - 1)]
    return jnp.concatenate([index_B[:, None].astype(neg.dtype), neg], axis=1)


# --- small learned modules ---------------------------------------------------------------------------


class _U(NamedTuple):
    """A parameter drawn ``U(±bound)``."""

    shape: tuple[int, ...]
    bound: float


def _draw(key, tree):
    """``tree`` with each :class:`_U` leaf drawn, all from one uniform draw (one RNG call compiles fast)."""
    leaves, treedef = jax.tree.flatten(tree, is_leaf=lambda x: isinstance(x, _U))
    sizes = [int(np.prod(u.shape)) if isinstance(u, _U) else 0 for u in leaves]
    flat = jax.random.uniform(key, (max(sum(sizes), 1),), jnp.float32, -1.0, 1.0)
    out, start = [], 0
    for u, n in zip(leaves, sizes):
        out.append(flat[start : start + n].reshape(u.shape) * u.bound if isinstance(u, _U) else u)
        start += n
    return jax.tree.unflatten(treedef, out)


def _torch_default(shape, fan_in):
    """PyTorch's default initialisation of conv and linear weights and biases: ``U(±1/sqrt(fan_in))``."""
    return _U(tuple(shape), float(1.0 / np.sqrt(fan_in)))


def _linear_spec(d_in, d_out):
    return {"kernel": _torch_default((d_in, d_out), d_in), "bias": _torch_default((d_out,), d_in)}


def _linear(p, x_BxD):
    return jnp.matmul(x_BxD, p["kernel"], precision=_HI) + p["bias"][None, :]


def _conv_spec(c_in, c_out, *, ndim, bias=True, bn=False):
    fan_in = c_in * 3**ndim
    p = {"kernel": _torch_default((3,) * ndim + (c_in, c_out), fan_in)}
    if bias:
        p["bias"] = _torch_default((c_out,), fan_in)
    if bn:
        p["scale"], p["offset"] = jnp.ones((c_out,), jnp.float32), jnp.zeros((c_out,), jnp.float32)
    return p


def _batch_norm(x, scale, offset, eps=1e-5):
    """BatchNorm with the batch's own statistics (training mode; biased variance, eps 1e-5 as PyTorch)."""
    axes = tuple(range(x.ndim - 1))
    mean = x.mean(axes, keepdims=True)
    var = jnp.square(x - mean).mean(axes, keepdims=True)
    shape = (1,) * (x.ndim - 1) + (-1,)
    return (x - mean) * jax.lax.rsqrt(var + eps) * scale.reshape(shape) + offset.reshape(shape)


def _conv_layer(p, x):
    """3x3 convolution, stride 1, 'SAME' padding (then BatchNorm if ``p`` has one), then LeakyReLU(0.1)."""
    letters = "HWD"[: x.ndim - 2]
    dn = ("N" + letters + "C", letters + "IO", "N" + letters + "C")
    kernel = p["kernel"].astype(x.dtype)
    y = jax.lax.conv_general_dilated(x, kernel, (1,) * (x.ndim - 2), "SAME", dimension_numbers=dn)
    if "bias" in p:
        y = y + p["bias"].reshape((1,) * (y.ndim - 1) + (-1,))
    if "scale" in p:
        y = _batch_norm(y, p["scale"], p["offset"])
    return jax.nn.leaky_relu(y, 0.1)


def _stack(layers, x):
    for p in layers:
        x = _conv_layer(p, x)
    return x


def _feature(spec, name: str, side: str):
    feats = spec[1]
    if name not in feats:
        raise ConfigError(f"the {side} has no feature {name!r}; it has: {', '.join(sorted(feats))}")
    return feats[name]


def _names(kind: str, student, teacher):
    as_tuple = lambda v: (v,) if isinstance(v, str) else tuple(v)  # noqa: E731  (one name: a 1-tuple)
    student, teacher = as_tuple(student), as_tuple(teacher)
    check(
        len(student) == len(teacher) and student,
        f"{kind} needs as many student features as teacher features, got {student} and {teacher}",
    )
    return student, teacher


def _check_maps(kind, fs, ft, a, b):
    check(
        fs.ndim in (3, 4) and ft.ndim == fs.ndim,
        f"{kind}: features {a!r} {fs.shape[1:]} and {b!r} {ft.shape[1:]} must both be spatial maps of one rank",
    )


# --- the terms -------------------------------------------------------------------------------------


def sp(*, student: str, teacher: str):
    """SP (Tung & Mori 2019): :func:`sp_loss` on one feature of each side. Returns a ``Term``.

    RepDistiller: the last stage map (``feat[-2]``), ``-b 3000``.
    """

    def apply(aux, state, s_out, t_out, batch, key, hp):
        return sp_loss(s_out[1][student], t_out[1][teacher]), state

    return _term(
        "sp", apply, needs_teacher=True, student_features=(student,), teacher_features=(teacher,), skip_unweighted=True
    )


def cc(*, student: str = "pooled", teacher: str = "pooled", feat_dim: int = 128):
    """CC (Peng et al. 2019): :func:`cc_loss` on learned linear embeddings of each side. Returns a ``Term``.

    Aux params: the ``feat_dim``-d linear maps (``LinearEmbed``, PyTorch's
    default initialisation) of the flattened student and teacher features,
    both trained. RepDistiller: the pooled vector, 128-d, ``-b 0.02``.
    """
    check(int(feat_dim) > 0, f"cc.feat_dim must be a positive integer, got {feat_dim}")

    def init(key, s_spec, t_spec):
        ds = int(np.prod(_feature(s_spec, student, "student").shape[1:]))
        dt = int(np.prod(_feature(t_spec, teacher, "teacher").shape[1:]))
        return _draw(key, {"embed_s": _linear_spec(ds, feat_dim), "embed_t": _linear_spec(dt, feat_dim)}), {}

    def apply(aux, state, s_out, t_out, batch, key, hp):
        e_s = _linear(aux["embed_s"], _flat(s_out[1][student]))
        e_t = _linear(aux["embed_t"], _flat(jax.lax.stop_gradient(t_out[1][teacher])))
        return cc_loss(e_s, e_t), state

    return _term(
        "cc",
        apply,
        init=init,
        needs_teacher=True,
        student_features=(student,),
        teacher_features=(teacher,),
        skip_unweighted=True,
    )


def rkd(*, student: str = "pooled", teacher: str = "pooled", distance_weight: float = 25.0, angle_weight: float = 50.0):
    """RKD (Park et al. 2019): :func:`rkd_loss`, distance and angle. Returns a ``Term``.

    RepDistiller: the pooled vector, distance 25, angle 50, ``-b 1``.
    """

    def apply(aux, state, s_out, t_out, batch, key, hp):
        values = rkd_loss(
            s_out[1][student],
            t_out[1][teacher],
            distance_weight=hp["distance_weight"],
            angle_weight=hp["angle_weight"],
        )
        return values, state

    return _term(
        "rkd",
        apply,
        hparams={"distance_weight": distance_weight, "angle_weight": angle_weight},
        constraints={"distance_weight": "nonneg", "angle_weight": "nonneg"},
        needs_teacher=True,
        student_features=(student,),
        teacher_features=(teacher,),
        skip_unweighted=True,
    )


def pkt(*, student: str = "pooled", teacher: str = "pooled"):
    """PKT (Passalis & Tefas 2018): :func:`pkt_loss`. Returns a ``Term``.

    RepDistiller: the pooled vector, ``-b 30000``.
    """

    def apply(aux, state, s_out, t_out, batch, key, hp):
        return pkt_loss(s_out[1][student], t_out[1][teacher]), state

    return _term(
        "pkt", apply, needs_teacher=True, student_features=(student,), teacher_features=(teacher,), skip_unweighted=True
    )


def nst(*, student: tuple[str, ...], teacher: tuple[str, ...]):
    """NST (Huang & Wang 2017): :func:`nst_loss` summed over the paired maps. Returns a ``Term``.

    RepDistiller: every stage map (``feat[1:-1]``, AT's), ``-b 50``.
    """
    student, teacher = _names("nst", student, teacher)

    def init(key, s_spec, t_spec):
        for a, b in zip(student, teacher):
            _check_maps("nst", _feature(s_spec, a, "student"), _feature(t_spec, b, "teacher"), a, b)
        return {}, {}

    def apply(aux, state, s_out, t_out, batch, key, hp):
        return sum(nst_loss(s_out[1][a], t_out[1][b]) for a, b in zip(student, teacher)), state

    return _term(
        "nst",
        apply,
        init=init,
        needs_teacher=True,
        student_features=student,
        teacher_features=teacher,
        skip_unweighted=True,
    )


def fsp(*, student: tuple[str, ...], teacher: tuple[str, ...]):
    """FSP (Yim et al. 2017): :func:`fsp_loss` over consecutive pairs of the listed maps. Returns a ``Term``.

    Student and teacher maps must have equal channel counts, pair by pair
    (RepDistiller refuses others too). RepDistiller trains it in its init
    stage only, unweighted (see the module docstring): give the term
    ``phases=(30, 210), phase="hard"`` and weight 1
    (:func:`init_stage_objective`). Maps: the stem and every stage (``feat[:-1]``).
    """
    student, teacher = _names("fsp", student, teacher)

    def init(key, s_spec, t_spec):
        check(
            len(student) >= 2, f"fsp needs at least two maps per side (a flow between consecutive ones), got {student}"
        )
        for a, b in zip(student, teacher):
            fs, ft = _feature(s_spec, a, "student"), _feature(t_spec, b, "teacher")
            _check_maps("fsp", fs, ft, a, b)
            check(
                fs.shape[-1] == ft.shape[-1],
                f"fsp compares flow matrices channel by channel: student {a!r} has {fs.shape[-1]} channels, "
                f"teacher {b!r} {ft.shape[-1]}; pair models of equal stage widths (or use nst/at)",
            )
        return {}, {}

    def apply(aux, state, s_out, t_out, batch, key, hp):
        return fsp_loss([s_out[1][a] for a in student], [t_out[1][b] for b in teacher]), state

    return _term(
        "fsp",
        apply,
        init=init,
        needs_teacher=True,
        student_features=student,
        teacher_features=teacher,
        skip_unweighted=True,
    )


def ab(*, student: tuple[str, ...], teacher: tuple[str, ...], margin: float = 1.0):
    """AB (Heo et al. 2019): activation boundaries, :func:`ab_loss` per stage. Returns a ``Term``.

    Per example ``Σ_i 2^(i−n+1) · 3/1000 · ab_loss(c_i(s_i), t_i)``: RepDistiller's
    ``ABLoss`` weights (the deepest of the ``n`` stages 1, the one before 1/2,
    ...) and its ``/ 1000 * 3``. The connector ``c_i`` is the identity where
    the two maps have the same shape, else a 1x1 convolution and BatchNorm
    with the batch's statistics (RepDistiller's ``Connector``:
    ``ConvReg(use_relu=False)``); its parameters are aux params. The maps must
    have equal spatial sizes (RepDistiller's strided connectors for 2x sizes
    are not implemented). Features: the stages' pre-activations
    (``stage{i}_pre``: RepDistiller's ``preact=True``). Init stage only (see
    the module docstring): ``phases=(30, 210), phase="hard"``, weight 1.
    """
    student, teacher = _names("ab", student, teacher)
    n = len(student)

    def init(key, s_spec, t_spec):
        aux = []
        for a, b in zip(student, teacher):
            fs, ft = _feature(s_spec, a, "student"), _feature(t_spec, b, "teacher")
            check(
                fs.ndim == ft.ndim and fs.shape[1:-1] == ft.shape[1:-1],
                f"ab: student {a!r} {fs.shape[1:]} and teacher {b!r} {ft.shape[1:]} must have the same spatial size",
            )
            if fs.shape[-1] == ft.shape[-1]:
                aux.append({})
            else:
                c_s, c_t = fs.shape[-1], ft.shape[-1]
                ones, zeros = jnp.ones((c_t,), jnp.float32), jnp.zeros((c_t,), jnp.float32)
                aux.append({"kernel": _torch_default((c_s, c_t), c_s), "scale": ones, "offset": zeros})
        return _draw(key, {"connectors": aux}), {}

    def apply(aux, state, s_out, t_out, batch, key, hp):
        values = 0.0
        for i, (a, b, c) in enumerate(zip(student, teacher, aux["connectors"])):
            s = s_out[1][a]
            if c:
                s = jnp.einsum("...c,cd->...d", s, c["kernel"], precision=_HI)
                s = _batch_norm(s, c["scale"], c["offset"])
            values = values + 2.0 ** (i - n + 1) * 3e-3 * ab_loss(s, t_out[1][b], margin=hp["margin"])
        return values, state

    return _term(
        "ab",
        apply,
        init=init,
        hparams={"margin": margin},
        constraints={"margin": "nonneg"},
        needs_teacher=True,
        student_features=student,
        teacher_features=teacher,
        skip_unweighted=True,
    )


def ft(*, student: str, teacher: str, rate: float = 0.5, init_steps: int = 0, init_scale: float = 0.001):
    """FT (Kim et al. 2018): factor transfer through a paraphraser and a translator. Returns a ``Term``.

    Aux params (RepDistiller's ``Paraphraser`` and ``Translator``, 3x3
    convolutions with LeakyReLU 0.1; PyTorch's default initialisation): the
    paraphraser's encoder (``C → C → kC → kC``, ``k = rate``) and decoder
    (back to ``C``) of the teacher's map, and the translator
    (``C_s → C_s → kC → kC``, each convolution followed by BatchNorm with the
    batch's statistics) of the student's. The term's state counts steps and
    holds the encoder as it was at step ``init_steps``:

    - steps ``< init_steps`` (the init stage): the value is
      ``init_scale · mean((decoder(encoder(t)) − t)²)`` (the reconstruction
      RepDistiller trains for 30 epochs, at learning rate 0.01 for ResNet and
      WRN students: with the run's 0.05 and weight 200 that is
      ``init_scale = 0.01 / 0.05 / 200 = 0.001``); only the paraphraser
      gets gradients;
    - later: :func:`factor_loss` of ``translator(s)`` against the frozen
      ``encoder(t)``; the paraphraser is no longer read from the aux params.

    ``init_steps = 0``: no init stage (the paraphraser stays random). Set it
    with the boundary of the run's init phase (:func:`fill_run_sizes`). RepDistiller:
    the last stage map (``feat[-2]``), ``-b 200``.
    """
    check(0 < rate <= 1, f"ft.rate must lie in (0, 1], got {rate}")
    check(int(init_steps) == init_steps and init_steps >= 0, f"ft.init_steps must be an integer >= 0, got {init_steps}")
    init_steps = int(init_steps)

    def init(key, s_spec, t_spec):
        fs, ft_ = _feature(s_spec, student, "student"), _feature(t_spec, teacher, "teacher")
        _check_maps("ft", fs, ft_, student, teacher)
        nd, c, c_s = fs.ndim - 2, ft_.shape[-1], fs.shape[-1]
        k = max(1, int(c * rate))
        conv = lambda a, b, **kw: _conv_spec(a, b, ndim=nd, **kw)  # noqa: E731
        aux = {
            "encoder": [conv(c, c), conv(c, k), conv(k, k)],
            "decoder": [conv(k, k), conv(k, c), conv(c, c)],
            "translator": [conv(a, b, bias=False, bn=True) for a, b in ((c_s, c_s), (c_s, k), (k, k))],
        }
        aux = _draw(key, aux)
        return aux, {"step": jnp.zeros((), jnp.int32), "encoder": aux["encoder"]}

    def apply(aux, state, s_out, t_out, batch, key, hp):
        t = jax.lax.stop_gradient(t_out[1][teacher])
        s = s_out[1][student]
        step = state["step"]
        frozen = jax.tree.map(
            lambda a, f: jnp.where(step <= init_steps, jax.lax.stop_gradient(a), f), aux["encoder"], state["encoder"]
        )

        def main_stage():
            return factor_loss(_stack(aux["translator"], s), jax.lax.stop_gradient(_stack(frozen, t)))

        def init_stage():
            rec = _stack(aux["decoder"], _stack(aux["encoder"], t))
            return hp["init_scale"] * jnp.mean((rec - t) ** 2, axis=tuple(range(1, t.ndim)))

        values = main_stage() if init_steps == 0 else jax.lax.cond(step < init_steps, init_stage, main_stage)
        return values, {"step": step + 1, "encoder": frozen}

    return _term(
        "ft",
        apply,
        init=init,
        hparams={"init_scale": init_scale},
        constraints={"init_scale": "nonneg"},
        needs_teacher=True,
        student_features=(student,),
        teacher_features=(teacher,),
        skip_unweighted=True,
    )


def crd(
    *,
    student: str = "pooled",
    teacher: str = "pooled",
    n_data: int | None = None,
    feat_dim: int = 128,
    nce_k: int = 16384,
    temperature: float = 0.07,
    momentum: float = 0.5,
    negatives: str = "other_class",
):
    """CRD (Tian et al. 2020): contrastive representation distillation with a momentum memory. Returns a ``Term``.

    Aux params: the ``feat_dim``-d linear embeddings of each side, L2-normalised
    (``Embed``), both trained. State: two memories ``[n_data, feat_dim]`` of
    every training example's student and teacher embeddings (initialised
    ``U(±1/sqrt(feat_dim/3))``, rows of norm about 1, as ``ContrastMemory``),
    the labels seen so far by dataset index, and the two normalisation
    constants ``Z`` (set from the first batch: the mean score times ``N``,
    then fixed). Each step, for the batch's dataset indices
    ``batch["index"]``:

    1. ``nce_k`` negatives per example are drawn from the step key
       (:func:`contrast_indices`, ``negatives``: ``"other_class"`` is
       RepDistiller's ``mode='exact'``; drawn with replacement);
    2. the student embedding is scored against the teacher memory and the
       teacher embedding against the student memory
       (:func:`contrast_scores`, divided by ``Z``), and the value is the sum
       of the two :func:`nce_loss`;
    3. the memories' rows of the batch are updated with momentum
       (:func:`memory_update`), after the scores, as RepDistiller does.

    ``n_data`` is the number of training examples (``batch["index"]`` runs
    over ``0 .. n_data − 1``); the experiments fill it in. RepDistiller: the
    pooled vector, 128-d, 16384 negatives, T 0.07, momentum 0.5, ``-b 0.8``.
    """
    check(negatives in NEGATIVES, f"crd.negatives must be one of {', '.join(NEGATIVES)}, got {negatives!r}")
    check(int(nce_k) == nce_k and nce_k >= 1, f"crd.nce_k must be a positive integer, got {nce_k}")
    check(int(feat_dim) == feat_dim and feat_dim >= 1, f"crd.feat_dim must be a positive integer, got {feat_dim}")
    check(
        n_data is None or (int(n_data) == n_data and n_data >= 2),
        f"crd.n_data must be the number of training examples (an integer >= 2), got {n_data}",
    )
    feat_dim, nce_k = int(feat_dim), int(nce_k)

    def init(key, s_spec, t_spec):
        if n_data is None:
            raise ConfigError(
                "crd needs n_data, the number of training examples (its memory has one row per example); "
                "set objective.crd.n_data=N (the experiments fill it in)"
            )
        n = int(n_data)
        ds = int(np.prod(_feature(s_spec, student, "student").shape[1:]))
        dt = int(np.prod(_feature(t_spec, teacher, "teacher").shape[1:]))
        stdv = float(1.0 / np.sqrt(feat_dim / 3.0))
        aux, memories = _draw(
            key,
            (
                {"embed_s": _linear_spec(ds, feat_dim), "embed_t": _linear_spec(dt, feat_dim)},
                {"memory_s": _U((n, feat_dim), stdv), "memory_t": _U((n, feat_dim), stdv)},
            ),
        )
        state = {
            **memories,
            "labels": jnp.full((n,), -1, jnp.int32),
            "z_s": jnp.full((), -1.0, jnp.float32),
            "z_t": jnp.full((), -1.0, jnp.float32),
        }
        return aux, state

    def apply(aux, state, s_out, t_out, batch, key, hp):
        n = state["labels"].shape[0]
        v_s = _normalize(_linear(aux["embed_s"], _flat(s_out[1][student])), axis=1)
        v_t = _normalize(_linear(aux["embed_t"], _flat(jax.lax.stop_gradient(t_out[1][teacher]))), axis=1)
        index = batch["index"].astype(jnp.int32)
        labels = state["labels"].at[index].set(batch["y"].astype(jnp.int32))
        contrast = contrast_indices(key, index, batch["y"].astype(jnp.int32), labels, nce_k, negatives)
        mem_s, mem_t = jax.lax.stop_gradient(state["memory_s"]), jax.lax.stop_gradient(state["memory_t"])
        out_s = contrast_scores(mem_t, contrast, v_s, hp["temperature"])  # student anchor, teacher memory
        out_t = contrast_scores(mem_s, contrast, v_t, hp["temperature"])  # teacher anchor, student memory
        z_s = jnp.where(state["z_s"] < 0, jax.lax.stop_gradient(jnp.mean(out_s)) * n, state["z_s"])
        z_t = jnp.where(state["z_t"] < 0, jax.lax.stop_gradient(jnp.mean(out_t)) * n, state["z_t"])
        values = nce_loss(out_s / z_s, n) + nce_loss(out_t / z_t, n)
        m = hp["momentum"]
        new = {
            "memory_s": memory_update(mem_s, index, jax.lax.stop_gradient(v_s), m),
            "memory_t": memory_update(mem_t, index, jax.lax.stop_gradient(v_t), m),
            "labels": labels,
            "z_s": z_s,
            "z_t": z_t,
        }
        return values, new

    return _term(
        "crd",
        apply,
        init=init,
        hparams={"temperature": temperature, "momentum": momentum},
        constraints={"temperature": "positive", "momentum": "unit"},
        needs_teacher=True,
        student_features=(student,),
        teacher_features=(teacher,),
        skip_unweighted=True,
    )


PEER_TERMS = {"sp": sp, "cc": cc, "rkd": rkd, "pkt": pkt, "nst": nst, "fsp": fsp, "ft": ft, "ab": ab, "crd": crd}


# --- RepDistiller's init stage and run sizes, for experiments ---------------------------------------

INIT_STAGE_KINDS = ("ab", "fsp", "ft")  # trained first, before the student's CE (RepDistiller's init)
INIT_PHASES = (30.0, 210.0)  # RepDistiller's 30 init epochs, taken out of a 240-epoch run
CE_MAIN = "ce_main"  # the CE term of the init-stage methods' grid points: active after the init stage


def _kind(name: str, options) -> str:
    return options.get("kind", name) if isinstance(options, Mapping) else name


def init_stage_objective(terms: Mapping, *, phases=INIT_PHASES, ce: str = "ce") -> dict:
    """Objective terms with RepDistiller's init stage for their AB, FSP and FT entries.

    AB and FSP entries get ``phases``/``phase="hard"`` (active in the first
    segment only) unless they set their own; if any init-stage entry is
    present, ``ce_main`` (a copy of ``ce``'s options, ``phase="soft"``:
    active in the rest) is added for :func:`init_stage_conditions`. FT's
    ``init_steps`` is set separately (:func:`fill_run_sizes`).
    """
    out = {k: dict(v) for k, v in terms.items()}
    staged = [n for n, o in out.items() if _kind(n, o) in INIT_STAGE_KINDS]
    for name in staged:
        if _kind(name, out[name]) != "ft" and "phases" not in out[name]:
            out[name].update(phases=tuple(phases), phase="hard")
    if staged:
        check(ce in out, f"the init-stage methods {', '.join(staged)} need a {ce!r} term to copy for {CE_MAIN!r}")
        out[CE_MAIN] = {**out[ce], "kind": "ce", "phases": tuple(phases), "phase": "soft"}
    return out


def init_stage_conditions(conditions: Mapping, terms: Mapping, *, ce: str = "ce") -> dict:
    """Grid points with CE moved to ``ce_main`` in the init-stage methods' points (and ``ce_main`` 0 elsewhere)."""
    out = {m: dict(p) for m, p in conditions.items()}
    if CE_MAIN not in terms:
        return out
    for m, point in out.items():
        staged = m in terms and _kind(m, terms[m]) in INIT_STAGE_KINDS
        point[f"{CE_MAIN}.weight"] = point[f"{ce}.weight"] if staged else 0.0
        if staged:
            point[f"{ce}.weight"] = 0.0
    return out


def needs_run_sizes(terms: Mapping) -> bool:
    """Whether some entry needs the run's sizes (CRD's ``n_data``, FT's ``init_steps``) filled in."""
    return any(
        (_kind(n, o) == "crd" and o.get("n_data") is None) or (_kind(n, o) == "ft" and o.get("init_steps") is None)
        for n, o in terms.items()
    )


def fill_run_sizes(
    terms: Mapping, *, num_train: int | None, total_steps: int, steps_per_epoch: int, phases=INIT_PHASES
) -> dict:
    """Entries with CRD's ``n_data = num_train`` and FT's ``init_steps`` at the init phase's boundary, where unset.

    The boundary is :func:`jaxkd.terms.phase_boundaries` of ``phases`` over
    the run, the step at which the gated CE of :func:`init_stage_objective`
    starts; pass the trainer's own ``num_train``, ``steps`` and
    ``steps_per_epoch`` (:func:`run_sizes`). ``num_train=None`` leaves ``n_data`` unset.
    """
    from jaxkd.terms import phase_boundaries

    boundary = phase_boundaries(tuple(phases), total_steps, steps_per_epoch)[0]
    out = {}
    for name, opts in terms.items():
        opts = dict(opts)
        kind = _kind(name, opts)
        if kind == "crd" and opts.get("n_data") is None and num_train is not None:
            opts["n_data"] = int(num_train)
        if kind == "ft" and opts.get("init_steps") is None:
            opts["init_steps"] = int(boundary)
        out[name] = opts
    return out


def run_sizes(config, dataset) -> tuple[int, int, int]:
    """``(num_train, total_steps, steps_per_epoch)`` of a run of ``config`` on ``dataset``, from a CE-only trainer."""
    from jaxkd.config import ObjectiveConfig
    from jaxkd.train import make_train

    probe = make_train(dataclasses.replace(config, objective=ObjectiveConfig(), teacher="auto"), dataset)
    return probe.num_train, probe.steps, probe.steps_per_epoch


def check_run_sizes(requested: Mapping, filled: Mapping, trainer, *, phases=INIT_PHASES) -> None:
    """Refuse a trainer whose sizes differ from those ``filled`` (from ``requested``) was given: a bug."""
    want = fill_run_sizes(
        requested,
        num_train=trainer.num_train,
        total_steps=trainer.steps,
        steps_per_epoch=trainer.steps_per_epoch,
        phases=phases,
    )
    if want != {k: dict(v) for k, v in filled.items()}:
        raise RuntimeError(f"the terms were sized for another run: {dict(filled)} but this run needs {want}")


__all__ = [
    "PEER_TERMS",
    "sp",
    "cc",
    "rkd",
    "pkt",
    "nst",
    "fsp",
    "ft",
    "ab",
    "crd",
]
