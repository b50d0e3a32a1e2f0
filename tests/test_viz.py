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


def _runs(row):
    """Consecutive runs of identical pixels along a row, as [(rgb, length)]."""
    runs = []
    for pixel in map(tuple, row):
        if runs and runs[-1][0] == pixel:
            runs[-1][1] += 1
        else:
            runs.append([pixel, 1])
    return [(p, n) for p, n in runs]


def test_ranked_list_frames_are_green_and_red(tmp_path):
    path = tmp_path / "ranked" / "q0001.png"
    gallery = [
        (_frames(90), True, "pid 1 cam 2\nd=0.12"),
        (_frames(150, n=2), False, "pid 7 cam 1\nd=0.30"),
        (_frames(200, height=128, width=64), True, "pid 1 cam 5\nd=0.31"),
    ]
    pictures.save_ranked_list(str(path), _frames(60), "query pid 1 cam 1", gallery)
    with Image.open(path) as image:
        assert image.format == "PNG"
        pixels = np.asarray(image.convert("RGB"))
    strip_width = 3 * 64 + 2 * pictures.BORDER  # 3 frames of 64x32 shown at height 128.
    expected_width = (
        pictures.GAP
        + 3 * (strip_width + pictures.GAP)
        + (2 * 64 + 2 * pictures.BORDER + pictures.GAP)
    )
    assert pixels.shape == (
        pictures.GAP + pictures.FRAME_HEIGHT + 2 * pictures.BORDER + pictures.CAPTION_HEIGHT,
        expected_width,
        3,
    )
    # Along the top border row: white gap, query frame, then one coloured run per gallery item.
    colours = [p for p, n in _runs(pixels[pictures.GAP + 1]) if p != (255, 255, 255)]
    assert colours == [
        pictures.QUERY_COLOR,
        pictures.CORRECT_COLOR,
        pictures.WRONG_COLOR,
        pictures.CORRECT_COLOR,
    ]
    # The left border column of each gallery item, down its whole height.
    x = pictures.GAP + strip_width + pictures.GAP + 1
    column = pixels[pictures.GAP : pictures.GAP + pictures.FRAME_HEIGHT + 2 * pictures.BORDER, x]
    assert np.all(column == pictures.CORRECT_COLOR)
    x = pictures.GAP + 2 * (strip_width + pictures.GAP) + 1
    column = pixels[pictures.GAP : pictures.GAP + pictures.FRAME_HEIGHT + 2 * pictures.BORDER, x]
    assert np.all(column == pictures.WRONG_COLOR)
    # The frames themselves are untouched inside the borders.
    inside = pixels[pictures.GAP + pictures.BORDER + 10, pictures.GAP + pictures.BORDER + 10]
    np.testing.assert_array_equal(inside, [60, 60, 60])
    # Captions are drawn below the strips (dark text pixels in the caption band).
    assert (pixels[-pictures.CAPTION_HEIGHT :] < 100).any()


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
