"""Report pictures: valid PNGs of plausible size, green/red frames where the matches are."""

import numpy as np
import pytest
from PIL import Image

from vreid_jax import viz


def _frames(value, n=3, height=64, width=32):
    return [np.full((height, width, 3), value, np.uint8) for _ in range(n)]


def test_plot_cmc_writes_a_png(tmp_path):
    path = tmp_path / "plots" / "cmc.png"
    cmc = np.minimum(np.linspace(0.5, 1.2, 50), 1.0)
    viz.plot_cmc({"trained (mAP 71.2%)": cmc, "untrained": cmc / 4}, str(path), "MARS")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (600, 450)
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.std() > 10  # Not a blank canvas.
    assert sorted(p.name for p in path.parent.iterdir()) == ["cmc.png"]  # No temp file left.
    assert path.stat().st_mode & 0o777 == 0o644


def test_plot_cmc_rejects_bad_curves(tmp_path):
    with pytest.raises(ValueError, match="no curves"):
        viz.plot_cmc({}, str(tmp_path / "a.png"), "t")
    with pytest.raises(ValueError, match="'broken'"):
        viz.plot_cmc({"broken": np.array([0.1, np.nan])}, str(tmp_path / "a.png"), "t")
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
    viz.save_ranked_list(str(path), _frames(60), "query pid 1 cam 1", gallery)
    with Image.open(path) as image:
        assert image.format == "PNG"
        pixels = np.asarray(image.convert("RGB"))
    strip_width = 3 * 64 + 2 * viz.BORDER  # 3 frames of 64x32 shown at height 128.
    expected_width = viz.GAP + 3 * (strip_width + viz.GAP) + (2 * 64 + 2 * viz.BORDER + viz.GAP)
    assert pixels.shape == (
        viz.GAP + viz.FRAME_HEIGHT + 2 * viz.BORDER + viz.CAPTION_HEIGHT,
        expected_width,
        3,
    )
    # Along the top border row: white gap, query frame, then one coloured run per gallery item.
    colours = [p for p, n in _runs(pixels[viz.GAP + 1]) if p != (255, 255, 255)]
    assert colours == [viz.QUERY_COLOR, viz.CORRECT_COLOR, viz.WRONG_COLOR, viz.CORRECT_COLOR]
    # The left border column of each gallery item, down its whole height.
    x = viz.GAP + strip_width + viz.GAP + 1
    column = pixels[viz.GAP : viz.GAP + viz.FRAME_HEIGHT + 2 * viz.BORDER, x]
    assert np.all(column == viz.CORRECT_COLOR)
    x = viz.GAP + 2 * (strip_width + viz.GAP) + 1
    column = pixels[viz.GAP : viz.GAP + viz.FRAME_HEIGHT + 2 * viz.BORDER, x]
    assert np.all(column == viz.WRONG_COLOR)
    # The frames themselves are untouched inside the borders.
    inside = pixels[viz.GAP + viz.BORDER + 10, viz.GAP + viz.BORDER + 10]
    np.testing.assert_array_equal(inside, [60, 60, 60])
    # Captions are drawn below the strips (dark text pixels in the caption band).
    assert (pixels[-viz.CAPTION_HEIGHT :] < 100).any()


def test_ranked_list_rejects_bad_frames(tmp_path):
    with pytest.raises(ValueError, match="gallery item 2 frame 0"):
        viz.save_ranked_list(
            str(tmp_path / "x.png"),
            _frames(1),
            "q",
            [(_frames(2), True, "a"), ([np.zeros((8, 8), np.uint8)], False, "b")],
        )
    with pytest.raises(ValueError, match="the query has no frames"):
        viz.save_ranked_list(str(tmp_path / "x.png"), [], "q", [])
    assert not list(tmp_path.iterdir())
