"""tf.data pipelines: PK-sampled training batches and fixed-shape evaluation batches, per process.

The numpy samplers (`sampling.py`) decide which frames make each clip; tf.data only decodes those
frames and augments them in a parallel map, so the expensive work runs outside the GIL. Batches come
out as numpy dicts of this process's share; `vreid_jax.parallel.host_to_global` turns them into
global arrays sharded over the ('data',) mesh.

Pixels leave the pipeline as uint8, not normalised: the compiled train and eval steps normalise them
on the device (`vreid_jax.data.pixels.normalize`). Normalising on the host was the pipeline's second
largest cost after JPEG decoding and made every batch four times the bytes to copy.

`config.input` is taken as `config_lib.validate` checked it; what needs the data (the frame size
against the stored frames, P against the identities) is checked here.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import tensorflow as tf
from absl import logging

from vreid_jax.data import augment, sampling
from vreid_jax.data.tracklets import TrackletIndex
from vreid_jax.errors import UserError


def steps_per_epoch(label_counts: np.ndarray, input_config) -> int:
    """Training steps per epoch for `input_config` (the same on every process), from the training
    split's tracklets per label (`ReidData.label_counts`)."""
    return sampling.steps_per_epoch(
        label_counts,
        input_config.num_ids_per_batch,
        input_config.num_instances,
        input_config.epoch,
    )


def train_batches(
    index: TrackletIndex,
    input_config,
    *,
    seed: int,
    start_step: int,
    shrink_ids_to_dataset: bool = False,
    with_cameras: bool = False,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict]:
    """This process's training batches for steps start_step, start_step + 1, ...

    The batch at step s is a pure function of (seed, s): a resumed run sees what an uninterrupted
    run would have. The union of the processes' batches is the single-process batch.

    Args:
      index: this process's identity slice of the training split (with `label_counts`).
      input_config: `config.input`.
      seed: the run's seed (non-negative).
      start_step: the first step to produce.
      shrink_ids_to_dataset: if True, a dataset with fewer identities than `num_ids_per_batch`
        gets batches of all its identities (P shrunk to them) with a warning instead of an error
        (for tools that only look at a few clips).
      with_cameras: batches also carry each clip's 0-based camera (`'cameras'`, int32), for the
        models that take them (`ModelSpec.takes_cameras`).
      process_index: this process.
      process_count: number of processes; must divide `num_ids_per_batch`.

    Yields:
      {'clips': uint8 [P_local * K, T, H, W, 3] pixels, 'labels': int32 [P_local * K],
       'pids': int64 [P_local * K]} (and 'cameras': int32 [P_local * K] `with_cameras`).
    """
    cfg = input_config
    label_counts = index.training_label_counts()
    num_ids = cfg.num_ids_per_batch
    if shrink_ids_to_dataset and num_ids > len(label_counts):
        # The most identities that still split evenly over the processes (at least one each).
        num_ids = max(process_count, len(label_counts) - len(label_counts) % process_count)
        logging.warning(
            "config.input.num_ids_per_batch=%d > %d training identities; using %d.",
            cfg.num_ids_per_batch,
            len(label_counts),
            num_ids,
        )
    check_frame_size(index, cfg, "training")
    sampler = sampling.PKSampler(
        index.labels,
        label_counts,
        num_ids_per_batch=num_ids,
        num_instances=cfg.num_instances,
        epoch=cfg.epoch,
        seed=seed,
        process_index=process_index,
        process_count=process_count,
    )

    batch_size = len(sampler.local_lanes) * cfg.num_instances

    def batches():
        for step in itertools.count(start_step):
            rows, lanes, instances = sampler.batch(step)
            frames, seeds = [], []
            for row, lane, k in zip(rows, lanes, instances, strict=True):
                generator = sampling.clip_rng(seed, step, lane, k)
                chosen = sampling.sample_frames(
                    cfg.train_sampler,
                    int(index.lengths[row]),
                    cfg.clip_len,
                    generator,
                    window=cfg.window,
                )
                frames.append([index.frames[row][f] for f in chosen])
                seeds.append(sampling.augment_seed(seed, step, lane, k))
            batch = {
                "frames": np.array(frames, dtype=object),
                "label": index.labels[rows].astype(np.int32),
                "pid": index.pids[rows],
                "seed": np.stack(seeds),
            }
            if with_cameras:
                batch["camid"] = index.camids[rows].astype(np.int32)
            yield batch

    signature = {
        "frames": tf.TensorSpec([batch_size, cfg.clip_len], tf.string),
        "label": tf.TensorSpec([batch_size], tf.int32),
        "pid": tf.TensorSpec([batch_size], tf.int64),
        "seed": tf.TensorSpec([batch_size, 2], tf.int64),
    }
    if with_cameras:
        signature["camid"] = tf.TensorSpec([batch_size], tf.int32)

    def decode_and_augment(example):
        clip = augment.decode_clip(
            example["frames"], cfg.clip_len, cfg.height, cfg.width, cfg.resize
        )
        clip = augment.augment_clip(
            clip, example["seed"], flip=cfg.flip, pad=cfg.pad, random_erasing=cfg.random_erasing
        )
        out = {"clips": clip, "labels": example["label"], "pids": example["pid"]}
        if with_cameras:
            out["cameras"] = example["camid"]
        return out

    ds = _from_batches(batches, signature)
    ds = ds.map(decode_and_augment, num_parallel_calls=_parallelism(cfg), deterministic=True)
    return _finish(ds.batch(batch_size, drop_remainder=True), cfg)


def eval_clip_batches(
    index: TrackletIndex,
    input_config,
    *,
    clip_len: int,
    batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
    any_frame_size: bool = False,
) -> tuple[Iterator[dict], int]:
    """NL3D evaluation input: every tracklet as non-overlapping clips, the last one loop-padded.

    Args:
      index: the query or gallery tracklets (the whole set, on every process).
      input_config: `config.input` (frame size, parallelism).
      clip_len: frames per clip.
      batch_size: clips per batch on this process.
      process_index: this process.
      process_count: number of processes; each runs the same number of batches.
      any_frame_size: frames smaller than the configured size are resized up instead of refused
        (your own tracklets, `vreid_jax.deploy.extract`; prepared datasets are stored at least that large).

    Returns:
      (iterator, num_batches). Each batch: {'clips': uint8 [batch_size, T, H, W, 3],
      'tracklet': int32 [batch_size] (row of `index`, -1 for padding), 'cameras': int32
      [batch_size] (the tracklet's 0-based camid, 0 for padding), 'mask': bool [batch_size]}.
      Global batch b (processes in order) holds clips [b n B, (b + 1) n B) of the tracklet-ordered
      clip list, so only the last global batches carry padding.
    """
    cfg = input_config
    check_frame_size(index, cfg, "evaluation", any_frame_size)
    tracklets, frames = sampling.clip_chunks(index.lengths, clip_len)
    items, num_batches = sampling.process_items(
        len(tracklets), batch_size, process_index, process_count
    )

    def batches():
        for start in range(0, len(items), batch_size):
            batch = items[start : start + batch_size]
            mask = batch >= 0
            rows = np.where(mask, tracklets[batch], -1)
            yield {
                "frames": np.array(
                    [
                        [index.frames[rows[i]][f] for f in frames[item]]
                        if mask[i]
                        else [b""] * clip_len
                        for i, item in enumerate(batch)
                    ],
                    dtype=object,
                ),
                "tracklet": rows.astype(np.int32),
                "cameras": np.where(mask, index.camids[np.maximum(rows, 0)], 0).astype(np.int32),
                "mask": mask,
            }

    signature = {
        "frames": tf.TensorSpec([batch_size, clip_len], tf.string),
        "tracklet": tf.TensorSpec([batch_size], tf.int32),
        "cameras": tf.TensorSpec([batch_size], tf.int32),
        "mask": tf.TensorSpec([batch_size], tf.bool),
    }

    def decode(example):
        clip = tf.cond(
            example["mask"],
            lambda: augment.decode_clip(
                example["frames"], clip_len, cfg.height, cfg.width, cfg.resize
            ),
            lambda: tf.zeros([clip_len, cfg.height, cfg.width, 3], tf.uint8),
        )
        return {
            "clips": clip,
            "tracklet": example["tracklet"],
            "cameras": example["cameras"],
            "mask": example["mask"],
        }

    ds = _from_batches(batches, signature)
    ds = ds.map(decode, num_parallel_calls=_parallelism(cfg), deterministic=True)
    return _finish(ds.batch(batch_size, drop_remainder=True), cfg), num_batches


def eval_frame_batches(
    index: TrackletIndex,
    input_config,
    *,
    batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
    any_frame_size: bool = False,
) -> tuple[Iterator[dict], int]:
    """GLTR evaluation input: every frame of every tracklet once, in order, in fixed-size batches.

    The evaluator rebuilds each tracklet's sequence from (tracklet, position); `index.lengths` gives
    its length. Arguments as `eval_clip_batches`.

    Returns:
      (iterator, num_batches). Each batch: {'frames': uint8 [batch_size, H, W, 3],
      'tracklet': int32 [batch_size] (-1 for padding), 'position': int32 [batch_size] (frame within
      its tracklet), 'mask': bool [batch_size]}. Global batch b holds frames [b n B, (b + 1) n B)
      of the tracklet-ordered frame list.
    """
    cfg = input_config
    check_frame_size(index, cfg, "evaluation", any_frame_size)
    tracklets, positions = sampling.frame_chunks(index.lengths)
    items, num_batches = sampling.process_items(
        len(tracklets), batch_size, process_index, process_count
    )

    def batches():
        for start in range(0, len(items), batch_size):
            batch = items[start : start + batch_size]
            mask = batch >= 0
            rows = np.where(mask, tracklets[batch], -1)
            position = np.where(mask, positions[batch], -1)
            yield {
                "frame": np.array(
                    [
                        index.frames[r][f] if m else b""
                        for r, f, m in zip(rows, position, mask, strict=True)
                    ],
                    dtype=object,
                ),
                "tracklet": rows.astype(np.int32),
                "position": position.astype(np.int32),
                "mask": mask,
            }

    signature = {
        "frame": tf.TensorSpec([batch_size], tf.string),
        "tracklet": tf.TensorSpec([batch_size], tf.int32),
        "position": tf.TensorSpec([batch_size], tf.int32),
        "mask": tf.TensorSpec([batch_size], tf.bool),
    }

    def decode(example):
        image = tf.cond(
            example["mask"],
            lambda: augment.decode_frame(example["frame"], cfg.height, cfg.width, cfg.resize),
            lambda: tf.zeros([cfg.height, cfg.width, 3], tf.uint8),
        )
        return {
            "frames": image,
            "tracklet": example["tracklet"],
            "position": example["position"],
            "mask": example["mask"],
        }

    ds = _from_batches(batches, signature)
    ds = ds.map(decode, num_parallel_calls=_parallelism(cfg), deterministic=True)
    return _finish(ds.batch(batch_size, drop_remainder=True), cfg), num_batches


def check_frame_size(
    index: TrackletIndex, input_config, what: str, any_frame_size: bool = False
) -> None:
    """Errors if the split is empty or the configured frame size exceeds the stored frames (unless
    `any_frame_size`)."""
    if len(index) == 0:
        raise UserError(
            f"The {what} split is empty: check config.data.name and config.data.data_dir."
        )
    if any_frame_size:
        return
    height, width = index.frame_size()
    for key, want, have in (
        ("height", input_config.height, height),
        ("width", input_config.width, width),
    ):
        if want > have:
            raise UserError(
                f"config.input.{key}={want} exceeds the stored {what} frames, which are "
                f"{height}x{width} (height x width); lower config.input.{key} or rebuild the dataset "
                "with a larger `--resize` in `python -m data_prep.build`."
            )


def _from_batches(batches, signature) -> tf.data.Dataset:
    """A dataset of single examples from a generator of whole batches.

    Crossing from Python into tf.data costs far more per call than per byte, so the generator hands
    over a batch at a time and tf.data splits it; the decode map then runs outside the GIL.
    """
    return tf.data.Dataset.from_generator(batches, output_signature=signature).unbatch()


def _parallelism(cfg) -> int:
    return tf.data.AUTOTUNE if cfg.num_parallel_calls < 0 else cfg.num_parallel_calls


def _finish(ds: tf.data.Dataset, cfg) -> Iterator[dict]:
    options = tf.data.Options()
    # No pipeline runs tf.data's autotuner. Its thread sleeps for a period that doubles from 10 ms
    # up to a minute, and deleting an iterator waits for the current sleep to end: that held up
    # the end of every evaluation (benchmarks/README.md, "Evaluation throughput") and the exit of
    # every training run, by up to a minute after its final report. AUTOTUNE parallelism
    # (`config.input.num_parallel_calls=-1`) is then one call per input thread.
    options.autotune.enabled = False
    if cfg.threadpool_size > 0:
        options.threading.private_threadpool_size = cfg.threadpool_size
    ds = ds.with_options(options).prefetch(cfg.prefetch)
    return ds.as_numpy_iterator()
