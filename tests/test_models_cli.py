"""The weight converter CLI and the model summary (parameter counts, XLA FLOPs)."""


import numpy as np
import pytest
from torchvision_reference import random_state_dict, torchvision_shapes

from configs.default import get_config
from vreid_jax.models import convert_resnet50
from vreid_jax.tools import summary


def _tiny(name):
    config = get_config()
    config.model.update(name=name, stage_sizes=(1, 1, 1, 1), width=8)
    config.input.update(height=64, width=32, clip_len=4)
    return config


def test_summary_counts_and_flops():
    nl3d = summary.summarize(_tiny("nl3d"), num_classes=5)
    assert set(nl3d["params"]) == {"backbone", "head"}
    assert nl3d["total_params"] == sum(nl3d["params"].values())
    assert nl3d["params"]["head"] == 2048 // 8 * 512 + 512 + 1024 + 512 * 5 + 5

    gltr = summary.summarize(_tiny("gltr"), num_classes=5)
    assert gltr["input"] == [1, 4, 64, 32, 3]
    # A clip is 4 frames through the encoder plus the temporal head.
    assert 0 < 4 * gltr["flops_per_frame_encoder"] < gltr["flops_per_clip"]
    assert nl3d["flops_per_clip"] > 4 * gltr["flops_per_frame_encoder"]  # + temporal, non-local


def test_convert_writes_npz_with_torchvision_names(tmp_path):
    torch = pytest.importorskip("torch")
    state = random_state_dict(torchvision_shapes())
    checkpoint = tmp_path / "resnet50.pth"
    torch.save(
        {"state_dict": {f"module.{k}": torch.from_numpy(v) for k, v in state.items()}}, checkpoint
    )
    out = tmp_path / "weights" / "resnet50.npz"
    convert_resnet50.main(["--torch_checkpoint", str(checkpoint), "--out", str(out)])
    with np.load(out) as data:
        assert sorted(data.files) == sorted(state)
        np.testing.assert_array_equal(data["layer4.2.conv3.weight"], state["layer4.2.conv3.weight"])
    assert [p.name for p in out.parent.iterdir()] == ["resnet50.npz"]  # no temporary left behind


@pytest.mark.parametrize(
    "block, sizes, width, printed",
    [
        ("bottleneck", (1, 1, 1, 1), 8, "bottleneck ResNet with stages (1, 1, 1, 1) and width 8"),
        ("basic", (2, 2, 2, 2), 64, "(torchvision resnet18)"),
    ],
)
def test_convert_takes_any_torchvision_resnet(block, sizes, width, printed, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    state = random_state_dict(torchvision_shapes(sizes, width=width, block=block))
    checkpoint = tmp_path / "net.pth"
    torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}, checkpoint)
    out = tmp_path / "net.npz"
    convert_resnet50.main(["--torch_checkpoint", str(checkpoint), "--out", str(out)])
    assert printed in capsys.readouterr().out
    with np.load(out) as data:
        assert sorted(data.files) == sorted(state)


def _bad_checkpoints(torch):
    tiny = random_state_dict(torchvision_shapes((1, 1, 1, 1), width=8))
    tensors = {k: torch.from_numpy(np.asarray(v)) for k, v in tiny.items()}
    missing = dict(tensors)
    missing.pop("layer2.0.bn1.running_var")
    wrong_shape = dict(tensors) | {"layer3.0.conv2.weight": torch.zeros(32, 32, 1, 1)}
    return {
        "a list": ([1, 2, 3], r"expected a state_dict \(names -> tensors\), got list"),
        "a training checkpoint": (
            {"epoch": 3, "model": tensors},
            r"entry 'epoch' is of type int, not a tensor.*top-level keys: \['epoch', 'model'\]",
        ),
        "another network": (
            {"encoder.weight": torch.zeros(2, 2)},
            "not a torchvision ResNet state_dict: no key 'conv1.weight'",
        ),
        "a missing key": (missing, r"no weights for 1 parameters, e\.g\. key 'layer2\.0\.bn1"),
        "a wrong shape": (
            wrong_shape,
            r"key 'layer3\.0\.conv2\.weight' has shape \(32, 32, 1, 1\), but .* needs "
            r"\(32, 32, 3, 3\)",
        ),
    }


@pytest.mark.parametrize(
    "case", ["a list", "a training checkpoint", "another network", "a missing key", "a wrong shape"]
)
def test_convert_rejects_what_is_not_a_resnet_state_dict(case, tmp_path):
    torch = pytest.importorskip("torch")
    content, message = _bad_checkpoints(torch)[case]
    checkpoint = tmp_path / "bad.pth"
    torch.save(content, checkpoint)
    out = tmp_path / "bad.npz"
    with pytest.raises(SystemExit, match=r"^error: .*bad\.pth: " + message):
        convert_resnet50.main(["--torch_checkpoint", str(checkpoint), "--out", str(out)])
    assert list(tmp_path.iterdir()) == [checkpoint]  # Nothing written, no temporary left.


def test_convert_rejects_a_file_torch_cannot_read(tmp_path):
    pytest.importorskip("torch")
    checkpoint = tmp_path / "garbage.pth"
    checkpoint.write_bytes(b"\x00not a torch file")
    with pytest.raises(
        SystemExit, match=r"garbage\.pth: not a torch checkpoint holding a state_dict"
    ):
        convert_resnet50.main(["--torch_checkpoint", str(checkpoint), "--out", str(tmp_path / "x")])
