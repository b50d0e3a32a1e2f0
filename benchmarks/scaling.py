"""Weak scaling of the train step: step time at 1, 2, 4, 8 devices with a fixed per-device batch.

On accelerators, perfect weak scaling keeps the step time flat as devices are added (efficiency
t1 / tn = 1); the loss is the cost of the gradient all-reduce and of the global batch-norm and
triplet-mining collectives. On a CPU the devices are fake (`--xla_force_host_platform_device_count`)
and share the same cores, so n devices do n times the work on the same hardware: the step time
should grow n-fold, and `overhead` = tn / (n t1) - 1 measures what sharding itself costs (partitioned
programs, collectives through memory). It checks overheads only, not a real speed-up.

Run: python benchmarks/scaling.py --model nl3d --per_device_batch 2
CPU (fake devices, small network): python benchmarks/scaling.py --per_device_batch 2 \\
         --height 64 --width 32 --clip_len 4 --stage_sizes 1,1,1,1 --width_channels 8
Adds one entry to benchmarks/results/scaling.json and prints a one-line summary.
"""

from __future__ import annotations

import argparse
import os

import common

FAKE_CPU_DEVICES = 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("nl3d", "gltr"), default="nl3d")
    parser.add_argument("--per_device_batch", type=int, default=2, help="Clips per device.")
    parser.add_argument("--devices", default="1,2,4,8", help="Device counts to measure.")
    parser.add_argument("--clip_len", type=int, default=8)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--stage_sizes", default="", help="e.g. 1,1,1,1 (default: ResNet-50).")
    parser.add_argument("--width_channels", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--out", default="", help="Result JSON (default: results/scaling.json).")
    args = parser.parse_args()
    # Fake CPU devices must be requested before jax starts; on GPU/TPU hosts this changes nothing.
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "")
        + f" --xla_force_host_platform_device_count={FAKE_CPU_DEVICES}"
    )
    import jax  # noqa: PLC0415
    import train_step  # noqa: PLC0415

    counts = [int(n) for n in args.devices.split(",") if int(n) <= jax.device_count()]
    runs = {}
    for n in counts:
        config = train_step.build_config(args, args.per_device_batch * n)
        record = train_step.measure(
            config, num_classes=625, num_devices=n, steps=args.steps, warmup=1
        )
        if record["compilations"] != 1:
            raise SystemExit(f"{n} devices: the step compiled {record['compilations']} times.")
        runs[n] = record
    t1 = runs[counts[0]]["step_s_median"] / counts[0]
    fake = jax.default_backend() == "cpu"
    table = {
        str(n): {
            "global_batch": r["batch_clips"],
            "step_s": r["step_s_median"],
            "clips_per_s": r["clips_per_s"],
            "weak_scaling_efficiency": round(
                runs[counts[0]]["step_s_median"] / r["step_s_median"], 3
            ),
            "sharding_overhead": round(r["step_s_median"] / (n * t1) - 1, 3),
        }
        for n, r in runs.items()
    }
    record = {
        "model": args.model,
        "dtype": args.dtype,
        "per_device_batch": args.per_device_batch,
        "clip": runs[counts[0]]["clip"],
        "model_size": {"stage_sizes": args.stage_sizes or "resnet50", "width": args.width_channels},
        "fake_cpu_devices": fake,
        "note": (
            "fake CPU devices sharing the same cores: checks sharding overheads only"
            if fake
            else "real devices: weak_scaling_efficiency is the figure of merit"
        ),
        "devices": table,
        "machine": common.machine(),
    }
    clip = "x".join(map(str, record["clip"][:3]))
    key = f"{args.model}/{args.dtype}/per_device{args.per_device_batch}/{clip}/" + (
        f"{args.stage_sizes or 'resnet50'}w{args.width_channels}/{jax.default_backend()}"
    )
    written = common.merge_result("scaling", key, record, args.out)
    cells = ", ".join(
        f"{n}: {v['step_s']:.3f} s (overhead {100 * v['sharding_overhead']:+.0f}%)"
        if fake
        else f"{n}: {v['step_s']:.3f} s (efficiency {v['weak_scaling_efficiency']:.2f})"
        for n, v in table.items()
    )
    print(f"scaling {key}: {cells}" + (" [fake CPU devices]" if fake else "") + f" -> {written}")


if __name__ == "__main__":
    main()
