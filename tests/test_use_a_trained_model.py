"""The README's "Use a trained model" path through the command lines, on a workdir as training leaves
it: extract (a folder source and MOT track files of a synthetic two-camera video) → relink →
search → export, each through its console script (full tier); bad input named in one line, nothing
partial written (in this process: fast tier)."""

import json
import os
import subprocess
import sys

import helpers
import numpy as np
import pytest
from PIL import Image

from data_prep import synthetic_video
from vreid_jax.deploy import extract
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

    # A folder source.
    own = _own_tracklet(tmp_path)
    folder_feats = tmp_path / "own.npz"
    _ok(_cli("extract", "--workdir", run, "--tracklets", tmp_path / "own", "--out", folder_feats))
    assert list(feature_file.load(str(folder_feats)).track_ids) == [own.name]

    # Export: the deployable model and its description.
    _ok(_cli("export", "--workdir", run, "--format", "stablehlo", "--out", tmp_path / "exported"))
    assert json.loads((tmp_path / "exported" / "export.json").read_text())["format"] == "stablehlo"


def _own_tracklet(root):
    """`root/own/cam1/person7/{1,2,3}.png`, a user's folder source; returns the tracklet folder."""
    own = root / "own" / "cam1" / "person7"
    os.makedirs(own)
    rng = np.random.default_rng(0)
    for n in range(1, 4):
        Image.fromarray(rng.integers(0, 256, (40, 20, 3), dtype=np.uint8)).save(own / f"{n}.png")
    return own


def test_bad_input_is_one_error_line_and_nothing_written(tmp_path):
    """`vreid-extract`'s main, in this process: bad input named, and no output file."""
    run = tmp_path / "run"
    helpers.checkpointed_workdir(run, "gltr")
    video = str(tmp_path / "video")
    cam = synthetic_video.generate(
        video, seed=0, num_people=2, num_frames=20, height=120, width=160, person_height=64
    )["cameras"][0]
    track_file, frames = os.path.join(video, cam, "tracks.txt"), os.path.join(video, cam, "img1")
    own = _own_tracklet(tmp_path)
    (own / "2.png").write_bytes(b"broken")
    bad = tmp_path / "bad.npz"
    extract_ = lambda *args: _error_line(helpers.run_command(extract, *args, "--out", bad))

    line = extract_("--workdir", run, "--tracklets", tmp_path / "own")
    assert f"{own / '2.png'} is unusable (not an image file)" in line and "--skip_bad" in line
    with open(track_file, "a") as f:
        f.write("3,999,900,900,10,10,1,1,1\n")
    with open(track_file) as f:
        n = len(f.read().splitlines())
    line = extract_("--workdir", run, "--tracklets", track_file, "--frames", frames)
    assert f"{track_file}:{n}: box" in line
    line = extract_("--workdir", tmp_path, "--tracklets", tmp_path / "own")
    assert "config.json does not exist" in line
    assert not bad.exists()
