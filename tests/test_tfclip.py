"""TF-CLIP's model, loss, memory and optimizer against the plain-torch reference written from the
official code (`tests/torch_tfclip.py`), random weights, tiny sizes, float32."""

import concurrent.futures
import threading

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from vreid_jax.models import tfclip
from vreid_jax.training import tfclip_loss, tfclip_optim

torch = pytest.importorskip("torch")
torch_tfclip = pytest.importorskip("torch_tfclip")
torch_mapping = pytest.importorskip("torch_mapping")

B, T, H, W, CLASSES, CAMERAS = 8, 4, 64, 32, 4, 3
TINY = dict(width=64, layers=2, heads=4, patch_size=16, output_dim=128, ssp_heads=2)


def _flax_model(**overrides):
    kw = dict(TINY, ssp_dropout=0.0)
    kw.update(overrides)
    return tfclip.TFClip(num_classes=CLASSES, num_cameras=CAMERAS, **kw)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    net = torch_tfclip.TFClip(CLASSES, CAMERAS, (H // 16, W // 16), T)
    torch_tfclip.randomise_(net, seed=1)
    gen = torch.Generator().manual_seed(2)
    clips = torch.randn(B, T, 3, H, W, generator=gen)
    cameras = torch.randint(0, CAMERAS, (B,), generator=gen)
    labels = torch.arange(CLASSES).repeat_interleave(B // CLASSES)
    memory = torch.randn(CLASSES, TINY["output_dim"], generator=gen)
    model = _flax_model()
    nhwc = jnp.asarray(clips.permute(0, 1, 3, 4, 2).numpy())
    target = jax.eval_shape(
        lambda: model.init(
            jax.random.key(0), nhwc, jnp.asarray(cameras.numpy()), jnp.asarray(memory.numpy()), True
        )
    )
    flat = torch_tfclip.to_flax_flat(net, target)
    variables = torch_mapping.as_flax_variables(flat)
    return dict(
        net=net,
        clips=clips,
        cameras=cameras,
        labels=labels,
        memory=memory,
        model=model,
        nhwc=nhwc,
        variables=variables,
        target=target,
    )


def _inputs(s):
    return s["nhwc"], jnp.asarray(s["cameras"].numpy()), jnp.asarray(s["memory"].numpy())


def _close(ours, theirs, tol=1e-4, what=""):
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.shape == theirs.shape, what
    scale = max(1.0, float(np.abs(theirs).max()))
    diff = float(np.abs(ours - theirs).max())
    assert diff <= tol * scale, f"{what}: max diff {diff} (scale {scale})"
    return diff


def _train_apply(model, variables, nhwc, cameras, memory):
    return model.apply(variables, nhwc, cameras, memory, True, mutable=["batch_stats"])


def test_training_outputs_and_eval_descriptor_equal_torch(setup):
    s = setup
    net = s["net"]
    net.train()
    nhwc, cameras, memory = _inputs(s)
    outputs, updated = _train_apply(s["model"], s["variables"], nhwc, cameras, memory)
    with torch.no_grad():
        scores, feats, logits = net(s["clips"], s["cameras"], s["memory"])
    for i in range(3):
        _close(outputs.id_logits[i], scores[i].numpy(), what=f"id_logits[{i}]")
        _close(outputs.features[i], feats[i].numpy(), what=f"features[{i}]")
    _close(outputs.frame_logits, scores[3].numpy(), what="frame_logits")
    _close(outputs.memory_logits, logits.numpy(), what="memory_logits")
    # The necks' running statistics moved as torch's (momentum 0.1, unbiased variance).
    stats = traverse_util.flatten_dict(updated["batch_stats"])
    for (neck, stat), value in stats.items():
        buffer = "running_mean" if stat == "mean" else "running_var"
        _close(value, getattr(net, neck).state_dict()[buffer].numpy(), 1e-5, f"{neck} {stat}")

    net.eval()
    with torch.no_grad():
        theirs = net(s["clips"], s["cameras"]).numpy()
    ours = s["model"].apply(s["variables"], nhwc, cameras)
    assert ours.shape == (B, 2 * 64 + 128)
    _close(ours, theirs, what="descriptor")
    net.train()


def test_loss_and_gradients_equal_torch(setup):
    s = setup
    # A fresh copy: the forward above moved the torch BN statistics.
    net = torch_tfclip.TFClip(CLASSES, CAMERAS, (H // 16, W // 16), T)
    torch_tfclip.randomise_(net, seed=1)
    net.train()
    nhwc, cameras, memory = _inputs(s)
    labels = jnp.asarray(s["labels"].numpy())
    scores, feats, logits = net(s["clips"], s["cameras"], s["memory"])
    loss = torch_tfclip.tfclip_loss(scores, feats, logits, s["labels"], T)
    loss.backward()

    def loss_fn(params):
        variables = {"params": params, "batch_stats": s["variables"]["batch_stats"]}
        outputs, _ = _train_apply(s["model"], variables, nhwc, cameras, memory)
        return tfclip_loss.tfclip_loss(outputs, labels)[0]

    value, grads = jax.value_and_grad(loss_fn)(s["variables"]["params"])
    _close(value, loss.item(), what="loss")
    tensors = {}
    for name, param in net.named_parameters():
        tensors[name] = param.grad if param.grad is not None else torch.zeros_like(param)
        assert (param.grad is None) == (not param.requires_grad), name  # only frozen biases
    theirs = torch_tfclip.to_flax_flat(net, s["target"], tensors)
    ours = traverse_util.flatten_dict({"params": grads})
    assert ours.keys() == theirs.keys()
    for key in ours:
        _close(ours[key], theirs[key], what="/".join(key))
        if tfclip.is_frozen(key[1:]):
            assert not np.any(np.asarray(ours[key])), key
    # TMD runs on detached tokens: the encoder learns from the heads and SSP only, and TMD's
    # gradient is non-zero.
    assert np.any(np.asarray(grads["TMD"]["attn"]["in_proj"]["kernel"]))


def test_memory_equals_official_cluster_features(setup):
    s = setup
    net = s["net"]
    with torch.no_grad():
        theirs = net.memory_features(s["clips"]).numpy()
    ours = s["model"].apply(s["variables"], s["nhwc"], method=tfclip.TFClip.memory_features)
    _close(ours, theirs, what="memory features")
    rng = np.random.default_rng(0)
    features = rng.normal(size=(11, 5)).astype(np.float32)
    labels = np.array([2, 0, 1, 2, -1, 3, 0, 1, 3, 3, 2])
    expected = torch_tfclip.memory_from(torch.from_numpy(features), torch.from_numpy(labels))
    np.testing.assert_allclose(
        tfclip.identity_memory(features, labels, 4), expected.numpy(), rtol=0, atol=1e-6
    )
    with pytest.raises(ValueError, match="missing \\[1\\]"):
        tfclip.identity_memory(features[labels != 1], labels[labels != 1], 4)
    # Two processes, each with the identities label % 2 == p (a multi-host run's split), summing
    # through `combine` as an all-gather would: the one-process memory.
    shares = [labels % 2 == p for p in range(2)]
    assert np.array_equal(
        _on_two_processes(lambda p, combine: tfclip.identity_memory(
            features[shares[p]], labels[shares[p]], 4, combine
        )),  # fmt: skip
        [tfclip.identity_memory(features, labels, 4)] * 2,
    )


def _on_two_processes(fn):
    """`[fn(0, combine), fn(1, combine)]` run concurrently, `combine(x)` the sum of both calls'
    `x` (an all-gather and a sum, as `kinds.TFClipTraining.prepare` does across hosts)."""
    barrier, posted = threading.Barrier(2), {}

    def combine_for(p):
        def combine(x):
            barrier.wait()
            posted[p] = x
            barrier.wait()
            total = posted[0] + posted[1]
            barrier.wait()
            return total

        return combine

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(fn, p, combine_for(p)) for p in range(2)]
        return [f.result(timeout=30) for f in futures]


def test_optimizer_steps_equal_torch_adam_with_the_groups_and_schedule(setup):
    s = setup
    net = torch_tfclip.TFClip(CLASSES, CAMERAS, (H // 16, W // 16), T)
    torch_tfclip.randomise_(net, seed=3)
    base_lr, steps_per_epoch = 1e-3, 2
    groups = torch_tfclip.param_groups(net, base_lr)
    optimizer = torch.optim.Adam(groups)
    scheduler = torch_tfclip.WarmupMultiStepLR(optimizer, [2, 3], 0.1, 0.1, 2)
    schedule = tfclip_optim.warmup_multistep_schedule(base_lr, steps_per_epoch, [2, 3], 0.1, 0.1, 2)
    params = torch_mapping.as_flax_variables(torch_tfclip.to_flax_flat(net, s["target"]))["params"]
    tx = tfclip_optim.create_tfclip_optimizer(params, schedule)
    opt_state = tx.init(params)
    gen = torch.Generator().manual_seed(4)
    step = 0
    for _epoch in range(4):
        for _ in range(steps_per_epoch):
            np.testing.assert_allclose(
                schedule(step), base_lr * scheduler.get_last_lr()[0] / base_lr, rtol=1e-6
            )
            grads = {}
            for name, param in net.named_parameters():
                param.grad = (
                    torch.randn(param.shape, generator=gen) if param.requires_grad else None
                )
                grads[name] = param.grad if param.grad is not None else torch.zeros_like(param)
            optimizer.step()
            flat = torch_tfclip.to_flax_flat(net, s["target"], grads)
            g = traverse_util.unflatten_dict({k[1:]: v for k, v in flat.items()})
            updates, opt_state = tx.update(g, opt_state, params)
            params = optax.apply_updates(params, updates)
            step += 1
        scheduler.step()
    theirs = traverse_util.flatten_dict(
        torch_mapping.as_flax_variables(torch_tfclip.to_flax_flat(net, s["target"]))["params"]
    )
    for key, value in traverse_util.flatten_dict(params).items():
        _close(value, theirs[key], 1e-6, "/".join(key))


def test_group_rules_and_the_frozen_neck_bias_gets_no_update(setup):
    params = setup["variables"]["params"]
    labels = traverse_util.flatten_dict(tfclip_optim.param_groups(params))
    assert labels[("bottleneck", "bias")] == "frozen"
    assert labels[("bottleneck", "scale")] == "lr1.0_wd0.0001"
    assert labels[("classifier_proj_temp", "kernel")] == "lr10.0_wd0.0001"
    assert labels[("classifier_proj", "kernel")] == "lr1.0_wd0.0001"
    assert labels[("TMD", "attn", "in_proj", "bias")] == "lr2.0_wd0.0001"
    assert labels[("SSP", "decoder_0", "norm1", "bias")] == "lr2.0_wd0.0001"
    schedule = tfclip_optim.warmup_multistep_schedule(1e-3, 1)
    tx = tfclip_optim.create_tfclip_optimizer(params, schedule)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    flat = traverse_util.flatten_dict(updates)
    for neck in tfclip.NECKS:
        assert not np.any(np.asarray(flat[(neck, "bias")])), neck
        assert np.all(np.asarray(flat[(neck, "scale")]) != 0), neck


def test_ssp_and_classifiers_do_not_run_at_eval(setup):
    s = setup
    nhwc, cameras, _ = _inputs(s)
    params = dict(s["variables"]["params"])
    for name in ("SSP", "classifier2", "classifier_proj", "classifier_proj_temp"):
        del params[name]
    variables = {"params": params, "batch_stats": s["variables"]["batch_stats"]}
    without = s["model"].apply(variables, nhwc, cameras)
    np.testing.assert_array_equal(without, s["model"].apply(s["variables"], nhwc, cameras))
    # 'after': the first two necks' outputs.
    after = _flax_model(neck_feat="after").apply(s["variables"], nhwc, cameras)
    assert after.shape == (B, 64 + 128)


def test_ssp_dropout_acts_on_the_memory_logits_only(setup):
    """TF-CLIP trains with SSP's dropout 0.1 (its only dropout): the loop must pass a 'dropout'
    rng; the other outputs do not depend on it."""
    s = setup
    nhwc, cameras, memory = _inputs(s)
    plain, _ = _train_apply(s["model"], s["variables"], nhwc, cameras, memory)
    dropped, _ = _flax_model(ssp_dropout=0.1).apply(
        s["variables"],
        nhwc,
        cameras,
        memory,
        True,
        mutable=["batch_stats"],
        rngs={"dropout": jax.random.key(0)},
    )
    np.testing.assert_array_equal(dropped.id_logits[0], plain.id_logits[0])
    np.testing.assert_array_equal(dropped.frame_logits, plain.frame_logits)
    assert np.abs(np.asarray(dropped.memory_logits - plain.memory_logits)).max() > 1e-3
