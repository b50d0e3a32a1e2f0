"""A trained model from a workdir: the one way a checkpoint becomes a model, for `mode=eval`,
`extract` and `export`.

No dataset is read: the model is rebuilt from the checkpoint's own meta record (its model settings,
frame size and class count). The evaluation settings (length buckets, batch sizes, aggregation,
resize method) come from the run's `config.json`, so features of your own tracklets are computed
exactly as the run's evaluation computed them; `mode=eval` passes its own config instead.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import ml_collections

from vreid_jax import checkpoint, errors, files, models, parallel
from vreid_jax.models import registry
from vreid_jax.training import state as state_lib


@dataclasses.dataclass(frozen=True)
class TrainedModel:
    """A model with its restored variables.

    Attributes:
      config: the run's config, its `model` and input frame size taken from the checkpoint.
      model: the flax module.
      variables: `{'params', 'batch_stats'}`, replicated on `mesh`.
      mesh: the devices it was loaded for.
      step: the checkpoint's training step.
      checkpoint: the checkpoint's step folder.
      meta: the checkpoint's meta record (model, input, dataset, num_classes, arrays).
    """

    config: ml_collections.ConfigDict
    model: object
    variables: dict
    mesh: jax.sharding.Mesh
    step: int
    checkpoint: str
    meta: dict

    def provenance(self) -> dict:
        """What a features file or an exported model records of where it came from."""
        record = {
            "model": self.config.model.name,
            "checkpoint": self.checkpoint,
            "step": self.step,
            "dataset": self.meta["dataset"],
            "num_classes": self.meta["num_classes"],
            "input": dict(self.meta["input"]),
            "config": self.config.to_dict(),
        }
        if registry.spec(self.config.model.name).takes_cameras:
            record["cameras"] = registry.UNKNOWN_CAMERAS
        if checkpoint.CONVERTED in self.meta:  # Trained elsewhere: the file it came from.
            record[checkpoint.CONVERTED] = dict(self.meta[checkpoint.CONVERTED])
        return record


def checkpoint_location(
    which: str, workdir: str, what: str = "--checkpoint"
) -> tuple[str, int | str | None]:
    """(checkpoint directory, step) for 'latest' (step None), 'best' (step 'best') or a checkpoint
    step folder such as runs/x/checkpoints/1000; `what` names the setting in messages."""
    if which in ("latest", "best"):
        return os.path.join(workdir, "checkpoints"), None if which == "latest" else "best"
    path = os.path.abspath(which)
    if not os.path.isdir(path) or not os.path.basename(path).isdigit():
        raise errors.UserError(
            f"{what}={which!r}: expected 'latest', 'best' or a checkpoint step folder such as "
            "runs/x/checkpoints/1000."
        )
    return os.path.dirname(path), int(os.path.basename(path))


def resolve_step(ckpt: checkpoint.Checkpointer, step, which: str) -> int:
    """The step number `checkpoint_location` meant; NoCheckpointError when there is none."""
    if step == "best":
        step = ckpt.best_step()
    elif step is None:
        step = ckpt.latest_step()
    if step is None:
        raise checkpoint.NoCheckpointError(
            f"No {which} checkpoint in {ckpt.directory}: train first (the best one needs "
            "mode=train_and_eval), or name a checkpoint step folder."
        )
    return step


def load(
    workdir: str,
    which: str = "latest",
    mesh=None,
    *,
    config: ml_collections.ConfigDict | None = None,
    what: str = "--checkpoint",
) -> TrainedModel:
    """Restores the `which` checkpoint ('latest', 'best' or a step folder) of the run in `workdir`.

    Args:
      config: the settings to use the model with; by default the run's own (`config.json`). Either
        way its `model` and input frame size are replaced by the checkpoint's, except the keys
        that choose only how to compute (`registry.HOW_TO_COMPUTE`).
      what: the setting that named `which`, for messages.

    Raises:
      UserError: no such workdir or config.json (a ten-split run's splits are workdirs of their own),
        no checkpoint, or a checkpoint that does not hold the model its meta describes.
    """
    config = _run_config(workdir) if config is None else ml_collections.ConfigDict(config.to_dict())
    mesh = mesh or parallel.make_mesh()
    ckpt_dir, step = checkpoint_location(which, workdir, what)
    if not os.path.isdir(ckpt_dir):
        raise checkpoint.NoCheckpointError(
            f"{workdir} has no checkpoints folder: train first"
            + (f", or use one split's workdir ({workdir}/split_N)." if config.eval.splits else ".")
        )
    with checkpoint.Checkpointer(ckpt_dir) as ckpt:
        step = resolve_step(ckpt, step, which)
        meta = ckpt.read_meta(step)
        with config.unlocked():
            # How to compute (fast_cpu_ops, max_pool_ties) is this run's choice, not the
            # checkpoint's: no parameter depends on it.
            how = {k: config.model[k] for k in registry.HOW_TO_COMPUTE}
            config.model = ml_collections.ConfigDict({**meta["model"], **how})
            for key in ("height", "width", "clip_len"):
                config.input[key] = meta["input"][key]
        model = models.build_model(config.model, meta["num_classes"])
        abstract = state_lib.abstract_variables(model, state_lib.init_clips(config.input), mesh)
        variables, meta, step = ckpt.restore_variables(abstract, step=step)
    config.lock()
    return TrainedModel(
        config=config,
        model=model,
        variables=variables,
        mesh=mesh,
        step=int(step),
        checkpoint=os.path.join(ckpt_dir, str(step)),
        meta=meta,
    )


def _run_config(workdir: str) -> ml_collections.ConfigDict:
    """The run's recorded config (`workdir/config.json`, written at every start)."""
    if not os.path.isdir(workdir):
        raise errors.UserError(f"--workdir {workdir!r} does not exist.")
    path = os.path.join(workdir, "config.json")
    try:
        recorded = files.read_json(path)
    except ValueError as e:
        raise errors.UserError(f"{path} is not valid JSON ({e}).") from None
    if recorded is None:
        raise errors.UserError(
            f"{path} does not exist: --workdir must be a training run's workdir "
            "(python -m vreid_jax.main ... --workdir DIR writes it)."
        )
    return ml_collections.ConfigDict(recorded)
