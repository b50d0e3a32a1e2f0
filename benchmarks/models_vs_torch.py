"""GLTR / NL3D train step and evaluation extraction, this project (JAX) vs the same model in PyTorch.

The PyTorch peers are the tests' reference networks, whose parity with ours the tests check:
GLTR = `tests/torch_gltr.py` (the official GLTR architecture, `test_models_gltr_official.py`),
NL3D = `tests/torch_nl3d.py` (our (2+1)D ResNet-50 + non-local + bottleneck head,
`test_models_nl3d_torch.py`). Both sides start from the same weights (torch's init, mapped onto
our variables) and see the same batch (`--batch` tracklets x `--clip_len` frames; labels P x K
with K = 2), dropout 0 on both sides so that the first losses can be compared.

- train: JAX runs the project's step (`vreid_jax.training.loop.train_step`, jitted with the state donated:
  uint8 normalisation, forward, label-smoothed CE + batch-hard triplet, backward, Adam with
  coupled weight decay); torch runs forward, the same losses (`tests/torch_losses.py`), backward
  and `torch.optim.Adam(lr, betas, eps, weight_decay)` with the same hyper-parameters
  (configs/default.py; constant learning rate).
- eval: what `vreid_jax.evaluation.features` compiles. GLTR: `encode_frames` over the batch's B*T frames,
  then `temporal_head` over the `[B, T, 128]` features (a full mask); NL3D: the clip forward.
  torch: the model in eval mode under `torch.no_grad()`. Reported also as frames/s.

Rounds alternate JAX and torch in one process pinned to `--cores` (XLA's pool follows the mask,
torch gets `set_num_threads`), sleeping `--pause` s before each block so that the idle side's
threads are parked; rounds in which other processes took more than `--max_foreign` of the pinned
cores are discarded (`common.alternate`). Ratio = torch time / JAX time (>= 1: JAX as fast).

`--profile DIR` adds a per-component breakdown, timed the same way for both frameworks: the
frame encoder / trunk (train-mode forward; forward + backward; and with flax's one-pass BN on the
JAX side), the head with the losses (forward + backward from fixed trunk features), forward +
backward of the whole model without the optimizer, the optimizer update alone; and writes a JAX
trace (`DIR/jax_trace`, TensorBoard / Perfetto) and torch's profile (`DIR/torch_ops.txt`,
`DIR/torch_trace.json`) of two train steps.

Run: python benchmarks/models_vs_torch.py --model gltr --cores 2 [--rounds 5 --steps 2]
Smoke run: --batch 2 --clip_len 4 --height 64 --width 32 --stage_sizes 1,1,1,1 --width_channels 8
--rounds 2 --steps 2 --out /tmp/x.json
Merges one entry per model/mode/cores/dtype into benchmarks/results/models_vs_torch.json and prints
a one-line summary per mode. Needs the optional torch extra.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import json
import os
import pathlib
import re
import shutil
import sys

import common  # benchmarks/common.py (this folder is on sys.path when run as a script)


def build(args, num_classes: int):
    """(config, flax module, torch net, our variables from the torch weights)."""
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415
    import torch  # noqa: PLC0415
    import torch_gltr  # noqa: PLC0415  (tests/)
    import torch_nl3d  # noqa: PLC0415

    from vreid_jax import models  # noqa: PLC0415

    config = common.model_config(args)
    config.model.dropout = 0.0
    config.schedule.name = "constant"
    module = models.build_model(config.model, num_classes)
    torch.manual_seed(0)
    if args.model == "gltr":
        b = module.backbone
        net = torch_gltr.GLTR(num_classes, args.clip_len, b.stage_sizes, b.width, dropout=0.0)
        mapping = torch_gltr.to_flax_variables
    else:
        net = torch_nl3d.like(module, args.clip_len)
        mapping = torch_nl3d.to_flax_variables
    spec = jax.ShapeDtypeStruct((1, args.clip_len, args.height, args.width, 3), jnp.float32)
    target = jax.eval_shape(lambda x: module.init(jax.random.key(0), x, train=False), spec)
    return config, module, net, mapping(net, target)


def jax_side(args, config, module, variables, clips, labels):
    """Closures (train step -> loss, eval extraction -> features) and the jitted functions."""
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    from vreid_jax.evaluation import features  # noqa: PLC0415
    from vreid_jax.training import loop, optim
    from vreid_jax.training import state as state_lib  # noqa: PLC0415

    tx, lr_fn = optim.create_optimizer(config, steps_per_epoch=1)
    step_fn = jax.jit(
        functools.partial(
            loop.train_step, model=module, tx=tx, lr_fn=lr_fn, loss_config=config.loss, seed=0
        ),
        donate_argnums=0,
    )
    state = [
        state_lib.TrainState(
            step=jnp.zeros((), jnp.int32),
            params=variables["params"],
            batch_stats=variables["batch_stats"],
            opt_state=tx.init(variables["params"]),
        )
    ]
    frozen = jax.tree.map(jnp.array, variables)
    batch = {"clips": jnp.asarray(clips), "labels": jnp.asarray(labels)}

    def step():
        state[0], metrics = step_fn(state[0], batch)
        return float(metrics["loss"])  # Blocks until the step is done.

    b, t = clips.shape[:2]
    if args.model == "gltr":
        encode = jax.jit(functools.partial(features.frame_features, module))
        head = jax.jit(functools.partial(features.sequence_features, module))
        frames = batch["clips"].reshape(b * t, *clips.shape[2:])
        mask = jnp.ones((b, t), bool)

        def extract():
            return jax.block_until_ready(
                head(frozen, encode(frozen, frames).reshape(b, t, -1), mask)
            )

        compiled = {"train_step": step_fn, "encode_frames": encode, "temporal_head": head}
    else:
        clip_fn = jax.jit(functools.partial(features.clip_features, module))

        def extract():
            return jax.block_until_ready(clip_fn(frozen, batch["clips"]))

        compiled = {"train_step": step_fn, "clip_features": clip_fn}
    return step, extract, compiled, (tx, state, batch)


def torch_side(net, frames, labels, config, clip_len: int):
    """Closures (train step -> loss, eval extraction -> features) over the torch model."""
    import torch  # noqa: PLC0415
    import torch_losses  # noqa: PLC0415

    x = torch.from_numpy(frames)
    y = torch.from_numpy(labels).long()
    o, loss_config = config.optim, config.loss
    opt = torch.optim.Adam(
        net.parameters(),
        lr=o.learning_rate,
        betas=(o.b1, o.b2),
        eps=o.eps,
        weight_decay=o.weight_decay,
    )

    def step():
        net.train()
        opt.zero_grad(set_to_none=True)
        features, logits = net(x)
        loss = torch_losses.total_loss(
            features, logits, y, loss_config.label_smoothing, loss_config.triplet_margin
        )
        loss.backward()
        opt.step()
        return loss.item()

    def extract():
        net.eval()
        with torch.no_grad():
            return net(x)[0]

    return step, extract, (opt, x, y)


def components(args, config, module, net, jax_parts, torch_parts, variables):
    """Name -> (JAX fn, torch fn) for the per-component breakdown of the train step (`--profile`).

    Every JAX piece is jitted on its own, every torch piece runs eagerly; both in train mode.
    """
    import bn_train_step  # noqa: PLC0415  (benchmarks/: flax's one-pass BN swapped in)
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415
    import torch  # noqa: PLC0415
    import torch_losses  # noqa: PLC0415

    from vreid_jax.data import pixels  # noqa: PLC0415
    from vreid_jax.models import heads  # noqa: PLC0415
    from vreid_jax.training import loop, losses  # noqa: PLC0415

    tx, state, batch = jax_parts
    opt, x, y = torch_parts
    params, stats = jax.tree.map(jnp.array, (variables["params"], variables["batch_stats"]))
    clips, labels = batch["clips"], batch["labels"]
    b, t = clips.shape[:2]
    gltr = args.model == "gltr"

    # The trunk: GLTR's frame encoder (ResNet + pool + 2048 -> 128), NL3D's (2+1)D ResNet + pool.
    def jax_trunk(p, clips):
        def fn(m, c):
            if gltr:
                return m.encode_frames(c, True)
            return jnp.mean(m.backbone(c, True).astype(jnp.float32), axis=(1, 2, 3))

        out, _ = module.apply(
            {"params": p, "batch_stats": stats}, pixels.normalize(clips), method=fn, mutable=True
        )
        return out

    width = 128 if gltr else module.backbone.out_features
    shape = (b, t, width) if gltr else (b, width)
    probe = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    trunk_fwd = jax.jit(jax_trunk)
    trunk_grad = jax.jit(jax.grad(lambda p, c: jnp.sum(jax_trunk(p, c) * probe)))
    with bn_train_step.flax_one_pass_bn():
        trunk_grad_one_pass = jax.jit(jax.grad(lambda p, c: jnp.sum(jax_trunk(p, c) * probe)))
        jax.block_until_ready(trunk_grad_one_pass(params, clips))  # Traced with the swap.

    # The head with the losses, from fixed trunk features (gradients to them and to the head).
    head_keys = [k for k in params if k != "backbone"]
    head_params = {k: params[k] for k in head_keys}
    trunk_out = jax.block_until_ready(trunk_fwd(params, clips))

    def jax_head_loss(hp, feats):
        if gltr:

            def fn(m, f):
                feature = m.temporal_head(f, None, True)
                return feature, m.head(feature, True)

            (feature, logits), _ = module.apply(
                {"params": {**params, **hp}, "batch_stats": stats}, feats, method=fn, mutable=True
            )
        else:
            head = heads.BottleneckHead(module.num_classes, module.bottleneck_dim, 0.0)
            (feature, logits), _ = head.apply(
                {"params": hp["head"], "batch_stats": stats["head"]}, feats, True, mutable=True
            )
        return losses.total_loss(feature, logits, labels, config.loss)[0]

    head_grad = jax.jit(jax.grad(jax_head_loss, argnums=(0, 1)))
    loss_grads = jax.jit(
        functools.partial(loop.loss_and_grads, model=module, loss_config=config.loss, seed=0)
    )

    def opt_update(p, o, g):
        updates, o = tx.update(g, o, p)
        return jax.tree.map(jnp.add, p, updates), o

    opt_fn = jax.jit(opt_update, donate_argnums=(0, 1))
    grads = jax.block_until_ready(loss_grads(state[0], batch)[3])
    opt_state = [jax.tree.map(jnp.array, params), tx.init(params)]  # Donated: a copy.

    def jax_opt():
        opt_state[:] = opt_fn(*opt_state, grads)
        jax.block_until_ready(opt_state)

    # torch.
    def torch_trunk():
        return net.encode(x).view(b, t, -1) if gltr else net.pool(net.trunk(x))

    torch_probe = torch.from_numpy(probe)
    torch_feats = torch_trunk().detach()

    def torch_head_loss():
        f = torch_feats.clone().requires_grad_(True)
        if gltr:
            feature = net.temporal(f.view(b * t, -1))
            logits = net.classify(feature)
        else:
            feature, logits = net.head(f)
        loss = torch_losses.total_loss(feature, logits, y)
        loss.backward()

    def torch_trunk_grad():
        net.zero_grad(set_to_none=True)
        (torch_trunk() * torch_probe).sum().backward()

    def torch_trunk_fwd():
        with torch.no_grad():
            torch_trunk()

    def torch_loss_grads():
        net.zero_grad(set_to_none=True)
        features, logits = net(x)
        torch_losses.total_loss(features, logits, y).backward()

    net.train()
    torch_loss_grads()  # Leaves gradients for the optimizer-only block.
    block = jax.block_until_ready
    return {
        "trunk_forward": (lambda: block(trunk_fwd(params, clips)), torch_trunk_fwd),
        "trunk_forward_backward": (lambda: block(trunk_grad(params, clips)), torch_trunk_grad),
        "trunk_forward_backward_flax_one_pass_bn": (
            lambda: block(trunk_grad_one_pass(params, clips)),
            None,
        ),
        "head_and_loss_forward_backward": (
            lambda: block(head_grad(head_params, trunk_out)),
            torch_head_loss,
        ),
        "model_and_loss_forward_backward": (
            lambda: block(loss_grads(state[0], batch)),
            torch_loss_grads,
        ),
        "optimizer_update": (jax_opt, opt.step),
    }


_HLO_LINE = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = .*?(?:op_name=\"([^\"]*)\")?[^\"]*$")


def _jax_part(op_name: str) -> str:
    """Which part of the train step an HLO op of it belongs to, from its op_name (jax's name stack)."""
    if not op_name:  # XLA's rewrites drop it, e.g. a strided conv's weight gradient.
        return "no metadata (XLA-rewritten ops, e.g. strided-conv weight gradients)"
    direction = "backward" if "transpose(jvp(" in op_name else "forward"
    if "jvp(" not in op_name:
        return "optimizer, loss and other"  # Adam's update and what is outside the model.
    if "nonlocal" in op_name:
        return f"non-local blocks {direction}"
    if "/backbone/" in op_name or "/frame_proj/" in op_name:
        return f"trunk {direction}"
    if "temporal_head" in op_name or "/dtp/" in op_name or "/tsa/" in op_name:
        return f"temporal head (DTP, TSA) {direction}"
    if "/head/" in op_name or ".head" in op_name:
        return f"classifier head {direction}"
    return f"loss and glue {direction}"


def jax_trace_breakdown(trace_dir: pathlib.Path, hlo_text: str, steps: int, part=None) -> dict:
    """Seconds per step of the JAX trace's XLA thunks, by part of the step (`part(op_name)`,
    default `_jax_part`) and by op kind: 'conv/matmul' (YNNPACK/oneDNN fusions, convolutions,
    dots) or 'other' (elementwise and reduction fusions: BN, ReLU, Adam; copies, transposes).
    Thunks may overlap in time, so these are thunk-seconds; `coverage` is the share of thunk time
    whose HLO instruction was found."""
    ops, calls, computation_names = {}, {}, {}
    computation = None
    for line in hlo_text.splitlines():
        header = re.match(r"^(?:ENTRY )?%([\w.\-]+) .*\{$", line)
        if header:
            computation = "ENTRY" if line.startswith("ENTRY") else header.group(1)
            continue
        match = _HLO_LINE.match(line)
        if not match:
            continue
        if computation == "ENTRY":
            ops[match.group(1)] = match.group(2) or ""
            called = re.search(r"calls=%([\w.\-]+)", line)
            if called:
                calls[match.group(1)] = called.group(1)
        elif match.group(2):
            computation_names.setdefault(computation, match.group(2))
    for name, op_name in ops.items():  # A fusion without metadata: its body's first op_name.
        if not op_name and name in calls:
            ops[name] = computation_names.get(calls[name], "")
    (trace,) = trace_dir.glob("plugins/profile/*/*.trace.json.gz")
    with gzip.open(trace) as f:
        events = json.load(f)["traceEvents"]
    table, found, total = {}, 0.0, 0.0
    for event in events:
        name = event.get("name", "")
        if event.get("ph") != "X" or not re.fullmatch(r"[\w\-]+\.\d+|[\w\-]+", name):
            continue
        if name not in ops:
            if "fusion" in name or name.startswith(("convolution", "dot", "copy")):
                total += event["dur"]
            continue
        seconds = event["dur"] / 1e6 / steps
        kind = (
            "conv/matmul"
            if name.startswith(("ynn_fusion", "onednn", "convolution", "dot", "custom-call"))
            else "other"
        )
        row = table.setdefault((part or _jax_part)(ops[name]), {"conv/matmul": 0.0, "other": 0.0})
        row[kind] += seconds
        found += event["dur"]
        total += event["dur"]
    table = {k: {kind: round(s, 4) for kind, s in v.items()} for k, v in sorted(table.items())}
    return {"thunk_seconds_per_step": table, "coverage": round(found / total, 3) if total else 0}


_TORCH_CONV = ("aten::convolution_backward", "aten::mkldnn_convolution", "aten::mm", "aten::addmm")
_TORCH_CONV += ("aten::bmm", "aten::_convolution", "aten::conv")


def torch_profile_breakdown(prof, steps: int) -> dict:
    """Seconds per step of torch's profile by kind of op (self CPU time): conv/matmul, batch norm,
    the optimizer's step (its whole CPU time) and everything else."""
    rows = {"conv/matmul": 0.0, "batch norm": 0.0, "other": 0.0}
    optimizer = 0.0
    for event in prof.key_averages():
        if event.key.startswith("Optimizer.step"):
            optimizer += event.cpu_time_total
        elif event.key.startswith("aten::"):
            kind = "other"
            if event.key.startswith(_TORCH_CONV):
                kind = "conv/matmul"
            elif "batch_norm" in event.key:
                kind = "batch norm"
            rows[kind] += event.self_cpu_time_total
    # The optimizer's aten ops (add_, mul_, lerp_, sqrt, addcdiv_, ...) are in `other`.
    rows["other"] = max(0.0, rows["other"] - optimizer)
    rows["optimizer step (whole)"] = optimizer
    return {k: round(v / 1e6 / steps, 4) for k, v in rows.items()}


def profile(args, jax_step, torch_step, blocks: dict, cores, directory: str, hlo_text) -> dict:
    """Per-component times (JAX and torch alternating) and the two profilers' traces."""
    import jax  # noqa: PLC0415
    import torch  # noqa: PLC0415

    out = pathlib.Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    fns = {}
    for name, (jax_fn, torch_fn) in blocks.items():
        jax_fn()  # Compiles.
        fns[f"jax/{name}"] = jax_fn
        if torch_fn is not None:
            torch_fn()
            fns[f"torch/{name}"] = torch_fn
    fns["jax/train_step"], fns["torch/train_step"] = jax_step, torch_step
    run = common.alternate(fns, args.rounds, args.steps, cores, args.pause, args.max_foreign)
    medians = {name: common.summarise(run, name)["median"] for name in fns}
    shutil.rmtree(out / "jax_trace", ignore_errors=True)
    with jax.profiler.trace(str(out / "jax_trace")):
        for _ in range(2):
            jax_step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(2):
            torch_step()
    (out / "torch_ops.txt").write_text(
        prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=40)
    )
    prof.export_chrome_trace(str(out / "torch_trace.json"))
    hlo = hlo_text()
    (out / "jax_train_step_hlo.txt").write_text(hlo)  # Thunk names -> ops, for the trace.
    by_op = {
        "jax": jax_trace_breakdown(out / "jax_trace", hlo, steps=2),
        "torch": torch_profile_breakdown(prof, steps=2),
    }
    print(f"JAX thunk-seconds per step by part of the step: {by_op['jax']}")
    print(f"torch seconds per step by kind of op: {by_op['torch']}")
    table = {}
    for name in [*blocks, "train_step"]:
        jax_s, torch_s = medians[f"jax/{name}"], medians.get(f"torch/{name}")
        table[name] = {
            "jax_s": jax_s,
            "torch_s": torch_s,
            "ratio_torch_over_jax": round(torch_s / jax_s, 3) if torch_s else None,
        }
    print(f"{'component':44s} {'JAX s':>8s} {'torch s':>8s} {'torch/JAX':>9s}")
    for name, row in table.items():
        torch_s = f"{row['torch_s']:.4f}" if row["torch_s"] else "-"
        ratio = f"{row['ratio_torch_over_jax']:.3f}" if row["ratio_torch_over_jax"] else "-"
        print(f"{name:44s} {row['jax_s']:8.4f} {torch_s:>8s} {ratio:>9s}")
    return {
        "components": table,
        "by_op": by_op,
        "foreign_share_per_round": run["foreign_share_per_round"],
        "kept_rounds": run["kept_rounds"],
        "traces": str(out),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("gltr", "nl3d"), default="gltr")
    parser.add_argument("--cores", type=int, default=0, help="Cores to pin to (0 = all allowed).")
    parser.add_argument("--batch", type=int, default=2, help="Tracklets (clips) per batch.")
    parser.add_argument("--clip_len", type=int, default=8)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--stage_sizes", default="", help="e.g. 1,1,1,1 (default: ResNet-50).")
    parser.add_argument("--width_channels", type=int, default=64, help="res2 width (64).")
    parser.add_argument("--num_classes", type=int, default=625, help="625 = MARS train ids.")
    parser.add_argument("--modes", default="train,eval", help="Comma-separated: train, eval.")
    parser.add_argument("--rounds", type=int, default=5, help="Alternating rounds.")
    parser.add_argument("--steps", type=int, default=2, help="Timed calls per side per round.")
    parser.add_argument("--pause", type=float, default=0.2, help="Seconds idle before a block.")
    parser.add_argument(
        "--max_foreign",
        type=float,
        default=0.1,
        help="Discard rounds where other processes took more than this share of the cores.",
    )
    parser.add_argument("--profile", default="", help="Directory: per-component breakdown.")
    parser.add_argument("--label", default="", help="Extra key part.")
    parser.add_argument("--out", default="", help="Result JSON (default: results/...json).")
    args = parser.parse_args()
    args.dtype = "float32"  # The torch peers run float32; bfloat16 is not compared here.
    cores = common.pin_cores(args.cores or len(os.sched_getaffinity(0)))
    import numpy as np  # noqa: PLC0415
    import torch  # noqa: PLC0415

    sys.path.insert(0, str(common.REPO / "tests"))
    torch.set_num_threads(len(cores))
    from vreid_jax.data import pixels  # noqa: PLC0415

    config, module, net, variables = build(args, args.num_classes)
    rng = np.random.default_rng(0)
    shape = (args.batch, args.clip_len, args.height, args.width, 3)
    clips = rng.integers(0, 256, shape, dtype=np.uint8)
    labels = (np.arange(args.batch) // 2 % args.num_classes).astype(np.int32)  # P x K, K = 2
    frames = np.asarray(pixels.normalize(clips)).transpose(0, 1, 4, 2, 3)
    frames = np.ascontiguousarray(frames.reshape(-1, 3, args.height, args.width))

    jax_step, jax_extract, compiled, jax_parts = jax_side(
        args, config, module, variables, clips, labels
    )
    torch_step, torch_extract, torch_parts = torch_side(net, frames, labels, config, args.clip_len)
    # Same weights: compare the eval features, then the first training losses.
    checks = common.first_calls(jax_extract, torch_extract, jax_step, torch_step)

    blocks = {}
    if "train" in args.modes:
        blocks |= {"jax/train": jax_step, "torch/train": torch_step}
    if "eval" in args.modes:
        blocks |= {"jax/eval": jax_extract, "torch/eval": torch_extract}
    run = common.alternate(blocks, args.rounds, args.steps, cores, args.pause, args.max_foreign)
    import jax  # noqa: PLC0415

    size = f"batch{args.batch}x{args.clip_len}/{args.height}x{args.width}"
    if args.stage_sizes or args.width_channels != 64:
        size += f"/stages{args.stage_sizes.replace(',', '') or 'r50'}_w{args.width_channels}"
    common_record = {
        "model": args.model,
        "batch": args.batch,
        "clip": [args.clip_len, args.height, args.width, 3],
        "model_size": {"stage_sizes": args.stage_sizes or "3,4,6,3", "width": args.width_channels},
        "dtype": args.dtype,
        "cores": cores,
        **common.run_facts(run, checks, compiled, args.steps),
    }
    profiled = None
    if args.profile:
        parts = components(args, config, module, net, jax_parts, torch_parts, variables)
        _, state, batch = jax_parts
        hlo = lambda: compiled["train_step"].lower(state[0], batch).compile().as_text()  # noqa: E731
        profiled = profile(args, jax_step, torch_step, parts, cores, args.profile, hlo)
    records = common.framework_records(run, args.batch * args.clip_len, common_record)
    for mode, record in records.items():
        if profiled and mode == "train":
            record["profile"] = profiled
        key = f"{args.model}/{mode}/{args.dtype}/{size}/{len(cores)}cores"
        key += f"/{args.label}" if args.label else ""
        written = common.merge_result("models_vs_torch", key, record, args.out)
        print(common.framework_summary("models_vs_torch", key, record, run, written))
    del jax


if __name__ == "__main__":
    main()
