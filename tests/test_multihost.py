"""Multi-host for real: 2 processes x 2 CPU devices (jax.distributed over gloo on localhost) train
the same steps as 1 process x 4 devices.

Dropout is off here: its masks are drawn per row of the global batch, and the process layout orders
the rows differently (process p contributes the identities with label % processes == p), so each
layout draws other, equally distributed, masks. Everything else (data, augmentation, batch-norm
statistics, mining, updates) is layout-invariant, which is what this test pins down.
"""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from helpers import tiny_config

from vreid_jax.data import datasets


def test_fake_devices_visible():
    """The harness (conftest.py) gives every test process four CPU devices."""
    assert jax.device_count() >= 4
    assert jax.default_backend() == "cpu"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(num_devices):
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={num_devices}"
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _losses(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        lines = f.read().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if "loss" in r]


def _train_on_two_processes(command, workdir, repo_root) -> list[str]:
    """Runs `command` as process 0 and 1 of 2 (2 CPU devices each) on `workdir`; returns their
    outputs, after asserting that both succeeded."""
    port = _free_port()
    procs = [
        subprocess.Popen(
            command
            + [
                "--workdir",
                workdir,
                f"--config.mesh.coordinator_address=127.0.0.1:{port}",
                "--config.mesh.num_processes=2",
                f"--config.mesh.process_id={i}",
            ],
            cwd=repo_root,
            env=_env(2),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    codes = [p.returncode for p in procs]
    assert codes == [0, 0], (
        "\n\n".join(  # Both outputs: one process's failure may start the other's.
            f"process {i} exited {code}:\n{out[-3000:]}"
            for i, (code, out) in enumerate(zip(codes, outputs, strict=True))
        )
    )
    assert "process 0 of 2" in outputs[0] or "process 0 of 2" in outputs[1]
    return outputs


@pytest.mark.slow
def test_two_processes_train_like_one(tmp_path, tiny_data_dir, repo_root):
    config = tiny_config("nl3d", **{"data.data_dir": tiny_data_dir})
    datasets.load(config.data, gallery="official", seed=config.seed)  # Build the data once.
    command = [
        sys.executable,
        "-m",
        "vreid_jax.main",
        "--config",
        "configs/tiny.py",
        "--config.mode=train",
        f"--config.data.data_dir={tiny_data_dir}",
        "--config.num_train_steps=3",
        "--config.model.dropout=0",
    ]
    single = str(tmp_path / "single")
    subprocess.run(
        command + ["--workdir", single],
        cwd=repo_root,
        env=_env(4),
        check=True,
        timeout=600,
        capture_output=True,
    )

    multi = str(tmp_path / "multi")
    _train_on_two_processes(command, multi, repo_root)
    np.testing.assert_allclose(_losses(multi), _losses(single), rtol=1e-5)
    assert len(_losses(single)) == 3


@pytest.mark.slow
def test_tfclip_clip_memory_on_two_processes_is_every_identity_mean(
    tmp_path, tiny_data_dir, repo_root
):
    """Each process extracts its share of the training tracklets; the CLIP-Memory both compute
    (and checkpoint) is the one of all of them: recomputed here in one process from the same
    encoder (a learning rate of 0 leaves the parameters as they were when it was computed)."""
    from vreid_jax import checkpoint, models, parallel  # noqa: PLC0415
    from vreid_jax.evaluation import features  # noqa: PLC0415
    from vreid_jax.models import tfclip  # noqa: PLC0415

    config = tiny_config("tfclip", **{"data.data_dir": tiny_data_dir})
    data = datasets.load(config.data, gallery="official", seed=config.seed)
    workdir = str(tmp_path / "multi")
    command = [
        sys.executable,
        "-m",
        "vreid_jax.main",
        "--config",
        "configs/tiny.py:model=tfclip",
        "--config.mode=train",
        f"--config.data.data_dir={tiny_data_dir}",
        "--config.num_train_steps=1",
        "--config.optim.learning_rate=0",
    ]
    _train_on_two_processes(command, workdir, repo_root)
    with checkpoint.Checkpointer(os.path.join(workdir, "checkpoints")) as ckpt:
        saved, meta, _ = ckpt.restore(None)
    model = models.build_model(config.model, meta["num_classes"])
    mesh = parallel.make_mesh()
    extractor = features.ClipAverage(model, config, mesh, method="memory_features")
    variables = {"params": saved["params"], "batch_stats": saved["batch_stats"]}
    per_tracklet = extractor(variables, data.train)
    expected = tfclip.identity_memory(per_tracklet, data.train.labels, data.num_classes)
    memory = saved["batch_stats"]["clip_memory"]
    assert memory.shape == expected.shape and np.abs(expected).max() > 1e-3
    np.testing.assert_allclose(memory, expected, rtol=1e-4, atol=1e-6)
