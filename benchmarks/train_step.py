"""Train-step throughput of NL3D, GLTR, TF-CLIP: clips/s, frames/s, XLA FLOPs, FLOP/s and MFU.

Times the project's own compiled step (`vreid_jax.training.loop.compile_train_step`: forward, the
model's training loss (NL3D, GLTR: label-smoothed cross-entropy + batch-hard triplet; TF-CLIP: its
own, with a zero CLIP-Memory and random cameras), backward, the model's optimizer) on a
device-resident random batch, so the input pipeline is out of the measurement
(`benchmarks/input_pipeline.py` measures it; this script puts the two side by side). FLOPs per step
come from XLA's cost analysis of the lowered step (a multiply-add counts 2). MFU = achieved FLOP/s /
peak FLOP/s of the devices used: the vendor figure for known accelerators (`common.PEAK_FLOPS`), an
estimate for CPUs. The step must compile exactly once.

Run: python benchmarks/train_step.py --model nl3d --batch 2 [--dtype bfloat16] [--devices 1]
     python benchmarks/train_step.py --model gltr --batch 4 --clip_len 8
     python benchmarks/train_step.py --model tfclip --batch 4 --clip_len 8 [--vit_size 64,2,4,64]
Small smoke run: --batch 1 --height 64 --width 32 --steps 2 --out /tmp/x.json
Adds one entry to benchmarks/results/train_step.json and prints a one-line summary.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import time

import common


def measure(config, *, num_classes: int, num_devices: int, steps: int, warmup: int) -> dict:
    """Times `steps` train steps of `config.model` on the first `num_devices` devices.

    The global batch is `config.input.num_ids_per_batch * num_instances` clips of
    `clip_len x height x width`. Returns the timing record (seconds are medians over steps).
    """
    import jax  # noqa: PLC0415  (imported after the caller set XLA_FLAGS)
    import numpy as np  # noqa: PLC0415

    from vreid_jax import parallel  # noqa: PLC0415
    from vreid_jax.models import registry  # noqa: PLC0415
    from vreid_jax.training import loop, preflight
    from vreid_jax.training import state as state_lib  # noqa: PLC0415

    cfg = config.input
    batch_size = cfg.num_ids_per_batch * cfg.num_instances
    mesh = parallel.make_mesh(jax.devices()[:num_devices])
    model, tx, lr_fn = loop.model_and_optimizer(config, num_classes, steps_per_epoch=1000)
    state, shardings = state_lib.create_train_state(
        model, tx, state_lib.init_clips(config.input), seed=0, mesh=mesh
    )
    step_fn = loop.compile_train_step(model, tx, lr_fn, config, shardings, mesh)

    rng = np.random.default_rng(0)
    shape = (batch_size, cfg.clip_len, cfg.height, cfg.width, 3)
    host_batch = {
        "clips": rng.integers(0, 256, shape, dtype=np.uint8),
        "labels": np.repeat(np.arange(cfg.num_ids_per_batch), cfg.num_instances).astype(np.int32),
    }
    if registry.spec(config.model.name).takes_cameras:
        host_batch["cameras"] = rng.integers(0, config.model.tfclip.num_cameras, batch_size)
        host_batch["cameras"] = host_batch["cameras"].astype(np.int32)
    batch = parallel.host_to_global(host_batch, mesh)
    compiled = step_fn.lower(state, batch).compile()
    cost = compiled.cost_analysis()
    flops = float((cost[0] if isinstance(cost, list | tuple) else cost)["flops"])
    memory = compiled.memory_analysis()

    start = time.perf_counter()
    state, metrics = step_fn(state, batch)
    jax.block_until_ready(metrics)
    first_step_s = time.perf_counter() - start
    times, _ = preflight.time_steps(step_fn, state, batch, steps, warmup)
    step_s = statistics.median(times)
    return {
        **peak_memory(memory),
        "batch_clips": batch_size,
        "clip": list(shape[1:]),
        "num_devices": num_devices,
        "step_s_median": round(step_s, 4),
        "step_s_min": round(min(times), 4),
        "step_s_all": [round(t, 4) for t in times],
        "clips_per_s": round(batch_size / step_s, 3),
        "frames_per_s": round(batch_size * cfg.clip_len / step_s, 2),
        "flops_per_step": flops,
        "flops_per_clip": flops / batch_size,
        "achieved_flops_per_s": flops / step_s,
        "first_step_s": round(first_step_s, 2),  # Compilation included.
        "compilations": step_fn._cache_size(),
        "final_loss": float(metrics["loss"]),
    }


def peak_memory(memory) -> dict:
    """The step's memory per device: XLA's compile-time figure (arguments + outputs - aliased +
    temporaries) and the measured peak, the device's own counter on GPU/TPU, the process's peak
    resident memory on a CPU (which includes the Python process itself)."""
    import resource  # noqa: PLC0415

    import jax  # noqa: PLC0415

    compiled_bytes = None
    if memory is not None:
        compiled_bytes = (
            memory.argument_size_in_bytes
            + memory.output_size_in_bytes
            - memory.alias_size_in_bytes
            + memory.temp_size_in_bytes
        )
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        measured, source = stats["peak_bytes_in_use"], "device peak_bytes_in_use"
    else:
        measured = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        source = "process peak RSS (host)"
    return {
        "compiled_memory_bytes": compiled_bytes,
        "peak_memory_bytes": measured,
        "peak_memory_source": source,
    }


def efficiency(record: dict, dtype: str) -> dict:
    """Peak FLOP/s of the devices used and the model FLOPs utilisation (MFU)."""
    import jax  # noqa: PLC0415

    kind = jax.devices()[0].device_kind
    peak = common.peak_flops(kind, dtype)
    source = "vendor dense peak per device"
    if peak is not None:
        peak *= record["num_devices"]
    elif jax.default_backend() == "cpu":
        # Fake CPU devices share the process's cores: the hardware limit is that of the cores.
        import os  # noqa: PLC0415

        peak = common.cpu_peak_flops(len(os.sched_getaffinity(0)), dtype)
        source = (
            f"estimate: cores x max clock x {common.CPU_FP32_FLOPS_PER_CYCLE} float32 FLOPs/cycle"
            + (" x 2 (AVX512-BF16)" if dtype == "bfloat16" and peak else "")
        )
    if peak is None:
        return {"peak_flops_per_s": None, "mfu": None, "peak_source": f"unknown device {kind!r}"}
    return {
        "peak_flops_per_s": peak,
        "mfu": round(record["achieved_flops_per_s"] / peak, 4),
        "peak_source": source,
    }


def input_comparison(record: dict, path: str = "") -> dict | None:
    """Input-pipeline cores needed to feed this step, from `path` (default:
    benchmarks/results/input_pipeline.json)."""
    path = pathlib.Path(path) if path else common.RESULTS / "input_pipeline.json"
    if not path.exists():
        return None
    pipeline = json.loads(path.read_text())
    if pipeline["clip"] != record["clip"]:
        return None  # Measured at another clip size: not comparable.
    per_core = pipeline["train_clips_per_cpu_sec"]
    return {
        "input_clips_per_s_per_core": per_core,
        "input_cores_needed": round(record["clips_per_s"] / per_core, 3),
    }


def build_config(args, batch: int):
    """configs/default.py for the command line's model and clip size, with a global batch of `batch`.

    `args` holds the flags train_step.py and scaling.py share: model, dtype, stage_sizes,
    width_channels, clip_len, height and width.
    """
    config = common.model_config(args)
    config.input.update(clip_len=args.clip_len, height=args.height, width=args.width)
    if args.model == "gltr":
        config.input.train_sampler = "consecutive"
    # P x K with K = 2 (or 1 for an odd batch): the triplet loss needs two clips per identity.
    instances = 2 if batch % 2 == 0 else 1
    config.input.update(num_ids_per_batch=batch // instances, num_instances=instances)
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("nl3d", "gltr", "tfclip"), default="nl3d")
    parser.add_argument("--batch", type=int, default=2, help="Clips per global batch.")
    parser.add_argument("--clip_len", type=int, default=8)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--devices", type=int, default=1, help="Devices (the first N) to use.")
    parser.add_argument("--stage_sizes", default="", help="e.g. 1,1,1,1 (default: ResNet-50).")
    parser.add_argument("--width_channels", type=int, default=64, help="res2 width (64).")
    parser.add_argument(
        "--vit_size", default="", help="TF-CLIP's WIDTH,LAYERS,HEADS,OUTPUT_DIM (ViT-B/16)."
    )
    parser.add_argument("--num_classes", type=int, default=625, help="625 = MARS train ids.")
    parser.add_argument(
        "--fast_cpu_ops", choices=("auto", "true", "false"), default="auto", help="config.model's."
    )
    parser.add_argument("--steps", type=int, default=5, help="Timed steps.")
    parser.add_argument("--warmup", type=int, default=1, help="Untimed steps after the first.")
    parser.add_argument("--out", default="", help="Result JSON (default: results/train_step.json).")
    parser.add_argument(
        "--input_result", default="", help="input_pipeline.py's result (default: results/...)."
    )
    args = parser.parse_args()

    config = build_config(args, args.batch)
    config.model.fast_cpu_ops = args.fast_cpu_ops
    record = measure(
        config,
        num_classes=args.num_classes,
        num_devices=args.devices,
        steps=args.steps,
        warmup=args.warmup,
    )
    record.update(efficiency(record, args.dtype))
    record["input_pipeline"] = input_comparison(record, args.input_result)
    record.update(model=args.model, dtype=args.dtype, machine=common.machine())
    if args.model == "tfclip":
        record["model_size"] = {"vit": args.vit_size or "768,12,12,512"}
    elif args.stage_sizes or args.width_channels != 64:
        record["model_size"] = {"stage_sizes": args.stage_sizes, "width": args.width_channels}
    if record["compilations"] != 1:
        raise SystemExit(f"The train step compiled {record['compilations']} times, not once.")

    key = f"{args.model}/{args.dtype}/batch{args.batch}/{args.devices}dev/{record['machine']['backend']}"
    if args.fast_cpu_ops != "auto":
        key += f"/fast_cpu_ops={args.fast_cpu_ops}"
    written = common.merge_result("train_step", key, record, args.out)

    mfu = record["mfu"]
    feed = record["input_pipeline"]
    print(
        f"train_step {key}: {record['step_s_median']:.3f} s/step, {record['clips_per_s']:.2f} "
        f"clips/s ({record['frames_per_s']:.1f} frames/s), {record['flops_per_clip'] / 1e9:.1f} "
        f"GFLOPs/clip, {record['achieved_flops_per_s'] / 1e9:.1f} GFLOP/s achieved"
        + (f", MFU {100 * mfu:.1f}% ({record['peak_source']})" if mfu is not None else "")
        + f", peak memory {record['peak_memory_bytes'] / 2**30:.2f} GiB ({record['peak_memory_source']})"
        + (f"; input pipeline needs {feed['input_cores_needed']} cores" if feed else "")
        + f" -> {written}"
    )


if __name__ == "__main__":
    main()
