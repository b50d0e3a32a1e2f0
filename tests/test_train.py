"""The train step and loop: device-count invariance, compile-once, exact resume, clear errors."""

import json
import os
import shutil
import signal

import chex
import jax
import numpy as np
import optax
import pytest
from helpers import random_batches, tiny_config

from data_prep import locks
from vreid_jax import checkpoint, errors, logging_utils, models, parallel, run
from vreid_jax.data import pipeline
from vreid_jax.training import loop, losses, optim
from vreid_jax.training import state as state_lib

NUM_CLASSES = 6


def _train_steps(config, devices, batches, tx=None):
    mesh = parallel.make_mesh(devices)
    model = models.build_model(config.model, NUM_CLASSES)
    adam, lr_fn = optim.create_optimizer(config, steps_per_epoch=10)
    tx = tx or adam
    state, shardings = state_lib.create_train_state(
        model, tx, state_lib.init_clips(config.input), seed=0, mesh=mesh
    )
    initial_params = jax.device_get(state.params)
    step_fn = loop.compile_train_step(model, tx, lr_fn, config, shardings, mesh)
    losses = []
    for batch in batches:
        state, metrics = step_fn(state, parallel.host_to_global(batch, mesh))
        losses.append(float(metrics["loss"]))
    assert step_fn._cache_size() == 1  # Compiled once for every batch.
    updates = jax.tree.map(np.subtract, jax.device_get(state.params), initial_params)
    return np.array(losses), updates


@pytest.mark.slow  # Four train-step compiles per model: the full tier.
@pytest.mark.parametrize("model", ["nl3d", "gltr"])
def test_one_device_equals_four_devices(model):
    config = tiny_config(model)
    batches = random_batches(config, 3, NUM_CLASSES)
    losses_1, _ = _train_steps(config, jax.devices()[:1], batches)
    losses_4, _ = _train_steps(config, jax.devices()[:4], batches)
    assert np.all(np.isfinite(losses_1))
    np.testing.assert_allclose(losses_4, losses_1, rtol=1e-4, atol=1e-5)
    assert losses_1[0] != losses_1[-1]  # The parameters moved: the step is not a no-op.

    # Parameter updates are compared after one SGD step, leaf by leaf in norm. Not Adam: it divides
    # by sqrt(v), turning gradients that are zero in exact arithmetic but float noise in practice (a
    # bias that a later batch-norm cancels) into +-lr steps whose sign depends on summation order.
    # Not more steps: batch-hard mining on random clips amplifies float noise ~10x per step (a near
    # tie picks another hardest negative): 6e-5 after one step, 1e-3 after two, 1e-2 after three.
    # Per-device batch-norm statistics or per-device mining break both checks at once.
    sgd = optax.sgd(0.01)
    _, updates_1 = _train_steps(config, jax.devices()[:1], batches[:1], tx=sgd)
    _, updates_4 = _train_steps(config, jax.devices()[:4], batches[:1], tx=sgd)
    for path, u1, u4 in zip(*_flat(updates_1), _flat(updates_4)[1], strict=True):
        assert np.linalg.norm(u4 - u1) <= 1e-3 * np.linalg.norm(u1) + 1e-7, path


def _flat(tree):
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [jax.tree_util.keystr(p) for p, _ in leaves], [np.asarray(v) for _, v in leaves]


def _losses(workdir):
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines) if "loss" in r}


def _final_params(workdir):
    restored = checkpoint.Checkpointer(str(workdir / "checkpoints")).restore(None)
    return restored[0]["params"], restored[2]


@pytest.mark.slow  # Two and a half training runs: the full tier.
def test_resume_after_sigterm_is_exact(tmp_path, tiny_data_dir, monkeypatch):
    config = tiny_config("nl3d", **{"data.data_dir": tiny_data_dir, "mode": "train"})
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    loop.train_and_evaluate(config, str(straight))

    # Interrupt the second run with SIGTERM while it draws the batch of step 3.
    real_batches = pipeline.train_batches

    def batches_then_sigterm(*args, **kwargs):
        for step, batch in enumerate(real_batches(*args, **kwargs), kwargs["start_step"] + 1):
            if step == 3:
                signal.raise_signal(signal.SIGTERM)
            yield batch

    monkeypatch.setattr(pipeline, "train_batches", batches_then_sigterm)
    assert loop.train_and_evaluate(config, str(resumed)) is None
    assert checkpoint.Checkpointer(str(resumed / "checkpoints")).latest_step() == 3
    monkeypatch.setattr(pipeline, "train_batches", real_batches)
    loop.train_and_evaluate(config, str(resumed))

    a, b = _losses(straight), _losses(resumed)
    assert sorted(a) == sorted(b) == list(range(1, 7))
    np.testing.assert_allclose([b[s] for s in (4, 5, 6)], [a[s] for s in (4, 5, 6)], rtol=1e-6)
    (params_a, step_a), (params_b, step_b) = _final_params(straight), _final_params(resumed)
    assert step_a == step_b == 6
    chex.assert_trees_all_close(params_a, params_b, rtol=1e-6, atol=1e-7)


def test_batch_not_divisible_by_devices_fails_before_compiling(tmp_path, tiny_data_dir):
    config = tiny_config(
        "nl3d",
        **{"data.data_dir": tiny_data_dir, "input.num_ids_per_batch": 3, "input.num_instances": 2},
    )
    with pytest.raises(ValueError, match="num_ids_per_batch"):
        loop.train_and_evaluate(config, str(tmp_path))


def test_missing_dataset_is_a_clear_error(tmp_path):
    config = tiny_config(
        "nl3d", **{"data.data_dir": str(tmp_path / "nowhere"), "data.synthetic.enabled": False}
    )
    with pytest.raises(ValueError, match="data_prep.build"):
        loop.train_and_evaluate(config, str(tmp_path / "work"))


def test_nonfinite_loss_stops_naming_the_step(tmp_path, tiny_data_dir, monkeypatch):
    config = tiny_config("nl3d", **{"data.data_dir": tiny_data_dir, "mode": "train"})
    real_loss = losses.total_loss

    def nan_loss(features, logits, labels, loss_config, mask=None):
        loss, terms = real_loss(features, logits, labels, loss_config, mask)
        return loss * jax.numpy.where(labels.shape[0] > 0, np.nan, 1.0), terms

    monkeypatch.setattr(losses, "total_loss", nan_loss)  # The standard training kind's.
    with pytest.raises(loop.NonFiniteLossError, match="step 1"):
        loop.train_and_evaluate(config, str(tmp_path))
    assert checkpoint.Checkpointer(str(tmp_path / "checkpoints")).latest_step() is None


def test_an_exception_mid_training_closes_everything(tmp_path, tiny_data_dir, monkeypatch):
    """The writer and the checkpointer are closed on the way out of an exception, and the last
    completed (asynchronous) checkpoint is readable. (The run also profiles steps 2-3.)"""
    config = tiny_config(
        "nl3d",
        **{
            "data.data_dir": tiny_data_dir,
            "mode": "train",
            "profile_steps": 2,
            "profile_first_step": 2,
        },
    )
    real_batches = pipeline.train_batches

    def batches_then_failure(*args, **kwargs):
        for step, batch in enumerate(real_batches(*args, **kwargs), kwargs["start_step"] + 1):
            if step == 5:
                raise OSError("the disk holding the dataset went away")
            yield batch

    closed = []
    for cls in (checkpoint.Checkpointer, logging_utils.MetricWriter):
        real_close = cls.close
        monkeypatch.setattr(
            cls,
            "close",
            lambda self, real_close=real_close: (closed.append(type(self)), real_close(self)),
        )
    monkeypatch.setattr(pipeline, "train_batches", batches_then_failure)
    with pytest.raises(OSError, match="went away"):
        loop.train_and_evaluate(config, str(tmp_path))
    assert sorted(c.__name__ for c in closed) == ["Checkpointer", "MetricWriter"]
    restored = checkpoint.Checkpointer(str(tmp_path / "checkpoints")).restore(None)
    assert restored[2] == 3  # checkpoint_every_steps=3: the save at step 3 completed.
    assert list((tmp_path / "tensorboard" / "plugins" / "profile").glob("*/*.xplane.pb"))


def _logged_steps(workdir):
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [r["step"] for r in map(json.loads, lines) if "loss" in r]


@pytest.mark.slow  # Three training runs: the full tier.
def test_resume_past_a_damaged_checkpoint_then_stop_when_none_is_usable(tmp_path, tiny_data_dir):
    """A damaged newest checkpoint is skipped and saved again (no crash loop), the log holds each
    step once; with no usable checkpoint the run stops instead of training from step 0."""
    config = tiny_config("nl3d", **{"data.data_dir": tiny_data_dir, "mode": "train"})
    loop.train_and_evaluate(config, str(tmp_path))  # Checkpoints at steps 3 and 6.
    with open(next((tmp_path / "checkpoints" / "6" / "meta").iterdir()), "r+") as f:
        f.truncate(10)

    loop.train_and_evaluate(config, str(tmp_path))  # Resumes from 3, saves 6 again.
    with checkpoint.Checkpointer(str(tmp_path / "checkpoints")) as ckpt:
        assert ckpt.all_steps() == [3, 6]
        assert [p.split("-")[0] for p in os.listdir(ckpt.quarantine)] == ["6"]
    assert _logged_steps(tmp_path) == [1, 2, 3, 4, 5, 6]

    for step in (3, 6):
        shutil.rmtree(tmp_path / "checkpoints" / str(step) / "state")
    with pytest.raises(checkpoint.CorruptCheckpointError, match="No usable checkpoint"):
        loop.train_and_evaluate(config, str(tmp_path))
    assert _logged_steps(tmp_path) == [1, 2, 3, 4, 5, 6]  # Nothing re-trained or re-logged.


def test_nonfinite_state_is_never_saved(tmp_path, tiny_data_dir, monkeypatch):
    """Batch-norm running statistics are not used by a train-mode forward pass, so a NaN there
    leaves the loss finite: only the state check at the save step can catch it."""
    config = tiny_config("nl3d", **{"data.data_dir": tiny_data_dir, "mode": "train"})
    real_step = loop.train_step

    def step_poisoning_batch_stats(state, batch, **kwargs):
        new_state, metrics = real_step(state, batch, **kwargs)
        poisoned = jax.tree.map(lambda x: x * np.nan, new_state.batch_stats)
        return new_state.replace(batch_stats=poisoned), metrics

    monkeypatch.setattr(loop, "train_step", step_poisoning_batch_stats)
    with pytest.raises(loop.NonFiniteStateError, match="batch_stats at step 3"):
        loop.train_and_evaluate(config, str(tmp_path))
    logged = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert all(np.isfinite(r["loss"]) for r in map(json.loads, logged) if "loss" in r)
    assert checkpoint.Checkpointer(str(tmp_path / "checkpoints")).latest_step() is None


def test_one_run_per_workdir(tmp_path):
    config = tiny_config("nl3d")
    in_use = rf"workdir {tmp_path} is in use by pid {os.getpid()}"
    with (
        locks.exclusive(str(tmp_path), ".lock", "held by this test"),
        pytest.raises(errors.UserError, match=in_use),
    ):
        run.run(config, str(tmp_path))
