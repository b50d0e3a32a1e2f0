r"""Synthetic MARS and LS-VID at their real size, for measuring the full-scale paths.

  python -m data_prep.synthetic --layout mars --scale real --out /tmp/raw_mars --seed 0
  python -m data_prep.synthetic --layout lsvid --scale 0.25 --out /tmp/raw_lsvid [--nolink_frames]

What follows the real dataset: identities, tracklets and frames of every split, junk and distractor
tracklets, cameras, the tracklet-length distribution (its published bounds and mean; lognormal
shapes fitted to the published quantiles where there are some, assumed where there are none) and
the bytes per frame (MARS: about 4.9 KB, a 256x128 JPEG). `scale` < 1 shrinks every count in
proportion and keeps the lengths and the bytes per frame. What does not: the pixels. Rendering a
million frames would take hours, so a pool of a few thousand rendered frames, JPEG-encoded at the
quality that gives the real bytes per frame, is reused: a tracklet is a run of consecutive pool
frames from a random start, so identity is not in the pixels; only sizes and counts are real.
Frames are hard links to the first file written with the same bytes (`link_frames`, the default:
real MARS takes ~0.1 GB of disk against ~9 GB (5.8 GB of file data) as copies, and is quicker to
write; the files read the same either way) or plain copies.

The layouts themselves are written by `data_prep.synthetic_layouts` from the plan built here, so
the real parsers (`data_prep.mars`, `data_prep.lsvid`) and `python -m data_prep.build` read them.
"""

from __future__ import annotations

import dataclasses
import errno
import io
import os

import numpy as np
from PIL import Image

from data_prep import render
from data_prep.index import DataPrepError
from data_prep.synthetic_layouts import _assign_cameras  # the rendered layouts' camera draw

LAYOUTS = ("mars", "lsvid")


@dataclasses.dataclass(frozen=True)
class Group:
    """Tracklets of one kind: how many, their frames in all, length bounds and shape.

    `pins` are published extreme lengths that must occur (kept while the scaled group is large
    enough to hold them); `sigma` is the lognormal shape of the lengths.
    """

    tracklets: int
    frames: int
    min_len: int
    max_len: int
    sigma: float
    pins: tuple[int, ...] = ()


# MARS, verified (recomputed from the released info/*.mat). Test persons are split into
# queries and the gallery's person tracklets (gallery torchreid 9,330 - 3,248 distractors; frames
# 543,216 - 147,743). Lengths: train 1.0% < 8 and 34% >= 64 frames give a lognormal of shape 0.76
# (median 47, mean 62); the test set's median 30 and 29% >= 64 are best met by shape 1.0 per group
# (the per-group shape is not published). The longest test tracklet (920) is put in the gallery.
MARS_GROUPS = {
    "train": Group(8298, 509914, 5, 900, 0.76, pins=(5, 900)),
    "query": Group(1980, 114493, 2, 880, 1.0, pins=(2, 880)),
    "gallery": Group(6082, 395473, 2, 920, 1.0, pins=(920,)),
    "distractor": Group(3248, 147743, 2, 920, 1.0),
    "junk": Group(870, 23380, 2, 920, 1.0),
}
MARS_TRAIN_IDS = 625  # odd pids of 1..1499
MARS_TRAIN_PER_ID = (1, 271)  # tracklets per train pid: min, max (median 10, mean 13.3)
MARS_QUERY_IDS = 626  # test pids seen by >= 2 cameras: one query per (pid, camera)
MARS_QUERY_ONLY_IDS = 14  # of those, pids with no gallery tracklet (626 query ids, 620 in gallery)
MARS_SINGLE_CAMERA_IDS = 8  # test pids seen by one camera: gallery only (634 test pids in all)
MARS_UNMATCHED_QUERIES = 140  # queries with no cross-camera match in the gallery without queries

# LS-VID, peer loaders' docstrings (unverified), and its paper (Li et al., ICCV 2019: 3,772 ids, 14,943
# sequences, 2,982,685 frames; train 842 ids / 550,419 frames, validation 200 ids / 155,191 frames,
# test 2,730 ids / 2,277,075 frames). The validation set (779 tracklets) is not written: no parser
# reads it. Query and gallery frames are not published separately: the test lengths are drawn
# together. The length bounds and shape are not published: lognormal of MARS's train shape, mean
# ~200 as published, lengths 5..2000 (an assumption).
LSVID_GROUPS = {
    "train": Group(2831, 550419, 5, 2000, 0.76),
    "test": Group(3504 + 7829, 2277075, 5, 2000, 0.76),
}
LSVID_IDS = {"train": 842, "test": 2730}
LSVID_QUERIES = 3504  # 2,730 test pids: one query each, a second one (other camera) for 774
LSVID_ALL_IDS = 3772  # pids are drawn from 1..3772 (the 200 validation pids are left out)
# Tracklets per pid: the mean is ~3.4 (train) and ~4.2 (test); the bounds are an assumption.
LSVID_TRACKLETS_PER_ID = (1, 40)

# Bytes per frame: MARS's 1,191,003 frames are 256x128 JPEGs of ~4.9 KB (~5.8 GB in all). LS-VID's
# crops are larger and of varying size (not published): they are drawn 1-1.6x larger than MARS's,
# at the same JPEG quality, so they average ~1.7x MARS's bytes (an assumption).
MARS_BYTES_PER_FRAME = 4900
FRAME_SIZE = (256, 128)
LSVID_CROP_SCALE = (1.0, 1.6)
POOL_SIZE = 4096  # distinct frames at full scale; fewer at small scales, never under 64


def parse_scale(value) -> float:
    """'real' -> 1.0; a number in (0, 1] (or its text) -> that fraction of the real dataset."""
    if isinstance(value, str) and value.strip().lower() == "real":
        return 1.0
    try:
        scale = float(value)
    except (TypeError, ValueError):
        scale = float("nan")
    if not 0 < scale <= 1:  # also refuses NaN
        raise DataPrepError(f"scale must be 'real' or a fraction in (0, 1], got {value!r}")
    return scale


def heavy_tailed(rng, n: int, total: int, lo: int, hi: int, sigma: float, pins=()) -> np.ndarray:
    """`n` integers in [lo, hi] summing exactly to `total`, lognormal of shape `sigma`, in random
    order; the values in `pins` (published extremes) are among them.

    The lognormal is rescaled (and clipped) until its sum is `total`, then the rounding residue is
    spread one unit at a time over values that stay within the bounds.
    """
    pins = list(pins) if n > 2 * len(pins) else []  # a tiny group keeps no published extreme
    rest_n, rest = n - len(pins), total - sum(pins)
    if not rest_n * lo <= rest <= rest_n * hi:
        raise DataPrepError(f"cannot draw {n} values in [{lo}, {hi}] summing to {total}")
    x = rng.lognormal(0.0, sigma, rest_n)
    for _ in range(100):  # clipping moves the sum: a few rounds converge
        x = np.clip(x * rest / max(x.sum(), 1e-9), lo, hi)
    x = np.clip(np.round(x), lo, hi).astype(np.int64)
    while (diff := rest - int(x.sum())) != 0:
        step = 1 if diff > 0 else -1
        room = np.flatnonzero((x + step >= lo) & (x + step <= hi))
        x[rng.choice(room, size=min(abs(diff), room.size), replace=False)] += step
    out = np.concatenate([np.asarray(pins, np.int64), x])
    rng.shuffle(out)
    return out


def _scaled_lengths(rng, group: Group, n: int) -> list[int]:
    """Lengths of `n` tracklets of `group`: the real mean, bounds and shape; the published extremes
    only while they stay a small part (<= 10%) of the scaled group's frames."""
    total = round(group.frames * n / group.tracklets)
    pins = [p for p in group.pins if p <= 0.1 * total]
    return heavy_tailed(rng, n, total, group.min_len, group.max_len, group.sigma, pins).tolist()


def _fill_lengths(rng, plan: list[list], groups: dict[str, Group]) -> list[tuple]:
    """Replaces the group name in slot 3 of each planned tracklet by a length drawn for its group."""
    for name, group in groups.items():
        members = [t for t in plan if t[3] == name]
        for t, length in zip(members, _scaled_lengths(rng, group, len(members)), strict=True):
            t[3] = length
    return [tuple(t) for t in plan]


def mars_plan(rng, scale: float) -> list[tuple]:
    """Every MARS tracklet as (subset, pid, camera 1-6, length, is_query), real counts x scale."""
    count = lambda x, least=0: max(least, round(x * scale))
    plan = []
    # Train: a heavy-tailed number of tracklets per pid (median 10, up to 271), 2-4 cameras each.
    n_train = count(MARS_TRAIN_IDS, 1)
    pids = sorted(rng.choice(np.arange(1, 1500, 2), size=n_train, replace=False).tolist())
    n_tracklets = count(MARS_GROUPS["train"].tracklets, n_train)
    lo, hi = MARS_TRAIN_PER_ID
    pins = [p for p in (lo, hi) if p <= 0.1 * n_tracklets]
    per_id = heavy_tailed(rng, n_train, n_tracklets, lo, hi, 0.76, pins)
    for pid, k in zip(pids, per_id.tolist(), strict=True):
        plan += [["train", pid, cam, "train", False] for cam in _assign_cameras(rng, k, 6)]
    # Test persons: one query per (pid, camera) of the pids seen by >= 2 cameras; some pids have
    # queries only, some one camera only (no query), and some their whole gallery in one camera
    # (one query without a cross-camera match each), as many as make the real 140 unmatched.
    n_multi = count(MARS_QUERY_IDS, 1)
    n_single = count(MARS_SINGLE_CAMERA_IDS)
    n_queries = min(max(count(MARS_GROUPS["query"].tracklets), 2 * n_multi), 6 * n_multi)
    cams_per_id = np.full(n_multi, 2)
    for _ in range(n_queries - 2 * n_multi):
        cams_per_id[rng.choice(np.flatnonzero(cams_per_id < 6))] += 1
    order = rng.permutation(n_multi)
    order = order[np.argsort(cams_per_id[order], kind="stable")]  # fewest cameras first
    query_only = set(order[: count(MARS_QUERY_ONLY_IDS)].tolist())
    n_one_cam = count(MARS_UNMATCHED_QUERIES) - int(cams_per_id[list(query_only)].sum())
    one_cam = set(order[len(query_only) :][: max(0, n_one_cam)].tolist())
    # Gallery tracklets per pid: at least one (two, in two cameras, for a pid with queries that
    # all have a match), the rest heavy-tailed like the train set.
    in_gallery = [i for i in range(n_multi + n_single) if i not in query_only]
    least = np.array([1 if i in one_cam or i >= n_multi else 2 for i in in_gallery], np.int64)
    n_gallery = max(count(MARS_GROUPS["gallery"].tracklets), int(least.sum()))
    extra = heavy_tailed(rng, len(in_gallery), n_gallery - int(least.sum()), 0, hi, 0.76)
    gallery = dict(zip(in_gallery, (least + extra).tolist(), strict=True))
    test_pids = rng.choice(np.arange(2, 1501, 2), size=n_multi + n_single, replace=False)
    for i, pid in enumerate(test_pids.tolist()):
        k = gallery.get(i, 0)
        if i >= n_multi:  # seen by one camera: no query
            cams = [int(rng.integers(1, 7))] * k
        else:
            own = (rng.choice(6, size=cams_per_id[i], replace=False) + 1).tolist()
            plan += [["test", pid, cam, "query", True] for cam in own]
            if i in one_cam:
                cams = [int(rng.choice(own))] * k
            else:
                cams = own[:2][:k] + rng.choice(own, size=max(0, k - 2)).tolist()
        plan += [["test", pid, int(cam), "gallery", False] for cam in cams]
    for pid, name in ((0, "distractor"), (-1, "junk")):
        for _ in range(count(MARS_GROUPS[name].tracklets)):
            plan.append(["test", pid, int(rng.integers(1, 7)), name, False])
    return _fill_lengths(rng, plan, MARS_GROUPS)


def lsvid_plan(rng, scale: float) -> list[tuple]:
    """Every LS-VID tracklet as (stem, pid, camera 1-15, length, is_query) in list order (pids
    ascending), real counts x scale."""
    count = lambda x, least=1: max(least, round(x * scale))
    n_train, n_test = count(LSVID_IDS["train"]), count(LSVID_IDS["test"])
    pids = rng.permutation(np.arange(1, LSVID_ALL_IDS + 1)).tolist()
    lo, hi = LSVID_TRACKLETS_PER_ID
    plan = []
    n_tracklets = count(LSVID_GROUPS["train"].tracklets, n_train)
    per_id = heavy_tailed(rng, n_train, n_tracklets, lo, hi, 0.76).tolist()
    for pid, k in sorted(zip(pids[:n_train], per_id, strict=True)):
        plan += [["train", pid, cam, "train", False] for cam in _assign_cameras(rng, k, 15)]
    # One or two queries per test pid (in distinct cameras) and >= 1 gallery tracklet in yet
    # another camera, so every query has a cross-camera match (not published; assumed).
    n_tracklets = count(LSVID_GROUPS["test"].tracklets, 2 * n_test)
    n_queries = min(max(count(LSVID_QUERIES), n_test), 2 * n_test, n_tracklets - n_test)
    queries = np.ones(n_test, np.int64)
    queries[rng.choice(n_test, size=n_queries - n_test, replace=False)] = 2
    extra = heavy_tailed(rng, n_test, n_tracklets - n_queries - n_test, 0, hi - 3, 0.76)
    test = zip(pids[n_train:][:n_test], queries.tolist(), (1 + extra).tolist(), strict=True)
    for pid, q, g in sorted(test):
        cams = (rng.choice(15, size=q + 1, replace=False) + 1).tolist()
        rows = [(c, True) for c in cams[:q]]
        rows += [(c, False) for c in [cams[-1], *rng.choice(cams, size=g - 1).tolist()]]
        # A pid's query and gallery rows interleave in the list (its rows are one person's).
        plan += [["test", pid, rows[j][0], "test", rows[j][1]] for j in rng.permutation(len(rows))]
    return _fill_lengths(rng, plan, LSVID_GROUPS)


def _jpeg(frame: np.ndarray, quality: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(frame).save(out, format="JPEG", quality=quality)
    return out.getvalue()


def _mean_bytes(frames, quality: int) -> float:
    return float(np.mean([len(_jpeg(f, quality)) for f in frames]))


def _render_run(rng, cameras) -> np.ndarray:
    """32 frames of one rendered person in one camera: uint8 [32, 256, 128, 3]."""
    identity = render.identity_from_code(int(rng.integers(np.prod(render.TRAIT_SIZES))))
    return render.render_person(rng, identity, cameras[int(rng.integers(len(cameras)))], 32, 1.0)


def frame_pool(rng, size: int, large_crops: bool) -> tuple[list[bytes], int]:
    """`size` distinct JPEG frames of rendered people, at the JPEG quality that gives MARS's bytes
    per frame at 256x128; LS-VID's (`large_crops`) are enlarged 1-1.6x per run of 32 frames.

    Returns:
      (encoded frames, JPEG quality).
    """
    height, width = FRAME_SIZE
    cameras = render.make_cameras(rng, 6, height, width, 1.0)
    n_runs = -(-size // 32)
    first = [_render_run(rng, cameras) for _ in range(min(8, n_runs))]
    # The quality whose mean size is nearest the target, by bisection on the first runs.
    sample, lo, hi = np.concatenate(first), 1, 95
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if _mean_bytes(sample, mid) < MARS_BYTES_PER_FRAME else (lo, mid)
    miss = lambda q: abs(_mean_bytes(sample, q) - MARS_BYTES_PER_FRAME)
    quality = min((max(1, lo - 1), lo), key=miss)
    pool = []
    for r in range(n_runs):
        frames = first[r] if r < len(first) else _render_run(rng, cameras)
        if large_crops:
            s = rng.uniform(*LSVID_CROP_SCALE)
            size_wh = (round(width * s), round(height * s))
            frames = [Image.fromarray(f).resize(size_wh, Image.Resampling.BILINEAR) for f in frames]
            frames = [np.asarray(f) for f in frames]
        pool += [_jpeg(f, quality) for f in frames]
    return pool[:size], quality


class PoolScene:
    """Stands in for `synthetic.Scene` in the layout writers: the tracklets are fixed by `plan`,
    and a tracklet's frames are a run of consecutive pool frames from a random start."""

    def __init__(self, rng, plan: list[tuple], pool: list[bytes], link_frames: bool):
        self.rng = rng
        self.plan = plan
        self.pool = pool
        self.link_frames = link_frames
        self._first_file: dict[int, str] = {}  # pool index -> first path written with it

    def frames(self, pid: int, camid: int, length: int, *, resize: bool = False) -> np.ndarray:
        """Pool indices of one tracklet (the pool already has the layout's frame sizes)."""
        del pid, camid, resize
        return (int(self.rng.integers(len(self.pool))) + np.arange(length)) % len(self.pool)

    def write(self, folder: str, names: list[str], frames, image_format: str) -> None:
        """Writes the pool frames `frames` as `folder`/`names`: a hard link to the first file with
        the same bytes, or a copy (also when that file has the most links the disk allows)."""
        del image_format  # the pool is JPEG, as MARS and LS-VID are
        os.makedirs(folder, exist_ok=True)
        for name, i in zip(names, frames.tolist(), strict=True):
            path = os.path.join(folder, name)
            if self.link_frames and i in self._first_file:
                try:
                    os.link(self._first_file[i], path)
                    continue
                except OSError as e:
                    if e.errno != errno.EMLINK:
                        raise
            with open(path, "wb") as f:
                f.write(self.pool[i])
            self._first_file[i] = path


def make_scene(layout: str, seed: int, scale, link_frames: bool = True) -> tuple[PoolScene, dict]:
    """The scene and spec that `synthetic_layouts.write_<layout>` writes a real-scale dataset from.

    Returns:
      (scene, spec): spec records `scale`, `link_frames`, `pool_size`, `jpeg_quality`,
      `bytes_per_frame` (pool mean), `max_len`, and the planned `tracklets` and `frames`.
    """
    if layout not in LAYOUTS:
        raise DataPrepError(f"scale is available for {LAYOUTS}, not {layout!r}")
    scale = parse_scale(scale)
    rng = np.random.default_rng(seed)
    plan = mars_plan(rng, scale) if layout == "mars" else lsvid_plan(rng, scale)
    pool_size = min(POOL_SIZE, max(64, round(POOL_SIZE * scale)))
    pool, quality = frame_pool(rng, pool_size, large_crops=layout == "lsvid")
    spec = {
        "scale": scale,
        "link_frames": link_frames,
        "pool_size": pool_size,
        "jpeg_quality": quality,
        "bytes_per_frame": float(np.mean([len(b) for b in pool])),
        "max_len": max(t[3] for t in plan),
        "tracklets": len(plan),
        "frames": sum(t[3] for t in plan),
    }
    return PoolScene(rng, plan, pool, link_frames), spec
