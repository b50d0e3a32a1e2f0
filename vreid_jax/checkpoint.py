"""Checkpoints: the only module that imports orbax.

Keeps the latest N steps and the best by mAP, saves asynchronously, restores onto the live state's
shapes, and falls back to the previous checkpoint when the newest cannot be read.
"""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp
from absl import logging

from vreid_jax import files
from vreid_jax.errors import UserError

_BEST_METRIC = "mAP"


class CheckpointMismatchError(UserError):
    """The checkpoint was written for another model or dataset than the configured one."""


class NoCheckpointError(UserError):
    """There is no checkpoint where one was asked for."""


class Checkpointer:
    """A thin policy layer over an orbax `CheckpointManager` with two items: `state` and `meta`."""

    def __init__(self, directory: str, *, keep: int = 2, asynchronous: bool = True):
        policy = ocp.checkpoint_managers.AnyPreservationPolicy(
            [
                ocp.checkpoint_managers.LatestN(n=keep),
                # Keep the highest mAP; steps saved without an evaluation are not candidates.
                ocp.checkpoint_managers.BestN(
                    get_metric_fn=lambda metrics: metrics[_BEST_METRIC],
                    n=1,
                    keep_checkpoints_without_metrics=False,
                ),
            ]
        )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policy, enable_async_checkpointing=asynchronous, create=True
        )
        self.directory = os.path.abspath(directory)
        self._best_path = os.path.join(self.directory, "best.json")
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "meta")
        )

    def save(self, step: int, state, meta: dict, metrics: dict | None = None) -> None:
        """Saves `state` (a pytree of arrays) and the JSON-able `meta` at `step`.

        The replicated state is fetched to host memory first: saving numpy arrays is far faster
        than saving one replicated copy per device.
        """
        host_state = jax.device_get(state)
        self._manager.save(
            int(step),
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(host_state), meta=ocp.args.JsonSave(meta)
            ),
            metrics=metrics,
            force=True,
        )
        if metrics is not None and jax.process_index() == 0:
            best = files.read_json(self._best_path)
            if best is None or metrics[_BEST_METRIC] > best[_BEST_METRIC]:
                files.write_json_atomic(self._best_path, {"step": int(step), **metrics})

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def best_step(self) -> int | None:
        """The step with the highest mAP among the evaluated saves, if any."""
        best = files.read_json(self._best_path)
        return None if best is None else best["step"]

    def restore(self, abstract_state, step: int | None = None):
        """Restores `(state, meta, step)` or None when there is nothing to restore.

        `abstract_state` is the restore target: the live state's structure as ShapeDtypeStructs with
        shardings, onto which orbax reads the arrays directly. None restores the tree as saved, as
        host numpy (for inspection and tests).

        With `step=None` the newest readable checkpoint is used: an unreadable newest one (e.g. a
        save killed half-way) is reported and the previous one is tried. A checkpoint of a model
        with other shapes raises CheckpointMismatchError, naming the first differing parameter.
        """
        candidates = [step] if step is not None else list(reversed(self.all_steps()))
        for candidate in candidates:
            if abstract_state is not None:
                self._check_shapes(candidate, abstract_state)
            try:
                restored = self._manager.restore(
                    candidate,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract_state),
                        meta=ocp.args.JsonRestore(),
                    ),
                )
            except Exception as e:  # noqa: BLE001  (any read failure: fall back to an older step)
                if step is not None:
                    raise
                logging.warning(
                    "Checkpoint %d in %s is unreadable (%s: %s); trying the previous one.",
                    candidate,
                    self.directory,
                    type(e).__name__,
                    e,
                )
                continue
            return restored["state"], restored["meta"], candidate
        return None

    def restore_variables(self, abstract_variables: dict, step: int | None = None):
        """Restores only the model variables of a checkpoint: `(variables, meta, step)`, or None.

        `abstract_variables` is `{'params', 'batch_stats'}` as ShapeDtypeStructs with shardings
        (`state.abstract_variables`): the arrays are read straight onto those shardings and the
        optimizer state is never read. `step=None` takes the newest checkpoint.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            return None
        self._check_shapes(step, abstract_variables)
        restore_args = ocp.checkpoint_utils.construct_restore_args(abstract_variables)
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.PyTreeRestore(
                    item=abstract_variables, restore_args=restore_args, partial_restore=True
                ),
                meta=ocp.args.JsonRestore(),
            ),
        )
        return restored["state"], restored["meta"], step

    def _check_shapes(self, step: int, abstract_state) -> None:
        try:
            saved = self._manager.item_metadata(step)["state"]
        except Exception:  # noqa: BLE001  (unreadable metadata: restore() reports it)
            return
        if saved is None:
            return
        saved_shapes = {
            jax.tree_util.keystr(path): tuple(leaf.shape)
            for path, leaf in jax.tree_util.tree_flatten_with_path(saved)[0]
            if hasattr(leaf, "shape")
        }
        for path, leaf in jax.tree_util.tree_flatten_with_path(abstract_state)[0]:
            name = jax.tree_util.keystr(path)
            if name not in saved_shapes:
                raise CheckpointMismatchError(
                    f"Checkpoint step {step} in {self.directory} has no parameter {name}: it was "
                    "written for a different model config. Use a new --workdir or the matching "
                    "config."
                )
            if saved_shapes[name] != tuple(leaf.shape):
                raise CheckpointMismatchError(
                    f"Checkpoint step {step} in {self.directory}: {name} has shape "
                    f"{saved_shapes[name]} but the configured model has {tuple(leaf.shape)}. Use a "
                    "new --workdir or the config the checkpoint was trained with."
                )

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for an asynchronous save in flight, then releases the manager."""
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
