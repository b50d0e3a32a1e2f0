"""The quick-start, end to end through the command line, with a reduced step count and dataset.

The full demo (`configs/demo.py` as the README runs it) is a benchmark, not a test: its numbers are
recorded in the README.
"""

import json
import subprocess
import sys

import pytest

CONTRACT_KEYS = {
    "dataset",
    "protocol",
    "model",
    "step",
    "num_query",
    "num_gallery",
    "mAP",
    "mINP",
    "rank1",
    "rank5",
    "rank10",
    "rank20",
}


@pytest.mark.slow
# NL3D only: GLTR runs through the same command line in every recipe test (tests/test_recipes.py).
@pytest.mark.parametrize("model", ["nl3d"])
def test_demo_runs_end_to_end(model, repo_root, tmp_path):
    workdir = tmp_path / "demo"
    command = [
        sys.executable,
        "-m",
        "vreid_jax.main",
        "--config",
        f"configs/demo.py:model={model}",
        "--workdir",
        str(workdir),
        f"--config.data.data_dir={tmp_path / 'data'}",
        "--config.data.synthetic.num_ids=12",
        "--config.data.synthetic.max_len=16",
        # Enough steps that training beats the untrained network clearly (asserted below).
        "--config.num_train_steps=40",
        "--config.log_every_steps=20",
        "--config.checkpoint_every_steps=20",
    ]
    proc = subprocess.run(command, cwd=repo_root, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "untrained" in proc.stderr and "step 40" in proc.stderr  # The final table.
    # config.keep_host_memory='auto' applies on a CPU.
    assert "Freed host memory stays in the process" in proc.stderr

    results = json.loads((workdir / "results.json").read_text())
    assert set(results) >= CONTRACT_KEYS
    assert set(results["untrained"]) >= {"mAP", "rank1"}
    assert results["dataset"] == "mars" and results["model"] == model and results["step"] == 40
    assert results["protocol"].startswith("mars-official")
    for key in ("mAP", "mINP", "rank1", "rank5", "rank10", "rank20"):
        assert 0.0 <= results[key] <= 1.0
    assert results["rank1"] <= results["rank5"] <= results["rank10"] <= results["rank20"]
    assert results["mAP"] >= results["untrained"]["mAP"] + 0.05  # Training beats the untrained net.

    logged = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    train_lines = [r for r in logged if "loss" in r]
    assert [r["step"] for r in train_lines] == [20, 40]
    assert all({"loss", "ce", "triplet", "lr"} <= set(r) for r in train_lines)
    # clu's progress reporter: steps/s at every log step.
    assert [r["step"] for r in logged if "steps_per_sec" in r] == [20, 40]
    assert (workdir / "config.json").exists()
    assert (workdir / "plots" / "cmc.png").stat().st_size > 10_000
    assert len(list((workdir / "plots" / "ranked").glob("*.png"))) >= 1
    assert (workdir / "checkpoints" / "40").is_dir()
    assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
