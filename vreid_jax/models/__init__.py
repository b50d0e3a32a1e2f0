"""Models: NL3D and GLTR, their ResNet trunk, and ImageNet weight import (`pretrained`)."""

from vreid_jax.models.registry import MODELS, build_model

__all__ = ["MODELS", "build_model"]
