r"""Does fine-tuning from learned 2D weights work? Pre-train, convert, fine-tune, compare.

  python benchmarks/transfer.py [--steps 200] [--seeds 0 1] [--models nl3d gltr tfclip]

Parity tests with random torchvision weights prove the name mapping, not that a network started
from *learned* weights fine-tunes better. This script plays the ImageNet role with a task of its
own, on this machine, end to end through the users' commands:

1. Pre-train: a torchvision-layout ResNet (the demo's one-block-per-stage, width-16 backbone, written
   in plain torch) for NL3D and GLTR, and an OpenAI-layout CLIP ViT (the demo's TF-CLIP encoder,
   `configs/demo.DEMO_CLIP`, `benchmarks/torch_clip_vit.py`) for TF-CLIP, each learns frame-level
   identity classification on the same frames: rendered people whose identities are disjoint from
   every evaluation dataset below (their trait codes are excluded), seen by cameras of their own.
   ImageNet normalisation, horizontal flips, Adam, the same epochs and batches.
2. Convert: the ResNet's `torch.save(model.state_dict())` by
   `python -m vreid_jax.models.convert_resnet50`; the ViT as a TorchScript archive (`visual.*`
   inside a scripted module, as OpenAI ships CLIP) by `python -m vreid_jax.models.convert_clip`.
3. Fine-tune: `configs/demo.py:model=M` on the demo's synthetic MARS for `--steps` steps at the
   recipes' learning rate (3e-4; the demo's rates are tuned for training from scratch), once with
   `--config.model.pretrained=<the .npz>` and once from random initialisation, per seed (the seed
   also generates the dataset), evaluated with the official MARS protocol.

Records `benchmarks/results/transfer.json` (runs of models not run this time are kept) and prints
the table. The pre-trained networks stay in `--workdir` and a rerun with the same pre-training
settings reuses them.
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
# Each model's pre-trained backbone.
BACKBONE_OF = {"nl3d": "resnet", "gltr": "resnet", "tfclip": "clip"}
# The side of the ViT's square positional grid as stored (OpenAI's files hold a square grid too):
# the 8x4 patch grid of a 64x32 frame, from a side of 8.
CLIP_SIDE = 8


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


def make_network(backbone: str, num_classes: int):
    """The torch network to pre-train, its classifier included, and its optimiser's settings."""
    import torch  # noqa: PLC0415  (the optional torch extra)

    if backbone == "resnet":
        from tests.torch_resnet import ResNet  # noqa: PLC0415  (the tests' reference network)

        net = ResNet(BACKBONE["stage_sizes"], BACKBONE["width"], num_classes=num_classes)
        return net, net, dict(lr=3e-3, weight_decay=5e-4, decoupled=False)

    from benchmarks import torch_clip_vit  # noqa: PLC0415
    from configs import demo  # noqa: PLC0415

    clip = demo.DEMO_CLIP
    visual = torch_clip_vit.VisionTransformer(
        CLIP_SIDE, clip["patch_size"], clip["width"], clip["layers"], clip["heads"],
        clip["output_dim"],
    )  # fmt: skip
    # The classifier reads CLIP's image embedding (the projected class token); only `visual`
    # goes into the archive.
    net = torch.nn.Sequential(visual, torch.nn.Linear(clip["output_dim"], num_classes))
    # A transformer's usual optimiser (AdamW, decoupled decay 0.05) at a third of the ResNet's
    # peak rate: without BatchNorm a ViT trained from scratch is the less stable of the two.
    return net, visual, dict(lr=1e-3, weight_decay=0.05, decoupled=True)


def pretrain(images, labels, *, backbone: str, epochs: int, seed: int):
    """Trains the torch network on frame classification; returns the part to convert and its
    accuracy figures."""
    import torch  # noqa: PLC0415  (the optional torch extra)

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

    net, backbone_net, optim = make_network(backbone, int(labels.max()) + 1)
    adam = torch.optim.AdamW if optim["decoupled"] else torch.optim.Adam
    optimizer = adam(net.parameters(), lr=optim["lr"], weight_decay=optim["weight_decay"])
    batch_size = 128
    steps = epochs * (len(train) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=optim["lr"], total_steps=steps)
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
    settings = {"optimizer": adam.__name__, "peak_lr": optim["lr"]}
    settings["weight_decay"] = optim["weight_decay"]
    return backbone_net, {"final_loss": loss.item(), **accuracy, **settings}


def save_and_convert(backbone: str, net, workdir: pathlib.Path) -> pathlib.Path:
    """Writes the network as its users would get it, converts it with the CLI; returns the .npz."""
    import torch  # noqa: PLC0415

    if backbone == "resnet":
        pth, npz = workdir / "pretrained.pth", workdir / "pretrained.npz"
        torch.save(net.state_dict(), pth)
        command = ["vreid_jax.models.convert_resnet50", "--torch_checkpoint", str(pth)]
    else:
        from benchmarks import torch_clip_vit  # noqa: PLC0415

        pt, npz = workdir / "pretrained_clip.pt", workdir / "pretrained_clip.npz"
        torch.jit.save(torch.jit.script(torch_clip_vit.Archive(net.eval())), str(pt))
        command = ["vreid_jax.models.convert_clip", "--weights", str(pt)]
        command += ["--height", str(FRAME_SIZE[0]), "--width", str(FRAME_SIZE[1])]
    subprocess.run([sys.executable, "-m", *command, "--out", str(npz)], cwd=common.REPO, check=True)
    return npz


def pretrained_weights(backbone, args, workdir: pathlib.Path) -> tuple[pathlib.Path, dict]:
    """The converted pre-trained backbone, trained now or reused from a run with these settings."""
    suffix = "" if backbone == "resnet" else f"_{backbone}"
    npz = workdir / f"pretrained{suffix}.npz"
    record_path = workdir / f"pretraining{suffix}.json"
    settings = {"identities": args.pretrain_ids, "epochs": args.pretrain_epochs}
    pretraining = json.loads(record_path.read_text()) if record_path.exists() else {}
    if npz.exists() and {k: pretraining.get(k) for k in settings} == settings:
        print(f"reusing {npz}: {pretraining}", flush=True)  # Same seeds and settings as before.
        return npz, pretraining
    start = time.time()
    excluded = evaluation_codes(args.seeds, DEMO_IDS_PER_SPLIT)
    images, labels, codes = pretraining_frames(args.pretrain_ids, 4, 8, excluded, seed=1234)
    assert not set(codes) & excluded
    net, pretraining = pretrain(
        images, labels, backbone=backbone, epochs=args.pretrain_epochs, seed=0
    )
    pretraining.update(settings, frames=len(images), seconds=round(time.time() - start))
    print(f"pre-trained {backbone}: {pretraining}", flush=True)
    npz = save_and_convert(backbone, net, workdir)
    record_path.write_text(json.dumps(pretraining))
    return npz, pretraining


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
    parser.add_argument("--models", nargs="+", default=["nl3d", "gltr"], choices=list(BACKBONE_OF))
    parser.add_argument("--pretrain_ids", type=int, default=200)
    parser.add_argument("--pretrain_epochs", type=int, default=8)
    parser.add_argument("--workdir", default="runs/transfer")
    parser.add_argument("--out", default="", help="results JSON (default: results/transfer.json)")
    args = parser.parse_args()
    workdir = common.REPO / args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    backbones = sorted({BACKBONE_OF[m] for m in args.models})
    weights, pretraining = {}, {}
    for backbone in backbones:
        weights[backbone], pretraining[backbone] = pretrained_weights(backbone, args, workdir)

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
                    weights[BACKBONE_OF[model]] if init == "pretrained" else None,
                )
                row = {
                    "model": model,
                    "seed": seed,
                    "init": init,
                    "mAP": result["mAP"],
                    "rank1": result["rank1"],
                    "untrained_mAP": result["untrained"]["mAP"],
                    "learning_rate": args.learning_rate,
                    "steps": args.steps,
                    "seconds": round(time.time() - began),
                }
                print(row, flush=True)
                runs.append(row)

    gains = {}
    for model in args.models:
        for seed in args.seeds:
            by_init = {r["init"]: r for r in runs if r["model"] == model and r["seed"] == seed}
            gains[f"{model}_seed{seed}"] = by_init["pretrained"]["mAP"] - by_init["random"]["mAP"]
    this = {
        "machine": common.machine(),
        "command": "python benchmarks/transfer.py " + " ".join(sys.argv[1:]),
        "fine_tune_steps": args.steps,
        "learning_rate": args.learning_rate,
    }
    record = merged_record(args.out, args.models, this, pretraining, runs, gains)
    print(f"wrote {common.write_result('transfer', record, args.out or None)}")
    print(f"{'model':6} {'seed':>4} {'random mAP':>11} {'pretrained mAP':>15} {'gain':>6}")
    for key, gain in gains.items():
        model, seed = key.rsplit("_seed", 1)
        by_init = {r["init"]: r for r in runs if r["model"] == model and r["seed"] == int(seed)}
        print(
            f"{model:6} {seed:>4} {100 * by_init['random']['mAP']:11.1f} "
            f"{100 * by_init['pretrained']['mAP']:15.1f} {100 * gain:+6.1f}"
        )


GAINS = "mAP_gain_pretrained_minus_random"


def gains_of(record: dict) -> dict:
    return {GAINS: record.get(GAINS, {})}


def merged_record(out, models, this, pretraining, runs, gains) -> dict:
    """This invocation's runs beside the recorded runs of the models it did not run, each backbone
    with its pre-training and the command (and machine) that measured it."""
    path = pathlib.Path(out) if out else common.RESULTS / "transfer.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    if "by_backbone" not in old and "runs" in old:  # The record before TF-CLIP: the ResNet's.
        keys = ("machine", "command", "fine_tune_steps", "learning_rate")
        resnet = {k: old[k] for k in keys} | {"pretraining": old["pretraining"]}
        old = {"by_backbone": {"resnet": resnet}, "runs": old["runs"], **gains_of(old)}
    by_backbone = dict(old.get("by_backbone", {}))
    for backbone, record in pretraining.items():
        by_backbone[backbone] = {**this, "pretraining": record}
    kept = [r for r in old.get("runs", []) if r["model"] not in models]
    old_gains = gains_of(old).get(GAINS, {})
    kept_gains = {k: v for k, v in old_gains.items() if k.rsplit("_seed", 1)[0] not in models}
    return {
        "by_backbone": by_backbone,
        "runs": kept + runs,
        GAINS: kept_gains | gains,
    }


if __name__ == "__main__":
    main()
