"""Distances, ranking metrics (hand cases + a per-query reference loop) and re-ranking."""

import numpy as np
import pytest

from vreid_jax.evaluation import metrics


def _reference(distmat, q_pids, g_pids, q_camids, g_camids, max_rank, ap_mode, junk_pids=(-1,)):
    """One query at a time, the obvious way; trapezoid AP transcribes the MATLAB loop literally."""
    cmc_sum, aps, inps = np.zeros(max_rank), [], []
    for i in range(len(q_pids)):
        order = np.argsort(distmat[i], kind="stable")
        pids, cams = g_pids[order], g_camids[order]
        junk = ((pids == q_pids[i]) & (cams == q_camids[i])) | np.isin(pids, junk_pids)
        matches = pids[~junk] == q_pids[i]
        if not matches.any():
            continue
        cmc = np.minimum(np.cumsum(matches), 1)
        cmc = np.concatenate([cmc, np.full(max(0, max_rank - cmc.size), cmc[-1])])
        cmc_sum += cmc[:max_rank]
        hits = np.flatnonzero(matches)
        if ap_mode == "standard":
            aps.append(np.mean(np.arange(1, hits.size + 1) / (hits + 1)))
        else:
            ap, old_recall, old_precision, found = 0.0, 0.0, 1.0, 0
            for j, is_match in enumerate(matches):
                found += int(is_match)
                recall, precision = found / hits.size, found / (j + 1)
                ap += (recall - old_recall) * (old_precision + precision) / 2
                old_recall, old_precision = recall, precision
                if found == hits.size:
                    break
            aps.append(ap)
        inps.append(hits.size / (hits[-1] + 1))
    return cmc_sum / len(aps), np.mean(aps), np.mean(inps), len(aps)


def _rank(distmat, q_pids, g_pids, q_cams=None, g_cams=None, **kwargs):
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    q_cams = np.zeros(len(q_pids), int) if q_cams is None else np.asarray(q_cams)
    g_cams = np.ones(len(g_pids), int) if g_cams is None else np.asarray(g_cams)
    return metrics.evaluate_rank(
        np.asarray(distmat, np.float32), q_pids, g_pids, q_cams, g_cams, **kwargs
    )


def test_reference_ap_checks():
    # One positive at rank 3 -> standard 1/3, trapezoid (MARS's MATLAB `compute_AP.m`) 1/6.
    dist = [[0.1, 0.2, 0.3, 0.4]]
    for mode, expected in [("standard", 1 / 3), ("trapezoid", 1 / 6)]:
        out = _rank(dist, [5], [1, 2, 5, 3], max_rank=4, ap_mode=mode)
        np.testing.assert_allclose(out["mAP"], expected, rtol=1e-6)
        np.testing.assert_allclose(out["cmc"], [0, 0, 1, 1])
        np.testing.assert_allclose(out["mINP"], 1 / 3)
    # Positives at ranks 1 and 3 -> standard 0.833, trapezoid 0.792.
    for mode, expected in [
        ("standard", (1 + 2 / 3) / 2),
        ("trapezoid", (1 + (0.5 + 2 / 3) / 2) / 2),
    ]:
        out = _rank(dist, [5], [5, 2, 5, 3], max_rank=4, ap_mode=mode)
        np.testing.assert_allclose(out["mAP"], expected, rtol=1e-6)
    np.testing.assert_allclose(round(expected, 3), 0.792)


def test_minp_is_num_good_over_hardest_rank():
    out = _rank([[0.1, 0.2, 0.3, 0.4, 0.5]], [5], [5, 1, 2, 5, 3], max_rank=5)
    np.testing.assert_allclose(out["mINP"], 2 / 4)
    np.testing.assert_allclose(out["mAP"], (1 + 2 / 4) / 2)


def test_same_camera_and_junk_pids_are_removed_distractors_are_not():
    # Gallery in distance order: same pid & cam (junk), pid -1 (junk), pid 0 (distractor,
    # a negative), the good match.
    dist = [[0.1, 0.2, 0.3, 0.4]]
    out = _rank(dist, [7], [7, -1, 0, 7], [3], [3, 1, 1, 1], max_rank=3)
    np.testing.assert_allclose(out["cmc"], [0, 1, 1])
    np.testing.assert_allclose(out["mAP"], 0.5)
    # With pid 0 declared junk too, the match moves to rank 1.
    out = _rank(dist, [7], [7, -1, 0, 7], [3], [3, 1, 1, 1], max_rank=3, junk_pids=(-1, 0))
    np.testing.assert_allclose([out["mAP"], out["cmc"][0]], [1.0, 1.0])


def test_queries_without_match_are_skipped_and_all_skipped_is_an_error():
    dist = [[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]]
    # Query 1's only same-pid item is on its own camera; query 2's pid is absent.
    out = _rank(dist, [1, 2, 9], [1, 2], [0, 5, 0], [1, 5], max_rank=2)
    assert out["num_valid_queries"] == 1
    np.testing.assert_allclose([out["mAP"], out["cmc"][0]], [1.0, 1.0])
    with pytest.raises(ValueError, match="No query has a valid match"):
        _rank(dist, [8, 8, 9], [1, 2], max_rank=2)


def test_cmc_continues_past_a_small_gallery():
    out = _rank([[0.2, 0.1]], [1], [1, 2], max_rank=5)
    np.testing.assert_allclose(out["cmc"], [0, 1, 1, 1, 1])
    assert out["cmc"].dtype == np.float32 and out["cmc"].shape == (5,)


def test_ties_are_broken_by_gallery_index():
    out = _rank([[0.5, 0.5, 0.5]], [1], [2, 1, 3], max_rank=3)
    np.testing.assert_allclose(out["cmc"], [0, 1, 1])


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="ap_mode"):
        _rank([[0.1]], [1], [1], ap_mode="area")
    with pytest.raises(ValueError, match="shape"):
        _rank([[0.1, 0.2]], [1], [1])
    with pytest.raises(ValueError, match="NaN"):
        _rank([[np.nan, 0.2]], [1], [1, 2])


@pytest.mark.parametrize("ap_mode", ["standard", "trapezoid"])
@pytest.mark.parametrize("integer_distances", [False, True])
def test_agrees_with_per_query_loop(ap_mode, integer_distances, monkeypatch):
    # Small chunks, so that several chunks (and a short last one) are combined.
    monkeypatch.setattr(metrics, "_CHUNK_ENTRIES", 7 * 60)
    rng = np.random.default_rng(1 + integer_distances)
    num_q, num_g = 40, 60
    q_pids = rng.integers(0, 12, num_q)
    g_pids = np.concatenate([rng.integers(-1, 12, num_g - 5), [-1, 0, 0, -1, 3]])
    q_cams, g_cams = rng.integers(0, 3, num_q), rng.integers(0, 3, num_g)
    if integer_distances:  # Many exact ties, including negative and -0.0 values.
        dist = rng.integers(-3, 4, (num_q, num_g)).astype(np.float32)
        dist[0, :5] = -0.0
    else:
        dist = rng.random((num_q, num_g)).astype(np.float32)
    out = metrics.evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, 20, ap_mode)
    cmc, m_ap, m_inp, num_valid = _reference(dist, q_pids, g_pids, q_cams, g_cams, 20, ap_mode)
    assert out["num_valid_queries"] == num_valid > 0
    np.testing.assert_allclose(out["cmc"], cmc, rtol=1e-6)
    np.testing.assert_allclose([out["mAP"], out["mINP"]], [m_ap, m_inp], rtol=1e-9)


def test_trapezoid_never_exceeds_standard():
    rng = np.random.default_rng(3)
    dist = rng.random((30, 50))
    args = (rng.integers(0, 5, 30), rng.integers(0, 5, 50), rng.integers(0, 2, 30), np.ones(50))
    standard = metrics.evaluate_rank(dist, *args, ap_mode="standard")["mAP"]
    assert metrics.evaluate_rank(dist, *args, ap_mode="trapezoid")["mAP"] < standard


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("normalize", [False, True])
def test_pairwise_distances_match_numpy(metric, normalize):
    rng = np.random.default_rng(4)
    qf, gf = rng.normal(size=(10, 16)), rng.normal(size=(13, 16))
    qf[3] = 0.0  # A zero feature must not produce NaN.
    got = metrics.pairwise_distances(qf, gf, metric, normalize, block_size=4)
    assert got.shape == (10, 13) and got.dtype == np.float32
    if normalize or metric == "cosine":
        qf = qf / np.maximum(np.linalg.norm(qf, axis=1, keepdims=True), 1e-12)
        gf = gf / np.linalg.norm(gf, axis=1, keepdims=True)
    if metric == "cosine":
        expected = 1 - qf @ gf.T
    else:
        expected = np.sqrt(((qf[:, None] - gf[None]) ** 2).sum(-1))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_pairwise_distances_compile_once_per_block_shape():
    rng = np.random.default_rng(5)
    gf = rng.normal(size=(7, 4)).astype(np.float32)
    before = metrics._distance_block._cache_size()
    for num_q in (9, 10, 11):  # Three different query counts, the same 5-row blocks.
        metrics.pairwise_distances(rng.normal(size=(num_q, 4)), gf, block_size=5)
    assert metrics._distance_block._cache_size() == before + 1


def test_pairwise_distances_bad_shapes():
    with pytest.raises(ValueError, match="same D"):
        metrics.pairwise_distances(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="manhattan"):
        metrics.pairwise_distances(np.ones((2, 3)), np.ones((2, 3)), metric="manhattan")


def _clustered(rng, num_ids=12, per_id=8, dim=8, noise=0.9):
    centres = rng.normal(size=(num_ids, dim)) * 1.2
    pids = np.repeat(np.arange(num_ids), per_id)
    feats = centres[pids] + noise * rng.normal(size=(pids.size, dim))
    return feats.astype(np.float32), pids


def _sq_dist(a, b):
    return ((a[:, None] - b[None]) ** 2).sum(-1)


def test_re_ranking_shape_and_lambda_one_keeps_the_ranking():
    rng = np.random.default_rng(6)
    feats, _ = _clustered(rng)
    qf, gf = feats[:10], feats[10:]
    out = metrics.re_ranking(_sq_dist(qf, gf), _sq_dist(qf, qf), _sq_dist(gf, gf), lambda_value=1.0)
    assert out.shape == (10, gf.shape[0]) and out.dtype == np.float32
    np.testing.assert_array_equal(
        np.argsort(out, axis=1, kind="stable"),
        np.argsort(_sq_dist(qf, gf), axis=1, kind="stable"),
    )
    jaccard_only = metrics.re_ranking(
        _sq_dist(qf, gf), _sq_dist(qf, qf), _sq_dist(gf, gf), lambda_value=0.0, k2=1
    )
    assert np.all((jaccard_only >= 0) & (jaccard_only <= 1))
    with pytest.raises(ValueError, match="do not fit"):
        metrics.re_ranking(_sq_dist(qf, gf), _sq_dist(gf, gf), _sq_dist(gf, gf))


def test_re_ranking_improves_a_clustered_retrieval():
    rng = np.random.default_rng(7)
    feats, pids = _clustered(rng)
    is_query = np.zeros(pids.size, bool)
    is_query[::8] = True  # One query per identity.
    qf, gf, q_pids, g_pids = feats[is_query], feats[~is_query], pids[is_query], pids[~is_query]
    q_cams, g_cams = np.zeros(len(q_pids)), np.ones(len(g_pids))
    plain = _sq_dist(qf, gf)
    reranked = metrics.re_ranking(plain, _sq_dist(qf, qf), _sq_dist(gf, gf), k1=6, k2=3)
    before = metrics.evaluate_rank(plain, q_pids, g_pids, q_cams, g_cams, max_rank=10)["mAP"]
    after = metrics.evaluate_rank(reranked, q_pids, g_pids, q_cams, g_cams, max_rank=10)["mAP"]
    assert after > before + 0.02, (before, after)


def _re_ranking_reference(q_g, q_q, g_g, k1, k2, lam):
    """The paper's set definitions, one probe at a time, with dense vectors."""
    dist = np.block([[q_q, q_g], [q_g.T, g_g]]).astype(np.float64)
    dist /= dist.max(axis=1, keepdims=True)
    n, num_q = dist.shape[0], q_g.shape[0]
    order = np.argsort(dist, axis=1, kind="stable")

    def reciprocal(p, k):
        return {g for g in order[p, : k + 1] if p in order[g, : k + 1]}

    v = np.zeros((n, n))
    for p in range(n):
        r = reciprocal(p, k1)
        expanded = set(r)
        for q in r:
            r_half = reciprocal(q, (k1 + 1) // 2)
            if len(r & r_half) >= 2 / 3 * len(r_half):
                expanded |= r_half
        idx = sorted(expanded)
        v[p, idx] = np.exp(-dist[p, idx]) / np.exp(-dist[p, idx]).sum()
    if k2 > 1:
        v = np.stack([v[order[p, :k2]].mean(0) for p in range(n)])
    jaccard = np.array(
        [
            [
                1 - np.minimum(v[p], v[g]).sum() / np.maximum(v[p], v[g]).sum()
                for g in range(num_q, n)
            ]
            for p in range(num_q)
        ]
    )
    return (1 - lam) * jaccard + lam * dist[:num_q, num_q:]


@pytest.mark.parametrize(("k1", "k2"), [(6, 3), (4, 1)])
def test_re_ranking_matches_set_definition(k1, k2):
    rng = np.random.default_rng(8)
    feats, _ = _clustered(rng, num_ids=6, per_id=5)
    qf, gf = feats[:6], feats[6:]
    args = (_sq_dist(qf, gf), _sq_dist(qf, qf), _sq_dist(gf, gf))
    np.testing.assert_allclose(
        metrics.re_ranking(*args, k1=k1, k2=k2, lambda_value=0.3),
        _re_ranking_reference(*args, k1, k2, 0.3),
        rtol=1e-5,
        atol=1e-6,
    )
