"""How far our GLTR is from the official PyTorch GLTR architecture, in eval and train mode.

The reference is `tests/torch_gltr.py`, a plain-torch re-implementation of `ljn114514/GLTR`'s model
(ResNet-50 with a stride-1 layer4, Linear 2048 -> 128, dilated temporal pyramid 1/2/3 + identity,
1-D non-local TSA, mean over time, BN-ReLU-Dropout-Linear head), with the same random weights and BN
running statistics mapped one-to-one onto our flax GLTR (`tests/torch_gltr.compare`; dropout 0).
Differences are measured against PyTorch in float64; PyTorch float32 against float64 is recorded
next to ours as the yardstick of float32 rounding:
- eval_features, train_features (`[B, 512]`), logits: max |diff| / max |value|;
- loss: relative difference;
- grads_median / grads_max: relative L2 error of each parameter's gradient (analytically vanishing
  ones, listed under `vanishing_grads`, left out); running_stats_max: the same for the BN running
  statistics after the train-mode forward.

Run: python benchmarks/gltr_vs_official.py [--sizes 2x8x256x128,4x4x64x32]
Merges one entry per size (batch x frames x height x width) into
benchmarks/results/gltr_vs_official.json. Needs the optional `torch` extra.
"""

from __future__ import annotations

import argparse
import sys
import time

import common  # benchmarks/common.py (this folder is on sys.path when run as a script)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        default="2x8x256x128,4x4x64x32",
        help="Comma-separated BATCHxFRAMESxHEIGHTxWIDTH (tracklets, frames each, frame size).",
    )
    parser.add_argument("--out", default="", help="Result JSON (default: results/...json).")
    args = parser.parse_args()
    sys.path.insert(0, str(common.REPO / "tests"))
    import torch_gltr  # noqa: PLC0415  (the tests' reference network; needs torch)

    for size in args.sizes.split(","):
        batch, clip_len, height, width = (int(n) for n in size.split("x"))
        start = time.perf_counter()
        record = torch_gltr.compare(batch, clip_len, height, width)
        for side in ("ours", "torch32"):
            record[side].pop("grads_all")
        record["seconds"] = round(time.perf_counter() - start, 1)
        record["machine"] = common.machine()
        written = common.merge_result("gltr_vs_official", size, record, args.out)
        ours, theirs = record["ours"], record["torch32"]
        print(
            f"{size}: eval features {ours['eval_features']:.1e} (torch f32 "
            f"{theirs['eval_features']:.1e}), train features {ours['train_features']:.1e} "
            f"({theirs['train_features']:.1e}), logits {ours['logits']:.1e} "
            f"({theirs['logits']:.1e}), grads median {ours['grads_median']:.2%} "
            f"({theirs['grads_median']:.2%}), max {ours['grads_max']:.2%} "
            f"({theirs['grads_max']:.2%}) -> {written}"
        )


if __name__ == "__main__":
    main()
