"""vreid_jax: video-based person re-identification in JAX/Flax (NL3D and GLTR)."""

__version__ = "0.1.0"
