"""mode=eval loads a workdir's model as `extract` and `export` do (`trained_model.load`) and checks
it against the config: it reproduces the training run's own evaluation of the same checkpoint."""

import json
import logging

from helpers import tiny_config

from vreid_jax import run


def _results(workdir) -> dict:
    return json.loads((workdir / "results.json").read_text())


def test_eval_of_the_best_checkpoint_reproduces_the_training_evaluation(
    tmp_path, tiny_data_dir, caplog
):
    workdir = tmp_path / "run"
    overrides = {"data.data_dir": tiny_data_dir, "num_train_steps": 2, "eval_every_steps": 2}
    run.run(tiny_config("nl3d", **overrides), str(workdir))
    trained = _results(workdir)

    # Another bottleneck width in the config: the checkpoint's model is evaluated, with a warning.
    changed = {**overrides, "mode": "eval", "eval.checkpoint": "best", "model.bottleneck_dim": 16}
    with caplog.at_level(logging.WARNING):
        run.run(tiny_config("nl3d", **changed), str(workdir))
    evaluated = _results(workdir)
    assert "model.bottleneck_dim: 32 -> 16" in caplog.text
    assert evaluated["step"] == trained["step"] == 2
    for key in ("mAP", "rank1", "rank5"):
        assert evaluated[key] == trained[key], key
