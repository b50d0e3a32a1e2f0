"""Conversion throughput of `data_prep.build` (frames/s) and the projected time for MARS.

Two measurements on synthetic trees written by `data_prep.synthetic`:
  1. MARS-sized frames (256x128 JPEG, as in the release): build time -> frames/s -> projected time
     for MARS's 1,191,003 frames (train 509,914 + test 681,089, `data_prep.mars`). Parsing,
     frame checks and TFRecord writing are all included; the projection assumes linear scaling
     and a disk at least as fast as this one (the page cache is warm after generating).
  2. The demo-sized dataset (configs/default.py `config.data.synthetic`, 128x64): generate and
     build times, which the quick start pays on first use.

Run: python benchmarks/convert_throughput.py [--num_ids 24]
Writes benchmarks/results/convert_throughput.json and prints a one-line summary.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import common  # benchmarks/common.py (this folder is on sys.path when run as a script)

from data_prep import build, synthetic
from vreid_jax.data import datasets

MARS_FRAMES = 1_191_003


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _frames(truth: dict) -> int:
    return sum(len(t["frame_numbers"]) for t in truth["tracklets"])


def measure_mars_frames(work: str, num_ids: int) -> dict:
    raw, data_dir = os.path.join(work, "mars_raw"), os.path.join(work, "mars_tfds")
    truth, gen_s = _timed(
        lambda: synthetic.generate(
            "mars",
            raw,
            0,
            num_ids=num_ids,
            tracklets_per_id=4,
            min_len=20,
            max_len=100,
            height=256,
            width=128,
        )
    )
    _, build_s = _timed(lambda: build.build("mars", raw, data_dir))
    frames = _frames(truth)
    fps = frames / build_s
    return {
        "frames": frames,
        "tracklets": len(truth["tracklets"]),
        "frame_size": [256, 128],
        "generate_s": round(gen_s, 2),
        "build_s": round(build_s, 2),
        "build_frames_per_s": round(fps, 1),
        "projected_mars_build_min": round(MARS_FRAMES / fps / 60, 1),
    }


def measure_demo(work: str) -> dict:
    raw, data_dir = os.path.join(work, "demo_raw"), os.path.join(work, "demo_tfds")
    size = datasets.generate_kwargs(common.default_config().data.synthetic)
    truth, gen_s = _timed(lambda: synthetic.generate("mars", raw, 0, **size))
    _, build_s = _timed(lambda: build.build("mars", raw, data_dir))
    return {
        **size,
        "frames": _frames(truth),
        "tracklets": len(truth["tracklets"]),
        "generate_s": round(gen_s, 2),
        "build_s": round(build_s, 2),
        "generate_frames_per_s": round(_frames(truth) / gen_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num_ids", type=int, default=24, help="MARS-sized run: ids per split.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        mars = measure_mars_frames(work, args.num_ids)
        demo = measure_demo(work)
    result = {
        "benchmark": "convert_throughput",
        "host": platform.machine(),
        "cpu_count": os.cpu_count(),
        "mars_sized": mars,
        "demo": demo,
    }
    common.write_result("convert_throughput", result)
    print(
        f"convert_throughput: {mars['build_frames_per_s']} frames/s at 256x128 "
        f"-> MARS ({MARS_FRAMES:,} frames) in ~{mars['projected_mars_build_min']} min; "
        f"demo ({demo['frames']} frames at 128x64): generate {demo['generate_s']} s + "
        f"build {demo['build_s']} s"
    )


if __name__ == "__main__":
    main()
