"""Frame decoding and clip-consistent augmentation as TensorFlow ops (usable eagerly and in tf.data).

Clip-consistent: one random draw per clip, applied to every frame (AP3D's `randomize_parameters()`
once per clip), never per frame. All draws are stateless, keyed by a per-clip seed, so the same seed
gives the same clip eagerly, inside a parallel tf.data map, and after a restart.

Conventions ported from the PyTorch peers (torchvision/torchreid), each tested:
  - resize: bicubic (or bilinear, `config.input.resize`) with antialiasing, rounded back to uint8
    (PIL resizes uint8 images, and filters over the source pixels when shrinking);
  - pad-and-crop: zero (black) padding of `pad` pixels on each side, then a random crop of the
    original size (torchvision `RandomCrop(size, padding=pad)`);
  - random erasing (Zhong et al. 2017, torchreid defaults): area 2-40% of the frame, aspect ratio in
    [0.3, 1/0.3], filled with the ImageNet mean pixel (uint8 (124, 116, 104); within 0.01 of 0 after
    normalisation, where the float pipeline used to fill exact zeros).

Clips stay uint8 here: the ImageNet normalisation runs on the device, inside the compiled steps
(`vreid_jax.data.pixels`), which makes a batch a quarter of the bytes to build and copy.
"""

from __future__ import annotations

import tensorflow as tf

from vreid_jax.data import pixels

# Random erasing: (min area, max area) as fractions of the frame, min aspect ratio, and how many
# candidate rectangles are drawn (the first that fits is used; torchreid tries up to 100 in a loop).
_ERASE_AREA = (0.02, 0.4)
_ERASE_MIN_ASPECT = 0.3
_ERASE_ATTEMPTS = 10


def decode_frame(encoded: tf.Tensor, height: int, width: int, resize: str = "bicubic") -> tf.Tensor:
    """Decodes one JPEG/PNG frame to uint8 [height, width, 3], resizing (`resize`: 'bicubic' or
    'bilinear') only if its size differs."""
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    shape = tf.shape(image)
    same = tf.logical_and(tf.equal(shape[0], height), tf.equal(shape[1], width))
    image = tf.cond(same, lambda: image, lambda: _resize(image, height, width, resize))
    return tf.ensure_shape(image, [height, width, 3])


def _resize(image: tf.Tensor, height: int, width: int, method: str) -> tf.Tensor:
    resized = tf.image.resize(image, [height, width], method=method, antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def decode_clip(
    encoded: tf.Tensor, clip_len: int, height: int, width: int, resize: str = "bicubic"
) -> tf.Tensor:
    """Decodes `clip_len` frames (tf.string [clip_len]) to uint8 [clip_len, height, width, 3]."""
    # A static Python loop: each frame is decoded and resized on its own (frames of one tracklet may
    # differ in size), and the graph stays flat, which is faster than tf.map_fn.
    return tf.stack([decode_frame(encoded[t], height, width, resize) for t in range(clip_len)])


def augment_clip(
    clip: tf.Tensor,
    seed: tf.Tensor,
    *,
    flip: bool = True,
    pad: int = 0,
    random_erasing: float = 0.0,
) -> tf.Tensor:
    """Augments a whole clip with one random draw.

    Args:
      clip: uint8 [T, H, W, 3] with static shape.
      seed: int32/int64 [2], the clip's stateless seed.
      flip: horizontal flip with probability 1/2.
      pad: zero-pad by this many pixels per side, then random-crop back to [H, W] (0 disables).
      random_erasing: probability of erasing one random rectangle (the same in every frame).

    Returns:
      uint8 [T, H, W, 3].
    """
    flip_seed, crop_seed, erase_seed = tf.unstack(tf.random.split(tf.cast(seed, tf.int64), 3))
    if flip:
        do_flip = tf.random.stateless_uniform([], flip_seed) < 0.5
        clip = tf.cond(do_flip, lambda: tf.reverse(clip, axis=[2]), lambda: clip)
    if pad > 0:
        clip = _pad_and_crop(clip, crop_seed, pad)
    if random_erasing > 0:
        clip = _random_erase(clip, erase_seed, random_erasing)
    return clip


def _pad_and_crop(clip: tf.Tensor, seed: tf.Tensor, pad: int) -> tf.Tensor:
    num_frames, height, width, channels = clip.shape
    offset = tf.random.stateless_uniform([2], seed, minval=0, maxval=2 * pad + 1, dtype=tf.int32)
    padded = tf.pad(clip, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    return tf.slice(padded, [0, offset[0], offset[1], 0], [num_frames, height, width, channels])


def _random_erase(clip: tf.Tensor, seed: tf.Tensor, probability: float) -> tf.Tensor:
    _, height, width, _ = clip.shape
    draw = tf.random.stateless_uniform([1 + 4 * _ERASE_ATTEMPTS], seed)
    apply, u = draw[0] < probability, tf.reshape(draw[1:], [4, _ERASE_ATTEMPTS])
    area = (_ERASE_AREA[0] + (_ERASE_AREA[1] - _ERASE_AREA[0]) * u[0]) * height * width
    # Uniform in [r, 1/r] as torchreid draws it (torchvision's RandomErasing draws log-uniform).
    aspect = _ERASE_MIN_ASPECT + (1.0 / _ERASE_MIN_ASPECT - _ERASE_MIN_ASPECT) * u[1]
    h = tf.cast(tf.round(tf.sqrt(area * aspect)), tf.int32)
    w = tf.cast(tf.round(tf.sqrt(area / aspect)), tf.int32)
    fits = tf.logical_and(h < height, w < width)
    first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
    h, w = h[first], w[first]
    top = tf.cast(u[2, first] * tf.cast(height - h + 1, tf.float32), tf.int32)
    left = tf.cast(u[3, first] * tf.cast(width - w + 1, tf.float32), tf.int32)
    rows, cols = tf.range(height)[:, None], tf.range(width)[None, :]
    inside = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
    erase = apply & tf.reduce_any(fits) & inside  # [H, W], the same rectangle in every frame
    fill = tf.constant(pixels.MEAN_PIXEL, tf.uint8)
    return tf.where(erase[None, :, :, None], fill, clip)
