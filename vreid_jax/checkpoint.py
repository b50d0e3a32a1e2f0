"""Checkpoints: the only module that imports orbax.

Keeps the latest N steps and the best by `BEST_METRIC`, and saves asynchronously. Restores go straight onto
the target shardings, and every restore is verified:
- the structure (names and shapes) against the restore target;
- every array's CRC-32 against the checksums recorded when the checkpoint was saved.

When the newest checkpoint cannot be used (unreadable, torn, or bytes changed on disk), restore
falls back step by step to the newest good one. The bad steps are moved to `<directory>.quarantine`,
never deleted, so that training can save those steps again. If no checkpoint is usable, restore
stops with a message naming the folder; it never starts over from step 0 silently.
"""

from __future__ import annotations

import datetime
import os
import zlib

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from vreid_jax.errors import UserError

# The summary metric that chooses the best checkpoint (a key of `metrics.evaluate_rank`'s summary).
BEST_METRIC = "mAP"
# The meta record's entry of a checkpoint converted from another codebase's file (its source):
# such a checkpoint holds model variables only, to evaluate and use, never to resume training.
CONVERTED = "converted"


def _best_metric(metrics: dict) -> float:
    return metrics[BEST_METRIC]


class CheckpointMismatchError(UserError):
    """The checkpoint was written for another model or dataset than the configured one."""


class NoCheckpointError(UserError):
    """There is no checkpoint where one was asked for."""


class CorruptCheckpointError(UserError):
    """A checkpoint cannot be read, or its arrays differ from what was saved."""


class CheckpointSaveError(UserError):
    """An (asynchronous) save failed, e.g. on a full disk."""


class Checkpointer:
    """A thin policy layer over an orbax `CheckpointManager` with two items: `state` and `meta`.

    A context manager: leaving it waits for a save in flight and releases the manager.
    """

    def __init__(self, directory: str, *, keep: int = 2, asynchronous: bool = True):
        policy = ocp.checkpoint_managers.AnyPreservationPolicy(
            [
                ocp.checkpoint_managers.LatestN(n=keep),
                # Keep the best; steps saved without an evaluation are not candidates.
                ocp.checkpoint_managers.BestN(
                    get_metric_fn=_best_metric, n=1, keep_checkpoints_without_metrics=False
                ),
            ]
        )
        # orbax records each save's metrics beside it; `best_fn` makes its `best_step()` read them,
        # so the best step is known from the checkpoints alone, with no file of our own.
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policy,
            best_fn=_best_metric,
            best_mode="max",
            enable_async_checkpointing=asynchronous,
            create=True,
        )
        self.directory = os.path.abspath(directory)
        self.quarantine = f"{self.directory}.quarantine"
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "meta")
        )
        self._saving_step = None

    # ------------------------------------------------------------------------------ saving

    def save(self, step: int, state, meta: dict, evaluation: dict | None = None) -> None:
        """Saves `state` (a pytree of arrays) and the JSON-able `meta` at `step`.

        `evaluation` is the summary of an evaluation of this state, if one was run: its
        `BEST_METRIC` makes the step a candidate for the best checkpoint.

        The replicated state is fetched to host memory first: saving numpy arrays is far faster
        than saving one replicated copy per device. Each array's name, shape, dtype and CRC-32 are
        recorded in the meta item (`arrays`), so that a restore can verify them.
        """
        self._raise_failed_save()
        host_state = jax.device_get(state)
        meta = {**meta, "arrays": array_records(host_state)}
        try:
            self._manager.save(
                int(step),
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(host_state), meta=ocp.args.JsonSave(meta)
                ),
                metrics=None if evaluation is None else {BEST_METRIC: float(evaluation[BEST_METRIC])},
                force=True,
            )
        except OSError as e:
            raise CheckpointSaveError(
                f"Saving checkpoint step {step} in {self.directory} failed: {e}"
            ) from e
        self._saving_step = int(step)

    def _raise_failed_save(self, check=None) -> None:
        """Runs `check` (default: orbax's error check of the previous asynchronous save) and
        reports a failure once, as CheckpointSaveError naming the step."""
        try:
            (check or self._manager.check_for_errors)()
        except Exception as e:  # noqa: BLE001  (orbax re-raises whatever its save thread hit)
            step, self._saving_step = self._saving_step, None
            raise CheckpointSaveError(
                f"Saving checkpoint step {step} in {self.directory} failed: {type(e).__name__}: "
                f"{e}. Is the disk full? The previous checkpoints are kept."
            ) from e

    # ------------------------------------------------------------------------------ steps

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def best_step(self) -> int | None:
        """The step with the highest `BEST_METRIC` among the evaluated saves kept, if any."""
        return self._manager.best_step()

    # ------------------------------------------------------------------------------ restoring

    def restore(self, abstract_state, step: int | None = None, check_meta=None):
        """Restores `(state, meta, step)` or None when there is no checkpoint.

        `abstract_state` is the restore target: the live state's structure as ShapeDtypeStructs with
        shardings (or numpy arrays), onto which orbax reads the arrays directly. None restores the
        tree as saved, as host numpy, unverified (for inspection and tests).

        `step=None` takes the newest usable checkpoint. Newer unusable ones are quarantined and
        the reason is logged. A given `step` must itself be usable.

        `check_meta(meta, where)`, when given, vets the checkpoint's meta record first (e.g. its
        dataset) and raises CheckpointMismatchError for a checkpoint of another run.

        Raises:
          CheckpointMismatchError: the checkpoint holds another model (names the first differing
            array) or fails `check_meta`.
          CorruptCheckpointError: no checkpoint is usable (names each step and why).
        """
        candidates = [step] if step is not None else list(reversed(self.all_steps()))
        if not candidates:
            return None
        failures = []
        for candidate in candidates:
            try:
                restored = self._restore_verified(
                    candidate, abstract_state, ocp.args.StandardRestore(abstract_state), check_meta
                )
            except CheckpointMismatchError:
                raise
            except Exception as e:  # noqa: BLE001  (any read failure: try an older step)
                why = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                logging.warning(
                    "Checkpoint %d in %s is unusable (%s).", candidate, self.directory, why
                )
                failures.append((candidate, why))
                continue
            self._quarantine([s for s, _ in failures])
            return restored
        listed = "; ".join(f"step {s}: {why}" for s, why in failures)
        raise CorruptCheckpointError(
            f"No usable checkpoint in {self.directory} ({listed}). Restore the folder from a "
            "backup, or move it away to train from step 0."
        )

    def restore_variables(self, abstract_variables: dict, step: int | None = None):
        """Restores only the model variables of a checkpoint: `(variables, meta, step)`, or None.

        `abstract_variables` is `{'params', 'batch_stats'}` as ShapeDtypeStructs with shardings
        (`state.abstract_variables`): the arrays are read straight onto those shardings and the
        optimizer state is never read. `step=None` takes the newest checkpoint. Verified like
        `restore`; a bad checkpoint raises CorruptCheckpointError.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            return None
        partial = ocp.args.PyTreeRestore(
            item=abstract_variables,
            restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_variables),
            partial_restore=True,
        )
        try:
            return self._restore_verified(step, abstract_variables, partial, check_meta=None)
        except (CheckpointMismatchError, CorruptCheckpointError):
            raise
        except Exception as e:  # noqa: BLE001  (orbax raises many types for an unreadable step)
            raise CorruptCheckpointError(
                f"Checkpoint step {step} in {self.directory} is unreadable: {type(e).__name__}: {e}"
            ) from e

    def read_meta(self, step: int) -> dict:
        """The meta record of `step` (what the run recorded besides the arrays); nothing else is
        read."""
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
            )
        except Exception as e:  # noqa: BLE001  (orbax raises many types for an unreadable step)
            raise CorruptCheckpointError(
                f"The meta record of checkpoint step {step} in {self.directory} is unreadable: "
                f"{type(e).__name__}: {e}"
            ) from e
        return restored["meta"]

    def _restore_verified(self, step: int, abstract, state_args, check_meta):
        """Reads the meta record, vets it and the structure, then the arrays, and verifies them."""
        where = f"Checkpoint step {step} in {self.directory}"
        meta = self.read_meta(step)
        if check_meta is not None:
            check_meta(meta, where)
        if abstract is not None:
            _check_structure(meta, abstract, where)
        state = self._manager.restore(step, args=ocp.args.Composite(state=state_args))["state"]
        if abstract is not None:
            _verify_checksums(state, meta, where)
        return state, meta, step

    def _quarantine(self, steps: list[int]) -> None:
        """Moves unusable steps to `<directory>.quarantine/<step>-<UTC time>` (evidence is kept,
        and training can save those steps again)."""
        if not steps:
            return
        if jax.process_index() == 0:
            os.makedirs(self.quarantine, exist_ok=True)
            stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S%fZ")
            for step in steps:
                target = os.path.join(self.quarantine, f"{step}-{stamp}")
                os.replace(os.path.join(self.directory, str(step)), target)
                logging.warning("Moved unusable checkpoint step %d to %s.", step, target)
        self._manager.reload()

    # ------------------------------------------------------------------------------ closing

    def wait(self) -> None:
        """Waits for a save in flight; raises CheckpointSaveError if it failed."""
        self._raise_failed_save(self._manager.wait_until_finished)

    def close(self) -> None:
        """Waits for an asynchronous save in flight, then releases the manager."""
        try:
            self.wait()
        finally:
            self._manager.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------------------------- verification


def array_records(tree) -> dict[str, dict]:
    """`{name: {'shape', 'dtype', 'crc32'}}` for every array of a host pytree; names join the key
    path with '/', e.g. 'params/backbone/conv1/kernel'."""
    return {
        name: {
            "shape": list(np.shape(leaf)),
            "dtype": str(np.asarray(leaf).dtype),
            "crc32": _crc32(leaf),
        }
        for name, leaf in _named_leaves(tree)
    }


def _check_structure(meta: dict, abstract, where: str) -> None:
    """Raises CheckpointMismatchError at the first array of `abstract` the checkpoint lacks or
    holds with another shape or dtype."""
    saved = _array_records(meta, where)
    for name, leaf in _named_leaves(abstract):
        if name not in saved:
            raise CheckpointMismatchError(
                f"{where} has no array {name}: it was written for a different model config. Use "
                "a new --workdir or the config the checkpoint was trained with."
            )
        saved_type = (tuple(saved[name]["shape"]), saved[name]["dtype"])
        wanted_type = (tuple(leaf.shape), str(np.dtype(leaf.dtype)))
        if saved_type != wanted_type:
            raise CheckpointMismatchError(
                f"{where}: {name} has shape and dtype {saved_type} but the configured model has "
                f"{wanted_type}. Use a new --workdir or the config the checkpoint was trained with."
            )


def _array_records(meta: dict, where: str) -> dict:
    """The meta record's `arrays` (what `save` recorded of each array)."""
    if "arrays" not in meta:
        raise CorruptCheckpointError(
            f"{where}: its meta record has no 'arrays' entry, which every save writes: it was not "
            "written by this codebase, or its meta file was changed."
        )
    return meta["arrays"]


def _verify_checksums(restored, meta: dict, where: str) -> None:
    saved = _array_records(meta, where)
    for name, leaf in _named_leaves(restored):
        if _crc32(_host(leaf)) != saved[name]["crc32"]:
            raise CorruptCheckpointError(
                f"array {name} differs from what was saved (CRC-32 mismatch): the files changed "
                "on disk"
            )


def _named_leaves(tree):
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        yield "/".join(_key_name(k) for k in path), leaf


def _key_name(key) -> str:
    for attribute in ("key", "name", "idx"):
        if hasattr(key, attribute):
            return str(getattr(key, attribute))
    return str(key)


def _crc32(array) -> int:
    return zlib.crc32(np.ascontiguousarray(array).data)


def _host(x):
    """A host copy of a (replicated, possibly multi-host) array; numpy passes through."""
    if isinstance(x, jax.Array):
        return np.asarray(x.addressable_shards[0].data)
    return x
