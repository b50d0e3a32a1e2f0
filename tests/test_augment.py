"""Decoding and clip-consistent augmentation (TensorFlow ops, eager and inside tf.data)."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from vreid_jax.data import augment, fake, pixels

T, H, W = 4, 32, 16


def _clip(row=3):
    return tf.constant(np.stack([fake.coded_frame(row, f, H, W) for f in range(T)]))


def _pixels(clip):
    """An augmented uint8 clip as a float array (pixel scale), checking the dtype."""
    assert clip.dtype == tf.uint8
    return np.asarray(clip).astype(float)


def test_decode_keeps_pixels_at_stored_size_and_resizes_otherwise():
    image = fake.coded_frame(7, 9, H, W)
    png = fake.encode(image)
    np.testing.assert_array_equal(augment.decode_frame(tf.constant(png), H, W), image)
    smooth = np.clip(np.add.outer(np.arange(64) * 3, np.arange(32) * 2), 0, 255).astype(np.uint8)
    smooth = np.repeat(smooth[..., None], 3, axis=-1)
    ours = augment.decode_frame(tf.constant(fake.encode(smooth)), 32, 16).numpy()
    pil = np.asarray(Image.fromarray(smooth).resize((16, 32), Image.BICUBIC))
    assert ours.dtype == np.uint8 and ours.shape == (32, 16, 3)
    # TF's antialiased bicubic against PIL's: the same filter family, a pixel or two apart.
    assert np.abs(ours.astype(int) - pil.astype(int)).mean() < 2.0


def test_decode_reads_jpeg_and_png_clips():
    jpeg = fake.encode(fake.coded_frame(1, 2, H, W), "JPEG", quality=95)
    png = fake.encode(fake.coded_frame(1, 2, H, W))
    clip = augment.decode_clip(tf.constant([jpeg, png]), 2, H, W).numpy()
    assert clip.shape == (2, H, W, 3)
    assert np.abs(clip[0].astype(int) - clip[1].astype(int)).max() <= 8


def test_flip_is_clip_consistent():
    flipped_any = unflipped_any = False
    for s in range(16):
        out = _pixels(augment.augment_clip(_clip(), tf.constant([s, 1]), flip=True, pad=0))
        ramp = out[..., 2]  # blue ramps left to right unless flipped
        increasing = ramp[:, :, -1] > ramp[:, :, 0]  # per frame and row
        assert increasing.all() or (~increasing).all(), "frames of one clip flipped differently"
        flipped_any |= not increasing.any()
        unflipped_any |= bool(increasing.all())
    assert flipped_any and unflipped_any


def test_pad_and_crop_shift_every_frame_alike():
    pad = 3
    shifts = set()
    for s in range(12):
        out = _pixels(augment.augment_clip(_clip(), tf.constant([s, 2]), flip=False, pad=pad))
        # Find each frame's offset by matching against the zero-padded original.
        padded = np.pad(_clip().numpy(), [(0, 0), (pad, pad), (pad, pad), (0, 0)]).astype(float)
        per_frame = []
        for t in range(T):
            errors = {
                (dy, dx): np.abs(padded[t, dy : dy + H, dx : dx + W] - out[t]).max()
                for dy in range(2 * pad + 1)
                for dx in range(2 * pad + 1)
            }
            best = min(errors, key=errors.get)
            assert errors[best] < 1e-3
            per_frame.append(best)
        assert len(set(per_frame)) == 1
        shifts.add(per_frame[0])
    assert len(shifts) > 3


def test_random_erasing_same_rectangle_in_every_frame():
    out = augment.augment_clip(_clip(), tf.constant([5, 5]), flip=False, pad=0, random_erasing=1.0)
    erased = np.all(_pixels(out) == pixels.MEAN_PIXEL, axis=-1)  # [T, H, W]
    assert (erased == erased[:1]).all()
    area = erased[0].mean()
    assert 0.02 * 0.5 <= area <= 0.4 + 0.05
    rows, cols = np.nonzero(erased[0])
    assert erased[0, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()  # a rectangle
    never = augment.augment_clip(_clip(), tf.constant([5, 5]), flip=False, random_erasing=0.0)
    assert not np.all(_pixels(never) == pixels.MEAN_PIXEL, axis=-1).any()


@pytest.mark.parametrize("erasing", [0.0, 0.5])
def test_eager_equals_tf_data(erasing):
    seeds = np.arange(16, dtype=np.int64).reshape(8, 2)

    def fn(seed):
        return augment.augment_clip(_clip(), seed, flip=True, pad=4, random_erasing=erasing)

    eager = np.stack([fn(tf.constant(s)).numpy() for s in seeds])
    ds = tf.data.Dataset.from_tensor_slices(seeds).map(fn, num_parallel_calls=4)
    in_graph = np.stack(list(ds.as_numpy_iterator()))
    np.testing.assert_array_equal(eager, in_graph)


def test_decode_frame_errors_on_garbage():
    with pytest.raises(tf.errors.InvalidArgumentError):
        augment.decode_frame(tf.constant(b"not an image"), H, W)
