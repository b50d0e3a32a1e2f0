r"""Converts a raw dataset folder into TFRecord shards (TFDS layout), atomically.

  python -m data_prep.build --dataset mars --manual_dir /data/raw/MARS --data_dir /data/tfds \
      [--resize 256x128] [--skip_bad] [--overwrite]

The dataset is written into a hidden temporary folder inside `data_dir` and moved to
`<data_dir>/<name>/` only once complete, so an interrupted or failed build leaves no partial
dataset (stale temporary folders are removed by the next build). A complete dataset is left alone
unless `overwrite` is set.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile

from absl import app, flags, logging

from data_prep import locks, quiet_tensorflow_logs, registry
from data_prep.index import DataPrepError


def parse_size(text: str) -> tuple[int, int]:
    """Parses 'HxW' (e.g. '256x128') into (height, width)."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise DataPrepError(f"--resize expects HxW such as 256x128, got {text!r}") from None
    if height <= 0 or width <= 0:
        raise DataPrepError(f"--resize needs positive sizes, got {text!r}")
    return height, width


def dataset_dir(dataset: str, data_dir: str) -> str:
    """The folder holding a built dataset's shards and `dataset_info.json`."""
    from data_prep.builders import VERSION  # noqa: PLC0415  (keeps TFDS out of cheap imports)

    return os.path.join(data_dir, dataset, VERSION)


def is_built(dataset: str, data_dir: str) -> bool:
    """True if `data_dir` holds a complete build of `dataset`."""
    registry.get(dataset)
    return os.path.exists(os.path.join(dataset_dir(dataset, data_dir), "dataset_info.json"))


def _prepare(dataset, manual_dir, tmp_root, resize, skip_bad) -> list[str]:
    """Runs the TFDS builder into `tmp_root`; returns the skipped-tracklet messages."""
    import tensorflow_datasets as tfds  # noqa: PLC0415

    from data_prep.builders import BUILDERS  # noqa: PLC0415

    builder = BUILDERS[dataset](data_dir=tmp_root, resize=resize, skip_bad=skip_bad)
    config = tfds.download.DownloadConfig(manual_dir=manual_dir, try_download_gcs=False)
    builder.download_and_prepare(download_config=config, file_format="tfrecord")
    return builder.skipped


def build(
    dataset: str,
    manual_dir: str,
    data_dir: str,
    *,
    resize: tuple[int, int] | None = None,
    skip_bad: bool = False,
    overwrite: bool = False,
) -> str:
    """Builds `dataset` from the raw folder `manual_dir` into `data_dir`.

    Args:
      dataset: 'mars', 'dukev', 'ilidsvid', 'prid2011' or 'lsvid'.
      manual_dir: the raw dataset as downloaded (see each parser's `EXPECTED_TREE`).
      data_dir: TFDS data folder; the dataset lands in `<data_dir>/<dataset>/<version>/`.
      resize: (height, width) to resize every frame to, or None to keep the original bytes.
      skip_bad: skip (and report) bad tracklets instead of failing on the first one.
      overwrite: rebuild even if a complete build exists.

    Returns:
      The built dataset's directory.

    Raises:
      DataPrepError: missing or bad input (the message names the file and row).
    """
    registry.get(dataset)
    if not os.path.isdir(manual_dir):
        raise DataPrepError(
            f"Missing manual_dir {manual_dir!r}. Expected layout:\n{registry.get(dataset).EXPECTED_TREE}"
        )
    out = dataset_dir(dataset, data_dir)
    if is_built(dataset, data_dir) and not overwrite:
        logging.info("%s is already built in %s (pass overwrite to rebuild)", dataset, out)
        return out
    try:
        os.makedirs(data_dir, exist_ok=True)
    except OSError as e:
        raise DataPrepError(f"Cannot create data_dir {data_dir!r}: {e.strerror}") from None
    try:
        with locks.exclusive(
            data_dir, f".{dataset}.build.lock", f"A build of {dataset} in {data_dir}"
        ):
            skipped = _build_locked(dataset, manual_dir, data_dir, resize, skip_bad)
    except locks.LockHeld as e:
        raise DataPrepError(str(e)) from None
    except PermissionError as e:
        raise DataPrepError(f"Cannot write into data_dir {data_dir!r}: {e.strerror}") from None
    for message in skipped:
        logging.warning("skipped: %s", message)
    logging.info("Built %s in %s (%d bad tracklets skipped)", dataset, out, len(skipped))
    return out


def _build_locked(dataset, manual_dir, data_dir, resize, skip_bad) -> list[str]:
    """The build proper, with the build lock held: no other build's temporary folder is live."""
    prefix = f".{dataset}-building-"
    for stale in glob.glob(os.path.join(data_dir, prefix + "*")):
        shutil.rmtree(stale, ignore_errors=True)
    tmp_root = tempfile.mkdtemp(prefix=prefix, dir=data_dir)
    try:
        skipped = _prepare(dataset, manual_dir, tmp_root, resize, skip_bad)
        final = os.path.join(data_dir, dataset)
        if os.path.exists(final):
            os.rename(final, os.path.join(tmp_root, "replaced"))
        os.rename(os.path.join(tmp_root, dataset), final)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    return skipped


FLAGS = flags.FLAGS


def _define_flags() -> None:
    # Defined only when run as a script, so importing `build` never claims global flag names.
    flags.DEFINE_enum("dataset", None, sorted(registry.DATASETS), "Dataset to convert.")
    flags.DEFINE_string("manual_dir", None, "Raw dataset folder, as downloaded.")
    flags.DEFINE_string("data_dir", None, "TFDS data folder to write into.")
    flags.DEFINE_string("resize", None, "Resize every frame to HxW (e.g. 256x128).")
    flags.DEFINE_bool("skip_bad", False, "Skip and report bad tracklets instead of failing.")
    flags.DEFINE_bool("overwrite", False, "Rebuild even if a complete build exists.")
    flags.mark_flags_as_required(["dataset", "manual_dir", "data_dir"])


def main(argv):
    del argv
    quiet_tensorflow_logs()
    try:
        resize = parse_size(FLAGS.resize) if FLAGS.resize else None
        path = build(
            FLAGS.dataset,
            FLAGS.manual_dir,
            FLAGS.data_dir,
            resize=resize,
            skip_bad=FLAGS.skip_bad,
            overwrite=FLAGS.overwrite,
        )
    except DataPrepError as e:
        raise SystemExit(f"error: {e}") from None
    print(path)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
