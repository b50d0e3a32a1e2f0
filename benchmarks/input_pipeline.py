"""Input pipeline throughput: training clips/s and evaluation frames/s per CPU core.

Builds an in-memory training index of 256x128 JPEG frames with the size and content statistics of
pedestrian crops (smooth shapes plus noise, quality 90), pins the process to `--cores` cores before
TensorFlow starts (every thread it creates inherits the mask) and gives tf.data a private pool of
that many threads, then times:
  * training: PK batches of 8-frame 256x128 clips (sampling, decode of the sampled frames only,
    clip-consistent flip + pad-and-crop, normalisation), the NL3D default recipe;
  * evaluation: GLTR frame batches (decode + normalise) and NL3D clip batches (8-frame clips).
The target is at least 100 training clips/s per core (an H100 consumes several hundred per second).

Run: python benchmarks/input_pipeline.py [--cores 1] [--seconds 20]
Writes benchmarks/results/input_pipeline.json and prints a one-line summary.
"""

from __future__ import annotations

import argparse
import os

import common  # benchmarks/common.py (this folder is on sys.path when run as a script)


def _cycle(make_iterator):
    """Batches of a finite evaluation pipeline, restarted whenever it ends."""
    while True:
        yield from make_iterator()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=1, help="Cores to pin the process to.")
    parser.add_argument(
        "--seconds", type=float, default=20.0, help="Timing window per measurement."
    )
    parser.add_argument("--out", default="", help="Result JSON (default: results/...json).")
    args = parser.parse_args()
    cores = common.pin_cores(args.cores)  # Before TensorFlow creates its threads.

    import numpy as np  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    from vreid_jax.data import fake, pipeline, throughput  # noqa: PLC0415

    tf.config.set_visible_devices([], "GPU")
    cfg = common.default_config().input
    cfg.update(num_ids_per_batch=8, num_instances=4, threadpool_size=len(cores), prefetch=2)
    train = throughput.train_index(32, 256, 128, "jpeg")
    test = fake.make_index(
        [2] * 64, 96, height=256, width=128, content="textured", fmt="JPEG", train=False
    )
    frame_bytes = train.nbytes / train.num_frames

    clips_per_batch = cfg.num_ids_per_batch * cfg.num_instances
    train_rate, train_cpu = throughput.rate(
        pipeline.train_batches(train, cfg, seed=0, start_step=0), clips_per_batch, args.seconds
    )
    frames = _cycle(lambda: pipeline.eval_frame_batches(test, cfg, batch_size=256)[0])
    frame_rate, frame_cpu = throughput.rate(frames, 256, args.seconds)
    clips = _cycle(lambda: pipeline.eval_clip_batches(test, cfg, clip_len=8, batch_size=32)[0])
    clip_frame_rate, clip_frame_cpu = throughput.rate(clips, 32 * 8, args.seconds)

    result = {
        "benchmark": "input_pipeline",
        "cores": len(cores),
        "cpu": common.cpu_name(),
        "tensorflow": tf.__version__,
        "clip": [cfg.clip_len, cfg.height, cfg.width, 3],
        "augment": {"flip": cfg.flip, "pad": cfg.pad, "random_erasing": cfg.random_erasing},
        "jpeg_bytes_per_frame": round(frame_bytes),
        "load_average_1min": os.getloadavg()[0],
        "train_clips_per_sec": round(train_rate, 1),
        "train_clips_per_cpu_sec": round(train_cpu, 1),
        "eval_frames_per_sec": round(frame_rate, 1),
        "eval_frames_per_cpu_sec": round(frame_cpu, 1),
        "eval_clip_frames_per_sec": round(clip_frame_rate, 1),
        "eval_clip_frames_per_cpu_sec": round(clip_frame_cpu, 1),
        "target_train_clips_per_sec_per_core": 100,
        "seconds_per_measurement": args.seconds,
        "numpy": np.__version__,
    }
    out = common.write_result("input_pipeline", result, args.out)
    print(
        f"input_pipeline on {len(cores)} core(s), per CPU-second: train {train_cpu:.0f} clips "
        f"(8x256x128, target 100/core; wall {train_rate:.0f}/s), eval {frame_cpu:.0f} frames "
        f"(wall {frame_rate:.0f}/s), eval clips {clip_frame_cpu:.0f} frames (wall "
        f"{clip_frame_rate:.0f}/s); {frame_bytes / 1024:.1f} KB/JPEG -> {out}"
    )


if __name__ == "__main__":
    main()
