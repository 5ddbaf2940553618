"""The peers' methods as terms (jaxkd.peer_terms) against NumPy written from each method's definition.

References follow RepDistiller's code (HobbitLong/RepDistiller, distiller_zoo/ and crd/), written
here loop by loop in float64; the JAX side runs under x64 where clamps (RKD's 1e-12 on squared
distances) would otherwise meet float32 rounding. Batches carry tied examples and zero vectors.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkd import peer_terms as P
from jaxkd import terms as terms_mod
from jaxkd.config import DataConfig, EvalConfig, ModelConfig, ObjectiveConfig, RunConfig
from jaxkd.errors import ConfigError
from jaxkd.models import make_model
from jaxkd.recipes import RecipeConfig
from jaxkd.teacher import Teacher
from jaxkd.train import make_train

RTOL = 1e-10  # float64 references


# --- NumPy references ------------------------------------------------------------------------------


def np_normalize(x, axis):
    return x / np.maximum(np.sqrt(np.sum(x * x, axis=axis, keepdims=True)), 1e-12)


def np_huber(x):
    return np.where(np.abs(x) < 1, 0.5 * x * x, np.abs(x) - 0.5)


def np_pool2(x):
    """2x2 block mean of [B, H, W, C] (adaptive pooling to half size)."""
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def np_sp_rows(fs, ft):
    b = fs.shape[0]
    g = [np_normalize(f.reshape(b, -1) @ f.reshape(b, -1).T, 1) for f in (fs, ft)]
    return np.sum((g[1] - g[0]) ** 2, axis=1) / b  # row i of ‖Ĝ_t − Ĝ_s‖²_F / B², times B


def np_rkd_rows(s, t, wd=25.0, wa=50.0):
    b = s.shape[0]

    def dist(e):
        d = np.zeros((b, b))
        for i in range(b):
            for j in range(b):
                if i != j:
                    d[i, j] = np.sqrt(max(np.sum((e[i] - e[j]) ** 2), 1e-12))
        return d / d[d > 0].mean()

    def angles(e):
        a = np.zeros((b, b, b))
        for i in range(b):
            for j in range(b):
                for k in range(b):
                    u, v = e[j] - e[i], e[k] - e[i]
                    nu, nv = np.linalg.norm(u), np.linalg.norm(v)
                    a[i, j, k] = (u / max(nu, 1e-12)) @ (v / max(nv, 1e-12))
        return a

    return wd * np_huber(dist(s) - dist(t)).mean(1) + wa * np_huber(angles(s) - angles(t)).mean((1, 2))


def np_pkt_rows(s, t, eps=1e-7):
    def probs(x):
        x = x / (np.linalg.norm(x, axis=1, keepdims=True) + eps)
        sim = (x @ x.T + 1) / 2
        return sim / sim.sum(1, keepdims=True)

    ps, pt = probs(s), probs(t)
    return np.mean(pt * np.log((pt + eps) / (ps + eps)), axis=1)


def np_nst_rows(fs, ft):
    """Squared MMD with k(x, y) = (xᵀy)² between the normalised channel maps, per example."""
    b = fs.shape[0]
    out = np.zeros(b)
    for n in range(b):
        a = [np_normalize(fs[n, ..., c].ravel(), 0) for c in range(fs.shape[-1])]
        t = [np_normalize(ft[n, ..., c].ravel(), 0) for c in range(ft.shape[-1])]
        k = lambda xs, ys: np.mean([(x @ y) ** 2 for x in xs for y in ys])  # noqa: E731
        out[n] = k(t, t) + k(a, a) - 2 * k(a, t)
    return out


def np_fsp(bottom, top):
    b, n = bottom.shape[0], bottom.shape[1] * bottom.shape[2]
    g = np.zeros((b, top.shape[-1], bottom.shape[-1]))
    for c in range(top.shape[-1]):
        for d in range(bottom.shape[-1]):
            g[:, c, d] = np.sum(top[..., c] * bottom[..., d], axis=(1, 2)) / n
    return g


def np_ab(s, t, m=1.0):
    loss = np.zeros_like(s)
    for idx in np.ndindex(s.shape):
        if s[idx] > -m and t[idx] <= 0:
            loss[idx] += (s[idx] + m) ** 2
        if s[idx] <= m and t[idx] > 0:
            loss[idx] += (s[idx] - m) ** 2
    return loss.reshape(s.shape[0], -1).sum(1)


def np_attention(f):
    a = np.mean(f**2, axis=-1).reshape(f.shape[0], -1)
    return np_normalize(a, 1)


def np_conv3(x, p, lrelu=True):
    """3x3 'SAME' cross-correlation of [B, H, W, C] with [3, 3, C, O] (+ bias, BatchNorm), then LeakyReLU 0.1."""
    h, w = x.shape[1:3]
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    y = sum(xp[:, i : i + h, j : j + w, :] @ p["kernel"][i, j] for i in range(3) for j in range(3))
    if "bias" in p:
        y = y + p["bias"]
    if "scale" in p:
        mean, var = y.mean((0, 1, 2)), y.var((0, 1, 2))
        y = (y - mean) / np.sqrt(var + 1e-5) * p["scale"] + p["offset"]
    return np.where(y > 0, y, 0.1 * y)


def np_stack(layers, x):
    for p in layers:
        x = np_conv3(x, jax.tree.map(np.asarray, p))
    return x


# --- fixtures --------------------------------------------------------------------------------------


def degenerate(rng, shape):
    """Random features with a tie (rows 0 and 1 equal) and a zero vector (row 3)."""
    x = rng.normal(size=shape)
    x[1] = x[0]
    x[3] = 0.0
    return x


def spec(feats, b):
    return (
        jax.ShapeDtypeStruct((b, 10), jnp.float32),
        {k: jax.ShapeDtypeStruct(v.shape, jnp.asarray(v).dtype) for k, v in feats.items()},
    )


_JITTED = {}


def init_term(term, s_feats, t_feats, key=0):
    """``term.init`` on the features' specs, compiled (eager random draws compile op by op, slowly)."""
    b = next(iter(s_feats.values())).shape[0]
    s_spec, t_spec = spec(s_feats, b), spec(t_feats, b)
    return jax.jit(lambda k: term.init(k, s_spec, t_spec))(jax.random.key(key))


def apply_term(term, s_feats, t_feats, *, batch=None, key=0, aux=None, state=None, hp=None):
    """``(values, new_state, aux)`` of ``term`` on these features; one compiled apply per term."""
    b = next(iter(s_feats.values())).shape[0]
    a0, st0 = init_term(term, s_feats, t_feats, key)
    aux = a0 if aux is None else aux
    state = st0 if state is None else state
    hp = {k: v for k, v in term.hparams.items()} | (hp or {})
    s_out = (jnp.zeros((b, 10)), {k: jnp.asarray(v) for k, v in s_feats.items()})
    t_out = (jnp.zeros((b, 10)), {k: jnp.asarray(v) for k, v in t_feats.items()})
    batch = batch or {"y": jnp.zeros((b,), jnp.int32), "index": jnp.arange(b)}
    # Keyed by id, holding the term: a freed term's id can be reused by a new one, which then got its apply.
    fn = _JITTED.setdefault(id(term), (term, jax.jit(term.apply)))[1]
    values, new = fn(aux, state, s_out, t_out, batch, jax.random.key(key + 1), hp)
    return np.asarray(values), new, aux


# --- relational terms ------------------------------------------------------------------------------


def test_sp_rows_and_batch_loss_equal_numpy_with_ties_and_zero_vectors():
    rng = np.random.default_rng(0)
    fs, ft = degenerate(rng, (6, 2, 2, 3)), degenerate(rng, (6, 2, 2, 5))
    with jax.enable_x64(True):
        got = np.asarray(jax.jit(P.sp_loss)(fs, ft))
        term_values, _, _ = apply_term(P.sp(student="m", teacher="m"), {"m": fs}, {"m": ft})
    ref = np_sp_rows(fs, ft)
    np.testing.assert_allclose(got, ref, rtol=RTOL)
    np.testing.assert_allclose(term_values, ref, rtol=RTOL)
    b = fs.shape[0]  # RepDistiller's batch loss: ‖Ĝ_t − Ĝ_s‖²_F / B²
    g = [np_normalize(f.reshape(b, -1) @ f.reshape(b, -1).T, 1) for f in (fs, ft)]
    np.testing.assert_allclose(got.mean(), np.sum((g[1] - g[0]) ** 2) / b**2, rtol=RTOL)


def test_cc_batch_mean_is_the_mean_over_consecutive_pairs():
    rng = np.random.default_rng(1)
    es, et = degenerate(rng, (5, 4)), degenerate(rng, (5, 4))
    got = np.asarray(jax.jit(P.cc_loss)(es, et), np.float64)
    d = np.abs(es - et)
    ref = np.mean([d[i] @ d[i + 1] for i in range(4)])
    np.testing.assert_allclose(got.mean(), ref, rtol=1e-5)
    assert got[-1] == 0.0
    np.testing.assert_allclose(got[:-1], [5 / 4 * d[i] @ d[i + 1] for i in range(4)], rtol=1e-5)


def test_cc_term_reads_learned_linear_embeddings():
    rng = np.random.default_rng(2)
    fs, ft = rng.normal(size=(4, 3)), rng.normal(size=(4, 5))
    with jax.enable_x64(True):
        values, _, aux = apply_term(P.cc(feat_dim=2), {"pooled": fs}, {"pooled": ft})
    aux = jax.tree.map(np.asarray, aux)
    assert aux["embed_s"]["kernel"].shape == (3, 2) and aux["embed_t"]["kernel"].shape == (5, 2)
    es = fs @ aux["embed_s"]["kernel"] + aux["embed_s"]["bias"]
    et = ft @ aux["embed_t"]["kernel"] + aux["embed_t"]["bias"]
    d = np.abs(es - et)
    np.testing.assert_allclose(values.mean(), np.mean([d[i] @ d[i + 1] for i in range(3)]), rtol=RTOL)


def test_rkd_rows_equal_numpy_with_ties_and_zero_vectors():
    rng = np.random.default_rng(3)
    s, t = degenerate(rng, (6, 4)), degenerate(rng, (6, 3))
    t[4] = t[2]  # a teacher tie where the student has none
    with jax.enable_x64(True):
        got = np.asarray(jax.jit(P.rkd_loss)(s, t))
        term_values, _, _ = apply_term(
            P.rkd(distance_weight=2.0, angle_weight=3.0), {"pooled": s}, {"pooled": t}
        )  # sweepable weights reach the loss
    np.testing.assert_allclose(got, np_rkd_rows(s, t), rtol=1e-9)
    np.testing.assert_allclose(term_values, np_rkd_rows(s, t, 2.0, 3.0), rtol=1e-9)


def test_pkt_rows_equal_numpy_with_zero_vectors():
    rng = np.random.default_rng(4)
    s, t = degenerate(rng, (5, 4)), degenerate(rng, (5, 6))
    with jax.enable_x64(True):
        got = np.asarray(jax.jit(P.pkt_loss)(s, t))
    np.testing.assert_allclose(got, np_pkt_rows(s, t), rtol=RTOL)


@pytest.mark.parametrize(
    "loss,shapes",
    [
        (P.sp_loss, ((6, 2, 2, 3), (6, 2, 2, 5))),
        (P.rkd_loss, ((6, 4), (6, 3))),
        (P.pkt_loss, ((6, 4), (6, 3))),
        (P.nst_loss, ((6, 2, 2, 3), (6, 4, 4, 2))),
        (P.factor_loss, ((6, 2, 2, 3), (6, 4, 4, 2))),
        (P.cc_loss, ((6, 4), (6, 4))),
    ],
)
def test_gradients_are_finite_at_ties_zero_vectors_and_an_all_zero_batch(loss, shapes):
    rng = np.random.default_rng(5)
    s, t = degenerate(rng, shapes[0]).astype(np.float32), degenerate(rng, shapes[1]).astype(np.float32)
    grad = jax.jit(jax.grad(lambda s, t: jnp.mean(loss(s, t)), argnums=(0, 1)))
    for a, b in ((s, t), (np.zeros_like(s), t), (s, np.zeros_like(t))):
        for g in grad(a, b):
            assert np.all(np.isfinite(np.asarray(g)))


# --- feature-map terms ------------------------------------------------------------------------------


def test_nst_pools_the_larger_map_and_equals_numpy():
    rng = np.random.default_rng(6)
    fs, ft = rng.normal(size=(3, 2, 2, 3)), rng.normal(size=(3, 4, 4, 2))
    fs[1, ..., 2] = 0.0  # a dead channel
    with jax.enable_x64(True):
        got = np.asarray(jax.jit(P.nst_loss)(fs, ft))
        term_values, _, _ = apply_term(
            P.nst(student=("a", "b"), teacher=("a", "b")), {"a": fs, "b": fs}, {"a": ft, "b": ft}
        )
    ref = np_nst_rows(fs, np_pool2(ft))
    np.testing.assert_allclose(got, ref, rtol=1e-9)
    np.testing.assert_allclose(term_values, 2 * ref, rtol=1e-9)  # summed over the paired stages


def test_fsp_equals_numpy_over_consecutive_pairs_and_refuses_unequal_channels():
    rng = np.random.default_rng(7)
    s = [rng.normal(size=(2, 4, 4, 2)), rng.normal(size=(2, 2, 2, 3)), rng.normal(size=(2, 2, 2, 3))]
    t = [rng.normal(size=f.shape) for f in s]
    with jax.enable_x64(True):
        got = np.asarray(jax.jit(P.fsp_loss)(s, t))
        names = ("f0", "f1", "f2")
        term = P.fsp(student=names, teacher=names)
        term_values, _, _ = apply_term(term, dict(zip(names, s)), dict(zip(names, t)))
    ref = sum(
        np.mean(
            (
                np_fsp(np_pool2(a0) if a0.shape[1] > a1.shape[1] else a0, a1)
                - np_fsp(np_pool2(b0) if b0.shape[1] > b1.shape[1] else b0, b1)
            )
            ** 2,
            axis=(1, 2),
        )
        for a0, a1, b0, b1 in zip(s[:-1], s[1:], t[:-1], t[1:])
    )
    np.testing.assert_allclose(got, ref, rtol=RTOL)
    np.testing.assert_allclose(term_values, ref, rtol=RTOL)
    with pytest.raises(ConfigError, match="channels"):
        apply_term(term, dict(zip(names, s)), dict(zip(names, [t[0], t[1], rng.normal(size=(2, 2, 2, 4))])))
    with pytest.raises(ConfigError, match="two maps"):
        init_term(P.fsp(student="f0", teacher="f0"), {"f0": s[0]}, {"f0": t[0]})


def test_ab_equals_numpy_with_stage_weights_and_a_connector():
    rng = np.random.default_rng(8)
    s0, t0 = rng.normal(size=(3, 2, 2, 2)), rng.normal(size=(3, 2, 2, 2))
    s0[0, 0, 0, 0], t0[0, 0, 0, 0] = -0.5, 0.0  # the teacher exactly 0 counts as off: (s + m)² = 0.25
    s0[1, 0, 0, 0], t0[1, 0, 0, 0] = -1.0, -2.0  # at the margin: 0
    s1, t1 = rng.normal(size=(3, 2, 2, 3)), rng.normal(size=(3, 2, 2, 4))
    with jax.enable_x64(True):
        np.testing.assert_allclose(np.asarray(P.ab_loss(s0, t0)), np_ab(s0, t0), rtol=RTOL)
        term = P.ab(student=("a", "b"), teacher=("a", "b"))
        values, _, aux = apply_term(term, {"a": s0, "b": s1}, {"a": t0, "b": t1})
    c0, c1 = aux["connectors"]
    assert c0 == {}  # same shape: identity, as RepDistiller's Connector
    y = s1 @ np.asarray(c1["kernel"])
    y = (y - y.mean((0, 1, 2))) / np.sqrt(y.var((0, 1, 2)) + 1e-5) * np.asarray(c1["scale"]) + np.asarray(c1["offset"])
    ref = 3e-3 * (0.5 * np_ab(s0, t0) + 1.0 * np_ab(y, t1))  # weights 2^(i - n + 1), / 1000 * 3
    np.testing.assert_allclose(values, ref, rtol=RTOL)


def test_factor_loss_equals_numpy():
    rng = np.random.default_rng(9)
    fs, ft = rng.normal(size=(3, 2, 2, 3)), rng.normal(size=(3, 4, 4, 2))
    with jax.enable_x64(True):
        got = np.asarray(P.factor_loss(fs, ft))
    ref = np.mean(np.abs(np_attention(fs) - np_attention(np_pool2(ft))), axis=1)
    np.testing.assert_allclose(got, ref, rtol=RTOL)


def test_ft_trains_its_paraphraser_first_then_transfers_with_it_frozen():
    rng = np.random.default_rng(10)
    fs, ft = rng.normal(size=(4, 3, 3, 3)), rng.normal(size=(4, 3, 3, 4))
    term = P.ft(student="m", teacher="m", init_steps=2, init_scale=0.5)
    with jax.enable_x64(True):
        values, state, aux = apply_term(term, {"m": fs}, {"m": ft})
        np_aux = jax.tree.map(np.asarray, aux)
        rec = np_stack(np_aux["decoder"], np_stack(np_aux["encoder"], ft))
        np.testing.assert_allclose(values, 0.5 * np.mean((rec - ft) ** 2, axis=(1, 2, 3)), rtol=1e-9)
        assert [p["kernel"].shape[-1] for p in np_aux["encoder"]] == [4, 2, 2]  # C -> C -> C/2 -> C/2
        # The init stage differentiates the paraphraser only.
        b = fs.shape[0]

        def value(aux, f):
            s_out, t_out = (jnp.zeros((b, 10)), {"m": f}), (jnp.zeros((b, 10)), {"m": ft})
            return jnp.mean(term.apply(aux, state, s_out, t_out, {}, None, dict(term.hparams))[0])

        g_aux, g_s = jax.jit(jax.grad(value, argnums=(0, 1)))(aux, jnp.asarray(fs))
        assert np.abs(np.asarray(g_s)).max() == 0 and np.abs(np.asarray(g_aux["encoder"][0]["kernel"])).max() > 0
        # After the init stage: the factor loss of translator(s) against the encoder frozen at step init_steps.
        state = {"step": jnp.asarray(2, jnp.int32), "encoder": state["encoder"]}
        values_main, state3, _ = apply_term(term, {"m": fs}, {"m": ft}, aux=aux, state=state)
        moved = jax.tree.map(lambda x: x + 1.0, aux)  # the aux encoder keeps changing (weight decay) ...
        values_later, _, _ = apply_term(term, {"m": fs}, {"m": ft}, aux=moved, state=state3)
    factor_t = np_stack(np_aux["encoder"], ft)
    ref = np.mean(np.abs(np_attention(np_stack(np_aux["translator"], fs)) - np_attention(factor_t)), axis=1)
    np.testing.assert_allclose(values_main, ref, rtol=1e-9)
    moved_np = jax.tree.map(np.asarray, moved)  # ... but the teacher's factor does not
    ref_later = np.mean(np.abs(np_attention(np_stack(moved_np["translator"], fs)) - np_attention(factor_t)), axis=1)
    np.testing.assert_allclose(values_later, ref_later, rtol=1e-9)


# --- CRD ---------------------------------------------------------------------------------------------


def test_nce_loss_and_memory_update_equal_numpy():
    rng = np.random.default_rng(11)
    p = rng.uniform(0.01, 2.0, size=(3, 5))
    n = 40
    with jax.enable_x64(True):
        got = np.asarray(P.nce_loss(p, n))
        mem = np_normalize(rng.normal(size=(6, 3)), 1)
        v = np_normalize(rng.normal(size=(2, 3)), 1)
        new = np.asarray(P.memory_update(mem, np.array([4, 1]), v, 0.5))
    k, pn = 4, 1 / n
    ref = -(np.log(p[:, 0] / (p[:, 0] + k * pn + 1e-7)) + np.sum(np.log(k * pn / (p[:, 1:] + k * pn + 1e-7)), 1))
    np.testing.assert_allclose(got, ref, rtol=RTOL)
    want = mem.copy()
    for row, i in enumerate((4, 1)):
        r = 0.5 * mem[i] + 0.5 * v[row]
        want[i] = r / np.linalg.norm(r)
    np.testing.assert_allclose(new, want, rtol=RTOL)


def test_negatives_come_uniformly_from_other_classes():
    labels_n = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, -1])  # -1: not seen yet, counts as another class
    k = 8000
    got = np.asarray(
        jax.jit(P.contrast_indices, static_argnums=(4, 5))(
            jax.random.key(0), jnp.array([4, 0]), jnp.array([1, 0]), jnp.asarray(labels_n), k, "other_class"
        )
    )
    assert got.shape == (2, k + 1) and list(got[:, 0]) == [4, 0]  # the positive: the example itself
    for row, y in enumerate((1, 0)):
        others = np.flatnonzero(labels_n != y)
        counts = np.bincount(got[row, 1:], minlength=12)
        assert counts[labels_n == y].sum() == 0
        expect = k / len(others)  # uniform over the others: each count within 5 binomial sd
        sd = np.sqrt(k * (1 / len(others)) * (1 - 1 / len(others)))
        assert np.all(np.abs(counts[others] - expect) < 5 * sd), counts
    uniform = np.asarray(
        P.contrast_indices(jax.random.key(1), jnp.array([3]), jnp.array([1]), jnp.asarray(labels_n), 4000, "uniform")
    )
    assert set(np.unique(uniform[0, 1:])) == set(range(12))


def test_crd_term_equals_numpy_on_a_small_memory_over_two_steps():
    rng = np.random.default_rng(12)
    n, b, k, temp, m = 12, 4, 5, 0.5, 0.5
    fs, ft = rng.normal(size=(b, 3)), rng.normal(size=(b, 6))
    fs[2] = 0.0  # a zero feature: its embedding is the bias alone
    batch = {"y": jnp.array([0, 1, 1, 2]), "index": jnp.array([2, 7, 0, 11])}
    term = P.crd(n_data=n, feat_dim=3, nce_k=k, temperature=temp, momentum=m)
    with jax.enable_x64(True):
        values, state1, aux = apply_term(term, {"pooled": fs}, {"pooled": ft}, batch=batch, key=3)
        a0, st0 = init_term(term, {"pooled": fs}, {"pooled": ft}, 3)
        values2, state2, _ = apply_term(term, {"pooled": fs}, {"pooled": ft}, batch=batch, key=3, state=state1)
        labels = np.full(n, -1)
        labels[np.asarray(batch["index"])] = np.asarray(batch["y"])
        contrast = np.asarray(P.contrast_indices(jax.random.key(4), batch["index"], batch["y"], jnp.asarray(labels), k))
    np.testing.assert_array_equal(np.asarray(state1["labels"]), labels)
    a = jax.tree.map(np.asarray, aux)
    v_s = np_normalize(fs @ a["embed_s"]["kernel"] + a["embed_s"]["bias"], 1)
    v_t = np_normalize(ft @ a["embed_t"]["kernel"] + a["embed_t"]["bias"], 1)
    idx = np.asarray(batch["index"])

    def step(mem_s, mem_t, z_s, z_t):
        out_s = np.exp(np.einsum("bkd,bd->bk", mem_t[contrast], v_s) / temp)  # student anchor, teacher memory
        out_t = np.exp(np.einsum("bkd,bd->bk", mem_s[contrast], v_t) / temp)
        z_s = out_s.mean() * n if z_s is None else z_s
        z_t = out_t.mean() * n if z_t is None else z_t
        loss = 0
        for p in (out_s / z_s, out_t / z_t):
            loss = (
                loss
                - np.log(p[:, 0] / (p[:, 0] + k / n + 1e-7))
                - np.sum(np.log((k / n) / (p[:, 1:] + k / n + 1e-7)), 1)
            )
        new_s, new_t = mem_s.copy(), mem_t.copy()
        for row, i in enumerate(idx):
            for new, mem, v in ((new_s, mem_s, v_s), (new_t, mem_t, v_t)):
                r = m * mem[i] + (1 - m) * v[row]
                new[i] = r / np.linalg.norm(r)
        return loss, new_s, new_t, z_s, z_t

    mem_s, mem_t = np.asarray(st0["memory_s"], np.float64), np.asarray(st0["memory_t"], np.float64)
    assert np.all(np.abs(mem_s) <= 1 / np.sqrt(3 / 3)) and np.all(np.asarray(st0["z_s"]) < 0)
    loss1, mem_s, mem_t, z_s, z_t = step(mem_s, mem_t, None, None)
    np.testing.assert_allclose(values, loss1, rtol=1e-9)
    np.testing.assert_allclose(np.asarray(state1["memory_s"]), mem_s, rtol=1e-6)  # the memory is float32
    np.testing.assert_allclose(np.asarray(state1["memory_t"]), mem_t, rtol=1e-6)
    np.testing.assert_allclose([state1["z_s"], state1["z_t"]], [z_s, z_t], rtol=1e-9)
    loss2, mem_s, _, _, _ = step(mem_s, mem_t, z_s, z_t)  # Z stays fixed after the first batch
    np.testing.assert_allclose(values2, loss2, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(state2["memory_s"]), mem_s, rtol=1e-6)


def test_crd_gradients_are_finite_and_reach_both_embeddings():
    rng = np.random.default_rng(13)
    fs, ft = rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=(4, 5)).astype(np.float32)
    fs[1] = 0.0
    term = P.crd(n_data=10, feat_dim=4, nce_k=6)
    s_spec, t_spec = spec({"pooled": fs}, 4), spec({"pooled": ft}, 4)
    aux, state = jax.jit(lambda k: term.init(k, s_spec, t_spec))(jax.random.key(0))
    batch = {"y": jnp.array([0, 1, 0, 1]), "index": jnp.array([0, 3, 5, 9])}

    def value(aux, f):
        s_out, t_out = (jnp.zeros((4, 10)), {"pooled": f}), (jnp.zeros((4, 10)), {"pooled": jnp.asarray(ft)})
        return jnp.mean(term.apply(aux, state, s_out, t_out, batch, jax.random.key(1), dict(term.hparams))[0])

    g_aux, g_f = jax.jit(jax.grad(value, argnums=(0, 1)))(aux, jnp.asarray(fs))
    for g in jax.tree.leaves((g_aux, g_f)):
        assert np.all(np.isfinite(np.asarray(g)))
    assert np.abs(np.asarray(g_aux["embed_t"]["kernel"])).max() > 0 and np.abs(np.asarray(g_f)).max() > 0


def test_crd_without_n_data_is_one_clear_error():
    with pytest.raises(ConfigError, match="n_data"):
        P.crd().init(jax.random.key(0), spec({"pooled": np.zeros((2, 3))}, 2), spec({"pooled": np.zeros((2, 3))}, 2))
    with pytest.raises(ConfigError, match="negatives"):
        P.crd(negatives="hard")


# --- the init-stage recipe and training -------------------------------------------------------------


def test_init_stage_objective_and_conditions():
    terms = {"ce": {"weight": 1.0}, "kd": {"weight": 0.9}, "ab": {"weight": 1.0, "student": ("a",), "teacher": ("a",)}}
    terms = P.init_stage_objective(terms, phases=(1, 3))
    assert terms["ab"]["phases"] == (1, 3) and terms["ab"]["phase"] == "hard"
    assert terms["ce_main"] == {"weight": 1.0, "kind": "ce", "phases": (1, 3), "phase": "soft"}
    conds = {"ce": {"ce.weight": 1.0, "ab.weight": 0.0}, "ab": {"ce.weight": 1.0, "ab.weight": 1.0}}
    out = P.init_stage_conditions(conds, terms)
    assert out["ab"] == {"ce.weight": 0.0, "ab.weight": 1.0, "ce_main.weight": 1.0}
    assert out["ce"] == {"ce.weight": 1.0, "ab.weight": 0.0, "ce_main.weight": 0.0}
    filled = P.fill_run_sizes({"crd": {}, "x": {"kind": "ft"}}, num_train=90, total_steps=80, steps_per_epoch=9)
    assert filled == {"crd": {"n_data": 90}, "x": {"kind": "ft", "init_steps": 10}}  # the (30, 210) boundary: 80/8


@pytest.fixture
def registered(monkeypatch):
    """The peer terms in jaxkd.terms.TERMS (where jaxkd.terms does not register them itself yet)."""
    for kind, factory in P.PEER_TERMS.items():
        monkeypatch.setitem(terms_mod.TERMS, kind, factory)


RUN_TERMS = {
    "sp": {"student": "block1", "teacher": "block1"},
    "cc": {"feat_dim": 8},
    "rkd": {},
    "pkt": {},
    "nst": {"student": ("block0", "block1"), "teacher": ("block0", "block1")},
    "fsp": {"student": ("block0", "block1"), "teacher": ("block0", "block1")},
    "ft": {"student": "block1", "teacher": "block1", "init_steps": 40, "init_scale": 1.0},
    "ab": {"student": ("block0", "block1"), "teacher": ("block0", "block1")},
    "crd": {"feat_dim": 8, "nce_k": 64},
}


def test_each_term_alone_reduces_its_own_loss_on_digits(digits, registered):
    """One program, each term a grid point with every other weight 0 (skipped): 80 Adam steps, 4 intervals.

    FSP and AB run below, in their init stage, at the teacher's widths (FSP needs equal channels).
    """
    teacher_model = make_model("cnn2d", digits.in_shape, digits.num_classes, (6, 8))
    teacher = Teacher(teacher_model, *teacher_model.init(jax.random.key(5)))  # random: any target will do
    base = RunConfig(
        model=ModelConfig("cnn2d", (4, 8)),
        recipe=RecipeConfig(learning_rate=3e-3, steps=80, batch_size=32),
        data=DataConfig(),
        eval=EvalConfig(every=20, splits=("val",)),
        teacher="live",
    )
    probe = make_train(base, digits)
    requested = {k: {"weight": 1.0, **v} for k, v in RUN_TERMS.items() if k not in ("fsp", "ab")}
    run_terms = P.fill_run_sizes(
        requested,
        num_train=probe.num_train,
        total_steps=probe.steps,
        steps_per_epoch=probe.steps_per_epoch,
    )
    cfg = dataclasses.replace(base, objective=ObjectiveConfig(run_terms))
    trainer = make_train(cfg, digits, teacher)
    P.check_run_sizes(requested, run_terms, trainer)
    names = list(run_terms)
    points = [{f"{m}.weight": float(m == g) for m in names} for g in names]
    hp = {k: jnp.asarray([p.get(k, v) for p in points]) for k, v in trainer.hparams().items()}
    _, hist = jax.jit(lambda hp: jax.lax.map(lambda h: trainer.run(jax.random.key(0), h), hp))(hp)
    loss = {g: np.asarray(hist[f"train/{g}"][i]) for i, g in enumerate(names)}
    for g in names:
        if g == "ft":  # intervals 1-2: the paraphraser's reconstruction; 3-4: the factor loss
            assert loss[g][1] < loss[g][0] and loss[g][3] < loss[g][2], (g, loss[g])
        else:
            assert loss[g][-1] < 0.9 * loss[g][0], (g, loss[g])
    print({g: [float(f"{x:.3g}") for x in v] for g, v in loss.items()})


def test_fsp_and_ab_reduce_their_loss_as_the_init_stage_of_one_run(digits, registered):
    """FSP and AB gated to the first half (phases 1:1, hard) with CE in the second half (ce_main)."""
    teacher_model = make_model("cnn2d", digits.in_shape, digits.num_classes, (4, 8))
    teacher = Teacher(teacher_model, *teacher_model.init(jax.random.key(5)))
    terms = {"ce": {"weight": 1.0}, **{k: {"weight": 1.0, **RUN_TERMS[k]} for k in ("fsp", "ab")}}
    staged = P.init_stage_objective(terms, phases=(1, 1))
    cfg = RunConfig(
        model=ModelConfig("cnn2d", (4, 8)),
        objective=ObjectiveConfig(staged),
        recipe=RecipeConfig(learning_rate=3e-3, steps=80, batch_size=32),
        eval=EvalConfig(every=20, splits=("val",)),
        teacher="live",
    )
    trainer = make_train(cfg, digits, teacher)
    conds = {
        g: {"ce.weight": 1.0, "fsp.weight": float(g == "fsp"), "ab.weight": float(g == "ab")} for g in ("fsp", "ab")
    }
    conds = P.init_stage_conditions(conds, staged)
    hp = {k: jnp.asarray([conds[g].get(k, v) for g in conds]) for k, v in trainer.hparams().items()}
    _, hist = jax.jit(lambda hp: jax.lax.map(lambda h: trainer.run(jax.random.key(0), h), hp))(hp)
    for i, g in enumerate(conds):
        own, ce = np.asarray(hist[f"train/{g}"][i]), np.asarray(hist["train/ce_main"][i])
        assert own[1] < 0.9 * own[0] and np.all(own[2:] == 0), (g, own)  # active in the first half only
        assert np.all(ce[:2] == 0) and ce[3] < ce[2], (g, ce)  # CE only in the second half
    print({g: np.asarray(hist[f"train/{g}"][i]).round(4).tolist() for i, g in enumerate(conds)})


# --- the experiments accept every method by name ----------------------------------------------------


def test_digits_methods_wires_every_method_by_name_and_refuses_fsp_at_unequal_widths(digits):
    from experiments import digits_methods
    from jaxkd.overrides import apply_overrides

    names = ",".join(["ce", *digits_methods.METHODS[1:], *digits_methods.PEER_METHODS])
    config = apply_overrides(digits_methods.PRESETS["default"], [f"methods={names}", "model.widths=32,64"])
    s_cfg = config.student_config()
    assert list(s_cfg.objective.terms) == [*config.methods, "ce_main"]
    n, total, per_epoch = P.run_sizes(s_cfg, digits)
    filled = P.fill_run_sizes(s_cfg.objective.terms, num_train=n, total_steps=total, steps_per_epoch=per_epoch)
    assert filled["crd"]["n_data"] == n and filled["ft"]["init_steps"] == 50  # 400 steps: the first eighth
    s_cfg = dataclasses.replace(s_cfg, objective=ObjectiveConfig(filled))
    models = [make_model("cnn2d", digits.in_shape, digits.num_classes, w) for w in ((32, 64), (32, 64))]
    from jaxkd.train import check_objective

    check_objective(s_cfg, *models)
    conds = config.conditions(s_cfg.objective)
    assert conds["ft"]["ce.weight"] == 0.0 and conds["ft"]["ce_main.weight"] == 1.0 and conds["ft"]["ft.weight"] == 200
    assert conds["kd"]["ce.weight"] == 0.1 and conds["kd"]["ce_main.weight"] == 0.0
    default = apply_overrides(
        digits_methods.PRESETS["default"], ["methods=ce,fsp"]
    )  # student (8, 16), teacher (32, 64)
    small = [make_model("cnn2d", digits.in_shape, digits.num_classes, w) for w in ((8, 16), (32, 64))]
    with pytest.raises(ConfigError, match="channels"):
        check_objective(default.student_config(), *small)


def test_digits_methods_runs_init_stage_and_memory_methods_end_to_end(tmp_path):
    """The run sizes (CRD's memory, the init stage's boundary) and ce_main through ``digits_methods.run``."""
    from experiments import digits_methods

    config = dataclasses.replace(
        digits_methods.runlocal(digits_methods.PRESETS["smoke"]), methods=("ce", "ab", "crd"), init_stage=(1, 1)
    )
    summary = digits_methods.run(config, str(tmp_path), progress=False)
    assert list(summary["conditions"]) == ["ce", "ab", "crd"]
    assert summary["legend"]["ab"] == {"ab.weight": 1.0, "ce_main.weight": 1.0}  # CE only after the init stage
    assert summary["legend"]["crd"] == {"ce.weight": 1.0, "crd.weight": 0.8}
    for name in ("ab", "crd"):
        assert summary["conditions"][name]["n_diverged"] == 0
        acc = summary["conditions"][name]["test/acc"]["selected"]["mean"]
        assert 0 <= acc <= 1
