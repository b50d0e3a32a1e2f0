"""Preflight predictions against measurements: per-device memory and step time, full size on a CPU.

For each recipe (default `nl3d_mars` and `gltr_mars`):
1. runs `python -m vreid_jax.main --config configs/<recipe>.py --config.mode=preflight` (the
   users' command; its wall time is recorded) and reads its `preflight.json`;
2. in a fresh process, compiles the same train step at the P the preflight timed (the configured
   one, or the largest that fits), creates the state and a random batch, resets the process's
   peak RSS (`/proc/self/clear_refs`) and runs a warm-up step and `--steps` timed steps; then
   compares the peak RSS growth with the predicted memory, and the measured median step time
   with the preflight's (scaled back to the configured P when the preflight extrapolated).

On a CPU the "device" is the host: the predicted per-device total is compared with the growth of
the process's RSS from before the state was created (arguments and step), and the predicted step
allocations (outputs not aliased to donated arguments, plus temporaries) with the growth during
the steps alone. XLA:CPU allocates temporaries per call, so the RSS peak includes them.

Run: python benchmarks/preflight.py [--recipes nl3d_mars gltr_mars] [--steps 3]
Smoke run (tiny network, 64x32 frames; a few minutes): python benchmarks/preflight.py --smoke
Writes benchmarks/results/preflight.json (a smoke run: a temporary file, or --out) and prints one
line per recipe.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import common

from configs import tiny

# Size keys of the smoke run (a width-8, one-block-per-stage network on 64x32 frames).
SMOKE = {**tiny.RECIPE_SIZE_KEYS, "preflight.input_seconds": 1.0}


def _status_bytes(field: str) -> int:
    """A `VmRSS`/`VmHWM` line of /proc/self/status, in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def measure(recipe: str, overrides: dict, num_ids: int, num_classes: int, steps: int) -> dict:
    """In this (fresh) process: RSS growth and median time of the recipe's train step at P =
    `num_ids`, compiled ahead of time so that compilation is out of both measurements."""
    import gc  # noqa: PLC0415
    import importlib  # noqa: PLC0415
    import statistics  # noqa: PLC0415

    import jax  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    from vreid_jax import parallel, preflight, train  # noqa: PLC0415
    from vreid_jax import state as state_lib  # noqa: PLC0415

    sys.path.insert(0, str(common.REPO))
    config = importlib.import_module(f"configs.{recipe}").get_config()
    # JSON carried the tuples as lists.
    config.update_from_flattened_dict(
        {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    )
    config.input.num_ids_per_batch = num_ids
    cfg = config.input
    mesh = parallel.make_mesh()
    model, tx, lr_fn = train.model_and_optimizer(config, num_classes, 1000)
    init = state_lib.init_clips(cfg)
    abstract, shardings = state_lib.abstract_train_state(model, tx, init, mesh=mesh)
    rows = num_ids * cfg.num_instances
    sharding = parallel.data_sharding(mesh)
    batch_spec = {
        "clips": jax.ShapeDtypeStruct(
            (rows, cfg.clip_len, cfg.height, cfg.width, 3), np.uint8, sharding=sharding
        ),
        "labels": jax.ShapeDtypeStruct((rows,), np.int32, sharding=sharding),
        "pids": jax.ShapeDtypeStruct((rows,), np.int32, sharding=sharding),
    }
    step_fn = train.compile_train_step(model, tx, lr_fn, config, shardings, mesh)
    compiled = step_fn.lower(abstract, batch_spec).compile()
    gc.collect()
    before_state = _status_bytes("VmRSS")
    state, _ = state_lib.create_train_state(model, tx, init, seed=0, mesh=mesh)
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(num_ids) % num_classes, cfg.num_instances).astype(np.int32)
    batch = parallel.host_to_global(
        {
            "clips": rng.integers(0, 256, batch_spec["clips"].shape, dtype=np.uint8),
            "labels": labels,
            "pids": labels + 1,
        },
        mesh,
    )
    jax.block_until_ready((state, batch))
    gc.collect()
    _reset_peak_rss()
    before_steps = _status_bytes("VmRSS")
    times, (state, metrics) = preflight.time_steps(compiled, state, batch, steps)
    peak = _status_bytes("VmHWM")
    return {
        "num_ids_per_batch": num_ids,
        "step_s_median": statistics.median(times),
        "step_s_all": times,
        "rss_growth_from_before_state_bytes": peak - before_state,
        "rss_growth_during_steps_bytes": peak - before_steps,
        "final_loss": float(metrics["loss"]),
    }


def _run(args: list[str], env: dict) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=common.REPO, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{proc.stderr[-4000:]}")
    return proc, time.perf_counter() - start


def compare(recipe: str, overrides: dict, steps: int, env: dict) -> dict:
    """Runs the preflight of `recipe`, then the measurement in a fresh process; both records."""
    with tempfile.TemporaryDirectory() as workdir:
        flags = [f"--config.{k}={v}".replace(" ", "") for k, v in overrides.items()]
        command = [sys.executable, "-m", "vreid_jax.main", "--config", f"configs/{recipe}.py"]
        command += ["--workdir", workdir, "--config.mode=preflight", *flags]
        command.append(f"--config.preflight.timed_steps={steps}")
        proc, wall = _run(command, env)
        with open(os.path.join(workdir, "preflight.json")) as f:
            predicted = json.load(f)
    verdict = next(
        (line for line in proc.stderr.splitlines() if "Preflight verdict" in line), "(none)"
    )
    num_ids = predicted["timed_num_ids_per_batch"]
    if num_ids is None:
        return {"preflight": predicted, "preflight_wall_s": wall, "measured": None}
    child = [sys.executable, __file__, "--measure", recipe, "--num_ids", str(num_ids)]
    child += ["--num_classes", str(predicted["recipe"]["num_classes"]), "--steps", str(steps)]
    child += ["--overrides", json.dumps(overrides)]
    measured = json.loads(_run(child, env)[0].stdout.strip().splitlines()[-1])

    train_memory = predicted["memory"]["train_step"]
    at = train_memory.get("at_max_num_ids_per_batch", train_memory)
    step_allocations = at["outputs"] - at["aliased"] + at["temporaries"]
    scale = predicted["recipe"]["num_ids_per_batch"] / num_ids
    return {
        "preflight_wall_s": round(wall, 1),
        "preflight_verdict": verdict.split("Preflight verdict: ", 1)[-1],
        "preflight": predicted,
        "measured": measured,
        "memory_predicted_total_bytes": at["total"],
        "memory_measured_rss_growth_bytes": measured["rss_growth_from_before_state_bytes"],
        "memory_total_ratio": round(
            measured["rss_growth_from_before_state_bytes"] / at["total"], 3
        ),
        "step_allocations_predicted_bytes": step_allocations,
        "step_allocations_measured_bytes": measured["rss_growth_during_steps_bytes"],
        "step_time_predicted_s": predicted["step_time_s"],
        "step_time_measured_s": measured["step_s_median"] * scale,
        "step_time_ratio": round(predicted["step_time_s"] / (measured["step_s_median"] * scale), 3),
        "step_time_extrapolated": predicted["step_time_extrapolated"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=["nl3d_mars", "gltr_mars"])
    parser.add_argument("--steps", type=int, default=3, help="Timed steps (after one warm-up).")
    parser.add_argument("--smoke", action="store_true", help="Tiny network and frames.")
    parser.add_argument("--out", default="", help="Result JSON (default: results/preflight.json).")
    parser.add_argument("--measure", default="", help=argparse.SUPPRESS)  # The child process.
    parser.add_argument("--num_ids", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--num_classes", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--overrides", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        overrides = json.loads(args.overrides)
        record = measure(args.measure, overrides, args.num_ids, args.num_classes, args.steps)
        print(json.dumps(record))
        return

    overrides = SMOKE if args.smoke else {}
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0"}
    results = {"machine": common.machine(), "smoke": args.smoke, "steps": args.steps}
    for recipe in args.recipes:
        result = compare(recipe, overrides, args.steps, env)
        results[recipe] = result
        if result["measured"] is None:
            print(f"preflight {recipe}: nothing fits; {result['preflight']['verdict']}")
            continue
        gib = 2**30
        print(
            f"preflight {recipe} ({result['preflight_wall_s']:.0f} s): memory predicted "
            f"{result['memory_predicted_total_bytes'] / gib:.2f} GiB, RSS growth "
            f"{result['memory_measured_rss_growth_bytes'] / gib:.2f} GiB; step predicted "
            f"{result['step_time_predicted_s']:.3f} s, measured {result['step_time_measured_s']:.3f}"
            f" s{' (extrapolated)' if result['step_time_extrapolated'] else ''}; "
            f"{result['preflight_verdict']}"
        )
    out = args.out
    if args.smoke and not out:  # A smoke run never replaces the full-size record.
        out = os.path.join(tempfile.gettempdir(), "preflight_smoke.json")
    print("->", common.write_result("preflight", results, out))


if __name__ == "__main__":
    main()
