"""Whole-tracklet features in fixed shapes, on every device.

How a model turns a tracklet into one feature is declared in its registry entry
(`models.registry.ModelSpec.extraction`); `extractor_for` picks the matching extractor, so a new
model with an existing kind of extraction touches nothing here.

Nothing compiled here depends on tracklet length: clip extractors see fixed-size batches of T-frame
clips, frame-sequence extractors a fixed-size batch of frames for the encoder and tracklets padded to
a few length buckets for the temporal head. So a 920-frame tracklet neither recompiles nor runs out
of memory. Batches arrive as uint8 pixels and are normalised inside the compiled functions
(`vreid_jax.data.pixels`).
"""

from __future__ import annotations

import collections
import functools

import jax
import numpy as np
from jax.experimental import multihost_utils

from vreid_jax import parallel
from vreid_jax.data import pipeline, pixels
from vreid_jax.errors import UserError
from vreid_jax.models import registry

# ----------------------------------------------------------------------------- compiled functions
# Module-level and pure, so that tests can count their traces (`chex.assert_max_traces`).


def clip_features(model, variables, clips):
    """Features `[B, D]` of uint8 clips `[B, T, H, W, 3]`."""
    return model.apply(variables, pixels.normalize(clips), train=False)[0]


def frame_features(model, variables, frames):
    """Per-frame features `[B, F]` of uint8 frames `[B, H, W, 3]` (`encode_frames`)."""
    return model.apply(variables, pixels.normalize(frames), train=False, method="encode_frames")


def sequence_features(model, variables, frame_feats, mask):
    """Tracklet features `[B, D]` of padded frame features `[B, L, F]` and their mask `[B, L]`."""
    return model.apply(variables, frame_feats, mask, train=False, method="temporal_head")


# ----------------------------------------------------------------------------- extractors


class ClipAverage:
    """Every T-frame clip of a tracklet through the whole model; the tracklet's feature is the mean
    (or max, `config.eval.aggregate`) of its clips' features. NL3D's evaluation."""

    def __init__(self, model, config, mesh):
        self.config, self.mesh = config, mesh
        self._clips = _jit(functools.partial(clip_features, model), mesh, num_batched=1)
        self._batch = _process_batch(config.eval.batch_size, mesh, "config.eval.batch_size")

    def lowered(self, variables) -> dict:
        """`{name: jax.stages.Lowered}`: the compiled function of an evaluation, lowered at its
        global input shape for `variables` (arrays or `ShapeDtypeStruct`s); for sizing it
        (`vreid_jax.preflight`) without running it."""
        cfg = self.config.input
        shape = (self.config.eval.batch_size, cfg.clip_len, cfg.height, cfg.width, 3)
        return {"clip_features": self._clips.lower(variables, _batched(shape, "uint8", self.mesh))}

    def __call__(self, variables, index, *, any_frame_size=False, progress=None) -> np.ndarray:
        """Features [num_tracklets, D] of every tracklet in `index`, in index order.

        `any_frame_size`: see `pipeline.eval_clip_batches`. `progress(num_batches)` is called
        once with the number of batches, and returns a callback called after each batch.
        """
        cfg = self.config
        batches, num_batches = pipeline.eval_clip_batches(
            index,
            cfg.input,
            clip_len=cfg.input.clip_len,
            batch_size=self._batch,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
            any_frame_size=any_frame_size,
        )
        fn = functools.partial(self._clips, variables)
        feats, fields = _run_batches(fn, batches, num_batches, self.mesh, ("clips",), progress)
        keep = fields["mask"]
        return _segment_reduce(
            feats[keep], fields["tracklet"][keep], len(index), cfg.eval.aggregate
        )


class FrameSequence:
    """Every frame through the model's frame encoder in fixed-size batches, then the temporal head
    over the whole tracklet, padded to a length bucket with a mask. GLTR's evaluation; the model
    provides `encode_frames` and `temporal_head` methods."""

    def __init__(self, model, config, mesh):
        self.config, self.mesh = config, mesh
        self._encode = _jit(functools.partial(frame_features, model), mesh, num_batched=1)
        self._head = _jit(functools.partial(sequence_features, model), mesh, num_batched=2)
        self._batch = _process_batch(
            config.eval.frame_batch_size, mesh, "config.eval.frame_batch_size"
        )

    def lowered(self, variables) -> dict:
        """`{name: jax.stages.Lowered}` as `ClipAverage.lowered`: the frame encoder at
        `config.eval.frame_batch_size` frames and the temporal head at the largest length bucket
        (one tracklet per device), its largest input."""
        cfg = self.config.input
        frames = _batched(
            (self.config.eval.frame_batch_size, cfg.height, cfg.width, 3), "uint8", self.mesh
        )
        feature_dim = jax.eval_shape(self._encode, variables, frames).shape[-1]
        length = max(self.config.eval.length_buckets)
        rows = self.mesh.devices.size
        return {
            "frame_features": self._encode.lower(variables, frames),
            "sequence_features": self._head.lower(
                variables,
                _batched((rows, length, feature_dim), "float32", self.mesh),
                _batched((rows, length), "bool", self.mesh),
            ),
        }

    def __call__(self, variables, index, *, any_frame_size=False, progress=None) -> np.ndarray:
        """Features [num_tracklets, D] of every tracklet in `index`, in index order; the keyword
        arguments as `ClipAverage`'s (the progress counts frame batches)."""
        batches, num_batches = pipeline.eval_frame_batches(
            index,
            self.config.input,
            batch_size=self._batch,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
            any_frame_size=any_frame_size,
        )
        fn = functools.partial(self._encode, variables)
        frame_feats, fields = _run_batches(
            fn, batches, num_batches, self.mesh, ("frames",), progress
        )
        keep = fields["mask"]
        return self._heads(
            variables,
            frame_feats[keep],
            fields["tracklet"][keep],
            fields["position"][keep],
            len(index),
        )

    def _heads(self, variables, frame_feats, tracklet, position, num_tracklets):
        """Runs the temporal head over whole tracklets, padded to length buckets with a mask."""
        lengths = np.bincount(tracklet, minlength=num_tracklets)
        buckets = np.array([bucket_length(n, self.config.eval.length_buckets) for n in lengths])
        head_batch = self.mesh.devices.size  # One tracklet per device per call.
        out = None
        for bucket in np.unique(buckets):
            ids = np.flatnonzero(buckets == bucket)
            padded_count = -(-len(ids) // head_batch) * head_batch
            seqs = np.zeros((padded_count, bucket, frame_feats.shape[1]), np.float32)
            mask = np.zeros((padded_count, bucket), bool)
            rows = np.searchsorted(ids, tracklet)
            sel = np.isin(tracklet, ids)
            seqs[rows[sel], position[sel]] = frame_feats[sel]
            mask[rows[sel], position[sel]] = True
            for start in range(0, padded_count, head_batch):
                local = _process_rows(start, head_batch)
                arrays = parallel.host_to_global({"f": seqs[local], "m": mask[local]}, self.mesh)
                feats = _gather(self._head(variables, arrays["f"], arrays["m"]))
                if out is None:
                    out = np.zeros((num_tracklets, feats.shape[1]), np.float32)
                valid = ids[start : start + head_batch]
                out[valid] = feats[: len(valid)]
        return out


EXTRACTORS = {registry.CLIP_AVERAGE: ClipAverage, registry.FRAME_SEQUENCE: FrameSequence}


def extractor_for(model, config, mesh):
    """The extractor the registry declares for `config.model.name`, compiled for `mesh`; reuse it
    across evaluations (no recompiles)."""
    return EXTRACTORS[registry.spec(config.model.name).extraction](model, config, mesh)


def bucket_length(length: int, buckets) -> int:
    """The smallest bucket that holds `length` frames; beyond the largest, a multiple of it."""
    for bucket in sorted(buckets):
        if length <= bucket:
            return int(bucket)
    largest = max(buckets)
    return int(-(-length // largest) * largest)


# ----------------------------------------------------------------------------- helpers

# Evaluation batches dispatched ahead of the one being brought back to the host.
_IN_FLIGHT = 2


def _jit(fn, mesh, num_batched: int):
    """`fn(variables, *batched)` jitted with replicated variables and batch-sharded arrays."""
    data = parallel.data_sharding(mesh)
    return jax.jit(
        fn,
        in_shardings=(parallel.replicated(mesh),) + (data,) * num_batched,
        out_shardings=data,
    )


def _batched(shape, dtype, mesh) -> jax.ShapeDtypeStruct:
    """A global array of `shape` split over 'data' by its first axis, abstractly."""
    return jax.ShapeDtypeStruct(shape, np.dtype(dtype), sharding=parallel.data_sharding(mesh))


def _process_batch(global_batch: int, mesh, what: str) -> int:
    """This process's share of a global evaluation batch (which must divide over the devices)."""
    parallel.check_divisible(global_batch, mesh, what)
    return global_batch // jax.process_count()


def _gather(x):
    """Host numpy of a (possibly multi-host) global array or of a process-local numpy array."""
    if jax.process_count() == 1:
        return np.asarray(x)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _run_batches(fn, batches, num_batches: int, mesh, array_keys: tuple[str, ...], progress=None):
    """Runs `fn(*arrays)` over batches sharded on 'data'; returns gathered host outputs and the
    gathered non-array fields (tracklet ids, masks, positions) of every batch, concatenated.

    The device is kept busy: batch i + 1 is read, transferred and dispatched before batch i's
    output is brought back (`_IN_FLIGHT` batches at a time), so reading, transfers and compute
    overlap instead of taking turns.
    """
    outputs, fields = [], {}
    advance = progress(num_batches) if progress else lambda: None
    in_flight = collections.deque()

    def collect_oldest():
        output, batch = in_flight.popleft()
        outputs.append(_gather(output))
        for key, value in batch.items():
            if key not in array_keys:
                fields.setdefault(key, []).append(_gather(value))
        advance()

    for _ in range(num_batches):
        batch = next(batches)
        arrays = parallel.host_to_global({k: batch[k] for k in array_keys}, mesh)
        output = fn(*(arrays[k] for k in array_keys))
        if jax.process_count() == 1:
            output.copy_to_host_async()  # The copy back starts as soon as the result is ready.
        in_flight.append((output, batch))
        if len(in_flight) > _IN_FLIGHT:
            collect_oldest()
    while in_flight:
        collect_oldest()
    return np.concatenate(outputs), {k: np.concatenate(v) for k, v in fields.items()}


def _segment_reduce(values, segment_ids, num_segments: int, how: str) -> np.ndarray:
    """Mean or max of `values` rows per segment (tracklet)."""
    out_shape = (num_segments,) + values.shape[1:]
    if how == "mean":
        sums = np.zeros(out_shape, np.float64)
        np.add.at(sums, segment_ids, values)
        counts = np.bincount(segment_ids, minlength=num_segments).astype(np.float64)
        return (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)
    if how == "max":
        out = np.full(out_shape, -np.inf, np.float32)
        np.maximum.at(out, segment_ids, values)
        return out
    raise UserError(f"config.eval.aggregate={how!r}; expected 'mean' or 'max'.")


def _process_rows(start: int, global_batch: int) -> slice:
    """This process's rows of the global batch that starts at `start`."""
    per_process = global_batch // jax.process_count()
    begin = start + jax.process_index() * per_process
    return slice(begin, begin + per_process)
