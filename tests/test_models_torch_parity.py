"""Numeric parity with a torchvision-architecture ResNet written in plain torch.

The reference network is `tests/torch_resnet.py` (torchvision's architecture and module
names in plain torch; the train-step benchmark against PyTorch uses the same one). Skipped when
torch is not installed (it is the optional `torch` extra).
"""

import copy

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import traverse_util
from torchvision_reference import RESNET50_PARAMS

from vreid_jax.models import pretrained, resnet
from vreid_jax.training import optim

torch = pytest.importorskip("torch")
from torch_resnet import ResNet as TorchResNet  # noqa: E402  (needs torch)

pytestmark = pytest.mark.slow  # Parity with PyTorch: the full tier.


def _randomised(net, seed):
    """Non-trivial BN statistics and affine parameters, so every mapped tensor matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.weight.copy_(1 + 0.2 * torch.randn(n, generator=gen))
                module.bias.copy_(0.2 * torch.randn(n, generator=gen))
                module.running_mean.copy_(0.2 * torch.randn(n, generator=gen))
                module.running_var.copy_(0.5 + torch.rand(n, generator=gen))
    return net.eval()


def _numpy_state(net):
    return {k: v.detach().numpy() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("block", ["bottleneck", "basic"])
@pytest.mark.parametrize("height, width", [(64, 48), (67, 45)])  # even and odd: padding symmetry
def test_tiny_resnet_matches_torch(height, width, block):
    torch.manual_seed(0)
    net = _randomised(TorchResNet((1, 2, 1, 1), 8, 10, block=block), seed=1)
    module = resnet.ResNetClassifier(
        backbone=resnet.ResNet(stage_sizes=(1, 2, 1, 1), block=block, width=8, last_stride=2),
        num_classes=10,
    )
    target = jax.eval_shape(
        module.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    )
    flat = pretrained.convert(_numpy_state(net), target, include_fc=True, source="tiny")
    variables = traverse_util.unflatten_dict(flat)
    images = np.random.default_rng(2).normal(size=(2, 3, height, width)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(images)).numpy()
    got = module.apply(variables, images.transpose(0, 2, 3, 1), train=False)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_tiny_resnet_train_mode_gradients_match_torch():
    """Loss and every parameter gradient of a train-mode step (BN batch statistics, the stem
    max-pool after a ReLU, strided 1x1 shortcuts) equal PyTorch's autograd."""
    torch.manual_seed(0)
    net = _randomised(TorchResNet((1, 1, 1, 1), 8, 10), seed=1).train()
    module = resnet.ResNetClassifier(
        backbone=resnet.ResNet(stage_sizes=(1, 1, 1, 1), width=8, last_stride=2), num_classes=10
    )
    target = jax.eval_shape(
        module.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    )
    state = _numpy_state(net)
    variables = traverse_util.unflatten_dict(
        pretrained.convert(state, target, include_fc=True, source="tiny")
    )
    rng = np.random.default_rng(2)
    images = rng.normal(size=(4, 3, 64, 48)).astype(np.float32)
    labels = rng.integers(0, 10, 4)
    loss = torch.nn.functional.cross_entropy(
        net(torch.from_numpy(images)), torch.from_numpy(labels)
    )
    loss.backward()
    # Map the torch gradients onto the flax tree through the same name mapping as the weights.
    grads_state = dict(state) | {k: p.grad.numpy() for k, p in net.named_parameters()}
    expected = traverse_util.unflatten_dict(
        pretrained.convert(grads_state, target, include_fc=True, source="grads")
    )["params"]

    def loss_fn(params):
        logits, _ = module.apply(
            {"params": params, "batch_stats": variables["batch_stats"]},
            images.transpose(0, 2, 3, 1),
            train=True,
            mutable=["batch_stats"],
        )
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    got_loss, got = jax.jit(jax.value_and_grad(loss_fn))(variables["params"])
    np.testing.assert_allclose(got_loss, loss.item(), rtol=1e-5)
    got, expected = traverse_util.flatten_dict(got), traverse_util.flatten_dict(expected)
    assert got.keys() == expected.keys()
    for key in got:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-3, atol=1e-4, err_msg=str(key))


def test_resnet50_from_torchvision_matches_torch():
    torch.manual_seed(0)
    net = _randomised(TorchResNet((3, 4, 6, 3), 64, 1000), seed=1)
    assert sum(p.numel() for p in net.parameters()) == RESNET50_PARAMS
    module, variables = pretrained.from_torchvision(net.state_dict())  # tensors accepted as-is
    images = np.random.default_rng(2).normal(size=(2, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(images)).numpy()
    got = jax.jit(lambda v, x: module.apply(v, x, train=False))(
        variables, images.transpose(0, 2, 3, 1)
    )
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)


def _torch_sgd_step(net, images, labels, dtype):
    """A copy of `net` in `dtype` after one torch.optim.SGD step (momentum, coupled weight decay);
    returns its state (float64 numpy) and the pooled features of the forward pass."""
    net = copy.deepcopy(net).to(dtype)
    captured = {}
    net.avgpool.register_forward_hook(lambda m, i, out: captured.update(features=out.flatten(1)))
    sgd = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    logits = net(torch.from_numpy(images).to(dtype))
    torch.nn.functional.cross_entropy(logits, torch.from_numpy(labels)).backward()
    sgd.step()
    state = {k: v.detach().double().numpy() for k, v in net.state_dict().items()}
    return state, captured["features"].detach().double().numpy()


def test_resnet50_train_mode_step_matches_torch():
    """Full-width ResNet-50 in train mode against PyTorch autograd, on small frames.

    - The pooled features of a batch, normalised with batch statistics: within 1e-4.
    - The running statistics after it (PyTorch's unbiased running variance): within 1e-4.
    - One step of the project's 'sgd' (momentum, coupled weight decay) against torch.optim.SGD.
      Train-mode gradients of a randomly initialised ResNet-50 at batch 4 are ill-conditioned:
      PyTorch's own float32 update differs from its float64 one by 1.7% (median over the
      parameters; measured). So each update is compared with PyTorch's float64 update: ours was
      2.8% away (median; 3.8% at worst), 1.6 times PyTorch float32's distance. The bounds below
      (median ratio 2, any parameter 5%) guard that.
    """
    torch.manual_seed(0)
    net = _randomised(TorchResNet((3, 4, 6, 3), 64, 10), seed=1).train()
    before = {k: v.detach().double().numpy() for k, v in net.state_dict().items()}
    trunk = resnet.ResNet(stage_sizes=(3, 4, 6, 3), width=64, last_stride=2)
    module = resnet.ResNetClassifier(backbone=trunk.clone(), num_classes=10)
    target = jax.eval_shape(
        module.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 128, 64, 3), jnp.float32)
    )
    to_flax = lambda state, source: traverse_util.flatten_dict(
        traverse_util.unflatten_dict(
            pretrained.convert(state, target, include_fc=True, source=source)
        )
    )
    variables = traverse_util.unflatten_dict(
        pretrained.convert(
            {k: v.astype(np.float32) for k, v in before.items()},
            target,
            include_fc=True,
            source="t",
        )
    )
    rng = np.random.default_rng(2)
    images = rng.normal(size=(4, 3, 128, 64)).astype(np.float32)
    labels = rng.integers(0, 10, 4)
    after32, features32 = _torch_sgd_step(net, images, labels, torch.float32)
    after64, _ = _torch_sgd_step(net, images, labels, torch.float64)

    config = ml_collections.ConfigDict(
        {
            "optim": {"name": "sgd", "learning_rate": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
                      "b1": 0.9, "b2": 0.999, "eps": 1e-8},
            "schedule": {"name": "constant", "warmup_epochs": 0.0},
        }
    )  # fmt: skip
    tx, _ = optim.create_optimizer(config, steps_per_epoch=1)
    x = images.transpose(0, 2, 3, 1)

    def loss_fn(params):
        variables_in = {"params": params, "batch_stats": variables["batch_stats"]}
        logits, updates = module.apply(variables_in, x, train=True, mutable=["batch_stats"])
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return loss, updates["batch_stats"]

    @jax.jit
    def step(params):
        (_, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, _ = tx.update(grads, tx.init(params), params)
        trunk_variables = {
            "params": params["backbone"],
            "batch_stats": variables["batch_stats"]["backbone"],
        }
        features, _ = trunk.apply(trunk_variables, x, train=True, mutable=["batch_stats"])
        return optax.apply_updates(params, updates), batch_stats, jnp.mean(features, axis=(1, 2))

    new_params, batch_stats, features = step(variables["params"])
    assert np.abs(features - features32).max() <= 1e-4 * np.abs(features32).max()

    got = traverse_util.flatten_dict({"params": new_params, "batch_stats": batch_stats})
    start, exact, torch32 = (
        to_flax(before, "before"),
        to_flax(after64, "f64"),
        to_flax(after32, "f32"),
    )
    assert got.keys() == exact.keys()
    ratios = []
    for key in got:
        if key[0] == "batch_stats":
            scale = np.abs(torch32[key]).max()
            assert np.abs(got[key] - torch32[key]).max() <= 1e-4 * scale, key
            continue
        change = np.linalg.norm(exact[key] - start[key])
        ours = np.linalg.norm(got[key] - exact[key]) / change
        theirs = np.linalg.norm(torch32[key] - exact[key]) / change
        assert ours <= 0.05, (key, ours, theirs)
        ratios.append(ours / theirs)
    assert np.median(ratios) <= 2.0
