r"""Converts an official TF-CLIP training checkpoint into a workdir, so that TF-CLIP's released
weights are evaluated, extracted, searched, relinked and exported here without training.

  python -m vreid_jax.deploy.convert_tfclip --weights best_model.pth.tar \
      --config configs/tfclip_mars.py --workdir runs/tfclip_mars_official
  python -m vreid_jax.main --config configs/tfclip_mars.py --workdir runs/tfclip_mars_official \
      --config.data.data_dir=DATA --config.mode=eval

The file is what the official training saves (`AsuradaYuci/TF-CLIP`; file:line below): `torch.save`
of the model's `state_dict()` as `checkpoint_ep.pth.tar`, copied to `best_model.pth.tar`
(`processor/processor_clipreid_stage2.py`:234, `utils/iotools.py`:42-46). It is read with
`torch.load(weights_only=True)` (the `torch` extra). Its names are `build_transformer`'s
(`model/make_model_clipreid.py`:123-193):
- `image_encoder.*`: OpenAI's `VisionTransformer` (`clip_model.visual`, 171), read and mapped as
  `convert_clip` reads OpenAI's files; its positional embedding already holds the training
  frames' grid (resized when the model was built, `model/clip/model.py`:436: 16x8 + 1 rows at
  256x128); the official build stores most of its weights in float16 (`convert_weights`, 445):
  they become float32 exactly;
- `cv_embed`: one row per training camera (177-180; cameras x views with `SIE_VIEW`, and the video
  sets have one view), `TMD.resblocks.0.*` (one block, 193), `SSP.*`, the four `bottleneck*`
  BatchNorm1d with their running statistics and the bias-free `classifier2`, `classifier_proj`,
  `classifier_proj_temp`.
A file saved from a `DistributedDataParallel` run (stage 2 wraps the model on several GPUs,
`processor/processor_clipreid_stage2.py`:37-39) has a `module.` prefix, which is dropped, as the
official `load_param` drops it (`model/make_model_clipreid.py`:309). The model keeps no text
encoder and no prompt learner (of the CLIP model only `visual` is kept, 168-171), and the
CLIP-Memory is no tensor of the model (it is computed before training and passed to `forward`, 197
and 284): neither is in the file.

Read off the shapes: the encoder's width, layers, patch size and output dim, the number of
identities (`classifier2.weight` rows) and of cameras (`cv_embed` rows). Not in the file, so taken
from `--config` (TF-CLIP's recipe for the dataset the checkpoint was trained on): the heads
(`config.model.tfclip.heads`, 12 for ViT-B/16; TMD has as many, 193), the frame size
(`config.input.height` and `width`, 256x128), which must give the positional embedding's token
count (a count fits several aspect ratios: it is checked, never guessed), the clip length
(`config.input.clip_len`, SEQ_LEN 8) and `config.model.tfclip.sie_coe` (SIE_COE 1.0 in
`configs/vit_clipreid.yml`:13; 3.0 is `config/defaults.py`'s default). Override them with
`--config.key=value` as for training.

Checked before anything is written: every variable of the Flax model comes from the file (but the
CLIP-Memory), and every key of the file is used once or is one of the entries the official forward
never reads, whose shapes are checked before they are dropped: `classifier_proj_temp2` (147-148),
SSP's `alpha` and `norm` (392, 408) and BatchNorm's `num_batches_tracked`. An unreadable file, an
unknown or missing key, a misshaped array or a frame size that does not fit stops the conversion
with one line naming the file, the key and both shapes, and nothing is written.

Written in one step (a temporary folder renamed onto `--workdir`, which must be new or empty):
`config.json`, the `--config` with the file's model settings, as a training run records it, and
`checkpoints/0`, the model variables with the meta record every checkpoint has, so that
`trained_model.load` rebuilds the model as it does for a trained run. The CLIP-Memory
(`batch_stats/clip_memory`) is zeros: evaluation never reads it (SSP and the memory logits run in
training only, 283-289). The meta record's `converted` entry names the source file, and the
training loop refuses such a checkpoint (`training.loop.restore_or_keep`): it holds no memory and no
optimizer state, and a memory recomputed from the trained encoder would not be TF-CLIP's, which
the frozen pretrained CLIP computes before the first step. The dataset's evaluation gives each
tracklet its camera, as the official test does; your own tracklets (`vreid-extract`) and exported
models get the mean camera embedding (`registry.UNKNOWN_CAMERAS`, recorded in their provenance
with the source file).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import types

import numpy as np
from absl import flags
from ml_collections import config_flags

from vreid_jax import cli
from vreid_jax.models import registry

FLAGS = flags.FLAGS
COMMAND = "python -m vreid_jax.deploy.convert_tfclip"
_ENCODER = "image_encoder."
# The keys that say a file is a TF-CLIP checkpoint (`model/make_model_clipreid.py`:141, 171, 177).
_MARKERS = (f"{_ENCODER}conv1.weight", "cv_embed", "classifier2.weight")
# Flax modules named `<container>_<i>` for torch's `nn.Sequential` / `nn.ModuleList` children
# `<container>.<i>`: SSP's projections, decoder layers and MLP (`model/make_model_clipreid.py`:
# 373-407).
_INDEXED = re.compile(r"(memory_proj|text_proj|out_proj|decoder|mlp)_(\d+)")


def _error(message: str):
    from vreid_jax.models.pretrained import PretrainedWeightsError  # noqa: PLC0415  (jax)

    return PretrainedWeightsError(message)


def official_name(collection: str, path: tuple[str, ...]) -> tuple[str, bool]:
    """The official state_dict name of the Flax variable `collection/path` of `tfclip.TFClipReid`
    outside the image encoder, and whether torch stores it transposed (a Linear weight)."""
    *modules, leaf = path
    if collection == "batch_stats":  # A BatchNorm1d neck's running statistics.
        return f"{modules[0]}.running_{leaf}", False
    if modules == ["camera"]:
        return "cv_embed", False
    if modules[0] == "TMD":
        # One block in an nn.Sequential (115-116); its MLP is a Sequential of named layers (68-72).
        mlp = ["mlp"] if modules[1] in ("c_fc", "c_proj") else []
        modules = ["TMD", "resblocks", "0", *mlp, *modules[1:]]
    parts = []
    for module in modules:
        indexed = _INDEXED.fullmatch(module)
        parts += [indexed[1], indexed[2]] if indexed else [module]
    if parts[-1] == "in_proj":  # nn.MultiheadAttention holds its fused projection itself.
        kind = "weight" if leaf == "kernel" else "bias"
        return ".".join(parts[:-1]) + f".in_proj_{kind}", leaf == "kernel"
    return ".".join(parts) + (".bias" if leaf == "bias" else ".weight"), leaf == "kernel"


def unused_shapes(num_classes: int, width: int, output_dim: int) -> dict[str, tuple[int, ...]]:
    """The official state_dict's entries that its forward never reads, and their shapes."""
    from vreid_jax.models import tfclip  # noqa: PLC0415  (flax)

    shapes = {f"{neck}.num_batches_tracked": () for neck in tfclip.NECKS}
    shapes["classifier_proj_temp2.weight"] = (num_classes, width)
    shapes |= {f"SSP.{name}": (output_dim,) for name in ("alpha", "norm.weight", "norm.bias")}
    return shapes


# ------------------------------------------------------------------------------ reading the file


def _recognise(arrays: dict[str, np.ndarray], path: str) -> None:
    if all(key in arrays for key in _MARKERS):
        return
    clip_keys = ("visual.conv1.weight", "vision_model.embeddings.patch_embedding.weight")
    if any(key in arrays for key in clip_keys):
        raise _error(
            f"{path}: a CLIP image encoder, not a TF-CLIP training checkpoint: convert it with "
            "`python -m vreid_jax.models.convert_clip` to start a training run from it."
        )
    missing = [key for key in _MARKERS if key not in arrays]
    sample = ", ".join(repr(k) for k in list(arrays)[:5]) or "none"
    raise _error(
        f"{path}: not a TF-CLIP training checkpoint: no key {missing[0]!r} (first keys: {sample})."
    )


def _shape(arrays, key: str, path: str, ndim: int) -> tuple[int, ...]:
    if key not in arrays:
        raise _error(f"{path}: no key {key!r}.")
    shape = tuple(arrays[key].shape)
    if len(shape) != ndim:
        raise _error(f"{path}: key {key!r} has shape {shape}; expected {ndim} dimensions.")
    return shape


def model_config(arrays, path: str, config):
    """`config` with the checkpoint's model settings (`config.model.tfclip`, read off the shapes),
    every one it cannot read checked against the file; and `(num_classes, architecture)`."""
    from vreid_jax.models import clip_pretrained, clip_vit, convert_clip  # noqa: PLC0415  (jax)

    c = config.model.tfclip
    if config.model.name != "tfclip":
        raise _error(
            f"{path}: --config is a {config.model.name!r} config; a TF-CLIP checkpoint needs "
            "TF-CLIP's recipe for its dataset (configs/tfclip_<dataset>.py)."
        )
    layout = convert_clip.Layout(arrays, openai_prefix=_ENCODER)
    width = _shape(arrays, f"{_ENCODER}conv1.weight", path, 4)[0]
    if width % c.heads:
        raise _error(
            f"{path}: the encoder's width {width} is not a multiple of config.model.tfclip.heads="
            f"{c.heads}: set --config.model.tfclip.heads (OpenAI's CLIP has width // 64)."
        )
    dimensions, rows = convert_clip.encoder_dimensions(arrays, layout, path, c.heads)
    if dimensions["output_dim"] is None:
        raise _error(f"{path}: no key '{_ENCODER}proj'.")
    height, frame_width = config.input.height, config.input.width
    grid = clip_vit.patch_grid(height, frame_width, dimensions["patch_size"])
    if rows != 1 + grid[0] * grid[1]:
        raise _error(
            f"{path}: key '{_ENCODER}positional_embedding' has shape "
            f"{tuple(arrays[_ENCODER + 'positional_embedding'].shape)}, but {height}x{frame_width} "
            f"frames ({grid[0]}x{grid[1]} patches of {dimensions['patch_size']}) need "
            f"{(1 + grid[0] * grid[1], width)}. Set --config.input.height and --config.input.width "
            f"to the checkpoint's training size (INPUT.SIZE_TRAIN): {_sizes(rows - 1, dimensions)}."
        )
    num_classes = _shape(arrays, "classifier2.weight", path, 2)[0]
    num_cameras = _shape(arrays, "cv_embed", path, 2)[0]
    with config.unlocked():
        c.update({k: v for k, v in dimensions.items() if k != "heads"}, num_cameras=num_cameras)
    registry.check_config(config.model)
    architecture = clip_pretrained.ClipVitArchitecture(**dimensions, grid=grid)
    return config, num_classes, architecture


def _sizes(tokens: int, dimensions) -> str:
    """The frame sizes (portrait first) whose patch grid has `tokens` tokens."""
    patch = dimensions["patch_size"]
    grids = [(tokens // w, w) for w in range(1, int(tokens**0.5) + 1) if tokens % w == 0]
    return ", ".join(f"{h * patch}x{w * patch}" for h, w in reversed(grids)) + " fit its tokens"


# ------------------------------------------------------------------------------ the variables


def variables_from(arrays, path: str, model, config, architecture) -> tuple[dict, dict]:
    """The model's variables `{'params', 'batch_stats'}` (numpy, float32) from the file's arrays,
    the CLIP-Memory zeros; and `{'used': n, 'unused': [keys]}`.

    Raises:
      PretrainedWeightsError: naming the file, the key and both shapes for a misshaped array, a
        variable the file does not hold, or a key that is none of the model's.
    """
    import jax  # noqa: PLC0415
    from flax import traverse_util  # noqa: PLC0415

    from vreid_jax.models import clip_pretrained, convert_clip  # noqa: PLC0415  (jax)
    from vreid_jax.training import state as state_lib  # noqa: PLC0415

    target = jax.eval_shape(
        lambda: state_lib.init_variables(model, state_lib.init_clips(config.input), 0)
    )
    layout = convert_clip.Layout(arrays, openai_prefix=_ENCODER)
    encoder, used = convert_clip.gather(arrays, layout, architecture, path)
    flat = {
        ("params", "image_encoder", *leaf): value
        for leaf, value in clip_pretrained.convert(
            encoder, target["params"]["image_encoder"], source=path
        ).items()
    }
    for key, leaf in traverse_util.flatten_dict(target).items():
        if key[1] == "image_encoder":
            continue
        if key == ("batch_stats", "clip_memory"):
            flat[key] = np.zeros(leaf.shape, np.float32)  # Not in the file; evaluation needs none.
            continue
        name, transposed = official_name(key[0], key[1:])
        want = tuple(leaf.shape)[::-1] if transposed else tuple(leaf.shape)
        have = _shape(arrays, name, path, len(want))
        if have != want:
            raise _error(
                f"{path}: key {name!r} has shape {have}, but the model's {'/'.join(key)} needs "
                f"{want} (torch layout)."
            )
        flat[key] = np.asarray(arrays[name].T if transposed else arrays[name], np.float32)
        used.add(name)
    c = config.model.tfclip
    unused = unused_shapes(model.num_classes, c.width, c.output_dim)
    for name, want in unused.items():
        have = _shape(arrays, name, path, len(want))
        if have != want:
            raise _error(f"{path}: key {name!r} has shape {have}; the official model's is {want}.")
    unknown = sorted(set(arrays) - used - set(unused))
    if unknown:
        raise _error(
            f"{path}: key {unknown[0]!r} (shape {tuple(arrays[unknown[0]].shape)}) is not part of "
            f"TF-CLIP ({len(unknown)} such keys)."
        )
    report = {"used": len(used), "unused": sorted(unused)}
    return traverse_util.unflatten_dict(flat), report


# ------------------------------------------------------------------------------ the workdir


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def convert(weights: str, config, workdir: str) -> str:
    """Validates `weights` as a TF-CLIP training checkpoint and writes the workdir; returns a
    summary."""
    from vreid_jax import checkpoint, files, models  # noqa: PLC0415  (jax)
    from vreid_jax.models import convert_clip  # noqa: PLC0415
    from vreid_jax.training import loop  # noqa: PLC0415

    if os.path.exists(workdir) and (not os.path.isdir(workdir) or os.listdir(workdir)):
        raise _error(f"--workdir {workdir} exists and is not empty: name a new folder.")
    arrays, container, _ = convert_clip.read_weights(weights)
    _recognise(arrays, weights)
    config, num_classes, architecture = model_config(
        arrays, weights, config.copy_and_resolve_references()
    )
    model = models.build_model(config.model, num_classes)
    variables, report = variables_from(arrays, weights, model, config, architecture)

    data = types.SimpleNamespace(name=config.data.name, num_classes=num_classes)
    meta = loop.checkpoint_meta(config, data)
    meta[checkpoint.CONVERTED] = {
        "weights": os.path.abspath(weights),
        "sha256": _sha256(weights),
        "command": COMMAND,
    }
    with files.atomic_directory(workdir) as folder:
        files.write_json_atomic(os.path.join(folder, "config.json"), json.loads(config.to_json()))
        checkpoints = os.path.join(folder, "checkpoints")
        with checkpoint.Checkpointer(checkpoints, asynchronous=False) as ckpt:
            ckpt.save(0, variables, meta)
    c = config.model.tfclip
    return "\n".join(
        [
            f"read {weights}: a TF-CLIP training checkpoint ({container}); {architecture}.",
            f"{num_classes} identities, {c.num_cameras} cameras; from the config: {c.heads} "
            f"heads, clips of {config.input.clip_len} frames, sie_coe {c.sie_coe}, dataset "
            f"{config.data.name!r}.",
            f"{report['used']} arrays converted; dropped, as the official forward never reads "
            f"them: {', '.join(report['unused'])}. The CLIP-Memory is zeros (evaluation does not "
            "use it; training from this workdir is refused).",
            f"wrote {workdir}: config.json and checkpoints/0.",
        ]
    )


def _define_flags() -> None:
    flags.DEFINE_string("weights", None, "TF-CLIP's training checkpoint, e.g. best_model.pth.tar.")
    flags.DEFINE_string("workdir", None, "The workdir to write: a new or empty folder.")
    config_flags.DEFINE_config_file(
        "config",
        None,
        "TF-CLIP's recipe for the checkpoint's dataset, e.g. configs/tfclip_mars.py.",
        lock_config=True,
    )
    flags.mark_flags_as_required(["weights", "workdir", "config"])


def main(argv):
    cli.no_arguments(argv)
    registry.check_config(FLAGS.config.model)  # Before the heavy imports: fails in a second.
    cli.start(tensorflow=True)
    try:
        print(convert(FLAGS.weights, FLAGS.config, FLAGS.workdir))
    except OSError as e:  # A missing or unreadable file, a folder that cannot be written.
        sys.exit(f"error: {e}")


def cli_main():
    usage = f"{COMMAND} --weights FILE --config configs/tfclip_<dataset>.py --workdir DIR"
    cli.launch(main, _define_flags, flags_parser=cli.config_flags_parser(usage))


if __name__ == "__main__":
    cli_main()
