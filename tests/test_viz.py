"""Report pictures: valid PNGs of plausible size, green/red frames where the matches are."""

import numpy as np
import pytest
from PIL import Image

from vreid_jax.evaluation import pictures


def _frames(value, n=3, height=64, width=32):
    return [np.full((height, width, 3), value, np.uint8) for _ in range(n)]


def test_plot_cmc_writes_a_png(tmp_path):
    path = tmp_path / "plots" / "cmc.png"
    cmc = np.minimum(np.linspace(0.5, 1.2, 50), 1.0)
    pictures.plot_cmc({"trained (mAP 71.2%)": cmc, "untrained": cmc / 4}, str(path), "MARS")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (600, 450)
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.std() > 10  # Not a blank canvas.
    assert sorted(p.name for p in path.parent.iterdir()) == ["cmc.png"]  # No temp file left.
    assert path.stat().st_mode & 0o777 == 0o644


def test_plot_cmc_rejects_bad_curves(tmp_path):
    with pytest.raises(ValueError, match="no curves"):
        pictures.plot_cmc({}, str(tmp_path / "a.png"), "t")
    with pytest.raises(ValueError, match="'broken'"):
        pictures.plot_cmc({"broken": np.array([0.1, np.nan])}, str(tmp_path / "a.png"), "t")
    assert not list(tmp_path.iterdir())


FRAME_COLOURS = {
    pictures.QUERY_COLOR,
    pictures.CORRECT_COLOR,
    pictures.WRONG_COLOR,
    pictures.NEUTRAL_COLOR,
}


def _runs(row):
    """Consecutive runs of identical pixels along a row, as [(rgb, length)]."""
    runs = []
    for pixel in map(tuple, row):
        if runs and runs[-1][0] == pixel:
            runs[-1][1] += 1
        else:
            runs.append([pixel, 1])
    return [(p, n) for p, n in runs]


def _read_strips(path):
    """The picture's pixels and its framed tracklets read off them, left to right:
    [(frame colour, left, right, top, bottom)]."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        pixels = np.asarray(image.convert("RGB"))
    top = next(y for y, row in enumerate(pixels) if any(tuple(p) in FRAME_COLOURS for p in row))
    strips, x = [], 0
    for colour, n in _runs(pixels[top]):
        if colour in FRAME_COLOURS:
            left_border = np.all(pixels[top:, x] == colour, axis=-1)
            strips.append((colour, x, x + n, top, top + int(np.argmin(left_border))))
        x += n
    return pixels, strips


def _save(path, num_items):
    gallery = [(_frames(100 + 10 * i), i % 2 == 0, f"pid {i}") for i in range(num_items)]
    pictures.save_ranked_list(str(path), _frames(60), "query", gallery)
    return _read_strips(path)


def test_ranked_list_shows_the_query_then_the_gallery_framed_by_correctness(tmp_path):
    path = tmp_path / "ranked" / "q0001.png"
    fills = [60, 90, 110, 200, 230]
    gallery = [
        (_frames(90), True, "pid 1 cam 2\nd=0.12"),
        (_frames(110, n=2), False, "pid 7 cam 1\nd=0.30"),
        (_frames(200), None, "track 4 cam 3\nd=0.31"),  # Identity unknown.
        (_frames(230, height=128, width=64), True, "pid 1 cam 5\nd=0.35"),
    ]
    pictures.save_ranked_list(str(path), _frames(60), "query pid 1 cam 1", gallery)
    assert sorted(p.name for p in path.parent.iterdir()) == ["q0001.png"]  # No temp file left.
    pixels, strips = _read_strips(path)
    assert [s[0] for s in strips] == [
        pictures.QUERY_COLOR,
        pictures.CORRECT_COLOR,
        pictures.WRONG_COLOR,
        pictures.NEUTRAL_COLOR,
        pictures.CORRECT_COLOR,
    ]
    # Tracklets line up whatever their frames' size; a tracklet's width follows its frame count.
    assert len({(top, bottom) for *_, top, bottom in strips}) == 1
    widths = [right - left for _, left, right, _, _ in strips]
    assert widths[2] < widths[0] == widths[1] == widths[3] == widths[4]
    # Each tracklet's own frames are shown, untouched, inside its coloured frame.
    for (colour, left, right, top, bottom), fill in zip(strips, fills, strict=True):
        across = pixels[(top + bottom) // 2, left:right]
        assert {tuple(p) for p in across} == {colour, (fill,) * 3}
    # Captions are written below the tracklets (dark text pixels).
    bottom = strips[0][4]
    assert (pixels[bottom:] < 100).all(axis=-1).any()


def test_ranked_list_grows_with_the_gallery(tmp_path):
    sizes = []
    for n in (0, 1, 3):
        pixels, strips = _save(tmp_path / f"{n}.png", n)
        assert len(strips) == 1 + n
        sizes.append(pixels.shape[:2])
    assert sizes[0][0] == sizes[1][0] == sizes[2][0]  # One row, whatever its length.
    assert sizes[0][1] < sizes[1][1] < sizes[2][1]
    # Writing again replaces the picture.
    pictures.save_ranked_list(str(tmp_path / "3.png"), _frames(60), "query", [])
    assert _read_strips(tmp_path / "3.png")[0].shape[:2] == sizes[0]


def test_ranked_list_rejects_bad_frames(tmp_path):
    with pytest.raises(ValueError, match="gallery item 2 frame 0"):
        pictures.save_ranked_list(
            str(tmp_path / "x.png"),
            _frames(1),
            "q",
            [(_frames(2), True, "a"), ([np.zeros((8, 8), np.uint8)], False, "b")],
        )
    with pytest.raises(ValueError, match="the query has no frames"):
        pictures.save_ranked_list(str(tmp_path / "x.png"), [], "q", [])
    assert not list(tmp_path.iterdir())
