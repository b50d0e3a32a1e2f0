"""Training losses: label-smoothed softmax cross-entropy and batch-hard triplet loss.

Both are computed in float32 whatever the compute dtype of the model, both take an optional `mask`
([B] bool) so that padded examples count nowhere, and both return 0 (never NaN) when nothing counts.
The trainer calls them on the GLOBAL batch under jit, so triplet mining sees every device's examples.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vreid_jax.evaluation.choices import DISTANCES

# torchreid clamps squared Euclidean distances at this value before the square root; we follow it.
# It keeps the square root's gradient finite (at most 1 / (2 * 1e-6)) at zero distance, and the
# clamp itself has zero gradient there, so identical features give a zero, not NaN, gradient.
_MIN_SQUARED_DISTANCE = 1e-12
# Squared norms are clamped at this value before `rsqrt` when normalising for the cosine distance.
_MIN_SQUARED_NORM = 1e-24


def _valid(mask, batch_size: int) -> jax.Array:
    if mask is None:
        return jnp.ones((batch_size,), bool)
    return jnp.asarray(mask, bool).reshape(batch_size)


def cross_entropy_label_smooth(logits, labels, epsilon: float = 0.1, mask=None) -> jax.Array:
    """Softmax cross-entropy against label-smoothed targets, averaged over the unmasked examples.

    torchreid's `CrossEntropyLabelSmooth` convention: target = (1 - epsilon) * onehot(label) +
    epsilon / num_classes (the smoothing mass is spread over ALL classes, the true one included).

    Args:
      logits: [B, num_classes], any float dtype; computed in float32.
      labels: [B] int in [0, num_classes). Masked rows may hold anything (e.g. -1).
      epsilon: smoothing weight in [0, 1); 0 gives the plain cross-entropy.
      mask: optional [B] bool; False rows contribute nothing.

    Returns:
      Scalar float32: the mean loss over unmasked rows, 0 when every row is masked.
    """
    logits = jnp.asarray(logits, jnp.float32)
    num_classes = logits.shape[-1]
    valid = _valid(mask, logits.shape[0])
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    targets = (1.0 - epsilon) * jax.nn.one_hot(labels, num_classes) + epsilon / num_classes
    per_example = -jnp.sum(targets * log_probs, axis=-1)
    per_example = jnp.where(valid, per_example, 0.0)
    return jnp.sum(per_example) / jnp.maximum(jnp.sum(valid), 1)


def pairwise_distance_matrix(features, distance: str = "euclidean") -> jax.Array:
    """[B, B] float32 distances between the rows of `features` ([B, D]), differentiable everywhere.

    'euclidean': sqrt(max(|x|^2 + |y|^2 - 2 x.y, 1e-12)) (torchreid's clamp, so the diagonal is 1e-6,
    not 0); 'cosine': 1 - cos(x, y), in [0, 2].
    """
    x = jnp.asarray(features, jnp.float32)
    if distance == "euclidean":
        sq = jnp.sum(x * x, axis=-1)
        d2 = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
        return jnp.sqrt(jnp.maximum(d2, _MIN_SQUARED_DISTANCE))
    if distance == "cosine":
        x = x * jax.lax.rsqrt(
            jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), _MIN_SQUARED_NORM)
        )
        return 1.0 - x @ x.T
    raise ValueError(f"Unknown triplet distance {distance!r}; expected one of {DISTANCES}.")


def batch_hard_triplet(
    features, labels, margin: float = 0.3, distance: str = "euclidean", mask=None
) -> jax.Array:
    """Batch-hard triplet loss (Hermans et al. 2017) mined over the whole batch given.

    For every anchor a: the hardest positive is the farthest example with its label (other than a
    itself), the hardest negative the closest example with another label; the anchor's loss is
    max(0, d(a, p) - d(a, n) + margin). The result is the mean over the anchors that count.

    Which anchors count (the corner cases):
      * masked examples are neither anchors, nor positives, nor negatives;
      * an anchor with no positive other than itself does not count. torchreid counts the anchor
        as its own positive (distance 1e-6), which only differs in this case: it would then add
        max(0, margin - d(a, n)), a pure push that PK batches (K >= 2) never produce;
      * an anchor with no negative (the batch holds one identity) does not count; torchreid fails;
      * when no anchor counts (e.g. everything masked), the loss is 0 with zero gradients.

    Args:
      features: [B, D] embeddings, any float dtype; computed in float32.
      labels: [B] int identity labels.
      margin: the hinge margin.
      distance: 'euclidean' (torchreid's clamped form) or 'cosine' (1 - cos).
      mask: optional [B] bool.

    Returns:
      Scalar float32.
    """
    dist = pairwise_distance_matrix(features, distance)
    batch_size = dist.shape[0]
    valid = _valid(mask, batch_size)
    labels = jnp.asarray(labels)
    same = labels[:, None] == labels[None, :]
    both_valid = valid[:, None] & valid[None, :]
    not_self = ~jnp.eye(batch_size, dtype=bool)
    positive = same & both_valid & not_self
    negative = ~same & both_valid
    # Fill values never win the max/min, and anchors without a positive or negative are dropped
    # below, so the fills never reach the loss (and give zero gradient to the masked entries).
    hardest_pos = jnp.max(jnp.where(positive, dist, -1.0), axis=1)
    hardest_neg = jnp.min(jnp.where(negative, dist, 1e9), axis=1)
    counts = valid & jnp.any(positive, axis=1) & jnp.any(negative, axis=1)
    per_anchor = jnp.where(counts, jax.nn.relu(hardest_pos - hardest_neg + margin), 0.0)
    return jnp.sum(per_anchor) / jnp.maximum(jnp.sum(counts), 1)


def total_loss(features, logits, labels, loss_config, mask=None):
    """The weighted sum of both losses, as configured by `config.loss`.

    Args:
      features: [B, D] retrieval embeddings (the triplet loss's input).
      logits: [B, num_classes] classifier outputs.
      labels: [B] int training labels.
      loss_config: `config.loss` (label_smoothing, triplet_margin, triplet_distance, ce_weight,
        triplet_weight).
      mask: optional [B] bool for padded batches.

    Returns:
      (loss, {'ce': ce, 'triplet': triplet}), all float32 scalars, the components unweighted.
    """
    ce = cross_entropy_label_smooth(logits, labels, loss_config.label_smoothing, mask)
    triplet = batch_hard_triplet(
        features, labels, loss_config.triplet_margin, loss_config.triplet_distance, mask
    )
    loss = loss_config.ce_weight * ce + loss_config.triplet_weight * triplet
    return loss, {"ce": ce, "triplet": triplet}
