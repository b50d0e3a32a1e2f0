"""The cost of PyTorch-exact batch normalisation: train-mode forward + backward of one BN layer,
flax's `nn.BatchNorm` (one-pass variance) against `vreid_jax.models.batch_norm.BatchNorm` (two
passes, unbiased running variance), at the activation shapes of a ResNet-50 stage output for 16
frames of 256x128 (2 clips x 8 frames).

Run: python benchmarks/batch_norm.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import common  # benchmarks/common.py (this folder is on sys.path when run as a script)

SHAPES = {  # [frames, H, W, C] after res2..res5 (last stride 1, as the recipes).
    "res2": (16, 64, 32, 256),
    "res3": (16, 32, 16, 512),
    "res4": (16, 16, 8, 1024),
    "res5": (16, 16, 8, 2048),
}


def _step_fn(module):
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    def loss(params, batch_stats, x):
        y, updates = module.apply(
            {"params": params, "batch_stats": batch_stats}, x, mutable=["batch_stats"]
        )
        return jnp.sum(y * y), updates

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 2), has_aux=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    import jax  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415
    from flax import linen as nn  # noqa: PLC0415

    from vreid_jax.models.batch_norm import BatchNorm  # noqa: PLC0415

    modules = {
        "flax_one_pass": nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5),
        "torch_exact_two_pass": BatchNorm(use_running_average=False),
    }
    record = {"machine": common.machine(), "rounds": args.rounds, "ms": {}}
    for stage, shape in SHAPES.items():
        x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
        fns = {}
        for name, module in modules.items():
            variables = module.init(jax.random.key(0), x)
            fn = _step_fn(module)
            jax.block_until_ready(fn(variables["params"], variables["batch_stats"], x))
            fns[name] = (fn, variables)
        times = {name: [] for name in modules}
        for _ in range(args.rounds):  # Alternating, so that machine noise hits both alike.
            for name, (fn, variables) in fns.items():
                start = time.perf_counter()
                jax.block_until_ready(fn(variables["params"], variables["batch_stats"], x))
                times[name].append(1e3 * (time.perf_counter() - start))
        record["ms"][stage] = {
            name: {
                "median": round(statistics.median(t), 3),
                "min": round(min(t), 3),
                "max": round(max(t), 3),
            }
            for name, t in times.items()
        }
        one, two = (record["ms"][stage][n]["median"] for n in modules)
        print(f"{stage} {shape}: one-pass {one:.2f} ms, two-pass {two:.2f} ms ({two / one:.2f}x)")
    path = common.write_result("batch_norm", record, args.out or None)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
