r"""Synthetic re-ID datasets in the real on-disk layouts.

  python -m data_prep.synthetic --layout mars --out /tmp/raw_mars --seed 0 \
      [--num_ids 64 --tracklets_per_id 4 --min_len 8 --max_len 48 --height 128 --width 64 \
       --difficulty 1.0]
  python -m data_prep.synthetic --layout mars --scale real --out /tmp/raw_mars --seed 0 \
      [--nolink_frames]      # MARS or LS-VID with the real statistics; --scale 0.1 for a tenth

Real datasets must be requested from their authors, so the demo, the tests and the notebook use
rendered people (`data_prep.render`: identities differ by combinations of traits, not by colour
alone, so training matters) written exactly like each release (`data_prep.synthetic_layouts`):
the same converters then read them. The output is a pure function of the arguments and the seed,
and is written to a temporary sibling folder that is renamed into place only when complete.

`scale` ('real' or a fraction in (0, 1]; MARS and LS-VID) writes instead a dataset with the real
dataset's statistics, scaled: identities, tracklets and frames per split, junk and distractors,
cameras, tracklet lengths and bytes per frame, for measuring the full-scale paths without the real
data (`data_prep.real_scale`). Its frames are reused JPEGs of rendered people, hard links to each
other unless `link_frames` is off: only sizes and counts are real, the content is not learnable.
`benchmarks/scale.py` times writing it (its `generate` step). The size arguments do not apply then.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
from absl import app, flags
from PIL import Image

from data_prep import quiet_tensorflow_logs, real_scale, render, synthetic_layouts
from data_prep.index import DataPrepError
from data_prep.names import NAMES

# Per layout: how many cameras the release has.
_NUM_CAMERAS = {"mars": 6, "dukev": 8, "ilidsvid": 2, "prid2011": 2, "lsvid": 15}
# DukeMTMC-VideoReID and LS-VID ship large crops of varying size: tracklets are written this much
# larger than the requested size (a random factor per tracklet), so `--resize` has work to do.
_LARGE_CROP_SCALE = (1.0, 1.6)


class Scene:
    """Rendering state shared by a layout writer: identities, cameras, lengths, image writing."""

    # No fixed list of tracklets: the layout writers draw them from `spec` (see `real_scale`).
    plan = None

    def __init__(self, seed: int, spec: dict, num_cameras: int):
        self.rng = np.random.default_rng(seed)
        self.spec = spec
        # Traits are drawn without replacement, so no two persons look alike by construction.
        self._codes = iter(self.rng.permutation(int(np.prod(render.TRAIT_SIZES))).tolist())
        self._identities: dict[int, render.Identity] = {}
        self.cameras = render.make_cameras(
            self.rng, num_cameras, spec["height"], spec["width"], spec["difficulty"]
        )

    def length(self) -> int:
        """A tracklet length drawn uniformly from [min_len, max_len]."""
        return int(self.rng.integers(self.spec["min_len"], self.spec["max_len"] + 1))

    def identity(self, pid: int) -> render.Identity:
        if pid not in self._identities:
            self._identities[pid] = render.identity_from_code(next(self._codes))
        return self._identities[pid]

    def frames(self, pid: int, camid: int, length: int, *, resize: bool = False) -> np.ndarray:
        """Renders a tracklet: pid 0 is a distractor, -1 junk, anything else a person."""
        camera, difficulty = self.cameras[camid], self.spec["difficulty"]
        if pid in (0, -1):
            frames = render.render_clutter(self.rng, camera, length, difficulty, junk=pid == -1)
        else:
            frames = render.render_person(self.rng, self.identity(pid), camera, length, difficulty)
        if resize:
            scale = self.rng.uniform(*_LARGE_CROP_SCALE)
            size = (round(frames.shape[2] * scale), round(frames.shape[1] * scale))
            frames = [
                np.asarray(Image.fromarray(f).resize(size, Image.Resampling.BILINEAR))
                for f in frames
            ]
        return frames

    def write(self, folder: str, names: list[str], frames, image_format: str) -> None:
        """Encodes `frames` as JPEG (quality 90) or PNG into `folder`/`names`."""
        os.makedirs(folder, exist_ok=True)
        for name, frame in zip(names, frames, strict=True):
            image = Image.fromarray(frame)
            if image_format == "jpeg":
                image.save(os.path.join(folder, name), format="JPEG", quality=90)
            else:
                image.save(os.path.join(folder, name), format="PNG", compress_level=1)


def _check_args(layout, num_ids, tracklets_per_id, min_len, max_len, height, width, difficulty):
    if layout not in NAMES:
        raise DataPrepError(f"Unknown layout {layout!r}; expected one of {NAMES}")
    if num_ids < 2 or tracklets_per_id < 1:
        raise DataPrepError("num_ids must be >= 2 and tracklets_per_id >= 1")
    if not 1 <= min_len <= max_len:
        raise DataPrepError(f"Need 1 <= min_len <= max_len, got {min_len}, {max_len}")
    if height < 16 or width < 8:
        raise DataPrepError(f"Frames of {height}x{width} are too small to draw a person")
    if difficulty < 0:
        raise DataPrepError(f"difficulty must be >= 0, got {difficulty}")


def generate(
    layout: str,
    out_dir: str,
    seed: int = 0,
    *,
    num_ids: int | None = None,
    tracklets_per_id: int | None = None,
    min_len: int | None = None,
    max_len: int | None = None,
    height: int = 128,
    width: int = 64,
    difficulty: float = 1.0,
    distractor_fraction: float = synthetic_layouts.MARS_DISTRACTOR_FRACTION,
    junk_fraction: float = synthetic_layouts.MARS_JUNK_FRACTION,
    scale: str | float | None = None,
    link_frames: bool = True,
) -> dict:
    """Writes a synthetic dataset in the real layout `layout` and returns its ground truth.

    Args:
      layout: 'mars', 'dukev', 'ilidsvid', 'prid2011' or 'lsvid'.
      out_dir: folder to create (it may exist only if empty).
      seed: the output is a pure function of the arguments and this seed.
      num_ids: identities per split: train and test each (iLIDS-VID, PRID-2011: persons in the
        protocol, split in halves by the 10 published-style splits).
      tracklets_per_id: tracklets per identity (iLIDS-VID, PRID-2011: always one per camera).
      min_len, max_len: tracklet lengths are uniform in [min_len, max_len] (PRID-2011 protocol
        persons get at least 27 frames, as its filter demands).
      height, width: frame size (DukeMTMC-VideoReID and LS-VID tracklets are 1-1.6x larger).
      difficulty: scales every nuisance (camera cast, jitter, blur, noise, occlusions); 0 gives
        clean, centred people.
      distractor_fraction, junk_fraction: MARS only: shares of the test rows that are distractors
        (pid 0) and junk (pid -1); the defaults are MARS's own.
      scale: 'mars' and 'lsvid' only: 'real' or a fraction in (0, 1] writes the real dataset's
        statistics times `scale` (`data_prep.real_scale`); the size arguments above are then
        not used. None (the default): the rendered dataset sized by those arguments.
      link_frames: with `scale`: frames with the same bytes are hard links to one file (fast and
        small on disk) rather than copies.

    Returns:
      `{'layout', 'seed', 'spec', 'tracklets', 'splits'}`: `tracklets` is one dict per stored
      tracklet sorted by key (`key`, `split`, `pid`, `camid`, `frame_numbers`, `frame_files`
      relative to `out_dir`, `is_junk`, `is_distractor`), `splits` the iLIDS-VID/PRID-2011 split
      definitions (`{'train': [pids], 'test': [pids]}` each) or []. With `scale`, `spec` is
      `real_scale.make_scene`'s.
    """
    if scale is None:
        if None in (num_ids, tracklets_per_id, min_len, max_len):
            raise DataPrepError("num_ids, tracklets_per_id, min_len and max_len are required")
        _check_args(layout, num_ids, tracklets_per_id, min_len, max_len, height, width, difficulty)
    elif layout not in real_scale.LAYOUTS:
        raise DataPrepError(f"scale is available for {real_scale.LAYOUTS}, not {layout!r}")
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        raise DataPrepError(
            f"{out_dir!r} is not empty; synthetic data is only written to a new folder"
        )
    if scale is None:
        spec = {
            "num_ids": num_ids,
            "tracklets_per_id": tracklets_per_id,
            "min_len": min_len,
            "max_len": max_len,
            "height": height,
            "width": width,
            "difficulty": difficulty,
            "distractor_fraction": distractor_fraction,
            "junk_fraction": junk_fraction,
        }
    else:
        scene, spec = real_scale.make_scene(layout, seed, scale, link_frames)
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.tmp-", dir=parent)
    try:
        if scale is None:
            scene = Scene(seed, spec, _NUM_CAMERAS[layout])
        result = getattr(synthetic_layouts, f"write_{layout}")(scene, tmp, spec)
        truth, splits = result if isinstance(result, tuple) else (result, [])
        if os.path.isdir(out_dir):
            os.rmdir(out_dir)
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    tracklets = sorted(truth, key=lambda t: t["key"])
    return {"layout": layout, "seed": seed, "spec": spec, "tracklets": tracklets, "splits": splits}


FLAGS = flags.FLAGS


def _define_flags() -> None:
    # Defined only when run as a script, so importing this module never claims global flag names.
    flags.DEFINE_enum("layout", None, list(NAMES), "Real dataset layout to write.")
    flags.DEFINE_string("out", None, "Folder to create.")
    flags.DEFINE_integer("seed", 0, "Random seed.")
    flags.DEFINE_integer("num_ids", 64, "Identities per split (train and test each).")
    flags.DEFINE_integer("tracklets_per_id", 4, "Tracklets per identity.")
    flags.DEFINE_integer("min_len", 8, "Shortest tracklet (frames).")
    flags.DEFINE_integer("max_len", 48, "Longest tracklet (frames).")
    flags.DEFINE_integer("height", 128, "Frame height.")
    flags.DEFINE_integer("width", 64, "Frame width.")
    flags.DEFINE_float("difficulty", 1.0, "Scale of every nuisance (0 = clean).")
    flags.DEFINE_string(
        "scale",
        None,
        "mars, lsvid: 'real' or a fraction in (0, 1]: the real dataset's statistics, scaled "
        "(the size flags above do not apply).",
    )
    flags.DEFINE_bool("link_frames", True, "With --scale: hard-link repeated frames, not copy.")
    flags.mark_flags_as_required(["layout", "out"])


_SIZE_FLAGS = ("num_ids", "tracklets_per_id", "min_len", "max_len", "height", "width", "difficulty")


def main(argv):
    del argv
    quiet_tensorflow_logs()
    given = [f"--{name}" for name in _SIZE_FLAGS if FLAGS[name].present]
    if FLAGS.scale is not None and given:
        raise SystemExit(f"error: {', '.join(given)} do not apply with --scale")
    try:
        truth = generate(
            FLAGS.layout,
            FLAGS.out,
            FLAGS.seed,
            num_ids=FLAGS.num_ids,
            tracklets_per_id=FLAGS.tracklets_per_id,
            min_len=FLAGS.min_len,
            max_len=FLAGS.max_len,
            height=FLAGS.height,
            width=FLAGS.width,
            difficulty=FLAGS.difficulty,
            scale=FLAGS.scale,
            link_frames=FLAGS.link_frames,
        )
    except DataPrepError as e:
        raise SystemExit(f"error: {e}") from None
    counts: dict[str, int] = {}
    for t in truth["tracklets"]:
        counts[t["split"]] = counts.get(t["split"], 0) + 1
    frames = sum(len(t["frame_numbers"]) for t in truth["tracklets"])
    print(f"{FLAGS.layout} -> {FLAGS.out}: {counts} tracklets, {frames} frames")
    if FLAGS.scale is not None:
        spec = truth["spec"]
        print(
            f"  {spec['bytes_per_frame']:.0f} bytes per frame (JPEG quality {spec['jpeg_quality']})"
        )


if __name__ == "__main__":
    _define_flags()
    app.run(main)
