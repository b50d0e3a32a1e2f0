"""Re-linking quality on the synthetic video: broken ground-truth tracks, merged again.

`data_prep.synthetic_video` renders people walking across two cameras; every ground-truth track is
cut into up to three fragments with gaps of 0-5 frames (`tests/track_helpers.fragment_video`).
Features are each person's rendered traits (one-hot) plus a per-camera offset and Gaussian noise
of `--noise` per dimension (`tests/track_helpers.trait_features`): a stand-in for a trained model's
features, of controlled quality, not features computed from the pixels. For each noise level and
threshold, `vreid_jax.deploy.relink.relink` merges the fragments; the record holds pairwise merge
precision/recall/F1 over fragments and IDF1 against the ground truth, before and after.

With `--workdir RUN` (a trained run, e.g. the demo's `runs/demo`), the features are instead the
run's own, extracted from the pixels of the video's broken tracks (`cam<c>/tracks.txt`) by
`vreid_jax.deploy.extract`: the quality a user gets on this video ("noise" is then "model"). The video is
then `synthetic_video`'s default size unless --people/--frames say otherwise.

Run: python benchmarks/relink.py [--people 12 --frames 300 --noise 0.05 0.1 0.2
      --thresholds 0.2 0.3 0.4 0.5]
     python benchmarks/relink.py --workdir runs/demo --people 6 --frames 200 \
      --thresholds 0.3 0.5 0.7 0.9 1.0 1.1
Writes benchmarks/results/relink.json (relink_model.json with --workdir) and prints one line per
(noise, threshold).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import common  # benchmarks/common.py (this folder is on sys.path when run as a script)
import numpy as np

sys.path.insert(0, str(common.REPO / "tests"))
from track_helpers import fragment_video, trait_features  # noqa: E402

from data_prep import synthetic_video  # noqa: E402
from vreid_jax.deploy import extract, relink, trained_model  # noqa: E402
from vreid_jax.deploy.tracks import feature_file, mot  # noqa: E402


def _scores(paths, truth, outputs):
    """Pairwise scores over fragments of the relinked files."""
    predicted, actual = [], []
    for fi, (path, out) in enumerate(zip(paths, outputs, strict=True)):
        old, new = mot.read(path), mot.read(out)
        new_id = {
            (f, *b): i for f, b, i in zip(new.frames, new.boxes.tolist(), new.ids, strict=True)
        }
        for tid, idx in old.track_rows().items():
            r = idx[0]
            predicted.append(int(new_id[old.frames[r], *old.boxes[r].tolist()]))
            actual.append(truth[fi, tid])
    return relink.pairwise_scores(predicted, actual)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=12)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise", type=float, nargs="+", default=[0.05, 0.1, 0.2])
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.2, 0.3, 0.4, 0.5])
    parser.add_argument("--max_gap", type=int, default=None)
    parser.add_argument("--workdir", default="", help="A trained run: features from its model.")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "video")
        video = synthetic_video.generate(
            root, args.seed, num_people=args.people, num_frames=args.frames
        )
        rng = np.random.default_rng(args.seed)
        cameras = video["cameras"]
        if args.workdir:  # The video's own broken tracks, and the run's features of them.
            paths = [os.path.join(root, c, "tracks.txt") for c in cameras]
            truth = {
                (fi, int(t)): person
                for fi, c in enumerate(cameras)
                for t, person in video["fragments"][c].items()
            }
        else:
            paths, truth = fragment_video(root, rng, cameras=cameras)
        gts = [mot.read(os.path.join(root, c, "gt", "gt.txt")) for c in cameras]
        before = relink.idf1(list(zip(gts, [mot.read(p) for p in paths], strict=True)))
        for noise in ["model"] if args.workdir else args.noise:
            features = os.path.join(tmp, f"features_{noise}.npz")
            if args.workdir:
                tracklets = extract.read_tracklets(
                    paths, [os.path.join(root, c, "img1") for c in cameras]
                )
                loaded = trained_model.load(args.workdir)
                feature_file.save(features, extract.extract(loaded, tracklets, progress=False))
            else:
                feature_file.save(
                    features, trait_features(paths, truth, video["people"], rng, noise)
                )
            for threshold in args.thresholds:
                out_dir = os.path.join(tmp, f"out_{noise}_{threshold}")
                start = time.perf_counter()
                report = relink.relink(paths, features, out_dir, threshold, args.max_gap)
                seconds = time.perf_counter() - start
                after = relink.idf1(list(zip(gts, map(mot.read, report["outputs"]), strict=True)))
                row = {
                    "noise": noise,
                    "threshold": threshold,
                    **_scores(paths, truth, report["outputs"]),
                    "idf1_before": before["idf1"],
                    "idf1_after": after["idf1"],
                    "fragments": report["num_fragments"],
                    "groups": report["num_groups"],
                    "people": args.people,
                    "relink_s": seconds,
                }
                rows.append(row)
                print(
                    f"noise {noise} threshold {threshold}: precision {row['precision']:.3f} "
                    f"recall {row['recall']:.3f} IDF1 {before['idf1']:.3f} -> "
                    f"{after['idf1']:.3f} ({row['fragments']} fragments -> {row['groups']} "
                    f"tracks, {args.people} people, {seconds:.2f} s)",
                    flush=True,
                )
    spec = {k: v for k, v in vars(args).items() if k != "out"}
    name = "relink_model" if args.workdir else "relink"
    common.write_result(name, {"spec": spec, "rows": rows, "machine": common.machine()}, args.out)


if __name__ == "__main__":
    main()
