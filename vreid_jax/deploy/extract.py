r"""Features of your own tracklets from a trained workdir, computed as its evaluation computes them.

  vreid-extract --workdir RUN --tracklets FOLDER --out features.npz
  vreid-extract --workdir RUN --tracklets gt.txt --frames img1/ --out features.npz
  vreid-extract --workdir RUN --tracklets tracks.txt --frames video.mp4 --out f.npz
  vreid-extract --workdir RUN --tracklets cam1/tracks.txt --frames cam1/img1 \
      --tracklets cam2/tracks.txt --frames cam2/img1 --out f.npz

Each `--tracklets` is a folder of tracklet folders (`<track_id>/<frames>.jpg|png`, optionally under
a `<camera>/` level) or a MOT track file (`frame,id,x,y,w,h,...`) whose boxes are cropped from its
`--frames` (a folder of numbered frames or a video file; one `--frames` per track file, in order).
The camera of a track file's tracks is its `--camera`, else named after the file
(`sources.camera_name`). The features file is described in
`vreid_jax.deploy.tracks.feature_file`; `vreid-search` and `relink` read it.

Extraction uses the run's evaluation settings and the same compiled, fixed-shape functions: NL3D
averages T-frame clips, GLTR encodes every frame and runs its temporal head over the whole tracklet;
any tracklet length runs without recompiling, on every device. TF-CLIP averages clips as NL3D does;
your cameras are not its training cameras, so every tracklet gets the mean of its camera
embeddings (`models.registry.UNKNOWN_CAMERAS`, recorded in the file's provenance).
"""

from __future__ import annotations

import os
import sys

from absl import flags, logging

from vreid_jax import cli, errors

FLAGS = flags.FLAGS


def _define_flags() -> None:
    # Defined only when run as a script, so importing this module claims no global flag names.
    flags.DEFINE_string("workdir", None, "A training run's workdir.")
    flags.DEFINE_string("checkpoint", "latest", "'latest', 'best' or a checkpoint step folder.")
    flags.DEFINE_multi_string(
        "tracklets", None, "A folder of tracklet folders, or a MOT track file; repeat for several."
    )
    flags.DEFINE_multi_string(
        "frames", [], "Per MOT track file, in order: its frames folder or video."
    )
    flags.DEFINE_multi_string("camera", [], "Per MOT track file, in order: its camera name.")
    flags.DEFINE_string("out", None, "The features file to write (.npz).")
    flags.DEFINE_bool("skip_bad", False, "Skip unreadable frames and boxes outside the image.")
    flags.DEFINE_integer("min_boxes", 1, "With MOT track files: leave out shorter tracks.")
    flags.mark_flags_as_required(["workdir", "tracklets", "out"])


def read_tracklets(
    tracklets: list[str], frames: list[str], cameras=(), *, skip_bad=False, min_boxes=1
):
    """The tracklets of every source: a folder (`sources.from_folder`) or a MOT track file
    (`sources.from_mot`), the i-th track file with the i-th of `frames` (and of `cameras`)."""
    from vreid_jax.deploy.tracks import sources  # noqa: PLC0415  (after the TF set-up)

    track_files = [t for t in tracklets if not os.path.isdir(t)]
    if len(frames) != len(track_files) or (cameras and len(cameras) != len(track_files)):
        raise errors.UserError(
            f"{len(track_files)} --tracklets are not folders and are read as MOT track files "
            f"({track_files}); each needs its --frames (the frames folder or the video its boxes "
            f"are in), in the same order, and --camera is given for all or none; got "
            f"{len(frames)} --frames and {len(cameras)} --camera."
        )
    frames_of = dict(zip(track_files, frames, strict=True))
    camera_of = dict(zip(track_files, cameras or [None] * len(track_files), strict=True))
    out = []
    for source in tracklets:
        if source in frames_of:
            out += sources.from_mot(
                source,
                frames_of[source],
                camera=camera_of[source],
                skip_bad=skip_bad,
                min_boxes=min_boxes,
            )
        else:
            out += sources.from_folder(source, skip_bad=skip_bad)
    return out


def extract(trained_model, tracklets, *, progress: bool = True):
    """Features of `tracklets` (`sources.Tracklet`s) as a `feature_file.TrackletFeatures`."""
    import tqdm  # noqa: PLC0415

    from vreid_jax.deploy.tracks import sources  # noqa: PLC0415
    from vreid_jax.evaluation import features  # noqa: PLC0415

    t = trained_model
    # Your cameras are not the training cameras: no camera ids (`registry.UNKNOWN_CAMERAS`).
    extractor = features.extractor_for(t.model, t.config, t.mesh, cameras=False)
    bars = []

    def bar(total):
        bars.append(tqdm.tqdm(total=total, unit="batch", disable=not progress, file=sys.stderr))
        return lambda: bars[-1].update(1)

    try:
        values = extractor(
            t.variables, sources.to_index(tracklets), any_frame_size=True, progress=bar
        )
    finally:
        for b in bars:
            b.close()
    provenance = {**t.provenance(), "num_tracklets": len(tracklets)}
    return sources.to_features(tracklets, values, provenance)


def main(argv):
    cli.no_arguments(argv)
    cli.start(tensorflow=True)
    import jax  # noqa: PLC0415  (after the start-up)

    from vreid_jax.deploy import trained_model  # noqa: PLC0415
    from vreid_jax.deploy.tracks import feature_file  # noqa: PLC0415

    model = trained_model.load(
        FLAGS.workdir, FLAGS.checkpoint
    )  # First: a wrong workdir fails fast.
    tracklets = read_tracklets(
        FLAGS.tracklets,
        FLAGS.frames,
        FLAGS.camera,
        skip_bad=FLAGS.skip_bad,
        min_boxes=FLAGS.min_boxes,
    )
    frames = sum(len(t.frames) for t in tracklets)
    logging.info("Read %d tracklets (%d frames) from %s.", len(tracklets), frames, FLAGS.tracklets)
    result = extract(model, tracklets)
    if jax.process_index() == 0:
        feature_file.save(FLAGS.out, result)
    print(
        f"Wrote {FLAGS.out}: {len(result)} tracklets x {result.dim} features "
        f"({result.model}, checkpoint step {model.step})."
    )


def cli_main():
    """The `vreid-extract` console script."""
    cli.launch(main, _define_flags)


if __name__ == "__main__":
    cli_main()
