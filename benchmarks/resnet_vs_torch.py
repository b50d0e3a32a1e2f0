"""ResNet-50 train step, the project's Flax model vs torchvision's architecture in PyTorch.

Both frameworks run in one process, on the same cores, alternately (round by round), so a busy
machine slows both alike. Same network (torchvision ResNet-50, the JAX side initialised from the
torch weights through `pretrained.from_torchvision`, so the first losses agree), same batch of
`--batch` images at `--height x --width`, same loss (softmax cross-entropy, BN in train mode) and
same optimizer (Adam, lr 3e-4, coupled weight decay 5e-4: `torch.optim.Adam(weight_decay=...)` and
the project's 'adam'). Also times the eval-mode forward pass alone. Ratio = torch time / JAX time
(> 1: JAX faster), from the medians and from the fastest steps (the least disturbed on a shared
machine). Needs the optional torch extra.

Threads: the process is pinned to `--cores` cores before either framework starts; XLA's CPU
thread pool sizes itself from that mask and torch gets `set_num_threads(cores)`.

Run: python benchmarks/resnet_vs_torch.py [--cores 2] [--batch 8] [--dtype bfloat16]
Small smoke run: --batch 1 --height 64 --width 32 --rounds 1 --steps 1 --out /tmp/x.json
Adds one entry to benchmarks/results/resnet_vs_torch.json and prints a one-line summary.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import common

LEARNING_RATE, WEIGHT_DECAY, NUM_CLASSES = 3e-4, 5e-4, 1000


def jax_side(state_dict, images_nchw, labels, dtype: str):
    """(train_step, forward) closures over the Flax ResNet-50 initialised from `state_dict`."""
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415
    import optax  # noqa: PLC0415

    from vreid_jax.models import layers, pretrained  # noqa: PLC0415
    from vreid_jax.training import optim  # noqa: PLC0415

    module, variables = pretrained.from_torchvision(state_dict)
    module = module.clone(backbone=module.backbone.clone(dtype=layers.compute_dtype(dtype)))
    config = common.default_config()
    config.optim.update(learning_rate=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    config.schedule.name = "constant"
    tx, _ = optim.create_optimizer(config, steps_per_epoch=1)

    def train_step(params, batch_stats, opt_state, images, labels):
        def loss_fn(p):
            logits, updates = module.apply(
                {"params": p, "batch_stats": batch_stats},
                images,
                train=True,
                mutable=["batch_stats"],
            )
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return loss, updates["batch_stats"]

        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), batch_stats, opt_state, loss

    step_fn = jax.jit(train_step, donate_argnums=(0, 1, 2))
    forward_fn = jax.jit(lambda v, x: module.apply(v, x, train=False))
    images = jnp.asarray(images_nchw.transpose(0, 2, 3, 1))
    labels = jnp.asarray(labels)
    state = [variables["params"], variables["batch_stats"], tx.init(variables["params"])]
    frozen = jax.tree.map(jnp.copy, variables)

    def step():
        *new, loss = step_fn(*state, images, labels)
        state[:] = new
        return float(loss)  # Blocks until the step is done.

    def forward():
        jax.block_until_ready(forward_fn(frozen, images))

    return step, forward, step_fn


def torch_side(net, images_nchw, labels, dtype: str, channels_last: bool):
    """(train_step, forward) closures over the torch ResNet-50."""
    import torch  # noqa: PLC0415

    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=memory_format)
    images = torch.from_numpy(images_nchw).contiguous(memory_format=memory_format)
    labels = torch.from_numpy(labels).long()
    opt = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    loss_fn = torch.nn.CrossEntropyLoss()
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16")

    def step():
        net.train()
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss = loss_fn(net(images).float(), labels)
        loss.backward()
        opt.step()
        return loss.item()

    def forward():
        net.eval()
        with torch.no_grad(), autocast:
            net(images)

    return step, forward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=0, help="Cores to pin to (0 = all allowed).")
    parser.add_argument("--batch", type=int, default=8, help="Images per batch.")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--torch_channels_last", action="store_true", help="NHWC torch tensors.")
    parser.add_argument("--rounds", type=int, default=5, help="Alternating rounds.")
    parser.add_argument("--steps", type=int, default=2, help="Timed steps per framework per round.")
    parser.add_argument("--label", default="", help="Extra key part, e.g. the XLA flags tried.")
    parser.add_argument("--out", default="", help="Result JSON (default: results/...json).")
    args = parser.parse_args()
    import os  # noqa: PLC0415

    cores = common.pin_cores(args.cores or len(os.sched_getaffinity(0)))
    import numpy as np  # noqa: PLC0415
    import torch  # noqa: PLC0415

    sys.path.insert(0, str(common.REPO / "tests"))
    from torch_resnet import ResNet  # noqa: PLC0415  (the tests' reference network)

    torch.set_num_threads(len(cores))
    torch.manual_seed(0)
    net = ResNet(num_classes=NUM_CLASSES)
    state_dict = {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}
    rng = np.random.default_rng(0)
    images = rng.standard_normal((args.batch, 3, args.height, args.width), dtype=np.float32)
    labels = rng.integers(0, NUM_CLASSES, args.batch).astype(np.int32)

    jax_step, jax_forward, step_fn = jax_side(state_dict, images, labels, args.dtype)
    torch_step, torch_forward = torch_side(
        net, images, labels, args.dtype, args.torch_channels_last
    )
    start = time.perf_counter()
    first_losses = {"jax": jax_step(), "torch": torch_step()}  # Same weights, same batch.
    compile_s = time.perf_counter() - start
    jax_forward(), torch_forward()  # Warm-up (compiles the forward).

    times = {"jax_step": [], "torch_step": [], "jax_forward": [], "torch_forward": []}
    for _ in range(args.rounds):
        times["jax_step"] += common.timed(jax_step, args.steps)
        times["torch_step"] += common.timed(torch_step, args.steps)
        times["jax_forward"] += common.timed(jax_forward, args.steps)
        times["torch_forward"] += common.timed(torch_forward, args.steps)
    median = {k: statistics.median(v) for k, v in times.items()}
    # The fastest step of each is the least disturbed by other work on a shared machine.
    best = {k: min(v) for k, v in times.items()}
    import jax  # noqa: PLC0415

    record = {
        "batch": args.batch,
        "image": [args.height, args.width, 3],
        "dtype": args.dtype,
        "torch_layout": "NHWC (channels_last)" if args.torch_channels_last else "NCHW",
        "cores": cores,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        **{f"{k}_s_median": round(v, 4) for k, v in median.items()},
        "step_ratio_torch_over_jax": round(median["torch_step"] / median["jax_step"], 3),
        "forward_ratio_torch_over_jax": round(median["torch_forward"] / median["jax_forward"], 3),
        **{f"{k}_s_min": round(v, 4) for k, v in best.items()},
        "step_ratio_of_min_times": round(best["torch_step"] / best["jax_step"], 3),
        "forward_ratio_of_min_times": round(best["torch_forward"] / best["jax_forward"], 3),
        "jax_images_per_s": round(args.batch / median["jax_step"], 2),
        "torch_images_per_s": round(args.batch / median["torch_step"], 2),
        "first_loss": first_losses,
        "first_step_s_both": round(compile_s, 2),
        "jax_step_compilations": step_fn._cache_size(),
        "times_s": {k: [round(t, 4) for t in v] for k, v in times.items()},
        "rounds": args.rounds,
        "machine": common.machine(),
    }
    key = f"{args.dtype}/batch{args.batch}/{args.height}x{args.width}/{len(cores)}cores/" + (
        "torch_nhwc" if args.torch_channels_last else "torch_nchw"
    )
    key += f"/{args.label}" if args.label else ""
    written = common.merge_result("resnet_vs_torch", key, record, args.out)
    del jax
    print(
        f"resnet_vs_torch {key}: train step JAX {median['jax_step']:.3f} s, torch "
        f"{median['torch_step']:.3f} s (ratio torch/JAX {record['step_ratio_torch_over_jax']}); "
        f"forward JAX {median['jax_forward']:.3f} s, torch {median['torch_forward']:.3f} s "
        f"(ratio {record['forward_ratio_torch_over_jax']}); ratios of the fastest steps: step "
        f"{record['step_ratio_of_min_times']}, forward {record['forward_ratio_of_min_times']}; "
        f"first losses {first_losses} "
        f"-> {written}"
    )


if __name__ == "__main__":
    main()
