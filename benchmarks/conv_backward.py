"""Every ResNet-50 convolution's forward, input-gradient and weight-gradient time, JAX vs PyTorch.

This is the measurement that located the CPU train-step gap (`benchmarks/README.md`): for each
distinct convolution of ResNet-50 at `--batch x --height x --width` (NHWC for JAX, NCHW for torch),
it times the forward pass, the input gradient (`dx`) and the weight gradient (`dw`) in three ways:
`lax.conv_general_dilated` differentiated by JAX, the project's `pointwise_conv` (1x1 convs as
matrix products; the others are the lax conv again) and torch's `conv2d` with
`torch.nn.grad.conv2d_input/conv2d_weight`. Totals weight each conv by how often ResNet-50 runs it.
The stem's input gradient is skipped, as no train step computes it. Needs the optional torch extra.

Run: python benchmarks/conv_backward.py [--cores 1] [--batch 8]
Small smoke run: --batch 1 --height 64 --width 32 --repeats 1 --out /tmp/x.json
Writes benchmarks/results/conv_backward.json and prints the totals.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import common

STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # (width, blocks, stride)
IMPLEMENTATIONS = ("lax", "project", "torch")


def resnet50_convs(height: int, width: int):
    """(name, input H, input W, C_in, C_out, kernel, stride, times used) for each distinct conv."""
    convs = [("stem", height, width, 3, 64, 7, 2, 1)]
    h, w, c_in = height // 4, width // 4, 64
    for stage, (planes, blocks, stride) in enumerate(STAGES, start=1):
        out = planes * 4
        h_out, w_out = h // stride, w // stride
        convs += [
            (f"layer{stage}.0.conv1", h, w, c_in, planes, 1, 1, 1),
            (f"layer{stage}.0.conv2", h, w, planes, planes, 3, stride, 1),
            (f"layer{stage}.*.conv3", h_out, w_out, planes, out, 1, 1, blocks),
            (f"layer{stage}.0.downsample", h, w, c_in, out, 1, stride, 1),
            (f"layer{stage}.1+.conv1", h_out, w_out, out, planes, 1, 1, blocks - 1),
            (f"layer{stage}.1+.conv2", h_out, w_out, planes, planes, 3, 1, blocks - 1),
        ]
        h, w, c_in = h_out, w_out, out
    return convs


def median_time(fn, repeats: int) -> float:
    fn()  # compile / warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def jax_times(conv_fn, x, kernel, grad, repeats, with_dx):
    import jax  # noqa: PLC0415

    forward = jax.jit(conv_fn)
    dx = jax.jit(lambda x, k, g: jax.vjp(lambda a: conv_fn(a, k), x)[1](g)[0])
    dw = jax.jit(lambda x, k, g: jax.vjp(lambda b: conv_fn(x, b), k)[1](g)[0])
    return {
        "fwd": median_time(lambda: forward(x, kernel).block_until_ready(), repeats),
        "dx": median_time(lambda: dx(x, kernel, grad).block_until_ready(), repeats)
        if with_dx
        else 0.0,
        "dw": median_time(lambda: dw(x, kernel, grad).block_until_ready(), repeats),
    }


def torch_times(x, kernel, grad, stride, pad, repeats, with_dx):
    import torch  # noqa: PLC0415

    x, kernel, grad = (torch.from_numpy(a.copy()) for a in (x, kernel, grad))
    conv2d, grads = torch.nn.functional.conv2d, torch.nn.grad
    with torch.no_grad():
        return {
            "fwd": median_time(lambda: conv2d(x, kernel, stride=stride, padding=pad), repeats),
            "dx": median_time(
                lambda: grads.conv2d_input(x.shape, kernel, grad, stride=stride, padding=pad),
                repeats,
            )
            if with_dx
            else 0.0,
            "dw": median_time(
                lambda: grads.conv2d_weight(x, kernel.shape, grad, stride=stride, padding=pad),
                repeats,
            ),
        }


def tally(times: dict, used: int, totals: dict) -> tuple[dict, str]:
    """Adds one conv's `{implementation: {op: seconds}}` to the per-step `totals` (ms, the conv
    counted `used` times); returns its milliseconds per op and a printable summary."""
    row = {}
    for impl, ops in times.items():
        for op, seconds in ops.items():
            totals[f"{impl}_{op}_ms"] = totals.get(f"{impl}_{op}_ms", 0.0) + 1e3 * seconds * used
        row[impl] = {op: round(1e3 * s, 2) for op, s in ops.items()}
    line = " | ".join(
        f"{impl} " + " ".join(f"{op} {ms:.1f}" for op, ms in ops.items())
        for impl, ops in row.items()
    )
    return row, f"{line} ms"


def summary(totals: dict) -> str:
    """Per-step totals as 'implementation fwd/dx/dw' (ms)."""
    return ", ".join(
        f"{impl} " + "/".join(f"{totals[f'{impl}_{op}_ms']:.0f}" for op in ("fwd", "dx", "dw"))
        for impl in IMPLEMENTATIONS
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=1, help="Cores to pin to.")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5, help="Timed calls per op (median).")
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
    for name, h, w, c_in, c_out, k, stride, used in resnet50_convs(args.height, args.width):
        pad = k // 2
        h_out, w_out = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
        x = rng.standard_normal((args.batch, h, w, c_in), dtype=np.float32)
        kernel = rng.standard_normal((k, k, c_in, c_out), dtype=np.float32) * 0.05
        grad = rng.standard_normal((args.batch, h_out, w_out, c_out), dtype=np.float32)
        numbers = jax.lax.conv_dimension_numbers(x.shape, kernel.shape, ("NHWC", "HWIO", "NHWC"))
        conv_args = dict(
            window_strides=(stride, stride),
            padding=((pad, pad), (pad, pad)),
            dimension_numbers=numbers,
        )
        lax_conv = functools.partial(jax.lax.conv_general_dilated, **conv_args)
        project_conv = functools.partial(pointwise_conv.conv_general_dilated, **conv_args)
        with_dx = name != "stem"
        jx, jk, jg = map(jnp.asarray, (x, kernel, grad))
        times = {
            "lax": jax_times(lax_conv, jx, jk, jg, args.repeats, with_dx),
            "project": jax_times(project_conv, jx, jk, jg, args.repeats, with_dx),
            "torch": torch_times(
                x.transpose(0, 3, 1, 2),
                kernel.transpose(3, 2, 0, 1),
                grad.transpose(0, 3, 1, 2),
                stride,
                pad,
                args.repeats,
                with_dx,
            ),
        }
        ms, line = tally(times, used, totals)
        rows.append(
            {
                "conv": name,
                "input": [h, w, c_in],
                "c_out": c_out,
                "kernel": k,
                "stride": stride,
                "used": used,
                **ms,
            }
        )
        print(f"{name:22s} x{used} {h}x{w}x{c_in}->{c_out} k{k} s{stride} | {line}", flush=True)
    record = {
        "batch": args.batch,
        "image": [args.height, args.width, 3],
        "cores": cores,
        "torch": torch.__version__,
        "totals_ms_per_step": {k: round(v, 1) for k, v in totals.items()},
        "convs_ms": rows,
        "machine": common.machine(),
    }
    written = common.write_result("conv_backward", record, args.out)
    print(
        f"conv_backward totals per ResNet-50 step (ms, fwd/dx/dw): {summary(totals)} -> {written}"
    )


if __name__ == "__main__":
    main()
