"""Tests for dsn_lab.metrics: hand-computed toy rankings, a brute-force float64 reference, ITQ, bad inputs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from dsn_lab.metrics import ITQ, evaluate_retrieval, itq_fit, rank_gallery

# ----------------------------------------------------------------------------------------------------
# toy rankings computed by hand
#
# 1-D gallery at positions 1..5 with labels [0, 1, 1, 0, 0]. Three queries:
#   a) x=0, label 0: order 1,2,3,4,5 -> hits 1 0 0 1 1; precisions at hits 1, 2/4, 3/5
#      plain AP = (1 + .5 + .6)/3 = 0.7; interpolated = (1 + .6 + .6)/3 = 11/15
#   b) x=6, label 0: order 5,4,3,2,1 -> hits 1 1 0 0 1; precisions 1, 1, 3/5 -> both AP = 13/15
#   c) x=6, label 1: hits 0 0 1 1 0; precisions 1/3, 2/4 -> plain 5/12, interpolated 1/2

G1 = np.array([[1.0], [2.0], [3.0], [4.0], [5.0]])
GL1 = np.array([0, 1, 1, 0, 0])
Q1 = np.array([[0.0], [6.0], [6.0]])
QL1 = np.array([0, 0, 1])


def test_toy_ap_interpolated_and_plain():
    r = evaluate_retrieval(Q1, QL1, G1, GL1, average="query", per_query=True)
    np.testing.assert_allclose(r["AP_per_query"], [11 / 15, 13 / 15, 1 / 2], atol=1e-12)
    r = evaluate_retrieval(Q1, QL1, G1, GL1, average="query", interpolated=False, per_query=True)
    np.testing.assert_allclose(r["AP_per_query"], [0.7, 13 / 15, 5 / 12], atol=1e-12)


def test_toy_averaging_class_vs_query():
    by_class = evaluate_retrieval(Q1, QL1, G1, GL1)  # default: per class
    by_query = evaluate_retrieval(Q1, QL1, G1, GL1, average="query")
    assert by_class["mAP@all"] == pytest.approx(((11 / 15 + 13 / 15) / 2 + 1 / 2) / 2)  # 0.65
    assert by_query["mAP@all"] == pytest.approx((11 / 15 + 13 / 15 + 1 / 2) / 3)  # 0.7


def test_toy_map_at_m():
    # query a: top 2 = hits 1 0 -> 1 / min(2, 3); top 4 = 1 0 0 1 -> (1 + 1/2) / min(4, 3)
    r = evaluate_retrieval(Q1[:1], QL1[:1], G1, GL1, map_at=(2, 4), ks=())
    assert r["mAP@2"] == pytest.approx(1 / 2)
    assert r["mAP@4"] == pytest.approx(1.5 / 3)
    # query c: top 4 = 0 0 1 1, precisions 1/3, 1/2, positives 2: interp (.5 + .5)/2, plain (1/3 + 1/2)/2
    r = evaluate_retrieval(Q1[2:], QL1[2:], G1, GL1, map_at=(4,), ks=())
    assert r["mAP@4"] == pytest.approx(0.5)
    r = evaluate_retrieval(Q1[2:], QL1[2:], G1, GL1, map_at=(4,), ks=(), interpolated=False)
    assert r["mAP@4"] == pytest.approx(5 / 12)


def test_toy_precision_at_k_both_denominators():
    # query a: hits 1 0 0 1 1 (3 positives, gallery of 5)
    r = evaluate_retrieval(Q1[:1], QL1[:1], G1, GL1, ks=(2, 4, 10), map_at=())
    assert (r["P@2"], r["P@4"], r["P@10"]) == pytest.approx((1 / 2, 2 / 4, 3 / 5))  # over min(K, gallery)
    r = evaluate_retrieval(Q1[:1], QL1[:1], G1, GL1, ks=(2, 4, 10), map_at=(), p_at_k_over="positives")
    # ZSE-SBIR: hits in the top min(K, 3) over min(K, 3)
    assert (r["P@2"], r["P@4"], r["P@10"]) == pytest.approx((1 / 2, 1 / 3, 1 / 3))


def test_default_keys_and_counts():
    r = evaluate_retrieval(Q1, QL1, G1, GL1)
    assert {"mAP@all", "P@100", "mAP@200", "P@200"} <= set(r)
    assert r["n_queries"] == 3 and r["n_gallery"] == 5
    # K beyond the gallery: P@100 = positives in the whole gallery / 5
    assert r["P@100"] == pytest.approx(((3 / 5 + 3 / 5) / 2 + 2 / 5) / 2)


def test_toy_cosine_vs_euclidean():
    q = np.array([[1.0, 0.0]])
    g = np.array([[10.0, 1.0], [0.5, 0.5]])  # g0: same direction, far; g1: near, 45 degrees off
    gl = np.array([0, 1])
    assert evaluate_retrieval(q, [0], g, gl)["mAP@all"] == pytest.approx(0.5)  # euclidean: g1 first
    assert evaluate_retrieval(q, [0], g, gl, distance="cosine")["mAP@all"] == pytest.approx(1.0)
    # normalize=True: Euclidean on unit vectors ranks like cosine
    assert evaluate_retrieval(q, [0], g, gl, normalize=True)["mAP@all"] == pytest.approx(1.0)


def test_toy_hamming_ties_by_gallery_index():
    q = np.array([[1, 1, 1]])
    g = np.array([[1, 1, -1], [-1, -1, -1], [1, 1, 1], [1, -1, 1]])  # distances 1, 3, 0, 1
    gl = np.array([1, 1, 0, 1])
    # order 2, 0, 3, 1 (0 before 3: tie broken by index); query label 1: hits 0 1 1 1 -> interp 3/4
    r = evaluate_retrieval(q, [1], g, gl, distance="hamming")
    assert r["mAP@all"] == pytest.approx(3 / 4)
    r = evaluate_retrieval(q, [1], g, gl, distance="hamming", interpolated=False)
    assert r["mAP@all"] == pytest.approx((1 / 2 + 2 / 3 + 3 / 4) / 3)
    # the tie decides this one: label 0 at index 0 only -> rank 2 (rank 3 if the tie went the other way)
    gl2 = np.array([0, 1, 1, 1])
    assert evaluate_retrieval(q, [0], g, gl2, distance="hamming")["mAP@all"] == pytest.approx(1 / 2)
    # 0/1 codes are the same codes
    assert evaluate_retrieval((q + 1) // 2, [0], (g + 1) // 2, gl2, distance="hamming")["mAP@all"] == 0.5
    np.testing.assert_array_equal(rank_gallery(q[0], g, distance="hamming"), [2, 0, 3, 1])
    idx, d = rank_gallery(q[0], g, distance="hamming", return_distances=True)
    np.testing.assert_allclose(d, [0, 1, 1, 3])


def test_euclidean_ties_by_gallery_index():
    g = np.array([[1.0], [-1.0], [1.0], [2.0]])  # three items at distance 1 from the origin
    np.testing.assert_array_equal(rank_gallery(np.zeros(1), g), [0, 1, 2, 3])
    assert evaluate_retrieval(np.zeros((1, 1)), [1], g, [0, 0, 1, 0])["mAP@all"] == pytest.approx(1 / 3)


def test_rank_gallery_toy():
    np.testing.assert_array_equal(rank_gallery(Q1, G1), [[0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [4, 3, 2, 1, 0]])
    idx, d = rank_gallery(Q1[0], G1, topk=2, return_distances=True)
    np.testing.assert_array_equal(idx, [0, 1])
    np.testing.assert_allclose(d, [1.0, 2.0])
    idx, d = rank_gallery(
        torch.tensor([[1.0, 0.0]]),
        torch.tensor([[0.0, 2.0], [3.0, 0.0]]),
        distance="cosine",
        return_distances=True,
    )
    np.testing.assert_array_equal(idx, [[1, 0]])
    np.testing.assert_allclose(d, [[0.0, 1.0]], atol=1e-12)


# ----------------------------------------------------------------------------------------------------
# brute-force float64 reference: plain per-query loops and textbook definitions


def _ref_distances(q: np.ndarray, g: np.ndarray, distance: str) -> np.ndarray:
    out = np.zeros((len(q), len(g)))
    for i in range(len(q)):
        for j in range(len(g)):
            if distance == "euclidean":
                out[i, j] = np.sqrt(np.sum((q[i] - g[j]) ** 2))
            elif distance == "cosine":
                out[i, j] = 1 - q[i] @ g[j] / (np.linalg.norm(q[i]) * np.linalg.norm(g[j]))
            else:
                out[i, j] = np.sum(q[i] != g[j])
    return out


def _ref_ap(rel: np.ndarray, n_pos: int, interpolated: bool) -> float:
    """Textbook AP of a ranked 0/1 relevance list with ``n_pos`` relevant items in total."""
    hits = np.cumsum(rel)
    precision = hits / np.arange(1, len(rel) + 1)
    recall = hits / n_pos
    total, prev_recall = 0.0, 0.0
    for i in range(len(rel)):
        if rel[i]:
            p = precision[i:].max() if interpolated else precision[i]  # max precision at recall >= this one
            total += (recall[i] - prev_recall) * p
            prev_recall = recall[i]
    return total


def _reference(q, ql, g, gl, *, distance, average, ks, map_at, interpolated, p_at_k_over):
    d = _ref_distances(q, g, distance)
    per = {"mAP@all": [], **{f"P@{k}": [] for k in ks}, **{f"mAP@{m}": [] for m in map_at}}
    for i in range(len(q)):
        order = np.argsort(d[i], kind="stable")  # ties: lower gallery index first
        rel = (gl[order] == ql[i]).astype(int)
        n_pos = int(rel.sum())
        per["mAP@all"].append(_ref_ap(rel, n_pos, interpolated))
        for m in map_at:
            per[f"mAP@{m}"].append(_ref_ap(rel[:m], min(m, n_pos), interpolated))
        for k in ks:
            if p_at_k_over == "gallery":
                per[f"P@{k}"].append(rel[:k].sum() / min(k, len(g)))
            else:
                lim = min(k, n_pos)
                per[f"P@{k}"].append(rel[:lim].sum() / lim)
    out = {}
    for key, vals in per.items():
        vals = np.array(vals)
        if average == "query":
            out[key] = vals.mean()
        else:
            out[key] = np.mean([vals[ql == c].mean() for c in np.unique(ql)])
    out["AP_per_query"] = np.array(per["mAP@all"])
    return out


def _random_problem(seed: int, distance: str):
    rng = np.random.default_rng(seed)
    n_q, n_g, n_cls = 40, 150, 6
    gl = rng.integers(0, n_cls - 1, n_g)
    gl[7] = n_cls - 1  # class 5 has a single gallery member ...
    ql = rng.integers(0, n_cls, n_q)
    ql[:2] = n_cls - 1  # ... and at least two queries
    if distance == "hamming":
        g = rng.choice([-1, 1], size=(n_g, 6))  # 6 bits: many ties
        q = rng.choice([-1, 1], size=(n_q, 6))
    elif distance == "euclidean":
        g = rng.integers(0, 3, size=(n_g, 3)).astype(float) + gl[:, None] % 2  # small ints: exact ties
        q = rng.integers(0, 3, size=(n_q, 3)).astype(float) + ql[:, None] % 2
        g[20] = g[21]  # duplicate gallery rows
    else:
        g = rng.normal(size=(n_g, 5)) + 0.5 * gl[:, None]
        q = rng.normal(size=(n_q, 5)) + 0.5 * ql[:, None]
    return q, ql, g, gl


@pytest.mark.parametrize("distance", ["euclidean", "cosine", "hamming"])
def test_matches_brute_force_reference(distance):
    q, ql, g, gl = _random_problem(1, distance)
    ks, map_at = (1, 5, 20, 1000), (10, 200)
    for average, interpolated, p_over in itertools.product(
        ("class", "query"), (True, False), ("gallery", "positives")
    ):
        ref = _reference(
            q,
            ql,
            g,
            gl,
            distance=distance,
            average=average,
            ks=ks,
            map_at=map_at,
            interpolated=interpolated,
            p_at_k_over=p_over,
        )
        got = evaluate_retrieval(
            q,
            ql,
            g,
            gl,
            distance=distance,
            average=average,
            ks=ks,
            map_at=map_at,
            interpolated=interpolated,
            p_at_k_over=p_over,
            per_query=True,
        )
        for key in ["mAP@all", *(f"P@{k}" for k in ks), *(f"mAP@{m}" for m in map_at)]:
            assert got[key] == pytest.approx(ref[key], abs=1e-12), (key, average, interpolated, p_over)
        np.testing.assert_allclose(got["AP_per_query"], ref["AP_per_query"], atol=1e-12)


def test_chunking_and_tensor_inputs_do_not_change_results():
    q, ql, g, gl = _random_problem(2, "euclidean")
    full = evaluate_retrieval(q, ql, g, gl, per_query=True)
    tiny = evaluate_retrieval(
        torch.from_numpy(q),
        torch.from_numpy(ql),
        torch.from_numpy(g),
        torch.from_numpy(gl),
        per_query=True,
        memory_budget_mb=0.001,
    )  # chunk of 1
    np.testing.assert_allclose(full["AP_per_query"], tiny["AP_per_query"], rtol=0, atol=1e-14)  # sum order
    assert full["mAP@all"] == pytest.approx(tiny["mAP@all"], abs=1e-14)
    f32 = evaluate_retrieval(q.astype(np.float32), ql, g.astype(np.float32), gl, dtype=torch.float32)
    assert f32["mAP@all"] == pytest.approx(full["mAP@all"], abs=1e-12)  # small ints: exact in float32


def test_string_labels_and_query_order():
    q, ql, g, gl = _random_problem(3, "cosine")
    names = np.array(["cat", "dog", "owl", "bee", "ant", "elk"])
    a = evaluate_retrieval(q, ql, g, gl, distance="cosine", per_query=True)
    b = evaluate_retrieval(q, names[ql], g, names[gl], distance="cosine", per_query=True)
    assert a["mAP@all"] == pytest.approx(b["mAP@all"], abs=1e-14)  # class order differs
    perm = np.random.default_rng(0).permutation(len(q))
    c = evaluate_retrieval(q[perm], ql[perm], g, gl, distance="cosine", per_query=True)
    np.testing.assert_allclose(c["AP_per_query"], a["AP_per_query"][perm], atol=1e-15)
    assert c["mAP@all"] == pytest.approx(a["mAP@all"], abs=1e-12)
    assert list(b["classes"]) == sorted(set(names[ql]))
    assert b["mAP_per_class"].mean() == pytest.approx(b["mAP@all"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_matches_cpu():
    q, ql, g, gl = _random_problem(4, "euclidean")
    cpu = evaluate_retrieval(q, ql, g, gl, per_query=True)
    gpu = evaluate_retrieval(torch.from_numpy(q).cuda(), ql, torch.from_numpy(g).cuda(), gl, per_query=True)
    np.testing.assert_allclose(gpu["AP_per_query"], cpu["AP_per_query"], atol=1e-12)


# ----------------------------------------------------------------------------------------------------
# ITQ


def _clustered(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, dim)) @ rng.normal(size=(dim, dim)) + rng.normal(size=dim)


def test_itq_codes_rotation_and_determinism():
    x = _clustered(300, 16, 0)
    m = itq_fit(x, 8, n_iter=20, seed=3)
    assert isinstance(m, ITQ) and m.bits == 8
    codes = m.encode(x)
    assert codes.shape == (300, 8) and codes.dtype == np.int8
    assert set(np.unique(codes)) <= {-1, 1}
    np.testing.assert_allclose(m.rotation @ m.rotation.T, np.eye(8), atol=1e-10)
    np.testing.assert_allclose(m.components.T @ m.components, np.eye(8), atol=1e-10)
    again = itq_fit(x, 8, n_iter=20, seed=3)
    np.testing.assert_array_equal(again.rotation, m.rotation)
    assert not np.allclose(itq_fit(x, 8, n_iter=20, seed=4).rotation, m.rotation)
    # the Procrustes update never increases the quantisation loss
    assert np.all(np.diff(m.loss_history) <= 1e-9)
    assert m.loss_history[-1] < m.loss_history[0]
    # tensors in, tensors out
    assert isinstance(m.encode(torch.from_numpy(x)), torch.Tensor)
    # default bits = feature dimension (as the released code)
    assert itq_fit(x, n_iter=2).bits == 16


def test_itq_released_variant_is_orthogonal_and_seeded_by_n_iter():
    x = _clustered(200, 8, 1)
    a = itq_fit(x, n_iter=10, seed=0, variant="released")
    b = itq_fit(x, n_iter=10, seed=99, variant="released")  # seed ignored: released code seeds with n_iter
    np.testing.assert_array_equal(a.rotation, b.rotation)
    np.testing.assert_allclose(a.rotation @ a.rotation.T, np.eye(8), atol=1e-10)


def test_evaluate_itq_is_hamming_on_itq_codes():
    q, ql, g, gl = _random_problem(5, "cosine")
    m = itq_fit(q, n_iter=10, seed=0)
    # released protocol: fit on the queries, centre each set by its own mean
    direct = evaluate_retrieval(
        m.encode(q, center="self"), ql, m.encode(g, center="self"), gl, distance="hamming"
    )
    via = evaluate_retrieval(q, ql, g, gl, codes="itq", itq_iters=10)
    assert via["mAP@all"] == direct["mAP@all"] and via["P@100"] == direct["P@100"]
    m2 = itq_fit(g, 3, n_iter=10, seed=0)
    direct = evaluate_retrieval(m2.encode(q), ql, m2.encode(g), gl, distance="hamming")
    via = evaluate_retrieval(
        q, ql, g, gl, codes="itq", itq_iters=10, itq_fit_on="gallery", itq_bits=3, itq_center="fit"
    )
    assert via["mAP@all"] == direct["mAP@all"]
    fit_arr = evaluate_retrieval(
        q, ql, g, gl, codes="itq", itq_iters=10, itq_fit_on=g, itq_bits=3, itq_center="fit"
    )
    assert fit_arr["mAP@all"] == via["mAP@all"]


# ----------------------------------------------------------------------------------------------------
# degenerate inputs


def test_bad_inputs_raise_clear_errors():
    q, g = np.ones((2, 3)), np.ones((4, 3))
    with pytest.raises(ValueError, match="empty"):
        evaluate_retrieval(np.zeros((0, 3)), [], g, [0, 0, 1, 1])
    with pytest.raises(ValueError, match="empty"):
        evaluate_retrieval(q, [0, 1], np.zeros((0, 3)), [])
    with pytest.raises(ValueError, match="gallery_labels has 3 entries"):
        evaluate_retrieval(q, [0, 1], g, [0, 0, 1])
    with pytest.raises(ValueError, match="query_labels has 1 entries"):
        evaluate_retrieval(q, [0], g, [0, 0, 1, 1])
    with pytest.raises(ValueError, match="dimension"):
        evaluate_retrieval(q, [0, 1], np.ones((4, 2)), [0, 0, 1, 1])
    bad = q.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        evaluate_retrieval(bad, [0, 1], g, [0, 0, 1, 1])
    with pytest.raises(ValueError, match="NaN"):
        evaluate_retrieval(q, [0, 1], np.full((4, 3), np.inf), [0, 0, 1, 1])
    with pytest.raises(ValueError, match="2-D"):
        evaluate_retrieval(np.ones(3), [0], g, [0, 0, 1, 1])
    with pytest.raises(ValueError, match="binary"):
        evaluate_retrieval(q * 0.5, [0, 1], g, [0, 0, 1, 1], distance="hamming")
    with pytest.raises(ValueError, match="all zeros"):
        evaluate_retrieval(np.zeros((2, 3)), [0, 1], g, [0, 0, 1, 1], distance="cosine")
    for kw in (
        {"distance": "manhattan"},
        {"average": "macro"},
        {"p_at_k_over": "k"},
        {"codes": "pq"},
        {"on_missing": "ignore"},
        {"ks": (0,)},
    ):
        with pytest.raises(ValueError):
            evaluate_retrieval(q, [0, 1], g, [0, 0, 1, 1], **kw)
    with pytest.raises(ValueError, match="bits"):
        itq_fit(g, bits=5)


def test_query_class_missing_from_gallery():
    q = np.array([[0.0], [6.0], [3.0]])
    ql = np.array([0, 0, 7])  # class 7 is not in the gallery
    with pytest.raises(ValueError, match="no item in the gallery"):
        evaluate_retrieval(q, ql, G1, GL1)
    with pytest.warns(UserWarning, match="scored 0"):
        z = evaluate_retrieval(q, ql, G1, GL1, on_missing="zero", per_query=True)
    assert z["mAP@all"] == pytest.approx(((11 / 15 + 13 / 15) / 2 + 0) / 2)
    assert z["AP_per_query"][2] == 0 and z["P@100_per_query"][2] == 0
    with pytest.warns(UserWarning, match="left out"):
        s = evaluate_retrieval(q, ql, G1, GL1, on_missing="skip", per_query=True)
    assert s["mAP@all"] == pytest.approx((11 / 15 + 13 / 15) / 2)
    assert s["n_queries"] == 2 and np.isnan(s["AP_per_query"][2])


def test_single_gallery_item_and_single_query():
    r = evaluate_retrieval([[0.0, 1.0]], [3], [[5.0, 5.0]], [3])
    assert r["mAP@all"] == 1.0 and r["P@100"] == 1.0 and r["mAP@200"] == 1.0
