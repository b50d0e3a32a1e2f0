"""Ranking metrics at MARS scale: vectorised `evaluate_rank` vs the per-query loop, and distances.

The official MARS protocol ranks 1,980 queries against 11,310 gallery tracklets (queries included,
so each query meets itself as same-camera junk). This script builds id/camera arrays with that
structure (626 query identities, each with matches on other cameras, pid 0 distractors, pid -1
junk) and random 2,048-d features around identity centres, then times:
  * `pairwise_distances` (normalised Euclidean, on the default JAX device; compile timed apart);
  * `evaluate_rank` in both AP modes (median of `--repeats`);
  * the straightforward per-query loop (argsort a row, mask, cumsum), and checks both agree.

Run: python benchmarks/evaluate_rank.py
Writes benchmarks/results/evaluate_rank.json and prints a one-line summary.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import common  # benchmarks/common.py (this folder is on sys.path when run as a script)
import jax
import numpy as np

from vreid_jax.evaluation import metrics

NUM_QUERY, NUM_GALLERY, NUM_QUERY_IDS, NUM_CAMS = 1980, 11310, 626, 6
NUM_DISTRACTORS, NUM_JUNK = 1000, 2000


def mars_like(seed: int, dim: int):
    """Features, pids and cameras with the official MARS query/gallery structure."""
    rng = np.random.default_rng(seed)
    q_pids = np.sort(np.concatenate([np.arange(1, NUM_QUERY_IDS + 1), rng.integers(1, 627, 1354)]))
    q_cams = rng.integers(1, NUM_CAMS + 1, NUM_QUERY)
    # Gallery = the queries themselves + more tracklets of the query ids on other cameras
    # (so every query has a good match) + distractors (pid 0) + junk (pid -1).
    num_more = NUM_GALLERY - NUM_QUERY - NUM_DISTRACTORS - NUM_JUNK
    more_pids = np.concatenate([q_pids, rng.choice(q_pids, num_more - NUM_QUERY)])
    more_cams = np.concatenate(
        [q_cams % NUM_CAMS + 1, rng.integers(1, NUM_CAMS + 1, num_more - NUM_QUERY)]
    )
    g_pids = np.concatenate(
        [q_pids, more_pids, np.zeros(NUM_DISTRACTORS, int), -np.ones(NUM_JUNK, int)]
    )
    g_cams = np.concatenate(
        [q_cams, more_cams, rng.integers(1, NUM_CAMS + 1, NUM_DISTRACTORS + NUM_JUNK)]
    )
    # Identity signal weak enough against the noise that the ranking is far from perfect.
    centres = 0.25 * rng.normal(size=(NUM_QUERY_IDS + 1, dim)).astype(np.float32)

    def features(pids):
        noise = rng.normal(size=(len(pids), dim)).astype(np.float32)
        return centres[np.maximum(pids, 0)] * (pids > 0)[:, None] + noise

    return features(q_pids), features(g_pids), q_pids, g_pids, q_cams, g_cams


def per_query_loop(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=50):
    """The straightforward implementation (as torchreid's Python path): one query at a time."""
    all_cmc, aps, inps = [], [], []
    for i in range(len(q_pids)):
        order = np.argsort(distmat[i], kind="stable")
        pids, cams = g_pids[order], g_cams[order]
        keep = ~(((pids == q_pids[i]) & (cams == q_cams[i])) | (pids == -1))
        matches = (pids[keep] == q_pids[i]).astype(np.int64)
        if not matches.any():
            continue
        all_cmc.append(np.minimum(matches.cumsum(), 1)[:max_rank])
        hits = np.flatnonzero(matches)
        aps.append(np.mean(np.arange(1, hits.size + 1) / (hits + 1)))
        inps.append(hits.size / (hits[-1] + 1))
    return np.mean(all_cmc, axis=0), float(np.mean(aps)), float(np.mean(inps)), len(aps)


def _timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=2048, help="feature dimension")
    parser.add_argument("--repeats", type=int, default=3, help="timed evaluate_rank runs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    qf, gf, q_pids, g_pids, q_cams, g_cams = mars_like(args.seed, args.dim)
    _, compile_and_run_s = _timed(metrics.pairwise_distances, qf, gf, normalize=True)
    distmat, distance_s = _timed(metrics.pairwise_distances, qf, gf, normalize=True)

    rank_s = {}
    for mode in metrics.AP_MODES:
        times = []
        for _ in range(args.repeats):
            result, seconds = _timed(
                metrics.evaluate_rank, distmat, q_pids, g_pids, q_cams, g_cams, ap_mode=mode
            )
            times.append(seconds)
        rank_s[mode] = statistics.median(times)
        if mode == "standard":
            standard = result

    (cmc, m_ap, m_inp, num_valid), loop_s = _timed(
        per_query_loop, distmat, q_pids, g_pids, q_cams, g_cams
    )
    agree = (
        num_valid == standard["num_valid_queries"]
        and np.allclose(cmc, standard["cmc"], atol=1e-6)
        and np.isclose(m_ap, standard["mAP"], rtol=1e-9)
        and np.isclose(m_inp, standard["mINP"], rtol=1e-9)
    )
    record = {
        "benchmark": "evaluate_rank",
        "num_query": NUM_QUERY,
        "num_gallery": NUM_GALLERY,
        "feature_dim": args.dim,
        "evaluate_rank_standard_s": round(rank_s["standard"], 4),
        "evaluate_rank_trapezoid_s": round(rank_s["trapezoid"], 4),
        "per_query_loop_s": round(loop_s, 3),
        "speedup_vs_loop": round(loop_s / rank_s["standard"], 1),
        "loop_agrees": bool(agree),
        "distance_s": round(distance_s, 3),
        "distance_first_call_s": round(compile_and_run_s, 3),
        "mAP": round(standard["mAP"], 4),
        "rank1": round(float(standard["cmc"][0]), 4),
        "num_valid_queries": standard["num_valid_queries"],
        "device": f"{jax.default_backend()} ({jax.devices()[0].device_kind})",
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "numpy": np.__version__,
        "jax": jax.__version__,
    }
    common.write_result("evaluate_rank", record)
    print(
        f"evaluate_rank {NUM_QUERY}x{NUM_GALLERY}: {rank_s['standard']:.3f} s standard, "
        f"{rank_s['trapezoid']:.3f} s trapezoid; per-query loop {loop_s:.2f} s "
        f"({record['speedup_vs_loop']}x, agree={agree}); distances {distance_s:.3f} s "
        f"(first call {compile_and_run_s:.2f} s) on {record['device']}"
    )
    if not agree:
        raise SystemExit("The vectorised evaluate_rank disagrees with the per-query loop.")


if __name__ == "__main__":
    main()
