"""`python -m vreid_jax.deploy.extract` from a folder source against the evaluation's extraction.

Writes the frames of an in-memory set of JPEG tracklets to `<tmp>/<track>/<n>.jpg`, then times:
reading the folder source (every frame read and decoded once, `tracks.sources.from_folder`),
extraction of those tracklets (`vreid_jax.deploy.extract.extract`), and the evaluation's extractor on the
in-memory index of the same frames (`features.extractor_for`, as `benchmarks/feature_extraction.py`
runs it). `extract` compiles its functions on each call, as one command does: it compares with the
evaluation's first call (compilation included); the evaluation's second call gives the rate without
compilation. The model has random weights: speed does not depend on them.

Run: python benchmarks/extract.py --model gltr [--tracklets 8 --frames 32]
Small smoke run: --height 64 --width 32 --stage_sizes 1,1,1,1 --width_channels 8 --out /tmp/x.json
Adds one entry to benchmarks/results/extract.json and prints a one-line summary.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import common


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("nl3d", "gltr"), default="gltr")
    parser.add_argument("--tracklets", type=int, default=8)
    parser.add_argument("--frames", type=int, default=32, help="Frames per tracklet.")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--stage_sizes", default="", help="e.g. 1,1,1,1 (default: ResNet-50).")
    parser.add_argument("--width_channels", type=int, default=64)
    parser.add_argument("--out", default="", help="Result JSON.")
    args = parser.parse_args()
    args.dtype = "float32"
    import jax  # noqa: PLC0415

    from vreid_jax import models, parallel
    from vreid_jax.data import fake  # noqa: PLC0415
    from vreid_jax.deploy import extract, trained_model  # noqa: PLC0415
    from vreid_jax.deploy.tracks import sources  # noqa: PLC0415
    from vreid_jax.evaluation import features
    from vreid_jax.training import state as state_lib  # noqa: PLC0415

    config = common.model_config(args)
    config.input.update(height=args.height, width=args.width)
    mesh = parallel.make_mesh()
    model = models.build_model(config.model, num_classes=625)
    init = lambda: state_lib.init_variables(model, state_lib.init_clips(config.input), 0)
    variables = jax.jit(init, out_shardings=parallel.replicated(mesh))()
    index = fake.make_index(
        [1] * args.tracklets,
        args.frames,
        height=args.height,
        width=args.width,
        content="textured",
        fmt="JPEG",
        train=False,
    )
    frames = args.tracklets * args.frames

    def timed(fn):
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    extractor = features.extractor_for(model, config, mesh)
    eval_first_s = timed(lambda: extractor(variables, index))
    eval_s = timed(lambda: extractor(variables, index))
    with tempfile.TemporaryDirectory() as root:
        for i, tracklet in enumerate(index.frames):
            os.makedirs(os.path.join(root, f"t{i}"))
            for n, data in enumerate(tracklet):
                with open(os.path.join(root, f"t{i}", f"{n}.jpg"), "wb") as f:
                    f.write(data)
        start = time.perf_counter()
        tracklets = sources.from_folder(root)
        read_s = time.perf_counter() - start
    meta = {"dataset": "none", "num_classes": 625, "input": {}}
    loaded = trained_model.TrainedModel(
        config, model, variables, mesh, step=0, checkpoint="", meta=meta
    )
    extract_s = timed(lambda: extract.extract(loaded, tracklets, progress=False))

    record = {
        "model": args.model,
        "frame": [args.height, args.width, 3],
        "tracklets": args.tracklets,
        "frames_per_tracklet": args.frames,
        "evaluation_frames_per_s": round(frames / eval_s, 2),
        "evaluation_first_call_frames_per_s": round(frames / eval_first_s, 2),
        "extract_frames_per_s": round(frames / extract_s, 2),
        "folder_read_frames_per_s": round(frames / read_s, 2),
        "extract_with_read_frames_per_s": round(frames / (extract_s + read_s), 2),
        "model_size": {"stage_sizes": args.stage_sizes or "resnet50", "width": args.width_channels},
        "machine": common.machine(),
    }
    key = f"{args.model}/{args.height}x{args.width}/" + (
        f"{args.stage_sizes or 'resnet50'}w{args.width_channels}/{record['machine']['backend']}"
    )
    written = common.merge_result("extract", key, record, args.out)
    print(
        f"extract {key}: evaluation {record['evaluation_frames_per_s']} frames/s (first call "
        f"{record['evaluation_first_call_frames_per_s']}), extract "
        f"{record['extract_frames_per_s']} (reading the folder {record['folder_read_frames_per_s']}"
        f"; both {record['extract_with_read_frames_per_s']}) -> {written}"
    )


if __name__ == "__main__":
    main()
