"""Dispatch on `config.mode`: what the command line and notebooks run.

`run(config, workdir)` trains and/or evaluates; for the 10-split datasets (iLIDS-VID, PRID-2011) with
`config.eval.splits` set, it runs each split in `workdir/split_N` and reports the mean over splits.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from absl import logging

from vreid_jax import checkpoint, errors, evaluate, files, logging_utils, models, parallel, train
from vreid_jax import state as state_lib


def run(config, workdir: str):
    """Runs `config.mode` ('train_and_eval', 'train' or 'eval') in `workdir`; returns its record."""
    if config.mode not in ("train_and_eval", "train", "eval"):
        raise ValueError(f"Unknown config.mode={config.mode!r}.")
    os.makedirs(workdir, exist_ok=True)
    if config.eval.splits:
        return _run_splits(config, workdir)
    if config.mode == "eval":
        return evaluate_checkpoint(config, workdir)
    return train.train_and_evaluate(config, workdir)


def _run_splits(config, workdir: str) -> dict | None:
    """Trains/evaluates each listed split in its own sub-workdir; reports the mean over splits."""
    records = []
    for split in config.eval.splits:
        split_config = config.copy_and_resolve_references()
        with split_config.unlocked():
            split_config.data.split = int(split)
            split_config.eval.splits = ()
        logging.info("=== %s split %d ===", config.data.name, split)
        split_dir = os.path.join(workdir, f"split_{split}")
        os.makedirs(split_dir, exist_ok=True)
        records.append(run(split_config, split_dir))
    if any(r is None for r in records):  # Training only, or stopped by a signal.
        return None
    mean = {k: float(np.mean([r[k] for r in records])) for k in evaluate.METRIC_KEYS}
    record = {
        **{k: records[0][k] for k in ("dataset", "model")},
        "protocol": f"{config.data.name} mean over splits {list(config.eval.splits)}, "
        f"AP {config.eval.ap_mode}",
        "step": records[0]["step"],
        "num_query": records[0]["num_query"],
        "num_gallery": records[0]["num_gallery"],
        **mean,
        "splits": [
            {"split": int(s), **r} for s, r in zip(config.eval.splits, records, strict=True)
        ],
    }
    if jax.process_index() == 0:
        files.write_json_atomic(os.path.join(workdir, "results.json"), record)
    rows = [
        [f"split {s}"] + [100 * r[k] for k in evaluate.METRIC_KEYS]
        for s, r in zip(config.eval.splits, records, strict=True)
    ]
    rows.append(["mean"] + [100 * mean[k] for k in evaluate.METRIC_KEYS])
    logging_utils.log_table(
        f"{record['model']} on {record['dataset']}: {len(records)} splits, in %",
        ["split", *evaluate.METRIC_KEYS],
        rows,
    )
    return record


def evaluate_checkpoint(config, workdir: str) -> dict:
    """mode=eval: evaluates the 'latest' or 'best' checkpoint of `workdir`, or a step folder path.

    Stands alone: the model variables are restored straight onto the devices from the checkpoint;
    no ImageNet file is read and no optimizer state is created or read.
    """
    ckpt_dir, step = _checkpoint_location(config.eval.checkpoint, workdir)
    ckpt = checkpoint.Checkpointer(ckpt_dir)
    if step == "best":
        step = ckpt.best_step()
    elif step is None:
        step = ckpt.latest_step()
    if step is None:  # Checked before any data is read.
        ckpt.close()
        raise checkpoint.NoCheckpointError(
            f"No {config.eval.checkpoint} checkpoint in {ckpt_dir}: train first (the best one needs "
            "mode=train_and_eval), or set config.eval.checkpoint to a checkpoint step folder."
        )
    mesh = parallel.make_mesh()
    data = train.load_data(config)
    model = models.build_model(config.model, data.num_classes)
    abstract = state_lib.abstract_variables(model, train.sample_clips(config), mesh)
    variables, meta, step = ckpt.restore_variables(abstract, step=step)
    ckpt.close()
    if (meta["dataset"], meta["num_classes"]) != (data.name, data.num_classes):
        raise checkpoint.CheckpointMismatchError(
            f"Checkpoint step {step} in {ckpt_dir} was trained on {meta['dataset']!r} with "
            f"{meta['num_classes']} identities; config.data is {data.name!r} with "
            f"{data.num_classes}. Evaluate it with the dataset it was trained on."
        )
    extractor = evaluate.FeatureExtractor(model, config, mesh)
    result = evaluate.evaluate(extractor, variables, data, config)
    record = evaluate.results_record(result, data, config, step)
    evaluate.write_reports(workdir, record, result, data, config)
    evaluate.print_table(record)
    return record


def _checkpoint_location(which: str, workdir: str):
    """(checkpoint directory, step or None for latest or 'best') for `config.eval.checkpoint`."""
    if which in ("latest", "best"):
        return os.path.join(workdir, "checkpoints"), None if which == "latest" else "best"
    path = os.path.abspath(which)
    if not os.path.isdir(path) or not os.path.basename(path).isdigit():
        raise errors.UserError(
            f"config.eval.checkpoint={which!r}: expected 'latest', 'best' or a checkpoint step "
            "folder such as runs/x/checkpoints/1000."
        )
    return os.path.dirname(path), int(os.path.basename(path))
