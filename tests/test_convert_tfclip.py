"""A TF-CLIP training checkpoint as the official code saves it (`torch.save` of the model's
state_dict, here from DataParallel: `module.` names) becomes a workdir that evaluates without
training, with the official model's features; a file that does not fit writes nothing.

The torch side is `tests/torch_tfclip.py`, whose own name mapping is independent of the
converter's (`convert_tfclip.official_name`), plus the entries the official model saves but never
reads (`classifier_proj_temp2`, SSP's `alpha` and `norm`)."""

import copy
import hashlib
import json
import pathlib

import numpy as np
import pytest
from helpers import run_command, tiny_config
from PIL import Image

import vreid_jax.main
from vreid_jax import checkpoint
from vreid_jax.data import pixels
from vreid_jax.deploy import convert_tfclip, extract, trained_model
from vreid_jax.deploy.tracks import feature_file
from vreid_jax.models import convert_clip, pretrained
from vreid_jax.training import loop

torch = pytest.importorskip("torch")
torch_tfclip = pytest.importorskip("torch_tfclip")

# The tiny config's TF-CLIP (configs/tiny.py): 2-layer width-64 ViT with 4 heads, 64-d projection
# (one SSP head), 64x32 frames, clips of 4; the tiny synthetic MARS's 8 training identities and
# MARS's 6 cameras.
H, W, T, CLASSES, CAMERAS = 64, 32, 4, 8, 6


def _official_state_dict(seed=1) -> dict:
    net = torch_tfclip.TFClip(CLASSES, CAMERAS, (H // 16, W // 16), T, out=64, ssp_heads=1)
    torch_tfclip.randomise_(net, seed=seed).eval()
    gen = torch.Generator().manual_seed(seed)
    state = dict(net.state_dict())
    # Saved by the official model, never read by its forward.
    state["classifier_proj_temp2.weight"] = torch.randn(CLASSES, 64, generator=gen)
    state["SSP.alpha"] = torch.full((64,), 0.1)
    state["SSP.norm.weight"], state["SSP.norm.bias"] = torch.ones(64), torch.zeros(64)
    return net, state


def _save(state, path, prefix="module."):
    torch.save({prefix + k: v for k, v in state.items()}, path)
    return str(path)


def _config(data_dir, **overrides):
    return tiny_config("tfclip", **{"data.data_dir": data_dir, **overrides})


@pytest.fixture(scope="module")
def converted(tmp_path_factory, tiny_data_dir, repo_root):
    """The reference torch model and the workdir its checkpoint became through the command."""
    folder = tmp_path_factory.mktemp("tfclip_official")
    net, state = _official_state_dict()
    weights = _save(state, folder / "best_model.pth.tar")
    workdir = folder / "workdir"
    result = run_command(
        convert_tfclip,
        "--weights", weights,
        "--config", f"{repo_root}/configs/tiny.py:model=tfclip",
        "--workdir", workdir,
        f"--config.data.data_dir={tiny_data_dir}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"wrote {workdir}" in result.stdout
    sha256 = hashlib.sha256(pathlib.Path(weights).read_bytes()).hexdigest()
    return dict(net=net, state=state, workdir=workdir, sha256=sha256)


def test_the_converted_workdir_gives_the_official_models_descriptor(converted):
    trained = trained_model.load(str(converted["workdir"]))
    assert trained.step == 0 and trained.meta["num_classes"] == CLASSES
    assert trained.meta[checkpoint.CONVERTED]["command"] == convert_tfclip.COMMAND
    gen = torch.Generator().manual_seed(5)
    clips = torch.randn(3, T, 3, H, W, generator=gen)
    cameras = torch.tensor([0, 5, 2])
    with torch.no_grad():
        theirs = converted["net"](clips, cameras).numpy()
    ours = trained.model.apply(
        trained.variables,
        clips.permute(0, 1, 3, 4, 2).numpy(),
        train=False,
        cameras=cameras.numpy().astype(np.int32),
    )[0]
    assert ours.shape == theirs.shape == (3, 64 + 64 + 64)
    scale = max(1.0, float(np.abs(theirs).max()))
    assert float(np.abs(np.asarray(ours) - theirs).max()) <= 1e-4 * scale


def test_eval_mode_of_the_converted_workdir_through_the_command_line(
    converted, tiny_data_dir, repo_root
):
    workdir = converted["workdir"]
    result = run_command(
        vreid_jax.main,
        "--config", f"{repo_root}/configs/tiny.py:model=tfclip",
        "--workdir", workdir,
        "--config.mode=eval",
        f"--config.data.data_dir={tiny_data_dir}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    record = json.loads((workdir / "results.json").read_text())
    assert record["step"] == 0 and 0.0 < record["mAP"] <= 1.0


def test_extract_from_the_converted_workdir_gives_the_official_models_features(converted, tmp_path):
    """`vreid-extract` on your own tracklets: each tracklet's clips of T frames through the official
    model with the mean camera embedding (`registry.UNKNOWN_CAMERAS`), averaged."""
    rng = np.random.default_rng(0)
    tracks = {f"t{i}": rng.integers(0, 256, (2 * T, H, W, 3), dtype=np.uint8) for i in range(2)}
    for track, frames in tracks.items():
        (tmp_path / "own" / track).mkdir(parents=True)
        for n, frame in enumerate(frames):
            Image.fromarray(frame).save(tmp_path / "own" / track / f"f{n}.png")
    out = tmp_path / "features.npz"
    args = ("--workdir", converted["workdir"], "--tracklets", tmp_path / "own", "--out", out)
    result = run_command(extract, *args)
    assert result.returncode == 0, result.stderr[-4000:]
    extracted = feature_file.load(str(out))
    assert extracted.provenance[checkpoint.CONVERTED]["sha256"] == converted["sha256"]

    net = copy.deepcopy(converted["net"])  # One camera: the mean of the training cameras'.
    net.cv_embed = torch.nn.Parameter(net.cv_embed.mean(0, keepdim=True))
    for row, track in enumerate(extracted.track_ids):
        clips = np.asarray(pixels.normalize(tracks[track])).reshape(2, T, H, W, 3)
        with torch.no_grad():
            clips = torch.from_numpy(clips).permute(0, 1, 4, 2, 3)
            theirs = net(clips, torch.zeros(2, dtype=torch.long)).mean(0).numpy()
        scale = max(1.0, float(np.abs(theirs).max()))
        assert float(np.abs(extracted.features[row] - theirs).max()) <= 1e-4 * scale, track


def test_training_from_the_converted_workdir_is_refused(converted):
    """What the training loop restores a workdir with (`loop.restore_or_keep`, before any step):
    the converted checkpoint is refused by its meta record, before its arrays are read."""
    refused = pytest.raises(checkpoint.CheckpointMismatchError, match="converted from .* no CLIP")
    with checkpoint.Checkpointer(str(converted["workdir"] / "checkpoints")) as ckpt, refused:
        loop.restore_or_keep(ckpt, {"step": np.int32(0)}, {"step": None}, {})


def _refused(tmp_path, tiny_data_dir, state, match, prefix="", **overrides):
    weights = _save(state, tmp_path / "bad.pth", prefix)
    workdir = tmp_path / "out"
    with pytest.raises(pretrained.PretrainedWeightsError, match=match):
        convert_tfclip.convert(weights, _config(tiny_data_dir, **overrides), str(workdir))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pth"]  # Nothing written.


def test_a_file_that_does_not_fit_writes_nothing(tmp_path, tiny_data_dir):
    _, state = _official_state_dict()
    bad = dict(state)
    bad["TMD.resblocks.0.message_fc.weight"] = torch.zeros(64, 32)
    _refused(
        tmp_path,
        tiny_data_dir,
        bad,
        r"bad.pth: key 'TMD.resblocks.0.message_fc.weight' has shape \(64, 32\), but the "
        r"model's params/TMD/message_fc/kernel needs \(64, 64\)",
    )
    missing = {k: v for k, v in state.items() if k != "SSP.decoder.0.cross_attn.v_proj.weight"}
    _refused(tmp_path, tiny_data_dir, missing, "no key 'SSP.decoder.0.cross_attn.v_proj.weight'")
    unused = {k: v for k, v in state.items() if k != "SSP.alpha"}
    _refused(tmp_path, tiny_data_dir, unused, "no key 'SSP.alpha'")
    unknown = {**state, "prompt_learner.cls_ctx": torch.zeros(4, 64)}
    _refused(
        tmp_path, tiny_data_dir, unknown, r"key 'prompt_learner.cls_ctx' \(shape \(4, 64\)\) is not"
    )
    encoder = {**state, "image_encoder.transformer.resblocks.5.ln_1.weight": torch.zeros(64)}
    _refused(tmp_path, tiny_data_dir, encoder, r"expected layers 0..N-1 .* found \[0, 1, 5\]")
    # 128x32 frames have 8x2 patches: not the file's 4x2 + 1 positional embeddings.
    _refused(
        tmp_path,
        tiny_data_dir,
        state,
        r"key 'image_encoder.positional_embedding' has shape \(9, 64\), but 128x32 frames .* need "
        r"\(17, 64\).* 64x32, 128x16 fit its tokens",
        **{"input.height": 128},
    )
    clip = {k.replace("image_encoder.", "visual."): v for k, v in state.items()}
    _refused(tmp_path, tiny_data_dir, clip, "a CLIP image encoder, not a TF-CLIP training")
    # And the CLIP converter, given a TF-CLIP checkpoint, names this command.
    weights = _save(state, tmp_path / "bad.pth")
    with pytest.raises(pretrained.PretrainedWeightsError, match=convert_tfclip.COMMAND):
        convert_clip.convert(weights, str(tmp_path / "out.npz"), height=H, width=W)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pth"]


def test_the_command_line_error_is_one_line(tmp_path, tiny_data_dir, repo_root):
    _, state = _official_state_dict()
    del state["cv_embed"]
    weights = _save(state, tmp_path / "bad.pth")
    result = run_command(
        convert_tfclip,
        "--weights", weights,
        "--config", f"{repo_root}/configs/tiny.py:model=tfclip",
        "--workdir", tmp_path / "out",
    )  # fmt: skip
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith(f"error: {weights}: not a TF-CLIP training checkpoint: no key")
    assert not (tmp_path / "out").exists()
