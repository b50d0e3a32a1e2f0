"""Your own tracklets: from folders of frames, or from a MOT track file plus the video (a folder of
frames or a video file) whose person boxes it lists.

Every frame is decoded once here, so that a damaged one is named before any model runs; with
`skip_bad` it is skipped with a warning instead (a tracklet left with no frame is dropped). A folder
source then holds only the paths of its frames (`FrameFiles`): extraction reads each file again
when it reaches it, so a test set's worth of frames costs no memory. MOT crops are cut from whole
frames or a video, and are kept in memory as PNG bytes.
"""

from __future__ import annotations

import collections.abc
import concurrent.futures
import dataclasses
import io
import os
import re

import numpy as np
from absl import logging
from PIL import Image

from vreid_jax import errors
from vreid_jax.data.tracklets import TrackletIndex
from vreid_jax.deploy.tracks import feature_file, mot

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_LAST_NUMBER = re.compile(r"(\d+)(?!.*\d)")


class TrackletSourceError(errors.UserError):
    """A tracklet source that cannot be read; the message names the folder, file or line."""


class FrameFiles(collections.abc.Sequence):
    """A tracklet's frames as image files, read when used: `frames[i]` is the bytes of file i."""

    def __init__(self, paths):
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return FrameFiles(self.paths[i])
        with open(self.paths[i], "rb") as f:
            return f.read()

    def __repr__(self) -> str:
        return f"FrameFiles({len(self)} files in {os.path.dirname(self.paths[0]) if self else ''})"


@dataclasses.dataclass
class Tracklet:
    """One tracklet's frames (JPEG/PNG bytes, in temporal order) and where they came from."""

    track_id: str
    camera: str
    frames: list[bytes] | FrameFiles = dataclasses.field(repr=False)
    frame_numbers: list[int]
    source: str
    # Up to NUM_PREVIEWS (image path or '<video>#<index>', box x, y, w, h or NaN) to show it with.
    previews: list[tuple[str, tuple[float, float, float, float]]]


# ---------------------------------------------------------------------------------- folders


def from_folder(root: str, *, skip_bad: bool = False) -> list[Tracklet]:
    """Tracklets of `root/<track_id>/<frames>` or `root/<camera>/<track_id>/<frames>`.

    Frames are .jpg/.jpeg/.png files, ordered by the last number in their name (so `f9.jpg` comes
    before `f10.jpg`); other files are ignored. The tracklet's id is its folder's name, its camera
    the folder above it ('' without a camera level).
    """
    if not os.path.isdir(root):
        raise TrackletSourceError(f"--tracklets {root!r}: no such folder.")
    root = os.path.abspath(root)  # Sources and previews are recorded as absolute paths.
    folders = []
    for name in _subfolders(root):
        path = os.path.join(root, name)
        if _image_files(path):
            folders.append(("", name, path))
        elif _subfolders(path):
            folders += [(name, sub, os.path.join(path, sub)) for sub in _subfolders(path)]
        else:
            _bad(f"Track folder {path} is empty (no .jpg/.jpeg/.png frames).", skip_bad)
    if not folders:
        raise TrackletSourceError(
            f"No track folders in {root}: expected {root}/<track_id>/<frames>.jpg or "
            f"{root}/<camera>/<track_id>/<frames>.jpg."
        )
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:
        read = lambda folder: _read_folder(*folder, skip_bad=skip_bad)
        return [t for t in pool.map(read, folders) if t is not None]


def _read_folder(camera: str, track_id: str, path: str, *, skip_bad: bool) -> Tracklet | None:
    names = _image_files(path)
    if not names:
        return _bad(f"Track folder {path} is empty (no .jpg/.jpeg/.png frames).", skip_bad)
    numbers = [_frame_number(path, name, numbered=len(names) > 1) for name in names]
    order = np.argsort(numbers, kind="stable")
    for a, b in zip(order[:-1], order[1:], strict=True):
        if numbers[a] == numbers[b]:
            raise TrackletSourceError(
                f"{path}: {names[a]} and {names[b]} have the same frame number {numbers[a]}."
            )
    kept = [i for i in order if _read_frame(os.path.join(path, names[i]), skip_bad) is not None]
    if not kept:
        return _bad(f"Track folder {path} has no usable frame.", skip_bad)
    previews = [(os.path.join(path, names[kept[j]]), _WHOLE) for j in _spread(len(kept))]
    return Tracklet(
        track_id=track_id,
        camera=camera,
        frames=FrameFiles(os.path.join(path, names[i]) for i in kept),
        frame_numbers=[numbers[i] for i in kept],
        source=path,
        previews=previews,
    )


def _frame_number(folder: str, name: str, numbered: bool) -> int:
    match = _LAST_NUMBER.search(os.path.splitext(name)[0])
    if match is None:
        if numbered:
            raise TrackletSourceError(
                f"{os.path.join(folder, name)}: no frame number in the file name; frames are "
                "ordered by the last number in their names."
            )
        return 0
    return int(match.group(1))


def _read_frame(path: str, skip_bad: bool) -> tuple[bytes, np.ndarray] | None:
    """The file's bytes and its pixels (uint8 [H, W, 3]), decoded once in full; None (skipped,
    with a warning) or an error if it is bad."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        with Image.open(io.BytesIO(data)) as image:
            return data, np.asarray(image.convert("RGB"))
    except Image.UnidentifiedImageError:
        return _bad(f"Frame {path} is unusable (not an image file).", skip_bad)
    except (OSError, SyntaxError, ValueError) as e:  # PIL's errors for damaged data.
        return _bad(f"Frame {path} is unusable ({e}).", skip_bad)


# ---------------------------------------------------------------------------------- MOT files


def from_mot(
    track_file: str,
    frames: str,
    *,
    camera: str | None = None,
    skip_bad: bool = False,
    min_boxes: int = 1,
) -> list[Tracklet]:
    """One tracklet per track of a MOT track file, cropped from `frames`.

    Args:
      track_file: `frame,id,x,y,w,h,...` lines (see `tracks.mot` for the conventions).
      frames: the video: a folder of frames named by their number (MOT's `img1/000001.jpg`: MOT
        frame n is the file numbered n) or a video file (MOT frame n is the n-th decoded frame;
        needs PyAV).
      camera: the camera name recorded for every track; default `camera_name(track_file)`.
      skip_bad: skip (with a warning) boxes outside the image and unreadable frames instead of
        stopping.
      min_boxes: tracks with fewer boxes are left out.

    Boxes are clipped at the image borders; a box with no pixel inside the image is an error
    naming its line.
    """
    track_file, frames = os.path.abspath(track_file), os.path.abspath(frames)  # As recorded.
    tracks = mot.read(track_file)
    camera = camera_name(track_file) if camera is None else camera
    wanted = np.unique(tracks.frames)
    crops: dict[int, bytes] = {}
    boxes = np.full((len(tracks), 4), np.nan)
    refs = [""] * len(tracks)
    rows_of = {int(f): np.flatnonzero(tracks.frames == f) for f in wanted}
    for number, ref, image in _video_frames(frames, wanted, skip_bad):
        height, width = image.shape[:2]
        for row in rows_of[number]:
            box = _clip_box(tracks.boxes[row], width, height)
            if box is None:
                _bad(
                    f"{tracks.where(row)}: box {tracks.boxes[row].tolist()} lies outside the "
                    f"{width}x{height} frame {ref}.",
                    skip_bad,
                )
                continue
            x0, y0, x1, y1 = box
            crops[row] = _encode_png(image[y0:y1, x0:x1])
            boxes[row] = (x0, y0, x1 - x0, y1 - y0)
            refs[row] = ref
    out = []
    for track, rows in tracks.track_rows().items():
        rows = [r for r in rows if r in crops]
        if len(rows) < min_boxes:
            logging.info(
                "%s: track %d has %d usable boxes; left out.", track_file, track, len(rows)
            )
            continue
        out.append(
            Tracklet(
                track_id=str(track),
                camera=camera,
                frames=[crops[r] for r in rows],
                frame_numbers=[int(tracks.frames[r]) for r in rows],
                source=track_file,
                previews=[(refs[rows[j]], tuple(boxes[rows[j]])) for j in _spread(len(rows))],
            )
        )
    if not out:
        raise TrackletSourceError(f"{track_file}: no track with {min_boxes}+ usable boxes.")
    return out


def camera_name(track_file: str) -> str:
    """The camera a track file is named after: MOTChallenge's `<sequence>/gt/gt.txt` or
    `<sequence>/det/det.txt` give the sequence; a file of a generic name (`tracks.txt`, `gt.txt`,
    ...) its folder (`cam1/tracks.txt` gives cam1); any other its name (`cam1.txt` gives cam1)."""
    folder, name = os.path.split(os.path.abspath(track_file))
    stem = os.path.splitext(name)[0]
    if os.path.basename(folder) in ("gt", "det"):
        return os.path.basename(os.path.dirname(folder))
    return os.path.basename(folder) if stem.lower() in _GENERIC_NAMES else stem


_GENERIC_NAMES = ("gt", "det", "tracks", "track", "tracking", "results", "output")


def _clip_box(box, width: int, height: int):
    """MOT's 1-based (x, y, w, h) → 0-based pixel bounds (x0, y0, x1, y1) inside the image, or
    None when no pixel of the box is inside."""
    x, y, w, h = box
    x0, y0 = round(x - 1), round(y - 1)
    x1, y1 = round(x - 1 + w), round(y - 1 + h)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def _video_frames(frames: str, wanted: np.ndarray, skip_bad: bool):
    """Yields (MOT frame number, preview reference, uint8 [H, W, 3]) for each wanted frame."""
    wanted_set = {int(n) for n in wanted}
    if os.path.isdir(frames):
        found = {}
        for name in _image_files(frames):
            match = _LAST_NUMBER.search(os.path.splitext(name)[0])
            if match and int(match.group(1)) in wanted_set:
                found[int(match.group(1))] = os.path.join(frames, name)
        missing = sorted(wanted_set - set(found))
        if missing:
            raise TrackletSourceError(
                f"--frames {frames}: no image for MOT frame {missing[0]} ({len(missing)} missing); "
                "expected files named by frame number, such as 000001.jpg for frame 1."
            )
        for number in sorted(found):
            frame = _read_frame(found[number], skip_bad)
            if frame is not None:
                yield number, found[number], frame[1]
        return
    if not os.path.isfile(frames):
        raise TrackletSourceError(f"--frames {frames!r}: no such folder or video file.")
    yield from _decode_video(frames, wanted_set)


def _decode_video(path: str, wanted: set[int]):
    """MOT frame n is the video's n-th frame (0-based index n - 1)."""
    last, decoded = max(wanted), 0
    for index, pixels in video_frames(path, {n - 1 for n in wanted}):
        decoded = index + 1
        yield decoded, f"{path}#{index}", pixels
    if decoded < last:
        raise TrackletSourceError(
            f"The video {path} ends before MOT frame {last}, which its track file lists."
        )


def video_frames(path: str, indices: set[int]):
    """Yields (0-based index, uint8 [H, W, 3]) of the video's frames at `indices`, in order,
    stopping after the last one or at the end of the video (needs PyAV)."""
    try:
        import av  # noqa: PLC0415  (optional: only video files need it)
    except ImportError:
        raise TrackletSourceError(
            f"Reading the video {path} needs PyAV: pip install -e '.[deploy]' (or save its frames "
            "as a folder of numbered images and pass that folder)."
        ) from None
    last = max(indices)
    try:
        with av.open(path) as container:
            for index, frame in enumerate(container.decode(video=0)):
                if index in indices:
                    yield index, frame.to_ndarray(format="rgb24")
                if index >= last:
                    return
    except (OSError, av.FFmpegError) as e:
        raise TrackletSourceError(f"Cannot decode the video {path}: {e}") from None


# ---------------------------------------------------------------------------------- to the model


def to_index(tracklets: list[Tracklet]) -> TrackletIndex:
    """The evaluation's in-memory index of `tracklets` (no identities: pids and labels are -1)."""
    cameras = {c: i for i, c in enumerate(sorted({t.camera for t in tracklets}))}
    n = len(tracklets)
    return TrackletIndex(
        frames=[t.frames for t in tracklets],
        pids=np.full(n, -1),
        labels=np.full(n, -1),
        camids=[cameras[t.camera] for t in tracklets],
        lengths=[len(t.frames) for t in tracklets],
        keys=[f"{t.camera}/{t.track_id}" for t in tracklets],
    )


def to_features(
    tracklets: list[Tracklet], features: np.ndarray, provenance: dict
) -> feature_file.TrackletFeatures:
    """The features file's rows for `tracklets` and their `features`."""
    k = feature_file.NUM_PREVIEWS
    previews = np.full((len(tracklets), k), "", dtype=object)
    boxes = np.full((len(tracklets), k, 4), np.nan, np.float32)
    for i, t in enumerate(tracklets):
        for j, (ref, box) in enumerate(t.previews):
            previews[i, j], boxes[i, j] = ref, box
    return feature_file.TrackletFeatures(
        features=features,
        track_ids=[t.track_id for t in tracklets],
        cameras=[t.camera for t in tracklets],
        first_frame=[t.frame_numbers[0] for t in tracklets],
        last_frame=[t.frame_numbers[-1] for t in tracklets],
        num_frames=[len(t.frames) for t in tracklets],
        sources=[t.source for t in tracklets],
        preview_frames=previews.astype(str),
        preview_boxes=boxes,
        provenance=provenance,
    )


# ---------------------------------------------------------------------------------- helpers

_WHOLE = (np.nan,) * 4  # A preview box meaning "the whole image".


def _subfolders(path: str) -> list[str]:
    return sorted(n for n in os.listdir(path) if os.path.isdir(os.path.join(path, n)))


def _image_files(path: str) -> list[str]:
    return sorted(
        n
        for n in os.listdir(path)
        if n.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(os.path.join(path, n))
    )


def _spread(count: int) -> list[int]:
    """Up to NUM_PREVIEWS positions spread evenly over `count` frames."""
    k = min(count, feature_file.NUM_PREVIEWS)
    return sorted({round(x) for x in np.linspace(0, count - 1, k)})


def _encode_png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _bad(message: str, skip_bad: bool) -> None:
    """Stops on bad input, or with `skip_bad` logs it and goes on (returns None)."""
    if not skip_bad:
        raise TrackletSourceError(f"{message} Pass --skip_bad to skip such input with a warning.")
    logging.warning("Skipped: %s", message)
    return None
