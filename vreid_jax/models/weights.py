"""`config.model.pretrained` overlaid on a model's random init, as its registry entry declares
(`registry.ModelSpec.pretrained`): ResNet weights on the backbone, CLIP ViT weights on the image
encoder."""

from __future__ import annotations

import ml_collections

from vreid_jax.models import clip_pretrained, clip_vit, pretrained, registry


def _resnet(variables: dict, npz_path: str, config: ml_collections.ConfigDict) -> dict:
    """ImageNet ResNet weights from `convert_resnet50` overlaid on the backbone."""
    return pretrained.load_into(variables, npz_path, config.model)


def _clip(variables: dict, npz_path: str, config: ml_collections.ConfigDict) -> dict:
    """CLIP ViT weights from `convert_clip` (converted for the configured frame size) overlaid on
    the image encoder; TMD, SSP, the camera embedding and the heads keep their init."""
    c = config.model.tfclip
    architecture = clip_pretrained.ClipVitArchitecture(
        width=c.width,
        layers=c.layers,
        heads=c.heads,
        patch_size=c.patch_size,
        output_dim=c.output_dim,
        grid=clip_vit.patch_grid(config.input.height, config.input.width, c.patch_size),
    )
    return clip_pretrained.load_into(
        variables, npz_path, architecture, path=("params", "image_encoder")
    )


OVERLAYS = {registry.RESNET_WEIGHTS: _resnet, registry.CLIP_WEIGHTS: _clip}


def load_into(variables: dict, npz_path: str, config: ml_collections.ConfigDict) -> dict:
    """`variables` (host arrays of the model's own init) with the file's weights overlaid where
    the registry says `config.model.name` takes them; raises `PretrainedWeightsError` naming the
    file and what differs."""
    overlay = OVERLAYS[registry.spec(config.model.name).pretrained]
    return overlay(variables, npz_path, config)
