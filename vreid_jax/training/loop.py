"""Training: `train_and_evaluate(config, workdir)` and the jitted train step.

Read top to bottom, `_train_and_evaluate` is the whole algorithm: mesh, data, model and optimizer,
state (restored when the workdir has a checkpoint), the compiled step, the loop with logging,
evaluation and checkpoints, and the final report. The loop does each periodic thing in one place:
one `is_time` rule, one finiteness check (at log and save steps, before anything is written), and
clu's progress reporter and profiler as per-step hooks.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import json
import math
import signal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from clu import periodic_actions

from vreid_jax import checkpoint, files, logging_utils, models, parallel
from vreid_jax.data import datasets, pipeline, pixels
from vreid_jax.errors import UserError
from vreid_jax.evaluation import features, ranking, reports
from vreid_jax.models import pretrained, registry, weights
from vreid_jax.training import kinds, optim
from vreid_jax.training import state as state_lib


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or Inf; the last good checkpoint is kept."""


class NonFiniteStateError(FloatingPointError):
    """Parameters, batch-norm statistics or optimizer state became NaN or Inf; nothing is saved."""


def loss_and_grads(state, batch, *, model, loss_config, seed, loss=kinds.Standard.loss):
    """The training loss of `batch` at `state` and its gradient with respect to the parameters.

    Returns `(loss, terms, new_batch_stats, grads)`. Pure: dropout comes from (seed, step).
    `batch["clips"]` holds uint8 pixels as the pipeline delivers them (normalised here, on the
    device; see `vreid_jax.data.pixels`); `batch["cameras"]`, when present, goes to the model
    (`ModelSpec.takes_cameras`). `loss(outputs, labels, loss_config)` is the model's training
    kind's (`kinds.kind_for`).
    """
    dropout_key = jax.random.fold_in(jax.random.key(seed), state.step)
    clips = pixels.normalize(batch["clips"])
    inputs = {"cameras": batch["cameras"]} if "cameras" in batch else {}

    def loss_fn(params):
        outputs, updates = model.apply(
            {"params": params, "batch_stats": state.batch_stats},
            clips,
            train=True,
            rngs={"dropout": dropout_key},
            mutable=["batch_stats"],
            **inputs,
        )
        total, terms = loss(outputs, batch["labels"], loss_config)
        return total, (terms, updates["batch_stats"])

    (value, (terms, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return value, terms, batch_stats, grads


def train_step(state, batch, *, model, tx, lr_fn, loss_config, seed, loss=kinds.Standard.loss):
    """One optimiser step on a global batch. Pure: all randomness comes from (seed, step)."""
    value, terms, batch_stats, grads = loss_and_grads(
        state, batch, model=model, loss_config=loss_config, seed=seed, loss=loss
    )
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(
        step=state.step + 1,
        params=optax.apply_updates(state.params, updates),
        batch_stats=batch_stats,
        opt_state=opt_state,
    )
    metrics = {"loss": value, **terms, "lr": lr_fn(state.step)}
    return new_state, metrics


def compile_train_step(model, tx, lr_fn, config, state_shardings, mesh):
    """`train_step` jitted on the mesh: replicated state (donated), batch split over 'data'."""
    return jax.jit(
        functools.partial(
            train_step,
            model=model,
            tx=tx,
            lr_fn=lr_fn,
            loss_config=config.loss,
            seed=config.seed,
            loss=kinds.kind_for(config.model.name).loss,
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


def load_data(config, *, with_train: bool = True):
    """This process's share of the configured dataset (generated first if synthetic and missing);
    without `with_train`, the training split's frames are not read (`datasets.load`)."""
    data = datasets.load(
        config.data,
        gallery=config.eval.gallery,
        seed=config.seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        with_train=with_train,
    )
    data.log_summary()
    return data


def build(config, data, mesh, *, overlay_pretrained: bool = True):
    """Model, optimizer, learning-rate schedule and the freshly initialised state.

    With `config.model.pretrained` (and `overlay_pretrained`) the state starts from the model's own
    random initialisation with the file's weights overlaid (`models.weights.load_into`: ResNet
    weights on the backbone, CLIP weights on the image encoder).
    """
    model, tx, lr_fn = model_and_optimizer(
        config, data.num_classes, pipeline.steps_per_epoch(data.label_counts, config.input)
    )
    overlay = None
    if config.model.pretrained and overlay_pretrained:
        overlay = lambda variables: weights.load_into(variables, config.model.pretrained, config)
    state, shardings = state_lib.create_train_state(
        model, tx, state_lib.init_clips(config.input), seed=config.seed, mesh=mesh, overlay=overlay
    )
    return model, tx, lr_fn, state, shardings


def model_and_optimizer(config, num_classes: int, steps_per_epoch: int):
    """`(model, tx, lr_fn)`: the configured model for `num_classes` identities and its optimizer
    (its training kind's, `kinds.kind_for`) with the learning-rate schedule over
    `steps_per_epoch`-step epochs."""
    model = models.build_model(config.model, num_classes)
    init_clips = state_lib.init_clips(config.input)
    init = lambda: state_lib.init_variables(model, init_clips, 0)
    params = lambda: jax.eval_shape(init)["params"]
    tx, lr_fn = kinds.kind_for(config.model.name).optimizer(params, config, steps_per_epoch)
    return model, tx, lr_fn


def restore_or_keep(ckpt, state, shardings, expected_meta: dict):
    """The newest usable checkpoint, read straight onto `shardings` and verified, or `state` when
    there is none. Its meta record must fit `expected_meta` (`compare_meta`), and a converted
    checkpoint is refused (`refuse_converted`)."""
    target = jax.tree.map(
        lambda x, sharding: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
        state,
        shardings,
    )

    def check(saved, where):
        refuse_converted(saved, where)
        compare_meta(saved, expected_meta, where)

    restored = ckpt.restore(target, check_meta=check)
    if restored is None:
        return state
    restored_state, _, step = restored
    logging.info("Resuming from checkpoint step %d in %s.", step, ckpt.directory)
    return restored_state


def refuse_converted(saved: dict, where: str) -> None:
    """Raises CheckpointMismatchError for a checkpoint converted from another codebase's file
    (`convert_tfclip`): it holds model variables only, with a CLIP-Memory of zeros (the official
    file has none) and no optimizer state, so training from it would not be TF-CLIP's."""
    source = saved.get(checkpoint.CONVERTED)
    if source is None:
        return
    raise checkpoint.CheckpointMismatchError(
        f"{where} was converted from {source['weights']} by `{source['command']}`: it holds the "
        "trained weights but no CLIP-Memory and no optimizer state, so training cannot resume "
        "from it. Evaluate it (--config.mode=eval) or use it (vreid-extract, vreid-search, "
        "vreid-relink, vreid-export); to train, start a new --workdir from the CLIP file "
        "(config.model.pretrained)."
    )


def compare_meta(saved: dict, expected: dict, where: str) -> None:
    """Checks a checkpoint's `meta` against this run's (`checkpoint_meta`).

    Another dataset or class count is an error. Other model or input settings than the
    checkpoint's (whose shapes already matched) are named in a warning.
    """
    if (saved.get("dataset"), saved.get("num_classes")) != (
        expected["dataset"],
        expected["num_classes"],
    ):
        raise checkpoint.CheckpointMismatchError(
            f"{where} was trained on {saved.get('dataset')!r} with {saved.get('num_classes')} "
            f"identities; config.data is {expected['dataset']!r} with {expected['num_classes']}. "
            "Use the dataset the checkpoint was trained on, or a new --workdir."
        )
    changed = [
        f"{section}.{key}: {saved.get(section, {}).get(key)!r} -> {value!r}"
        for section in ("model", "input")
        for key, value in expected[section].items()
        if saved.get(section, {}).get(key, value) != value
    ]
    if changed:
        logging.warning("%s was trained with other settings: %s.", where, "; ".join(changed))


def train_and_evaluate(config, workdir: str) -> dict | None:
    """Trains `config.model` on `config.data`, evaluating periodically; returns the final record
    (None for mode=train or when stopped by a signal).

    The metric writer and the checkpointer are closed on every way out, exceptions included, so
    an asynchronous save in flight always completes.
    """
    with (
        logging_utils.MetricWriter(workdir, is_main_process=jax.process_index() == 0) as writer,
        checkpoint.Checkpointer(f"{workdir}/checkpoints", keep=config.keep_checkpoints) as ckpt,
    ):
        return _train_and_evaluate(config, workdir, writer, ckpt)


def _train_and_evaluate(config, workdir: str, writer, ckpt) -> dict | None:
    # ------------------------------------------------------------------ devices, data
    mesh = parallel.make_mesh()
    parallel.check_train_batch(config.input, mesh)
    # A resumed run takes every weight from its checkpoint: the ImageNet file is only read at start.
    start_from_file = bool(config.model.pretrained) and ckpt.latest_step() is None
    if start_from_file:
        pretrained.require_file(config.model.pretrained)
    data = load_data(config, with_train=False)
    # The training frames are read while the model is built and its step compiled, which do not
    # need them: with cores to spare, start-up takes about the longer of the two rather than their
    # sum (measured in benchmarks/README.md, "Every path at dataset scale").
    reading_train = _in_background(data.read_train)
    total_steps = optim.total_train_steps(
        config, pipeline.steps_per_epoch(data.label_counts, config.input)
    )
    logging.info(
        "Batch %d ids x %d clips = %d clips over %d devices; %d steps in all.",
        config.input.num_ids_per_batch,
        config.input.num_instances,
        config.input.num_ids_per_batch * config.input.num_instances,
        mesh.devices.size,
        total_steps,
    )

    # ------------------------------------------------------------------ model, optimizer, state
    model, tx, lr_fn, state, shardings = build(
        config, data, mesh, overlay_pretrained=start_from_file
    )
    logging_utils.log_parameter_overview(state.params)
    meta = checkpoint_meta(config, data)
    state = restore_or_keep(ckpt, state, shardings, meta)
    start_step = int(state.step)
    if start_step > total_steps:
        raise UserError(
            f"The checkpoint in {ckpt.directory} is at step {start_step}, past the {total_steps} "
            "steps this config trains: raise config.num_train_steps (or num_epochs), or use a new "
            "--workdir."
        )
    writer.drop_after(start_step)  # Steps logged after the checkpoint are logged again.
    evaluating = config.mode == "train_and_eval"
    extractor = features.extractor_for(model, config, mesh)
    untrained = _untrained_summary(config, workdir, writer, extractor, state, data, start_step)
    step_fn = compile_train_step(model, tx, lr_fn, config, shardings, mesh)
    reading_train.result()
    takes_cameras = registry.spec(config.model.name).takes_cameras
    if takes_cameras:
        features.check_cameras(model, data.train, "training")
    if start_step == 0:  # What a model computes before training (checkpointed: once per run).
        state = kinds.kind_for(config.model.name).prepare(model, state, data, config, mesh)

    # ------------------------------------------------------------------ the loop
    batches = pipeline.train_batches(
        data.train,
        config.input,
        seed=config.seed,
        start_step=start_step,
        with_cameras=takes_cameras,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    progress = periodic_actions.ReportProgress(
        num_train_steps=total_steps,
        writer=writer,
        every_steps=config.log_every_steps,
        every_secs=None,
    )
    hooks = [progress, *_profiler(config, workdir)]
    is_time = lambda step, every: step % every == 0 or step == total_steps
    # Metrics on the device not yet checked, and host ones not yet logged.
    unchecked, since_log = [], []
    ranked = None
    with _StopRequest() as stop:
        for step in range(start_step + 1, total_steps + 1):
            with jax.profiler.StepTraceAnnotation("train", step_num=step):
                state, metrics = step_fn(state, parallel.host_to_global(next(batches), mesh))
            unchecked.append(metrics)
            log_now = is_time(step, config.log_every_steps)
            eval_now = evaluating and is_time(step, config.eval_every_steps)
            save_now = eval_now or stop.signal_name or is_time(step, config.checkpoint_every_steps)

            if log_now or save_now:  # Nothing is logged, evaluated or saved after a NaN.
                since_log += _checked_finite(unchecked, step)
                unchecked = []
                if save_now:  # The loss can stay finite while the state is not.
                    _check_state_finite(state, step)
            if log_now:
                summary = {k: float(np.mean([m[k] for m in since_log])) for k in since_log[0]}
                writer.write_scalars(step, summary)
                logging.info(
                    "step %d: %s", step, ", ".join(f"{k} {v:.4g}" for k, v in summary.items())
                )
                since_log = []
            if eval_now:
                with progress.timed("eval"):
                    ranked = ranking.evaluate(
                        extractor, state_lib.variables_of(state), data, config
                    )
                reports.write_scalars(writer, step, data.name, ranked.metrics)
                logging.info(
                    "step %d: mAP %.4f rank-1 %.4f",
                    step,
                    ranked.metrics["mAP"],
                    ranked.metrics["rank1"],
                )
            if save_now:
                ckpt.save(step, state, meta, evaluation=ranked.metrics if eval_now else None)
            for hook in hooks:
                hook(step)
            if stop.signal_name:
                logging.info(
                    "Received %s at step %d: checkpoint saved in %s; rerun the same command to "
                    "resume.",
                    stop.signal_name,
                    step,
                    ckpt.directory,
                )
                return None

    # ------------------------------------------------------------------ final report
    if not evaluating:
        return None
    if ranked is None:  # Resumed after the last step: evaluate what was restored.
        ranked = ranking.evaluate(extractor, state_lib.variables_of(state), data, config)
    record = reports.results_record(ranked.metrics, data, config, int(state.step), untrained)
    reports.write_reports(workdir, record, ranked, data, config, untrained)
    reports.print_table(record)
    return record


def _in_background(fn) -> concurrent.futures.Future:
    """`fn()` started on a thread of its own; `.result()` waits for it (and raises its error)."""
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="background")
    future = pool.submit(fn)
    pool.shutdown(wait=False)
    return future


def _untrained_summary(config, workdir, writer, extractor, state, data, start_step):
    """With `config.eval.before_training`: the metrics of the network before any training step,
    measured at step 0 or, in a resumed run, read back from `untrained.json`."""
    if not (config.mode == "train_and_eval" and config.eval.before_training):
        return None
    path = f"{workdir}/untrained.json"
    if start_step > 0:
        return files.read_json(path)  # Measured before an interruption.
    summary = ranking.evaluate(extractor, state_lib.variables_of(state), data, config).metrics
    reports.write_scalars(writer, 0, data.name, summary, prefix="eval_untrained")
    if jax.process_index() == 0:
        files.write_json_atomic(path, summary)
    return summary


def _profiler(config, workdir: str) -> list:
    """With `config.profile_steps` > 0: a hook that traces that many steps from
    `config.profile_first_step` into the TensorBoard folder (its Profile tab shows the trace)."""
    if config.profile_steps <= 0:
        return []
    return [
        periodic_actions.Profile(
            logdir=f"{workdir}/tensorboard",
            num_profile_steps=config.profile_steps,
            profile_duration_ms=None,
            first_profile=config.profile_first_step,
            every_secs=None,
        )
    ]


def _checked_finite(step_metrics: list, last_step: int) -> list[dict]:
    """Host values of the metrics of the steps ending at `last_step`, one dict per step.

    The one finiteness check of the loop. Raises NonFiniteLossError naming the first bad step.
    """
    first_step = last_step - len(step_metrics) + 1
    checked = []
    for step, metrics in enumerate(jax.device_get(step_metrics), first_step):
        values = {k: float(v) for k, v in metrics.items()}
        if not all(math.isfinite(v) for v in values.values()):
            terms = ", ".join(f"{k}={v}" for k, v in values.items())
            raise NonFiniteLossError(
                f"Non-finite loss at step {step} ({terms}). The last good checkpoint is kept; "
                "lower config.optim.learning_rate or check the data."
            )
        checked.append(values)
    return checked


@jax.jit
def _finite_collections(state) -> dict:
    """Per collection of the state: are all its floating-point values finite? (On the device.)"""
    collections = {
        "params": state.params,
        "batch_stats": state.batch_stats,
        "opt_state": state.opt_state,
    }
    return {
        name: jnp.all(
            jnp.asarray(
                [
                    jnp.all(jnp.isfinite(leaf))
                    for leaf in jax.tree.leaves(tree)
                    if jnp.issubdtype(leaf.dtype, jnp.floating)
                ]
                or [True]
            )
        )
        for name, tree in collections.items()
    }


def _check_state_finite(state, step: int) -> None:
    """Raises NonFiniteStateError naming the collections with a NaN or Inf: a loss can stay finite
    while the state is not (an exploding optimizer, batch-norm statistics unused in train mode)."""
    bad = [name for name, ok in jax.device_get(_finite_collections(state)).items() if not ok]
    if bad:
        raise NonFiniteStateError(
            f"Non-finite values in {', '.join(bad)} at step {step}: not saved. The last good "
            "checkpoint is kept; lower config.optim.learning_rate or the loss weights."
        )


def checkpoint_meta(config, data) -> dict:
    """What a checkpoint records of its run, besides its arrays (JSON: tuples become lists)."""
    return json.loads(
        json.dumps(
            {
                "model": config.model.to_dict(),
                "input": {k: config.input[k] for k in ("height", "width", "clip_len")},
                "dataset": data.name,
                "num_classes": data.num_classes,
            }
        )
    )
