"""The dataset registry end to end: synthetic MARS generated, built by data_prep, loaded per process."""

import importlib.util
import inspect
import io

import numpy as np
import pytest
from helpers import build_once
from PIL import Image

from vreid_jax.data import datasets, pipeline, tracklets
from vreid_jax.tools import preview


@pytest.fixture(scope="module")
def config(repo_root, tmp_path_factory):
    spec = importlib.util.spec_from_file_location("default", repo_root / "configs" / "default.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.data.synthetic.update(
        enabled=True, num_ids=6, tracklets_per_id=2, min_len=4, max_len=10, height=64, width=32
    )

    def build(folder):
        config.data.data_dir = str(folder)
        datasets.ensure_built(config.data, seed=0)  # Generated and built once per run.

    config.data.data_dir = str(build_once(tmp_path_factory, "datasets_mars", build))
    config.input.update(
        height=64, width=32, num_ids_per_batch=4, num_instances=2, clip_len=4, window=8, pad=2
    )
    return config


@pytest.fixture(scope="module")
def data(config):
    return datasets.load(config.data, seed=0)


def test_load_composes_the_official_mars_gallery(data, config):
    assert data.name == "mars" and data.protocol == "mars-official"
    assert data.num_classes == 6 and data.num_train_tracklets == len(data.train) == 12
    np.testing.assert_array_equal(data.train.label_counts, [2] * 6)
    assert (data.query.labels == -1).all() and len(data.query) > 0
    torchreid = datasets.load(config.data, seed=0, gallery="torchreid")
    assert torchreid.protocol == "mars-torchreid"
    # official = every query followed by the stored gallery; junk (pid -1) dropped from both.
    assert len(data.gallery) == len(data.query) + len(torchreid.gallery)
    np.testing.assert_array_equal(data.gallery.keys[: len(data.query)], data.query.keys)
    assert not (data.gallery.pids == -1).any()
    assert "mars (mars-official)" in data.log_summary()
    assert [row[0] for row in data.summary_rows()] == ["train (this process)", "query", "gallery"]


def test_processes_hold_disjoint_identity_slices(data, config):
    parts = [datasets.load(config.data, seed=0, process_index=p, process_count=2) for p in range(2)]
    for p, part in enumerate(parts):
        assert (part.train.labels % 2 == p).all() and part.num_classes == data.num_classes
        assert len(part.query) == len(data.query)  # evaluation sets are whole on every process
    keys = np.concatenate([part.train.keys for part in parts])
    assert sorted(keys) == sorted(data.train.keys)
    assert sum(part.train.nbytes for part in parts) == data.train.nbytes


def test_pipelines_run_on_the_built_dataset(data, config):
    batch = next(pipeline.train_batches(data.train, config.input, seed=0, start_step=0))
    assert batch["clips"].shape == (8, 4, 64, 32, 3)
    batches, num_batches = pipeline.eval_clip_batches(
        data.gallery, config.input, clip_len=4, batch_size=8
    )
    masks = [b["mask"] for b in batches]
    assert len(masks) == num_batches
    assert sum(m.sum() for m in masks) == sum(-(-n // 4) for n in data.gallery.lengths)
    too_big = config.input.copy_and_resolve_references()
    too_big.height = 256
    with pytest.raises(ValueError, match=r"config\.input\.height=256 exceeds .* 64x32"):
        pipeline.train_batches(data.train, too_big, seed=0, start_step=0)


def test_test_splits_are_streamed_and_reprs_say_sizes(data, config):
    assert data.train.random_access and not data.query.random_access
    assert not data.gallery.random_access and not data.stored_gallery.random_access
    text = repr(data)
    assert len(text) < 400 and f"{len(data.gallery)} tracklets" in text, text
    assert "encoded MB held" in data.log_summary() and "streamed" in data.log_summary()
    # Rows front to back, then back to the start (a new pass): each the tracklet of its key.
    gallery = data.gallery
    for row in (0, len(data.query), len(gallery) - 1, 1):
        assert len(gallery.frames[row]) == gallery.lengths[row]
    # Evaluation only: the training split's frames are not read; the class count is the same.
    evaluation = datasets.load(config.data, seed=0, with_train=False)
    assert evaluation.train is None and evaluation.num_classes == data.num_classes
    assert [row[0] for row in evaluation.summary_rows()] == ["query", "gallery"]


def test_streamed_frames_refuse_shards_that_disagree_with_their_metadata():
    examples = [{"tracklet_key": b"a", "frames": [b"x"]}, {"tracklet_key": b"c", "frames": [b"y"]}]
    frames = tracklets.StreamedFrames(
        lambda: iter(examples), np.array(["a", "b"]), np.array([1, 1]), "mars/query"
    )
    assert frames[0] == [b"x"]
    with pytest.raises(ValueError, match=r"mars/query: record 1 is 'c' .* says 'b'"):
        frames[1]
    short = tracklets.StreamedFrames(
        lambda: iter(examples[:1]), np.array(["a", "b"]), np.array([1, 1]), "mars/query"
    )
    with pytest.raises(ValueError, match="the shards end after 1 tracklets"):
        short[1]


def test_a_streamed_index_reads_its_frame_size_once():
    """Each evaluation checks the frame size; a streamed split must not pay a pass for it each time."""
    buffer = io.BytesIO()
    Image.new("RGB", (32, 64)).save(buffer, format="JPEG")
    examples = [{"tracklet_key": key.encode(), "frames": [buffer.getvalue()]} for key in "ab"]
    passes = []

    def open_split():
        passes.append(1)
        return iter(examples)

    frames = tracklets.StreamedFrames(open_split, np.array(["a", "b"]), np.array([1, 1]), "q")
    index = tracklets.TrackletIndex(frames, [1, 2], [-1, -1], [0, 1], [1, 1], ["a", "b"])
    assert index.frame_size() == (64, 32) and index.frame_size() == (64, 32)
    assert len(passes) == 1


def test_preview_writes_a_contact_sheet(data, config, tmp_path):
    out = tmp_path / "sheet.png"
    text = preview.preview(config, str(out), num_clips=3)
    assert "evaluation clips" in text and out.exists()
    width, height = Image.open(out).size
    assert height == 3 * (64 + 2) and width > 4 * 32


def test_errors_name_the_config_key(config, tmp_path, monkeypatch):
    real = config.copy_and_resolve_references()
    real.data.synthetic.enabled = False
    real.data.data_dir = ""
    with pytest.raises(ValueError, match=r"config\.data\.data_dir is empty"):
        datasets.load(real.data)
    real.data.data_dir = str(tmp_path)
    with pytest.raises(ValueError, match=r"config\.data\.data_dir=.*python -m data_prep\.build"):
        datasets.load(real.data)
    # A process other than 0 waits for process 0's build, and says so when it gives up.
    waiting = config.copy_and_resolve_references()
    waiting.data.data_dir = str(tmp_path / "empty")
    monkeypatch.setattr(datasets, "_BUILD_WAIT_SECONDS", 0.01)
    with pytest.raises(TimeoutError, match="waited"):
        datasets.load(waiting.data, process_index=1, process_count=2)


def test_synthetic_config_is_generates_keyword_arguments(config):
    """`config.data.synthetic` less `enabled` goes to `data_prep.synthetic.generate` as it is."""
    from data_prep import synthetic  # noqa: PLC0415

    keyword_only = {
        name
        for name, parameter in inspect.signature(synthetic.generate).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    }
    assert set(config.data.synthetic) - {"enabled"} <= keyword_only
    assert datasets.generate_kwargs(config.data.synthetic)["num_ids"] == 6
