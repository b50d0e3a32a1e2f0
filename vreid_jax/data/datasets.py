"""The dataset registry: loads a built dataset's splits into tracklet indices, per protocol.

`load` reads the training split once without decoding, keeping this process's identity slice in
memory (the P x K sampler needs random access). Query and gallery are streamed: their per-tracklet
arrays come from the build's metadata and their frames are read from the shards as evaluation
reaches them (`tracklets.StreamedFrames`), so a test set of any size costs no memory. With
`config.data.synthetic.enabled`, a missing dataset is first generated in the real on-disk layout and built by
the real converter (`data_prep`), once, by process 0.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import time
from collections.abc import Callable

import numpy as np
from absl import logging

from data_prep.names import GALLERY_WITHOUT_QUERIES, MULTI_SPLIT
from vreid_jax import logging_utils
from vreid_jax.data import tracklets
from vreid_jax.data.tracklets import TrackletIndex
from vreid_jax.errors import UserError

# How long other processes wait for process 0 to build a synthetic dataset.
_BUILD_WAIT_SECONDS = 3600.0


@dataclasses.dataclass(repr=False)
class ReidData:
    """One dataset, loaded for one process.

    Attributes:
      train: this process's identity slice of the training split (`label % process_count ==
        process_index`), with `label_counts` over all processes; None until `read_train` is called
        when loaded with `with_train=False`.
      query: every query tracklet (streamed).
      gallery: every gallery tracklet of the protocol (streamed); with the 'official' MARS/LS-VID
        gallery, the queries followed by `stored_gallery`.
      num_classes: training identities over all processes.
      num_train_tracklets: training tracklets over all processes.
      name: dataset name.
      protocol: e.g. 'mars-official', 'mars-torchreid', 'dukev', 'ilidsvid-split3'.
      gallery_choice: for datasets whose stored gallery excludes the queries (MARS, LS-VID), the
        `config.eval.gallery` in use: 'official' (`gallery` = query + stored gallery) or
        'torchreid' (the stored gallery alone); None for the others.
      stored_gallery: the gallery as stored (for MARS/LS-VID, without the queries; junk dropped).
      label_counts: training tracklets per label over all processes, from the build's metadata.
    """

    train: TrackletIndex | None
    query: TrackletIndex
    gallery: TrackletIndex
    num_classes: int
    num_train_tracklets: int
    name: str
    protocol: str
    gallery_choice: str | None = None
    stored_gallery: TrackletIndex | None = None
    label_counts: np.ndarray | None = None
    _read_train: Callable[[], TrackletIndex] | None = None

    def read_train(self) -> TrackletIndex:
        """Reads the training split's frames into `train` (this process's slice) and returns it.
        The loop calls it in a thread, while the model is built and its step compiled."""
        if self.train is None:
            self.train = self._read_train()
        return self.train

    def __repr__(self) -> str:
        return (
            f"ReidData({self.protocol}: train {self.train!r}, query {self.query!r}, "
            f"gallery {self.gallery!r})"
        )

    def gallery_features(self, extract, query_features: np.ndarray) -> np.ndarray:
        """The gallery's features by `extract(index)`, given the queries' own: when the gallery
        starts with the queries (MARS/LS-VID 'official'), theirs are reused, not extracted again."""
        if self.gallery_choice == "official":
            return np.concatenate([query_features, extract(self.stored_gallery)])
        return extract(self.gallery)

    def summary_rows(self) -> list[list]:
        """Rows of the summary table (header `tracklets.SUMMARY_HEADER`); train is this process's slice."""
        rows = [] if self.train is None else [self.train.summary_row("train (this process)")]
        return rows + [self.query.summary_row("query"), self.gallery.summary_row("gallery")]

    def log_summary(self) -> str:
        """Logs and returns the summary table."""
        title = (
            f"{self.name} ({self.protocol}): {self.num_classes} training identities, "
            f"{self.num_train_tracklets} training tracklets in all"
        )
        return logging_utils.log_table(title, tracklets.SUMMARY_HEADER, self.summary_rows())


def load(
    data_config,
    *,
    gallery: str = "official",
    seed: int = 0,
    process_index: int = 0,
    process_count: int = 1,
    with_train: bool = True,
) -> ReidData:
    """Loads `config.data` for this process.

    Args:
      data_config: `config.data`, as `config_lib.validate` checked it.
      gallery: `config.eval.gallery` (`choices.GALLERIES`), for MARS and LS-VID, whose stored
        gallery excludes the queries: 'official' = query + gallery (MARS-evaluation, AP3D: 11,310
        MARS tracklets), 'torchreid' = gallery alone (9,330). Junk tracklets (pid -1) are dropped
        from both; the ranking ignores them anyway.
      seed: seed of the synthetic dataset, if one is generated.
      process_index: this process.
      process_count: number of processes.
      with_train: read the training split's frames now (otherwise `read_train()` does, when asked;
        `num_classes` and `label_counts` come from the build's metadata either way).

    Raises:
      UserError: an empty split, a missing non-synthetic dataset.
    """
    name = data_config.name
    data_dir = ensure_built(data_config, seed=seed, process_index=process_index)
    import tensorflow as tf  # noqa: PLC0415  (TensorFlow and TFDS only when data is read)

    from data_prep import reader  # noqa: PLC0415

    split_index = data_config.split

    def split(split_name):
        """(metadata columns, opener of the examples) of a split, junk dropped from a stored
        gallery that excludes the queries."""
        columns = reader.split_columns(name, data_dir, split_name, split_index=split_index)
        drop_junk = split_name == "gallery" and name in GALLERY_WITHOUT_QUERIES
        if drop_junk:
            columns = {k: v[~columns["is_junk"]] for k, v in columns.items()}
        if not len(columns["key"]):
            raise UserError(
                f"The {split_name} split of {name!r} in config.data.data_dir={data_dir!r} is empty."
            )

        def open_split():
            ds = reader.read_split(name, data_dir, split_name, split_index=split_index)
            if drop_junk:
                ds = ds.filter(lambda example: ~example["is_junk"])
            # Without tf.data's autotuner, as every pipeline of `vreid_jax.data.pipeline`: a
            # streamed split's reader lives from one evaluation to the next, and deleting it
            # waited for the autotuner's current sleep, which doubles up to a minute.
            options = tf.data.Options()
            options.autotune.enabled = False
            return ds.with_options(options)

        return columns, open_split

    train_columns, open_train = split("train")
    label_counts = tracklets.count_labels(train_columns["label"], f"{name}/train")
    if label_counts is None:
        raise UserError(
            f"The training split of {name!r} in config.data.data_dir={data_dir!r} has unlabelled "
            "tracklets."
        )
    read_train = functools.partial(
        _read_train,
        open_train,
        train_columns,
        label_counts,
        f"{name}/train",
        process_index,
        process_count,
    )

    def streamed(split_name):
        columns, open_split = split(split_name)
        # Only what evaluation uses crosses into Python, read ahead while the current one is used.
        opener = lambda: (
            open_split()
            .map(lambda e: {"frames": e["frames"], "tracklet_key": e["tracklet_key"]})
            .prefetch(2)
            .as_numpy_iterator()
        )
        return tracklets.streamed(columns, opener, f"{name}/{split_name}")

    query = streamed("query")
    gallery_index = stored_gallery = streamed("gallery")
    protocol = name
    if name in GALLERY_WITHOUT_QUERIES:
        protocol = f"{name}-{gallery}"
        if gallery == "official":
            gallery_index = TrackletIndex.concatenate(query, stored_gallery)
    elif name in MULTI_SPLIT:
        protocol = f"{name}-split{split_index}"
    data = ReidData(
        train=None,
        query=query,
        gallery=gallery_index,
        num_classes=len(label_counts),
        num_train_tracklets=int(np.sum(label_counts)),
        name=name,
        protocol=protocol,
        gallery_choice=gallery if name in GALLERY_WITHOUT_QUERIES else None,
        stored_gallery=stored_gallery,
        label_counts=label_counts,
        _read_train=read_train,
    )
    if with_train:
        data.read_train()
    return data


def _read_train(
    open_split, columns, label_counts, source, process_index, process_count
) -> TrackletIndex:
    """This process's identity slice of the training split, frames in memory. Other processes'
    tracklets are dropped inside tf.data, before their frames reach Python."""
    ds = open_split()
    mine = columns["label"] % process_count == process_index
    if process_count > 1:
        ds = ds.filter(lambda example: example["label"] % process_count == process_index)
    return tracklets.from_split(
        ds.prefetch(4).as_numpy_iterator(),
        source=source,
        process_index=process_index,
        process_count=process_count,
        label_counts=label_counts,
        total=int(mine.sum()),
        progress=process_index == 0,
    )


def ensure_built(data_config, *, seed: int = 0, process_index: int = 0) -> str:
    """Returns the data folder holding the built dataset, generating a synthetic one if configured.

    Process 0 generates and builds; the others wait for the finished build (the builder moves the
    dataset into place only once it is complete, so its presence is the signal).
    """
    from data_prep import build  # noqa: PLC0415

    name, data_dir = data_config.name, data_config.data_dir
    synthetic_config = data_config.synthetic
    if synthetic_config.enabled and not data_dir:
        data_dir = default_synthetic_dir(data_config, seed)
    if not data_dir:
        raise UserError(
            "config.data.data_dir is empty: set it to the folder built by `python -m data_prep.build "
            f"--dataset {name} --manual_dir RAW --data_dir DIR`."
        )
    if build.is_built(name, data_dir):
        return data_dir
    if not synthetic_config.enabled:
        raise UserError(
            f"No built {name!r} dataset in config.data.data_dir={data_dir!r}. Build it with: "
            f"python -m data_prep.build --dataset {name} --manual_dir RAW --data_dir {data_dir} "
            "(or set config.data.synthetic.enabled=True for a generated stand-in)."
        )
    if process_index == 0:
        from data_prep import locks, synthetic  # noqa: PLC0415

        # Two runs starting on one synthetic dataset: the second waits for the first's build.
        with locks.exclusive(data_dir, f".{name}.synthetic.lock", "A synthetic build", wait=True):
            if build.is_built(name, data_dir):
                return data_dir
            raw = os.path.join(data_dir, "raw", name)
            logging.info("Generating a synthetic %s dataset in %s and building it.", name, raw)
            shutil.rmtree(raw, ignore_errors=True)  # Left over by an interrupted generation.
            synthetic.generate(name, raw, seed=seed, **generate_kwargs(synthetic_config))
            build.build(name, raw, data_dir)
        return data_dir
    deadline = time.monotonic() + _BUILD_WAIT_SECONDS
    while not build.is_built(name, data_dir):
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"Process {process_index} waited {_BUILD_WAIT_SECONDS:.0f} s for process 0 to build "
                f"the synthetic {name!r} dataset in config.data.data_dir={data_dir!r}."
            )
        time.sleep(1.0)
    return data_dir


def generate_kwargs(synthetic_config) -> dict:
    """`config.data.synthetic` less `enabled`: `data_prep.synthetic.generate`'s keyword arguments."""
    return {k: v for k, v in synthetic_config.items() if k != "enabled"}


def default_synthetic_dir(data_config, seed: int) -> str:
    """A per-user cache folder for a synthetic dataset, named by everything that shapes it."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    s = data_config.synthetic
    tag = (
        f"{data_config.name}_ids{s.num_ids}x{s.tracklets_per_id}"
        f"_len{s.min_len}-{s.max_len}_{s.height}x{s.width}_difficulty{s.difficulty:g}_seed{seed}"
    )
    return os.path.join(cache, "vreid_jax", "synthetic", tag)
