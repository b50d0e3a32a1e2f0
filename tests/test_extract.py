"""`python -m vreid_jax.deploy.extract`: features of your own tracklets equal the model applied by hand;
folder and MOT sources; bad input named, no partial output."""

import io
import os

import helpers
import jax
import numpy as np
import pytest
from PIL import Image

from vreid_jax import checkpoint, errors
from vreid_jax.deploy import extract, trained_model
from vreid_jax.deploy.tracks import feature_file, mot, sources
from vreid_jax.evaluation import features

H, W = 64, 32  # The tiny config's frame size.


def _save(path, pixels_):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(pixels_).save(path)


def _folder_source(root, lengths, seed=0):
    """`root/cam<c>/<track>/f<n>.png` with random frames; returns {track: frames in order}."""
    rng = np.random.default_rng(seed)
    tracks = {}
    for i, length in enumerate(lengths):
        frames = rng.integers(0, 256, (length, H, W, 3), dtype=np.uint8)
        for n, frame in enumerate(frames):
            _save(os.path.join(root, f"cam{i % 2}", f"t{i}", f"f{n + 1}.png"), frame)
        tracks[f"t{i}"] = frames
    return tracks


def _by_hand(t, frames: np.ndarray) -> np.ndarray:
    """The tracklet feature computed without the extraction machinery: GLTR's encoder and temporal
    head over the whole unpadded tracklet; NL3D's mean over its loop-padded clips."""
    model, variables = t.model, t.variables
    if t.config.model.name == "gltr":
        per_frame = jax.jit(features.frame_features, static_argnums=0)(model, variables, frames)
        mask = np.ones((1, len(frames)), bool)
        head = jax.jit(features.sequence_features, static_argnums=0)
        return np.asarray(head(model, variables, per_frame[None], mask))[0]
    T = t.config.input.clip_len
    clips = [
        frames[start + np.arange(T) % min(T, len(frames) - start)]
        for start in range(0, len(frames), T)
    ]
    clip_fn = jax.jit(features.clip_features, static_argnums=0)
    return np.asarray(clip_fn(model, variables, np.stack(clips))).mean(0)


@pytest.mark.parametrize("model", ["gltr", "nl3d"])
def test_folder_features_equal_the_model_applied_by_hand(tmp_path, model):
    helpers.checkpointed_workdir(tmp_path / "run", model)
    t = trained_model.load(str(tmp_path / "run"))
    # Lengths in GLTR's buckets 16 and beyond 32, and NL3D clip remainders 1, 3 and 0.
    tracks = _folder_source(str(tmp_path / "own"), [1, 11, 40])
    result = extract.extract(t, sources.from_folder(str(tmp_path / "own")), progress=False)
    assert sorted(result.track_ids) == sorted(tracks)
    for row, track in enumerate(result.track_ids):
        want = _by_hand(t, tracks[track])
        np.testing.assert_allclose(result.features[row], want, rtol=1e-5, atol=1e-5)
    assert result.provenance["model"] == model and result.provenance["step"] == 1
    assert set(result.cameras) == {"cam0", "cam1"}


def test_frames_are_ordered_by_their_number(tmp_path):
    root = tmp_path / "own" / "person"
    for n in (10, 9, 100):
        _save(str(root / f"frame{n}.png"), np.full((H, W, 3), n, np.uint8))
    (tracklet,) = sources.from_folder(str(tmp_path / "own"))
    assert tracklet.frame_numbers == [9, 10, 100] and tracklet.camera == ""
    first = np.asarray(Image.open(io.BytesIO(tracklet.frames[0])))
    assert first[0, 0, 0] == 9


def _mot_source(root, seed=0):
    """A 6-frame 120x90 video as numbered frames plus a track file: track 1 walks right inside the
    image, track 2 is cut by the right border. Returns (track file, frames folder, video)."""
    rng = np.random.default_rng(seed)
    video = rng.integers(0, 256, (6, 90, 120, 3), dtype=np.uint8)
    for n, frame in enumerate(video, start=1):
        _save(os.path.join(root, "img1", f"{n:06d}.png"), frame)
    rows = [f"{n},1,{10 + n},5,20,40,1,-1,-1,-1" for n in range(1, 7)]
    rows += [f"{n},2,110,30,30,50,1,-1,-1,-1" for n in range(2, 5)]
    track_file = os.path.join(root, "gt", "gt.txt")
    os.makedirs(os.path.dirname(track_file))
    with open(track_file, "w") as f:
        f.write("\n".join(rows) + "\n")
    return track_file, os.path.join(root, "img1"), video


def test_mot_boxes_are_cropped_and_clipped_at_the_border(tmp_path):
    track_file, frames, video = _mot_source(str(tmp_path / "MOT-01"))
    one, two = sources.from_mot(track_file, frames)
    assert (one.camera, one.track_id, two.track_id) == ("MOT-01", "1", "2")
    assert one.frame_numbers == [1, 2, 3, 4, 5, 6] and two.frame_numbers == [2, 3, 4]
    # MOT boxes are 1-based: frame 1's box (11, 5, 20, 40) starts at 0-based pixel (10, 4).
    crop = np.asarray(Image.open(io.BytesIO(one.frames[0])))
    np.testing.assert_array_equal(crop, video[0, 4:44, 10:30])
    crop = np.asarray(Image.open(io.BytesIO(two.frames[0])))
    np.testing.assert_array_equal(crop, video[1, 29:79, 109:120])  # Clipped at x = 120.
    assert two.previews[0][0].endswith("000002.png")
    assert two.previews[0][1] == (109, 29, 11, 50)


def test_mot_source_from_a_video_file(tmp_path):
    av = pytest.importorskip("av")
    track_file, frames_dir, video = _mot_source(str(tmp_path / "MOT-01"))
    path = str(tmp_path / "video.mkv")
    with av.open(path, "w") as container:  # Lossless, so crops compare exactly.
        stream = container.add_stream("ffv1", rate=10)
        stream.width, stream.height, stream.pix_fmt = 120, 90, "bgr0"
        for frame in video:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    from_video = sources.from_mot(track_file, path)
    from_frames = sources.from_mot(track_file, frames_dir)
    for a, b in zip(from_video, from_frames, strict=True):
        assert a.frames == b.frames
    assert from_video[0].previews[0][0] == f"{path}#0"


def test_a_workdir_without_checkpoints_is_named(tmp_path):
    helpers.checkpointed_workdir(tmp_path / "run")
    os.makedirs(tmp_path / "empty")
    (tmp_path / "empty" / "config.json").write_text((tmp_path / "run" / "config.json").read_text())
    with pytest.raises(checkpoint.NoCheckpointError, match="has no checkpoints folder"):
        trained_model.load(str(tmp_path / "empty"))
    with pytest.raises(errors.UserError, match="config.json does not exist"):
        trained_model.load(str(tmp_path))


def test_bad_folders_and_frames_are_named(tmp_path):
    root = tmp_path / "own"
    with pytest.raises(sources.TrackletSourceError, match="no such folder"):
        sources.from_folder(str(root))
    _folder_source(str(root), [3])
    os.makedirs(root / "cam0" / "empty")
    with pytest.raises(sources.TrackletSourceError, match=r"empty.*is empty"):
        sources.from_folder(str(root))
    os.rmdir(root / "cam0" / "empty")
    bad = root / "cam0" / "t0" / "f2.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(sources.TrackletSourceError, match=f"Frame {bad} is unusable"):
        sources.from_folder(str(root))
    (tracklet,) = sources.from_folder(str(root), skip_bad=True)
    assert tracklet.frame_numbers == [1, 3]


def test_bad_track_files_are_named_by_line(tmp_path):
    path = tmp_path / "t.txt"
    for text, message in [
        ("1,1,1,1,10\n", "t.txt:1: 5 columns"),
        ("1,1,1,1,10,10\n0,1,1,1,10,10\n", "t.txt:2: frame 0"),
        ("1,1,1,1,10,10\n1,1,5,5,10,10\n", "t.txt:2: track 1 has a second box in frame 1"),
        ("1,1,1,1,0,10\n", "t.txt:1: box width"),
        ("", "has no rows"),
    ]:
        path.write_text(text)
        with pytest.raises(mot.MotFileError, match=message):
            mot.read(str(path))


def test_missing_frames_for_a_track_file(tmp_path):
    track_file, frames, _ = _mot_source(str(tmp_path / "MOT-01"))
    os.remove(os.path.join(frames, "000003.png"))
    with pytest.raises(sources.TrackletSourceError, match="no image for MOT frame 3"):
        sources.from_mot(track_file, frames)


def test_mot_file_round_trip_keeps_extra_columns(tmp_path):
    track_file, _, _ = _mot_source(str(tmp_path / "MOT-01"))
    tracks = mot.read(track_file)
    out = tmp_path / "relabelled.txt"
    mot.write(str(out), tracks, ids=np.where(tracks.ids == 2, 3, tracks.ids))
    again = mot.read(str(out))
    assert set(again.ids) == {1, 3} and again.rest == ["1,-1,-1,-1"] * len(tracks)
    assert sorted(map(tuple, again.boxes)) == sorted(map(tuple, tracks.boxes))


def test_features_file_round_trip_and_errors(tmp_path):
    tracklets = [
        sources.Tracklet("a", "c", [b""], [1], "src", [("x.png", (0, 0, 1, 1))]),
        sources.Tracklet("b", "c", [b"", b""], [4, 9], "src", []),
    ]
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    result = sources.to_features(tracklets, values, {"model": "gltr", "checkpoint": "x/1"})
    path = str(tmp_path / "f.npz")
    feature_file.save(path, result)
    again = feature_file.load(path)
    np.testing.assert_array_equal(again.features, values)
    assert list(again.last_frame) == [1, 9] and again.preview_frames[0, 0] == "x.png"
    assert np.isnan(again.preview_boxes[1]).all()
    other = again.select([0])
    other.provenance = {"model": "nl3d", "checkpoint": "y/2"}
    with pytest.raises(feature_file.FeatureFileError, match="different checkpoints"):
        again.check_compatible(other, "the index", "the query")
    np.savez(str(tmp_path / "other.npz"), x=np.zeros(3))
    with pytest.raises(feature_file.FeatureFileError, match="lacks"):
        feature_file.load(str(tmp_path / "other.npz"))
    with pytest.raises(feature_file.FeatureFileError, match="no such features file"):
        feature_file.load(str(tmp_path / "none.npz"))
