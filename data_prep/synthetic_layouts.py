"""Writers of the five real on-disk layouts, filled with rendered synthetic people.

Each `write_<layout>(scene, root, spec)` writes the raw tree exactly as the real dataset ships it
(file names, name lists with their line ends, `.mat` tables, split files) and returns the ground
truth: one dict per tracklet with the key, stored split, pid, camera, frame numbers and frame files
(relative to `root`) that the parser is expected to recover. The facts about each layout are the
ones the parsers follow (each parser's docstring states them).

MARS and LS-VID also take a fixed plan (`scene.plan`, from `data_prep.real_scale`): every tracklet
as `(subset, pid, camera, length, is_query)`, so a plan with the real statistics is written by the
same code as the small rendered datasets.
"""

from __future__ import annotations

import io
import itertools
import os

import h5py
import numpy as np
import scipy.io

from data_prep.published_splits import NUM_SPLITS

# MARS test-set composition (released info/*.mat): 3,248 distractor and 870 junk rows of 12,180.
MARS_DISTRACTOR_FRACTION = 3248 / 12180
MARS_JUNK_FRACTION = 870 / 12180
# DukeMTMC-VideoReID: 408 gallery-only distractor identities next to 702 test identities.
DUKE_DISTRACTOR_ID_RATIO = 408 / 702
PRID_SHORT_RATIO = 22 / 178  # persons of 1..200 that fail the 27-frame filter, per kept person


def _savemat(path: str, variables: dict) -> None:
    """`scipy.io.savemat` with a fixed header text: scipy stamps the current time into the
    116-byte descriptive header, which would make the output differ between runs."""
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, variables)
    header = b"MATLAB 5.0 MAT-file, Platform: synthetic, Created on: Thu Jan  1 00:00:00 1970"
    with open(path, "wb") as f:
        f.write(header.ljust(116) + buffer.getvalue()[116:])


def _assign_cameras(rng, count: int, num_cameras: int) -> list[int]:
    """1-based cameras for `count` tracklets of one person: at least two cameras when count >= 2."""
    k = min(count, num_cameras, int(rng.integers(2, 5)))
    chosen = (rng.choice(num_cameras, size=k, replace=False) + 1).tolist()
    return chosen + [int(c) for c in rng.choice(chosen, size=count - k)]


def _entry(key, split, pid, camid, numbers, files, *, junk=False, distractor=False) -> dict:
    return {
        "key": key,
        "split": split,
        "pid": int(pid),
        "camid": int(camid),
        "frame_numbers": [int(n) for n in numbers],
        "frame_files": files,
        "is_junk": junk,
        "is_distractor": distractor,
    }


def _mars_tracks(scene, spec) -> list[tuple]:
    """(subset, pid, camera, length, is_query) of every MARS tracklet, before naming; `is_query`
    is None: the queries are drawn from the written test table (`_mars_query_rows`)."""
    rng, n, k = scene.rng, spec["num_ids"], spec["tracklets_per_id"]
    tracks = []
    for subset, pids in (("train", range(1, 2 * n, 2)), ("test", range(2, 2 * n + 1, 2))):
        for pid in pids:
            for cam in _assign_cameras(rng, k, 6):
                tracks.append((subset, pid, cam, scene.length(), None))
    fractions = (spec["distractor_fraction"], spec["junk_fraction"])
    total_test = round(n * k / (1 - sum(fractions)))
    for pid, fraction in zip((0, -1), fractions, strict=True):
        for _ in range(round(total_test * fraction)):
            tracks.append(("test", pid, int(rng.integers(1, 7)), scene.length(), None))
    return tracks


def write_mars(scene, root: str, spec: dict) -> list[dict]:
    """MARS: `bbox_{train,test}/<pid4>/` frames, `info/` name lists (\\r\\n) and `.mat` tables."""
    if spec["max_len"] > 999:
        raise ValueError("MARS frame names hold 3 digits: max_len must be <= 999")
    rng = scene.rng
    plan = scene.plan
    counters: dict[tuple, int] = {}
    named = []
    for subset, pid, cam, length, is_query in plan or _mars_tracks(scene, spec):
        counters[(subset, pid, cam)] = counters.get((subset, pid, cam), 0) + 1
        pid_str = "00-1" if pid == -1 else f"{pid:04d}"
        prefix = f"{pid_str}C{cam}T{counters[(subset, pid, cam)]:04d}"
        named.append((subset, prefix, pid, cam, length, is_query))
    os.makedirs(os.path.join(root, "info"))
    truth = []
    for subset in ("train", "test"):
        # Name lists are sorted by name, so tracklets tile them contiguously, as in the release.
        tracks = sorted((t for t in named if t[0] == subset), key=lambda t: t[1])
        names, table = [], []
        for _, prefix, pid, cam, length, _ in tracks:
            files = [f"{prefix}F{f:03d}.jpg" for f in range(1, length + 1)]
            folder = os.path.join(root, f"bbox_{subset}", prefix[:4])
            scene.write(folder, files, scene.frames(pid, cam - 1, length), "jpeg")
            table.append([len(names) + 1, len(names) + length, pid, cam])
            names.extend(files)
        with open(os.path.join(root, "info", f"{subset}_name.txt"), "w", newline="") as f:
            f.write("".join(name + "\r\n" for name in names))
        _savemat(
            os.path.join(root, "info", f"tracks_{subset}_info.mat"),
            {f"track_{subset}_info": np.asarray(table, np.float64).reshape(-1, 4)},
        )
        query = set()
        if subset == "test":
            query = {row for row, t in enumerate(tracks) if t[5]}
            if not plan:
                query = _mars_query_rows(rng, table)
            _savemat(
                os.path.join(root, "info", "query_IDX.mat"),
                {"query_IDX": np.asarray(sorted(query), np.float64)[None] + 1},
            )
        for row, ((_, prefix, pid, cam, length, _), (start, _, _, _)) in enumerate(
            zip(tracks, table, strict=True)
        ):
            split = "train" if subset == "train" else ("query" if row in query else "gallery")
            files = [
                os.path.join(f"bbox_{subset}", prefix[:4], n)
                for n in names[start - 1 : start - 1 + length]
            ]
            truth.append(
                _entry(
                    f"mars/{subset}/{prefix}",
                    split,
                    pid,
                    cam - 1,
                    range(1, length + 1),
                    files,
                    junk=pid == -1,
                    distractor=pid == 0,
                )
            )
    return truth


def _mars_query_rows(rng, table) -> set[int]:
    """0-based query rows drawn as in `query_IDX`: one random tracklet per (pid, camera) of the
    persons seen by at least two cameras."""
    by_pid: dict[int, dict[int, list[int]]] = {}
    for row, (_, _, pid, cam) in enumerate(table):
        if pid > 0:
            by_pid.setdefault(pid, {}).setdefault(cam, []).append(row)
    rows = {int(rng.choice(r)) for cams in by_pid.values() if len(cams) >= 2 for r in cams.values()}
    return rows


def _duke_numbers(rng, length: int) -> list[int]:
    """Frame numbers with the release's quirks: not always starting at 1, with gaps."""
    steps = np.where(rng.random(length) < 0.1, 2, 1)
    return (int(rng.integers(1, 4)) + np.cumsum(steps) - steps[0]).tolist()


def write_dukev(scene, root: str, spec: dict) -> list[dict]:
    """DukeMTMC-VideoReID: `{train,query,gallery}/<pid4>/<tracklet4>/<pid4>_C<c>_F<f>_X<g>.jpg`."""
    rng, n, k = scene.rng, spec["num_ids"], spec["tracklets_per_id"]
    n_dis = max(1, round(n * DUKE_DISTRACTOR_ID_RATIO))
    pids = rng.choice(np.arange(1, 10000), size=2 * n + n_dis, replace=False).tolist()
    roles = ["train"] * n + ["test"] * n + ["distractor"] * n_dis
    truth = []
    for pid, role in zip(pids, roles, strict=True):
        count = k if role != "distractor" else int(rng.integers(1, 3))
        trk_ids = sorted(rng.choice(np.arange(1, 10000), size=count, replace=False).tolist())
        query_trk = trk_ids[int(rng.integers(count))] if role == "test" else None
        for trk, cam in zip(trk_ids, _assign_cameras(rng, count, 8), strict=True):
            numbers = _duke_numbers(rng, scene.length())
            mark = "D" if role == "distractor" else "X"
            base = int(rng.integers(0, 50000))
            files = [f"{pid:04d}_C{cam}_F{f:04d}_{mark}{base + 12 * f}.jpg" for f in numbers]
            splits = {"train": ["train"], "test": ["gallery"], "distractor": ["gallery"]}[role]
            if trk == query_trk:
                splits = ["query", "gallery"]  # the release repeats every query in the gallery
            frames = scene.frames(pid, cam - 1, len(numbers), resize=True)
            for split in splits:
                folder = os.path.join(split, f"{pid:04d}", f"{trk:04d}")
                scene.write(os.path.join(root, folder), files, frames, "jpeg")
                truth.append(
                    _entry(
                        f"dukev/{split}/{pid:04d}/{trk:04d}",
                        split,
                        pid,
                        cam - 1,
                        numbers,
                        [os.path.join(folder, f) for f in files],
                        distractor=role == "distractor",
                    )
                )
    return truth


def _ls_set(rng, n: int) -> np.ndarray:
    return np.stack([rng.permutation(n) + 1 for _ in range(NUM_SPLITS)]).astype(np.float64)


def _split_defs(ls_set: np.ndarray, pids: list[int]) -> list[dict]:
    n = len(pids)
    rows = ls_set.astype(int)
    return [
        {
            "train": sorted(pids[j - 1] for j in r[n // 2 :]),
            "test": sorted(pids[j - 1] for j in r[: n // 2]),
        }
        for r in rows
    ]


def write_ilidsvid(scene, root: str, spec: dict) -> tuple[list[dict], list[dict]]:
    """iLIDS-VID: `i-LIDS-VID/sequences/cam{1,2}/personNNN/camC_personNNN_FFFFF.png` + `ls_set`."""
    rng, n = scene.rng, spec["num_ids"]
    pids = sorted(rng.choice(np.arange(1, n + n // 12 + 2), size=n, replace=False).tolist())
    truth = []
    for pid in pids:
        person = f"person{pid:03d}"
        for cam in (1, 2):
            start = int(rng.integers(1, 600))
            numbers = list(range(start, start + scene.length()))
            folder = os.path.join("i-LIDS-VID", "sequences", f"cam{cam}", person)
            files = [f"cam{cam}_{person}_{f:05d}.png" for f in numbers]
            scene.write(
                os.path.join(root, folder), files, scene.frames(pid, cam - 1, len(numbers)), "png"
            )
            truth.append(
                _entry(
                    f"ilidsvid/cam{cam}/{person}",
                    "tracklets",
                    pid,
                    cam - 1,
                    numbers,
                    [os.path.join(folder, f) for f in files],
                )
            )
    ls_set = _ls_set(rng, n)
    split_dir = os.path.join(root, "train-test people splits")
    os.makedirs(split_dir)
    _savemat(os.path.join(split_dir, "train_test_splits_ilidsvid.mat"), {"ls_set": ls_set})
    return truth, _split_defs(ls_set, pids)


def write_prid2011(scene, root: str, spec: dict) -> tuple[list[dict], list[dict]]:
    """PRID-2011: `prid_2011/multi_shot/cam_{a,b}/person_NNNN/NNNN.png` + the 178-style `ls_set`.

    Persons 1..N+S are in both cameras; S of them are shorter than 27 frames in one camera, so
    the protocol filter drops them; persons above 200 are in one camera only.
    """
    rng, n = scene.rng, spec["num_ids"]
    n_short = max(1, round(n * PRID_SHORT_RATIO))
    if n + n_short > 200:
        raise ValueError(f"PRID-2011 has at most 200 two-camera persons; num_ids={n} is too many")
    short = set(rng.choice(np.arange(1, n + n_short + 1), size=n_short, replace=False).tolist())
    lo, hi = max(spec["min_len"], 27), max(spec["max_len"], 27)
    people = [(p, (0, 1)) for p in range(1, n + n_short + 1)]
    people += [(200 + i, (0,)) for i in range(1, max(2, n // 8))]
    people += [(200 + i, (1,)) for i in range(1, max(2, n // 4))]
    truth, kept = [], []
    for pid, cams in people:
        short_cam = int(rng.integers(2)) if pid in short else -1
        for camid in cams:
            length = (
                int(rng.integers(5, 27)) if camid == short_cam else int(rng.integers(lo, hi + 1))
            )
            folder = os.path.join(
                "prid_2011", "multi_shot", f"cam_{'ab'[camid]}", f"person_{pid:04d}"
            )
            files = [f"{f:04d}.png" for f in range(1, length + 1)]
            scene.write(os.path.join(root, folder), files, scene.frames(pid, camid, length), "png")
            if len(cams) == 2 and pid not in short:
                truth.append(
                    _entry(
                        f"prid2011/cam_{'ab'[camid]}/person_{pid:04d}",
                        "tracklets",
                        pid,
                        camid,
                        range(1, length + 1),
                        [os.path.join(folder, f) for f in files],
                    )
                )
        if len(cams) == 2 and pid not in short:
            kept.append(pid)
    ls_set = _ls_set(rng, len(kept))
    split_dir = os.path.join(root, "train-test people splits")
    os.makedirs(split_dir)
    _savemat(os.path.join(split_dir, "train_test_splits_prid.mat"), {"ls_set": ls_set})
    return truth, _split_defs(ls_set, kept)


def _write_v73(path: str, name: str, values: np.ndarray) -> None:
    """Writes `values` as a MATLAB v7.3 (HDF5) file: 512-byte MATLAB header + HDF5 dataset."""
    with h5py.File(path, "w", userblock_size=512) as f:
        dset = f.create_dataset(name, data=values)
        dset.attrs["MATLAB_class"] = np.bytes_("double")
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: synthetic HDF5 schema 1.00 ."
    with open(path, "r+b") as f:
        f.write(header.ljust(116) + b"\x00" * 8 + b"\x00\x02IM")


def _lsvid_tracks(scene, spec):
    """(stem, pid, camera, length, is_query) of every LS-VID tracklet in list order, lazily: the
    length (None) is drawn by the writer, and the queries too (`_lsvid_query_rows`)."""
    rng, n, k = scene.rng, spec["num_ids"], spec["tracklets_per_id"]
    pids = rng.choice(np.arange(1, 5000), size=2 * n, replace=False).tolist()
    for stem, stem_pids in (("train", sorted(pids[:n])), ("test", sorted(pids[n:]))):
        for pid in stem_pids:
            for cam in _assign_cameras(rng, k, 15):
                yield stem, pid, cam, None, None


def write_lsvid(scene, root: str, spec: dict) -> list[dict]:
    """LS-VID: `tracklet_{train,test}/<pid4>/` frames, `list_sequence/` lists, v7.3 query index."""
    rng = scene.rng
    plan = scene.plan
    truth = []
    os.makedirs(os.path.join(root, "list_sequence"))
    for stem, tracks in itertools.groupby(plan or _lsvid_tracks(scene, spec), key=lambda t: t[0]):
        lines, entries, flagged, counters = [], [], [], {}
        for _, pid, cam, length, is_query in tracks:
            counters[pid] = trk = counters.get(pid, 0) + 1
            start = int(rng.integers(1, 300))
            numbers = list(range(start, start + (length or scene.length())))
            prefix = f"tracklet_{stem}/{pid:04d}/{pid:04d}_{trk:04d}_{cam:02d}_"
            files = [f"{os.path.basename(prefix)}{f:04d}.jpg" for f in numbers]
            folder = os.path.dirname(prefix)
            scene.write(
                os.path.join(root, folder),
                files,
                scene.frames(pid, cam - 1, len(numbers), resize=True),
                "jpeg",
            )
            lines.append(f"{prefix} {pid}\n")
            flagged.append(is_query)
            entries.append(
                _entry(
                    f"lsvid/{stem}/{prefix.split('/', 1)[1].rstrip('_')}",
                    stem,
                    pid,
                    cam - 1,
                    numbers,
                    [os.path.join(folder, f) for f in files],
                )
            )
        with open(os.path.join(root, "list_sequence", f"list_seq_{stem}.txt"), "w") as f:
            f.writelines(lines)
        if stem == "test":
            if plan:
                query = [row for row, is_query in enumerate(flagged) if is_query]
            else:
                query = _lsvid_query_rows(rng, entries)
            for row in query:
                entries[row]["split"] = "query"
            for e in entries:
                e["split"] = e["split"] if e["split"] == "query" else "gallery"
            os.makedirs(os.path.join(root, "test", "data"))
            rows = np.asarray(sorted(query), np.float64)[None] + 1
            _write_v73(os.path.join(root, "test", "data", "info_test.mat"), "query", rows)
        truth.extend(entries)
    return truth


def _lsvid_query_rows(rng, entries) -> list[int]:
    """One random query tracklet per test person seen by >= 2 cameras."""
    by_pid: dict[int, list[int]] = {}
    for row, e in enumerate(entries):
        by_pid.setdefault(e["pid"], []).append(row)
    return sorted(
        int(rng.choice(rows))
        for rows in by_pid.values()
        if len({entries[r]["camid"] for r in rows}) >= 2
    )
