"""Helpers shared by the benchmark scripts: machine description, peak FLOP/s, configs, results.

The peak FLOP/s table and the CPU estimate live in `vreid_jax.hardware` (the preflight uses them
too); they are re-exported here under their old names.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib

import data_prep  # noqa: F401  (quiets TensorFlow's start-up log: every benchmark imports us first)
from vreid_jax import files
from vreid_jax.hardware import (  # noqa: F401  (re-exported for the scripts)
    CPU_FP32_FLOPS_PER_CYCLE,
    PEAK_FLOPS,
    cpu_flags,
    cpu_name,
    cpu_peak_flops,
    peak_flops,
)

REPO = pathlib.Path(__file__).resolve().parents[1]
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
    }


def default_config():
    """configs/default.py, loaded by path so a script runs from any folder."""
    spec = importlib.util.spec_from_file_location("default_config", REPO / "configs" / "default.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def model_config(args):
    """`default_config()` with the model flags the scripts share: model, dtype, stage_sizes (a
    comma-separated string; empty = the depth's) and width_channels."""
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
