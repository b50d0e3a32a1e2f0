"""The weight converter CLI and the model summary (parameter counts, XLA FLOPs)."""

import numpy as np
import pytest
from test_models_torchvision_names import random_state_dict, torchvision_shapes

from configs.default import get_config
from data_prep import convert_resnet50
from vreid_jax.models import summary


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


def test_convert_rejects_a_non_resnet50_checkpoint(tmp_path):
    torch = pytest.importorskip("torch")
    state = random_state_dict(torchvision_shapes((1, 1, 1, 1), width=8))
    checkpoint = tmp_path / "tiny.pth"
    torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}, checkpoint)
    out = tmp_path / "tiny.npz"
    with pytest.raises(SystemExit, match="tiny.pth: not a torchvision ResNet-50"):
        convert_resnet50.main(["--torch_checkpoint", str(checkpoint), "--out", str(out)])
    assert not out.exists()
