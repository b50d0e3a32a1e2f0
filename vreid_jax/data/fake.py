"""In-memory tracklet indices with encoded frames, for tests and benchmarks (no dataset on disk).

`make_index` writes the tracklet row and frame number into every pixel ('coded' frames, PNG by
default so that they survive encoding exactly): red = row % 256, green = frame % 256, blue = a
left-to-right ramp, so a test can read back which frame of which tracklet a pixel came from and
whether it was flipped. 'textured' JPEG frames have the size and content statistics of real
pedestrian crops instead (smooth shapes plus sensor noise), for throughput measurements.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from vreid_jax.data.tracklets import TrackletIndex


def coded_frame(row: int, frame: int, height: int, width: int) -> np.ndarray:
    """uint8 [height, width, 3]: red = row % 256, green = frame % 256, blue = column ramp 0..255."""
    image = np.empty((height, width, 3), np.uint8)
    image[..., 0] = row % 256
    image[..., 1] = frame % 256
    image[..., 2] = np.round(np.linspace(0, 255, width)).astype(np.uint8)[None, :]
    return image


def textured_frame(generator: np.random.Generator, height: int, width: int) -> np.ndarray:
    """uint8 [height, width, 3]: a smooth random scene (person-sized blobs on a gradient) plus noise."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.zeros((height, width, 3), np.float32) + generator.uniform(40, 200, 3)
    image += (y / height)[..., None] * generator.uniform(-60, 60, 3)
    for _ in range(6):
        cy, cx = generator.uniform(0, height), generator.uniform(0, width)
        ry, rx = generator.uniform(0.1, 0.4) * height, generator.uniform(0.1, 0.5) * width
        inside = ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 < 1.0
        image[inside] = generator.uniform(0, 255, 3)
    image += generator.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def encode(image: np.ndarray, fmt: str = "PNG", quality: int = 90) -> bytes:
    """PNG or JPEG bytes of a uint8 [H, W, 3] image."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(
        buffer, format=fmt, **({"quality": quality} if fmt == "JPEG" else {})
    )
    return buffer.getvalue()


def make_index(
    tracklets_per_id,
    lengths,
    *,
    height: int = 32,
    width: int = 16,
    content: str = "coded",
    fmt: str = "PNG",
    train: bool = True,
    seed: int = 0,
    num_cameras: int = 2,
) -> TrackletIndex:
    """An index of identities with the given tracklet counts and lengths.

    Args:
      tracklets_per_id: tracklets of each identity (identity i has pid i + 1, label i).
      lengths: length of each tracklet (in identity order), or one int for all.
      height: frame height.
      width: frame width.
      content: 'coded' (see module docstring) or 'textured'.
      fmt: 'PNG' or 'JPEG'.
      train: training labels and `label_counts` if True, else labels -1.
      seed: seed of the textured content and of the cameras.
      num_cameras: cameras are assigned round-robin within each identity.
    """
    counts = np.asarray(tracklets_per_id, np.int64)
    num_tracklets = int(counts.sum())
    lengths = np.broadcast_to(np.asarray(lengths, np.int32), (num_tracklets,))
    labels = np.repeat(np.arange(len(counts)), counts)
    generator = np.random.default_rng(seed)
    # Textured frames are few distinct images reused: encoding thousands would dominate the setup.
    pool = []
    if content == "textured":
        pool = [encode(textured_frame(generator, height, width), fmt) for _ in range(32)]
    frames = []
    for row, length in enumerate(lengths):
        if content == "coded":
            frames.append([encode(coded_frame(row, f, height, width), fmt) for f in range(length)])
        elif content == "textured":
            frames.append([pool[(row * 7 + f) % len(pool)] for f in range(length)])
        else:
            raise ValueError(f"content={content!r}; expected 'coded' or 'textured'.")
    within = np.concatenate([np.arange(c) for c in counts]) if num_tracklets else np.zeros(0)
    return TrackletIndex(
        frames=frames,
        pids=labels + 1,
        labels=labels if train else np.full(num_tracklets, -1),
        camids=within % num_cameras,
        lengths=lengths,
        keys=[f"fake/{'train' if train else 'test'}/{row:05d}" for row in range(num_tracklets)],
        label_counts=counts if train else None,
    )
