"""GLTR as the official PyTorch code builds it, re-implemented in plain torch for parity checks.

Architecture of `ljn114514/GLTR` (`resnet.py`, `NonLocalBlock1D.py`), written here from its code:
a ResNet-50 trunk with a stride-1 layer4 (`tests/torch_resnet.py`), the layer4 map averaged to
2048-d per frame, a Linear 2048 -> 128 per frame; the dilated temporal pyramid as the official code
writes it, one `Conv2d(1, 128, (3, 128), dilation=(r, 1), padding=(r, 0))` per dilation r over the
`[B, 1, T, 128]` sequence (a Conv1d over time in disguise), concatenated after the identity branch
to 512 x T; the temporal self-attention as a 1-D non-local block (theta, phi, g = Conv1d 512 -> 256
with bias, unscaled softmax over T x T, W = Conv1d 256 -> 512 then BatchNorm1d, residual); the
feature is the mean over time; the train-only head is BatchNorm1d, ReLU, Dropout, Linear.

One deliberate generalisation: the official code pools with `AvgPool2d((16, 8))`, the whole map at
256x128 only; here the pool is global, so smaller frames work (identical at 256x128).

`to_flax_variables` maps every tensor of the module one-to-one onto the variables of
`vreid_jax.models.gltr.GLTR` (built by `flax_gltr`). Needs the optional `torch` extra.
"""

from __future__ import annotations

import numpy as np
import torch
import torch_mapping
from flax import traverse_util
from torch import nn
from torch_resnet import ResNet

from vreid_jax.models import gltr, pretrained, resnet


class TemporalNonLocal(nn.Module):
    """Embedded-Gaussian non-local block over the time axis of `[B, C, T]`, inner width C / 2."""

    def __init__(self, channels: int):
        super().__init__()
        inner = channels // 2
        self.theta = nn.Conv1d(channels, inner, 1)
        self.phi = nn.Conv1d(channels, inner, 1)
        self.g = nn.Conv1d(channels, inner, 1)
        self.out_conv = nn.Conv1d(inner, channels, 1)
        self.out_bn = nn.BatchNorm1d(channels)
        nn.init.zeros_(self.out_bn.weight)
        nn.init.zeros_(self.out_bn.bias)

    def forward(self, x):
        queries = self.theta(x).transpose(1, 2)  # [B, T, inner]
        keys = self.phi(x)  # [B, inner, T]
        values = self.g(x).transpose(1, 2)  # [B, T, inner]
        attention = torch.softmax(queries @ keys, dim=-1)  # [B, T, T], no 1/sqrt(d)
        y = (attention @ values).transpose(1, 2)  # [B, inner, T]
        return x + self.out_bn(self.out_conv(y))


class GLTR(nn.Module):
    """`[B * T, 3, H, W]` frames (tracklet-major) -> (feature `[B, 512]`, logits or None).

    `clip_len` is T, as the official model's fixed `frames`. Logits are returned in train mode
    only, as the official model's `istrain` head.
    """

    def __init__(
        self,
        num_classes: int,
        clip_len: int,
        stage_sizes=(3, 4, 6, 3),
        width: int = 64,
        frame_dim: int = 128,
        dilations=(1, 2, 3),
        dropout: float = 0.5,
    ):
        super().__init__()
        self.clip_len = clip_len
        self.dilations = tuple(dilations)
        self.backbone = ResNet(stage_sizes, width, num_classes=1, last_stride=1)
        del self.backbone.fc  # Unused: the trunk's map is pooled here.
        trunk_out = width * 2 ** (len(stage_sizes) - 1) * 4
        self.frame_fc = nn.Linear(trunk_out, frame_dim)
        self.dtp = nn.ModuleList(
            nn.Conv2d(1, frame_dim, (3, frame_dim), dilation=(r, 1), padding=(r, 0), bias=False)
            for r in self.dilations
        )
        pyramid = frame_dim * (1 + len(self.dilations))
        self.tsa = TemporalNonLocal(pyramid)
        self.head_bn = nn.BatchNorm1d(pyramid)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(pyramid, num_classes)

    def encode(self, frames):
        """Frames -> frame features `[B * T, frame_dim]`."""
        return self.frame_fc(self.backbone.trunk(frames).mean(dim=(2, 3)))

    def temporal(self, frame_features):
        """`[B * T, frame_dim]` -> the tracklet feature `[B, 512]` (DTP, TSA, mean over time)."""
        x = frame_features.view(-1, self.clip_len, self.frame_fc.out_features)  # [B, T, D]
        branches = [x.transpose(1, 2)]  # identity: [B, D, T]
        for conv in self.dtp:
            branches.append(conv(x.unsqueeze(1)).squeeze(3))  # [B, D, T, 1] -> [B, D, T]
        return self.tsa(torch.cat(branches, dim=1)).mean(dim=2)

    def classify(self, feature):
        return self.classifier(self.dropout(torch.relu(self.head_bn(feature))))

    def forward(self, frames):
        feature = self.temporal(self.encode(frames))
        if not self.training:
            return feature, None
        return feature, self.classify(feature)


def flax_gltr(net: GLTR, stage_sizes=(3, 4, 6, 3), width: int = 64) -> gltr.GLTR:
    """Our flax GLTR of the same shape as `net` (dropout as `net`'s)."""
    return gltr.GLTR(
        backbone=resnet.ResNet(stage_sizes=tuple(stage_sizes), width=width, last_stride=1),
        num_classes=net.classifier.out_features,
        frame_dim=net.frame_fc.out_features,
        dilations=net.dilations,
        dropout=net.dropout.p,
    )


def _dense(prefix, weight, bias) -> dict:
    """A Linear / 1x1 Conv1d weight `[out, in(, 1)]` -> a flax Dense kernel `[in, out]`."""
    return {
        ("params", *prefix, "kernel"): weight.reshape(weight.shape[0], -1).T,
        ("params", *prefix, "bias"): bias,
    }


def flat_flax_arrays(net: GLTR, target, tensors=None) -> dict:
    """`(collection, *path) -> float64 numpy` for every leaf of `target` (our variables tree).

    `tensors` maps names of `net.state_dict()` to replacements (e.g. parameter gradients); by
    default the module's own tensors. Every tensor of `net` (but `num_batches_tracked`) is used
    exactly once and every leaf of `target` is filled, with its shape, or this raises.
    """
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    state |= tensors or {}
    state = {k: v.detach().double().numpy() for k, v in state.items()}
    used = set()

    def take(name):
        used.add(name)
        return state[name]

    flat = {}
    for key in state:
        if key.startswith("backbone."):
            collection, path = pretrained.flax_location(key.removeprefix("backbone."))
            array = take(key)
            if array.ndim == 4:
                array = array.transpose(2, 3, 1, 0)  # (out, in, h, w) -> (h, w, in, out)
            flat[(collection, *path)] = array
    flat |= _dense(("frame_proj",), take("frame_fc.weight"), take("frame_fc.bias"))
    for i, rate in enumerate(net.dilations):
        weight = take(f"dtp.{i}.weight")  # [out, 1, tap, in] -> flax [tap, in, out]
        flat[("params", "dtp", f"dilated_conv_{rate}", "kernel")] = weight[:, 0].transpose(1, 2, 0)
    for ours, theirs in (("theta", "theta"), ("phi", "phi"), ("g", "g"), ("out_proj", "out_conv")):
        flat |= _dense(("tsa", ours), take(f"tsa.{theirs}.weight"), take(f"tsa.{theirs}.bias"))
    bn_leaves = {
        "weight": ("params", "scale"),
        "bias": ("params", "bias"),
        "running_mean": ("batch_stats", "mean"),
        "running_var": ("batch_stats", "var"),
    }
    for ours, theirs in ((("tsa", "out_bn"), "tsa.out_bn"), (("head", "bn"), "head_bn")):
        for name, (collection, leaf) in bn_leaves.items():
            flat[(collection, *ours, leaf)] = take(f"{theirs}.{name}")
    flat |= _dense(("head", "classifier"), take("classifier.weight"), take("classifier.bias"))

    return torch_mapping.check_one_to_one(flat, target, unused=set(state) - used)


def to_flax_variables(net: GLTR, target) -> dict:
    """`net`'s weights and BN running statistics as our GLTR's variables (float32)."""
    return torch_mapping.as_flax_variables(flat_flax_arrays(net, target))


def randomise(net: GLTR, seed: int) -> GLTR:
    """Non-trivial weights wherever the official init would hide a mismatch: every BN (the TSA's
    output BN included, which starts at zero) gets random affine parameters and running
    statistics, the dilated convs weights comparable to the identity branch."""
    gen = torch.Generator().manual_seed(seed)
    torch_mapping.randomise_batch_norms(net, gen)
    with torch.no_grad():
        for conv in net.dtp:
            fan_in = conv.weight[0].numel()
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) / fan_in**0.5)
    return net


def relative(got, want) -> float:
    """max |got - want| / max |want|."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.abs(got - want).max() / np.abs(want).max())


def _torch_run(net: GLTR, frames, labels, dtype, grads: bool) -> dict:
    """Eval features; train-mode features, logits, loss, parameter gradients (if `grads`), new
    running stats."""
    import copy  # noqa: PLC0415

    net = copy.deepcopy(net).to(dtype)
    x = torch.from_numpy(frames).to(dtype)
    with torch.no_grad():
        eval_features, _ = net.eval()(x)
    with torch.set_grad_enabled(grads):
        features, logits = net.train()(x)
        loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(labels))
    if grads:
        loss.backward()
    return {
        "eval_features": eval_features.double().numpy(),
        "train_features": features.detach().double().numpy(),
        "logits": logits.detach().double().numpy(),
        "loss": loss.item(),
        "grads": {k: p.grad for k, p in net.named_parameters()} if grads else None,
        "net": net,  # After the train-mode forward: its running statistics moved.
    }


def compare(
    batch: int,
    clip_len: int,
    height: int,
    width: int,
    *,
    stage_sizes=(3, 4, 6, 3),
    width_channels: int = 64,
    num_classes: int = 10,
    seed: int = 0,
    yardstick: bool = True,
    grads: bool = True,
) -> dict:
    """Our GLTR (float32, jitted) against this module in float64 and float32, same weights.

    Dropout is 0 on both sides (train mode otherwise draws different masks). Returns the
    differences relative to PyTorch float64 (`ours`) and, with `yardstick`, PyTorch float32's
    (`torch32`): features and logits as max |diff| / max |value|; gradients and the updated BN
    running statistics as the relative L2 error per variable, summarised by median and max.
    `grads=False` skips the backward pass on both sides (no `grads_*` entries).
    """
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415
    import optax  # noqa: PLC0415

    torch.manual_seed(seed)
    net = GLTR(num_classes, clip_len, stage_sizes, width_channels, dropout=0.0)
    net = randomise(net, seed + 1)
    rng = np.random.default_rng(seed + 2)
    frames = rng.normal(size=(batch * clip_len, 3, height, width)).astype(np.float32)
    labels = rng.integers(0, num_classes, batch)
    exact = _torch_run(net, frames, labels, torch.float64, grads)
    single = _torch_run(net, frames, labels, torch.float32, grads) if yardstick else None

    module = flax_gltr(net, stage_sizes, width_channels)
    target = jax.eval_shape(
        lambda x: module.init(jax.random.key(0), x, train=False),
        jax.ShapeDtypeStruct((1, clip_len, height, width, 3), jnp.float32),
    )
    variables = to_flax_variables(net, target)
    clips = frames.reshape(batch, clip_len, 3, height, width).transpose(0, 1, 3, 4, 2)

    @jax.jit
    def run(params, batch_stats):
        eval_features, _ = module.apply(
            {"params": params, "batch_stats": batch_stats}, clips, False
        )

        def loss_fn(params):
            (features, logits), updates = module.apply(
                {"params": params, "batch_stats": batch_stats},
                clips,
                True,
                mutable=["batch_stats"],
            )
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return loss, (features, logits, updates["batch_stats"])

        if not grads:
            return eval_features, *loss_fn(params), {}
        (loss, aux), gradients = jax.value_and_grad(loss_fn, has_aux=True)(params)
        return eval_features, loss, aux, gradients

    eval_features, loss, (features, logits, new_stats), gradients = jax.device_get(
        run(variables["params"], variables["batch_stats"])
    )
    ours_flat = traverse_util.flatten_dict({"params": gradients, "batch_stats": new_stats})

    def l2_errors(flat, reference):
        return {
            "/".join(k): float(
                np.linalg.norm(flat[k] - reference[k]) / np.linalg.norm(reference[k])
            )
            for k in reference
            if "/".join(k) not in vanishing and (grads or k[0] == "batch_stats")
        }

    def as_flat(run_):  # Gradients as params, the moved running statistics as batch_stats.
        return flat_flax_arrays(run_["net"], target, run_["grads"])

    reference = as_flat(exact)
    # Gradients that vanish analytically are rounding noise on both sides: left out of the relative
    # errors. phi's bias shifts a whole softmax row; g's and out_proj's biases add a constant over
    # (tracklet, time) that the TSA's train-mode BN removes; out_bn's bias shifts the time mean by
    # a constant that the head's train-mode BN removes.
    vanishing = []
    if grads:
        largest = max(np.linalg.norm(v) for k, v in reference.items() if k[0] == "params")
        vanishing = sorted(
            "/".join(k)
            for k, v in reference.items()
            if k[0] == "params" and np.linalg.norm(v) <= 1e-9 * largest
        )
    results = {
        "config": dict(batch=batch, clip_len=clip_len, height=height, width=width),
        "vanishing_grads": vanishing,
    }
    sides = [("ours", ours_flat, None)]
    if yardstick:
        sides.append(("torch32", as_flat(single), single))
    for name, flat, side in sides:
        values = side or {
            "eval_features": eval_features,
            "train_features": features,
            "logits": logits,
            "loss": float(loss),
        }
        errors = l2_errors(flat, reference)
        grad_errors = {k: v for k, v in errors.items() if k.startswith("params")}
        stat_errors = [v for k, v in errors.items() if k.startswith("batch_stats")]
        results[name] = {
            "eval_features": relative(values["eval_features"], exact["eval_features"]),
            "train_features": relative(values["train_features"], exact["train_features"]),
            "logits": relative(values["logits"], exact["logits"]),
            "loss": abs(values["loss"] - exact["loss"]) / abs(exact["loss"]),
            "running_stats_max": float(np.max(stat_errors)),
        }
        if grads:
            results[name] |= {
                "grads_median": float(np.median(list(grad_errors.values()))),
                "grads_max": float(max(grad_errors.values())),
                "grads_worst": max(grad_errors, key=grad_errors.get),
                "grads_all": grad_errors,
            }
    return results
