"""Dispatch on `config.mode`: what the command line and notebooks run.

`run(config, workdir)` trains and/or evaluates (or, with mode=preflight, sizes and times the
configured run without training: `vreid_jax.training.preflight`); for the 10-split datasets
(iLIDS-VID, PRID-2011) with `config.eval.splits` set, it runs each split in `workdir/split_N` and
reports the mean over splits.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket

import jax
from absl import logging

from data_prep import locks
from vreid_jax import config_lib, errors, files
from vreid_jax.deploy import trained_model
from vreid_jax.evaluation import features, ranking, reports
from vreid_jax.training import loop, preflight


def run(config, workdir: str):
    """Runs `config.mode` in `workdir` and returns its record (None for mode=train or when stopped
    by a signal). The command line and notebooks both come here.

    Validates the config first (UserError naming the key), takes the workdir's lock (one run per
    workdir), and records the config as `workdir/config.json` and, one line per start, in
    `workdir/starts.jsonl`, warning about keys changed since the previous start.
    """
    config_lib.validate(config)
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise errors.UserError(f"Cannot use --workdir {workdir!r}: {e.strerror}.") from None
    try:
        with _workdir_lock(workdir):
            _record_start(config, workdir)
            if config.mode == "preflight":  # A split changes no shape: no per-split runs.
                return preflight.run(config, workdir)
            if config.eval.splits:
                return _run_splits(config, workdir)
            if config.mode == "eval":
                return evaluate_checkpoint(config, workdir)
            return loop.train_and_evaluate(config, workdir)
    except locks.LockHeld as e:
        raise errors.UserError(str(e)) from None


def _workdir_lock(workdir: str):
    """Process 0 holds `workdir/.lock` while it runs; a second run in the workdir is refused."""
    if jax.process_index() != 0:
        return contextlib.nullcontext()
    return locks.exclusive(workdir, ".lock", f"The workdir {workdir}")


def _record_start(config, workdir: str) -> None:
    """config.json (this start's config) and a line in starts.jsonl; names keys changed since the
    previous start (process 0)."""
    if jax.process_index() != 0:
        return
    resolved = json.loads(config.to_json())
    path = os.path.join(workdir, "config.json")
    previous = files.read_json(path)
    if previous is not None and previous != resolved:
        changed = _changed_keys(previous, resolved)
        logging.warning("Config keys changed since the previous start in %s: %s.", workdir, changed)
    files.write_json_atomic(path, resolved)
    start = {
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "config": resolved,
    }
    with open(os.path.join(workdir, "starts.jsonl"), "a") as f:
        f.write(json.dumps(start) + "\n")


def _changed_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    changed = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += _changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            changed.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return changed


def _run_splits(config, workdir: str) -> dict | None:
    """Trains/evaluates each listed split in its own sub-workdir; reports the mean over splits."""
    records = []
    for split in config.eval.splits:
        split_config = config.copy_and_resolve_references()
        with split_config.unlocked():
            split_config.data.split = int(split)
            split_config.eval.splits = ()
        logging.info("=== %s split %d ===", config.data.name, split)
        records.append(run(split_config, os.path.join(workdir, f"split_{split}")))
    if any(r is None for r in records):  # Training only, or stopped by a signal.
        return None
    record = reports.splits_record(records, config)
    reports.write_results(workdir, record)
    reports.print_table(record)
    return record


def evaluate_checkpoint(config, workdir: str) -> dict:
    """mode=eval: evaluates the 'latest' or 'best' checkpoint of `workdir`, or a step folder path.

    The model is the checkpoint's, loaded as `extract` and `export` load it
    (`trained_model.load`: variables straight onto the devices, no ImageNet file, no optimizer
    state), then checked against `config`: another dataset or class count is an error, other model
    or input settings are named in a warning.
    """
    trained = trained_model.load(
        workdir, config.eval.checkpoint, config=config, what="config.eval.checkpoint"
    )
    data = loop.load_data(trained.config, with_train=False)
    loop.compare_meta(trained.meta, loop.checkpoint_meta(config, data), trained.checkpoint)
    extractor = features.extractor_for(trained.model, trained.config, trained.mesh)
    ranked = ranking.evaluate(extractor, trained.variables, data, trained.config)
    record = reports.results_record(ranked.metrics, data, trained.config, trained.step)
    reports.write_reports(workdir, record, ranked, data, trained.config)
    reports.print_table(record)
    return record
