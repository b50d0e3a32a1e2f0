"""Samplers in pure numpy: which identities, tracklets and frames make each batch.

Determinism. Every random draw comes from a generator seeded by a tuple such as
(seed, purpose, epoch, lane): the batch at step s is a pure function of (seed, s), so a run resumed
at step s sees exactly the data an uninterrupted run would have seen.

Lanes. A global batch holds P identities. Identity `label` always travels in lane `label % P`, and
lane j fills slot j of every batch. Process p of n (n divides P) owns the lanes j with
`j % n == p`, i.e. exactly the identities with `label % n == p`, so each process needs the encoded
frames of its own identity slice only, and the union of the processes' local batches is the
single-process batch, clip for clip. The price: two identities of the same lane never meet in one
batch (about 1/P of all pairs); every other pair does.

The epoch kind and the temporal sampler are named by the config (`choices.EPOCHS`,
`choices.TEMPORAL_SAMPLERS`), whose values `config_lib.validate` checked before any data was read.
"""

from __future__ import annotations

import math

import numpy as np

from vreid_jax.errors import UserError

# Purposes, mixed into every seed so that the streams are independent.
_IDENTITIES, _TRACKLETS, _FRAMES, _AUGMENT = range(4)


def rng(*key: int) -> np.random.Generator:
    """A generator seeded by a tuple of non-negative ints (numpy's SeedSequence mixes them)."""
    return np.random.default_rng([int(k) for k in key])


def steps_per_epoch(
    label_counts: np.ndarray, num_ids_per_batch: int, num_instances: int, epoch: str
) -> int:
    """Steps in one epoch of the PK sampler (the same on every process).

    Args:
      label_counts: tracklets per training label, over all processes, [num_classes].
      num_ids_per_batch: P.
      num_instances: K.
      epoch: 'identity' (every identity once: ceil(num_classes / P) steps) or 'tracklet'
        (torchreid's groups of K tracklets per identity, at least one group each: groups // P steps).
        In the tracklet epoch each lane serves its own shuffled groups, cycling or cut short to the
        epoch's length, so identities are drawn in proportion to their groups within a lane, and
        every tracklet about once per epoch only where lanes hold similar numbers of groups.
    """
    num_classes = len(label_counts)
    if epoch == "identity":
        return math.ceil(num_classes / num_ids_per_batch)
    groups = int(_groups_per_label(label_counts, num_instances).sum())  # epoch == 'tracklet'
    return max(1, groups // num_ids_per_batch)


def _groups_per_label(label_counts: np.ndarray, num_instances: int) -> np.ndarray:
    # torchreid's RandomIdentitySampler: an identity with fewer than K tracklets makes one group (drawn
    # with replacement); otherwise floor(count / K) groups, the leftover tracklets wait for the next epoch.
    return np.maximum(1, np.asarray(label_counts) // num_instances)


class PKSampler:
    """P identities x K tracklets per global batch; yields this process's share of each step.

    Attributes:
      local_lanes: the lanes (batch slots) this process fills, ascending.
      steps_per_epoch: steps in one epoch.
    """

    def __init__(
        self,
        labels: np.ndarray,
        label_counts: np.ndarray,
        *,
        num_ids_per_batch: int,
        num_instances: int,
        epoch: str = "identity",
        seed: int = 0,
        process_index: int = 0,
        process_count: int = 1,
    ):
        """Builds the sampler.

        Args:
          labels: training label of each tracklet this process holds, in index order.
          label_counts: tracklets per label over all processes, [num_classes].
          num_ids_per_batch: P, identities per global batch.
          num_instances: K, tracklets per identity.
          epoch: 'identity' or 'tracklet' (see `steps_per_epoch`).
          seed: the run's seed (non-negative).
          process_index: this process.
          process_count: processes sharing the global batch; divides P
            (`parallel.check_train_batch`).
        """
        num_classes = len(label_counts)
        if num_ids_per_batch > num_classes:
            raise UserError(
                f"config.input.num_ids_per_batch={num_ids_per_batch} exceeds the {num_classes} "
                "training identities of the dataset."
            )
        self.P, self.K, self.epoch, self.seed = num_ids_per_batch, num_instances, epoch, seed
        self.label_counts = np.asarray(label_counts)
        self.steps_per_epoch = steps_per_epoch(self.label_counts, self.P, self.K, epoch)
        self.local_lanes = np.arange(process_index, self.P, process_count)
        labels = np.asarray(labels)
        self._rows = {int(label): np.flatnonzero(labels == label) for label in np.unique(labels)}
        foreign = [label for label in self._rows if label % process_count != process_index]
        if foreign:
            raise ValueError(
                f"Process {process_index} of {process_count} holds training label {foreign[0]}: "
                "the index is not this process's identity slice (label % process_count == "
                "process_index)."
            )
        for lane in self.local_lanes:
            for label in range(lane, num_classes, self.P):
                if len(self._rows.get(label, ())) != self.label_counts[label]:
                    raise ValueError(
                        f"Process {process_index} of {process_count} holds "
                        f"{len(self._rows.get(label, ()))} tracklets of training label {label}, "
                        f"expected {self.label_counts[label]}: the index is not this process's "
                        "identity slice (label % process_count == process_index)."
                    )

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """This process's share of the batch at `step`.

        Returns:
          (rows, lanes, instances), each [P_local * K]: the index row of each clip, its lane and its
          position k < K within the lane; ordered lane by lane. (lane, k) names a clip of the global
          batch, so it keys the clip's further random draws.
        """
        epoch, t = divmod(step, self.steps_per_epoch)
        rows = [self._lane_rows(epoch, t, step, int(lane)) for lane in self.local_lanes]
        lanes = np.repeat(self.local_lanes, self.K)
        instances = np.tile(np.arange(self.K), len(self.local_lanes))
        return np.concatenate(rows), lanes, instances

    def _lane_rows(self, epoch: int, t: int, step: int, lane: int) -> np.ndarray:
        lane_labels = np.arange(lane, len(self.label_counts), self.P)
        if self.epoch == "identity":
            # A fresh order of the lane's identities each epoch; a lane one identity short of the
            # longest repeats its first identity in the last step.
            order = rng(self.seed, _IDENTITIES, epoch, lane).permutation(len(lane_labels))
            label = int(lane_labels[order[t % len(lane_labels)]])
            rows = self._rows[label]
            return rows[_draw_k(rng(self.seed, _TRACKLETS, step, lane), len(rows), self.K)]
        groups = _groups_per_label(self.label_counts[lane_labels], self.K)
        group_labels = np.repeat(lane_labels, groups)
        group_ids = np.concatenate([np.arange(g) for g in groups])
        order = rng(self.seed, _IDENTITIES, epoch, lane).permutation(len(group_labels))
        pick = order[t % len(group_labels)]
        label, group = int(group_labels[pick]), int(group_ids[pick])
        rows = self._rows[label]
        # The label's tracklets in one shuffled order per epoch, cut into consecutive groups of K.
        shuffled = _draw_k(
            rng(self.seed, _TRACKLETS, epoch, label), len(rows), max(self.K, len(rows))
        )
        return rows[shuffled[group * self.K : (group + 1) * self.K]]


def _draw_k(generator: np.random.Generator, n: int, k: int) -> np.ndarray:
    """k draws from range(n): without replacement when n >= k, else all n once plus k - n repeats."""
    if n >= k:
        return generator.permutation(n)[:k]
    return np.concatenate([generator.permutation(n), generator.integers(0, n, k - n)])


def clip_rng(seed: int, step: int, lane: int, instance: int) -> np.random.Generator:
    """The generator for the frames of clip (lane, instance) at `step`."""
    return rng(seed, _FRAMES, step, lane, instance)


def augment_seed(seed: int, step: int, lane: int, instance: int) -> np.ndarray:
    """A TensorFlow stateless seed (int64 [2]) for the augmentation of one clip."""
    return rng(seed, _AUGMENT, step, lane, instance).integers(0, 2**31 - 1, size=2, dtype=np.int64)


# ----------------------------------------------------------------------------- temporal samplers


def restricted(length: int, clip_len: int, generator: np.random.Generator) -> np.ndarray:
    """One random frame from each of `clip_len` equal chunks of the whole tracklet.

    A tracklet shorter than the clip gives every frame once plus random repeats, sorted (BiCnet-TKS's
    `TemporalRestrictedCrop` draws all with replacement; repeating only where needed loses no frame).
    """
    if length < clip_len:
        return np.sort(_draw_k(generator, length, clip_len))
    return _one_per_chunk(np.arange(length), clip_len, generator)


def restricted_window(
    length: int, clip_len: int, generator: np.random.Generator, window: int
) -> np.ndarray:
    """The NL3D training clip: one random frame per chunk of a random `window`-frame span.

    With window 64 and clip 8: a random 64-frame window, cut into 8 chunks of 8, one random frame
    from each. A tracklet shorter than the window is loop-padded to it (frames 0..L-1, 0..L-1, ...).
    """
    if length >= window:
        start = generator.integers(0, length - window + 1)
        span = start + np.arange(window)
    else:
        span = np.arange(window) % length
    return _one_per_chunk(span, clip_len, generator)


def _one_per_chunk(span: np.ndarray, clip_len: int, generator: np.random.Generator) -> np.ndarray:
    # Chunk i is span[floor(i n / T) : floor((i + 1) n / T)]: equal sizes when T divides n.
    bounds = (np.arange(clip_len + 1) * len(span)) // clip_len
    return span[generator.integers(bounds[:-1], bounds[1:])]


def consecutive(length: int, clip_len: int, generator: np.random.Generator) -> np.ndarray:
    """`clip_len` consecutive frames from a random start; a short tracklet is loop-padded (GLTR)."""
    start = generator.integers(0, max(length - clip_len, 0) + 1)
    return (start + np.arange(clip_len)) % length


def evenly(length: int, clip_len: int, generator: np.random.Generator | None = None) -> np.ndarray:
    """`clip_len` frames at stride floor(L / T) from the first; short tracklets repeat the last frame.

    torchreid's 'evenly' convention (deterministic; `generator` is accepted for a uniform signature).
    """
    del generator
    if length < clip_len:
        return np.concatenate([np.arange(length), np.full(clip_len - length, length - 1)])
    return np.arange(clip_len) * (length // clip_len)


def sample_frames(
    name: str, length: int, clip_len: int, generator: np.random.Generator, *, window: int
) -> np.ndarray:
    """Frame indices [clip_len] of one training clip by the sampler `name` (config.input.train_sampler)."""
    if name == "restricted_window":
        return restricted_window(length, clip_len, generator, window)
    if name == "restricted":
        return restricted(length, clip_len, generator)
    if name == "consecutive":
        return consecutive(length, clip_len, generator)
    return evenly(length, clip_len)  # 'evenly'


# ----------------------------------------------------------------------------- evaluation chunks


def clip_chunks(lengths: np.ndarray, clip_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Every tracklet cut into non-overlapping `clip_len`-frame clips, in tracklet order.

    The last clip of a tracklet holds its remaining frames looped until it is full (Video-Person-ReID's
    'dense' test clips): a 10-frame tracklet with clips of 4 gives [0 1 2 3] [4 5 6 7] [8 9 8 9].

    Returns:
      (tracklet [num_clips], frames [num_clips, clip_len]).
    """
    tracklets, frames = [], []
    for i, length in enumerate(lengths):
        length = int(length)
        for start in range(0, length, clip_len):
            count = min(clip_len, length - start)
            frames.append(start + np.arange(clip_len) % count)
            tracklets.append(i)
    return np.asarray(tracklets, np.int32), np.asarray(frames, np.int32).reshape(-1, clip_len)


def frame_chunks(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every frame of every tracklet once, in order: (tracklet [num_frames], position [num_frames])."""
    lengths = np.asarray(lengths, np.int64)
    tracklets = np.repeat(np.arange(len(lengths), dtype=np.int32), lengths)
    starts = np.cumsum(lengths) - lengths
    positions = np.arange(int(lengths.sum())) - np.repeat(starts, lengths)
    return tracklets, positions.astype(np.int32)


def process_items(
    num_items: int, batch_size: int, process_index: int, process_count: int
) -> tuple[np.ndarray, int]:
    """Which items this process evaluates, padded so that every process runs the same batches.

    Batch b of process p holds items [(b n + p) B, (b n + p + 1) B), so the global batch at step b is
    the items [b n B, (b + 1) n B) in order and only the last global batches hold padding.

    Returns:
      (items [num_batches * batch_size] with -1 for padding, num_batches).
    """
    if batch_size <= 0:
        raise ValueError(f"Evaluation batch size must be positive, got {batch_size}.")
    num_batches = max(1, math.ceil(num_items / (batch_size * process_count)))
    batch = np.arange(num_batches)[:, None] * process_count + process_index
    items = (batch * batch_size + np.arange(batch_size)[None, :]).reshape(-1)
    return np.where(items < num_items, items, -1), num_batches
