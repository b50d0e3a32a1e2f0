"""Losses against plain numpy references, including the masked and degenerate batches."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from vreid_jax import parallel
from vreid_jax.training import losses


def _np_ce_label_smooth(logits, labels, epsilon, mask):
    logits = logits.astype(np.float64)
    log_probs = logits - logits.max(1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(1, keepdims=True))
    num_classes = logits.shape[1]
    total, count = 0.0, 0
    for i in range(len(labels)):
        if not mask[i]:
            continue
        target = np.full(num_classes, epsilon / num_classes)
        target[labels[i]] += 1.0 - epsilon
        total += -(target * log_probs[i]).sum()
        count += 1
    return total / max(count, 1)


def _np_triplet(features, labels, margin, distance, mask):
    """One anchor at a time: the definition in the `batch_hard_triplet` docstring."""
    x = features.astype(np.float64)
    if distance == "cosine":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    losses_, n = 0.0, len(labels)
    count = 0
    for a in range(n):
        if not mask[a]:
            continue
        pos = [j for j in range(n) if mask[j] and j != a and labels[j] == labels[a]]
        neg = [j for j in range(n) if mask[j] and labels[j] != labels[a]]
        if not pos or not neg:
            continue

        def d(i, j):
            if distance == "cosine":
                return 1.0 - x[i] @ x[j]
            return np.sqrt(max(((x[i] - x[j]) ** 2).sum(), 1e-12))

        hardest = max(d(a, j) for j in pos) - min(d(a, j) for j in neg) + margin
        losses_ += max(hardest, 0.0)
        count += 1
    return losses_ / max(count, 1)


@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.3])
def test_cross_entropy_matches_numpy(epsilon):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 5)).astype(np.float32) * 3
    labels = rng.integers(0, 5, size=6)
    mask = np.array([1, 1, 0, 1, 1, 0], bool)
    got = losses.cross_entropy_label_smooth(logits, labels, epsilon, mask)
    np.testing.assert_allclose(got, _np_ce_label_smooth(logits, labels, epsilon, mask), rtol=1e-5)
    full = losses.cross_entropy_label_smooth(logits, labels, epsilon)
    np.testing.assert_allclose(
        full, _np_ce_label_smooth(logits, labels, epsilon, np.ones(6, bool)), rtol=1e-5
    )


def test_cross_entropy_convention_on_a_hand_case():
    # Uniform logits over 4 classes: log p = -log 4 for every class, whatever the target.
    got = losses.cross_entropy_label_smooth(np.zeros((1, 4)), np.array([2]), 0.1)
    np.testing.assert_allclose(got, np.log(4.0), rtol=1e-6)
    # One-hot-ish logits: smoothing mass eps/K also lands on the true class (torchreid).
    logits = np.array([[2.0, 0.0]])
    log_p = logits[0] - np.log(np.exp(logits[0]).sum())
    expected = -((1 - 0.2 + 0.1) * log_p[0] + 0.1 * log_p[1])
    np.testing.assert_allclose(losses.cross_entropy_label_smooth(logits, [0], 0.2), expected, 1e-6)


def test_cross_entropy_bfloat16_logits_and_masked_labels():
    logits = jnp.asarray(np.random.default_rng(1).normal(size=(4, 3)), jnp.bfloat16)
    got = losses.cross_entropy_label_smooth(logits, np.array([0, 1, -1, 2]), mask=[1, 1, 0, 1])
    assert got.dtype == jnp.float32
    expected = _np_ce_label_smooth(
        np.asarray(logits, np.float32), np.array([0, 1, 0, 2]), 0.1, np.array([1, 1, 0, 1], bool)
    )
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_cross_entropy_fully_masked_is_zero():
    got = losses.cross_entropy_label_smooth(np.ones((3, 4)), [0, 1, 2], mask=np.zeros(3, bool))
    assert float(got) == 0.0


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_triplet_matches_numpy_random(distance):
    rng = np.random.default_rng(2)
    for trial in range(5):
        labels = rng.integers(0, 4, size=12)
        features = rng.normal(size=(12, 8)).astype(np.float32)
        mask = rng.random(12) > 0.25 if trial else np.ones(12, bool)
        got = losses.batch_hard_triplet(features, labels, 0.3, distance, mask)
        expected = _np_triplet(features, labels, 0.3, distance, mask)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_triplet_hand_case():
    # 1-D points: id 0 at 0 and 1, id 1 at 3 and 5. Anchor 0: pos 1, neg 3 -> relu(1-3+0.3)=0;
    # anchor 1 (x=1): pos 1, neg 2 -> 0; anchor 3 (x=3): pos 2, neg 2 -> 0.3; anchor 5: pos 2,
    # neg 4 -> 0. Mean = 0.3 / 4.
    features = np.array([[0.0], [1.0], [3.0], [5.0]])
    got = losses.batch_hard_triplet(features, [0, 0, 1, 1], margin=0.3)
    np.testing.assert_allclose(got, 0.075, rtol=1e-5)


def test_triplet_anchor_without_positive_does_not_count():
    # The singleton id 2 (x=10) has no positive: it is no anchor, but it is a negative for others.
    features = np.array([[0.0], [1.0], [3.0], [5.0], [1.5]])
    labels = [0, 0, 1, 1, 2]
    got = losses.batch_hard_triplet(features, labels, margin=0.3)
    # Anchors 0..3: hardest negatives now 1.5 (for x=0: 1.5, x=1: 0.5, x=3: 1.5, x=5: 2).
    expected = (max(1 - 1.5 + 0.3, 0) + max(1 - 0.5 + 0.3, 0) + max(2 - 1.5 + 0.3, 0) + 0) / 4
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # Only singletons: nothing counts.
    assert float(losses.batch_hard_triplet(features[:3], [0, 1, 2])) == 0.0


def test_triplet_no_negatives_and_fully_masked_are_zero_with_zero_gradient():
    features = np.random.default_rng(3).normal(size=(4, 5)).astype(np.float32)
    cases = [([7, 7, 7, 7], None), ([0, 0, 1, 1], np.zeros(4, bool)), ([0, 0, 1, 1], [1, 1, 0, 0])]
    for labels, mask in cases:
        value, grad = jax.value_and_grad(losses.batch_hard_triplet)(
            features, np.array(labels), mask=mask
        )
        assert float(value) == 0.0
        np.testing.assert_array_equal(grad, 0.0)


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_triplet_gradient_finite_at_zero_distance(distance):
    # Duplicated features (zero distance off the diagonal) and an all-zero vector.
    features = np.array([[1.0, 2.0], [1.0, 2.0], [0.0, 0.0], [-1.0, 0.5]], np.float32)
    grad = jax.grad(losses.batch_hard_triplet)(features, np.array([0, 0, 1, 1]), 0.3, distance)
    assert np.all(np.isfinite(grad))


def test_triplet_bad_distance_names_it():
    with pytest.raises(ValueError, match="manhattan"):
        losses.batch_hard_triplet(np.ones((2, 2)), [0, 1], distance="manhattan")


def _loss_config(**overrides):
    config = ml_collections.ConfigDict(
        dict(
            label_smoothing=0.1,
            triplet_margin=0.3,
            triplet_distance="euclidean",
            ce_weight=1.0,
            triplet_weight=1.0,
        )
    )
    config.update(overrides)
    return config


def test_total_loss_weights_and_jit():
    rng = np.random.default_rng(4)
    features = rng.normal(size=(8, 6)).astype(np.float32)
    logits = rng.normal(size=(8, 4)).astype(np.float32)
    labels = np.repeat(np.arange(4), 2)
    mask = np.array([1] * 6 + [0] * 2, bool)
    config = _loss_config(ce_weight=0.5, triplet_weight=2.0)
    loss, parts = jax.jit(lambda f, lg, lb, m: losses.total_loss(f, lg, lb, config, m))(
        features, logits, labels, mask
    )
    np.testing.assert_allclose(parts["ce"], _np_ce_label_smooth(logits, labels, 0.1, mask), 1e-5)
    np.testing.assert_allclose(
        parts["triplet"], _np_triplet(features, labels, 0.3, "euclidean", mask), 1e-4
    )
    np.testing.assert_allclose(loss, 0.5 * parts["ce"] + 2.0 * parts["triplet"], rtol=1e-6)


def test_triplet_mines_across_devices_on_a_sharded_global_batch():
    mesh = parallel.make_mesh()
    n = 2 * mesh.devices.size
    rng = np.random.default_rng(5)
    # Each identity's two examples sit on different devices, so per-device mining finds no pairs.
    labels = np.tile(np.arange(n // 2), 2)
    features = rng.normal(size=(n, 8)).astype(np.float32)
    sharded = jax.device_put(features, parallel.data_sharding(mesh))
    got = jax.jit(losses.batch_hard_triplet)(
        sharded, jax.device_put(labels, parallel.data_sharding(mesh))
    )
    expected = _np_triplet(features, labels, 0.3, "euclidean", np.ones(n, bool))
    assert expected > 0
    np.testing.assert_allclose(got, expected, rtol=1e-4)
