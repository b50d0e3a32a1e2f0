"""The users' path, for every paper recipe: ImageNet-style weights written by torch and converted by
the real converter, synthetic data in each dataset's real on-disk layout built by the real
`data_prep` builder, `train_and_eval` through the command line's `main` (in this process), then
`mode=eval` of the checkpoint with the weights file gone.

Each recipe runs unchanged except for size keys (frame size, P, K, clip length, steps, evaluation
batches, backbone size, number of ranked-list pictures) and the logging interval, so that a
step-by-step loss is on record.
"""

import functools
import importlib
import json
import os
import shutil
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
from flax import traverse_util
from helpers import build_once, run_command

import vreid_jax.main
from data_prep import names
from vreid_jax import checkpoint, config_lib, models
from vreid_jax.evaluation.metrics import SUMMARY_KEYS
from vreid_jax.models import registry, tfclip
from vreid_jax.training import kinds, loop
from vreid_jax.training import state as state_lib

torch = pytest.importorskip("torch")
from torch_resnet import ResNet as TorchResNet  # noqa: E402  (needs torch)

MODELS = ("nl3d", "gltr")
DATASETS = names.NAMES
PROTOCOLS = {
    "mars": "mars-official",
    "dukev": "dukev",
    "lsvid": "lsvid-official",
    "ilidsvid": "ilidsvid-split0",
    "prid2011": "prid2011-split0",
}
# Frames are rendered at the trained size; DukeMTMC-VideoReID and LS-VID crops come larger and are
# resized by the builder, as their README instructions say.
# Sized so that every layout has 8 training identities and 16 training tracklets (the 10-split
# datasets train on half their persons, one tracklet per camera): then a model's compiled train and
# evaluation steps are the same for all five datasets and come from the compilation cache.
SYNTHETIC = dict(tracklets_per_id=2, min_len=6, max_len=16, height=64, width=32)
NUM_IDS = {"mars": 8, "dukev": 8, "lsvid": 8, "ilidsvid": 16, "prid2011": 16}
RESIZE = {"dukev": (64, 32), "lsvid": (64, 32)}
NUM_TRAIN_STEPS = 14
SIZE_KEYS = {
    "input.height": 64,
    "input.width": 32,
    "input.num_ids_per_batch": 4,
    "input.num_instances": 2,
    "input.clip_len": 4,
    "eval.batch_size": 8,
    "eval.frame_batch_size": 32,
    "model.stage_sizes": (1, 1, 1, 1),
    "model.width": 8,
    "eval.num_ranked_queries": 1,  # Ranked-list pictures: one per evaluation is enough here.
}
BACKBONE = dict(stage_sizes=(1, 1, 1, 1), width=8)  # Of the torch ResNet standing for ImageNet's.


@pytest.fixture(scope="session")
def converted_weights(tmp_path_factory, repo_root):
    """A `.pth` as torchvision writes it (`torch.save(model.state_dict())` of a small ResNet),
    converted by `python -m vreid_jax.models.convert_resnet50`, once per run."""

    def convert(folder):
        torch.manual_seed(0)
        net = TorchResNet(BACKBONE["stage_sizes"], BACKBONE["width"], num_classes=1000)
        torch.save(net.state_dict(), folder / "resnet_tiny.pth")
        args = [
            "--torch_checkpoint",
            folder / "resnet_tiny.pth",
            "--out",
            folder / "resnet_tiny.npz",
        ]
        proc = _cli(["vreid_jax.models.convert_resnet50", *map(str, args)], repo_root)
        assert "bottleneck ResNet with stages (1, 1, 1, 1) and width 8" in proc.stdout

    return str(build_once(tmp_path_factory, "torchvision", convert) / "resnet_tiny.npz")


@pytest.fixture
def pretrained(converted_weights, tmp_path):
    """This test's own copy of the converted weights (the test deletes it before evaluating)."""
    path = tmp_path / "resnet.npz"
    shutil.copyfile(converted_weights, path)
    return str(path)


@pytest.fixture(scope="session")
def built_data(tmp_path_factory):
    """`built_data(name)`: a TFDS data_dir with synthetic `name`, built once per test run."""
    from data_prep import build, synthetic  # noqa: PLC0415

    def get(name):
        def make(folder):
            raw = folder / "raw"
            synthetic.generate(name, str(raw), seed=0, num_ids=NUM_IDS[name], **SYNTHETIC)
            build.build(name, str(raw), str(folder), resize=RESIZE.get(name))

        return str(build_once(tmp_path_factory, f"recipe_data_{name}", make))

    return get


def _cli(args, cwd):
    proc = subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, f"{' '.join(args)}\n{proc.stderr[-6000:]}"
    return proc


def _main(args, cwd):
    """`python -m vreid_jax.main ARGS` in this process: the same flags, config loading and `main`
    without a new interpreter's start (the demo, preflight and multi-host tests start one)."""
    proc = run_command(vreid_jax.main, *args, cwd=cwd)
    assert proc.returncode == 0, f"{' '.join(args)}\n{proc.stderr[-6000:]}"


def _override(key, value):
    return f"--config.{key}={value}"


def _train_and_eval(
    config_arg, workdir, data_dir, pretrained, repo_root, eval_checkpoint="latest", **extra
):
    """Trains with the recipe, then (unless `eval_checkpoint` is None) evaluates its checkpoint;
    returns both results.json records."""
    keys = {**SIZE_KEYS, "num_train_steps": NUM_TRAIN_STEPS, "log_every_steps": 1, **extra}
    common = [
        "--config",
        config_arg,
        "--workdir",
        str(workdir),
        _override("data.data_dir", data_dir),
        _override("model.pretrained", pretrained),
        *(_override(k, v) for k, v in keys.items()),
    ]
    _main(common, repo_root)
    trained = json.loads((workdir / "results.json").read_text())
    if eval_checkpoint is None:
        return trained, None
    os.remove(pretrained)  # Evaluating a checkpoint needs no ImageNet file.
    evaluate_args = [_override("mode", "eval"), _override("eval.checkpoint", eval_checkpoint)]
    _main([*common, *evaluate_args], repo_root)
    evaluated = json.loads((workdir / "results.json").read_text())
    return trained, evaluated


def _assert_learned(workdir, name):
    """The logged loss fell, and every parameter leaf of the final state receives a gradient."""
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    logged = [r for r in map(json.loads, lines) if "loss" in r]
    assert [r["step"] for r in logged] == list(range(1, NUM_TRAIN_STEPS + 1))
    losses = np.array([r["loss"] for r in logged])
    assert np.mean(losses[-5:]) < np.mean(losses[:5]), f"{name}: the loss did not fall: {losses}"

    config = json.loads((workdir / "config.json").read_text())
    ckpt = checkpoint.Checkpointer(str(workdir / "checkpoints"))
    saved, meta, step = ckpt.restore(None)
    ckpt.close()
    assert step == NUM_TRAIN_STEPS
    model_config = ml_collections.ConfigDict(config["model"])
    model = models.build_model(model_config, meta["num_classes"])
    state = state_lib.TrainState(
        step=saved["step"], params=saved["params"], batch_stats=saved["batch_stats"], opt_state=None
    )
    rng = np.random.default_rng(0)
    p, k = SIZE_KEYS["input.num_ids_per_batch"], SIZE_KEYS["input.num_instances"]
    clip = [SIZE_KEYS[f"input.{key}"] for key in ("clip_len", "height", "width")]
    batch = {
        "clips": rng.integers(0, 256, (p * k, *clip, 3), dtype=np.uint8),
        "labels": np.repeat(np.arange(p) % meta["num_classes"], k).astype(np.int32),
    }
    if registry.spec(model_config.name).takes_cameras:
        batch["cameras"] = (np.arange(p * k) % model_config.tfclip.num_cameras).astype(np.int32)
    grads_fn = functools.partial(
        loop.loss_and_grads,
        model=model,
        loss_config=ml_collections.ConfigDict(config["loss"]),
        seed=0,
        loss=kinds.kind_for(model_config.name).loss,
    )
    grads = jax.jit(grads_fn)(state, batch)[3]
    # TF-CLIP's BNNeck biases are frozen, as in the official code (`models.tfclip.is_frozen`).
    frozen = tfclip.is_frozen if model_config.name == "tfclip" else lambda path: False
    dead = [
        "/".join(key)
        for key, g in traverse_util.flatten_dict(jax.device_get(grads)).items()
        if not np.any(g != 0) and not frozen(key)
    ]
    assert not dead, f"{name}: no gradient reaches {dead}"


def _assert_same_metrics(trained, evaluated):
    for key in ("dataset", "protocol", "model", "step", "num_query", "num_gallery"):
        assert evaluated[key] == trained[key], key
    for key in SUMMARY_KEYS:
        assert evaluated[key] == pytest.approx(trained[key], abs=1e-6), key


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gltr_ilidsvid"])
def test_ten_split_recipe_reports_the_mean_and_evaluates_every_split(
    name, built_data, pretrained, repo_root, tmp_path
):
    # One ten-split recipe (first in the file, so it starts first); PRID-2011 shares every line of
    # this path, and its recipes run split 0 below. `:all_splits` lists the ten splits; two of them
    # run here (all ten take six minutes on 2 cores and exercise nothing more).
    dataset = name.split("_")[1]
    module = importlib.import_module(f"configs.{name}")
    assert tuple(module.get_config("all_splits").eval.splits) == tuple(range(10))
    workdir = tmp_path / "work"
    run_splits = [3, 7]
    trained, evaluated = _train_and_eval(
        f"configs/{name}.py:all_splits",
        workdir,
        built_data(dataset),
        pretrained,
        repo_root,
        num_train_steps=2,
        **{"eval.splits": tuple(run_splits)},
    )
    splits = trained["splits"]
    assert [s["split"] for s in splits] == run_splits
    assert trained["protocol"] == f"{dataset} mean over splits {run_splits}, AP standard"
    for key in SUMMARY_KEYS:
        assert trained[key] == pytest.approx(np.mean([s[key] for s in splits])), key
        for protocol in ("standard", "trapezoid"):  # Every protocol is averaged the same way.
            per_split = [s["protocols"][protocol][key] for s in splits]
            assert trained["protocols"][protocol][key] == pytest.approx(np.mean(per_split))
    for split in splits:
        assert split["protocol"].startswith(f"{dataset}-split{split['split']},")
        assert split["num_query"] == split["num_gallery"] == 8  # One cam-2 tracklet per query.
        assert (workdir / f"split_{split['split']}" / "results.json").exists()
    _assert_same_metrics(trained, evaluated)
    for split_trained, split_evaluated in zip(splits, evaluated["splits"], strict=True):
        _assert_same_metrics(split_trained, split_evaluated)


# Every dataset layout once (iLIDS-VID's in the ten-split test below), and both models on MARS (the
# recipes share `configs/recipe.make`; the other model x dataset pairs differ only in values, which
# `test_every_recipe_config_validates` covers): five command-line runs instead of ten keep CI near
# 20 minutes.
TRAINED = [
    ("nl3d", "mars"), ("gltr", "mars"), ("nl3d", "dukev"), ("gltr", "lsvid"), ("gltr", "prid2011"),
]  # fmt: skip


def test_every_recipe_config_validates():
    for model in MODELS:
        for dataset in DATASETS:
            module = importlib.import_module(f"configs.{model}_{dataset}")
            for arg in (None, "official") if model == "gltr" else (None,):
                config = module.get_config(arg)
                config_lib.validate(config)
                assert (config.model.name, config.data.name) == (model, dataset)
                assert config.model.pretrained == "resnet50.npz"


@pytest.mark.slow
@pytest.mark.parametrize(("model", "dataset"), TRAINED)
def test_recipe_trains_from_converted_weights_and_evaluates_its_checkpoint(
    model, dataset, built_data, pretrained, repo_root, tmp_path
):
    name = f"{model}_{dataset}"
    data_dir = built_data(dataset)
    workdir = tmp_path / "work"
    # Every way of naming the checkpoint to evaluate is exercised by some recipe.
    which = {"mars": "latest", "dukev": "best"}.get(
        dataset, str(workdir / "checkpoints" / str(NUM_TRAIN_STEPS))
    )
    # GLTR on MARS runs as `:official` (the authors' SGD training: batches of random tracklets,
    # K = 1, plain CE), which shares everything else with the other GLTR recipes. Its batch holds
    # all 8 training identities: plain CE over 4 random tracklets was too noisy for 14 steps to
    # show the loss falling.
    official = (model, dataset) == ("gltr", "mars")
    trained, evaluated = _train_and_eval(
        f"configs/{name}.py" + (":official" if official else ""),
        workdir,
        data_dir,
        pretrained,
        repo_root,
        eval_checkpoint=which,
        **({"input.num_instances": 1, "input.num_ids_per_batch": 8} if official else {}),
    )
    assert trained["dataset"] == dataset and trained["model"] == model
    assert trained["protocol"].startswith(PROTOCOLS[dataset] + ",")
    if official:
        assert trained["protocol"].endswith("AP trapezoid")
        config = json.loads((workdir / "config.json").read_text())
        assert (config["optim"]["name"], config["loss"]["triplet_weight"]) == ("sgd", 0.0)
    assert trained["step"] == NUM_TRAIN_STEPS
    _assert_same_metrics(trained, evaluated)
    _assert_learned(workdir, name)


@pytest.mark.parametrize("case", ["another ResNet", "no file"])
def test_wrong_weights_file_stops_before_training_in_one_line(
    case, built_data, repo_root, tmp_path
):
    from torchvision_reference import random_state_dict, torchvision_shapes  # noqa: PLC0415

    weights = tmp_path / "resnet.npz"
    if case == "another ResNet":  # Twice as wide as the configured backbone.
        np.savez(weights, **random_state_dict(torchvision_shapes((1, 1, 1, 1), width=16)))
    workdir = tmp_path / "work"
    args = [
        "--config",
        "configs/nl3d_mars.py",
        "--workdir",
        str(workdir),
        _override("data.data_dir", built_data("mars")),
        _override("model.pretrained", weights),
        *(_override(k, v) for k, v in SIZE_KEYS.items()),
    ]
    proc = run_command(vreid_jax.main, *args, cwd=repo_root)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    if case == "another ResNet":
        assert last.startswith(f"error: {weights}: key 'conv1.weight' has shape (16, 3, 7, 7)")
        assert "needs (8, 3, 7, 7)" in last and "width 16" in last and "width 8" in last
    else:
        assert last.startswith(f"error: config.model.pretrained='{weights}': no such file.")
        assert "vreid_jax.models.convert_resnet50" in last
    assert not list((workdir / "checkpoints").iterdir())
    assert (
        not (workdir / "metrics.jsonl").exists()
        or "loss" not in (workdir / "metrics.jsonl").read_text()
    )


@pytest.mark.parametrize("which", ["latest", "best"])
def test_eval_without_a_checkpoint_stops_in_one_line_before_reading_data(
    which, repo_root, tmp_path
):
    workdir = tmp_path / "work"
    args = ["--config", "configs/gltr_mars.py", "--workdir", str(workdir)]
    args += [_override("mode", "eval"), _override("eval.checkpoint", which)]
    args += [_override("data.data_dir", tmp_path / "no_data_here")]
    proc = run_command(vreid_jax.main, *args, cwd=repo_root)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {workdir} has no checkpoints folder: train first."
    )


# ------------------------------------------------------------------------------------ TF-CLIP

# A 2-layer width-64 CLIP ViT (4 heads, 16-pixel patches, 64-d projection: SSP's one head) on the
# recipes' 64x32 frames, T = 4.
CLIP = dict(width=64, layers=2, heads=4, patch_size=16, output_dim=64)
TFCLIP_KEYS = {
    **SIZE_KEYS,
    **{f"model.tfclip.{k}": v for k, v in CLIP.items()},
    # TF-CLIP's BASE_LR 5e-6 (x0.1 in its warm-up) moves a random-headed tiny model too little
    # for the loss to show it in 14 steps; everything else is the recipe's.
    "optim.learning_rate": 1e-4,
}


@pytest.fixture(scope="session")
def converted_clip(tmp_path_factory, repo_root):
    """An OpenAI-layout TorchScript archive written by torch (`torch.jit.save` of a scripted tiny
    CLIP with `visual.*`, text keys and scalar buffers, at the pretrained 14x14 grid), converted
    for 64x32 frames by `python -m vreid_jax.models.convert_clip`, once per run."""
    torch_clip = importlib.import_module("torch_clip")

    def convert(folder):
        visual = torch_clip.VisionTransformer(
            (14, 14), CLIP["patch_size"], CLIP["width"], CLIP["layers"], CLIP["heads"],
            CLIP["output_dim"],
        )  # fmt: skip
        torch_clip.randomize_(visual, 0).eval()
        archive = folder / "ViT-tiny.pt"
        torch.jit.save(torch.jit.script(torch_clip.ClipArchive(visual)), str(archive))
        args = ["--weights", archive, "--out", folder / "ViT-tiny.npz", "--height", 64]
        _cli(["vreid_jax.models.convert_clip", *map(str, [*args, "--width", 32])], repo_root)

    return str(build_once(tmp_path_factory, "openai_clip", convert) / "ViT-tiny.npz")


# Each dataset's cameras (REFERENCE: MARS 6, DukeMTMC-VideoReID 8, iLIDS-VID and PRID-2011 2,
# LS-VID 15): TF-CLIP has one camera embedding per camera of its training set.
CAMERAS = {"mars": 6, "dukev": 8, "ilidsvid": 2, "prid2011": 2, "lsvid": 15}


@pytest.mark.parametrize("dataset", DATASETS)
def test_tfclip_recipe_is_the_official_setting_with_the_dataset_cameras(dataset):
    module = importlib.import_module(f"configs.tfclip_{dataset}")
    config = module.get_config()
    config_lib.validate(config)
    assert (config.model.name, config.data.name) == ("tfclip", dataset)
    assert config.model.pretrained == "ViT-B-16.npz"
    assert config.model.tfclip.num_cameras == CAMERAS[dataset]
    # `configs/vit_clipreid.yml` (stage 2), one setting for every dataset.
    assert (config.input.num_ids_per_batch, config.input.num_instances, config.input.clip_len) == (
        4,
        4,
        8,
    )
    assert (config.optim.learning_rate, config.optim.weight_decay, config.num_epochs) == (
        5e-6,
        1e-4,
        80,
    )
    assert tuple(config.schedule.milestones_epochs) == (30, 50, 70)
    assert config.schedule.warmup_epochs == 10
    # The official LS-VID loader trains on 48-frame pieces; the others on whole tracklets.
    sampler = ("restricted_window", 48) if dataset == "lsvid" else ("restricted",)
    assert (config.input.train_sampler, config.input.window)[: len(sampler)] == sampler
    # The official evaluation ranks the queries against every test tracklet, queries included.
    assert (config.eval.gallery, config.eval.ap_mode) == ("official", "standard")
    if dataset in names.MULTI_SPLIT:
        assert module.get_config("split=3").data.split == 3
        assert tuple(module.get_config("all_splits").eval.splits) == tuple(range(names.NUM_SPLITS))
    else:
        assert tuple(module.get_config("all_splits").eval.splits) == ()
    with pytest.raises(config_lib.UserError, match="already the official one"):
        module.get_config("official")


# What the TF-CLIP paper publishes (Table 1; PRID-2011 and DukeMTMC-VideoReID: nothing).
TFCLIP_PUBLISHED = {
    "mars": "mAP 89.4 / R1 93.0",
    "lsvid": "mAP 83.8 / R1 90.4",
    "ilidsvid": "R1 94.5 / R5 99.1",
    "prid2011": "Published: none",
    "dukev": "Published: none",
}


@pytest.mark.parametrize("model", [*MODELS, "tfclip"])
def test_every_recipe_docstring_has_its_own_commands_and_a_published_line(model):
    for dataset in DATASETS:
        name = f"{model}_{dataset}"
        module = importlib.import_module(f"configs.{name}")
        doc, weights = module.__doc__, module.get_config().model.pretrained
        assert f"python -m data_prep.build --dataset {dataset} " in doc, name
        assert f" --out {weights}" in doc and f"--config.model.pretrained={weights}" in doc, name
        assert f"python -m vreid_jax.main --config configs/{name}.py" in doc, name
        assert f"--workdir runs/{name} " in doc, name
        assert "\nPublished: " in doc, name
        if dataset in names.MULTI_SPLIT:
            assert f"configs/{name}.py:split=0 " in doc and ":all_splits" in doc, name
        if dataset == "dukev":
            assert "withdrawn by its authors" in doc, name
        if model == "tfclip":
            assert TFCLIP_PUBLISHED[dataset] in doc, name


@pytest.mark.slow
def test_tfclip_recipe_trains_from_a_converted_torchscript_archive_and_evaluates_its_checkpoint(
    converted_clip, built_data, repo_root, tmp_path
):
    pretrained = tmp_path / "ViT.npz"
    shutil.copyfile(converted_clip, pretrained)
    workdir = tmp_path / "work"
    trained, evaluated = _train_and_eval(
        "configs/tfclip_mars.py", workdir, built_data("mars"), str(pretrained), repo_root,
        **TFCLIP_KEYS,
    )  # fmt: skip
    assert trained["dataset"] == "mars" and trained["model"] == "tfclip"
    assert trained["protocol"].startswith("mars-official,")
    assert trained["step"] == NUM_TRAIN_STEPS
    _assert_same_metrics(trained, evaluated)
    _assert_learned(workdir, "tfclip_mars")
    # The CLIP-Memory, computed before the first step, is in the checkpoint: one row per identity.
    with checkpoint.Checkpointer(str(workdir / "checkpoints")) as ckpt:
        saved, meta, _ = ckpt.restore(None)
    memory = saved["batch_stats"]["clip_memory"]
    assert memory.shape == (meta["num_classes"], CLIP["output_dim"])
    assert np.all(np.isfinite(memory)) and np.all(np.linalg.norm(memory, axis=1) > 0)
