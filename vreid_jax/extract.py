r"""Features of your own tracklets from a trained workdir, computed as its evaluation computes them.

  python -m vreid_jax.extract --workdir RUN --tracklets FOLDER --out features.npz
  python -m vreid_jax.extract --workdir RUN --tracklets gt.txt --frames img1/ --out features.npz
  python -m vreid_jax.extract --workdir RUN --tracklets tracks.txt --frames video.mp4 --out f.npz

`--tracklets` is a folder of tracklet folders (`<track_id>/<frames>.jpg|png`, optionally under a
`<camera>/` level) or a MOT track file (`frame,id,x,y,w,h,...`) whose boxes are cropped from
`--frames` (a folder of numbered frames or a video file). The features file is described in
`vreid_jax.tracks.feature_file`; `python -m vreid_jax.search` and `relink` read it.

Extraction uses the run's evaluation settings and the same compiled, fixed-shape functions: NL3D
averages T-frame clips, GLTR encodes every frame and runs its temporal head over the whole tracklet;
any tracklet length runs without recompiling, on every device.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging

from vreid_jax import errors, logging_utils

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A training run's workdir.")
flags.DEFINE_string("checkpoint", "latest", "'latest', 'best' or a checkpoint step folder.")
flags.DEFINE_string("tracklets", None, "A folder of tracklet folders, or a MOT track file.")
flags.DEFINE_string("frames", None, "With a MOT track file: its frames folder or video file.")
flags.DEFINE_string("camera", None, "With a MOT track file: the camera name (default: its name).")
flags.DEFINE_string("out", None, "The features file to write (.npz).")
flags.DEFINE_bool("skip_bad", False, "Skip unreadable frames and boxes outside the image.")
flags.DEFINE_integer("min_boxes", 1, "With a MOT track file: leave out shorter tracks.")
flags.mark_flags_as_required(["workdir", "tracklets", "out"])


def read_tracklets(tracklets: str, frames: str | None, *, camera=None, skip_bad=False, min_boxes=1):
    """The tracklets of a folder source or of a MOT track file (`sources.from_folder/from_mot`)."""
    from vreid_jax.tracks import sources  # noqa: PLC0415  (after the TF set-up)

    if os.path.isdir(tracklets):
        if frames is not None or camera is not None:
            raise errors.UserError(
                "--frames and --camera go with a MOT track file; --tracklets is a folder."
            )
        return sources.from_folder(tracklets, skip_bad=skip_bad)
    if frames is None:
        raise errors.UserError(
            f"--tracklets {tracklets!r} is not a folder, so it is read as a MOT track file, which "
            "needs --frames (the frames folder or the video file its boxes are in)."
        )
    return sources.from_mot(
        tracklets, frames, camera=camera, skip_bad=skip_bad, min_boxes=min_boxes
    )


def extract(trained_model, tracklets, *, progress: bool = True):
    """Features of `tracklets` (`sources.Tracklet`s) as a `feature_file.TrackletFeatures`."""
    import tqdm  # noqa: PLC0415

    from vreid_jax import features  # noqa: PLC0415
    from vreid_jax.tracks import sources  # noqa: PLC0415

    t = trained_model
    extractor = features.extractor_for(t.model, t.config, t.mesh)
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
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    logging_utils.quiet_tensorflow()
    logging_utils.quiet_libraries()
    try:
        import jax  # noqa: PLC0415  (after the TF set-up)

        from vreid_jax import trained  # noqa: PLC0415
        from vreid_jax.tracks import feature_file  # noqa: PLC0415

        tracklets = read_tracklets(
            FLAGS.tracklets,
            FLAGS.frames,
            camera=FLAGS.camera,
            skip_bad=FLAGS.skip_bad,
            min_boxes=FLAGS.min_boxes,
        )
        frames = sum(len(t.frames) for t in tracklets)
        logging.info(
            "Read %d tracklets (%d frames) from %s.", len(tracklets), frames, FLAGS.tracklets
        )
        model = trained.load(FLAGS.workdir, FLAGS.checkpoint)
        result = extract(model, tracklets)
        if jax.process_index() == 0:
            feature_file.save(FLAGS.out, result)
        print(
            f"Wrote {FLAGS.out}: {len(result)} tracklets x {result.dim} features "
            f"({result.model}, checkpoint step {model.step})."
        )
    except errors.USER_ERRORS as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    app.run(main)
