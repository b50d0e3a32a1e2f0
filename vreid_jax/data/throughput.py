"""Input-pipeline throughput on in-memory synthetic frames: what this host's CPUs can feed.

Shared by `vreid_jax.training.preflight` (can this host feed the configured step?) and
`benchmarks/input_pipeline.py` (clips/s per core). The frames are 'textured' JPEG or PNG images at
the configured size (`fake.make_index`), so the decode cost is that of real pedestrian crops; the
pipeline is the real training one (`pipeline.train_batches`: sampling, decode of the sampled frames,
clip-consistent augmentation, batching) with the config's parallelism settings.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from vreid_jax.data import fake, pipeline

# Frames per synthetic training tracklet (longer than any recipe's sampling window).
_TRACKLET_LEN = 96


def rate(iterator: Iterator, items_per_batch: int, seconds: float, warmup: int = 2):
    """`(items per wall-clock second, items per CPU second of this process)` over `seconds`.

    Items per CPU second is the per-core throughput, and it holds on a machine shared with other
    work, where the wall-clock rate drops while other processes hold the core. At least one batch
    is timed after the `warmup` ones.
    """
    for _ in range(warmup):
        next(iterator)
    count, start, cpu_start = 0, time.perf_counter(), time.process_time()
    while count == 0 or time.perf_counter() - start < seconds:
        next(iterator)
        count += items_per_batch
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return count / wall, count / max(cpu, 1e-9)


def train_index(
    num_ids: int, height: int, width: int, image_format: str = "jpeg", tracklets_per_id: int = 4
):
    """A training index of `num_ids` identities x `tracklets_per_id` tracklets of textured frames
    at `height` x `width`, encoded as `image_format` ('jpeg' or 'png')."""
    return fake.make_index(
        [tracklets_per_id] * num_ids,
        _TRACKLET_LEN,
        height=height,
        width=width,
        content="textured",
        fmt=image_format.upper(),
    )


def train_clips_per_s(
    input_config, *, seconds: float, image_format: str = "jpeg", process_count: int = 1
) -> dict:
    """Training clips/s one process's pipeline delivers with `input_config` (`config.input`).

    The process's share of the batch is `num_ids_per_batch / process_count` identities x K clips.
    Returns `{'clips_per_s', 'clips_per_cpu_s', 'seconds', 'image_format'}`.
    """
    cfg = input_config.copy_and_resolve_references()
    local_ids = max(1, cfg.num_ids_per_batch // process_count)
    cfg.num_ids_per_batch = local_ids
    index = train_index(max(2 * local_ids, 8), cfg.height, cfg.width, image_format)
    batches = pipeline.train_batches(index, cfg, seed=0, start_step=0)
    wall, cpu = rate(batches, local_ids * cfg.num_instances, seconds, warmup=1)
    return {
        "clips_per_s": wall,
        "clips_per_cpu_s": cpu,
        "seconds": seconds,
        "image_format": image_format,
    }
