"""Metrics between models: per-example values on logits, test-set summaries, the asymmetric payoff.

Per-example functions (``accuracy``, ``agreement``, ``activation_distance``,
``js_divergence``, ``cosine_similarity``) return one value per example; the
caller reduces. :func:`functional_metrics` reduces them over a test set, overall
and on the teacher-correct / teacher-incorrect subsets, with masks (it jits and
vmaps over seeds). :func:`asymmetric_payoff` runs on the host over seeds.
Definitions, formulas and their provenance: ``docs/functional.md``.

References: Mason-Williams et al., arXiv 2510.12615 (reconstructed; no code is public).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxkd import losses, stats
from jaxkd.errors import check

SUBSETS = ("all", "teacher_correct", "teacher_incorrect")
_PER_EXAMPLE = ("acc", "loss", "agreement", "activation_distance", "js", "cosine")


def accuracy(logits, labels, *, axis=-1):
    """1.0 where ``argmax(logits) == labels``, else 0.0."""
    return (jnp.argmax(logits, axis=axis) == labels).astype(jnp.float32)


def agreement(logits_a, logits_b, *, axis=-1):
    """Top-1 agreement: 1.0 where both models predict the same class."""
    return (jnp.argmax(logits_a, axis=axis) == jnp.argmax(logits_b, axis=axis)).astype(jnp.float32)


def activation_distance(logits_a, logits_b, *, axis=-1):
    """``‖softmax(a) − softmax(b)‖₂`` per example (in [0, √2])."""
    d = jax.nn.softmax(logits_a, axis=axis) - jax.nn.softmax(logits_b, axis=axis)
    return jnp.sqrt(jnp.sum(d * d, axis=axis))


def js_divergence(logits_a, logits_b, *, axis=-1):
    """Jensen-Shannon divergence ``½KL(p‖m) + ½KL(q‖m)``, ``m = (p + q) / 2``, natural log, per example.

    Computed from log-softmax (``log m = logaddexp(log p, log q) − log 2``); lies in [0, log 2].
    """
    lp = jax.nn.log_softmax(logits_a, axis=axis)
    lq = jax.nn.log_softmax(logits_b, axis=axis)
    lm = jnp.logaddexp(lp, lq) - jnp.log(2.0).astype(lp.dtype)
    p, q = jnp.exp(lp), jnp.exp(lq)
    kl_pm = jnp.sum(jnp.where(p > 0, p * (lp - lm), 0.0), axis=axis)
    kl_qm = jnp.sum(jnp.where(q > 0, q * (lq - lm), 0.0), axis=axis)
    return jnp.maximum(0.5 * (kl_pm + kl_qm), 0.0)  # rounding can leave −1e-8


def cosine_similarity(logits_a, logits_b, *, axis=-1):
    """Cosine of the angle between the two probability vectors, per example (in (0, 1])."""
    p, q = jax.nn.softmax(logits_a, axis=axis), jax.nn.softmax(logits_b, axis=axis)
    return jnp.sum(p * q, axis=axis) / (jnp.linalg.norm(p, axis=axis) * jnp.linalg.norm(q, axis=axis))


def mutual_information(pred_a_N, pred_b_N, *, num_classes: int, where=None):
    """Plug-in mutual information (nats) between two label vectors, from their joint histogram.

    ``I = Σ_ij P_ij log(P_ij / (P_i· P_·j))`` with ``P`` the empirical joint of
    ``(pred_a, pred_b)`` over the examples where ``where`` is true (all by default);
    ``0 log 0 = 0``. Equals ``sklearn.metrics.mutual_info_score``. NaN on an empty set.
    """
    w_N = jnp.ones(pred_a_N.shape, jnp.float32) if where is None else where.astype(jnp.float32)
    n_CxC = jnp.zeros((num_classes, num_classes), jnp.float32).at[pred_a_N, pred_b_N].add(w_N)
    n = jnp.sum(w_N)
    # On counts, n · n_ij / (n_i· n_·j) is exactly 1 for independent columns (float32 counts are exact).
    outer_CxC = jnp.sum(n_CxC, 1)[:, None] * jnp.sum(n_CxC, 0)[None, :]
    pos = n_CxC > 0
    log_ratio = jnp.log(n * jnp.where(pos, n_CxC, 1.0)) - jnp.log(jnp.where(pos, outer_CxC, 1.0))
    mi = jnp.sum(jnp.where(pos, n_CxC * log_ratio, 0.0)) / jnp.maximum(n, 1.0)
    return jnp.where(n > 0, jnp.maximum(mi, 0.0), jnp.nan)


def _masked_mean(v_N, mask_N, n):
    return jnp.where(n > 0, jnp.sum(jnp.where(mask_N, v_N, 0.0)) / jnp.maximum(n, 1).astype(v_N.dtype), jnp.nan)


def functional_metrics(student_logits_NxC, teacher_logits_NxC, labels_N, *, num_classes: int | None = None) -> dict:
    """Student-vs-teacher functional metrics on a test set, overall and on the teacher-correct/incorrect subsets.

    Keys ``{subset}/{metric}`` for subset in ``all``, ``teacher_correct``,
    ``teacher_incorrect`` and metric in ``acc``, ``loss`` (student CE), ``agreement``,
    ``activation_distance``, ``js``, ``cosine`` (masked means), ``mi`` (on the
    subset's examples) and ``n`` (the subset's size, int32). NaN on an empty subset.
    Also ``all/teacher_acc``, and on teacher-incorrect examples the fractions
    ``copy_error`` (student gives the teacher's wrong label), ``other_error`` (a
    different wrong label) and ``correct`` (they sum to 1) with counts ``n_copy_error``,
    ``n_other_error``, ``n_correct``. Pure and shape-static: jit it, and vmap it
    over seeds (or use :func:`functional_metrics_over_seeds`).

    Args:
      student_logits_NxC, teacher_logits_NxC: logits of the two models on the same N examples.
      labels_N: integer labels.
      num_classes: C; inferred from the logits when omitted (must match them when given).
    """
    c = student_logits_NxC.shape[-1]
    check(
        student_logits_NxC.ndim == 2 and teacher_logits_NxC.shape == student_logits_NxC.shape,
        f"functional_metrics needs student and teacher logits of one shape [N, C], got "
        f"{student_logits_NxC.shape} and {teacher_logits_NxC.shape}",
    )
    check(
        labels_N.shape == student_logits_NxC.shape[:1],
        f"labels must have shape {student_logits_NxC.shape[:1]}, got {labels_N.shape}",
    )
    check(num_classes is None or num_classes == c, f"num_classes={num_classes} but the logits have {c} classes")
    pred_s, pred_t = jnp.argmax(student_logits_NxC, -1), jnp.argmax(teacher_logits_NxC, -1)
    per = {
        "acc": (pred_s == labels_N).astype(jnp.float32),
        "loss": losses.cross_entropy(student_logits_NxC, labels_N),
        "agreement": (pred_s == pred_t).astype(jnp.float32),
        "activation_distance": activation_distance(student_logits_NxC, teacher_logits_NxC),
        "js": js_divergence(student_logits_NxC, teacher_logits_NxC),
        "cosine": cosine_similarity(student_logits_NxC, teacher_logits_NxC),
    }
    t_ok = pred_t == labels_N
    masks = {"all": jnp.ones_like(t_ok), "teacher_correct": t_ok, "teacher_incorrect": ~t_ok}
    out = {}
    for subset, mask in masks.items():
        n = jnp.sum(mask, dtype=jnp.int32)
        out[f"{subset}/n"] = n
        for name, v in per.items():
            out[f"{subset}/{name}"] = _masked_mean(v, mask, n)
        out[f"{subset}/mi"] = mutual_information(pred_s, pred_t, num_classes=c, where=mask)
    out["all/teacher_acc"] = jnp.mean(t_ok.astype(jnp.float32))
    # On teacher-wrong examples the three outcomes are exclusive (the teacher's label is not the true one).
    wrong, n_wrong = ~t_ok, out["teacher_incorrect/n"]
    outcomes = {
        "copy_error": pred_s == pred_t,
        "other_error": (pred_s != pred_t) & (pred_s != labels_N),
        "correct": pred_s == labels_N,
    }
    for name, hit in outcomes.items():
        out[f"teacher_incorrect/n_{name}"] = jnp.sum(wrong & hit, dtype=jnp.int32)
        out[f"teacher_incorrect/{name}"] = _masked_mean(hit.astype(jnp.float32), wrong, n_wrong)
    return out


def functional_metrics_over_seeds(student_logits_SxNxC, teacher_logits, labels_N, *, num_classes=None) -> dict:
    """:func:`functional_metrics` vmapped over a leading seed axis; each value has shape ``[S]``.

    ``teacher_logits`` is ``[N, C]`` (one teacher shared by every seed) or ``[S, N, C]`` (one per seed).
    """
    check(teacher_logits.ndim in (2, 3), f"teacher logits must be [N, C] or [S, N, C], got {teacher_logits.shape}")
    fn = lambda s, t: functional_metrics(s, t, labels_N, num_classes=num_classes)
    return jax.vmap(fn, in_axes=(0, 0 if teacher_logits.ndim == 3 else None))(student_logits_SxNxC, teacher_logits)


# ---- The asymmetric payoff (host side, over seeds) -------------------------------------------------------


def _seed_values(metrics, key, who):
    check(
        isinstance(metrics, Mapping) and key in metrics,
        f"asymmetric_payoff: the {who} needs per-seed values under {key!r} (from functional_metrics)",
    )
    return np.asarray(metrics[key], np.float64).ravel()


def _relative_gain(a, b):
    """``(mean a − mean b) / (1 − mean b)`` along the last axis; NaN where the control is at its ceiling."""
    ma, mb = np.mean(a, -1), np.mean(b, -1)
    head = 1.0 - mb
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(head > 0, (ma - mb) / np.where(head > 0, head, 1.0), np.nan)


def _leave_one_out(idx):
    """``idx[..., n]`` -> ``[..., n, n - 1]``: row ``k`` drops position ``k``."""
    n = idx.shape[-1]
    keep = ~np.eye(n, dtype=bool)
    return np.broadcast_to(idx[..., None, :], (*idx.shape[:-1], n, n))[..., keep].reshape(*idx.shape[:-1], n, n - 1)


def _jackknife_var(theta):
    """Jackknife variance ``(n - 1)/n · Σ_k (θ_(k) − θ_(·))²`` over the last axis of leave-one-out estimates."""
    n = theta.shape[-1]
    return (n - 1) / n * np.sum((theta - np.mean(theta, -1, keepdims=True)) ** 2, -1)


def _jackknife_se(fn, i, j, *, paired):
    """Jackknife standard error of ``fn(i, j)`` over seeds, for index arrays ``i[..., n_a]``, ``j[..., n_b]``
    (Efron & Tibshirani 1993, eq. 11.5): paired, one seed (pair) left out at a time; independent groups, the
    sum of the two groups' jackknife variances, each group's seeds left out in turn with the other group whole
    (Efron & Tibshirani 1993, sec. 11.5; the two-sample jackknife of scipy's BCa)."""
    if paired:
        loo = _leave_one_out(i)
        return np.sqrt(_jackknife_var(fn(loo, loo)))
    va = _jackknife_var(fn(_leave_one_out(i), j[..., None, :]))
    vb = _jackknife_var(fn(i[..., None, :], _leave_one_out(j)))
    return np.sqrt(va + vb)


def _seed_bootstrap(fn, n_a, n_b, *, paired, level, n_resamples, seed):
    """``fn(idx_a, idx_b)`` on all seeds and its studentized (bootstrap-t) CI over resampled seeds.

    ``fn`` takes index arrays ``[..., n]`` (leading axes broadcast) and reduces the last. Resamples draw seed
    indices with replacement, ``rng.integers(0, n, (R, n))`` from ``default_rng(seed)``: one draw for both arms
    when ``paired``, else the condition's and then the control's. With ``θ`` and ``se`` the statistic and its
    jackknife standard error (:func:`_jackknife_se`) on all seeds, and ``t* = (θ* − θ) / se*`` on each resample,
    the interval is ``[θ − t*_(R+1−k) se, θ − t*_(k) se]``, ``t*_(k)`` the ``k``-th smallest,
    ``k = ⌊(R + 1) α/2⌋`` (Efron & Tibshirani 1993, sec. 12.5; Davison & Hinkley 1997, eq. 5.7). A resample
    without spread (``se* ≤ 10⁻⁹ se``, zero up to rounding) has an infinite ``t*`` (0 where ``|θ* − θ| ≤
    10⁻⁹ se``) and stays in the tails: at 2 or 3 seeds they make the bounds NaN. ``se = 0`` (no seed moves
    the statistic) gives the point interval. A non-finite statistic or standard error on any resample (a
    control at its ceiling) makes the bounds NaN. ``n_resamples`` below ``1/(α/2) − 1`` is refused.

    Returns ``(estimate, ci_low, ci_high)``: the estimate and its interval come from one statistic on one
    set of seeds, so a caller cannot quote an estimate from other seeds than its CI's.
    """
    alpha, k = stats.studentized_rank(level, n_resamples)
    with np.errstate(divide="ignore", invalid="ignore"):
        whole = float(fn(np.arange(n_a), np.arange(n_b))) if min(n_a, n_b) > 0 else np.nan
        if min(n_a, n_b) < 2 or not np.isfinite(whole):
            return whole, np.nan, np.nan
        se = float(_jackknife_se(fn, np.arange(n_a), np.arange(n_b), paired=paired))
        if not np.isfinite(se):
            return whole, np.nan, np.nan
        if se == 0:
            return whole, whole, whole
        rng = np.random.default_rng(seed)
        i = rng.integers(0, n_a, (n_resamples, n_a))
        j = i if paired else rng.integers(0, n_b, (n_resamples, n_b))
        est_b, se_b = fn(i, j), _jackknife_se(fn, i, j, paired=paired)
        if not (np.all(np.isfinite(est_b)) and np.all(np.isfinite(se_b))):
            return whole, np.nan, np.nan
        # No spread: a standard error that is 0 up to rounding (seeds with equal values give 1e-17, not 0).
        tiny = 1e-9 * se
        flat = np.where(np.abs(est_b - whole) <= tiny, 0.0, np.sign(est_b - whole) * np.inf)
        t = np.where(se_b > tiny, (est_b - whole) / np.maximum(se_b, tiny), flat)
    t = np.sort(t)
    lo, hi = whole - t[n_resamples - k] * se, whole - t[k - 1] * se
    return whole, (float(lo) if np.isfinite(lo) else np.nan), (float(hi) if np.isfinite(hi) else np.nan)


def asymmetric_payoff(
    condition,
    control,
    *,
    paired: bool,
    metric: str = "agreement",
    level: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> dict:
    """Gain of a condition over its matched control on the teacher-correct and teacher-incorrect subsets.

    For subset s, with ``a_s`` the condition's and ``b_s`` the control's per-seed
    student–teacher agreement on s: ``gain_s = mean(a_s) − mean(b_s)`` (paired:
    the mean of per-seed differences), ``headroom_s = 1 − mean(b_s)`` and
    ``relative_gain_s = gain_s / headroom_s``, the fraction of the control's
    remaining headroom that the condition closes. ``asymmetry =
    relative_gain_incorrect − relative_gain_correct``; positive means the student
    gained relatively more by copying the teacher's errors than its correct answers
    (the "negative asymmetric payoff"). On teacher-incorrect examples agreement is
    the copy-the-error rate. The asymmetry is computed on the seeds whose two subsets are both finite
    (``asymmetry_n_condition``, ``asymmetry_n_control``), the same seeds its CI resamples; where a subset
    drops a seed that the other keeps, it can differ from the difference of the two reported relative gains.

    Each subset also gets a test of ``gain_s = 0`` (paired t with Cohen's d_z when
    ``paired``, Welch t with Hedges' g otherwise) and the t CI of the gain; the
    relative gains and the asymmetry get studentized (bootstrap-t) CIs over seeds with a jackknife
    standard error (:func:`_seed_bootstrap`; pairs resampled together when ``paired``, each group alone
    otherwise). A relative gain's upper bound is at most 1 (the condition at the ceiling).
    Non-finite seeds are dropped per subset (a teacher without errors gives NaN).

    Why not percentile or BCa: at 4-10 seeds both are too narrow for these ratios. Measured with
    ``tests/test_metrics.py``'s data model (Beta-distributed seeds whose relative gains are known exactly;
    control agreement 0.99 ± 0.006 where the teacher is right, 0.30 ± 0.14 where it is wrong; nominal 0.95,
    999 resamples), coverage of the teacher-correct gain, the teacher-incorrect gain and the asymmetry at 8
    seeds over 2000 data sets: paired, percentile 0.86, 0.90, 0.88, BCa 0.85, 0.92, 0.87, studentized 0.94,
    0.97, 0.94; unpaired, percentile 0.89, 0.90, 0.90, BCa 0.89, 0.90, 0.89, studentized 0.94, 0.95, 0.93
    (the unpaired asymmetry stays a little short). At 4 seeds (1000 data sets) percentile covers 0.81-0.86,
    BCa 0.79-0.85, studentized 0.94-0.95; at 10 seeds 0.89-0.91, 0.88-0.92 and 0.94-0.96. BCa is
    ``scipy.stats.bootstrap(method="BCa")`` on seed indices (one index array when paired, two otherwise),
    which expresses these resamplings but corrects bias and skew, not the missing tails. The price is width:
    the studentized interval is 1.2-1.7 times the percentile one at 8 seeds, 2-6 times at 4. At 2 or 3 seeds
    the bounds are NaN (too few seeds for an interval). The test runs 300 data sets of 8 seeds each time.

    Args:
      condition, control: mappings of per-seed arrays with keys ``teacher_correct/{metric}`` and
        ``teacher_incorrect/{metric}``, e.g. :func:`functional_metrics_over_seeds` moved to the host.
      paired: seed i of the condition is matched with seed i of the control (same lengths required).
      metric: the subset metric to compare; a similarity in [0, 1] with ceiling 1.

    Returns:
      Flat dict: ``{subset}/{control, condition, gain, gain_ci_low, gain_ci_high, headroom,
      relative_gain, relative_gain_ci_low, relative_gain_ci_high, p, effect_size, n_condition,
      n_control}``, ``asymmetry``, ``asymmetry_ci_low``, ``asymmetry_ci_high``, ``asymmetry_n_condition``,
      ``asymmetry_n_control``, ``effect_size_kind``.

    References: Mason-Williams et al., arXiv 2510.12615 (reconstructed definition; see docs/functional.md).
    """
    subsets = ("teacher_correct", "teacher_incorrect")
    a = {s: _seed_values(condition, f"{s}/{metric}", "condition") for s in subsets}
    b = {s: _seed_values(control, f"{s}/{metric}", "control") for s in subsets}
    if paired:
        check(
            len(a["teacher_correct"]) == len(b["teacher_correct"])
            and len(a["teacher_incorrect"]) == len(b["teacher_incorrect"]),
            "asymmetric_payoff(paired=True) needs as many condition seeds as control seeds",
        )
    boot = dict(paired=paired, level=level, n_resamples=n_resamples, seed=seed)
    out = {"effect_size_kind": "cohens_dz" if paired else "hedges_g"}
    for s in subsets:
        if paired:
            keep = np.isfinite(a[s]) & np.isfinite(b[s])
            x, y = a[s][keep], b[s][keep]
            t = stats.paired_test(x, y, level=level)
            gain, lo, hi, es = t["diff_mean"], t["diff_ci_low"], t["diff_ci_high"], t["cohens_dz"]
        else:
            x, y = a[s][np.isfinite(a[s])], b[s][np.isfinite(b[s])]
            t = stats.welch_test(x, y, level=level)
            gain = float(np.mean(x) - np.mean(y)) if len(x) and len(y) else np.nan
            lo, hi, es = t["diff_ci_low"], t["diff_ci_high"], t["hedges_g"]
        head = 1.0 - float(np.mean(y)) if len(y) else np.nan
        rel, rlo, rhi = _seed_bootstrap(lambda i, j, x=x, y=y: _relative_gain(x[i], y[j]), len(x), len(y), **boot)
        rhi = min(rhi, 1.0) if np.isfinite(rhi) else rhi  # a relative gain cannot exceed 1
        out |= {
            f"{s}/control": float(np.mean(y)) if len(y) else np.nan,
            f"{s}/condition": float(np.mean(x)) if len(x) else np.nan,
            f"{s}/gain": gain,
            f"{s}/gain_ci_low": lo,
            f"{s}/gain_ci_high": hi,
            f"{s}/headroom": head,
            f"{s}/relative_gain": rel,
            f"{s}/relative_gain_ci_low": rlo,
            f"{s}/relative_gain_ci_high": rhi,
            f"{s}/p": t["p"],
            f"{s}/effect_size": es,
            f"{s}/n_condition": len(x),
            f"{s}/n_control": len(y),
        }
    # The asymmetry and its CI are one statistic on one set of seeds: those finite in both subsets (and, when
    # paired, in both arms). The bootstrap keeps each seed's two subsets together.
    ac, ai, bc, bi = a["teacher_correct"], a["teacher_incorrect"], b["teacher_correct"], b["teacher_incorrect"]
    ka, kb = np.isfinite(ac) & np.isfinite(ai), np.isfinite(bc) & np.isfinite(bi)
    if paired:
        ka = kb = ka & kb
    ac, ai, bc, bi = ac[ka], ai[ka], bc[kb], bi[kb]
    asym, lo, hi = _seed_bootstrap(
        lambda i, j: _relative_gain(ai[i], bi[j]) - _relative_gain(ac[i], bc[j]), len(ac), len(bc), **boot
    )
    out |= {
        "asymmetry": asym,
        "asymmetry_ci_low": lo,
        "asymmetry_ci_high": hi,
        "asymmetry_n_condition": len(ac),
        "asymmetry_n_control": len(bc),
    }
    return out
