"""The README's "Use a trained model" path through the command lines, on a workdir as training leaves
it: extract (a folder source and MOT track files of a synthetic two-camera video) → relink →
search; bad input named, nothing partial written."""

import json
import os
import subprocess
import sys

import helpers
import numpy as np
import pytest
from PIL import Image

from data_prep import synthetic_video
from vreid_jax.deploy.tracks import feature_file, mot


def _cli(command, *args):
    """Runs a command as the README types it: its console script, installed beside this Python."""
    script = os.path.join(os.path.dirname(sys.executable), f"vreid-{command}")
    return subprocess.run(
        [script, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
    )


def _ok(proc):
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _error_line(proc) -> str:
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_extract_relink_search_from_a_workdir(tmp_path):
    run = tmp_path / "run"
    helpers.checkpointed_workdir(run, "gltr")
    video = str(tmp_path / "video")
    cams = synthetic_video.generate(
        video, seed=0, num_people=3, num_frames=40, height=120, width=160, person_height=64
    )["cameras"]
    tracks = [os.path.join(video, c, "tracks.txt") for c in cams]
    frames = [os.path.join(video, c, "img1") for c in cams]

    # Extract: both cameras' broken tracks in one features file.
    feats = tmp_path / "tracks.npz"
    sources = [
        a for t, f in zip(tracks, frames, strict=True) for a in ("--tracklets", t, "--frames", f)
    ]
    _ok(_cli("extract", "--workdir", run, *sources, "--out", feats))
    extracted = feature_file.load(str(feats))
    fragments = {
        (c, str(t)) for c, p in zip(cams, tracks, strict=True) for t in mot.read(p).track_rows()
    }
    assert set(zip(extracted.cameras, extracted.track_ids, strict=True)) == fragments
    assert extracted.model == "gltr" and extracted.provenance["step"] == 1

    # Relink: every row keeps its box and gets a new id; tracks alive together in one camera keep
    # different ids.
    out_dir = tmp_path / "relinked"
    _ok(_cli("relink", *[a for t in tracks for a in ("--tracks", t)], "--features", feats,
             "--threshold", 0.5, "--out_dir", out_dir))  # fmt: skip
    report = json.loads((out_dir / "relink.json").read_text())
    assert report["num_fragments"] == len(fragments)
    for cam, path in zip(cams, tracks, strict=True):
        before, after = mot.read(path), mot.read(str(out_dir / cam / "tracks.txt"))
        assert len(after) == len(before)
        for frame in np.unique(after.frames):  # mot.read refuses one id twice in a frame.
            assert len(set(after.ids[after.frames == frame])) == (after.frames == frame).sum()

    # Search: the gallery index of camera 2's tracks, queried with camera 1's.
    index, results, picture = tmp_path / "index.npz", tmp_path / "r.json", tmp_path / "ranked.png"
    _ok(_cli("search", "build", "--index", index, "--features", feats))
    _ok(_cli("search", "query", "--index", index, "--features", feats, "--rows", "0",
             "--top_k", 3, "--out", results, "--picture", picture))  # fmt: skip
    (result,) = json.loads(results.read_text())["results"]
    assert result["query"]["row"] == 0 and len(result["matches"]) == 3
    distances = [m["distance"] for m in result["matches"]]
    assert distances == sorted(distances)
    assert Image.open(picture).size[0] > 4 * 20  # The query and three matches side by side.

    # A folder source; then bad input: named, and no output file.
    own = tmp_path / "own" / "cam1" / "person7"
    os.makedirs(own)
    rng = np.random.default_rng(0)
    for n in range(1, 4):
        Image.fromarray(rng.integers(0, 256, (40, 20, 3), dtype=np.uint8)).save(own / f"{n}.png")
    folder_feats = tmp_path / "own.npz"
    _ok(_cli("extract", "--workdir", run, "--tracklets", tmp_path / "own", "--out", folder_feats))
    assert list(feature_file.load(str(folder_feats)).track_ids) == ["person7"]
    (own / "2.png").write_bytes(b"broken")
    bad = tmp_path / "bad.npz"
    line = _error_line(
        _cli("extract", "--workdir", run, "--tracklets", tmp_path / "own", "--out", bad)
    )
    assert f"{own / '2.png'} is unusable (not an image file)" in line and "--skip_bad" in line
    with open(tracks[0], "a") as f:
        f.write("3,999,900,900,10,10,1,1,1\n")
    with open(tracks[0]) as f:
        n = len(f.read().splitlines())
    line = _error_line(_cli("extract", "--workdir", run, *sources, "--out", bad))
    assert f"{tracks[0]}:{n}: box" in line
    line = _error_line(_cli("extract", "--workdir", tmp_path, "--tracklets", tmp_path / "own",
                            "--out", bad))  # fmt: skip
    assert "config.json does not exist" in line
    assert not bad.exists()
