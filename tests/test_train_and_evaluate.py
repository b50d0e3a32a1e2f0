"""Each model trains and evaluates end to end in this process, as flax's examples' train_test.py
does: the tiny config (a width-8 network on the shared synthetic MARS) for a few steps through
`train_and_evaluate`, the same function the command line and the notebook call. The command line
itself runs it in the full tier (tests/test_recipes.py, tests/test_demo.py)."""

import json

import numpy as np
import pytest
from helpers import tiny_config

from vreid_jax import checkpoint
from vreid_jax.models import registry
from vreid_jax.training import loop

STEPS = 3  # The tiny config checkpoints every 3 steps.


@pytest.mark.parametrize("model", sorted(registry.MODELS))
def test_train_and_evaluate(model, tmp_path, tiny_data_dir):
    untrained = model == "nl3d"  # The demo's model evaluates before training too, as the demo does.
    overrides = {"num_train_steps": STEPS, "eval.before_training": untrained}
    config = tiny_config(model, **{"data.data_dir": tiny_data_dir, **overrides})
    record = loop.train_and_evaluate(config, str(tmp_path))

    assert record["model"] == model and record["dataset"] == "mars" and record["step"] == STEPS
    assert record["num_query"] > 0 and record["num_gallery"] > 0
    assert ("untrained" in record) == untrained
    for summary in (record, record["untrained"]) if untrained else (record,):
        assert 0 < summary["mAP"] <= 1 and 0 <= summary["rank1"] <= summary["rank5"] <= 1
    assert json.loads((tmp_path / "results.json").read_text()) == record
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    losses = {r["step"]: r["loss"] for r in map(json.loads, lines) if "loss" in r}
    assert sorted(losses) == list(range(1, STEPS + 1)) and np.all(np.isfinite(list(losses.values())))
    with checkpoint.Checkpointer(str(tmp_path / "checkpoints")) as ckpt:
        assert ckpt.latest_step() == STEPS
