r"""Every data path at a real dataset's size: wall time and peak RSS of each step a user runs.

On synthetic data with the real statistics (`python -m data_prep.synthetic --scale real`) and a tiny
network (`configs/tiny.RECIPE_SIZE_KEYS`), so that only the data path is measured. Each step runs as
its own process, as a user runs it; its peak RSS is the kernel's (`os.wait4`):

1. generate: the raw tree in the dataset's real layout;
2. convert: `python -m data_prep.build`;
3. read_train: one pass over the training split's records, nothing kept (the reference for start-up);
4. decode: the evaluation's JPEG decoding alone (`augment.decode_frame` in tf.data, one call per
   core) over the first 50,000 test frames: the rate evaluation is bounded by;
5. start: `main` with `mode=train` for one step (loading the training split, compiling, the step,
   a checkpoint): training start-up;
6. eval: `main` with `mode=eval` from that checkpoint: every test frame, every protocol, reports;
7. extract: `python -m vreid_jax.deploy.extract` over MARS's test set laid out as tracklet folders (hard
   links; MARS only);
8. search: `python -m vreid_jax.deploy.search build` over those features and one `query` of 10 tracklets.

  python benchmarks/scale.py --dataset mars --root /tmp/scale_mars [--model gltr] [--scale real]
      [--steps generate,convert,...]   # Steps whose outputs exist are reused if not named.

`--model` picks the recipe (`configs/<model>_<dataset>.py`, GLTR by default). TF-CLIP's `start`
includes its CLIP-Memory pass: every training frame through the encoder before the step.

Adds the entry `<dataset>` (GLTR) or `<dataset>_<model>` to benchmarks/results/scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

import common

STEPS = ("generate", "convert", "read_train", "decode", "start", "eval", "extract", "search")
DATASETS = ("mars", "lsvid")
MODELS = ("gltr", "nl3d", "tfclip")
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def measured(command: list[str], env: dict | None = None) -> dict:
    """Runs `command` from the repository root; its wall time, peak RSS and last output lines."""
    start = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=_REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(command)} failed:\n{output[-4000:]}")
    return {
        "seconds": round(seconds, 1),
        "peak_rss_gib": round(usage.ru_maxrss / 2**20, 3),
        "output_tail": output.strip().splitlines()[-3:],
    }


def size_flags() -> list[str]:
    """`--config.` flags of the tiny network and frames (`configs/tiny.RECIPE_SIZE_KEYS`)."""
    sys.path.insert(0, _REPO)
    from configs import tiny  # noqa: PLC0415

    return [f"--config.{k}={v}" for k, v in tiny.RECIPE_SIZE_KEYS.items()]


_READ_TRAIN = """
import sys, time
from data_prep import reader
start, frames, nbytes = time.perf_counter(), 0, 0
for example in reader.read_split(sys.argv[1], sys.argv[2], "train").as_numpy_iterator():
    frames += len(example["frames"]); nbytes += sum(len(f) for f in example["frames"])
print(f"frames={frames} bytes={nbytes} seconds={time.perf_counter() - start:.1f}")
"""

_DECODE = """
import os, sys, time
import tensorflow as tf
from data_prep import reader
from vreid_jax.data import augment
height, width, limit = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
ds = reader.read_split(sys.argv[1], sys.argv[2], "gallery").map(lambda e: e["frames"]).unbatch()
ds = ds.take(limit)
frames = [f for f in ds.as_numpy_iterator()]  # Read first: only the decoding is timed.
decode = lambda f: augment.decode_frame(f, height, width, "bilinear")
start = time.perf_counter()
images = tf.data.Dataset.from_tensor_slices(frames).map(decode, num_parallel_calls=os.cpu_count())
count = sum(int(b.shape[0]) for b in images.batch(256))
print(f"frames={count} frames_per_s={count / (time.perf_counter() - start):.0f}")
"""


def tracklet_folders(raw: str, out: str) -> int:
    """MARS's test frames as `<out>/<camera>/<tracklet>/<frame>.jpg` hard links (extract's folder
    source), from the release's names (`0001C1T0001F001.jpg`: pid, camera, tracklet, frame); junk
    and distractors included, as a tracker would give them. Returns the number of tracklets."""
    tracklets = set()
    root = os.path.join(raw, "bbox_test")
    for pid in sorted(os.listdir(root)):
        for name in os.listdir(os.path.join(root, pid)):
            tracklet, frame = name[:11], name[12:]
            folder = os.path.join(out, f"c{name[5]}", tracklet)
            if tracklet not in tracklets:
                os.makedirs(folder)
                tracklets.add(tracklet)
            os.link(os.path.join(root, pid, name), os.path.join(folder, frame))
    return len(tracklets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=DATASETS, default="mars")
    parser.add_argument("--model", choices=MODELS, default="gltr")
    parser.add_argument("--root", required=True, help="Folder for the raw tree, shards and runs.")
    parser.add_argument("--scale", default="real", help="'real' or a fraction of the dataset.")
    parser.add_argument("--steps", default=",".join(STEPS))
    parser.add_argument("--decode_frames", type=int, default=50_000)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    raw, data_dir = os.path.join(args.root, "raw"), os.path.join(args.root, "data")
    workdir, folders = os.path.join(args.root, "run"), os.path.join(args.root, "tracklets")
    features, index = os.path.join(args.root, "test.npz"), os.path.join(args.root, "gallery.npz")
    py = sys.executable
    main_flags = [
        "--config", f"configs/{args.model}_{args.dataset}.py", "--workdir", workdir,
        f"--config.data.data_dir={data_dir}", "--config.model.pretrained=",
        *size_flags(),
        # The size keys' 16-frame batches would measure the per-batch overhead of 41k batches:
        # 256 frames a batch (GLTR's frames; NL3D's and TF-CLIP's 64 clips of 4).
        "--config.eval.frame_batch_size=256", "--config.eval.batch_size=64",
    ]  # fmt: skip
    commands = {
        "generate": [py, "-m", "data_prep.synthetic", "--layout", args.dataset, "--scale",
                     args.scale, "--out", raw, "--seed", "0"],
        "convert": [py, "-m", "data_prep.build", "--dataset", args.dataset, "--manual_dir", raw,
                    "--data_dir", data_dir],
        "read_train": [py, "-c", _READ_TRAIN, args.dataset, data_dir],
        "decode": [py, "-c", _DECODE, args.dataset, data_dir, "64", "32", str(args.decode_frames)],
        "start": [py, "-m", "vreid_jax.main", *main_flags, "--config.mode=train",
                  "--config.num_train_steps=1"],
        "eval": [py, "-m", "vreid_jax.main", *main_flags, "--config.mode=eval"],
        "extract": [py, "-m", "vreid_jax.deploy.extract", "--workdir", workdir, "--tracklets", folders,
                    "--out", features],
    }  # fmt: skip
    env = {"TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": _REPO}
    # Steps measured before (another invocation) are kept; each step is recorded as it ends.
    path = pathlib.Path(args.out) if args.out else common.RESULTS / "scale.json"
    key = args.dataset if args.model == "gltr" else f"{args.dataset}_{args.model}"
    previous = json.loads(path.read_text()).get(key, {}) if path.exists() else {}
    result = {**previous, "machine": common.machine(), "dataset": args.dataset, "scale": args.scale}
    result["model"] = args.model
    for step in args.steps.split(","):
        if step == "extract" and not os.path.isdir(folders):
            begin = time.perf_counter()
            result["extract_tracklets"] = tracklet_folders(raw, folders)
            result["extract_links_seconds"] = round(time.perf_counter() - begin, 1)
        if step == "search":
            search = [py, "-m", "vreid_jax.deploy.search"]
            build = [*search, "build", "--index", index, "--features", features]
            result["search_build"] = measured(build, env)
            query = [*search, "query", "--index", index, "--features", features, "--rows",
                     ",".join(map(str, range(10))), "--top_k", "10",
                     "--out", os.path.join(args.root, "search.json")]  # fmt: skip
            result[step] = measured(query, env)
        else:
            result[step] = measured(commands[step], env)
        print(step, json.dumps(result[step]), flush=True)
        result[f"{step}_command"] = " ".join(sys.argv)
        common.merge_result("scale", key, result, str(path))
    print(f"Wrote {path}")


if __name__ == "__main__":
    main()
