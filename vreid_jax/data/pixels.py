"""The pixel contract between the input pipeline and the models.

The pipelines hand the devices uint8 pixels (clips `[B, T, H, W, 3]`, frames `[B, H, W, 3]`), and
the compiled train and eval steps normalise them first thing with `normalize`. A uint8 batch is a
quarter of the float32 one to build, copy and transfer, and the normalisation fuses into the first
convolution's input on the device instead of costing the input pipeline a pass over every pixel.

Convention (torchvision `ToTensor` + `Normalize`): (x / 255 - mean) / std with the ImageNet mean
and std, per RGB channel.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The ImageNet mean as a uint8 pixel (random erasing fills with it: about 0 after normalisation).
MEAN_PIXEL = tuple(int(round(255 * m)) for m in IMAGENET_MEAN)


def normalize(pixels) -> jax.Array:
    """uint8 pixels `[..., 3]` -> float32, ImageNet-normalised.

    Only uint8 is accepted, so that normalising twice (or never) cannot happen silently. The dtype
    is static: the check costs nothing in the compiled step.
    """
    if pixels.dtype != jnp.uint8:
        raise TypeError(
            f"Expected uint8 pixels [..., 3] as the input pipelines deliver, got {pixels.dtype}."
        )
    std = np.asarray(IMAGENET_STD, np.float32) * 255.0
    mean = np.asarray(IMAGENET_MEAN, np.float32) * 255.0
    return pixels.astype(jnp.float32) * (1.0 / std) - mean / std
