"""How each kind of model is trained: its loss, its optimizer and what is computed before the
first step. A model's registry entry names its kind (`models.registry.ModelSpec.training`); the
loop asks `kind_for(config.model.name)` and never branches on a model's name.

A kind is a class with three static methods:
* `loss(outputs, labels, loss_config) -> (loss, terms)`: `outputs` are the model's training
  outputs, `terms` a dict of scalars logged beside the loss;
* `optimizer(params, config, steps_per_epoch) -> (tx, lr_fn)`: `params()` gives the abstract
  params tree, for optimizers with per-parameter groups (traced only when asked);
* `prepare(model, state, data, config, mesh) -> state`: run once before the first training step
  of a fresh run (not on resume: what it computes is in the checkpointed state).
"""

from __future__ import annotations

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from vreid_jax import parallel
from vreid_jax.evaluation import features
from vreid_jax.models import registry
from vreid_jax.training import losses, optim, tfclip_loss, tfclip_optim


class Standard:
    """The project's recipe: `losses.total_loss` on `(embeddings, logits)`, `config.optim`'s
    optimizer with `config.schedule`, nothing to prepare."""

    @staticmethod
    def loss(outputs, labels, loss_config):
        embeddings, logits = outputs
        return losses.total_loss(embeddings, logits, labels, loss_config)

    @staticmethod
    def optimizer(params, config, steps_per_epoch: int):
        del params
        return optim.create_optimizer(config, steps_per_epoch)

    @staticmethod
    def prepare(model, state, data, config, mesh):
        del model, data, config, mesh
        return state


class TFClipTraining:
    """TF-CLIP's training (`training/tfclip_loss.py`, `training/tfclip_optim.py`).

    Config keys it reads: `config.loss.ce_weight` (TF-CLIP's ID_LOSS_WEIGHT, 0.25),
    `triplet_weight` (1.0), `triplet_margin` (0.3), `label_smoothing` (0.1); the video-to-memory
    term has TF-CLIP's weight 1.0 and the frame term 1 / T. `config.optim.learning_rate` (BASE_LR),
    `weight_decay` (for weights and biases alike, as TF-CLIP's recipe), `b1`, `b2`, `eps`;
    `config.schedule.warmup_epochs`, `milestones_epochs`, `decay_rate` (WarmupMultiStepLR, warm-up
    factor 0.1, linear). `config.optim.name` must be 'adam' and `config.schedule.name`
    'multistep'; the triplet distance 'euclidean' (`config_lib.validate` checks them).
    """

    @staticmethod
    def loss(outputs, labels, loss_config):
        return tfclip_loss.tfclip_loss(
            outputs,
            labels,
            id_weight=loss_config.ce_weight,
            triplet_weight=loss_config.triplet_weight,
            epsilon=loss_config.label_smoothing,
            margin=loss_config.triplet_margin,
        )

    @staticmethod
    def optimizer(params, config, steps_per_epoch: int):
        schedule = tfclip_optim.warmup_multistep_schedule(
            config.optim.learning_rate,
            steps_per_epoch,
            milestones_epochs=tuple(int(m) for m in config.schedule.milestones_epochs),
            gamma=config.schedule.decay_rate,
            warmup_epochs=int(config.schedule.warmup_epochs),  # Whole (`config_lib.validate`).
        )
        tx = tfclip_optim.create_tfclip_optimizer(
            params(),
            schedule,
            weight_decay=config.optim.weight_decay,
            weight_decay_bias=config.optim.weight_decay,
            b1=config.optim.b1,
            b2=config.optim.b2,
            eps=config.optim.eps,
        )
        return tx, schedule

    @staticmethod
    def prepare(model, state, data, config, mesh):
        """The CLIP-Memory from the pretrained encoder, into `batch_stats/clip_memory`."""
        from vreid_jax.models import tfclip  # noqa: PLC0415  (flax: with the model)

        logging.info(
            "CLIP-Memory: every frame of the %d training tracklets through the encoder.",
            len(data.train),
        )
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        combine = None
        if jax.process_count() > 1:
            # Each process holds all the tracklets of its identities (`datasets.load`): it runs
            # them on its own devices, and the identities' rows are summed across processes.
            mesh = parallel.make_mesh(jax.local_devices())
            variables = jax.device_get(variables)  # Replicated: every process has them whole.
            combine = lambda x: np.sum(multihost_utils.process_allgather(x), axis=0)  # noqa: E731
        extractor = features.ClipAverage(model, config, mesh, method="memory_features")
        per_tracklet = extractor(variables, data.train)
        memory = tfclip.identity_memory(
            per_tracklet, data.train.labels, data.num_classes, combine
        )
        current = state.batch_stats["clip_memory"]
        memory = np.asarray(memory, current.dtype)
        memory = jax.make_array_from_callback(memory.shape, current.sharding, memory.__getitem__)
        return state.replace(batch_stats={**state.batch_stats, "clip_memory": memory})


KINDS = {registry.STANDARD_TRAINING: Standard, registry.TFCLIP_TRAINING: TFClipTraining}


def kind_for(model_name: str):
    """The training kind the registry declares for a model."""
    return KINDS[registry.spec(model_name).training]
