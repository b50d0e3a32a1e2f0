"""Training: `train_and_evaluate(config, workdir)` and the jitted train step.

Read top to bottom, `train_and_evaluate` is the whole algorithm: mesh, data, model and optimizer,
state (restored when the workdir has a checkpoint), the compiled step, the loop with logging,
evaluation and checkpoints, and the final report.
"""

from __future__ import annotations

import contextlib
import functools
import math
import signal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from vreid_jax import (
    checkpoint,
    config_lib,
    evaluate,
    files,
    logging_utils,
    losses,
    models,
    optim,
    parallel,
)
from vreid_jax import state as state_lib
from vreid_jax.data import datasets, pipeline, pixels
from vreid_jax.models import pretrained


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or Inf; the last good checkpoint is kept."""


def loss_and_grads(state, batch, *, model, loss_config, seed):
    """The training loss of `batch` at `state` and its gradient with respect to the parameters.

    Returns `(loss, terms, new_batch_stats, grads)`. Pure: dropout comes from (seed, step).
    `batch["clips"]` holds uint8 pixels as the pipeline delivers them (normalised here, on the
    device; see `vreid_jax.data.pixels`) or already-normalised floats.
    """
    dropout_key = jax.random.fold_in(jax.random.key(seed), state.step)
    clips = pixels.normalize(batch["clips"])

    def loss_fn(params):
        (features, logits), updates = model.apply(
            {"params": params, "batch_stats": state.batch_stats},
            clips,
            train=True,
            rngs={"dropout": dropout_key},
            mutable=["batch_stats"],
        )
        loss, terms = losses.total_loss(features, logits, batch["labels"], loss_config)
        return loss, (terms, updates["batch_stats"])

    (loss, (terms, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return loss, terms, batch_stats, grads


def train_step(state, batch, *, model, tx, lr_fn, loss_config, seed):
    """One optimiser step on a global batch. Pure: all randomness comes from (seed, step)."""
    loss, terms, batch_stats, grads = loss_and_grads(
        state, batch, model=model, loss_config=loss_config, seed=seed
    )
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(
        step=state.step + 1,
        params=optax.apply_updates(state.params, updates),
        batch_stats=batch_stats,
        opt_state=opt_state,
    )
    metrics = {"loss": loss, **terms, "lr": lr_fn(state.step)}
    return new_state, metrics


def compile_train_step(model, tx, lr_fn, config, state_shardings, mesh):
    """`train_step` jitted on the mesh: replicated state (donated), batch split over 'data'."""
    return jax.jit(
        functools.partial(
            train_step, model=model, tx=tx, lr_fn=lr_fn, loss_config=config.loss, seed=config.seed
        ),
        in_shardings=(state_shardings, parallel.data_sharding(mesh)),
        out_shardings=(state_shardings, parallel.replicated(mesh)),
        donate_argnums=0,
    )


class _StopRequest:
    """Turns SIGTERM/SIGINT into a flag the loop checks, so it can save and exit cleanly."""

    def __init__(self):
        self.signal_name = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            # Outside the main thread (e.g. a notebook worker) signals cannot be caught.
            with contextlib.suppress(ValueError):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        del frame
        self.signal_name = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def load_data(config):
    """This process's share of the configured dataset (generated first if synthetic and missing)."""
    data = datasets.load(
        config.data,
        mars_gallery=config.eval.mars_gallery,
        seed=config.seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    data.log_summary()
    return data


def sample_clips(config) -> jax.Array:
    """A batch-of-one input with the training clip shape, for initialisation."""
    shape = (1, config.input.clip_len, config.input.height, config.input.width, 3)
    return jnp.zeros(shape, jnp.float32)


def build(config, data, mesh, *, overlay_pretrained: bool = True):
    """Model, optimizer, learning-rate schedule and the freshly initialised state.

    With `config.model.pretrained` (and `overlay_pretrained`) the state starts from the model's own
    random initialisation with the file's ResNet weights overlaid on the backbone
    (`pretrained.load_into`).
    """
    model = models.build_model(config.model, data.num_classes)
    tx, lr_fn = optim.create_optimizer(config, pipeline.steps_per_epoch(data.train, config.input))
    overlay = None
    if config.model.pretrained and overlay_pretrained:
        overlay = lambda variables: pretrained.load_into(
            variables, config.model.pretrained, config.model
        )
    state, shardings = state_lib.create_train_state(
        model, tx, sample_clips(config), seed=config.seed, mesh=mesh, overlay=overlay
    )
    return model, tx, lr_fn, state, shardings


def restore_or_keep(ckpt, state, shardings):
    """The newest readable checkpoint placed on `shardings`, or `state` when there is none."""
    restored = ckpt.restore(jax.eval_shape(lambda: state))
    if restored is None:
        return state
    host_state, _, step = restored
    logging.info("Resuming from checkpoint step %d in %s.", step, ckpt.directory)
    return jax.device_put(host_state, shardings)


def train_and_evaluate(config, workdir: str) -> dict | None:
    """Trains `config.model` on `config.data`, evaluating periodically; returns the final record."""
    # ------------------------------------------------------------------ devices, logging
    mesh = parallel.make_mesh()
    is_main = jax.process_index() == 0
    writer = logging_utils.MetricWriter(workdir, is_main_process=is_main)
    global_batch = config.input.num_ids_per_batch * config.input.num_instances
    parallel.local_batch_size(global_batch, mesh, "config.input.num_ids_per_batch * num_instances")
    ckpt = checkpoint.Checkpointer(f"{workdir}/checkpoints", keep=config.keep_checkpoints)
    # A resumed run takes every weight from its checkpoint: the ImageNet file is only read at start.
    start_from_file = bool(config.model.pretrained) and ckpt.latest_step() is None
    if start_from_file:
        pretrained.require_file(config.model.pretrained)

    # ------------------------------------------------------------------ data
    data = load_data(config)
    epoch_steps = pipeline.steps_per_epoch(data.train, config.input)
    total_steps = config_lib.total_train_steps(config, epoch_steps)
    logging.info(
        "Batch %d ids x %d clips = %d clips over %d devices; %d steps per epoch; %d steps in all.",
        config.input.num_ids_per_batch,
        config.input.num_instances,
        global_batch,
        mesh.devices.size,
        epoch_steps,
        total_steps,
    )

    # ------------------------------------------------------------------ model, optimizer, state
    model, tx, lr_fn, state, shardings = build(
        config, data, mesh, overlay_pretrained=start_from_file
    )
    logging_utils.log_parameter_overview(state.params)
    state = restore_or_keep(ckpt, state, shardings)
    start_step = int(state.step)
    extractor = evaluate.FeatureExtractor(model, config, mesh)

    untrained, untrained_path = None, f"{workdir}/untrained.json"
    if config.mode == "train_and_eval" and config.eval.before_training and start_step == 0:
        untrained = evaluate.evaluate(extractor, state_lib.variables_of(state), data, config)
        evaluate.write_scalars(writer, 0, data.name, untrained, prefix="eval_untrained")
        if is_main:
            files.write_json_atomic(untrained_path, _without_private(untrained))
    elif config.eval.before_training:
        untrained = files.read_json(untrained_path)  # Measured before an interruption.

    # ------------------------------------------------------------------ the compiled step
    step_fn = compile_train_step(model, tx, lr_fn, config, shardings, mesh)

    # ------------------------------------------------------------------ the loop
    batches = pipeline.train_batches(
        data.train,
        config.input,
        seed=config.seed,
        start_step=start_step,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    progress = logging_utils.Progress(total_steps, start_step, config.log_every_steps)
    pending, window = None, []
    last_result = None
    with _StopRequest() as stop:
        for step in range(start_step + 1, total_steps + 1):
            batch = parallel.host_to_global(next(batches), mesh)
            state, metrics = step_fn(state, batch)
            # Check the previous step's metrics while this one runs (keeps the device busy).
            if pending is not None:
                window.append(_check_finite(*pending))
            pending = (step, metrics)

            if step % config.log_every_steps == 0 or step == total_steps:
                window.append(_check_finite(*pending))
                pending = None
                report = progress.update(step, f"loss {window[-1]['loss']:.4f}")
                summary = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
                if report:
                    summary["clips_per_sec"] = report["steps_per_sec"] * global_batch
                writer.write_scalars(step, summary)
                window = []

            evaluated = None
            if config.mode == "train_and_eval" and (
                step % config.eval_every_steps == 0 or step == total_steps
            ):
                evaluated = evaluate.evaluate(
                    extractor, state_lib.variables_of(state), data, config
                )
                evaluate.write_scalars(writer, step, data.name, evaluated)
                logging.info(
                    "step %d: mAP %.4f rank-1 %.4f", step, evaluated["mAP"], evaluated["rank1"]
                )
                last_result = evaluated
            if (
                step % config.checkpoint_every_steps == 0
                or step == total_steps
                or evaluated is not None
                or stop.signal_name
            ):
                if pending is not None:
                    window.append(_check_finite(*pending))
                    pending = None
                ckpt.save(
                    step,
                    state,
                    _meta(config, data),
                    metrics={"mAP": evaluated["mAP"]} if evaluated else None,
                )
            if stop.signal_name:
                ckpt.close()
                logging.info(
                    "Received %s at step %d: checkpoint saved in %s; rerun the same "
                    "command to resume.",
                    stop.signal_name,
                    step,
                    ckpt.directory,
                )
                writer.close()
                return None
    ckpt.close()

    # ------------------------------------------------------------------ final report
    record = None
    if config.mode == "train_and_eval":
        if last_result is None:  # Resumed after the last step: evaluate what was restored.
            last_result = evaluate.evaluate(extractor, state_lib.variables_of(state), data, config)
        record = evaluate.results_record(last_result, data, config, int(state.step), untrained)
        evaluate.write_reports(workdir, record, last_result, data, config, untrained)
        evaluate.print_table(record)
    writer.close()
    return record


def _check_finite(step: int, metrics) -> dict:
    values = {k: float(v) for k, v in jax.device_get(metrics).items()}
    if not all(math.isfinite(v) for v in values.values()):
        terms = ", ".join(f"{k}={v}" for k, v in values.items())
        raise NonFiniteLossError(
            f"Non-finite loss at step {step} ({terms}). The last good checkpoint is kept; lower "
            "config.optim.learning_rate or check the data."
        )
    return values


def _meta(config, data) -> dict:
    return {"model": config.model.to_dict(), "dataset": data.name, "num_classes": data.num_classes}


def _without_private(result: dict) -> dict:
    return {k: v for k, v in result.items() if not k.startswith("_")}
