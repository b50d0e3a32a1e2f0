"""Our NL3D against the same architecture in plain torch (`tests/torch_nl3d.py`).

The torch network is the PyTorch side of `benchmarks/models_vs_torch.py`; this test is what makes
that benchmark compare the same model. Tiny trunk (one block per stage, width 8; the default
non-local positions clip to res3 block 0 and res4 block 0, temporal convs in every block), 64x32
frames, 4 frames per clip, same random weights and BN statistics on both sides, dropout 0. Eval mode
against PyTorch in float32 (what the benchmark compares); train mode (loss of `vreid_jax.training.losses`,
gradients, running statistics) against PyTorch in float64. Skipped when torch is not installed (it
is the optional `torch` extra).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from configs.default import get_config
from vreid_jax import models
from vreid_jax.training import losses

torch = pytest.importorskip("torch")
import torch_losses  # noqa: E402  (needs torch)
import torch_nl3d  # noqa: E402

pytestmark = pytest.mark.slow  # Parity with PyTorch: the full tier.

BATCH, CLIP_LEN, HEIGHT, WIDTH, CLASSES = 4, 4, 64, 32, 10


def _relative(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.abs(got - want).max() / np.abs(want).max())


def _spec():
    return jax.ShapeDtypeStruct((1, CLIP_LEN, HEIGHT, WIDTH, 3), jnp.float32)


def _tiny_nl3d():
    config = get_config()
    config.model.update(name="nl3d", stage_sizes=(1, 1, 1, 1), width=8, dropout=0.0)
    return models.build_model(config.model, CLASSES)


def test_tiny_nl3d_matches_torch():
    module = _tiny_nl3d()
    assert module.backbone.nonlocal_blocks == ((), (0,), (0,), ())
    torch.manual_seed(0)
    net = torch_nl3d.randomise(torch_nl3d.like(module, CLIP_LEN), seed=1)
    rng = np.random.default_rng(2)
    clips = rng.normal(size=(BATCH, CLIP_LEN, HEIGHT, WIDTH, 3)).astype(np.float32)
    labels = np.array([0, 0, 1, 1], np.int32)
    target = jax.eval_shape(lambda x: module.init(jax.random.key(0), x, train=False), clips[:1])
    variables = torch_nl3d.to_flax_variables(net, target)

    @jax.jit
    def run(params, batch_stats):
        eval_out = module.apply({"params": params, "batch_stats": batch_stats}, clips, False)

        def loss_fn(params):
            (features, logits), updates = module.apply(
                {"params": params, "batch_stats": batch_stats}, clips, True, mutable=["batch_stats"]
            )
            loss, _ = losses.total_loss(features, logits, labels, get_config().loss)
            return loss, (features, updates["batch_stats"])

        (loss, (features, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        return eval_out, loss, features, stats, grads

    (eval_features, eval_logits), loss, features, stats, grads = jax.device_get(
        run(variables["params"], variables["batch_stats"])
    )

    frames = torch.from_numpy(clips.transpose(0, 1, 4, 2, 3).reshape(-1, 3, HEIGHT, WIDTH))
    with torch.no_grad():  # The benchmark's comparison: both in float32.
        want_features, want_logits = net.eval()(frames)
    assert _relative(eval_features, want_features) < 1e-5
    assert _relative(eval_logits, want_logits) < 1e-5

    # Train mode against PyTorch in float64: PyTorch's own float32 gradients are further from it
    # (median 0.6%, max 1.2% relative L2 on this net) than ours (2e-5).
    net = net.double().train()
    train_features, train_logits = net(frames.double())
    want_loss = torch_losses.total_loss(train_features, train_logits, torch.from_numpy(labels))
    want_loss.backward()
    assert _relative(features, train_features.detach()) < 1e-4
    assert abs(float(loss) - want_loss.item()) / abs(want_loss.item()) < 1e-5
    assert float(loss) > 1.0  # Both losses contribute (the triplet's margin alone is 0.3).

    ours = traverse_util.flatten_dict({"params": grads, "batch_stats": stats})
    reference = torch_nl3d.flat_flax_arrays(
        net, target, {k: p.grad for k, p in net.named_parameters()}
    )
    # The running statistics after the train-mode forward (PyTorch's unbiased variance).
    for key in (k for k in reference if k[0] == "batch_stats"):
        assert _relative(ours[key], reference[key]) < 1e-4, key
    # Gradients: relative L2 error per parameter. Those that vanish analytically are rounding
    # noise on both sides and left out: biases that a train-mode BN right after removes (phi's
    # shifts a whole softmax row), and the non-local output BN's bias, a constant that the next
    # block's BNs remove (only linear maps in between).
    largest = max(np.linalg.norm(v) for k, v in reference.items() if k[0] == "params")
    vanishing = sorted(
        "/".join(k)
        for k, v in reference.items()
        if k[0] == "params" and np.linalg.norm(v) <= 1e-9 * largest
    )
    blocks = ("layer2_0_nonlocal", "layer3_0_nonlocal")
    leaves = ("g/bias", "out_bn/bias", "out_proj/bias", "phi/bias")
    expected = [f"params/backbone/{b}/{leaf}" for b in blocks for leaf in leaves]
    assert vanishing == expected + ["params/head/bottleneck/bias"]
    errors = {
        "/".join(k): np.linalg.norm(ours[k] - v) / np.linalg.norm(v)
        for k, v in reference.items()
        if k[0] == "params" and "/".join(k) not in vanishing
    }
    assert np.median(list(errors.values())) < 1e-4, errors
    assert max(errors.values()) < 1e-3, errors


def test_mapping_is_strict():
    module = _tiny_nl3d()
    net = torch_nl3d.like(module, CLIP_LEN)
    target = jax.eval_shape(lambda x: module.init(jax.random.key(0), x, train=False), _spec())
    flat = traverse_util.flatten_dict(target)
    missing = traverse_util.unflatten_dict({k: v for k, v in flat.items() if "theta" not in k})
    with pytest.raises(AssertionError, match="not one-to-one"):
        torch_nl3d.flat_flax_arrays(net, missing)
    other = _tiny_nl3d().clone(bottleneck_dim=16)
    target = jax.eval_shape(lambda x: other.init(jax.random.key(0), x, train=False), _spec())
    with pytest.raises(AssertionError, match="shape"):
        torch_nl3d.flat_flax_arrays(net, target)
