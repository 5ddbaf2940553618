"""SubDistill's pieces against NumPy written from the formulas: bases, probes, terms, subtask teachers, fractions."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.linalg

from jaxkd import subspace, terms
from jaxkd.data.dataset import Dataset, run_splits
from jaxkd.errors import ConfigError
from jaxkd.models import make_model
from jaxkd.models.probe import feature_gradients
from jaxkd.teacher import Teacher


def _correlated(seed=0, n=4000, d=6):
    """Activations and contexts whose cross-covariance is indefinite, with a well separated spectrum."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, d)) * np.linspace(2.0, 0.3, d)
    c = 0.4 * a[:, ::-1] + rng.normal(size=(n, d)) * 0.5
    c[:, 0] -= 0.8 * a[:, 0]
    return a - a.mean(0), c


def _numpy_posdef(A, C):
    n = A.shape[0]
    sa, sc, sac = A.T @ A / n, C.T @ C / n, A.T @ C / n
    ta, tc = np.trace(sa), np.trace(sc)
    return (sac + sac.T) + 2 * np.sqrt(tc / ta) * sa + 2 * np.sqrt(ta / tc) * sc


def _same_columns(u, v, atol):
    """Columns equal up to sign."""
    dots = np.abs(np.sum(np.asarray(u) * np.asarray(v), axis=0))
    np.testing.assert_allclose(dots, 1.0, atol=atol)


def test_prca_posdef_matches_numpy_and_is_psd_where_prca_is_not():
    A, C = _correlated()
    m = _numpy_posdef(A, C)
    w_ref, u_ref = np.linalg.eigh(m)
    w, u = subspace.prca_posdef(jnp.asarray(A, jnp.float32), jnp.asarray(C, jnp.float32))
    np.testing.assert_allclose(np.asarray(w), w_ref[::-1], rtol=1e-4, atol=1e-5)
    _same_columns(u, u_ref[:, ::-1], 1e-4)
    assert np.all(np.diff(np.asarray(w)) <= 0)
    # The scale-free form: M = sqrt(tr_a tr_c) (E[(â+ĉ)(â+ĉ)ᵀ] + E[ââᵀ] + E[ĉĉᵀ]), PSD, same eigenvectors.
    n = len(A)
    ah, ch = A / np.sqrt(np.trace(A.T @ A / n)), C / np.sqrt(np.trace(C.T @ C / n))
    free = ((ah + ch).T @ (ah + ch) + ah.T @ ah + ch.T @ ch) / n
    scale = np.sqrt(np.trace(A.T @ A / n) * np.trace(C.T @ C / n))
    np.testing.assert_allclose(np.asarray(subspace.posdef_matrix(A, C)), scale * free, rtol=1e-4, atol=1e-4)
    _same_columns(np.linalg.eigh(free)[1][:, ::-1], u, 1e-4)
    assert np.linalg.eigvalsh(m).min() >= -1e-9 * np.abs(m).max()
    sac = A.T @ C / n
    assert np.linalg.eigvalsh(sac + sac.T).min() < -0.05  # plain PRCA's matrix is indefinite on this data


@pytest.mark.parametrize("name", subspace.BASES)
def test_every_basis_is_orthonormal_and_eigen_bases_match_numpy(name):
    A, C = _correlated(1)
    w, u = subspace.basis(name, jnp.asarray(A, jnp.float32), jnp.asarray(C, jnp.float32), jax.random.key(3))
    u = np.asarray(u)
    np.testing.assert_allclose(u.T @ u, np.eye(u.shape[1]), atol=2e-5)
    n = len(A)
    ref = {
        "pca": A.T @ A / n,
        "gradpca": C.T @ C / n,
        "prca": A.T @ C / n + C.T @ A / n,
        "prca_posdef": _numpy_posdef(A, C),
    }.get(name)
    if ref is not None:
        w_ref, u_ref = np.linalg.eigh(ref)
        np.testing.assert_allclose(np.asarray(w), w_ref[::-1], rtol=1e-4, atol=1e-5)
        _same_columns(u, u_ref[:, ::-1], 1e-4)
        # signs: every column projects positively on more than half of the rows
        assert np.all(np.mean(A @ u > 0, axis=0) > 0.5)
    elif name == "identity":
        np.testing.assert_array_equal(u, np.eye(u.shape[0]))
        np.testing.assert_allclose(np.asarray(w), np.diag(A.T @ A / n), rtol=1e-4)
    else:  # random: another key, another basis
        _, u2 = subspace.basis(name, jnp.asarray(A), jnp.asarray(C), jax.random.key(4))
        assert np.abs(np.asarray(u2) - u).max() > 0.1


def test_energy_is_the_variance_captured_by_the_top_k_directions():
    A, C = _correlated(2)
    lb = subspace.layer_basis("pca", jnp.asarray(A + 3.0), jnp.asarray(C), jax.random.key(0))
    np.testing.assert_allclose(np.asarray(lb["mu"]), A.mean(0) + 3.0, atol=1e-5)
    w = np.linalg.eigvalsh(A.T @ A / len(A))[::-1]
    for k in (1, 3, 6):  # PCA: alpha at rank k is the sum of the top-k eigenvalues of Σ_a
        np.testing.assert_allclose(float(np.sum(lb["energies"][:k])), w[:k].sum(), rtol=1e-4)


def test_feature_gradients_match_a_hand_written_backward_pass():
    model = make_model("mlp", (5,), 4, (7, 6))
    params, rest = model.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (9, 5))
    _, feats, grads = feature_gradients(model, params, rest, x, ["hidden0"], subspace.top2_gap)
    p = jax.tree.map(np.asarray, nnx_state_dict(params))
    h0 = np.asarray(feats["hidden0"])
    pre = h0 @ p["layers"][1]["kernel"] + p["layers"][1]["bias"]
    h1 = np.maximum(pre, 0)
    z = h1 @ p["head"]["kernel"] + p["head"]["bias"]
    order = np.argsort(-z, axis=1)
    g = np.zeros_like(z)
    g[np.arange(len(z)), order[:, 0]] = 1.0
    g[np.arange(len(z)), order[:, 1]] = -1.0
    g_h0 = ((g @ p["head"]["kernel"].T) * (pre > 0)) @ p["layers"][1]["kernel"].T
    np.testing.assert_allclose(np.asarray(grads["hidden0"]), g_h0, rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="no feature"):
        feature_gradients(model, params, rest, x, ["nope"], subspace.top2_gap)


def nnx_state_dict(params):
    """An nnx parameter state as nested dicts of arrays (list indices as ints)."""
    from flax import nnx

    return nnx.to_pure_dict(params)


def _teacher(num_classes=10):
    model = make_model("cnn2d", (8, 8, 3), num_classes, (4, 6))
    params, rest = model.init(jax.random.key(2))
    return Teacher(model, params, rest)


def test_subtask_teacher_logits_are_the_selected_columns_in_order():
    teacher = _teacher()
    x = jax.random.normal(jax.random.key(5), (6, 8, 8, 3))
    full = np.asarray(teacher.model.apply(teacher.params, teacher.rest, x, train=False)[0])
    sub = teacher.subtask((7, 2, 4))
    np.testing.assert_array_equal(np.asarray(sub.apply(sub.inputs, x)[0]), full[:, [7, 2, 4]])
    again = sub.subtask((2, 0))  # a subtask of the subtask: classes 4 and 7 of the full teacher
    np.testing.assert_array_equal(np.asarray(again.apply(again.inputs, x)[0]), full[:, [4, 7]])
    assert sub.num_classes == 3 and sub.content_hash() != teacher.content_hash()
    with pytest.raises(ConfigError, match="distinct classes"):
        teacher.subtask((1, 1))


def test_rank_k_at_full_rank_is_the_subtask_teachers_accuracy():
    teacher = _teacher().subtask((0, 3, 5, 8))
    x = jax.random.uniform(jax.random.key(6), (40, 8, 8, 3))
    full = np.asarray(teacher.model.apply(teacher.params, teacher.rest, x, train=False)[0])
    y = np.argmax(full[:, [0, 3, 5, 8]], -1)
    y[30:] = (y[30:] + 1) % 4  # the teacher is right on 30 of 40
    acc = np.mean(np.argmax(full[:, [0, 3, 5, 8]], -1) == y)
    feats = np.asarray(teacher.model.apply(teacher.params, teacher.rest, x, train=False)[1]["block0"])
    mu = feats.reshape(-1, 4).mean(0)
    q = np.linalg.qr(np.random.default_rng(0).normal(size=(4, 4)))[0]
    got = subspace.rank_k_accuracy(teacher, teacher.inputs, x, y, "block0", mu, q, batch_size=16)
    assert got == pytest.approx(acc, abs=1e-6)
    # rank 2 against the layer reconstructed in NumPy and fed to the rest of the network through a probe
    from jaxkd.models.probe import probe

    u2 = q[:, :2]
    recon = mu + (feats - mu) @ u2 @ u2.T
    with probe({"block0": lambda a: jnp.asarray(recon, a.dtype)}):
        z = np.asarray(teacher.model.apply(teacher.params, teacher.rest, x, train=False)[0])
    want = np.mean(np.argmax(z[:, [0, 3, 5, 8]], -1) == y)
    got2 = subspace.rank_k_accuracy(teacher, teacher.inputs, x, y, "block0", mu, u2, batch_size=40)
    assert got2 == pytest.approx(want, abs=1e-6)
    # the teacher's logits change with the reconstruction (so the comparison above can fail)
    assert np.abs(z - full).max() > 1e-3


# --- terms ---------------------------------------------------------------------------------------


def _spec(feats, logits_c=5):
    b = next(iter(feats.values())).shape[0]
    return (
        jax.ShapeDtypeStruct((b, logits_c), jnp.float32),
        {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in feats.items()},
    )


def _out(feats, logits_c=5):
    b = next(iter(feats.values())).shape[0]
    return jnp.zeros((b, logits_c)), feats


def _block_mean(x, f):
    b, h, w, c = x.shape
    return x.reshape(b, h // f, f, w // f, f, c).mean((2, 4))


def _subdistill_constants(t_feats, rng, bases=None):
    out = {}
    for name, t in t_feats.items():
        d = t.shape[-1]
        u = np.linalg.qr(rng.normal(size=(d, d)))[0] if bases is None else bases[name]
        out[name] = {
            "mu": jnp.asarray(rng.normal(size=d), jnp.float32),
            "U": jnp.asarray(u, jnp.float32),
            "eigenvalues": jnp.zeros(d),
            "energies": jnp.asarray(rng.uniform(0.5, 2.0, size=d), jnp.float32),
        }
    return out


def test_subdistill_loss_matches_numpy():
    rng = np.random.default_rng(0)
    s_feats = {"s1": jnp.asarray(rng.normal(size=(4, 4, 4, 3)), jnp.float32),
               "s2": jnp.asarray(rng.normal(size=(4, 2, 2, 2)), jnp.float32)}  # fmt: skip
    t_feats = {"t1": jnp.asarray(rng.normal(size=(4, 8, 8, 5)), jnp.float32),
               "t2": jnp.asarray(rng.normal(size=(4, 2, 2, 6)), jnp.float32)}  # fmt: skip
    term = terms.subdistill(student=("s1", "s2"), teacher=("t1", "t2"))
    consts = _subdistill_constants(t_feats, rng)
    aux, state = term.init(jax.random.key(0), _spec(s_feats), _spec(t_feats), consts)
    aux = {k: jnp.asarray(rng.normal(size=v.shape), jnp.float32) for k, v in aux.items()}
    values, new_state = term.apply(aux, state, _out(s_feats), _out(t_feats), {}, jax.random.key(1), {})
    ref = np.zeros(4)
    for i, (a, b, pool) in enumerate((("s1", "t1", 2), ("s2", "t2", 1))):
        s, t = np.asarray(s_feats[a], np.float64), np.asarray(t_feats[b], np.float64)
        t = _block_mean(t, pool)
        k = s.shape[-1]
        c = consts[b]
        u = np.asarray(c["U"], np.float64)[:, :k]
        t_hat = (t - np.asarray(c["mu"])) @ u
        w = np.asarray(aux[str(i)], np.float64)
        r = np.asarray(state[str(i)]["R0"], np.float64) @ scipy.linalg.expm(w - w.T)
        m = s.reshape(-1, k).mean(0)
        s_hat = (s - m) @ r.T
        alpha = np.asarray(c["energies"], np.float64)[:k].sum()
        hw = s.shape[1] * s.shape[2]
        ref += ((s_hat - t_hat) ** 2).reshape(4, -1).sum(1) / (hw * alpha)
        np.testing.assert_allclose(np.asarray(new_state[str(i)]["running_mean"]), 0.1 * m, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(values), ref, rtol=2e-5)


def test_subdistill_loss_is_zero_when_the_student_is_the_rotated_projected_teacher():
    rng = np.random.default_rng(1)
    t = jnp.asarray(rng.normal(size=(6, 3, 3, 5)), jnp.float32)
    consts = _subdistill_constants({"t": t}, rng)
    consts["t"]["mu"] = t.reshape(-1, 5).mean(0)  # the teacher's own mean: t̂ has batch mean zero
    s_spec = {"s": jax.ShapeDtypeStruct((6, 3, 3, 3), jnp.float32)}
    term = terms.subdistill(student=("s",), teacher=("t",))
    aux, state = term.init(jax.random.key(0), _spec(s_spec), _spec({"t": t}), consts)
    aux = {"0": jnp.asarray(rng.normal(size=(3, 3)), jnp.float32)}
    r = np.asarray(state["0"]["R0"]) @ scipy.linalg.expm(np.asarray(aux["0"]) - np.asarray(aux["0"]).T)
    t_hat = (np.asarray(t) - np.asarray(consts["t"]["mu"])) @ np.asarray(consts["t"]["U"])[:, :3]
    s = jnp.asarray(t_hat @ r + 7.0, jnp.float32)  # any offset: the student side is centred
    values, _ = term.apply(aux, state, _out({"s": s}), _out({"t": t}), {}, jax.random.key(1), {})
    np.testing.assert_allclose(np.asarray(values), 0.0, atol=1e-9 + 1e-5 * float(np.mean(t_hat**2)))
    assert float(jnp.mean(values)) < 1e-6


def test_subdistill_rotation_stays_orthogonal_after_100_optimiser_steps():
    rng = np.random.default_rng(2)
    t = jnp.asarray(rng.normal(size=(8, 2, 2, 6)), jnp.float32)
    s = jnp.asarray(rng.normal(size=(8, 2, 2, 4)), jnp.float32)
    term = terms.subdistill(student=("s",), teacher=("t",))
    aux, state = term.init(jax.random.key(0), _spec({"s": s}), _spec({"t": t}), _subdistill_constants({"t": t}, rng))
    loss = lambda a: jnp.mean(term.apply(a, state, _out({"s": s}), _out({"t": t}), {}, None, {})[0])  # noqa: E731
    opt = optax.adam(0.1)
    opt_state = opt.init(aux)
    first = float(loss(aux))
    for _ in range(100):
        grads = jax.grad(loss)(aux)
        updates, opt_state = opt.update(grads, opt_state)
        aux = optax.apply_updates(aux, updates)
    r = np.asarray(state["0"]["R0"] @ terms.skew_expm(aux["0"]), np.float64)
    np.testing.assert_allclose(r.T @ r, np.eye(4), atol=1e-5)
    assert float(np.abs(np.asarray(aux["0"])).max()) > 0.1  # the generator moved
    assert float(loss(aux)) < first


def test_vid_matches_numpy():
    rng = np.random.default_rng(3)
    s = jnp.asarray(rng.normal(size=(3, 4, 4, 2)), jnp.float32)
    t = jnp.asarray(rng.normal(size=(3, 8, 8, 5)), jnp.float32)
    term = terms.vid(student=("s",), teacher=("t",))
    aux, state = term.init(jax.random.key(0), _spec({"s": s}), _spec({"t": t}))
    np.testing.assert_allclose(np.asarray(jax.nn.softplus(aux["0"]["theta"]) + 1e-5), 5.0, rtol=1e-5)
    aux = {"0": {k: jnp.asarray(rng.normal(size=v.shape) * 0.5, jnp.float32) for k, v in aux["0"].items()}}
    values, _ = term.apply(aux, state, _out({"s": s}), _out({"t": t}), {}, None, {})
    p = {k: np.asarray(v, np.float64) for k, v in aux["0"].items()}
    h = np.maximum(np.asarray(s, np.float64) @ p["w1"], 0)
    h = np.maximum(h @ p["w2"], 0)
    mu = h @ p["w3"]
    var = np.log1p(np.exp(p["theta"])) + 1e-5
    tt = _block_mean(np.asarray(t, np.float64), 2)
    ref = (0.5 * ((mu - tt) ** 2 / var + np.log(var))).reshape(3, -1).mean(1)
    np.testing.assert_allclose(np.asarray(values), ref, rtol=1e-5)


def test_vkd_matches_numpy():
    rng = np.random.default_rng(4)
    s = jnp.asarray(rng.normal(size=(5, 2, 2, 3)), jnp.float32)
    t = jnp.asarray(rng.normal(size=(5, 4, 4, 6)) * 2 + 1, jnp.float32)
    term = terms.vkd(student=("s",), teacher=("t",))
    aux, state = term.init(jax.random.key(0), _spec({"s": s}), _spec({"t": t}))
    aux = {"0": jnp.asarray(rng.normal(size=(6, 6)) * 0.3, jnp.float32)}
    values, _ = term.apply(aux, state, _out({"s": s}), _out({"t": t}), {}, None, {})
    w = np.asarray(aux["0"], np.float64)
    p = (np.asarray(state["0"], np.float64) @ scipy.linalg.expm(w - w.T))[:, :3]
    np.testing.assert_allclose(p.T @ p, np.eye(3), atol=1e-5)
    s_bar = np.asarray(s, np.float64).mean((1, 2))
    t_bar = np.asarray(t, np.float64).mean((1, 2))
    t_bar = (t_bar - t_bar.mean(1, keepdims=True)) / np.sqrt(t_bar.var(1, keepdims=True) + 1e-5)
    diff = np.abs(s_bar @ p.T - t_bar)
    ref = np.where(diff < 1, 0.5 * diff**2, diff - 0.5).mean(1)
    np.testing.assert_allclose(np.asarray(values), ref, rtol=1e-5)


# --- data --------------------------------------------------------------------------------------------


def test_training_fraction_is_stratified_and_leaves_validation_unchanged():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(5), 40)
    ds = Dataset("toy", rng.normal(size=(200, 3)).astype(np.float32), y, np.zeros((5, 3), np.float32),
                 np.arange(5), 5)  # fmt: skip
    full = run_splits(ds, 0.2, 0)
    for f in (0.1, 0.5):
        part = run_splits(ds, 0.2, 0, f, 0)
        np.testing.assert_array_equal(part["x_val"], full["x_val"])
        counts = np.bincount(part["y_train"], minlength=5)
        assert counts.sum() == round(160 * f) and np.abs(counts - 32 * f).max() < 1  # stratified
        assert {tuple(r) for r in part["x_train"]} <= {tuple(r) for r in full["x_train"]}
    other = run_splits(ds, 0.2, 0, 0.5, 1)
    assert {tuple(r) for r in other["x_train"]} != {tuple(r) for r in run_splits(ds, 0.2, 0, 0.5, 0)["x_train"]}
    with pytest.raises(ConfigError, match="train_fraction"):
        run_splits(ds, 0.2, 0, 0.01, 0)


def test_data_classes_restrict_the_data_and_the_teacher(tmp_path):
    from jaxkd.config import DataConfig, EvalConfig, ModelConfig, ObjectiveConfig, RunConfig
    from jaxkd.recipes import RecipeConfig
    from jaxkd.train import make_train

    rng = np.random.default_rng(1)
    x = rng.uniform(size=(300, 8, 8, 3)).astype(np.float32)
    ds = Dataset("toy", x, np.arange(300) % 10, x[:50], np.arange(50) % 10, 10)
    teacher = _teacher()
    cfg = RunConfig(
        model=ModelConfig("cnn2d", (4,)),
        objective=ObjectiveConfig({"kd": {"weight": 1.0}}),
        recipe=RecipeConfig(batch_size=16, steps=4),
        data=DataConfig("digits", classes=(6, 1, 3), train_fraction=0.5),
        eval=EvalConfig(every=2),
    )
    trainer = make_train(cfg, ds, teacher)
    assert trainer.teacher.classes == (6, 1, 3)
    assert trainer.fingerprint["teacher"]["classes"] == [6, 1, 3]
    y_test = np.asarray(trainer.data["y_test"])
    keep = np.isin(np.arange(50) % 10, (6, 1, 3))
    np.testing.assert_array_equal(y_test, np.array([{6: 0, 1: 1, 3: 2}[c] for c in (np.arange(50) % 10)[keep]]))
    full = np.asarray(teacher.model.apply(teacher.params, teacher.rest, x[:50][keep], train=False)[0])
    np.testing.assert_allclose(np.asarray(trainer.teacher_inputs["logits"]["test"]), full[:, [6, 1, 3]], atol=1e-5)
    with pytest.raises(ConfigError, match="data.classes"):
        make_train(dataclasses.replace(cfg, data=DataConfig("digits", classes=(3, 12))), ds, teacher)


def test_programs_for_two_subtasks_of_one_teacher_lower_to_the_same_hlo():
    # The subtask's class indices are an input of the program, not a constant in it: the second subtask's
    # program is then a hit in XLA's persistent compilation cache (subdistill compiles once per fraction).
    from jaxkd.config import DataConfig, EvalConfig, ModelConfig, ObjectiveConfig, RunConfig
    from jaxkd.program import SweepProgram
    from jaxkd.recipes import RecipeConfig
    from jaxkd.train import make_train

    rng = np.random.default_rng(2)
    x = rng.uniform(size=(200, 8, 8, 3)).astype(np.float32)
    ds = Dataset("toy", x, np.arange(200) % 10, x[:40], np.arange(40) % 10, 10)
    teacher = _teacher()
    texts = []
    for classes in ((0, 1, 2), (7, 8, 9)):
        cfg = RunConfig(
            model=ModelConfig("cnn2d", (4,)),
            objective=ObjectiveConfig({"kd": {"weight": 1.0}}),
            recipe=RecipeConfig(batch_size=8, steps=4),
            data=DataConfig("digits", classes=classes),
            eval=EvalConfig(every=2),
            teacher="live",
        )
        program = SweepProgram(make_train(cfg, ds, teacher), 2)
        lowered = program.advance_program(2).lower(
            program.state_spec(), program.hparams, program.data, program.teacher_inputs
        )
        texts.append(lowered.as_text())
        np.testing.assert_array_equal(program.teacher_inputs["classes"], classes)
    assert texts[0] == texts[1]


def test_resume_refuses_a_changed_basis(tmp_path, monkeypatch):
    from jaxkd.config import DataConfig, EvalConfig, ModelConfig, ObjectiveConfig, RunConfig
    from jaxkd.recipes import RecipeConfig
    from jaxkd.sweep import run_sweep
    from jaxkd.train import make_train

    rng = np.random.default_rng(2)
    x = rng.uniform(size=(120, 8, 8, 3)).astype(np.float32)
    ds = Dataset("toy", x, np.arange(120) % 10, x[:30], np.arange(30) % 10, 10)
    sd = {"kind": "subdistill", "weight": 1.0, "student": ("block0",), "teacher": ("block0",), "positions": 4}
    cfg = RunConfig(
        model=ModelConfig("cnn2d", (3,)),
        objective=ObjectiveConfig({"kd": {"weight": 1.0}, "sd": sd}),
        recipe=RecipeConfig(batch_size=8, steps=4),
        data=DataConfig("digits", classes=(0, 1, 2)),
        eval=EvalConfig(every=2),
    )
    teacher = _teacher()
    ckpt = str(tmp_path / "ckpt")
    run = lambda tr, **kw: run_sweep(tr, jax.random.key(0), 2, chunk_steps=2, checkpoint_dir=ckpt, progress=False, **kw)  # noqa: E731
    first = run(make_train(cfg, ds, teacher))
    assert "sd" in first.fingerprint["constants"]
    original = subspace.layer_basis
    monkeypatch.setattr(subspace, "layer_basis", lambda *a: {**original(*a), "U": -original(*a)["U"]})
    changed = make_train(cfg, ds, teacher)
    assert changed.fingerprint["constants"] != first.fingerprint["constants"]
    assert {k: v for k, v in changed.fingerprint.items() if k != "constants"} == {
        k: v for k, v in make_train(cfg, ds, teacher).fingerprint.items() if k != "constants"
    }  # only the basis differs
    with pytest.raises(ConfigError, match="constants"):
        run(changed, resume=True)


@pytest.mark.parametrize("scale", [0.0, 0.3, 3.0, 40.0])
def test_skew_expm_matches_scipy_and_is_orthogonal(scale):
    w = np.random.default_rng(5).normal(size=(7, 7)) * scale
    r = np.asarray(terms.skew_expm(jnp.asarray(w, jnp.float32)), np.float64)
    np.testing.assert_allclose(r, scipy.linalg.expm(w - w.T), atol=2e-5 * max(1.0, scale))
    np.testing.assert_allclose(r.T @ r, np.eye(7), atol=1e-5 * max(1.0, scale))
