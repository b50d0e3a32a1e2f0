"""Preflight's host-RAM prediction against the measured peak RSS, on a CPU, under an RSS guard.

For each recipe and each `--num_instances` K, runs the users' command

  python -m vreid_jax.main --config configs/<recipe>.py --config.mode=preflight \
      --config.input.num_ids_per_batch=P --config.input.num_instances=K \
      [--config.input.height=H ...]

in a process group of its own, and reads its `preflight.json`: the predicted peak RSS of the step,
and (where the step was predicted to fit and was run) the process's measured peak RSS after the
steps, with the RSS while compiling and the verdict. Meanwhile a watchdog polls the group's RSS
every 0.1 s and kills the group past `--max_rss_gib` (default 12): on a machine shared with others,
a step that does not fit must not reach the kernel's OOM killer, which may pick another process.
The watchdog's own peak is recorded too (it includes the input-pipeline timing after the steps).

Run (the table in benchmarks/README.md, "Preflight against measurements"):
  python benchmarks/preflight.py --recipes nl3d_mars gltr_mars --num_instances 2 4 \
      --height 128 --width 64 [--keep_host_memory false]
  python benchmarks/preflight.py --recipes nl3d_mars gltr_mars --num_instances 4  # full size: refused
Smoke run (tiny network, 64x32 frames; a minute or two): python benchmarks/preflight.py --smoke
Adds each run to benchmarks/results/preflight.json, keyed by recipe and shape, with the machine (a
smoke run: a temporary file, or --out), and prints one line per run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import common

from configs import tiny

# Size keys of the smoke run (a width-8, one-block-per-stage network on 64x32 frames).
SMOKE = {**tiny.RECIPE_SIZE_KEYS, "preflight.input_seconds": 1.0}
GIB = 2**30


def group_rss(pgid: int) -> int:
    """The summed RSS of the processes in process group `pgid` (bytes; 0 once they are gone)."""
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.getpgid(int(pid)) != pgid:
                continue
            with open(f"/proc/{pid}/status") as f:
                total += next(
                    int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:")
                )
        except (OSError, StopIteration):  # Gone meanwhile, or a kernel thread.
            continue
    return total


def run_guarded(command: list[str], max_rss: int, env: dict) -> dict:
    """Runs `command` in a new process group, killing the group if its RSS passes `max_rss` bytes.

    Returns `{"returncode", "stderr", "wall_s", "peak_rss", "killed"}`."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            command, cwd=common.REPO, stdout=subprocess.DEVNULL, stderr=err, env=env,
            start_new_session=True,
        )  # fmt: skip
        peak, killed = 0, False
        while proc.poll() is None:
            rss = group_rss(proc.pid)
            peak = max(peak, rss)
            if rss > max_rss:
                os.killpg(proc.pid, signal.SIGKILL)
                killed = True
                break
            time.sleep(0.1)
        proc.wait()
        err.seek(0)
        stderr = err.read()
    wall = time.perf_counter() - start
    return {"returncode": proc.returncode, "stderr": stderr, "wall_s": wall, "peak_rss": peak,
            "killed": killed}  # fmt: skip


def compare(recipe: str, overrides: dict, max_rss: int, env: dict) -> dict:
    """One preflight run of `recipe` with `overrides`: predicted against measured peak RSS."""
    with tempfile.TemporaryDirectory() as workdir:
        flags = [f"--config.{k}={v}".replace(" ", "") for k, v in overrides.items()]
        command = [sys.executable, "-m", "vreid_jax.main", "--config", f"configs/{recipe}.py"]
        command += ["--workdir", workdir, "--config.mode=preflight", *flags]
        run = run_guarded(command, max_rss, env)
        path = os.path.join(workdir, "preflight.json")
        record = None
        if os.path.exists(path):
            with open(path) as f:
                record = json.load(f)
    result = {
        "command": " ".join(
            ["python", *command[1:5], "--workdir", "W", "--config.mode=preflight", *flags]
        ),
        "wall_s": round(run["wall_s"], 1),
        "watchdog_peak_rss_gib": round(run["peak_rss"] / GIB, 2),
        "killed_by_watchdog": run["killed"],
        "returncode": run["returncode"],
    }  # fmt: skip
    if record is None:
        result["stderr_tail"] = run["stderr"][-3000:]
        return result
    host, step = record["memory"]["host"], record["memory"]["train_step"]
    gib = lambda b: None if b is None else round(b / GIB, 2)
    result.update(
        verdict=record["verdict"],
        clips=record["recipe"]["global_batch_clips"],
        compiled_total_gib=gib(step["total"]),
        step_allocations_gib=gib(step["step_allocations"]),
        needed_gib=gib(step["needed"]),
        capacity_gib=gib(record["memory"]["capacity_bytes"]),
        rss_at_start_gib=gib(host["rss_at_start"]),
        compile_peak_rss_gib=gib(host["compile_peak_rss"]),
        rss_before_steps_gib=gib(host["rss_before_steps"]),
        predicted_peak_rss_gib=gib(host["predicted_peak_rss"]),
        predicted_peak_rss_one_copy_gib=gib(host["predicted_peak_rss_one_copy"]),
        run_num_ids_per_batch=host["timed_num_ids_per_batch"],
        predicted_peak_rss_run_gib=gib(host["predicted_peak_rss_timed"]),
        measured_peak_rss_gib=gib(host["measured_peak_rss"]),
        measured_over_predicted=host["measured_over_predicted"],
        peak_rss_at_end_gib=gib(host["peak_rss_at_end"]),
        step_time_s=record["step_time_s"],
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=["nl3d_mars", "gltr_mars"])
    parser.add_argument("--num_ids", type=int, default=2, help="P (config.input.num_ids_per_batch)")
    parser.add_argument(
        "--num_instances", type=int, nargs="+", default=[4], help="K values: one run each"
    )
    parser.add_argument("--height", type=int, default=0, help="Frame height (0: the recipe's).")
    parser.add_argument("--width", type=int, default=0, help="Frame width (0: the recipe's).")
    parser.add_argument("--steps", type=int, default=2, help="Timed steps (after one warm-up).")
    parser.add_argument(
        "--keep_host_memory", default="auto", help="config.keep_host_memory: auto, true or false"
    )
    parser.add_argument("--max_rss_gib", type=float, default=12.0, help="The watchdog's limit.")
    parser.add_argument("--smoke", action="store_true", help="Tiny network and frames.")
    parser.add_argument("--out", default="", help="Result JSON (default: results/preflight.json).")
    args = parser.parse_args()

    # Preflight reads no weights file; the recipes' ImageNet file name is cleared all the same, so
    # that a run never depends on one (as in the command).
    sizes = {"model.pretrained": "''"}
    if args.smoke:
        sizes.update(SMOKE)
    sizes.update({"input.height": args.height} if args.height else {})
    sizes.update({"input.width": args.width} if args.width else {})
    sizes["preflight.timed_steps"] = args.steps
    sizes["keep_host_memory"] = args.keep_host_memory
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0"}
    out = args.out
    if args.smoke and not out:  # A smoke run never replaces the full-size record.
        out = os.path.join(tempfile.gettempdir(), "preflight_smoke.json")
    common.merge_result("preflight", "machine", common.machine(), out)
    for recipe in args.recipes:
        for k in args.num_instances:
            overrides = {**sizes, "input.num_ids_per_batch": args.num_ids, "input.num_instances": k}
            result = compare(recipe, overrides, args.max_rss_gib * GIB, env)
            shape = "recipe's"
            if args.height or args.width:
                shape = f"{args.height or 'recipe'}x{args.width or 'recipe'}"
            key = f"{recipe} P={args.num_ids} K={k} frames={shape} keep={args.keep_host_memory}"
            key += " smoke" if args.smoke else ""
            print(json.dumps({"run": key, **result}), flush=True)
            path = common.merge_result("preflight", key, result, out)
    print("->", path)


if __name__ == "__main__":
    main()
