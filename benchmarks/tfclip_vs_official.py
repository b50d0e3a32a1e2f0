"""TF-CLIP train step and evaluation, this project (JAX) vs the official PyTorch TF-CLIP.

The PyTorch side is the official code itself, imported at run time from a checkout of
`AsuradaYuci/TF-CLIP` given with `--official DIR` (nothing of it is copied into this project):
`model/make_model_clipreid.py`'s `build_transformer` with its `model/clip` package, the loss
classes of `loss/softmax_loss.py` (`CrossEntropyLabelSmooth`) and `loss/triplet_loss.py`
(`TripletLoss`), and `solver/make_optimizer_prompt.py`'s `make_optimizer_2stage` (Adam over its
per-parameter groups), configured from the checkout's `configs/vit_clipreid.yml` with the
defaults of `config/defaults.py` that the yml leaves out. What the official code cannot do on
this machine is replaced, and only that:
* its CLIP weights come from `clip._download` (the network) and are moved to "cuda":
  `load_clip_to_cpu` is replaced by the official `model.clip.model.CLIP` built at random
  (ViT-B/16 image tower, a one-block text tower that TF-CLIP never runs), in float32, left on
  the CPU;
* imports of code the model never runs are stubbed when the package is missing: `timm`
  (`DropPath`, used only with drop-path > 0; `trunc_normal_` is torch's own, the same
  function), `torchvision.transforms` (CLIP's image preprocessing; PyPI has no CPU torchvision
  for the pinned torch) and the text tokenizer (`ftfy`, `regex`);
* `make_loss` builds a CUDA `CenterLoss` and the training loop runs under CUDA autocast with a
  GradScaler: the step here sums the same loss terms with the official loss classes
  (`use_gpu=False`; weights `ID_LOSS_WEIGHT`, `TRIPLET_LOSS_WEIGHT`, `I2T_LOSS_WEIGHT`, the
  frame term / T as `processor/processor_clipreid_stage2.py` adds it), in float32 on both sides.

The official model is ViT-B/16 by construction (width 768, 12 layers: its `VisionTransformer`
indexes `resblocks[11]`, TMD and SSP are built at 768 and 512); only the frame size, the clip
length, the batch and the number of identities are free. Without `--official`, the PyTorch side
is the tests' plain-torch re-implementation (`tests/torch_tfclip.py`, the official tensor layout,
parity in `tests/test_tfclip.py`) and the encoder's size is free too (`--width_channels`,
`--layers`).

Both sides start from the same weights (the torch model's, mapped onto our variables by
`tests/torch_tfclip.to_flax_flat`), the same CLIP-Memory (random, `[num_classes, 512]`) and the
same batch (`--batch` tracklets of `--clip_len` frames, P x K labels with K = 2, random cameras);
SSP's dropout is 0 on both sides so that the first losses can be compared.
- train: JAX runs the project's step (`loop.train_step` with TF-CLIP's training kind: uint8
  normalisation, forward, `tfclip_loss`, backward, `tfclip_optim`'s Adam groups), jitted with the
  state donated; torch runs forward, the loss above, backward and the official optimizer's step.
- eval: the descriptor of the clips (`evaluation.features.clip_features` jitted; torch: eval mode
  under `torch.no_grad()`), 2 x width + 512 per clip. Reported also as frames/s.

Rounds alternate JAX and torch in one process pinned to `--cores` (`common.alternate`: idle pause
before each block, rounds where other processes took more than `--max_foreign` of the cores are
discarded). Ratio = torch time / JAX time (>= 1: JAX as fast). `--profile` adds the same timing
per component: the image encoder forward and forward + backward (train mode, cameras on), TMD
forward, and the optimizer update alone. `--residual_grad_barrier` also times the JAX step with
the experiment `residual_grad_barrier` (the residual stream's gradient materialised per encoder
block; the project's model is not changed).

Run: python benchmarks/tfclip_vs_official.py --official TF-CLIP --cores 2 --batch 4 --clip_len 8 \
    --height 128 --width 64
Smoke run (reference peer): --batch 4 --clip_len 2 --height 32 --width 32 --width_channels 64
--layers 1 --num_classes 8 --rounds 1 --steps 1 --out /tmp/x.json
Merges one entry per peer/mode/size/cores into benchmarks/results/tfclip_vs_official.json.
Needs the optional torch extra (and PyYAML, which flax brings, to read the official yml).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import os
import pathlib
import sys
import types

import common  # benchmarks/common.py (this folder is on sys.path when run as a script)

OUTPUT_DIM = 512  # ViT-B/16's projection; SSP's embed_dim in the official code.


# ------------------------------------------------------------------------- the official code


def _namespace(tree):
    """A yml mapping as nested attribute namespaces (what the official code reads off yacs)."""
    if isinstance(tree, dict):
        return types.SimpleNamespace(**{k: _namespace(v) for k, v in tree.items()})
    return tree


def _stub_missing(name: str, **attrs) -> None:
    """Registers an empty module `name` with `attrs` unless the real one imports."""
    try:
        importlib.import_module(name)
    except ImportError:
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        sys.modules[name] = module


def _unused(what: str):
    def fail(*args, **kwargs):
        raise RuntimeError(f"{what} is stubbed in this benchmark; TF-CLIP's model never calls it.")

    return fail


def official_config(root: pathlib.Path, height: int, width: int, clip_len: int):
    """The checkout's `configs/vit_clipreid.yml`, with the `config/defaults.py` values the model,
    loss and optimizer read that the yml leaves out, at this benchmark's frame size and T."""
    import yaml  # noqa: PLC0415

    tree = yaml.safe_load((root / "configs" / "vit_clipreid.yml").read_text())
    model = tree["MODEL"]
    for key, default in (("COS_LAYER", False), ("NECK", "bnneck"), ("SIE_VIEW", False)):
        model.setdefault(key, default)
    tree["SOLVER"]["STAGE2"].setdefault("CENTER_LR", 0.5)
    tree["SOLVER"].setdefault("MARGIN", 0.3)
    tree["INPUT"].update(SIZE_TRAIN=[height, width], SIZE_TEST=[height, width], SEQ_LEN=clip_len)
    return _namespace(tree)


def import_official(root: pathlib.Path) -> dict:
    """The official modules the benchmark runs, imported from the checkout at `root`."""
    import torch  # noqa: PLC0415

    if not (root / "model" / "make_model_clipreid.py").exists():
        raise SystemExit(
            f"--official {root}: no model/make_model_clipreid.py (a TF-CLIP checkout)."
        )
    _stub_missing("timm")
    _stub_missing("timm.models")
    _stub_missing(
        "timm.models.layers",
        DropPath=_unused("timm DropPath"),
        to_2tuple=_unused("timm to_2tuple"),
        trunc_normal_=torch.nn.init.trunc_normal_,
    )
    _stub_missing("torchvision")
    transforms = ("Compose", "Resize", "CenterCrop", "ToTensor", "Normalize")
    _stub_missing("torchvision.transforms", **{n: _unused(f"torchvision {n}") for n in transforms})
    try:
        import ftfy  # noqa: F401, PLC0415
        import regex  # noqa: F401, PLC0415
    except ImportError:
        tokenizer = type("SimpleTokenizer", (), {"__init__": lambda self, *a, **k: None})
        sys.modules["model.clip.simple_tokenizer"] = types.SimpleNamespace(
            SimpleTokenizer=tokenizer
        )
    sys.path.insert(0, str(root))
    names = {
        "make_model": "model.make_model_clipreid",
        "clip_model": "model.clip.model",
        "softmax_loss": "loss.softmax_loss",
        "triplet_loss": "loss.triplet_loss",
        "center_loss": "loss.center_loss",
        "optimizer": "solver.make_optimizer_prompt",
    }
    return {key: importlib.import_module(name) for key, name in names.items()}


def official_net(modules: dict, cfg, num_classes: int, num_cameras: int):
    """`build_transformer` with a random float32 CLIP on the CPU in place of the download."""
    clip_model = modules["clip_model"]

    def load_clip_to_cpu(name, h_resolution, w_resolution, stride):
        assert name == "ViT-B-16", name
        clip = clip_model.CLIP(
            embed_dim=OUTPUT_DIM,
            image_resolution=224,
            vision_layers=12,
            vision_width=768,
            vision_patch_size=16,
            vision_stride_size=stride,
            context_length=8,
            vocab_size=16,
            transformer_width=64,
            transformer_heads=1,
            transformer_layers=1,
            h_resolution=h_resolution,
            w_resolution=w_resolution,
        ).float()
        clip.to = lambda *args, **kwargs: clip  # The official code moves it to "cuda".
        return clip

    modules["make_model"].load_clip_to_cpu = load_clip_to_cpu
    return modules["make_model"].build_transformer(num_classes, num_cameras, 1, cfg)


def official_train_parts(modules: dict, cfg, net, num_classes: int, clip_len: int):
    """(loss(outputs, labels), optimizer): the official loss terms and `make_optimizer_2stage`."""
    xent = modules["softmax_loss"].CrossEntropyLabelSmooth(num_classes, use_gpu=False)
    triplet = modules["triplet_loss"].TripletLoss(cfg.SOLVER.MARGIN)
    m = cfg.MODEL

    def loss(outputs, labels):
        score, feat, logits = outputs
        id_loss = sum(xent(s, labels) for s in score[0:3])
        tri_loss = sum(triplet(f, labels)[0] for f in feat)
        total = m.ID_LOSS_WEIGHT * id_loss + m.TRIPLET_LOSS_WEIGHT * tri_loss
        total = total + m.I2T_LOSS_WEIGHT * xent(logits, labels)
        frame_labels = labels.unsqueeze(1).expand(-1, clip_len).reshape(-1)
        return total + xent(score[3], frame_labels) / clip_len

    center = modules["center_loss"].CenterLoss(num_classes, feat_dim=2048, use_gpu=False)
    optimizer, _ = modules["optimizer"].make_optimizer_2stage(cfg, net, center)
    return loss, optimizer


def official_state_dict(net) -> dict:
    """The tensors our TF-CLIP has: without what the official forward never uses."""
    unused = ("classifier_proj_temp2.", "SSP.alpha", "SSP.norm.")
    return {k: v for k, v in net.state_dict().items() if not k.startswith(unused)}


# ------------------------------------------------------------------------------ the reference


def reference_parts(args, num_cameras: int):
    """(net, loss, optimizer) of `tests/torch_tfclip.py` at the benchmark's size."""
    import torch  # noqa: PLC0415
    import torch_tfclip  # noqa: PLC0415  (tests/)

    grid = (args.height // 16, args.width // 16)
    heads = args.width_channels // 64
    net = torch_tfclip.TFClip(
        args.num_classes,
        num_cameras,
        grid,
        args.clip_len,
        width=args.width_channels,
        layers=args.layers,
        heads=heads,
        out=OUTPUT_DIM,
        ssp_heads=OUTPUT_DIM // 64,
    )

    def loss(outputs, labels):
        return torch_tfclip.tfclip_loss(*outputs, labels, args.clip_len)

    optimizer = torch.optim.Adam(torch_tfclip.param_groups(net, 5e-6))
    return net, loss, optimizer


# ------------------------------------------------------------------------------------ sides


@contextlib.contextmanager
def residual_grad_barrier():
    """An experiment on the JAX side only (`--residual_grad_barrier`), not the project's model:
    while active, each CLIP encoder block's output passes its cotangent through a conditional
    on a runtime value, across which XLA fuses nothing, so that the residual stream's gradient
    is computed once per block. Without it XLA:CPU fuses the whole chain of that gradient from
    the last block down into each LayerNorm's transposed weight-gradient operand (the fusions
    take 7, 14, ..., 171 inputs over the 12 blocks): work quadratic in the depth. Same values."""
    import jax  # noqa: PLC0415

    from vreid_jax.models import clip_vit  # noqa: PLC0415

    @jax.custom_vjp
    def materialised(x):
        return x

    def backward(_, g):
        first = g.reshape(-1)[0]
        return (jax.lax.cond(first == first, lambda v: v, lambda v: v + 0.0, g),)

    materialised.defvjp(lambda x: (x, None), backward)
    block = clip_vit.ResidualAttentionBlock

    class Block(block):
        def __call__(self, x):
            return materialised(super().__call__(x))

    clip_vit.ResidualAttentionBlock = Block
    try:
        yield
    finally:
        clip_vit.ResidualAttentionBlock = block


def jax_side(args, net_state: dict, num_cameras: int, memory, clips, labels, cameras):
    """Closures (train step -> loss, eval -> descriptors), the jitted functions and the parts the
    profile needs, over the project's TF-CLIP with the torch model's weights."""
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415
    import torch_mapping  # noqa: PLC0415  (tests/)
    import torch_tfclip  # noqa: PLC0415

    from configs import recipe  # noqa: PLC0415
    from vreid_jax import models  # noqa: PLC0415
    from vreid_jax.evaluation import features  # noqa: PLC0415
    from vreid_jax.training import kinds, loop  # noqa: PLC0415
    from vreid_jax.training import state as state_lib  # noqa: PLC0415

    config = recipe.make("tfclip", "mars", None)
    config.model.tfclip.update(
        width=args.width_channels,
        layers=args.layers,
        heads=args.width_channels // 64,
        output_dim=OUTPUT_DIM,
        num_cameras=num_cameras,
        ssp_dropout=0.0,
    )
    config.input.update(clip_len=args.clip_len, height=args.height, width=args.width)
    module = models.build_model(config.model, args.num_classes)
    spec = jnp.zeros((1, args.clip_len, args.height, args.width, 3), jnp.float32)
    target = jax.eval_shape(lambda: module.init(jax.random.key(0), spec))
    target["batch_stats"] = {k: v for k, v in target["batch_stats"].items() if k != "clip_memory"}
    shim = types.SimpleNamespace(state_dict=lambda: net_state)
    variables = torch_mapping.as_flax_variables(torch_tfclip.to_flax_flat(shim, target))
    variables["batch_stats"]["clip_memory"] = memory

    kind = kinds.kind_for("tfclip")
    tx, lr_fn = kind.optimizer(lambda: variables["params"], config, 1000)
    batch = {
        "clips": jnp.asarray(clips),
        "labels": jnp.asarray(labels),
        "cameras": jnp.asarray(cameras),
    }

    def make_step():
        """A jitted train step on its own copy of the state, and its closure (-> loss)."""
        step_fn = jax.jit(
            functools.partial(
                loop.train_step,
                model=module,
                tx=tx,
                lr_fn=lr_fn,
                loss_config=config.loss,
                seed=0,
                loss=kind.loss,
            ),
            donate_argnums=0,
        )
        state = [
            state_lib.TrainState(
                step=jnp.zeros((), jnp.int32),
                params=jax.tree.map(jnp.array, variables["params"]),
                batch_stats=jax.tree.map(jnp.array, variables["batch_stats"]),
                opt_state=tx.init(variables["params"]),
            )
        ]

        def step():
            state[0], metrics = step_fn(state[0], batch)
            return float(metrics["loss"])  # Blocks until the step is done.

        return step, step_fn, state

    step, step_fn, state = make_step()
    frozen = jax.tree.map(jnp.array, variables)
    variant = None
    if args.residual_grad_barrier:
        variant, variant_fn, _ = make_step()
        with residual_grad_barrier():
            variant()  # Traced (and compiled) with the barrier in place.
    clip_fn = jax.jit(functools.partial(features.clip_features, module))

    def extract():
        return jax.block_until_ready(clip_fn(frozen, batch["clips"], batch["cameras"]))

    compiled = {"train_step": step_fn, "clip_features": clip_fn}
    if variant:
        compiled["train_step_residual_grad_barrier"] = variant_fn
    return step, extract, compiled, (module, frozen, tx, batch, state), variant


def torch_side(net, loss_fn, optimizer, frames, labels, cameras, memory, official: bool):
    """Closures (train step -> loss, eval -> descriptors) over the torch model."""
    import torch  # noqa: PLC0415

    x = torch.from_numpy(frames)
    y = torch.from_numpy(labels).long()
    cam = torch.from_numpy(cameras).long()
    mem = torch.from_numpy(memory)

    def forward(train: bool):
        if official:
            return net(x=x, cam_label=cam, text_features2=mem if train else None)
        return net(x, cam, mem if train else None)

    def step():
        net.train()
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(forward(True), y)
        loss.backward()
        optimizer.step()
        return loss.item()

    def extract():
        net.eval()
        with torch.no_grad():
            return forward(False)

    return step, extract, (x, cam)


def components(args, net, torch_optimizer, torch_inputs, jax_parts) -> dict:
    """Name -> (JAX fn, torch fn): the encoder, TMD and the optimizer alone (`--profile`)."""
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415
    import torch  # noqa: PLC0415

    from vreid_jax.data import pixels  # noqa: PLC0415

    module, variables, tx, batch, _ = jax_parts
    x, cam = torch_inputs
    b, t = args.batch, args.clip_len
    params, stats = variables["params"], variables["batch_stats"]

    def jax_encode(p, clips, cameras):
        return module.apply(
            {"params": p, "batch_stats": stats},
            pixels.normalize(clips),
            cameras,
            method=lambda m, c, k: m._encode(c, k),
        )

    tokens, _ = jax_encode(params, batch["clips"], batch["cameras"])  # [B, T, L, width]
    probe = np.random.default_rng(1).normal(size=tokens.shape).astype(np.float32)
    encode = jax.jit(jax_encode)
    encode_grad = jax.jit(jax.grad(lambda p, c, k: jnp.sum(jax_encode(p, c, k)[0] * probe)))
    tmd = jax.jit(
        lambda p, tok: module.apply(
            {"params": p, "batch_stats": stats}, tok, method=lambda m, z: m.TMD(z)
        )
    )
    grads = jax.tree.map(jnp.ones_like, params)
    opt = [jax.tree.map(jnp.array, params), tx.init(params)]
    opt_fn = jax.jit(lambda p, o, g: tx.update(g, o, p), donate_argnums=(1,))

    def jax_opt():
        _, opt[1] = opt_fn(opt[0], opt[1], grads)
        jax.block_until_ready(opt[1])

    # torch: the official encoder call (`[B * T, 3, H, W]`, camera embedding per frame).
    frames = x.view(-1, *x.shape[2:])
    cv = net.cv_embed[cam].repeat((1, t)).view(b * t, -1)
    torch_probe = torch.from_numpy(probe.reshape(b * t, *probe.shape[2:]))
    torch_tokens = net.image_encoder(frames, cv)[0].detach()

    def torch_encode():
        with torch.no_grad():
            net.image_encoder(frames, cv)

    def torch_encode_grad():
        net.zero_grad(set_to_none=True)
        (net.image_encoder(frames, cv.detach())[0] * torch_probe).sum().backward()

    def torch_tmd():
        with torch.no_grad():
            net.TMD(torch_tokens.permute(1, 0, 2))

    for p in net.parameters():
        if p.requires_grad:
            p.grad = torch.ones_like(p)
    block = jax.block_until_ready
    return {
        "encoder_forward": (
            lambda: block(encode(params, batch["clips"], batch["cameras"])),
            torch_encode,
        ),
        "encoder_forward_backward": (
            lambda: block(encode_grad(params, batch["clips"], batch["cameras"])),
            torch_encode_grad,
        ),
        "tmd_forward": (lambda: block(tmd(params, tokens)), torch_tmd),
        "optimizer_update": (jax_opt, torch_optimizer.step),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", default="", help="A checkout of AsuradaYuci/TF-CLIP.")
    parser.add_argument("--cores", type=int, default=0, help="Cores to pin to (0 = all allowed).")
    parser.add_argument("--batch", type=int, default=4, help="Tracklets per batch (P x 2).")
    parser.add_argument("--clip_len", type=int, default=8)
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--width_channels", type=int, default=768, help="Encoder width.")
    parser.add_argument("--layers", type=int, default=12, help="Encoder blocks.")
    parser.add_argument("--num_classes", type=int, default=625, help="625 = MARS train ids.")
    parser.add_argument("--num_cameras", type=int, default=6, help="6 = MARS cameras.")
    parser.add_argument("--modes", default="train,eval", help="Comma-separated: train, eval.")
    parser.add_argument("--rounds", type=int, default=5, help="Alternating rounds.")
    parser.add_argument("--steps", type=int, default=2, help="Timed calls per side per round.")
    parser.add_argument("--pause", type=float, default=0.2, help="Seconds idle before a block.")
    parser.add_argument("--max_foreign", type=float, default=0.1, help="See common.alternate.")
    parser.add_argument("--profile", action="store_true", help="Per-component timings too.")
    parser.add_argument(
        "--residual_grad_barrier",
        action="store_true",
        help="Also time the JAX step with the experiment `residual_grad_barrier` (train only).",
    )
    parser.add_argument("--label", default="", help="Extra key part.")
    parser.add_argument("--out", default="", help="Result JSON (default: results/...json).")
    args = parser.parse_args()
    official = bool(args.official)
    if official and (args.width_channels, args.layers) != (768, 12):
        raise SystemExit("The official TF-CLIP is ViT-B/16 only: --width_channels 768 --layers 12.")
    if args.batch % 2:
        raise SystemExit("--batch must be even: P identities x 2 tracklets (the triplet losses).")
    cores = common.pin_cores(args.cores or len(os.sched_getaffinity(0)))
    import numpy as np  # noqa: PLC0415
    import torch  # noqa: PLC0415

    sys.path.insert(0, str(common.REPO / "tests"))
    torch.set_num_threads(len(cores))
    torch.manual_seed(0)
    from vreid_jax.data import pixels  # noqa: PLC0415

    if official:
        root = pathlib.Path(args.official).resolve()
        modules = import_official(root)
        cfg = official_config(root, args.height, args.width, args.clip_len)
        net = official_net(modules, cfg, args.num_classes, args.num_cameras)
        for m in net.modules():  # SSP's dropout, off on both sides (see the docstring).
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        loss_fn, optimizer = official_train_parts(
            modules, cfg, net, args.num_classes, args.clip_len
        )
        net_state = official_state_dict(net)
    else:
        net, loss_fn, optimizer = reference_parts(args, args.num_cameras)
        net_state = net.state_dict()

    rng = np.random.default_rng(0)
    shape = (args.batch, args.clip_len, args.height, args.width, 3)
    clips = rng.integers(0, 256, shape, dtype=np.uint8)
    labels = (np.arange(args.batch) // 2 % args.num_classes).astype(np.int32)  # P x K, K = 2
    cameras = rng.integers(0, args.num_cameras, args.batch).astype(np.int32)
    memory = rng.normal(size=(args.num_classes, OUTPUT_DIM)).astype(np.float32)
    frames = np.asarray(pixels.normalize(clips)).transpose(0, 1, 4, 2, 3)
    frames = np.ascontiguousarray(frames)  # [B, T, 3, H, W], what both torch models take

    jax_step, jax_extract, compiled, jax_parts, jax_variant = jax_side(
        args, net_state, args.num_cameras, memory, clips, labels, cameras
    )
    torch_step, torch_extract, torch_inputs = torch_side(
        net, loss_fn, optimizer, frames, labels, cameras, memory, official
    )
    checks = common.first_calls(jax_extract, torch_extract, jax_step, torch_step)

    blocks = {}
    if "train" in args.modes:
        blocks |= {"jax/train": jax_step, "torch/train": torch_step}
        if jax_variant:
            blocks["jax_residual_grad_barrier/train"] = jax_variant
    if "eval" in args.modes:
        blocks |= {"jax/eval": jax_extract, "torch/eval": torch_extract}
    if args.profile:
        for name, (jax_fn, torch_fn) in components(
            args, net, optimizer, torch_inputs, jax_parts
        ).items():
            jax_fn()  # Compiles.
            blocks |= {f"jax/{name}": jax_fn, f"torch/{name}": torch_fn}
    run = common.alternate(blocks, args.rounds, args.steps, cores, args.pause, args.max_foreign)

    peer = "official" if official else "reference"
    size = f"batch{args.batch}x{args.clip_len}/{args.height}x{args.width}"
    size += f"/vit_w{args.width_channels}_l{args.layers}"
    common_record = {
        "peer": peer,
        "peer_code": "AsuradaYuci/TF-CLIP (run from a checkout)"
        if official
        else "tests/torch_tfclip.py",
        "batch": args.batch,
        "clip": [args.clip_len, args.height, args.width, 3],
        "encoder": {"width": args.width_channels, "layers": args.layers, "patch": 16},
        "num_classes": args.num_classes,
        "dtype": "float32",
        "cores": cores,
        **common.run_facts(run, checks, compiled, args.steps),
    }
    if args.profile:
        profile = {}
        for name in blocks:
            side, part = name.split("/")
            if part not in ("train", "eval"):
                profile.setdefault(part, {})[f"{side}_s"] = common.summarise(run, name)["median"]
        for row in profile.values():
            row["ratio_torch_over_jax"] = round(row["torch_s"] / row["jax_s"], 3)
        common_record["components"] = profile
        for part, row in profile.items():
            print(
                f"{part:28s} JAX {row['jax_s']:8.4f} s  torch {row['torch_s']:8.4f} s  "
                f"torch/JAX {row['ratio_torch_over_jax']}"
            )
    records = common.framework_records(run, args.batch * args.clip_len, common_record)
    for mode, record in records.items():
        variant = f"jax_residual_grad_barrier/{mode}"
        if variant in blocks:
            barrier_s = common.summarise(run, variant)
            record["jax_residual_grad_barrier_s"] = barrier_s
            record["ratio_torch_over_jax_residual_grad_barrier"] = round(
                record["torch_s"]["median"] / barrier_s["median"], 3
            )
            print(
                f"  with --residual_grad_barrier: JAX {barrier_s['median']:.4f} s "
                f"[{barrier_s['min']:.4f}-{barrier_s['max']:.4f}], ratio torch/JAX "
                f"{record['ratio_torch_over_jax_residual_grad_barrier']}"
            )
        key = f"{peer}/{mode}/{size}/{len(cores)}cores" + (f"/{args.label}" if args.label else "")
        written = common.merge_result("tfclip_vs_official", key, record, args.out)
        print(common.framework_summary("tfclip_vs_official", key, record, run, written))


if __name__ == "__main__":
    main()
