"""The interaction tensor on planted features, its thresholds and clustering against NumPy and hand-made
cases, Ω's statistics on a hand-made Ω, and confusion-vs-teacher metrics against NumPy/SciPy."""

import itertools

import numpy as np
import pytest
from scipy import stats as st
from sklearn.decomposition import PCA

from jaxkd import interaction as it
from jaxkd.errors import ConfigError
from jaxkd.stats import summarize

M, N, D = 6, 2000, 40
SHARED, SPECIFIC = 3, 3  # latent factors shared by all models, and specific to each
K = SHARED + SPECIFIC
SCALES = np.array([10.0, 8.0, 6.0, 9.0, 7.0, 5.0])  # shared first; distinct, so PCA order is known


def planted(seed=0, noise=0.3):
    """M models; model m's activations mix the shared factors and its own ones with a random orthonormal
    [D, K] basis, plus isotropic noise. The factors are exactly uncorrelated over the N samples."""
    rng = np.random.default_rng(seed)
    f = rng.standard_normal((N, SHARED + M * SPECIFIC))
    f = np.linalg.qr(f - f.mean(0))[0] * np.sqrt(N)
    xs, cols = [], []
    for m in range(M):
        c = list(range(SHARED)) + list(range(SHARED + m * SPECIFIC, SHARED + (m + 1) * SPECIFIC))
        basis = np.linalg.qr(rng.standard_normal((D, D)))[0][:, :K]
        xs.append((f[:, c] * SCALES) @ basis.T + noise * rng.standard_normal((N, D)))
        cols.append(c)
    return np.stack(xs).astype(np.float32), f, np.array(cols)


def gap_percentile():
    """The percentile at which numpy's linear interpolation puts γ halfway between the largest
    non-matching |Λ| and the smallest matching one: M·K self-correlations and M(M-1)·SHARED
    cross-model matches of a shared factor are the only large entries."""
    total = (M * K) ** 2
    large = M * K + M * (M - 1) * SHARED
    return 100 * (total - large - 0.5) / (total - 1)


@pytest.fixture(scope="module")
def planted_result():
    x, f, cols = planted()
    return x, f, cols, it.interaction_tensor(x, k=K, corr_percentile=gap_percentile())


def reference_corr(proj):
    """Λ in float64 NumPy: z-scores with the unbiased std, dense einsum."""
    p = np.asarray(proj, np.float64)
    z = (p - p.mean(1, keepdims=True)) / p.std(1, ddof=1, keepdims=True)
    return np.einsum("mnk,pnq->mpkq", z, z) / p.shape[1]


def test_clustering_recovers_planted_features(planted_result):
    x, f, cols, res = planted_result
    # Ground truth: the latent factor each component follows, by correlation with the factors.
    truth = np.empty((M, K), int)
    for m in range(M):
        c = np.corrcoef(res.proj[m].T, f.T)[:K, K:]
        truth[m] = np.argmax(np.abs(c), axis=1)
        assert np.all(np.abs(c).max(axis=1) > 0.99) and len(set(truth[m])) == K
        assert set(truth[m]) == set(cols[m])
    # Same factor <=> same cluster: shared factors form one cluster of M components, the rest singletons.
    same_factor = truth.ravel()[:, None] == truth.ravel()[None, :]
    same_cluster = res.assign.ravel()[:, None] == res.assign.ravel()[None, :]
    np.testing.assert_array_equal(same_cluster, same_factor)
    assert res.num_features == SHARED + M * SPECIFIC
    np.testing.assert_array_equal(res.assign[0], np.arange(K))  # model 0's components open clusters 0..K-1
    # γ lies in the gap between non-matching and matching correlations.
    a = np.sort(np.abs(reference_corr(res.proj)).ravel())
    large = M * K + M * (M - 1) * SHARED
    assert a[-large - 1] < res.gamma < a[-large]
    # The int32 quirk changes nothing here: no component correlates above γ with two seeds.
    np.testing.assert_array_equal(
        it.interaction_tensor(x, k=K, corr_percentile=gap_percentile(), int32_quirk=True).assign, res.assign
    )


def test_omega_invariants(planted_result):
    _, _, _, res = planted_result
    om, a = res.omega, res.assign
    assert om.shape == (M, N, res.num_features) and om.dtype == bool
    np.testing.assert_array_equal(np.unique(a), np.arange(res.num_features))
    _, _, r, _ = reference_tensor(res.proj, gap_percentile())
    p = np.asarray(res.proj, np.float64)
    phat = p / np.abs(p).max(axis=1, keepdims=True)
    d = phat > r[:, None, None]
    for m in range(M):
        # A model uses only features that contain one of its components ...
        others = np.setdiff1d(np.arange(res.num_features), a[m])
        assert not om[m][:, others].any()
        # ... and uses feature t on n exactly when one of its components in t is on for n.
        for t in np.unique(a[m]):
            np.testing.assert_array_equal(om[m, :, t], d[m][:, a[m] == t].any(axis=1))
    # D keeps about 10 % of each model's entries (the 0.9 quantile of P̂).
    np.testing.assert_allclose(d.reshape(M, -1).mean(axis=1), 0.1, atol=1e-3)


def test_thresholds_match_numpy(planted_result):
    _, _, _, res = planted_result
    lam = reference_corr(res.proj)
    np.testing.assert_allclose(res.gamma, np.percentile(np.abs(lam), gap_percentile()), rtol=1e-4)
    p = res.proj
    phat = p / np.abs(p).max(axis=1, keepdims=True)
    np.testing.assert_array_equal(res.data_thresholds, np.quantile(phat.reshape(M, -1), 0.9, axis=1))
    # numpy's linear method, by hand: the median of |[0.1, -0.2, 0.4, 0.8]| interpolates 0.2 and 0.4.
    np.testing.assert_allclose(it.correlation_threshold(np.array([0.1, -0.2, 0.4, 0.8]), 50), 0.3, rtol=1e-12)
    np.testing.assert_allclose(it.correlation_threshold(np.array([0.1, -0.2, 0.4, 0.8]), 90), 0.68, rtol=1e-12)


def test_binarize_by_hand():
    proj = np.array([[[2.0, -1.0], [-4.0, 0.5], [1.0, 1.0], [0.0, -0.5]]])
    # P̂ = [[.5, -1], [-1, .5], [.25, 1], [0, -.5]]; sorted: -1 -1 -.5 0 .25 .5 .5 1.
    d, r = it.binarize(proj, 0.9)  # position 0.9 * 7 = 6.3: 0.5 + 0.3 * 0.5
    np.testing.assert_allclose(r, [0.65], rtol=1e-12)
    np.testing.assert_array_equal(d[0], [[0, 0], [0, 0], [0, 1], [0, 0]])
    d, r = it.binarize(proj, 0.5)  # position 3.5: 0 + 0.5 * 0.25
    np.testing.assert_allclose(r, [0.125], rtol=1e-12)
    np.testing.assert_array_equal(d[0], [[1, 0], [0, 1], [1, 1], [0, 0]])


@pytest.mark.parametrize("block", [1, 3, 7, 10])
def test_blockwise_correlation_equals_dense(block):
    z = np.random.default_rng(1).standard_normal((7, 300, 5)).astype(np.float32)
    lam = it.cross_correlation(z, block=block)
    np.testing.assert_allclose(lam, np.einsum("mnk,pnq->mpkq", z.astype(np.float64), z) / 300, rtol=1e-5, atol=2e-6)
    np.testing.assert_allclose(
        np.asarray(it.zscore(z)), (z - z.mean(1, keepdims=True)) / z.std(1, ddof=1, keepdims=True), rtol=1e-5, atol=1e-5
    )


def hand_corr(cross):
    """Symmetric |Λ| for two models of two components: self-correlation 0.999, components of one model
    uncorrelated, |Λ[0, 1]| = ``cross`` (rows: model 0's components, columns: model 1's)."""
    a = np.zeros((2, 2, 2, 2))
    a[0, 0] = a[1, 1] = np.diag([0.999, 0.999])
    a[0, 1], a[1, 0] = cross, np.transpose(cross)
    return a


def test_int32_quirk_lets_later_clusters_steal():
    # b0 correlates 0.9 with a0 and 0.7 with a1; γ = 0.5. Seed a0 opens cluster 0 and takes b0
    # (best[b0] = 0.9). Seed a1 opens cluster 1: 0.7 > γ but 0.7 < 0.9, so b0 stays (float);
    # the int32 buffer stored best[b0] = 0, so 0.7 > 0 and cluster 1 steals b0. b1 is alone.
    a = hand_corr(np.array([[0.9, 0.1], [0.7, 0.2]]))
    np.testing.assert_array_equal(it.greedy_cluster(a, 0.5), [[0, 1], [0, 2]])
    np.testing.assert_array_equal(it.greedy_cluster(a, 0.5, int32_quirk=True), [[0, 1], [1, 2]])
    # A stronger later correlation (0.95 > 0.9) takes b0 under the float comparison too.
    a = hand_corr(np.array([[0.9, 0.1], [0.95, 0.2]]))
    np.testing.assert_array_equal(it.greedy_cluster(a, 0.5), [[0, 1], [1, 2]])


def test_int32_quirk_emptied_cluster_is_dropped():
    # Asymmetric |Λ| (possible only through float error): seed a0 takes nothing but itself, then b0's
    # row reaches a0 above γ. Under the quirk a0 moves to b0's cluster; cluster 0 is empty and the ids
    # are renumbered (the reference would leave id 1 unused).
    a = np.zeros((2, 2, 1, 1))
    a[0, 0] = a[1, 1] = 0.999
    a[1, 0] = 0.8
    np.testing.assert_array_equal(it.greedy_cluster(a, 0.5), [[0], [1]])
    np.testing.assert_array_equal(it.greedy_cluster(a, 0.5, int32_quirk=True), [[0], [0]])


def reference_tensor(proj, percentile, data_quantile=0.9, int32_quirk=False):
    """Steps 3-7 of Kang & Kim's construction in float64 NumPy, written from docs/papers.md §3.2 (its sketch of
    ``greedy_cluster`` and ``interaction_tensor``): returns (γ, cluster ids renumbered 0..T-1 in opening
    order, r, Ω)."""
    p = np.asarray(proj, np.float64)
    m, n, k = p.shape
    z = (p - p.mean(1, keepdims=True)) / p.std(1, ddof=1, keepdims=True)
    lam = np.abs(np.einsum("mnk,pnq->mpkq", z, z) / n)
    gamma = np.percentile(lam, percentile)
    assign = np.zeros((m, k), np.int64)  # 0 = unassigned; ids from 1
    best = np.full((m, k), -1, np.int32 if int32_quirk else np.float64)
    nxt = 0
    for i in range(m):
        for j in range(k):
            if assign[i, j] == 0:
                nxt += 1
                row = lam[i, :, j, :]
                take = (row > gamma) & (row > best)
                assign[take] = nxt
                best[take] = row[take]
    ids = np.unique(assign)  # a cluster emptied by stealing leaves its id unused here
    phat = p / np.abs(p).max(axis=1, keepdims=True)
    r = np.quantile(phat.reshape(m, -1), data_quantile, axis=1)
    d = phat > r[:, None, None]
    omega = np.stack([(d & (assign[:, None, :] == t)).any(-1) for t in ids], -1)
    return gamma, np.searchsorted(ids, assign), r, omega


@pytest.mark.parametrize("int32_quirk", [False, True])
def test_tensor_matches_numpy_reference(planted_result, int32_quirk):
    # At the gap percentile the two comparisons agree; at the 80th many noise-level correlations pass γ, a
    # component correlates above γ with several seeds, and the quirk's stealing changes the clusters.
    x = planted_result[0]
    assign = {}
    for pct in (gap_percentile(), 80.0):
        res = it.interaction_tensor(x, k=K, corr_percentile=pct, int32_quirk=int32_quirk)
        gamma, ref_assign, r, omega = reference_tensor(res.proj, pct, int32_quirk=int32_quirk)
        np.testing.assert_allclose(res.gamma, gamma, rtol=1e-5)  # float32 Λ against float64
        np.testing.assert_array_equal(res.assign, ref_assign)
        np.testing.assert_allclose(res.data_thresholds, r, rtol=1e-6)
        np.testing.assert_array_equal(res.omega, omega)
        assign[pct] = res.assign
    assert len(np.unique(assign[80.0])) < len(np.unique(assign[gap_percentile()]))
    if int32_quirk:
        float_assign = it.interaction_tensor(x, k=K, corr_percentile=80.0).assign
        assert not np.array_equal(assign[80.0], float_assign)


def test_pca_matches_sklearn_and_svd():
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((300, 30)) * np.geomspace(5, 0.1, 30)) @ np.linalg.qr(rng.standard_normal((30, 30)))[0]
    x = (x + 1.0).astype(np.float32)  # a mean, so centring matters
    ref = PCA(5, svd_solver="full").fit_transform(x.astype(np.float64))  # sklearn's sign: svd_flip on Vt
    for solver in ("gram", "svd", "randomized"):
        p = np.asarray(it.pca_project(x, 5, solver=solver))
        np.testing.assert_allclose(p, ref, atol=2e-3 * np.abs(ref).max(), err_msg=solver)
    # Uncentred: projections on the top right-singular vectors, any sign.
    v = np.linalg.svd(x.astype(np.float64), full_matrices=False)[2][:5].T
    ref = x @ v
    p = np.asarray(it.pca_project(x, 5, center=False, fix_signs=None))
    np.testing.assert_allclose(np.abs(p), np.abs(ref), atol=2e-3 * np.abs(ref).max())
    p = np.asarray(it.pca_project(x, 5, center=False, fix_signs="projection"))
    flip = np.sign(ref[np.argmax(np.abs(ref), 0), range(5)])
    np.testing.assert_allclose(p, ref * flip, atol=2e-3 * np.abs(ref).max())
    assert np.all(p.max(axis=0) == np.abs(p).max(axis=0))  # P̂ reaches +1 in every component


def test_align_signs_orients_members_like_their_seed(planted_result):
    x, _, _, res = planted_result
    aligned = it.interaction_tensor(x, k=K, corr_percentile=gap_percentile(), align_signs=True)
    np.testing.assert_array_equal(aligned.assign, res.assign)
    lam = reference_corr(aligned.proj)
    for t in range(SHARED):  # model 0's shared components seed clusters 0..2
        members = np.argwhere(aligned.assign == t)
        corr = [lam[0, p, t, q] for p, q in members]
        assert np.all(np.array(corr) > 0.99)
    lam = reference_corr(res.proj)  # without alignment some member is anti-correlated with its seed here
    assert min(lam[0, p, t, q] for t in range(SHARED) for p, q in np.argwhere(res.assign == t)) < -0.99


def test_mixed_widths_and_bad_inputs(planted_result):
    x, _, _, res = planted_result
    # Zero columns change no principal direction: a list of models of different widths gives the same tensor.
    mixed = [np.pad(x[m], ((0, 0), (0, 5 * m))) for m in range(M)]
    out = it.interaction_tensor(mixed, k=K, corr_percentile=gap_percentile())
    np.testing.assert_array_equal(out.assign, res.assign)
    np.testing.assert_allclose(out.proj, res.proj, atol=1e-3 * np.abs(res.proj).max())
    with pytest.raises(ConfigError, match="k = 41"):
        it.interaction_tensor(x, k=41)
    with pytest.raises(ConfigError, match="same N"):
        it.interaction_tensor([x[0], x[1][:10]], k=3)
    with pytest.raises(ConfigError, match="corr_percentile"):
        it.interaction_tensor(x, k=3, corr_percentile=100.5)
    bad = x.copy()
    bad[2, 0, 0] = np.nan
    with pytest.raises(ConfigError, match="model 2: activations contain NaN"):
        it.interaction_tensor(bad, k=3)
    with pytest.raises(ConfigError, match="NaN"):
        it.pca_project(bad[2], 3, solver="randomized")


# Hand-made Ω: 4 models, 5 samples, 4 features. Groups A = {0, 1}, B = {2, 3}.
OMEGA = np.zeros((4, 5, 4), bool)
OMEGA[0, [0, 1], 0] = True
OMEGA[1, [0, 2], 0] = True
OMEGA[2, 0, 1] = OMEGA[2, 1, 2] = OMEGA[2, 3, 3] = True
OMEGA[3, 0, 0] = OMEGA[3, 0, 1] = OMEGA[3, 1, 1] = OMEGA[3, 4, 2] = True
A, B = [0, 1], np.array([False, False, True, True])


def test_group_statistics_by_hand():
    # A: feature 0 on samples 0, 1, 2. B: f0 on {0}, f1 on {0, 1}, f2 on {1, 4}, f3 on {3}.
    np.testing.assert_array_equal(it.feature_frequency(OMEGA, A), [3, 0, 0, 0])
    np.testing.assert_array_equal(it.feature_frequency(OMEGA, B), [1, 2, 2, 1])
    np.testing.assert_array_equal(it.frequency_curve(OMEGA, A), [0, 0, 0, 3])
    np.testing.assert_array_equal(it.frequency_curve(OMEGA, A, used_only=True), [3])
    np.testing.assert_array_equal(it.sample_feature_count(OMEGA, A), [1, 1, 1, 0, 0])
    np.testing.assert_array_equal(it.sample_feature_count(OMEGA, B), [2, 2, 0, 1, 1])
    assert it.group_summary(OMEGA, A) == {
        "unique_features": 1,
        "occurrences_per_feature": 3.0,
        "total_occurrences": 3,
        "features_per_sample": 0.6,
        "n_models": 2,
    }
    assert it.group_summary(OMEGA, B) == {
        "unique_features": 4,
        "occurrences_per_feature": 1.5,
        "total_occurrences": 6,
        "features_per_sample": 1.2,
        "n_models": 2,
    }
    ids, freq = it.common_features(OMEGA, {"a": A, "b": B})
    np.testing.assert_array_equal(ids, [0])
    assert freq["a"].tolist() == [3] and freq["b"].tolist() == [1]
    ids, _ = it.common_features(OMEGA, {"m2": [2], "m3": [3]})
    np.testing.assert_array_equal(ids, [1, 2])


def test_confidence_vs_count():
    probs = np.array([[0.9, 0.8, 0.7, 0.6, 0.5]] * 2 + [[0.2, 0.4, 0.9, 0.6, 0.5], [0.4, 0.4, 0.9, 0.8, 0.7]])
    res = it.confidence_vs_count(OMEGA, B, probs)
    np.testing.assert_allclose(res["confidence"], [0.3, 0.4, 0.9, 0.7, 0.6])
    np.testing.assert_array_equal(res["count"], [3, 2, 0, 1, 1])  # Σ over B's models and features
    np.testing.assert_allclose(res["spearman"], st.spearmanr([3, 2, 0, 1, 1], [0.3, 0.4, 0.9, 0.7, 0.6])[0])
    np.testing.assert_allclose(res["pearson"], np.corrcoef([3, 2, 0, 1, 1], [0.3, 0.4, 0.9, 0.7, 0.6])[0, 1])
    union = it.confidence_vs_count(OMEGA, B, probs[2:], count="union")  # [|G|, N] probabilities
    np.testing.assert_array_equal(union["count"], [2, 2, 0, 1, 1])
    assert union["pearson"] < 0


def test_permutation_test_matches_enumeration():
    res = it.permutation_test(OMEGA, A, B, n_permutations=3000, seed=3)
    assert res["delta_unique"] == -3 and res["delta_occurrences"] == 1.5
    # Enumerate the 6 equally likely splits of the 4 models into two pairs.
    du, do = [], []
    for a in itertools.permutations(range(4), 2):
        b = [m for m in range(4) if m not in a]
        sa, sb = it.group_summary(OMEGA, list(a)), it.group_summary(OMEGA, b)
        du.append(sa["unique_features"] - sb["unique_features"])
        do.append(sa["occurrences_per_feature"] - sb["occurrences_per_feature"])
    exact_u, exact_o = np.mean(np.array(du) <= -3), np.mean(np.array(do) >= 1.5)
    assert exact_u == exact_o == 1 / 6  # only the observed split is as extreme
    np.testing.assert_allclose([res["p_fewer_unique"], res["p_more_occurrences"]], [exact_u, exact_o], atol=0.03)
    assert res["p_both"] == max(res["p_fewer_unique"], res["p_more_occurrences"])
    again = it.permutation_test(OMEGA, A, B, n_permutations=3000, seed=3)
    assert again["p_fewer_unique"] == res["p_fewer_unique"]
    # The claim reversed (B fewer than A) is not supported.
    assert it.permutation_test(OMEGA, B, A, n_permutations=500)["p_fewer_unique"] > 0.8
    with pytest.raises(ConfigError, match="disjoint"):
        it.permutation_test(OMEGA, [0, 1], [1, 2])


def test_bootstrap_over_models():
    same = np.repeat(OMEGA[2:3], 3, axis=0)  # three identical models: every resample gives the same union
    res = it.bootstrap_group_stats(same, slice(None), n_resamples=50)
    for s in ("unique_features", "occurrences_per_feature", "features_per_sample"):
        assert res[s]["ci_low"] == res[s]["ci_high"] == res[s]["value"]
    assert res["unique_features"]["value"] == 3
    res = it.bootstrap_group_stats(OMEGA, slice(None), n_resamples=400, seed=1)
    full = it.group_summary(OMEGA, slice(None))
    assert res["unique_features"]["value"] == full["unique_features"] == 4
    # A resample's union is a subset of the group's: unique features never exceed the full group's.
    assert res["unique_features"]["ci_high"] <= 4 and res["unique_features"]["ci_low"] < 4
    assert res == it.bootstrap_group_stats(OMEGA, slice(None), n_resamples=400, seed=1)


def confusion_data(seed=0, c=6, n=600):
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.arange(c), rng.integers(0, c, n - c)])
    probs = rng.dirichlet(np.ones(c) * 0.5, size=n)
    preds = np.where(rng.random(n) < 0.6, labels, rng.integers(0, c, n))
    return probs, preds, labels, c


def test_confusion_metrics_against_numpy_scipy():
    probs, preds, labels, c = confusion_data()
    s = it.class_average_probs(probs, labels)
    np.testing.assert_allclose(s, [probs[labels == j].mean(0) for j in range(c)], rtol=1e-12)
    cm = np.zeros((c, c))
    for t, p in zip(labels, preds):
        cm[t, p] += 1
    ratios = it.confusion_ratios(preds, labels, c)
    np.testing.assert_allclose(ratios, (cm + 1e-8) / cm.sum(1, keepdims=True), rtol=1e-12)
    res = it.confusion_similarity(s, ratios)
    diag = np.arange(0, c * c, c + 1)
    fs, fp = np.delete(s.ravel(), diag), np.delete(ratios.ravel(), diag)
    np.testing.assert_allclose(res["pearson"], st.pearsonr(fs, fp)[0], rtol=1e-10)
    np.testing.assert_allclose(res["spearman"], st.spearmanr(fs, fp)[0], rtol=1e-10)
    cos, iou = [], []
    for j in range(c):
        a, b = np.delete(s[j], j), np.delete(ratios[j], j)
        cos.append(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
        iou.append(np.minimum(a, b).sum() / np.maximum(a, b).sum())
    np.testing.assert_allclose(res["cosine_per_class"], cos, rtol=1e-12)
    np.testing.assert_allclose(res["soft_iou_per_class"], iou, rtol=1e-12)
    np.testing.assert_allclose([res["cosine"], res["soft_iou"]], [np.mean(cos), np.mean(iou)], rtol=1e-12)
    # By hand: identical off-diagonal rows whatever the diagonal -> every metric is 1.
    q = np.array([[0.0, 0.2, 0.3], [0.1, 5.0, 0.4], [0.6, 0.5, 0.0]])
    perfect = it.confusion_similarity(q + np.diag([0.5, -4.0, 0.9]), q)
    np.testing.assert_allclose([perfect[k] for k in ("pearson", "spearman", "cosine", "soft_iou")], 1.0, rtol=1e-12)


def test_confusion_over_seeds_and_errors():
    probs, _, labels, c = confusion_data()
    s = it.class_average_probs(probs, labels, c)
    seeds = [confusion_data(seed)[1] for seed in (1, 2, 3)]
    res = it.confusion_similarity_over_seeds(s, seeds, labels)
    for name in ("pearson", "spearman", "cosine", "soft_iou"):
        vals = [it.confusion_similarity(s, it.confusion_ratios(p, labels, c))[name] for p in seeds]
        assert res[name]["values"] == vals and len(set(vals)) == 3
        expect = summarize(vals)
        for key in ("mean", "std", "ci_low", "ci_high", "n"):
            np.testing.assert_allclose(res[name][key], expect[key], rtol=1e-12)
    with pytest.raises(ConfigError, match=r"classes \[2\]"):
        it.confusion_ratios([0, 1, 3], [0, 1, 3], 4)


def test_ensemble_activations_reads_saved_ensembles_of_different_architectures(tmp_path, digits):
    """Saved ensembles (paths) and in-memory ones give the same activations; each member's activations are
    its own model's flattened feature (checked member by member with the model's apply, in NumPy order)."""
    import jax

    from jaxkd.ensemble import Ensemble, save_ensemble
    from jaxkd.models import make_model

    def ensemble(widths, seed):
        model = make_model("mlp", digits.in_shape, 10, widths)
        keys = jax.random.split(jax.random.key(seed), 2)
        params, rest = jax.jit(lambda ks: jax.lax.map(model.init, ks))(keys)
        return Ensemble(model, params, rest, members=[{"seed": s, "condition": "c"} for s in range(2)])

    groups = {"small": ensemble((8,), 0), "wide": ensemble((16, 12), 1)}
    paths = {g: save_ensemble(str(tmp_path / g), e) for g, e in groups.items()}
    x = digits.x_test[:40]
    layers = {"small": "hidden0", "wide": "hidden1"}
    from_disk = it.ensemble_activations(paths, x, layers, batch_size=16)
    in_memory = it.ensemble_activations(groups, x, layers, batch_size=16)
    assert [a.shape for a in from_disk["activations"]] == [(40, 8), (40, 8), (40, 12), (40, 12)]
    assert list(from_disk["group"]) == ["small", "small", "wide", "wide"]
    assert from_disk["logits"].shape == (4, 40, 10) and [m["seed"] for m in from_disk["members"]] == [0, 1, 0, 1]
    for a, b in zip(from_disk["activations"], in_memory["activations"]):
        np.testing.assert_array_equal(a, b)
    # Member 1 of "wide", by hand: ReLU layers in NumPy from its own weights.
    p = jax.tree.map(lambda t: np.asarray(t[1], np.float64), groups["wide"].params)
    h = np.asarray(x, np.float64).reshape(40, -1)
    for layer in (p["layers"][0], p["layers"][1]):
        h = np.maximum(h @ layer["kernel"] + layer["bias"], 0)
    np.testing.assert_allclose(from_disk["activations"][3], h, rtol=1e-4, atol=1e-5)
    tensor = it.interaction_tensor(from_disk["activations"], k=4)  # mixed widths feed the tensor
    assert tensor.omega.shape[:2] == (4, 40)
    with pytest.raises(ConfigError, match="no layer named for group 'wide'"):
        it.ensemble_activations(paths, x, {"small": "hidden0"})
    with pytest.raises(ConfigError, match="has no feature 'block9'"):
        it.ensemble_activations(paths, x, "block9")
