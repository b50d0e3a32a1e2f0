"""Evaluation at MARS scale: feature-extraction frames/s next to the ranking time.

Runs the project's evaluator (`vreid_jax.evaluation.features.extractor_for`: tf.data decode of every frame,
fixed-shape batches sharded over the devices, the compiled eval forward pass, per-tracklet
aggregation) over an in-memory set of 256x128 JPEG tracklets (a first call compiles, then
`--repeats` timed calls), and also times the compiled forward pass alone on a device-resident batch,
called back to back as many times as there are batches: end to end over compute only says how well
reading and transfers hide behind compute. The extraction rate is projected to MARS (query +
gallery, about 658k frames) and set next to the measured MARS-scale ranking time from
`benchmarks/evaluate_rank.py` (distances + evaluate_rank, itself checked there against the
straightforward per-query loop): evaluation should be bounded by feature extraction, not ranking.

Run: python benchmarks/feature_extraction.py --model gltr [--tracklets 8 --frames 32 --batch 32]
     python benchmarks/feature_extraction.py --model tfclip [--vit_size 64,2,4,64]
Small smoke run: --height 64 --width 32 --stage_sizes 1,1,1,1 --width_channels 8 --out /tmp/x.json
Adds one entry to benchmarks/results/feature_extraction.json and prints a one-line summary.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import common

MARS_EVAL_FRAMES = 657_709  # MARS query + gallery tracklets without junk (released info/*.mat).


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("nl3d", "gltr", "tfclip"), default="gltr")
    parser.add_argument("--tracklets", type=int, default=8)
    parser.add_argument("--frames", type=int, default=32, help="Frames per tracklet.")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--batch", type=int, default=0, help="Eval batch (0: the config's).")
    parser.add_argument("--stage_sizes", default="", help="e.g. 1,1,1,1 (default: ResNet-50).")
    parser.add_argument("--width_channels", type=int, default=64)
    parser.add_argument(
        "--vit_size", default="", help="TF-CLIP's WIDTH,LAYERS,HEADS,OUTPUT_DIM (ViT-B/16)."
    )
    parser.add_argument("--repeats", type=int, default=3, help="Timed runs of each (median).")
    parser.add_argument("--label", default="", help="Suffix of the result key (e.g. before).")
    parser.add_argument("--out", default="", help="Result JSON.")
    args = parser.parse_args()
    import jax  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    from vreid_jax import models, parallel
    from vreid_jax.data import fake  # noqa: PLC0415
    from vreid_jax.evaluation import features  # noqa: PLC0415

    config = common.model_config(args)
    config.input.update(height=args.height, width=args.width)
    if args.batch:
        config.eval.update(batch_size=args.batch, frame_batch_size=args.batch)
    mesh = parallel.make_mesh()
    model = models.build_model(config.model, num_classes=625)
    clip_shape = (1, config.input.clip_len, args.height, args.width, 3)
    variables = jax.jit(lambda k: model.init(k, np.zeros(clip_shape, np.float32), train=False))(
        jax.random.key(0)
    )
    index = fake.make_index(
        [1] * args.tracklets,
        args.frames,
        height=args.height,
        width=args.width,
        content="textured",
        fmt="JPEG",
        train=False,
    )
    extractor = features.extractor_for(model, config, mesh)
    start = time.perf_counter()
    extractor(variables, index)
    first_s = time.perf_counter() - start
    extract_times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        extractor(variables, index)
        extract_times.append(time.perf_counter() - start)
    extract_s = statistics.median(extract_times)
    frames = args.tracklets * args.frames

    # The compiled forward pass alone on one device-resident batch, called back to back as many
    # times as the end-to-end run has batches: the rate with no reading and no transfers.
    if args.model == "gltr":
        batch = config.eval.frame_batch_size
        fn, shape, per_item = extractor._encode, (batch, args.height, args.width, 3), 1
    else:
        batch, clip_len = config.eval.batch_size, config.input.clip_len
        fn, shape, per_item = (
            extractor._clips,
            (batch, clip_len, args.height, args.width, 3),
            clip_len,
        )
    num_batches = -(-frames // (batch * per_item))
    host = {"x": np.zeros(shape, np.uint8)}
    if "cameras" in getattr(extractor, "_array_keys", ()):  # TF-CLIP: clips and their cameras
        host["cameras"] = np.zeros((batch,), np.int32)
    on_devices = parallel.host_to_global(host, mesh)
    inputs = [on_devices[k] for k in host]
    jax.block_until_ready(fn(variables, *inputs))
    compute_times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        jax.block_until_ready([fn(variables, *inputs) for _ in range(num_batches)])
        compute_times.append(time.perf_counter() - start)
    compute_frames_per_s = num_batches * batch * per_item / statistics.median(compute_times)

    frames_per_s = frames / extract_s
    ranking = json.loads((common.RESULTS / "evaluate_rank.json").read_text())
    ranking_s = ranking["distance_s"] + ranking["evaluate_rank_standard_s"]
    mars_extract_s = MARS_EVAL_FRAMES / frames_per_s
    record = {
        "model": args.model,
        "dtype": args.dtype,
        "frame": [args.height, args.width, 3],
        "tracklets": args.tracklets,
        "frames_per_tracklet": args.frames,
        "eval_batch": batch,
        "extraction_frames_per_s": round(frames_per_s, 2),
        "compute_only_frames_per_s": round(compute_frames_per_s, 2),
        "end_to_end_over_compute": round(frames_per_s / compute_frames_per_s, 3),
        "eval_batches": num_batches,
        "extract_s_runs": [round(t, 2) for t in extract_times],
        "compute_s_runs": [round(t, 2) for t in compute_times],
        "first_call_s": round(first_s, 2),  # Compilation included.
        "mars_eval_frames": MARS_EVAL_FRAMES,
        "mars_projected_extraction_s": round(mars_extract_s, 1),
        "mars_ranking_s": round(ranking_s, 3),  # From results/evaluate_rank.json.
        "ranking_share_of_eval": round(ranking_s / (ranking_s + mars_extract_s), 5),
        "model_size": (
            {"vit": args.vit_size or "768,12,12,512"}
            if args.model == "tfclip"
            else {"stage_sizes": args.stage_sizes or "resnet50", "width": args.width_channels}
        ),
        "machine": common.machine(),
    }
    size = f"{args.stage_sizes or 'resnet50'}w{args.width_channels}"
    if args.model == "tfclip":
        size = f"vit{(args.vit_size or '768,12,12,512').replace(',', '_')}"
    key = f"{args.model}/{args.dtype}/{args.height}x{args.width}/" + (
        f"{size}/{record['machine']['backend']}/b{batch}" + (f"/{args.label}" if args.label else "")
    )
    written = common.merge_result("feature_extraction", key, record, args.out)
    print(
        f"feature_extraction {key}: {frames_per_s:.1f} frames/s end to end "
        f"({compute_frames_per_s:.1f} compute only, "
        f"{100 * record['end_to_end_over_compute']:.0f}%) -> MARS ({MARS_EVAL_FRAMES:,} frames) "
        f"{mars_extract_s / 60:.1f} min of extraction vs {ranking_s:.2f} s of ranking "
        f"({100 * record['ranking_share_of_eval']:.3f}% of eval) -> {written}"
    )


if __name__ == "__main__":
    main()
