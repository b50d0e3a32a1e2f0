"""Report pictures: CMC curves and ranked-list strips, written atomically as PNG.

Figures are drawn with matplotlib's object API on an Agg canvas (`Figure` + `FigureCanvasAgg`),
never through pyplot: no global backend switch, no figure registry, safe in any process.
"""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from vreid_jax import files
from vreid_jax.evaluation.metrics import RANKS

# Frame colours of the ranked list (RGB): a correct identity, a wrong one, the query, and an item
# whose identity is unknown (searching your own tracklets: no ground truth says who is who).
CORRECT_COLOR = (0, 170, 0)
WRONG_COLOR = (220, 0, 0)
QUERY_COLOR = (40, 40, 40)
NEUTRAL_COLOR = (150, 150, 150)
FRAME_HEIGHT = 128  # Every frame is resized to this height (aspect kept) so tracklets line up.
BORDER = 4  # Width of the coloured frame around each tracklet.
GAP = 10  # White space between tracklets and around the strip.
CAPTION_HEIGHT = 34  # Room under each tracklet for two lines of caption.
_DPI = 100


def _save_figure_atomically(figure: Figure, path: str) -> None:
    """Renders `figure` to PNG at `path` atomically, so readers never see a partial file."""
    with files.atomic_write(path, "wb") as f:
        FigureCanvasAgg(figure).print_png(f)


def plot_cmc(curves: dict[str, np.ndarray], path: str, title: str) -> None:
    """One CMC curve per label: rank 1..N on x, matching rate in % on y, markers at R1/5/10/20.

    Args:
      curves: label -> CMC as fractions in [0, 1] (e.g. `evaluate_rank(...)['cmc']`), such as
        {"trained (mAP 71.2%)": cmc, "untrained": cmc0}.
      path: PNG file to write.
      title: the figure title.
    """
    if not curves:
        raise ValueError(f"plot_cmc({path!r}): no curves given.")
    figure = Figure(figsize=(6, 4.5), dpi=_DPI)
    ax = figure.add_subplot()
    for label, cmc in curves.items():
        cmc = np.asarray(cmc, np.float64)
        if cmc.ndim != 1 or cmc.size == 0 or not np.all(np.isfinite(cmc)):
            raise ValueError(f"plot_cmc: curve {label!r} must be a finite 1-D array, got {cmc}.")
        ranks = np.arange(1, cmc.size + 1)
        marked = [r - 1 for r in RANKS if r <= cmc.size]
        ax.plot(ranks, 100 * cmc, marker="o", markevery=marked, label=label)
    ax.set_xlabel("Rank")
    ax.set_ylabel("Matching rate (%)")
    # A little room beyond rank 1 and 100%, so the R1 marker and a saturated curve stay visible.
    ax.set_ylim(0, 102)
    ax.set_xlim(0, max(len(c) for c in curves.values()) + 1)
    ax.grid(True, alpha=0.3)
    ax.set_title(title)
    ax.legend(loc="lower right")
    figure.tight_layout()
    _save_figure_atomically(figure, path)


def _tracklet_strip(frames: list[np.ndarray], color, what: str) -> np.ndarray:
    """The frames side by side at FRAME_HEIGHT, inside a BORDER-wide frame of `color`."""
    if not frames:
        raise ValueError(f"save_ranked_list: {what} has no frames.")
    resized = []
    for i, frame in enumerate(frames):
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(
                f"save_ranked_list: {what} frame {i} must be uint8 HxWx3, got "
                f"{frame.dtype} {frame.shape}."
            )
        width = max(1, round(frame.shape[1] * FRAME_HEIGHT / frame.shape[0]))
        resized.append(np.asarray(Image.fromarray(frame).resize((width, FRAME_HEIGHT))))
    inner = np.concatenate(resized, axis=1)
    strip = np.empty((FRAME_HEIGHT + 2 * BORDER, inner.shape[1] + 2 * BORDER, 3), np.uint8)
    strip[:] = color
    strip[BORDER:-BORDER, BORDER:-BORDER] = inner
    return strip


def save_ranked_list(
    path: str,
    query_frames: list[np.ndarray],
    query_title: str,
    gallery: list[tuple[list[np.ndarray], bool | None, str]],
) -> None:
    """One row: the query clip, then the top-k gallery tracklets, framed by correctness.

    Pixels are placed unscaled (`figimage`), so the coloured frames are exactly CORRECT_COLOR
    (green) or WRONG_COLOR (red), or NEUTRAL_COLOR (grey) where correctness is unknown (None); the
    query's is QUERY_COLOR.

    Args:
      path: PNG file to write (atomically).
      query_frames: a few uint8 HxWx3 frames of the query tracklet.
      query_title: caption under the query (e.g. "query pid 12 cam 3").
      gallery: in rank order, (frames, is_correct_identity or None, caption) per retrieved tracklet; the
        caption (e.g. "pid 12 cam 5 d=0.41") is shown after its rank, "#1 ...".
    """
    strips = [_tracklet_strip(query_frames, QUERY_COLOR, "the query")]
    captions = [query_title]
    for rank, (frames, correct, caption) in enumerate(gallery, start=1):
        color = NEUTRAL_COLOR if correct is None else CORRECT_COLOR if correct else WRONG_COLOR
        strips.append(_tracklet_strip(frames, color, f"gallery item {rank}"))
        captions.append(f"#{rank} {caption}")
    height = GAP + strips[0].shape[0] + CAPTION_HEIGHT
    width = GAP + sum(s.shape[1] + GAP for s in strips)
    canvas = np.full((height, width, 3), 255, np.uint8)
    figure = Figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI)
    x = GAP
    for strip, caption in zip(strips, captions, strict=True):
        canvas[GAP : GAP + strip.shape[0], x : x + strip.shape[1]] = strip
        # Text positions are in figure fractions, measured from the bottom-left corner.
        figure.text(
            (x + strip.shape[1] / 2) / width,
            (CAPTION_HEIGHT - 4) / height,
            caption,
            ha="center",
            va="top",
            fontsize=7,
            wrap=True,
        )
        x += strip.shape[1] + GAP
    figure.figimage(canvas, xo=0, yo=0, origin="upper")
    _save_figure_atomically(figure, path)
