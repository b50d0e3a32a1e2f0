"""Builds the configured model from `config.model`; every key is validated with a clear message."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import ml_collections
from absl import logging
from flax import linen as nn

from vreid_jax.errors import UserError
from vreid_jax.models import gltr, layers, nl3d, resnet, temporal


def resolve_blocks(
    key: str, value: Sequence[Sequence[int]], stage_sizes: Sequence[int], empty_means_all: bool
) -> tuple[tuple[int, ...], ...]:
    """Validates per-stage 0-based block positions `config.model.<key>` against `stage_sizes`.

    Positions past the end of a stage are clipped to its last block (with a warning), so that the
    standard positions still place blocks in a shallow test network. Malformed values raise.

    Args:
      key: the config key, for messages.
      value: one tuple of block indices per stage res2..res5.
      stage_sizes: blocks per stage.
      empty_means_all: an empty tuple selects every block of the stage (else none).

    Returns:
      One sorted tuple of distinct positions per stage.
    """
    value = tuple(tuple(v) for v in value)
    if len(value) != len(stage_sizes):
        raise UserError(
            f"config.model.{key}={value!r}: expected {len(stage_sizes)} tuples, one per stage "
            "(res2..res5)."
        )
    resolved = []
    for stage, (positions, size) in enumerate(zip(value, stage_sizes, strict=True)):
        if any(isinstance(p, bool) or not isinstance(p, int) or p < 0 for p in positions):
            raise UserError(
                f"config.model.{key}: stage res{stage + 2} has {positions!r}; expected "
                "non-negative 0-based block indices."
            )
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


def _check_choice(key: str, value, choices) -> None:
    if value not in choices:
        raise UserError(f"config.model.{key}={value!r}; expected one of {tuple(choices)}.")


def build_backbone(model_config: ml_collections.ConfigDict, *, video: bool) -> resnet.ResNet:
    """The ResNet trunk; `video=True` adds NL3D's temporal convs and non-local blocks."""
    sizes = resnet.stage_sizes_for(model_config.depth, model_config.stage_sizes)
    if model_config.width < 1:
        raise UserError(f"config.model.width={model_config.width} must be positive.")
    _check_choice("last_stride", model_config.last_stride, (1, 2))
    kwargs = {}
    if video:
        kernel = model_config.temporal_kernel
        if not isinstance(kernel, int) or kernel < 1 or kernel % 2 == 0:
            raise UserError(f"config.model.temporal_kernel={kernel!r} must be a positive odd int.")
        _check_choice("temporal_padding", model_config.temporal_padding, temporal.PADDINGS)
        _check_choice("temporal_init", model_config.temporal_init, temporal.INITS)
        stages = tuple(model_config.temporal_stages)
        if any(s not in range(len(sizes)) for s in stages):
            raise UserError(
                f"config.model.temporal_stages={stages!r}: expected stage indices 0 (res2) to 3 (res5)."
            )
        blocks = resolve_blocks("temporal_blocks", model_config.temporal_blocks, sizes, True)
        kwargs = dict(
            temporal_blocks=tuple(b if s in stages else () for s, b in enumerate(blocks)),
            temporal_kernel=kernel,
            temporal_padding=model_config.temporal_padding,
            temporal_init=model_config.temporal_init,
            nonlocal_blocks=resolve_blocks(
                "nonlocal_blocks", model_config.nonlocal_blocks, sizes, False
            ),
            nonlocal_scale=bool(model_config.nonlocal_scale),
        )
    return resnet.ResNet(
        stage_sizes=sizes,
        block=resnet.block_for(model_config.depth),
        width=model_config.width,
        last_stride=model_config.last_stride,
        dtype=layers.compute_dtype(model_config.dtype),
        ops=ops_for(model_config),
        **kwargs,
    )


# config.model keys that choose how the model computes, not what it is: no parameter depends on them.
HOW_TO_COMPUTE = ("fast_cpu_ops", "max_pool_ties")


def ops_for(model_config: ml_collections.ConfigDict) -> layers.Ops:
    """How this platform computes convs and max-pools (`config.model.fast_cpu_ops`,
    `max_pool_ties`); configs recorded before these keys existed get the defaults."""
    return layers.ops_for(
        model_config.get("fast_cpu_ops", "auto"), model_config.get("max_pool_ties", "first")
    )


def _build_nl3d(model_config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
    return nl3d.NL3D(
        backbone=build_backbone(model_config, video=True),
        num_classes=num_classes,
        bottleneck_dim=model_config.bottleneck_dim,
        dropout=model_config.dropout,
    )


def _build_gltr(model_config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
    dilations = tuple(model_config.gltr_dilations)
    if (
        not dilations
        or len(set(dilations)) != len(dilations)
        or any(not isinstance(r, int) or r < 1 for r in dilations)
    ):
        raise UserError(
            f"config.model.gltr_dilations={dilations!r}: expected distinct positive ints, e.g. "
            "(1, 2, 3) (official code) or (1, 2, 4) (paper)."
        )
    return gltr.GLTR(
        backbone=build_backbone(model_config, video=False),
        num_classes=num_classes,
        frame_dim=model_config.gltr_frame_dim,
        dilations=dilations,
        dropout=model_config.dropout,
    )


# How evaluation turns a tracklet into one feature (`vreid_jax.evaluation.features` implements each):
# every T-frame clip through the model, features averaged over the clips...
CLIP_AVERAGE = "clip_average"
# ...or every frame through `encode_frames`, then `temporal_head` over the whole padded tracklet.
FRAME_SEQUENCE = "frame_sequence"


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A registered model: how to build it and how it is evaluated.

    Attributes:
      build: `(config.model, num_classes) -> module`; the module is called as
        `module.apply(variables, clips, train, mask=None)` with clips `[B, T, H, W, 3]` and returns
        `(features [B, D], logits [B, num_classes])` in float32.
      extraction: CLIP_AVERAGE or FRAME_SEQUENCE (the module then also has `encode_frames` and
        `temporal_head` methods).
    """

    build: Callable[[ml_collections.ConfigDict, int], nn.Module]
    extraction: str


# Adding a model: its module in this package, a builder above, and one entry here.
MODELS: dict[str, ModelSpec] = {
    "nl3d": ModelSpec(build=_build_nl3d, extraction=CLIP_AVERAGE),
    "gltr": ModelSpec(build=_build_gltr, extraction=FRAME_SEQUENCE),
}


def spec(name: str) -> ModelSpec:
    """The registry entry of model `name` (`config.model.name`)."""
    if name not in MODELS:
        raise UserError(f"config.model.name={name!r}; expected one of {sorted(MODELS)}.")
    return MODELS[name]


def build_model(model_config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
    """The model named by `model_config.name` with `num_classes` outputs (see `ModelSpec.build`)."""
    model_spec = spec(model_config.name)
    if num_classes < 1:
        raise ValueError(f"num_classes={num_classes} must be positive.")
    return model_spec.build(model_config, num_classes)
