"""Models: NL3D and GLTR, their ResNet trunk, and ImageNet weight import (`pretrained`); CLIP's ViT
image encoder (`clip_vit`) and its weights (`clip_pretrained`, `convert_clip`)."""

from vreid_jax.models.registry import MODELS, build_model

__all__ = ["MODELS", "build_model"]
