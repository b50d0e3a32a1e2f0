"""Parameter counts and forward FLOPs of both full-size models, from XLA's cost analysis.

Nothing runs: parameters come from `jax.eval_shape` and FLOPs from the lowered eval-mode forward
pass (XLA counts a multiply-add as 2 FLOPs). NL3D is measured per `clip_len x 256 x 128` clip;
GLTR per clip and per 256x128 frame through its encoder alone.

Run: python benchmarks/model_flops.py [--num_classes 625]
Writes benchmarks/results/model_flops.json and prints a one-line summary.
"""

from __future__ import annotations

import argparse
import platform

import common  # benchmarks/common.py (this folder is on sys.path when run as a script)
import jax

from vreid_jax.tools import summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num_classes", type=int, default=625, help="625 = MARS train ids.")
    args = parser.parse_args()
    models = {}
    for name in ("nl3d", "gltr"):
        config = common.default_config()
        config.model.name = name
        models[name] = summary.summarize(config, args.num_classes)
    result = {
        "benchmark": "model_flops",
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "host": platform.machine(),
        "num_classes": args.num_classes,
        "models": models,
    }
    common.write_result("model_flops", result)
    nl3d, gltr = models["nl3d"], models["gltr"]
    print(
        f"nl3d: {nl3d['total_params']:,} params, {nl3d['flops_per_clip'] / 1e9:.1f} GFLOPs per "
        f"{'x'.join(map(str, nl3d['input'][1:4]))} clip | gltr: {gltr['total_params']:,} params, "
        f"{gltr['flops_per_frame_encoder'] / 1e9:.2f} GFLOPs per frame (encoder), "
        f"{gltr['flops_per_clip'] / 1e9:.1f} per clip"
    )


if __name__ == "__main__":
    main()
