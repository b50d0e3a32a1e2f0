"""Search latency: exact chunked search (`vreid_jax.deploy.tracks.gallery`, JAX on the default device)
against faiss's exact flat index, for galleries of 10^4 to 10^6 tracklets.

Features are random (Gaussian) at the models' dimensions: 2,048 (NL3D) and 512 (GLTR: 128 x 4),
compared with normalised Euclidean distances (the default evaluation setting). For each gallery
size: the time to prepare the backend (faiss: normalise and add; exact: nothing), then the median
latency of `--queries` queries searched together and of one query alone (top 10), after a warm-up
call (the exact backend compiles once per shape). The two backends' neighbours are compared.

Run: python benchmarks/search.py [--dims 512 2048] [--sizes 10000 100000 1000000] [--queries 16]
Writes benchmarks/results/search.json (one entry per dim x size) and prints a line per entry.
"""

from __future__ import annotations

import argparse
import statistics
import time

import common  # benchmarks/common.py (this folder is on sys.path when run as a script)
import numpy as np

from vreid_jax.deploy.tracks import gallery


def _median_seconds(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(dim, size, num_queries, repeats, k=10):
    rng = np.random.default_rng(0)
    gf = rng.standard_normal((size, dim), dtype=np.float32)
    qf = gf[rng.choice(size, num_queries, replace=False)] + 0.5 * rng.standard_normal(
        (num_queries, dim), dtype=np.float32
    )
    record = {"dim": dim, "gallery": size, "queries": num_queries, "top_k": k}
    exact = lambda q: gallery.search(q, gf, k, "euclidean", True, "exact")
    start = time.perf_counter()
    d_exact, i_exact = exact(qf)  # Warm-up: compiles the distance block for this shape.
    record["exact_first_call_s"] = time.perf_counter() - start
    exact(qf[:1])
    record["exact_batch_s"] = _median_seconds(lambda: exact(qf), repeats)
    record["exact_one_query_s"] = _median_seconds(lambda: exact(qf[:1]), repeats)
    start = time.perf_counter()
    index = gallery.FaissIndex(gf, "euclidean", True)
    record["faiss_build_s"] = time.perf_counter() - start
    d_faiss, i_faiss = index.search(qf, k)
    record["faiss_batch_s"] = _median_seconds(lambda: index.search(qf, k), repeats)
    record["faiss_one_query_s"] = _median_seconds(lambda: index.search(qf[:1], k), repeats)
    record["same_neighbours"] = bool(np.array_equal(i_exact, i_faiss))
    record["max_distance_difference"] = float(np.abs(d_exact - d_faiss).max())
    return record


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    machine = common.machine()
    for dim in args.dims:
        for size in args.sizes:
            record = run(dim, size, args.queries, args.repeats)
            record["machine"] = machine
            common.merge_result("search", f"d{dim}_n{size}", record, args.out)
            print(
                f"D={dim} N={size}: exact {record['exact_batch_s'] * 1e3:.0f} ms / "
                f"{args.queries} queries ({record['exact_one_query_s'] * 1e3:.0f} ms for one), "
                f"faiss {record['faiss_batch_s'] * 1e3:.0f} ms "
                f"({record['faiss_one_query_s'] * 1e3:.0f} ms for one; build "
                f"{record['faiss_build_s']:.1f} s); same neighbours: {record['same_neighbours']}",
                flush=True,
            )


if __name__ == "__main__":
    main()
