"""Helpers shared by the benchmark scripts: machine description, peak FLOP/s, configs, results.

The peak FLOP/s table and the CPU estimate live in `vreid_jax.hardware` (the preflight uses them
too); they are re-exported here under their old names.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
# This checkout's packages, not whichever one the environment installed (a git worktree).
sys.path.insert(0, str(REPO))

from vreid_jax import host_memory  # noqa: E402

# As the CLIs do, before JAX or TensorFlow start threads: every benchmark imports this module first.
# VREID_KEEP_HOST_MEMORY=false measures glibc's default behaviour instead (an A/B needs 2 processes).
HOST_MEMORY_KEPT = host_memory.keep_freed_memory(os.environ.get("VREID_KEEP_HOST_MEMORY", "auto"))

import data_prep  # noqa: E402
from vreid_jax import files  # noqa: E402

data_prep.quiet_tensorflow_logs()  # Before any benchmark imports TensorFlow.
from vreid_jax.hardware import (  # noqa: E402, F401  (re-exported for the scripts)
    CPU_FP32_FLOPS_PER_CYCLE,
    PEAK_FLOPS,
    cpu_flags,
    cpu_name,
    cpu_peak_flops,
    peak_flops,
)

RESULTS = REPO / "benchmarks" / "results"


def machine() -> dict:
    """What the numbers were measured on: devices, CPU, cores, load, library versions."""
    import jax  # noqa: PLC0415  (callers set XLA_FLAGS before jax is first imported)

    devices = jax.devices()
    return {
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "num_devices": len(devices),
        "cpu": cpu_name(),
        "cores": len(os.sched_getaffinity(0)),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "jax": jax.__version__,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "host_memory_kept": HOST_MEMORY_KEPT,  # vreid_jax/host_memory.py
    }


def default_config():
    """configs/default.py, loaded by path so a script runs from any folder."""
    spec = importlib.util.spec_from_file_location("default_config", REPO / "configs" / "default.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def model_config(args):
    """`default_config()` with the model flags the scripts share: model, dtype, stage_sizes (a
    comma-separated string; empty = the depth's) and width_channels; for TF-CLIP, whose training
    kind takes only its own optimizer and schedule, its MARS recipe (no pretrained file) with
    `args.vit_size` ('WIDTH,LAYERS,HEADS,OUTPUT_DIM'; empty = ViT-B/16) when the script has it."""
    if args.model == "tfclip":
        from configs import recipe  # noqa: PLC0415  (the repository root is on sys.path)

        config = recipe.make("tfclip", "mars", None)
        config.model.update(dtype=args.dtype, pretrained="")
        size = getattr(args, "vit_size", "")
        if size:
            width, layers, heads, output_dim = (int(n) for n in size.split(","))
            config.model.tfclip.update(
                width=width, layers=layers, heads=heads, output_dim=output_dim
            )
        return config
    config = default_config()
    config.model.update(
        name=args.model,
        dtype=args.dtype,
        stage_sizes=tuple(int(n) for n in args.stage_sizes.split(",") if n),
        width=args.width_channels,
    )
    return config


def write_result(name: str, record: dict, out: str | None = None) -> pathlib.Path:
    """Writes `record` atomically to `out` or benchmarks/results/<name>.json; returns the path."""
    path = pathlib.Path(out) if out else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    files.write_json_atomic(str(path), record)
    return path


def merge_result(name: str, key: str, record: dict, out: str = "") -> pathlib.Path:
    """Stores `record` under `key` in the JSON dict at `out` or results/<name>.json (atomically),
    keeping the other runs' entries; returns the path."""
    path = pathlib.Path(out) if out else RESULTS / f"{name}.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    results[key] = record
    return write_result(name, dict(sorted(results.items())), str(path))


def pin_cores(cores: int) -> list[int]:
    """Pins this process (and every thread it starts later) to its first `cores` allowed cores."""
    allowed = sorted(os.sched_getaffinity(0))
    if cores > len(allowed):
        raise SystemExit(f"--cores {cores}: only {len(allowed)} cores are available.")
    os.sched_setaffinity(0, allowed[:cores])
    return allowed[:cores]


def timed(fn, steps: int) -> list[float]:
    """Wall-clock seconds of `steps` calls of `fn` (which must block until its work is done)."""
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


class ForeignLoad:
    """The share of the pinned cores' time taken by anything but this process while a block ran.

    From /proc/stat: busy time of `cores` (user, nice, system, irq, softirq and the hypervisor's
    steal) minus this process's own CPU time, over the cores' total time. Needs this process
    pinned to `cores` (`pin_cores`). Resolution: the kernel's clock tick (10 ms), so blocks of a
    second or more give a meaningful share; 0 where /proc/stat is unreadable.
    """

    def __init__(self, cores):
        self.cores = {f"cpu{c}" for c in cores}
        self.tick = os.sysconf("SC_CLK_TCK")

    def _read(self) -> tuple[float, float, float]:
        busy = total = 0
        try:
            with open("/proc/stat") as f:
                for line in f:
                    name, *values = line.split()
                    if name in self.cores:
                        v = [int(x) for x in values[:8]]
                        busy += v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
                        total += sum(v)
        except OSError:
            pass
        own = os.times()
        return busy, total, (own.user + own.system) * self.tick

    def __enter__(self):
        self._start = self._read()
        return self

    def __exit__(self, *exc):
        busy, total, own = (b - a for a, b in zip(self._start, self._read(), strict=True))
        self.share = max(0.0, busy - own) / total if total > 0 else 0.0


def alternate(
    blocks: dict, rounds: int, steps: int, cores, pause: float = 0.2, max_foreign: float = 0.1
) -> dict:
    """Runs every callable of `blocks` (name -> fn, each blocking until done) `steps` times per
    round, in order, for `rounds` rounds, and returns the times and which rounds were contended.

    Before each block the process sleeps `pause` seconds, so the other framework's worker threads
    (XLA's pool, torch's OpenMP team, which spin for a while after their work) are parked and idle
    while this one is timed. A round counts as contended when, during any of its blocks, other
    processes took more than `max_foreign` of the pinned cores (`ForeignLoad`); summaries use the
    uncontended rounds (all rounds, flagged, when every round was contended).
    """
    times = {name: [] for name in blocks}
    foreign = []
    for _ in range(rounds):
        shares = []
        for name, fn in blocks.items():
            time.sleep(pause)
            with ForeignLoad(cores) as load:
                times[name].append(timed(fn, steps))
            shares.append(load.share)
        foreign.append(round(max(shares), 3))
    kept = [i for i, share in enumerate(foreign) if share <= max_foreign] or list(range(rounds))
    return {
        "times": times,
        "foreign_share_per_round": foreign,
        "kept_rounds": kept,
        "all_rounds_contended": all(share > max_foreign for share in foreign),
    }


def summarise(run: dict, name: str) -> dict:
    """Median, min and max seconds of block `name` of `alternate`'s result, over its kept rounds."""
    kept = [t for i in run["kept_rounds"] for t in run["times"][name][i]]
    return {
        "median": round(statistics.median(kept), 4),
        "min": round(min(kept), 4),
        "max": round(max(kept), 4),
        "n": len(kept),
        "all": [round(t, 4) for steps in run["times"][name] for t in steps],
    }


def first_calls(jax_eval, torch_eval, jax_step, torch_step) -> dict:
    """Each framework's evaluation and first train step once (JAX compiles), compared: the same
    model on both sides gives the same features and the same first loss. Each callable blocks and
    returns the features (array or CPU tensor) or the loss (float)."""
    import numpy as np  # noqa: PLC0415

    start = time.perf_counter()
    ours, theirs = np.asarray(jax_eval()), np.asarray(torch_eval())
    eval_diff = float(np.abs(ours - theirs).max() / np.abs(theirs).max())
    first_loss = {"jax": jax_step(), "torch": torch_step()}
    loss_diff = abs(first_loss["jax"] - first_loss["torch"]) / abs(first_loss["torch"])
    print(
        f"same model: eval features max|diff|/max|value| {eval_diff:.1e}, first losses "
        f"{first_loss} (relative difference {loss_diff:.1e})"
    )
    return {
        "eval_features_relative_diff": eval_diff,
        "first_loss": first_loss,
        "first_loss_relative_diff": loss_diff,
        "first_calls_s_both": round(time.perf_counter() - start, 2),
    }


def run_facts(run: dict, checks: dict, compiled: dict, steps_per_round: int) -> dict:
    """What every JAX-vs-torch record holds besides its times: torch's version and threads, the
    rounds and which were kept, `first_calls`' checks, each jitted function's compilations (a
    name -> `jax.jit` object dict) and the machine."""
    import torch  # noqa: PLC0415

    return {
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "rounds": len(run["foreign_share_per_round"]),
        "steps_per_round": steps_per_round,
        "foreign_share_per_round": run["foreign_share_per_round"],
        "kept_rounds": run["kept_rounds"],
        "all_rounds_contended": run["all_rounds_contended"],
        **checks,
        "jax_compilations": {k: f._cache_size() for k, f in compiled.items()},
        "machine": machine(),
    }


def framework_records(run: dict, frames_per_call: int, base: dict) -> dict:
    """Mode ('train', 'eval') -> `base` plus the JAX and torch times of `alternate`'s blocks
    'jax/<mode>' and 'torch/<mode>', their ratio (torch / JAX: >= 1 when JAX is as fast) and
    frames/s; modes that were not run are left out."""
    records = {}
    for mode in ("train", "eval"):
        if f"jax/{mode}" not in run["times"]:
            continue
        jax_s, torch_s = summarise(run, f"jax/{mode}"), summarise(run, f"torch/{mode}")
        records[mode] = {
            **base,
            "mode": mode,
            "jax_s": jax_s,
            "torch_s": torch_s,
            "ratio_torch_over_jax": round(torch_s["median"] / jax_s["median"], 3),
            "ratio_of_min_times": round(torch_s["min"] / jax_s["min"], 3),
            "jax_frames_per_s": round(frames_per_call / jax_s["median"], 2),
            "torch_frames_per_s": round(frames_per_call / torch_s["median"], 2),
        }
    return records


def framework_summary(name: str, key: str, record: dict, run: dict, written) -> str:
    """The one-line summary of a `framework_records` record."""
    jax_s, torch_s = record["jax_s"], record["torch_s"]
    return (
        f"{name} {key}: JAX {jax_s['median']:.4f} s [{jax_s['min']:.4f}-{jax_s['max']:.4f}], "
        f"torch {torch_s['median']:.4f} s [{torch_s['min']:.4f}-{torch_s['max']:.4f}], ratio "
        f"torch/JAX {record['ratio_torch_over_jax']} (of the fastest "
        f"{record['ratio_of_min_times']}), {jax_s['n']} calls each from "
        f"{len(run['kept_rounds'])}/{len(run['foreign_share_per_round'])} rounds; frames/s JAX "
        f"{record['jax_frames_per_s']}, torch {record['torch_frames_per_s']} -> {written}"
    )
