"""Integrated gradients (captum's nodes and weights from their formulas, closed forms, completeness), the explained
outputs, scores against evidence masks, heatmap agreement and pixel flipping against NumPy/SciPy, and the
ensemble helpers (vmap = lax.map = a loop over members; summaries over members)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage
from scipy import stats as st

from jaxkd import attribution as at
from jaxkd.data.procedural import generate
from jaxkd.ensemble import Ensemble
from jaxkd.errors import ConfigError
from jaxkd.models import make_model
from tests.test_lrp import random_state

# --- integrated gradients ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 5, 50])
def test_riemann_nodes_and_weights_are_captums(n):
    k = np.arange(n)
    want = {
        "riemann_left": (k / n, np.full(n, 1 / n)),
        "riemann_right": ((k + 1) / n, np.full(n, 1 / n)),
        "riemann_middle": ((k + 0.5) / n, np.full(n, 1 / n)),
        # captum: n nodes spaced 1/(n-1), weights 1/n with the two ends halved (they sum to 1 - 1/n)
        "riemann_trapezoid": (k / (n - 1), np.where((k == 0) | (k == n - 1), 0.5 / n, 1 / n)),
    }
    for method, (alphas, weights) in want.items():
        a, w = at.ig_nodes(n, method)
        np.testing.assert_allclose(a, alphas, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(w, weights, rtol=1e-12)


@pytest.mark.parametrize("n", [1, 3, 8, 50])
def test_gauss_legendre_nodes_are_legendre_roots_on_the_unit_interval(n):
    a, w = at.ig_nodes(n, "gausslegendre")
    t = 2 * a - 1  # back to [-1, 1]
    p_n = np.polynomial.legendre.Legendre.basis(n)
    np.testing.assert_allclose(p_n(t), 0, atol=1e-10)  # the nodes are the roots of P_n
    # Weights on [-1, 1]: 2 / ((1 - t²) P_n'(t)²); captum halves them for [0, 1].
    np.testing.assert_allclose(w, 1 / ((1 - t**2) * p_n.deriv()(t) ** 2), rtol=1e-10)
    # Exact for polynomials of degree up to 2n - 1 on [0, 1].
    for p in range(2 * n):
        np.testing.assert_allclose(np.sum(w * a**p), 1 / (p + 1), rtol=1e-10)


def test_ig_equals_the_closed_form_on_a_quadratic():
    # f(x) = Σ c x² + d x: the integrand is linear along the path, so Gauss-Legendre (2 nodes) and the midpoint
    # rule are exact: IG_i = (x_i - x'_i)(c_i (x_i + x'_i) + d_i).
    rng = np.random.default_rng(0)
    c, d = rng.normal(size=(2, 6)).astype(np.float32)
    x, base = rng.normal(size=(2, 4, 6)).astype(np.float32)
    fn = lambda v: jnp.sum(c[None] * v**2 + d[None] * v, axis=1)  # noqa: E731
    want = (x - base) * (c * (x + base) + d)
    for method, steps in (("gausslegendre", 2), ("riemann_middle", 3)):
        res = jax.jit(lambda x, b, m=method, s=steps: at.integrated_gradients(fn, x, b, steps=s, method=m))(x, base)
        np.testing.assert_allclose(np.asarray(res.attributions), want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(res.completeness_gap), 0, atol=1e-5)
        np.testing.assert_allclose(np.asarray(res.f_x - res.f_baseline), want.sum(1), rtol=1e-5, atol=1e-5)


def test_completeness_gap_shrinks_with_steps_on_a_smooth_model():
    # Measured here (largest relative gap over 8 inputs; steps 4/16/64/256): gausslegendre 5e-2/3e-6/3e-6/6e-6
    # (float32's floor from 16 steps on), riemann_middle 1e-1/2e-3/1e-4/6e-6 (second order),
    # riemann_left/right 4.0/1.0/0.24/0.06 and captum's riemann_trapezoid 0.5/0.07/0.016/0.004 (first order:
    # captum's trapezoid weights sum to 1 - 1/n).
    rng = np.random.default_rng(1)
    w1 = rng.normal(size=(10, 16)).astype(np.float32) / np.sqrt(10)
    w2 = rng.normal(size=16).astype(np.float32)
    fn = lambda v: jnp.tanh(v @ w1) @ w2  # noqa: E731
    x = rng.normal(size=(8, 10)).astype(np.float32) * 2
    counts = (4, 16, 64, 256)

    @jax.jit
    def relative_gaps(x):  # one program for every method and step count: one compilation
        out = {}
        for method in at.IG_METHODS:
            for steps in counts:
                res = at.integrated_gradients(fn, x, steps=steps, method=method)
                out[method, steps] = jnp.max(jnp.abs(res.completeness_gap) / jnp.abs(res.f_x - res.f_baseline))
        return out

    gaps = {k: float(v) for k, v in relative_gaps(x).items()}
    for method in ("gausslegendre", "riemann_middle"):
        assert gaps[method, 256] < 1e-3 and gaps[method, 16] < 0.1 * gaps[method, 4], (method, gaps)
    assert 10 < gaps["riemann_middle", 16] / gaps["riemann_middle", 64] < 20  # error ~ 1/n²
    for method in ("riemann_left", "riemann_right", "riemann_trapezoid"):
        for n in (16, 64):  # (from 4 steps on, the trapezoid is not yet asymptotic)
            assert 3 < gaps[method, n] / gaps[method, 4 * n] < 5, (method, gaps)  # error ~ 1/n


def test_blurred_baseline_is_scipys_gaussian_filter_and_noise_is_in_bounds():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 9, 11, 3)).astype(np.float32)
    for sigma in (0.7, 2.0):
        want = ndimage.gaussian_filter(x, sigma=(0, sigma, sigma, 0), mode="nearest", truncate=3.0)
        np.testing.assert_allclose(np.asarray(jax.jit(at.blurred, static_argnums=1)(x, sigma)), want, atol=1e-5)
    low, high = np.array([-1.0, 0.0, 2.0], np.float32), np.array([0.0, 1.0, 5.0], np.float32)
    u = np.asarray(at.uniform_noise(jax.random.key(0), jnp.asarray(x), low, high))
    assert np.all((u >= low) & (u < high)) and np.all(np.abs(u.mean((0, 1, 2)) - (low + high) / 2) < 0.3)


def test_ig_errors_are_one_line():
    with pytest.raises(ConfigError, match="unknown integrated-gradients method"):
        at.ig_nodes(8, "simpson")
    with pytest.raises(ConfigError, match="steps >= 2"):
        at.ig_nodes(1, "riemann_left")


# --- explained outputs, and IG on a zoo model ---------------------------------------------------------------


def test_explained_outputs_match_numpy():
    z = np.array([[1.0, 3.0, 2.0], [5.0, -1.0, 5.0], [0.0, 0.0, -2.0]], np.float32)
    t = np.array([1, 0, 2])
    # gap: z_y - max over the others; ties between the target and another class give 0
    np.testing.assert_allclose(np.asarray(at.explained_output(jnp.asarray(z), t)), [1.0, 0.0, -2.0])
    np.testing.assert_allclose(np.asarray(at.explained_output(jnp.asarray(z), t, "logit")), [3.0, 5.0, -2.0])
    e = np.asarray(at.output_selector(jnp.asarray(z), t))
    np.testing.assert_allclose((e * z).sum(1), [1.0, 0.0, -2.0])
    with pytest.raises(ConfigError, match="unknown explained output"):
        at.explained_output(jnp.asarray(z), t, "margin")


@pytest.fixture(scope="module")
def small_ensemble():
    """Three random cnn2d members on 8x8 RGB inputs stored as uint8, normalised by a known mean and std."""
    model = make_model("cnn2d", (8, 8, 3), 5, widths=(4,))
    states = [random_state(model, seed) for seed in range(3)]
    params, rest = jax.tree.map(lambda *a: jnp.stack(a), *states)
    members = [{"seed": i} for i in range(3)]
    ens = Ensemble(model=model, params=params, rest=rest, members=members, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    x = np.random.default_rng(3).integers(0, 256, (4, 8, 8, 3)).astype(np.uint8)
    return ens, x, np.array([0, 1, 2, 3])


def member(ens, m):
    return jax.tree.map(lambda a: a[m], ens.params), jax.tree.map(lambda a: a[m], ens.rest)


def test_ig_on_a_model_is_chunk_invariant_and_complete(small_ensemble):
    ens, x, t = small_ensemble
    xn = at.normalised_inputs(ens, x)
    fn = at.output_fn(ens.model, *member(ens, 0), jnp.asarray(t))
    # A ReLU net with the gap's switching max: kinks along the path, so the gap shrinks slowly (measured
    # max |gap| 0.022 at 16 steps, 0.0014 at 256, against a mean |f(x) - f(0)| of 0.53).
    gaps, runs = {}, {}
    for steps in (16, 256):
        runs[steps] = res = jax.jit(lambda x, s=steps: at.integrated_gradients(fn, x, steps=s))(xn)
        gaps[steps] = np.abs(np.asarray(res.completeness_gap))
    five = jax.jit(lambda x: at.integrated_gradients(fn, x, steps=16, chunk=5))(xn)  # 16 nodes in chunks of 5
    np.testing.assert_allclose(np.asarray(five.attributions), np.asarray(runs[16].attributions), rtol=1e-4, atol=1e-6)
    scale = np.mean(np.abs(np.asarray(res.f_x - res.f_baseline)))
    assert gaps[256].sum() < 0.2 * gaps[16].sum() and gaps[256].max() < 0.01 * scale, (gaps, scale)


# --- scores against evidence masks --------------------------------------------------------------------------


def test_scores_of_a_heatmap_equal_to_the_mask_or_outside_it_are_one_and_zero():
    masks = generate(6, resolution=16, seed=0).masks
    assert 0 < masks.mean() < 0.5  # objects cover less than half the image, so "outside" can rank below
    inside, outside = masks.astype(np.float32), (~masks).astype(np.float32)
    for h, want in ((inside, 1.0), (outside, 0.0)):
        scores = jax.jit(at.evidence_scores)(h, masks)
        for name in ("mass_accuracy", "rank_accuracy", "pointing_game"):
            np.testing.assert_allclose(np.asarray(scores[name]), want, err_msg=name)
    np.testing.assert_allclose(np.asarray(scores["mask_share"]), masks.mean((1, 2)), rtol=1e-6)


def test_scores_match_numpy_on_random_heatmaps_and_ties_score_chance():
    rng = np.random.default_rng(4)
    h = rng.normal(size=(5, 6, 7)).astype(np.float32)
    m = rng.random((5, 6, 7)) < 0.3
    pos = np.maximum(h, 0)
    mass = (pos * m).sum((1, 2)) / pos.sum((1, 2))
    k = m.sum((1, 2))
    flat_h, flat_m = h.reshape(5, -1), m.reshape(5, -1)
    rank = np.array([flat_m[i][np.argsort(-flat_h[i])[: k[i]]].mean() for i in range(5)])
    point = np.array([flat_m[i][np.argmax(flat_h[i])] for i in range(5)], float)
    np.testing.assert_allclose(np.asarray(at.relevance_mass_accuracy(h, m)), mass, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(at.relevance_rank_accuracy(h, m)), rank, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(at.pointing_game(h, m)), point)
    # A constant heatmap: every pixel ties, so rank accuracy and the pointing game score the mask's share.
    flat = np.zeros_like(h)
    np.testing.assert_allclose(np.asarray(at.relevance_rank_accuracy(flat, m)), m.mean((1, 2)), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(at.pointing_game(flat, m)), m.mean((1, 2)), rtol=1e-6)
    assert np.all(np.isnan(np.asarray(at.relevance_mass_accuracy(-np.abs(h), m))))  # no positive relevance
    with pytest.raises(ConfigError, match="share one shape"):
        at.pointing_game(h, m[:, :-1])


def test_edge_map_is_the_sobel_magnitude():
    x = np.random.default_rng(5).normal(size=(2, 7, 9, 3)).astype(np.float32)
    want = np.zeros((2, 7, 9))
    for b in range(2):
        for c in range(3):
            gx = ndimage.sobel(x[b, :, :, c], axis=1, mode="nearest")
            gy = ndimage.sobel(x[b, :, :, c], axis=0, mode="nearest")
            want[b] += np.hypot(gx, gy)
    np.testing.assert_allclose(np.asarray(at.edge_map(x)), want, rtol=1e-5, atol=1e-5)


# --- agreement and pixel flipping ---------------------------------------------------------------------------


def test_agreement_matches_numpy_and_scipy_and_a_heatmap_agrees_with_itself():
    rng = np.random.default_rng(6)
    a = rng.integers(0, 4, (3, 8, 8)).astype(np.float32)  # integer values: ties for Spearman's average ranks
    b = a + rng.integers(0, 3, (3, 8, 8))
    pa, pb = at.pool_heatmap(a, 4), at.pool_heatmap(b, 4)
    want_pool = np.array(
        [[[a[n, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].sum() for j in range(4)] for i in range(4)] for n in range(3)]
    )
    np.testing.assert_allclose(np.asarray(pa), want_pool)
    got = jax.jit(lambda a, b: at.heatmap_agreement(a, b, k=4))(a, b)
    for n in range(3):
        np.testing.assert_allclose(got["pearson"][n], np.corrcoef(a[n].ravel(), b[n].ravel())[0, 1], rtol=1e-5)
        np.testing.assert_allclose(got["spearman"][n], st.spearmanr(a[n].ravel(), b[n].ravel())[0], rtol=1e-5)
    c, d = rng.normal(size=(2, 3, 8, 8))
    top = lambda v: set(np.argsort(-v.ravel())[:5])  # noqa: E731
    want = [len(top(c[n]) & top(d[n])) / 5 for n in range(3)]
    np.testing.assert_allclose(np.asarray(jax.jit(at.topk_overlap, static_argnames="k")(c, d, k=5)), want)
    np.testing.assert_allclose(np.asarray(pb.sum((1, 2))), b.sum((1, 2)), rtol=1e-6)
    # self-agreement is 1 for every metric, vmapped over members [M, B, H, W] against one model [B, H, W]
    members = np.stack([c, d])
    agree = jax.jit(at.heatmap_agreement, static_argnames=("size", "k"))
    for name, v in agree(members, members, size=4, k=0.25).items():
        np.testing.assert_allclose(np.asarray(v), 1.0, rtol=1e-6, err_msg=name)
    bcast, one = agree(members, c, size=4), agree(d, c, size=4)
    for name in bcast:
        np.testing.assert_allclose(np.asarray(bcast[name][1]), np.asarray(one[name]), err_msg=name)


def test_pixel_flipping_on_a_linear_model_matches_numpy():
    rng = np.random.default_rng(7)
    w = rng.normal(size=(8, 8, 2)).astype(np.float32)
    x = rng.normal(size=(3, 8, 8, 2)).astype(np.float32)
    fn = lambda v: jnp.sum(v * w[None], axis=(1, 2, 3))  # noqa: E731
    h = (x * w).sum(-1)  # the exact contributions: flipping removes them
    curve, area = jax.jit(lambda x, h: at.pixel_flipping(fn, x, h, patch=2))(x, h)
    patch_rel = h.reshape(3, 4, 2, 4, 2).sum((2, 4)).reshape(3, -1)
    for n in range(3):
        order = np.argsort(-patch_rel[n], kind="stable")
        want = patch_rel[n].sum() - np.concatenate([[0], np.cumsum(patch_rel[n][order])])
        np.testing.assert_allclose(np.asarray(curve[n]), want, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(float(area[n]), np.trapezoid(want, np.linspace(0, 1, 17)), rtol=1e-4, atol=1e-4)
    # fewer evaluation points: step j flips round(j·16/4) patches
    curve4, _ = at.pixel_flipping(fn, x, h, patch=2, steps=4)
    np.testing.assert_allclose(np.asarray(curve4), np.asarray(curve)[:, ::4], rtol=1e-5, atol=1e-5)


# --- ensembles ----------------------------------------------------------------------------------------------


def test_explain_ensemble_vmap_and_map_equal_a_loop_over_members(small_ensemble):
    ens, x, t = small_ensemble
    xn = at.normalised_inputs(ens, x)
    np.testing.assert_allclose(np.asarray(xn), (x / 255.0 - np.array(ens.mean)) / np.array(ens.std), atol=1e-6)
    low, high = at.box_bounds(ens.mean, ens.std)
    loop = np.stack([at.lrp(ens.model, *member(ens, m), xn, t, low=low, high=high) for m in range(3)])
    assert at.members.resolve_strategy("auto") == "map"  # on CPU, as the engine (tests run on CPU)
    for strategy in ("vmap", "map"):
        got = at.explain_ensemble(ens, x, t, method="lrp", strategy=strategy)
        np.testing.assert_allclose(np.asarray(got), loop, rtol=1e-4, atol=1e-6 * np.abs(loop).max())
    ig = at.explain_ensemble(ens, x, t, method="ig", steps=4)
    fn = at.output_fn(ens.model, *member(ens, 2), jnp.asarray(t))
    want = jax.jit(lambda xn: at.integrated_gradients(fn, xn, steps=4).attributions)(xn)
    np.testing.assert_allclose(np.asarray(ig[2]), np.asarray(want), rtol=1e-4, atol=1e-6)
    curve, area = at.flip_ensemble(ens, x, t, at.heatmap(loop), patch=4, strategy="vmap")
    fn0 = at.output_fn(ens.model, *member(ens, 0), jnp.asarray(t))
    want, want_area = jax.jit(lambda xn, h: at.pixel_flipping(fn0, xn, h, patch=4))(xn, at.heatmap(loop[0]))
    np.testing.assert_allclose(np.asarray(curve[0]), np.asarray(want), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(area[0]), np.asarray(want_area), rtol=1e-4, atol=1e-6)
    with pytest.raises(ConfigError, match="LRP takes no option"):
        at.explain(ens.model, *member(ens, 0), xn, t, steps=4)


def test_randomized_ensemble_has_fresh_weights_of_the_same_architecture(small_ensemble):
    ens, x, t = small_ensemble
    rnd = at.randomized_ensemble(ens, jax.random.key(1))
    assert jax.tree.structure(rnd.params) == jax.tree.structure(ens.params)
    for a, b in zip(jax.tree.leaves(rnd.params), jax.tree.leaves(ens.params)):
        assert a.shape == b.shape
    kernels = np.asarray(rnd.params["convs"][0]["kernel"][...])
    assert not np.allclose(kernels[0], kernels[1])  # members drawn independently
    assert not np.allclose(kernels, np.asarray(ens.params["convs"][0]["kernel"][...]))
    np.testing.assert_array_equal(np.asarray(rnd.rest["norms"][0]["var"][...]), 1.0)  # BatchNorm at initialisation
    assert all(m["randomized"] for m in rnd.members) and len(rnd) == len(ens)


def test_summarize_members_is_a_t_interval_over_member_means():
    v = np.array([[0.1, 0.3, np.nan], [0.5, 0.7, 0.9], [0.2, 0.2, 0.2], [0.4, np.nan, 0.6]])
    out = at.summarize_members(v, bounds=(0, 1))
    means = np.array([0.2, 0.7, 0.2, 0.5])
    lo, hi = st.t.interval(0.95, 3, loc=means.mean(), scale=st.sem(means))
    np.testing.assert_allclose([out["mean"], out["ci_low"], out["ci_high"]], [means.mean(), lo, hi], rtol=1e-12)
    assert out["n"] == 4 and out["images"] == [2, 3, 3, 2]
    np.testing.assert_allclose(out["member_means"], means, rtol=1e-12)


# --- optional: against captum, when it is installed -----------------------------------------------------


@pytest.mark.parametrize("method", at.IG_METHODS)
def test_ig_matches_captum(method):
    torch = pytest.importorskip("torch")
    pytest.importorskip("captum")
    from captum.attr import IntegratedGradients

    rng = np.random.default_rng(8)
    w1 = rng.normal(size=(6, 8)).astype(np.float32)
    w2 = rng.normal(size=(8, 3)).astype(np.float32)
    x, base = rng.normal(size=(2, 4, 6)).astype(np.float32)
    t = np.array([0, 2, 1, 1])
    fn = lambda v: jnp.take_along_axis(jnp.tanh(v @ w1) @ w2, jnp.asarray(t)[:, None], 1)[:, 0]  # noqa: E731
    tw1, tw2 = torch.tensor(w1), torch.tensor(w2)
    ig = IntegratedGradients(lambda v: torch.tanh(v @ tw1) @ tw2)
    want, delta = ig.attribute(
        torch.tensor(x),
        torch.tensor(base),
        target=torch.tensor(t),
        n_steps=7,
        method=method,
        return_convergence_delta=True,
    )
    got = at.integrated_gradients(fn, x, base, steps=7, method=method)
    np.testing.assert_allclose(np.asarray(got.attributions), want.numpy(), rtol=1e-4, atol=1e-5)
    # captum's delta is Σ attributions − (f(x) − f(baseline)), the same convention
    np.testing.assert_allclose(np.asarray(got.completeness_gap), delta.numpy(), rtol=1e-3, atol=1e-4)
