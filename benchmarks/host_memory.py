"""Page faults and time of a repeated convolution, with freed host memory kept or given back.

`vreid_jax/host_memory.py` keeps freed memory inside the process where JAX runs on the CPU. This
runs a convolution's forward and backward pass (`--shape`, NHWC, 3 x 3 kernel) `--calls` times
after two warm-ups, in a fresh process per setting (glibc binds threads to arenas at their first
allocation, so each setting needs its own process), and records for each call its minor page
faults (`getrusage`) and wall time, and the process's peak RSS. XLA:CPU's convolution kernels
allocate scratch memory on its worker threads on every call; above glibc's largest mmap threshold
(32 MiB) the default maps it afresh on every call. Kept, the heap grows until it holds the most
scratch the threads have used at once (a few calls, more on a busy machine), then its pages are
reused.

Run: python benchmarks/host_memory.py [--calls 40] [--settings false true] [--shape 8 512 128 8]
Writes benchmarks/results/host_memory.json and prints one line per setting.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

import common  # benchmarks/common.py (this folder is on sys.path when run as a script)

_PROGRAM = """
import json, resource, sys, time
from vreid_jax import host_memory
applied = host_memory.keep_freed_memory(sys.argv[1])
import jax, jax.numpy as jnp
calls, shape = int(sys.argv[2]), tuple(int(n) for n in sys.argv[3:])
def loss(x, w):
    dims = ("NHWC", "HWIO", "NHWC")
    y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dims)
    return jnp.sum(y * y)
step = jax.jit(jax.grad(loss, argnums=(0, 1)))
x, w = jnp.ones(shape), jnp.full((3, 3, shape[-1], shape[-1]), 0.01)
faults, seconds = [], []
for _ in range(2 + calls):
    before, start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
    jax.block_until_ready(step(x, w))
    seconds.append(time.perf_counter() - start)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({
    "applied": applied,
    "faults_per_call": faults[2:],
    "seconds_per_call": [round(s, 5) for s in seconds[2:]],
    "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
}))
"""


def run_setting(setting: str, calls: int, shape: list[int]) -> dict:
    """The child process's record for one `keep_host_memory` setting, with summaries."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, "-c", _PROGRAM, setting, str(calls), *map(str, shape)],
        cwd=common.REPO, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        sys.exit(f"keep_host_memory={setting} failed:\n{result.stderr[-4000:]}")
    record = json.loads(result.stdout.strip().splitlines()[-1])
    faults = record["faults_per_call"]
    return {
        **record,
        "faults_total": sum(faults),
        "faults_median": statistics.median(faults),
        "calls_with_faults_over_1000": sum(f > 1000 for f in faults),
        "seconds_median": round(statistics.median(record["seconds_per_call"]), 5),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--settings", nargs="+", default=["false", "true"])
    parser.add_argument("--shape", type=int, nargs=4, default=[8, 512, 128, 8])
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    runs = {s: run_setting(s, args.calls, args.shape) for s in args.settings}
    record = {
        "machine": common.machine(),
        "calls": args.calls,
        "shape": args.shape,
        "settings": runs,
    }
    path = common.write_result("host_memory", record, args.out or None)
    for setting, r in runs.items():
        print(
            f"keep_host_memory={setting} (applied: {r['applied']}): {r['faults_total']} faults "
            f"over {args.calls} calls (median {r['faults_median']}/call, "
            f"{r['calls_with_faults_over_1000']} calls > 1000), "
            f"median {1000 * r['seconds_median']:.1f} ms/call, peak RSS {r['peak_rss_mib']} MiB"
        )
    print(f"-> {path}")


if __name__ == "__main__":
    main()
