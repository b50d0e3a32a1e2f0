"""The project's training losses in plain torch, for the PyTorch sides of the parity tests and of
`benchmarks/models_vs_torch.py`: `vreid_jax.training.losses` written again, same conventions.

- Label-smoothed cross-entropy, torchreid's form: target = (1 - eps) * onehot + eps / classes.
- Batch-hard triplet loss on clamped Euclidean distances sqrt(max(d^2, 1e-12)); an anchor counts
  only when it has a positive other than itself and a negative; 0 when none counts.

Needs the optional `torch` extra.
"""

from __future__ import annotations

import torch


def cross_entropy_label_smooth(logits, labels, epsilon: float = 0.1):
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    num_classes = logits.shape[-1]
    targets = torch.nn.functional.one_hot(labels.long(), num_classes).to(log_probs.dtype)
    targets = (1.0 - epsilon) * targets + epsilon / num_classes
    return -(targets * log_probs).sum(dim=-1).mean()


def batch_hard_triplet(features, labels, margin: float = 0.3):
    x = features.float()
    sq = (x * x).sum(dim=-1)
    dist = (sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)).clamp_min(1e-12).sqrt()
    same = labels[:, None] == labels[None, :]
    not_self = ~torch.eye(len(labels), dtype=torch.bool)
    positive, negative = same & not_self, ~same
    hardest_pos = torch.where(positive, dist, torch.full_like(dist, -1.0)).amax(dim=1)
    hardest_neg = torch.where(negative, dist, torch.full_like(dist, 1e9)).amin(dim=1)
    counts = positive.any(dim=1) & negative.any(dim=1)
    per_anchor = torch.where(counts, torch.relu(hardest_pos - hardest_neg + margin), 0.0)
    return per_anchor.sum() / counts.sum().clamp_min(1)


def total_loss(features, logits, labels, epsilon: float = 0.1, margin: float = 0.3):
    """The default `config.loss`: cross-entropy + triplet, both with weight 1."""
    return cross_entropy_label_smooth(logits, labels, epsilon) + batch_hard_triplet(
        features, labels, margin
    )
