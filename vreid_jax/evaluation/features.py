"""Whole-tracklet features in fixed shapes, on every device.

How a model turns a tracklet into one feature is declared in its registry entry
(`models.registry.ModelSpec.extraction`). Each kind of extraction is one class here (`EXTRACTORS`)
that owns all of it: the extraction itself, and the function, input signature and aggregation rule
that `vreid-export` writes (`signature`). A new model with an existing kind touches nothing here.

Nothing compiled here depends on tracklet length: clip extractors see fixed-size batches of T-frame
clips, frame-sequence extractors a fixed-size batch of frames for the encoder and tracklets padded to
a few length buckets for the temporal head. So a 920-frame tracklet neither recompiles nor runs out
of memory. Batches arrive as uint8 pixels and are normalised inside the compiled functions
(`vreid_jax.data.pixels`).

Nothing grows with the size of the test set but the result: each batch's outputs are folded into
their tracklets as they come back (a running sum of clip features; a tracklet's frame features until
its last frame arrives and the temporal head runs), so the host holds one feature per tracklet,
not one per clip or frame (681k frame features of 2,048 floats would be 5.6 GB on MARS).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from collections.abc import Callable

import jax
import numpy as np
from jax.experimental import multihost_utils

from vreid_jax import parallel
from vreid_jax.data import pipeline, pixels
from vreid_jax.errors import UserError
from vreid_jax.models import registry

# ----------------------------------------------------------------------------- compiled functions
# Module-level and pure, so that tests can count their traces (`chex.assert_max_traces`).


def clip_features(model, variables, clips, *cameras):
    """Features `[B, D]` of uint8 clips `[B, T, H, W, 3]` (and, for a model that takes cameras
    (`ModelSpec.takes_cameras`), their cameras `[B]`)."""
    inputs = {"cameras": cameras[0]} if cameras else {}
    return model.apply(variables, pixels.normalize(clips), train=False, **inputs)[0]


def clip_method(model, method: str, variables, clips):
    """`model.<method>` of uint8 clips `[B, T, H, W, 3]` (e.g. TF-CLIP's `memory_features`)."""
    return model.apply(variables, pixels.normalize(clips), method=method)


def frame_features(model, variables, frames):
    """Per-frame features `[B, F]` of uint8 frames `[B, H, W, 3]` (`encode_frames`)."""
    return model.apply(variables, pixels.normalize(frames), train=False, method="encode_frames")


def sequence_features(model, variables, frame_feats, mask):
    """Tracklet features `[B, D]` of padded frame features `[B, L, F]` and their mask `[B, L]`."""
    return model.apply(variables, frame_feats, mask, train=False, method="temporal_head")


def tracklet_features(model, variables, frames, mask):
    """Tracklet features `[B, D]` of uint8 frames `[B, L, H, W, 3]` padded to L, with their mask
    `[B, L]`: `frame_features` then `sequence_features`, as one function (the exported form)."""
    b, length = frames.shape[:2]
    frame_feats = frame_features(model, variables, frames.reshape((b * length,) + frames.shape[2:]))
    return sequence_features(model, variables, frame_feats.reshape((b, length, -1)), mask)


# ----------------------------------------------------------------------------- exported form


@dataclasses.dataclass(frozen=True)
class Port:
    """One input or output of an exported function; `shape` holds ints and symbolic names."""

    name: str
    shape: tuple
    dtype: str
    doc: str

    def record(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "doc": self.doc}


@dataclasses.dataclass(frozen=True)
class Signature:
    """A kind of extraction as one function of pixels, for export.

    Attributes:
      apply: `apply(variables, *inputs) -> features [B, D]`, a pure JAX function.
      inputs: its inputs, symbolic dimensions named.
      aggregation: how a tracklet's feature follows from the outputs, in words (`export.json`).
    """

    apply: Callable
    inputs: tuple[Port, ...]
    aggregation: str


# ----------------------------------------------------------------------------- extractors


class ClipAverage:
    """Every T-frame clip of a tracklet through the whole model; the tracklet's feature is the mean
    (or max, `config.eval.aggregate`) of its clips' features. NL3D's evaluation."""

    @staticmethod
    def signature(model, config) -> Signature:
        """Clips in, one feature per clip out; the caller aggregates over a tracklet's clips."""
        t, h, w = config.input.clip_len, config.input.height, config.input.width
        return Signature(
            apply=functools.partial(clip_features, model),
            inputs=(
                Port("clips", ("B", t, h, w, 3), "uint8", f"B clips of {t} consecutive frames"),
            ),
            aggregation=(
                f"The output is one feature per {t}-frame clip. A tracklet's feature is the "
                f"{config.eval.aggregate} over its consecutive non-overlapping {t}-frame clips; the "
                "last clip holds the remaining frames repeated in order until full (10 frames in "
                "clips of 4: [0 1 2 3] [4 5 6 7] [8 9 8 9]), as vreid_jax.data.sampling.clip_chunks."
            ),
        )

    def __init__(self, model, config, mesh, *, method: str | None = None, cameras: bool = True):
        """`method`: instead of the model's features, the mean over each tracklet's clips of
        `model.<method>(clips)` (no cameras). `cameras`: see `extractor_for`."""
        self.config, self.mesh, self._model = config, mesh, model
        self._aggregate = config.eval.aggregate
        if method is None:
            self._array_keys = ("clips",)
            if cameras and registry.spec(config.model.name).takes_cameras:
                self._array_keys = ("clips", "cameras")
            fn = functools.partial(clip_features, model)
        else:
            self._array_keys, self._aggregate = ("clips",), "mean"
            fn = functools.partial(clip_method, model, method)
        self._clips = _jit(fn, mesh, num_batched=len(self._array_keys))
        self._batch = _process_batch(config.eval.batch_size, mesh, "config.eval.batch_size")

    def lowered(self, variables) -> dict:
        """`{name: jax.stages.Lowered}`: the compiled function of an evaluation, lowered at its
        global input shape for `variables` (arrays or `ShapeDtypeStruct`s); for sizing it
        (`vreid_jax.training.preflight`) without running it."""
        cfg = self.config.input
        batch = self.config.eval.batch_size
        shape = (batch, cfg.clip_len, cfg.height, cfg.width, 3)
        inputs = [_batched(shape, "uint8", self.mesh)]
        if "cameras" in self._array_keys:
            inputs.append(_batched((batch,), "int32", self.mesh))
        return {"clip_features": self._clips.lower(variables, *inputs)}

    def __call__(self, variables, index, *, any_frame_size=False, progress=None) -> np.ndarray:
        """Features [num_tracklets, D] of every tracklet in `index`, in index order.

        `any_frame_size`: see `pipeline.eval_clip_batches`. `progress(num_batches)` is called
        once with the number of batches, and returns a callback called after each batch.
        """
        cfg = self.config
        if "cameras" in self._array_keys:
            check_cameras(self._model, index, "evaluation")
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
        pooled = _Pooled(len(index), self._aggregate)
        _run_batches(fn, batches, num_batches, self.mesh, self._array_keys, pooled.add, progress)
        return pooled.result()


class FrameSequence:
    """Every frame through the model's frame encoder in fixed-size batches, then the temporal head
    over the whole tracklet, padded to a length bucket with a mask. GLTR's evaluation; the model
    provides `encode_frames` and `temporal_head` methods."""

    @staticmethod
    def signature(model, config) -> Signature:
        """Whole tracklets in (padded, with a mask), one feature per tracklet out."""
        h, w = config.input.height, config.input.width
        return Signature(
            apply=functools.partial(tracklet_features, model),
            inputs=(
                Port(
                    "frames", ("B", "L", h, w, 3), "uint8", "RGB frames of B tracklets padded to L"
                ),
                Port(
                    "mask", ("B", "L"), "bool", "True for real frames; padding (at the end) False"
                ),
            ),
            aggregation=(
                "The output is the tracklet feature: every frame through the frame encoder, then "
                "the temporal head over the masked sequence (one call per tracklet batch; any L)."
            ),
        )

    def __init__(self, model, config, mesh, *, cameras: bool = True):
        del cameras  # No model of this kind takes cameras (`registry.ModelSpec`).
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
        heads = _SequenceHeads(
            functools.partial(self._head, variables),
            index.lengths,
            self.config.eval.length_buckets,
            self.mesh,
        )
        fn = functools.partial(self._encode, variables)
        _run_batches(fn, batches, num_batches, self.mesh, ("frames",), heads.add, progress)
        return heads.result()


class _SequenceHeads:
    """Runs a temporal head over whole tracklets as their frame features arrive.

    A tracklet's frame features are collected until its last frame has come back; it then waits in
    the queue of its length bucket (padded, with a mask), and a full queue, one tracklet per device,
    goes through the head. Every process sees the same gathered features in the same order, so all
    call the head the same number of times (a multi-host requirement).
    """

    def __init__(self, head, lengths, length_buckets, mesh):
        self.head, self.lengths, self.mesh = head, np.asarray(lengths), mesh
        self.buckets = np.array([bucket_length(n, length_buckets) for n in self.lengths])
        self.batch = mesh.devices.size  # One tracklet per device per call.
        self.partial: dict[int, list] = {}  # tracklet -> [features [length, F], frames received]
        # bucket -> [(tracklet, features)] waiting for a full head batch
        self.queues: dict[int, list] = collections.defaultdict(list)
        self.out = None

    def add(self, frame_feats, fields) -> None:
        keep = fields["mask"]
        frame_feats = frame_feats[keep]
        tracklet, position = fields["tracklet"][keep], fields["position"][keep]
        for t in np.unique(tracklet):
            rows = tracklet == t
            entry = self.partial.setdefault(
                int(t), [np.zeros((self.lengths[t], frame_feats.shape[1]), np.float32), 0]
            )
            entry[0][position[rows]] = frame_feats[rows]
            entry[1] += int(rows.sum())
            if entry[1] == self.lengths[t]:
                del self.partial[int(t)]
                queue = self.queues[int(self.buckets[t])]
                queue.append((int(t), entry[0]))
                if len(queue) == self.batch:
                    self._run(int(self.buckets[t]))

    def result(self) -> np.ndarray:
        for bucket in sorted(self.queues):
            if self.queues[bucket]:
                self._run(bucket)
        if self.partial:
            raise RuntimeError(f"Tracklets {sorted(self.partial)[:5]} did not receive every frame.")
        return self.out

    def _run(self, bucket: int) -> None:
        """The head over the queue of `bucket` (padded to one tracklet per device)."""
        queue, self.queues[bucket] = self.queues[bucket], []
        seqs = np.zeros((self.batch, bucket, queue[0][1].shape[1]), np.float32)
        mask = np.zeros((self.batch, bucket), bool)
        for row, (_, feats) in enumerate(queue):
            seqs[row, : len(feats)] = feats
            mask[row, : len(feats)] = True
        local = _process_rows(0, self.batch)
        arrays = parallel.host_to_global({"f": seqs[local], "m": mask[local]}, self.mesh)
        feats = _gather(self.head(arrays["f"], arrays["m"]))
        if self.out is None:
            self.out = np.zeros((len(self.lengths), feats.shape[1]), np.float32)
        self.out[[t for t, _ in queue]] = feats[: len(queue)]


# The kinds of extraction, by the name a model's registry entry declares.
EXTRACTORS = {registry.CLIP_AVERAGE: ClipAverage, registry.FRAME_SEQUENCE: FrameSequence}


def kind_for(model_name: str):
    """The extractor class (`ClipAverage` or `FrameSequence`) the registry declares for a model."""
    return EXTRACTORS[registry.spec(model_name).extraction]


def extractor_for(model, config, mesh, *, cameras: bool = True):
    """The extractor the registry declares for `config.model.name`, compiled for `mesh`; reuse it
    across evaluations (no recompiles).

    `cameras`: a model that takes cameras (`ModelSpec.takes_cameras`) gets each tracklet's camera
    (the dataset's evaluation, whose cameras are the training cameras); False gives it none, and
    the model applies its rule for cameras it never saw (`registry.UNKNOWN_CAMERAS`): your own
    tracklets (`vreid-extract`), whose camera names mean nothing to the model."""
    return kind_for(config.model.name)(model, config, mesh, cameras=cameras)


def check_cameras(model, index, what: str) -> None:
    """Raises UserError when a tracklet of `index` has a camera the model has no embedding for
    (a model that takes cameras has `num_cameras`; JAX would clamp the index silently)."""
    if len(index) and int(index.camids.max()) >= model.num_cameras:
        raise UserError(
            f"The {what} tracklets have cameras up to {int(index.camids.max())} (0-based) but the "
            f"model has {model.num_cameras} camera embeddings: set config.model.tfclip.num_cameras "
            "to the dataset's number of cameras."
        )


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


def _run_batches(
    fn, batches, num_batches: int, mesh, array_keys: tuple[str, ...], consume, progress=None
) -> None:
    """Runs `fn(*arrays)` over batches sharded on 'data' and hands each batch's gathered host
    output, with its gathered non-array fields (tracklet ids, masks, positions), to
    `consume(output, fields)`, in batch order.

    The device is kept busy: batch i + 1 is read, transferred and dispatched before batch i's
    output is brought back (`_IN_FLIGHT` batches at a time), so reading, transfers and compute
    overlap instead of taking turns.
    """
    advance = progress(num_batches) if progress else lambda: None
    in_flight = collections.deque()

    def collect_oldest():
        output, batch = in_flight.popleft()
        fields = {k: _gather(v) for k, v in batch.items() if k not in array_keys}
        consume(_gather(output), fields)
        advance()

    for _ in range(num_batches):
        batch = next(batches)
        arrays = parallel.host_to_global({k: batch[k] for k in array_keys}, mesh)
        output = fn(*(arrays[k] for k in array_keys))
        if jax.process_count() == 1:
            output.copy_to_host_async()  # The copy back starts as soon as the result is ready.
        # Keep only the small fields: the pixels are on the device now.
        in_flight.append((output, {k: v for k, v in batch.items() if k not in array_keys}))
        if len(in_flight) > _IN_FLIGHT:
            collect_oldest()
    while in_flight:
        collect_oldest()


class _Pooled:
    """The mean or max (`config.eval.aggregate`) of clip features per tracklet, folded in batch by
    batch: what is held is one running row per tracklet."""

    def __init__(self, num_tracklets: int, how: str):
        self.num_tracklets, self.how = num_tracklets, how
        self.pooled = None
        self.counts = np.zeros(num_tracklets, np.int64)

    def add(self, feats, fields) -> None:
        keep = fields["mask"]
        feats, tracklet = feats[keep], fields["tracklet"][keep]
        if self.pooled is None:
            shape = (self.num_tracklets,) + feats.shape[1:]
            self.pooled = (
                np.zeros(shape, np.float64)
                if self.how == "mean"
                else np.full(shape, -np.inf, np.float32)
            )
        if self.how == "mean":
            np.add.at(self.pooled, tracklet, feats)
        else:
            np.maximum.at(self.pooled, tracklet, feats)
        np.add.at(self.counts, tracklet, 1)

    def result(self) -> np.ndarray:
        if self.how == "max":
            return self.pooled
        return (self.pooled / np.maximum(self.counts, 1)[:, None]).astype(np.float32)


def _process_rows(start: int, global_batch: int) -> slice:
    """This process's rows of the global batch that starts at `start`."""
    per_process = global_batch // jax.process_count()
    begin = start + jax.process_index() * per_process
    return slice(begin, begin + per_process)
