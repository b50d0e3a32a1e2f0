"""The models by name and `config.model`: the values its keys accept, its one check, the module
it builds.

Cheap to import (no jax, no flax: a model's modules load when it is built), so that
`config_lib.validate` checks `config.model` with the rest of the config before any work;
`build_model` then takes the config as checked.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import ml_collections
from absl import logging

from vreid_jax.errors import UserError

if TYPE_CHECKING:
    from flax import linen as nn

    from vreid_jax.models import layers, resnet

# torchvision's ResNet depths (`config.model.depth`) and their blocks per stage res2..res5; 18 and
# 34 have basic blocks, the others bottlenecks (`block_for`).
STAGE_SIZES = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}
# `config.model.last_stride`: 1 keeps a 16x8 map at 256x128 (AP3D, GLTR), 2 is torchvision's.
LAST_STRIDES = (1, 2)
# `config.model.dtype`: the compute dtype (parameters, BN statistics and losses stay float32).
DTYPES = ("float32", "bfloat16")
# `config.model.fast_cpu_ops` (any case): the CPU rewrites where JAX runs on the CPU, or forced on
# or off (`layers.ops_for`).
FAST_CPU_OPS = ("auto", "true", "false")
# `config.model.max_pool_ties`: PyTorch's rule (the first maximum gets the gradient) or JAX's (shared).
POOL_TIES = ("first", "split")
# NL3D's temporal convs: `config.model.temporal_padding` and `temporal_init` (`models.temporal`).
TEMPORAL_PADDINGS = ("zeros", "edge")
TEMPORAL_INITS = ("inflate", "center")
# config.model keys that choose how the model computes, not what it is: no parameter depends on them.
HOW_TO_COMPUTE = ("fast_cpu_ops", "max_pool_ties")
# `config.model.tfclip.neck_feat`: TF-CLIP's descriptor before the BNNecks (its recipe) or after.
NECK_FEATS = ("before", "after")
_NUM_STAGES = 4  # res2..res5


# ------------------------------------------------------------------------------- the one check


def check_config(model_config: ml_collections.ConfigDict) -> None:
    """Raises UserError naming the first key of `config.model` whose value cannot be built.

    The one check of `config.model` (`config_lib.validate` runs it with the rest of the config);
    everything below takes the config as checked.
    """
    m = model_config
    _check_choice("name", m.name, tuple(MODELS))
    _check_tfclip(m.tfclip)
    if m.depth not in STAGE_SIZES:
        raise UserError(
            f"config.model.depth={m.depth!r}: torchvision ResNets exist for depths "
            f"{sorted(STAGE_SIZES)} (18 and 34 with basic blocks, the others with bottlenecks); "
            "set config.model.stage_sizes for a custom number of blocks."
        )
    sizes = tuple(m.stage_sizes)
    if sizes and (len(sizes) != _NUM_STAGES or not all(_is_int(n) and n >= 1 for n in sizes)):
        raise UserError(
            f"config.model.stage_sizes={m.stage_sizes!r}: expected 4 positive block counts "
            "(res2..res5), or () for the standard layout of config.model.depth."
        )
    for key in ("width", "bottleneck_dim", "gltr_frame_dim"):
        if not _is_int(m[key]) or m[key] < 1:
            raise UserError(f"config.model.{key}={m[key]!r} must be a positive int.")
    if not 0.0 <= m.dropout < 1.0:
        raise UserError(f"config.model.dropout={m.dropout!r} must be in [0, 1).")
    _check_choice("last_stride", m.last_stride, LAST_STRIDES)
    _check_choice("dtype", m.dtype, DTYPES)
    _check_choice("fast_cpu_ops", str(m.fast_cpu_ops).lower(), FAST_CPU_OPS)
    _check_choice("max_pool_ties", m.max_pool_ties, POOL_TIES)
    kernel = m.temporal_kernel
    if not _is_int(kernel) or kernel < 1 or kernel % 2 == 0:
        raise UserError(f"config.model.temporal_kernel={kernel!r} must be a positive odd int.")
    _check_choice("temporal_padding", m.temporal_padding, TEMPORAL_PADDINGS)
    _check_choice("temporal_init", m.temporal_init, TEMPORAL_INITS)
    stages = tuple(m.temporal_stages)
    if any(s not in range(_NUM_STAGES) for s in stages):
        raise UserError(
            f"config.model.temporal_stages={stages!r}: expected stage indices 0 (res2) to 3 (res5)."
        )
    _check_block_positions("temporal_blocks", m.temporal_blocks)
    _check_block_positions("nonlocal_blocks", m.nonlocal_blocks)
    dilations = tuple(m.gltr_dilations)
    if (
        not dilations
        or len(set(dilations)) != len(dilations)
        or not all(_is_int(r) and r >= 1 for r in dilations)
    ):
        raise UserError(
            f"config.model.gltr_dilations={dilations!r}: expected distinct positive ints, e.g. "
            "(1, 2, 3) (official code) or (1, 2, 4) (paper)."
        )


def _check_tfclip(c: ml_collections.ConfigDict) -> None:
    """`config.model.tfclip`: TF-CLIP's encoder and heads (valid for every model, so that a recipe
    may switch models with one key)."""
    for key in ("width", "layers", "heads", "patch_size", "output_dim", "num_cameras"):
        if not _is_int(c[key]) or c[key] < 1:
            raise UserError(f"config.model.tfclip.{key}={c[key]!r} must be a positive int.")
    if c.width % c.heads:
        raise UserError(
            f"config.model.tfclip.width={c.width} is not a multiple of "
            f"config.model.tfclip.heads={c.heads}."
        )
    if c.output_dim % 64:
        raise UserError(
            f"config.model.tfclip.output_dim={c.output_dim} must be a multiple of 64 (SSP's "
            "heads are output_dim // 64, as in TF-CLIP)."
        )
    if not isinstance(c.sie_coe, (int, float)) or isinstance(c.sie_coe, bool):
        raise UserError(f"config.model.tfclip.sie_coe={c.sie_coe!r} must be a number.")
    if not 0.0 <= c.ssp_dropout < 1.0:
        raise UserError(f"config.model.tfclip.ssp_dropout={c.ssp_dropout!r} must be in [0, 1).")
    if c.neck_feat not in NECK_FEATS:
        raise UserError(
            f"config.model.tfclip.neck_feat={c.neck_feat!r}; expected one of {NECK_FEATS}."
        )


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_choice(key: str, value, choices) -> None:
    if value not in choices:
        raise UserError(f"config.model.{key}={value!r}; expected one of {tuple(choices)}.")


def _check_block_positions(key: str, value) -> None:
    """Per-stage 0-based block positions: one tuple of non-negative ints per stage res2..res5."""
    value = tuple(tuple(v) for v in value)
    if len(value) != _NUM_STAGES:
        raise UserError(
            f"config.model.{key}={value!r}: expected {_NUM_STAGES} tuples, one per stage "
            "(res2..res5)."
        )
    for stage, positions in enumerate(value):
        if not all(_is_int(p) and p >= 0 for p in positions):
            raise UserError(
                f"config.model.{key}: stage res{stage + 2} has {positions!r}; expected "
                "non-negative 0-based block indices."
            )


# ------------------------------------------------------------------------------- building


def block_for(depth: int) -> str:
    """The block type of a torchvision ResNet of `depth`: 'basic' below 50, else 'bottleneck'."""
    return "basic" if depth < 50 else "bottleneck"


def stage_sizes_for(depth: int, stage_sizes: Sequence[int] = ()) -> tuple[int, ...]:
    """`stage_sizes` if given, else the standard layout of `depth`."""
    return tuple(stage_sizes) or STAGE_SIZES[depth]


def resolve_blocks(
    key: str, value: Sequence[Sequence[int]], stage_sizes: Sequence[int], empty_means_all: bool
) -> tuple[tuple[int, ...], ...]:
    """Per-stage 0-based block positions `config.model.<key>` placed in stages of `stage_sizes`.

    Positions past the end of a stage are clipped to its last block (with a warning), so that the
    standard positions still place blocks in a shallow test network.

    Args:
      key: the config key, for the warning.
      value: one tuple of block indices per stage res2..res5.
      stage_sizes: blocks per stage.
      empty_means_all: an empty tuple selects every block of the stage (else none).

    Returns:
      One sorted tuple of distinct positions per stage.
    """
    resolved = []
    for stage, (positions, size) in enumerate(zip(value, stage_sizes, strict=True)):
        positions = tuple(positions)
        if not positions and empty_means_all:
            resolved.append(tuple(range(size)))
            continue
        clipped = tuple(sorted({min(p, size - 1) for p in positions}))
        if clipped != tuple(sorted(set(positions))):
            logging.warning(
                "config.model.%s: res%d has %d blocks; positions %s clipped to %s.",
                key,
                stage + 2,
                size,
                positions,
                clipped,
            )
        resolved.append(clipped)
    return tuple(resolved)


def build_backbone(model_config: ml_collections.ConfigDict, *, video: bool) -> resnet.ResNet:
    """The ResNet trunk; `video=True` adds NL3D's temporal convs and non-local blocks."""
    from vreid_jax.models import layers, resnet  # noqa: PLC0415  (flax: when a model is built)

    sizes = stage_sizes_for(model_config.depth, model_config.stage_sizes)
    kwargs = {}
    if video:
        stages = tuple(model_config.temporal_stages)
        blocks = resolve_blocks("temporal_blocks", model_config.temporal_blocks, sizes, True)
        kwargs = dict(
            temporal_blocks=tuple(b if s in stages else () for s, b in enumerate(blocks)),
            temporal_kernel=model_config.temporal_kernel,
            temporal_padding=model_config.temporal_padding,
            temporal_init=model_config.temporal_init,
            nonlocal_blocks=resolve_blocks(
                "nonlocal_blocks", model_config.nonlocal_blocks, sizes, False
            ),
            nonlocal_scale=bool(model_config.nonlocal_scale),
        )
    return resnet.ResNet(
        stage_sizes=sizes,
        block=block_for(model_config.depth),
        width=model_config.width,
        last_stride=model_config.last_stride,
        dtype=layers.compute_dtype(model_config.dtype),
        ops=ops_for(model_config),
        **kwargs,
    )


def ops_for(model_config: ml_collections.ConfigDict) -> layers.Ops:
    """How this platform computes convs and max-pools (`config.model.fast_cpu_ops`,
    `max_pool_ties`)."""
    from vreid_jax.models import layers  # noqa: PLC0415  (jax: when a model is built)

    return layers.ops_for(model_config.fast_cpu_ops, model_config.max_pool_ties)


def _build_nl3d(model_config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
    from vreid_jax.models import nl3d  # noqa: PLC0415  (flax: when a model is built)

    return nl3d.NL3D(
        backbone=build_backbone(model_config, video=True),
        num_classes=num_classes,
        bottleneck_dim=model_config.bottleneck_dim,
        dropout=model_config.dropout,
    )


def _build_gltr(model_config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
    from vreid_jax.models import gltr  # noqa: PLC0415  (flax: when a model is built)

    return gltr.GLTR(
        backbone=build_backbone(model_config, video=False),
        num_classes=num_classes,
        frame_dim=model_config.gltr_frame_dim,
        dilations=tuple(model_config.gltr_dilations),
        dropout=model_config.dropout,
    )


def _build_tfclip(model_config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
    from vreid_jax.models import layers, tfclip  # noqa: PLC0415  (flax: when a model is built)

    c = model_config.tfclip
    return tfclip.TFClipReid(
        num_classes=num_classes,
        num_cameras=c.num_cameras,
        width=c.width,
        layers=c.layers,
        heads=c.heads,
        patch_size=c.patch_size,
        output_dim=c.output_dim,
        sie_coe=float(c.sie_coe),
        ssp_dropout=float(c.ssp_dropout),
        neck_feat=c.neck_feat,
        dtype=layers.compute_dtype(model_config.dtype),
    )


# How evaluation turns a tracklet into one feature (`vreid_jax.evaluation.features` implements each):
# every T-frame clip through the model, features averaged over the clips...
CLIP_AVERAGE = "clip_average"
# ...or every frame through `encode_frames`, then `temporal_head` over the whole padded tracklet.
FRAME_SEQUENCE = "frame_sequence"

# Which weights `config.model.pretrained` holds (`vreid_jax.models.weights` overlays each): a
# torchvision ResNet from `convert_resnet50` on the backbone...
RESNET_WEIGHTS = "resnet"
# ...or a CLIP ViT from `convert_clip` on the image encoder.
CLIP_WEIGHTS = "clip_vit"

# How a model is trained (`vreid_jax.training.kinds` implements each; named here, not imported, as
# the training layer sits above the models): the project's loss on `(embeddings, logits)` and
# `config.optim`'s optimizer...
STANDARD_TRAINING = "standard"
# ...or TF-CLIP's: its loss sum, its Adam groups and schedule, the CLIP-Memory computed first.
TFCLIP_TRAINING = "tfclip"


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A registered model: how to build it, load its pretrained weights, train and evaluate it.

    The call convention, for every model: `module.apply(variables, clips, train=train, **inputs)`
    with clips `[B, T, H, W, 3]` (normalised floats) and `inputs = {'cameras': int32 [B]}` when
    `takes_cameras` (else empty). In evaluation (`train=False`) it returns a tuple whose first item
    is the features `[B, D]` (float32). In training (`train=True`, `mutable=['batch_stats']`) it
    returns what the training kind's loss takes: `(embeddings, logits)` for STANDARD_TRAINING.

    `variables` is `{'params', 'batch_stats'}`: 'params' is what the optimizer trains,
    'batch_stats' every other array of the model's state (batch-norm statistics, TF-CLIP's
    CLIP-Memory), checkpointed and restored with the params.

    Attributes:
      build: `(config.model, num_classes) -> module`.
      extraction: CLIP_AVERAGE or FRAME_SEQUENCE (the module then also has `encode_frames` and
        `temporal_head` methods).
      takes_cameras: the module takes each clip's 0-based camera (`inputs['cameras']`): training
        batches and evaluation clip batches then carry them (the tracklets' `camids`).
      training: STANDARD_TRAINING or TFCLIP_TRAINING: the loss `(outputs, labels, config.loss)
        -> (loss, terms)`, the optimizer `(abstract params, config, steps_per_epoch) -> (tx,
        lr_fn)` and the preparation before the first step (`vreid_jax.training.kinds`).
      pretrained: RESNET_WEIGHTS or CLIP_WEIGHTS: what `config.model.pretrained` holds and where
        it goes (`vreid_jax.models.weights.load_into`), over the model's own random init.
    """

    build: Callable[[ml_collections.ConfigDict, int], nn.Module]
    extraction: str
    takes_cameras: bool = False
    training: str = STANDARD_TRAINING
    pretrained: str = RESNET_WEIGHTS

    def __post_init__(self):
        if self.takes_cameras and self.extraction != CLIP_AVERAGE:
            raise ValueError("Only CLIP_AVERAGE extraction passes cameras to a model.")


# What a model that takes cameras does with inputs from cameras it never saw (the features of your
# own tracklets, `vreid-extract`, and exported models, which take no camera): recorded in their
# provenance. `vreid_jax.models.clip_vit.CameraEmbedding` implements it (cameras=None).
UNKNOWN_CAMERAS = (
    "Inputs from cameras the model never saw (extract, search, relink, export) get the mean of "
    "its training cameras' embeddings; the dataset's evaluation uses each tracklet's camera."
)


# Adding a model: its module in this package, a builder above, and one entry here.
MODELS: dict[str, ModelSpec] = {
    "nl3d": ModelSpec(build=_build_nl3d, extraction=CLIP_AVERAGE),
    "gltr": ModelSpec(build=_build_gltr, extraction=FRAME_SEQUENCE),
    "tfclip": ModelSpec(
        build=_build_tfclip,
        extraction=CLIP_AVERAGE,
        takes_cameras=True,
        training=TFCLIP_TRAINING,
        pretrained=CLIP_WEIGHTS,
    ),
}


def spec(name: str) -> ModelSpec:
    """The registry entry of model `name` (`config.model.name`, which `check_config` checked)."""
    return MODELS[name]


def build_model(model_config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
    """The model named by `model_config.name` with `num_classes` outputs (see `ModelSpec.build`)."""
    model_spec = spec(model_config.name)
    if num_classes < 1:
        raise ValueError(f"num_classes={num_classes} must be positive.")
    return model_spec.build(model_config, num_classes)
