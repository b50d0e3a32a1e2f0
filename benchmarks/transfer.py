r"""Does fine-tuning from learned 2D weights work? Pre-train, convert, fine-tune, compare.

  python benchmarks/transfer.py [--steps 200] [--seeds 0 1] [--models nl3d gltr]

Parity tests with random torchvision weights prove the name mapping, not that a network started
from *learned* weights fine-tunes better. This script plays the ImageNet role with a task of its
own, on this machine, end to end through the users' commands:

1. Pre-train: a torchvision-layout ResNet (the demo's one-block-per-stage, width-16 backbone, written
   in plain torch) learns frame-level identity classification on rendered people whose identities
   are disjoint from every evaluation dataset below (their trait codes are excluded), seen by
   cameras of their own. ImageNet normalisation, horizontal flips, Adam.
2. Convert: `torch.save(model.state_dict())`, then `python -m vreid_jax.models.convert_resnet50`.
3. Fine-tune: `configs/demo.py:model=M` on the demo's synthetic MARS for `--steps` steps at the
   recipes' learning rate (3e-4; the demo's 3e-3 is tuned for training from scratch), once with
   `--config.model.pretrained=<the .npz>` and once from random initialisation, per seed (the seed
   also generates the dataset), evaluated with the official MARS protocol.

Records `benchmarks/results/transfer.json` and prints the table. The pre-trained network stays in
`--workdir` and a rerun with the same pre-training settings reuses it.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import subprocess
import sys
import time

import numpy as np
from PIL import Image

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402
from data_prep import render  # noqa: E402
from vreid_jax.data import pixels  # noqa: E402

DEMO = "configs/demo.py"
# The demo's synthetic MARS: identities per split (train and test each), rendered frame size and
# nuisance scale (configs/demo.py and configs/default.py).
DEMO_IDS_PER_SPLIT = 64
RENDER_SIZE = (128, 64)
FRAME_SIZE = (64, 32)  # What the demo's network sees.
BACKBONE = dict(stage_sizes=(1, 1, 1, 1), width=16)


def evaluation_codes(seeds, num_ids: int) -> set[int]:
    """Trait codes of every identity the synthetic datasets of `seeds` can contain.

    `data_prep.synthetic.Scene` draws identities in order from one permutation of all codes made
    by the dataset's seed; twice the identities of both splits bounds what a dataset uses.
    """
    total = int(np.prod(render.TRAIT_SIZES))
    used = set()
    for seed in seeds:
        used.update(np.random.default_rng(seed).permutation(total)[: 4 * num_ids].tolist())
    return used


def pretraining_frames(num_ids, tracklets_per_id, frames_per_tracklet, excluded, seed):
    """Frames `[N, H, W, 3]` uint8 at the demo's input size and their identity labels."""
    rng = np.random.default_rng(seed)
    total = int(np.prod(render.TRAIT_SIZES))
    codes = [c for c in rng.permutation(total).tolist() if c not in excluded][:num_ids]
    cameras = render.make_cameras(rng, 6, *RENDER_SIZE, difficulty=1.0)
    images, labels = [], []
    for label, code in enumerate(codes):
        identity = render.identity_from_code(code)
        for _ in range(tracklets_per_id):
            camera = cameras[rng.integers(len(cameras))]
            for frame in render.render_person(rng, identity, camera, frames_per_tracklet, 1.0):
                small = Image.fromarray(frame).resize(FRAME_SIZE[::-1], Image.Resampling.BILINEAR)
                images.append(np.asarray(small))
                labels.append(label)
    return np.stack(images), np.asarray(labels), codes


def pretrain(images, labels, *, epochs: int, seed: int):
    """Trains the torch ResNet on frame classification; returns it and its accuracy figures."""
    import torch  # noqa: PLC0415  (the optional torch extra)

    from tests.torch_resnet import ResNet  # noqa: PLC0415  (the tests' reference network)

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(images))
    held_out = order[: len(order) // 10]
    train = order[len(order) // 10 :]
    mean = torch.tensor(pixels.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(pixels.IMAGENET_STD).view(1, 3, 1, 1)

    def tensor(batch):
        x = torch.from_numpy(images[batch]).permute(0, 3, 1, 2).float() / 255.0
        return (x - mean) / std

    net = ResNet(BACKBONE["stage_sizes"], BACKBONE["width"], num_classes=int(labels.max()) + 1)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=5e-4)
    batch_size = 128
    steps = epochs * (len(train) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps)
    y = torch.from_numpy(labels)
    net.train()
    for _ in range(epochs):
        rng.shuffle(train)
        for i in range(len(train) // batch_size):
            batch = train[i * batch_size : (i + 1) * batch_size]
            x = tensor(batch)
            flip = torch.from_numpy(rng.random(len(batch)) < 0.5)
            x[flip] = x[flip].flip(-1)
            loss = torch.nn.functional.cross_entropy(net(x), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    net.eval()
    with torch.no_grad():
        accuracy = {
            name: float((net(tensor(idx)).argmax(1) == y[idx]).float().mean())
            for name, idx in (("train", train[:2000]), ("held_out_frames", held_out))
        }
    return net, {"final_loss": loss.item(), **accuracy}


def fine_tune(model, seed, steps, learning_rate, workdir, pretrained=None) -> dict:
    """Runs the demo config through the CLI; returns its results.json."""
    command = [
        sys.executable,
        "-m",
        "vreid_jax.main",
        "--config",
        f"{DEMO}:model={model}",
        "--workdir",
        str(workdir),
        f"--config.seed={seed}",
        f"--config.num_train_steps={steps}",
        f"--config.optim.learning_rate={learning_rate}",
        f"--config.log_every_steps={max(1, steps // 8)}",
        f"--config.model.pretrained={pretrained or ''}",
    ]
    proc = subprocess.run(command, cwd=common.REPO, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{proc.stderr[-4000:]}")
    return json.loads((workdir / "results.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="fine-tuning steps")
    # The recipes' fine-tuning rate (configs/recipe.py), for both initialisations; the demo's 3e-3
    # is tuned for training from scratch.
    parser.add_argument("--learning_rate", type=float, default=3e-4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--models", nargs="+", default=["nl3d", "gltr"])
    parser.add_argument("--pretrain_ids", type=int, default=200)
    parser.add_argument("--pretrain_epochs", type=int, default=8)
    parser.add_argument("--workdir", default="runs/transfer")
    parser.add_argument("--out", default="", help="results JSON (default: results/transfer.json)")
    args = parser.parse_args()
    import torch  # noqa: PLC0415

    workdir = common.REPO / args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    pth, npz = workdir / "pretrained.pth", workdir / "pretrained.npz"
    record_path = workdir / "pretraining.json"
    settings = {"identities": args.pretrain_ids, "epochs": args.pretrain_epochs}
    pretraining = json.loads(record_path.read_text()) if record_path.exists() else {}
    if npz.exists() and {k: pretraining.get(k) for k in settings} == settings:
        print(f"reusing {npz}: {pretraining}", flush=True)  # Same seeds and settings as before.
    else:
        excluded = evaluation_codes(args.seeds, DEMO_IDS_PER_SPLIT)
        images, labels, codes = pretraining_frames(args.pretrain_ids, 4, 8, excluded, seed=1234)
        assert not set(codes) & excluded
        net, pretraining = pretrain(images, labels, epochs=args.pretrain_epochs, seed=0)
        pretraining.update(settings, frames=len(images), seconds=round(time.time() - start))
        print(f"pre-trained: {pretraining}", flush=True)
        torch.save(net.state_dict(), pth)
        convert = [sys.executable, "-m", "vreid_jax.models.convert_resnet50"]
        paths = ["--torch_checkpoint", str(pth), "--out", str(npz)]
        subprocess.run([*convert, *paths], cwd=common.REPO, check=True)
        record_path.write_text(json.dumps(pretraining))

    runs = []
    for seed in args.seeds:
        for model in args.models:
            for init in ("random", "pretrained"):
                run_dir = workdir / f"{model}_seed{seed}_{init}"
                shutil.rmtree(run_dir, ignore_errors=True)  # A fresh run, never a resumed one.
                began = time.time()
                result = fine_tune(
                    model,
                    seed,
                    args.steps,
                    args.learning_rate,
                    run_dir,
                    npz if init == "pretrained" else None,
                )
                row = {
                    "model": model,
                    "seed": seed,
                    "init": init,
                    "mAP": result["mAP"],
                    "rank1": result["rank1"],
                    "untrained_mAP": result["untrained"]["mAP"],
                    "seconds": round(time.time() - began),
                }
                print(row, flush=True)
                runs.append(row)

    gains = {}
    for model in args.models:
        for seed in args.seeds:
            by_init = {r["init"]: r for r in runs if r["model"] == model and r["seed"] == seed}
            gains[f"{model}_seed{seed}"] = by_init["pretrained"]["mAP"] - by_init["random"]["mAP"]
    record = {
        "machine": common.machine(),
        "command": "python benchmarks/transfer.py " + " ".join(sys.argv[1:]),
        "fine_tune_steps": args.steps,
        "learning_rate": args.learning_rate,
        "pretraining": pretraining,
        "runs": runs,
        "mAP_gain_pretrained_minus_random": gains,
    }
    print(f"wrote {common.write_result('transfer', record, args.out or None)}")
    print(f"{'model':6} {'seed':>4} {'random mAP':>11} {'pretrained mAP':>15} {'gain':>6}")
    for key, gain in gains.items():
        model, seed = key.rsplit("_seed", 1)
        by_init = {r["init"]: r for r in runs if r["model"] == model and r["seed"] == int(seed)}
        print(
            f"{model:6} {seed:>4} {100 * by_init['random']['mAP']:11.1f} "
            f"{100 * by_init['pretrained']['mAP']:15.1f} {100 * gain:+6.1f}"
        )


if __name__ == "__main__":
    main()
