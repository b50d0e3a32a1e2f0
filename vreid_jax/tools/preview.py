r"""Shows what the network is fed: the dataset summary and a contact sheet of sampled training clips.

  python -m vreid_jax.tools.preview --config configs/demo.py --out clips.png [--num_clips 8] \
      [--step 0] [--config.input.pad=0 ...]

Prints the summary table (identities, tracklets, cameras, frames, encoded size per split) and the
evaluation chunk counts, then writes a PNG with one row per clip of the training batch at `--step`
(frames left to right, augmented exactly as in training).
"""

from __future__ import annotations

import numpy as np
from absl import flags, logging
from ml_collections import config_flags
from PIL import Image, ImageDraw

from vreid_jax import cli, config_lib, files
from vreid_jax.data import sampling

_LABEL_WIDTH = 56  # Pixels left of each row for its pid and label.


def contact_sheet(clips: np.ndarray, pids: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """One row per clip, frames left to right, with 'pid/label' written left of each row.

    Args:
      clips: uint8 [N, T, H, W, 3] pixels, as the pipeline delivers them.
      pids: [N] raw person ids.
      labels: [N] training labels.

    Returns:
      uint8 [N * (H + 2), label width + T * (W + 2), 3].
    """
    pixels = np.asarray(clips)
    n, t, h, w, _ = pixels.shape
    sheet = np.full((n * (h + 2), _LABEL_WIDTH + t * (w + 2), 3), 255, np.uint8)
    for i in range(n):
        for j in range(t):
            top, left = i * (h + 2) + 1, _LABEL_WIDTH + j * (w + 2) + 1
            sheet[top : top + h, left : left + w] = pixels[i, j]
    image = Image.fromarray(sheet)
    draw = ImageDraw.Draw(image)
    for i in range(n):
        draw.text((2, i * (h + 2) + h // 2 - 5), f"{pids[i]}/{labels[i]}", fill=(0, 0, 0))
    return np.asarray(image)


def write_png(image: np.ndarray, path: str) -> None:
    """Writes `image` to `path` as PNG atomically (`vreid_jax.files.atomic_write`)."""
    with files.atomic_write(path, "wb") as f:
        Image.fromarray(image).save(f, format="PNG")


def preview(config, out: str, *, num_clips: int = 8, step: int = 0) -> str:
    """Logs and returns the dataset summary; writes the contact sheet of step `step` to `out`."""
    from vreid_jax.data import datasets, pipeline  # noqa: PLC0415  (TensorFlow after quieting it)

    data = datasets.load(config.data, gallery=config.eval.gallery, seed=config.seed)
    text = data.log_summary()
    clip_len = config.input.clip_len
    for split, index in (("query", data.query), ("gallery", data.gallery)):
        clips = len(sampling.clip_chunks(index.lengths, clip_len)[0])
        text += (
            f"\n{split}: {clips} evaluation clips of {clip_len} frames, {index.num_frames} frames"
        )
    batches = pipeline.train_batches(
        data.train, config.input, seed=config.seed, start_step=step, shrink_ids_to_dataset=True
    )
    batch = next(batches)
    sheet = contact_sheet(
        batch["clips"][:num_clips], batch["pids"][:num_clips], batch["labels"][:num_clips]
    )
    write_png(sheet, out)
    text += f"\nWrote {min(num_clips, len(batch['clips']))} clips of step {step} to {out}."
    return text


FLAGS = flags.FLAGS


def _define_flags() -> None:
    # Defined only when run as a script, so importing this module never claims global flag names.
    config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
    flags.DEFINE_string("out", "clips.png", "Where to write the contact sheet (PNG).")
    flags.DEFINE_integer("num_clips", 8, "Clips shown (rows of the sheet).")
    flags.DEFINE_integer("step", 0, "Training step whose batch is shown.")
    flags.mark_flags_as_required(["config"])


def main(argv):
    cli.no_arguments(argv)
    config_lib.validate(FLAGS.config)
    cli.start(tensorflow=True)
    print(preview(FLAGS.config, FLAGS.out, num_clips=FLAGS.num_clips, step=FLAGS.step))


def cli_main():
    # The summary is printed by `main`; don't log it twice.
    cli.launch(main, _define_flags, verbosity=logging.WARNING)


if __name__ == "__main__":
    cli_main()
