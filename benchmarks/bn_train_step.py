"""Whole train step with the project's batch norm against an alternative form of it.

`benchmarks/batch_norm.py` times one BN layer; this times the project's compiled train step
(`vreid_jax.training.loop.compile_train_step`: forward, label-smoothed cross-entropy + batch-hard triplet,
backward, Adam) of a full-size model twice: once as built (`vreid_jax.models.batch_norm.BatchNorm`:
two-pass variance, unbiased running variance, written-out gradient) and once with `--against`:
- `one_pass_flax`: every BN swapped for flax's `nn.BatchNorm(use_fast_variance=True)` (one-pass
  E[x^2] - E[x]^2; the project's BN before the PyTorch-exact one);
- `autodiff_gradient`: the same BN with its gradient left to autodiff (before the written-out VJP).
The swap is done here, while the step is traced; the model code has no switch. Both steps are
compiled first, then timed in alternating rounds so that machine noise hits both alike; medians and
ranges are recorded.

Run: python benchmarks/bn_train_step.py --model gltr --batch 2 [--against autodiff_gradient]
     [--rounds 5 --steps 2]
Smoke run: --batch 2 --clip_len 4 --height 64 --width 32 --stage_sizes 1,1,1,1 --width_channels 8
--rounds 2 --steps 1 --out /tmp/x.json
Adds one entry to benchmarks/results/bn_train_step.json and prints a one-line summary.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import statistics
import time

import common  # benchmarks/common.py (this folder is on sys.path when run as a script)
import train_step  # benchmarks/train_step.py: the config it builds for a model and clip size


@contextlib.contextmanager
def flax_one_pass_bn():
    """While active, `layers.batch_norm` builds flax's one-pass `nn.BatchNorm`."""
    from flax import linen as nn  # noqa: PLC0415

    from vreid_jax.models import layers  # noqa: PLC0415

    original = layers.BatchNorm
    layers.BatchNorm = functools.partial(nn.BatchNorm, use_fast_variance=True)
    try:
        yield
    finally:
        layers.BatchNorm = original


@contextlib.contextmanager
def autodiff_bn_gradient():
    """While active, the project's BN differentiates its train-mode forward by autodiff."""
    from vreid_jax.models import batch_norm  # noqa: PLC0415

    original = batch_norm._normalize
    batch_norm._normalize = batch_norm.batch_normalize
    try:
        yield
    finally:
        batch_norm._normalize = original


ALTERNATIVES = {"one_pass_flax": flax_one_pass_bn, "autodiff_gradient": autodiff_bn_gradient}


def build_step(config, num_classes: int, swap=contextlib.nullcontext):
    """A compiled step, its state and a random batch; traced inside `swap()`."""
    import jax  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    from vreid_jax import models, parallel  # noqa: PLC0415
    from vreid_jax.training import loop, optim
    from vreid_jax.training import state as state_lib  # noqa: PLC0415

    cfg = config.input
    mesh = parallel.make_mesh(jax.devices()[:1])
    model = models.build_model(config.model, num_classes)
    tx, lr_fn = optim.create_optimizer(config, steps_per_epoch=1000)
    shape = (cfg.num_ids_per_batch * cfg.num_instances, cfg.clip_len, cfg.height, cfg.width, 3)
    batch = parallel.host_to_global(
        {
            "clips": np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8),
            "labels": np.repeat(np.arange(cfg.num_ids_per_batch), cfg.num_instances).astype(
                np.int32
            ),
        },
        mesh,
    )
    with swap():
        state, shardings = state_lib.create_train_state(
            model, tx, state_lib.init_clips(config.input), seed=0, mesh=mesh
        )
        step_fn = loop.compile_train_step(model, tx, lr_fn, config, shardings, mesh)
        start = time.perf_counter()
        state, metrics = step_fn(state, batch)  # Traces and compiles under the chosen BN.
        jax.block_until_ready(metrics)
    return step_fn, state, batch, time.perf_counter() - start


def round_ratios(built: list, against: list, steps: int) -> list:
    """Per alternating round, the built step's time over the alternative's (a round's steps summed):
    neighbouring measurements, so slow drifts of the machine's load cancel."""
    sums = lambda t: [sum(t[i : i + steps]) for i in range(0, len(t), steps)]  # noqa: E731
    return [round(a / b, 4) for a, b in zip(sums(built), sums(against), strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("nl3d", "gltr"), default="gltr")
    parser.add_argument("--batch", type=int, default=2, help="Clips per batch.")
    parser.add_argument("--clip_len", type=int, default=8)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--num_classes", type=int, default=625)
    parser.add_argument("--stage_sizes", default="", help="e.g. 1,1,1,1 (default: ResNet-50).")
    parser.add_argument("--width_channels", type=int, default=64, help="res2 width (64).")
    parser.add_argument("--against", choices=sorted(ALTERNATIVES), default="one_pass_flax")
    parser.add_argument("--rounds", type=int, default=5, help="Alternating rounds.")
    parser.add_argument("--steps", type=int, default=2, help="Timed steps per variant per round.")
    parser.add_argument("--label", default="", help="Extra key part, e.g. run2.")
    parser.add_argument("--out", default="", help="Result JSON (default: results/...json).")
    args = parser.parse_args()
    args.dtype = "float32"
    import jax  # noqa: PLC0415

    config = train_step.build_config(args, args.batch)
    variants = {"as_built": contextlib.nullcontext, args.against: ALTERNATIVES[args.against]}
    built = {name: build_step(config, args.num_classes, swap) for name, swap in variants.items()}
    times = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, (step_fn, state, batch, _) in built.items():
            for _ in range(args.steps):
                start = time.perf_counter()
                state, metrics = step_fn(state, batch)
                jax.block_until_ready((state, metrics))
                times[name].append(time.perf_counter() - start)
            built[name] = (step_fn, state, batch, built[name][3])
    for name, (step_fn, *_rest) in built.items():
        if step_fn._cache_size() != 1:
            raise SystemExit(f"{name}: the step compiled {step_fn._cache_size()} times, not once.")

    record = {
        "model": args.model,
        "batch_clips": args.batch,
        "clip": [args.clip_len, args.height, args.width, 3],
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "step_s": {
            name: {
                "median": round(statistics.median(t), 4),
                "min": round(min(t), 4),
                "max": round(max(t), 4),
                "all": [round(x, 4) for x in t],
                "first_step_s": round(built[name][3], 2),  # Compilation included.
            }
            for name, t in times.items()
        },
        "machine": common.machine(),
    }
    ours, theirs = (record["step_s"][n]["median"] for n in variants)
    record["ratio_built_over_against"] = round(ours / theirs, 4)
    record["round_ratios"] = round_ratios(*(times[n] for n in variants), args.steps)
    if args.stage_sizes or args.width_channels != 64:
        record["model_size"] = {"stage_sizes": args.stage_sizes, "width": args.width_channels}
    key = f"{args.model}/batch{args.batch}/{'x'.join(map(str, record['clip'][:3]))}/{args.against}"
    if args.label:
        key += f"/{args.label}"
    written = common.merge_result("bn_train_step", key, record, args.out)
    print(
        f"bn_train_step {key}: as built {ours:.3f} s/step, {args.against} {theirs:.3f} s/step "
        f"(ratio of medians {ours / theirs:.3f}, median round ratio "
        f"{statistics.median(record['round_ratios']):.3f}) -> {written}"
    )


if __name__ == "__main__":
    main()
