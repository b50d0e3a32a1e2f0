"""NL3D's temporal `3 x 1 x 1` convolutions, forward, input gradient and weight gradient: XLA's 3-D
convolution against the project's `pointwise_conv.temporal_conv` (one matrix product over the
time-shifted frames) and PyTorch's `conv3d`.

NL3D follows the 3x3 conv of each of its 16 bottlenecks with one; here each stage's is timed at
`--clips x --frames` clips of `--height x --width` frames (res5 at stride 1, as the recipes), and
totals weight each by the stage's block count. Needs the optional torch extra.

Run: python benchmarks/temporal_conv.py --cores 2
Small smoke run: --clips 1 --frames 4 --height 64 --width 32 --repeats 1 --out /tmp/x.json
Writes benchmarks/results/temporal_conv.json and prints the totals.
"""

from __future__ import annotations

import argparse
import functools

import common
import conv_backward

# (stage, channels, spatial downsampling from the frame, blocks)
STAGES = (("res2", 64, 4, 3), ("res3", 128, 8, 4), ("res4", 256, 16, 6), ("res5", 512, 16, 3))


def torch_times(x, kernel, grad, repeats):
    import torch  # noqa: PLC0415

    x, kernel, grad = (torch.from_numpy(a.copy()) for a in (x, kernel, grad))
    conv3d, grads, pad = torch.nn.functional.conv3d, torch.nn.grad, (kernel.shape[2] // 2, 0, 0)
    with torch.no_grad():
        return {
            "fwd": conv_backward.median_time(lambda: conv3d(x, kernel, padding=pad), repeats),
            "dx": conv_backward.median_time(
                lambda: grads.conv3d_input(x.shape, kernel, grad, padding=pad), repeats
            ),
            "dw": conv_backward.median_time(
                lambda: grads.conv3d_weight(x, kernel.shape, grad, padding=pad), repeats
            ),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=2, help="Cores to pin to.")
    parser.add_argument("--clips", type=int, default=2)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--kernel", type=int, default=3, help="Temporal taps.")
    parser.add_argument("--repeats", type=int, default=7, help="Timed calls per op (median).")
    parser.add_argument("--out", default="", help="Result JSON (default: results/...json).")
    args = parser.parse_args()
    cores = common.pin_cores(args.cores)
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415
    import torch  # noqa: PLC0415

    from vreid_jax.models.cpu_ops import pointwise_conv  # noqa: PLC0415

    torch.set_num_threads(len(cores))
    rng = np.random.default_rng(0)
    rows, totals = [], {}
    for stage, channels, down, blocks in STAGES:
        shape = (args.clips, args.frames, args.height // down, args.width // down, channels)
        x = rng.standard_normal(shape, dtype=np.float32)
        kernel = rng.standard_normal((args.kernel, 1, 1, channels, channels), dtype=np.float32)
        grad = rng.standard_normal(shape, dtype=np.float32)
        numbers = jax.lax.conv_dimension_numbers(shape, kernel.shape, ("NDHWC", "DHWIO", "NDHWC"))
        conv_args = dict(
            window_strides=(1, 1, 1),
            padding=((args.kernel // 2,) * 2, (0, 0), (0, 0)),
            dimension_numbers=numbers,
        )
        jx, jk, jg = map(jnp.asarray, (x, kernel, grad))
        times = {
            impl: conv_backward.jax_times(
                functools.partial(conv, **conv_args), jx, jk, jg, args.repeats, with_dx=True
            )
            for impl, conv in (
                ("lax", jax.lax.conv_general_dilated),
                ("project", pointwise_conv.conv_general_dilated),
            )
        }
        times["torch"] = torch_times(
            x.transpose(0, 4, 1, 2, 3),
            kernel.transpose(4, 3, 0, 1, 2),
            grad.transpose(0, 4, 1, 2, 3),
            args.repeats,
        )
        ms, line = conv_backward.tally(times, blocks, totals)
        rows.append({"stage": stage, "input": list(shape), "blocks": blocks, **ms})
        print(f"{stage} x{blocks} {shape} | {line}", flush=True)
    record = {
        "clips": args.clips,
        "frames": args.frames,
        "image": [args.height, args.width, 3],
        "kernel": args.kernel,
        "cores": cores,
        "torch": torch.__version__,
        "totals_ms_per_step": {k: round(v, 1) for k, v in totals.items()},
        "convs_ms": rows,
        "machine": common.machine(),
    }
    written = common.write_result("temporal_conv", record, args.out)
    totals_line = conv_backward.summary(totals)
    print(f"temporal_conv totals per NL3D step (ms, fwd/dx/dw): {totals_line} -> {written}")


if __name__ == "__main__":
    main()
