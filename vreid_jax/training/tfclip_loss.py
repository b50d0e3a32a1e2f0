"""TF-CLIP's training loss, the official `make_loss` sum plus the processor's frame term.

From `AsuradaYuci/TF-CLIP` (file:line):
* ID: label-smoothed cross-entropy (`CrossEntropyLabelSmooth`, epsilon 0.1, targets
  (1 - eps) onehot + eps / C, `loss/softmax_loss.py`:17-35) on the first three logits of the model
  (`score[0:3]`, `processor/processor_clipreid_stage2.py`:128), summed (`loss/make_loss.py`:41-42),
  weight `ID_LOSS_WEIGHT` 0.25 (`configs/vit_clipreid.yml`:9).
* Triplet: batch-hard (`loss/triplet_loss.py`:104-133: Euclidean distance clamped at 1e-12 before
  the square root, unnormalised features, `MarginRankingLoss(margin)` = mean of
  max(0, d_ap - d_an + margin)) with margin `SOLVER.MARGIN` 0.3 (`config/defaults.py`:104; not the
  soft margin: `NO_MARGIN` False, line 34), on each of img_feature, img_feature_proj and cls_f_tp
  (`model/make_model_clipreid.py`:295), summed (`loss/make_loss.py`:48-49), weight
  `TRIPLET_LOSS_WEIGHT` 1.0 (`configs/vit_clipreid.yml`:10).
* Video-to-memory: the same smoothed cross-entropy on the memory logits (`loss/make_loss.py`:56-62),
  weight `I2T_LOSS_WEIGHT` 1.0 (`configs/vit_clipreid.yml`:11).
* Frame: the smoothed cross-entropy on every frame's logits against its clip's label, divided by
  T (`processor/processor_clipreid_stage2.py`:136-144).

The project's `losses.cross_entropy_label_smooth` is `CrossEntropyLabelSmooth` exactly.
`losses.batch_hard_triplet` equals `TripletLoss(0.3)` on batches with two tracklets or more of each
identity (the P x K sampler's batches); it differs only for an anchor without another positive,
which the official code pairs with itself (see its docstring).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vreid_jax.models.tfclip import TFClipTrainOutputs
from vreid_jax.training import losses

ID_WEIGHT = 0.25
TRIPLET_WEIGHT = 1.0
MEMORY_WEIGHT = 1.0
LABEL_SMOOTHING = 0.1
TRIPLET_MARGIN = 0.3


def tfclip_loss(
    outputs: TFClipTrainOutputs,
    labels,
    *,
    id_weight: float = ID_WEIGHT,
    triplet_weight: float = TRIPLET_WEIGHT,
    memory_weight: float = MEMORY_WEIGHT,
    epsilon: float = LABEL_SMOOTHING,
    margin: float = TRIPLET_MARGIN,
    mask=None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The total loss and its unweighted terms ('id', 'triplet', 'memory', 'frame').

    Args:
      outputs: the model's training outputs.
      labels: `[B]` int training labels.
      mask: optional `[B]` bool (padded clips count nowhere, their frames neither).
    """
    ce = lambda logits, y, m: losses.cross_entropy_label_smooth(logits, y, epsilon, m)  # noqa: E731
    id_loss = sum(ce(logits, labels, mask) for logits in outputs.id_logits)
    triplet = sum(
        losses.batch_hard_triplet(f, labels, margin, "euclidean", mask) for f in outputs.features
    )
    memory = ce(outputs.memory_logits, labels, mask)
    clip_len = outputs.frame_logits.shape[0] // labels.shape[0]
    frame_labels = jnp.repeat(labels, clip_len)
    frame_mask = None if mask is None else jnp.repeat(jnp.asarray(mask, bool), clip_len)
    frame = ce(outputs.frame_logits, frame_labels, frame_mask)
    total = id_weight * id_loss + triplet_weight * triplet + memory_weight * memory
    total = total + frame / clip_len
    return total, {"id": id_loss, "triplet": triplet, "memory": memory, "frame": frame}
