"""Retrieval evaluation: blocked on-device distances, CMC / mAP / mINP, k-reciprocal re-ranking.

Conventions (each tested in tests/test_metrics.py):
  * 'euclidean' distances are true Euclidean distances, sqrt(max(|q|^2 + |g|^2 - 2 q.g, 0)).
    torchreid ranks by the SQUARED distance; the square root is monotone, so rankings, CMC, mAP and
    mINP are identical, only the printed distances differ. 'cosine' is 1 - cos(q, g).
  * Ties in distance are broken by gallery index (the order of a stable sort), so results are
    deterministic; torchreid's quicksort leaves tie order unspecified.
  * Ranks are counted among the gallery items that remain after junk removal.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from scipy import sparse

from vreid_jax.evaluation.choices import AP_MODES, DISTANCES

# The CMC ranks every report shows, and the metrics a results record carries.
RANKS = (1, 5, 10, 20)
SUMMARY_KEYS = ("mAP", "mINP", *(f"rank{r}" for r in RANKS))
# evaluate_rank processes this many distance-matrix entries per chunk of queries (bounds memory to
# roughly 15 bytes per entry: about 60 MB per chunk, whatever the dataset size).
_CHUNK_ENTRIES = 1 << 22
# torch.nn.functional.normalize's epsilon: a zero feature stays zero instead of becoming NaN.
_NORM_EPS = 1e-12


# ------------------------------------------------------------------------------------- distances
@functools.partial(jax.jit, static_argnames=("metric", "normalize"))
def _distance_block(q, g, metric: str, normalize: bool):
    if normalize or metric == "cosine":
        q = q / jnp.maximum(jnp.linalg.norm(q, axis=1, keepdims=True), _NORM_EPS)
        g = g / jnp.maximum(jnp.linalg.norm(g, axis=1, keepdims=True), _NORM_EPS)
    # Full float32 products: TPUs (and GPUs with TF32) would otherwise round to bfloat16/TF32,
    # which is enough to reorder near-tied gallery items.
    dot = jnp.matmul(q, g.T, precision=jax.lax.Precision.HIGHEST)
    if metric == "cosine":
        return 1.0 - dot
    sq = jnp.sum(q * q, axis=1)[:, None] + jnp.sum(g * g, axis=1)[None, :] - 2.0 * dot
    return jnp.sqrt(jnp.maximum(sq, 0.0))


def pairwise_distances(
    qf, gf, metric: str = "euclidean", normalize: bool = False, block_size: int = 4096
) -> np.ndarray:
    """Query-gallery distances computed on the default device, `block_size` query rows at a time.

    Every block has the same shape (the last one is zero-padded), so the computation compiles once
    per (block, gallery, feature) shape and device memory stays bounded by block_size x Ng.

    Args:
      qf: [Nq, D] query features.
      gf: [Ng, D] gallery features.
      metric: 'euclidean' (not squared; see the module docstring) or 'cosine' (1 - cos).
      normalize: L2-normalise both sides first (cosine always does).
      block_size: query rows per block; smaller blocks are used when Nq is smaller.

    Returns:
      [Nq, Ng] float32 numpy array.
    """
    if metric not in DISTANCES:
        raise ValueError(f"Unknown distance metric {metric!r}; expected one of {DISTANCES}.")
    qf, gf = np.asarray(qf, np.float32), np.asarray(gf, np.float32)
    if qf.ndim != 2 or gf.ndim != 2 or qf.shape[1] != gf.shape[1]:
        raise ValueError(
            f"Query features {qf.shape} and gallery features {gf.shape} must be [N, D] with the "
            "same D."
        )
    num_q = qf.shape[0]
    if num_q == 0:
        return np.zeros((0, gf.shape[0]), np.float32)
    rows = min(block_size, num_q)
    gallery = jnp.asarray(gf)
    # Dispatch every block before reading any back, so transfers overlap with compute.
    blocks = []
    for start in range(0, num_q, rows):
        block = qf[start : start + rows]
        if block.shape[0] < rows:
            block = np.pad(block, ((0, rows - block.shape[0]), (0, 0)))
        blocks.append(_distance_block(jnp.asarray(block), gallery, metric, normalize))
    return np.concatenate([np.asarray(b) for b in blocks])[:num_q]


# ---------------------------------------------------------------------------------------- ranking
def _order_keys(distances: np.ndarray) -> np.ndarray:
    """uint32 keys whose unsigned order equals the float32 order of `distances` (no NaN)."""
    bits = (distances + np.float32(0.0)).view(np.uint32)  # + 0 turns -0.0 into +0.0.
    negative = (bits >> 31).astype(bool)
    return np.where(negative, ~bits, bits | np.uint32(0x80000000))


def _good_ranks(dist, keep, good):
    """0-based ranks, among the kept items of their row, of every good item (row-major order).

    Instead of argsorting whole rows, each row's kept distances are sorted (as order-preserving
    integer keys, with the row index in the high bits, so the flattened chunk is sorted globally)
    and every good item is located by one binary search. Exact ties are resolved by gallery index.
    """
    num_rows, num_g = dist.shape
    keys = _order_keys(np.where(keep, dist, np.float32(np.inf)))
    row_base = np.arange(num_rows, dtype=np.uint64)[:, None] << np.uint64(32)
    flat = (np.sort(keys, axis=1).astype(np.uint64) | row_base).ravel()
    rows, cols = np.nonzero(good)
    good_keys = keys[rows, cols].astype(np.uint64) | (rows.astype(np.uint64) << np.uint64(32))
    offset = rows.astype(np.int64) * num_g
    lo = np.searchsorted(flat, good_keys, side="left") - offset
    hi = np.searchsorted(flat, good_keys, side="right") - offset
    for i in np.flatnonzero(hi - lo > 1):  # Exact ties: rare with real features.
        r, c = rows[i], cols[i]
        tied = keep[r, :c] & (keys[r, :c] == keys[r, c])
        lo[i] += np.count_nonzero(tied)
    return rows, lo


def _rank_chunk(dist, q_pids, g_pids, q_camids, g_camids, junk_gallery, max_rank, ap_mode):
    """Per-query (valid, AP, INP, first-hit histogram) for one chunk of queries."""
    same_pid = g_pids[None, :] == q_pids[:, None]
    junk = (same_pid & (g_camids[None, :] == q_camids[:, None])) | junk_gallery[None, :]
    good = same_pid & ~junk
    rows, ranks = _good_ranks(dist, ~junk, good)
    num_rows = dist.shape[0]
    num_good = np.bincount(rows, minlength=num_rows)
    # Goods of each row in rank order; `nth` = how many goods up to and including this one.
    order = np.lexsort((ranks, rows))
    rows, ranks = rows[order], ranks[order].astype(np.float64)
    starts = np.concatenate([[0], np.cumsum(num_good)[:-1]])
    nth = np.arange(rows.size) - starts[rows] + 1
    precision = nth / (ranks + 1)
    if ap_mode == "trapezoid":
        # The MATLAB formula: the area under precision-recall by trapezoids, the precision just
        # before a hit being (hits so far) / (rank), and 1 before the first rank.
        previous = np.where(ranks > 0, (nth - 1) / np.maximum(ranks, 1), 1.0)
        precision = (previous + precision) / 2
    valid = num_good > 0
    ap = np.bincount(rows, weights=precision, minlength=num_rows)[valid] / num_good[valid]
    # Goods are sorted by rank within each row: the first is the easiest, the last the hardest.
    first = ranks[starts[valid]]
    last = ranks[starts[valid] + num_good[valid] - 1]
    inp = num_good[valid] / (last + 1)
    hits = np.bincount(np.minimum(first, max_rank).astype(np.int64), minlength=max_rank + 1)
    return int(valid.sum()), ap.sum(), inp.sum(), hits[:max_rank]


def evaluate_rank(
    distmat,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    max_rank: int = 50,
    ap_mode: str = "standard",
    junk_pids=(-1,),
) -> dict:
    """CMC, mAP and mINP of a query x gallery distance matrix (smaller = more similar).

    For each query, gallery items with the query's pid AND camera, and items whose pid is in
    `junk_pids`, are removed from its ranking; the rest are ranked by distance (ties by gallery
    index). Good matches are the remaining items with the query's pid. Queries without any good
    match are skipped and not counted in `num_valid_queries` (torchreid's rule).

    * CMC[k] = fraction of valid queries whose first good match is within the top k+1. When a query
      has fewer than `max_rank` ranked items, its curve continues at its last value (1: a valid
      query has found its match by then), so `cmc` always has `max_rank` entries; torchreid instead
      shortens every curve to the gallery size when the gallery is smaller than `max_rank`.
    * AP 'standard': mean over good matches of the precision at their rank (torchreid).
      AP 'trapezoid': the official MARS MATLAB `compute_AP` formula, sum over hits of
      (1 / num_good) * (precision before + precision at the hit) / 2, never above 'standard'.
    * mINP (Ye et al. 2021): num_good / (rank of the hardest good match), averaged.

    Vectorised over queries (no per-query Python loop), in chunks of queries to bound memory.

    Args:
      distmat: [Nq, Ng] distances; NaN is rejected.
      q_pids, g_pids, q_camids, g_camids: [Nq] / [Ng] integer ids and cameras.
      max_rank: CMC length.
      ap_mode: 'standard' or 'trapezoid'.
      junk_pids: gallery pids that never count (MARS: -1; distractors with pid 0 stay negatives).

    Returns:
      dict(cmc=float32 [max_rank], mAP=float, mINP=float, num_valid_queries=int).

    Raises:
      ValueError: on mismatched shapes, NaN distances, a bad `ap_mode` or `max_rank`, or when no
        query has a good match.
    """
    distmat = np.asarray(distmat, np.float32)
    q_pids, g_pids = np.asarray(q_pids).ravel(), np.asarray(g_pids).ravel()
    q_camids, g_camids = np.asarray(q_camids).ravel(), np.asarray(g_camids).ravel()
    _check_rank_inputs(distmat, q_pids, g_pids, q_camids, g_camids, max_rank, ap_mode)
    junk_gallery = np.isin(g_pids, np.asarray(junk_pids, dtype=g_pids.dtype))
    rows_per_chunk = max(1, _CHUNK_ENTRIES // max(1, distmat.shape[1]))
    num_valid, ap_sum, inp_sum = 0, 0.0, 0.0
    hits = np.zeros(max_rank, np.int64)
    for start in range(0, distmat.shape[0], rows_per_chunk):
        chunk = slice(start, start + rows_per_chunk)
        n, ap, inp, h = _rank_chunk(
            distmat[chunk],
            q_pids[chunk],
            g_pids,
            q_camids[chunk],
            g_camids,
            junk_gallery,
            max_rank,
            ap_mode,
        )
        num_valid, ap_sum, inp_sum, hits = num_valid + n, ap_sum + ap, inp_sum + inp, hits + h
    if num_valid == 0:
        raise ValueError(
            "No query has a valid match in the gallery (same pid, other camera, not junk); "
            "check the query/gallery split and the pid/camera arrays."
        )
    return dict(
        cmc=(np.cumsum(hits) / num_valid).astype(np.float32),
        mAP=float(ap_sum / num_valid),
        mINP=float(inp_sum / num_valid),
        num_valid_queries=num_valid,
    )


def _check_rank_inputs(distmat, q_pids, g_pids, q_camids, g_camids, max_rank, ap_mode):
    if ap_mode not in AP_MODES:
        raise ValueError(f"Unknown ap_mode {ap_mode!r}; expected one of {AP_MODES}.")
    if max_rank < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}.")
    expected = (len(q_pids), len(g_pids))
    if distmat.ndim != 2 or distmat.shape != expected:
        raise ValueError(f"distmat has shape {distmat.shape}; the pids give {expected}.")
    if len(q_camids) != expected[0] or len(g_camids) != expected[1]:
        raise ValueError(
            f"Camera arrays have lengths ({len(q_camids)}, {len(g_camids)}); pids give {expected}."
        )
    if np.isnan(distmat).any():
        raise ValueError(f"distmat holds {int(np.isnan(distmat).sum())} NaN entries.")


# ------------------------------------------------------------------------------------- re-ranking
def _top_k(dist: np.ndarray, k: int, rows_per_chunk: int = 1024) -> np.ndarray:
    """[N, k] indices of each row's k smallest entries, nearest first."""
    k = min(k, dist.shape[1])
    out = np.empty((dist.shape[0], k), np.int64)
    for start in range(0, dist.shape[0], rows_per_chunk):
        block = dist[start : start + rows_per_chunk]
        part = np.argpartition(block, k - 1, axis=1)[:, :k]
        order = np.lexsort((part, np.take_along_axis(block, part, 1)), axis=1)
        out[start : start + rows_per_chunk] = np.take_along_axis(part, order, 1)
    return out


def _neighbour_matrix(neighbours: np.ndarray, n: int) -> sparse.csr_matrix:
    rows = np.repeat(np.arange(n), neighbours.shape[1])
    return sparse.csr_matrix((np.ones(rows.size, bool), (rows, neighbours.ravel())), shape=(n, n))


def _reciprocal(ranked: np.ndarray, k: int, n: int) -> sparse.csr_matrix:
    """R(p, k) as a sparse 0/1 matrix: g in N(p, k) and p in N(g, k); N(p, k) includes p."""
    near = _neighbour_matrix(ranked[:, : k + 1], n)
    return near.multiply(near.T).tocsr().astype(np.float32)


def re_ranking(q_g_dist, q_q_dist, g_g_dist, k1=20, k2=6, lambda_value=0.3) -> np.ndarray:
    """k-reciprocal re-ranking (Zhong et al., CVPR 2017), written from the paper's definitions.

    Over all P = Nq + Ng probes, with N(p, k) the k nearest neighbours of p (p included, k + 1 items):
      R(p, k) = {g in N(p, k) : p in N(g, k)};
      R*(p, k) = R(p, k) united with every R(q, k/2), q in R(p, k), for which
        |R(p, k) & R(q, k/2)| >= 2/3 |R(q, k/2)|;
      V[p, g] = exp(-d(p, g)) on R*(p, k), normalised to sum 1 (as the authors' release does);
      local query expansion: V[p] <- mean of V[g] over g in N(p, k2 - 1) (k2 items; k2 = 1: none);
      d_J(p, g) = 1 - sum(min(V[p], V[g])) / sum(max(V[p], V[g]));
      d*(p, g) = (1 - lambda) d_J(p, g) + lambda d(p, g).
    d is the given distance divided by its row maximum over all probes (the authors' scaling).
    The paper's original distance is a squared (Mahalanobis) distance, so pass squared Euclidean
    distances to match it (and the authors' release, which squares its input).

    Args:
      q_g_dist: [Nq, Ng]; q_q_dist: [Nq, Nq]; g_g_dist: [Ng, Ng].
      k1, k2, lambda_value: the paper's k1, k2 and lambda.

    Returns:
      [Nq, Ng] float32 re-ranked distances (feed them to `evaluate_rank`).
    """
    q_g, q_q, g_g = (np.asarray(a, np.float32) for a in (q_g_dist, q_q_dist, g_g_dist))
    num_q, num_g = q_g.shape
    if q_q.shape != (num_q, num_q) or g_g.shape != (num_g, num_g):
        raise ValueError(
            f"re_ranking: q_g {q_g.shape}, q_q {q_q.shape}, g_g {g_g.shape} do not fit together."
        )
    n = num_q + num_g
    dist = np.block([[q_q, q_g], [q_g.T, g_g]])
    dist /= np.maximum(dist.max(axis=1, keepdims=True), np.finfo(np.float32).tiny)
    ranked = _top_k(dist, max(k1, k2) + 1)
    r_full = _reciprocal(ranked, k1, n)
    r_half = _reciprocal(ranked, (k1 + 1) // 2, n)
    # overlap[p, q] = |R(p, k) & R(q, k/2)|, kept only for candidates q in R(p, k).
    overlap = r_full.multiply(r_full @ r_half.T).tocsr()
    size_half = np.asarray(r_half.sum(axis=1)).ravel()
    rows, cols = overlap.nonzero()
    accept = np.asarray(overlap[rows, cols]).ravel() >= (2.0 / 3.0) * size_half[cols]
    chosen = sparse.csr_matrix(
        (np.ones(accept.sum(), np.float32), (rows[accept], cols[accept])), shape=(n, n)
    )
    expanded = ((r_full + chosen @ r_half) > 0).tocsr()
    rows, cols = expanded.nonzero()
    weights = np.exp(-dist[rows, cols])
    weights /= np.bincount(rows, weights=weights, minlength=n)[rows]
    v = sparse.csr_matrix((weights.astype(np.float32), (rows, cols)), shape=(n, n))
    if k2 > 1:
        v = (_neighbour_matrix(ranked[:, :k2], n).astype(np.float32) / k2) @ v
    jaccard = _jaccard(v.tocsr(), num_q)
    return ((1 - lambda_value) * jaccard + lambda_value * dist[:num_q, num_q:]).astype(np.float32)


def _jaccard(v: sparse.csr_matrix, num_q: int) -> np.ndarray:
    """d_J between the first `num_q` rows of `v` and the rest; rows of `v` sum to 1."""
    gallery = v[num_q:].tocsc()
    out = np.empty((num_q, v.shape[0] - num_q), np.float32)
    for p in range(num_q):  # Each probe touches only the gallery columns where it is non-zero.
        start, end = v.indptr[p], v.indptr[p + 1]
        cols, values = v.indices[start:end], v.data[start:end]
        shared = gallery[:, cols].tocoo()
        overlap = np.bincount(
            shared.row,
            weights=np.minimum(shared.data, values[shared.col]),
            minlength=gallery.shape[0],
        )
        # sum(max) = sum(V[p]) + sum(V[g]) - sum(min) = 2 - sum(min).
        out[p] = 1.0 - overlap / (2.0 - overlap)
    return out
