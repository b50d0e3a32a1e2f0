"""Feature extraction and ranking: fixed shapes (one compile whatever the tracklet lengths), exact
aggregation, GLTR's padded buckets equal to the unpadded tracklet, re-ranking reported apart."""

import chex
import jax
import numpy as np
import pytest
from helpers import tiny_config

from vreid_jax import models, parallel
from vreid_jax.data import datasets, fake, pipeline, pixels
from vreid_jax.data.tracklets import TrackletIndex
from vreid_jax.evaluation import features, metrics, ranking
from vreid_jax.training import optim
from vreid_jax.training import state as state_lib

LENGTHS = [1, 3, 4, 7, 9, 30]


def _setup(model_name, **overrides):
    config = tiny_config(model_name, **overrides)
    mesh = parallel.make_mesh()
    model = models.build_model(config.model, num_classes=3)
    tx, _ = optim.create_optimizer(config, steps_per_epoch=10)
    state, _ = state_lib.create_train_state(
        model, tx, state_lib.init_clips(config.input), seed=0, mesh=mesh
    )
    return config, model, mesh, state_lib.variables_of(state)


def _index(lengths):
    return fake.make_index([1] * len(lengths), lengths, height=64, width=32, train=False)


def _clips(index, config):
    """Every evaluation clip of `index` with its tracklet, straight from the pipeline."""
    batches, num_batches = pipeline.eval_clip_batches(
        index, config.input, clip_len=config.input.clip_len, batch_size=8
    )
    parts = [next(batches) for _ in range(num_batches)]
    keep = np.concatenate([p["mask"] for p in parts])
    clips = np.concatenate([p["clips"] for p in parts])[keep]
    return clips, np.concatenate([p["tracklet"] for p in parts])[keep]


def _count_traces(monkeypatch, **max_traces):
    """Makes the named compiled functions of `features` fail when traced more often than given."""
    chex.clear_trace_counter()
    for name, n in max_traces.items():
        monkeypatch.setattr(features, name, chex.assert_max_traces(n=n)(getattr(features, name)))


def test_nl3d_features_compile_once_and_average_clips(monkeypatch):
    config, model, mesh, variables = _setup("nl3d")
    _count_traces(monkeypatch, clip_features=1)
    extractor = features.extractor_for(model, config, mesh)
    assert isinstance(extractor, features.ClipAverage)  # As the registry declares for NL3D.
    index = _index(LENGTHS)
    feats = extractor(variables, index)
    extractor(variables, _index([2, 50, 11]))  # Other lengths: no new compile.

    clips, tracklet = _clips(index, config)
    apply = jax.jit(lambda v, x: model.apply(v, pixels.normalize(x), train=False)[0])
    clip_feats = np.asarray(apply(variables, clips))
    expected = np.stack([clip_feats[tracklet == t].mean(0) for t in range(len(LENGTHS))])
    np.testing.assert_allclose(feats, expected, rtol=1e-4, atol=1e-5)


def test_gltr_bucketed_features_equal_unpadded_tracklets(monkeypatch):
    config, model, mesh, variables = _setup("gltr")
    num_buckets = len({features.bucket_length(n, (16, 32)) for n in LENGTHS})
    _count_traces(monkeypatch, frame_features=1, sequence_features=num_buckets)
    extractor = features.extractor_for(model, config, mesh)
    assert isinstance(extractor, features.FrameSequence)  # As the registry declares for GLTR.
    index = _index(LENGTHS)
    feats = extractor(variables, index)
    batches, num_batches = pipeline.eval_frame_batches(index, config.input, batch_size=16)
    parts = [next(batches) for _ in range(num_batches)]
    keep = np.concatenate([p["mask"] for p in parts])
    all_frames = np.concatenate([p["frames"] for p in parts])[keep]
    tracklet = np.concatenate([p["tracklet"] for p in parts])[keep]
    position = np.concatenate([p["position"] for p in parts])[keep]
    # The whole model on each unpadded tracklet, jitted (op-by-op it takes minutes in CI).
    apply = jax.jit(lambda v, x: model.apply(v, pixels.normalize(x), train=False)[0])
    for row, length in enumerate(LENGTHS):
        mine = tracklet == row
        frames = all_frames[mine][np.argsort(position[mine])]
        assert len(frames) == length
        whole = apply(variables, frames[None])
        np.testing.assert_allclose(
            feats[row],
            np.asarray(whole)[0],
            rtol=1e-4,
            atol=1e-5,
            err_msg=f"tracklet of {length} frames",
        )


def test_gltr_long_tracklet_reuses_the_same_encoder(monkeypatch):
    """A 1,000-frame tracklet runs the same compiled frame encoder (same peak memory) as a
    64-frame one; only the small temporal head sees the longer bucket."""
    config, model, mesh, variables = _setup("gltr", **{"eval.length_buckets": (64, 1024)})
    _count_traces(monkeypatch, frame_features=1, sequence_features=2)
    extractor = features.extractor_for(model, config, mesh)
    extractor(variables, _index([64]))
    extractor(variables, _index([1000]))


@pytest.mark.parametrize(
    ("length", "buckets", "expected"),
    [
        (1, (16, 32), 16),
        (16, (16, 32), 16),
        (17, (16, 32), 32),
        (33, (16, 32), 64),
        (900, (64, 1024), 1024),
    ],
)
def test_bucket_length(length, buckets, expected):
    assert features.bucket_length(length, buckets) == expected


def test_trained_parameters_change_features():
    config, model, mesh, variables = _setup("nl3d")
    extractor = features.extractor_for(model, config, mesh)
    index = _index([5, 6])
    before = extractor(variables, index)
    moved = jax.tree.map(lambda x: x * 1.1, variables)
    assert not np.allclose(before, extractor(moved, index))


def test_rank_reports_reranking_separately():
    config = tiny_config("nl3d", **{"eval.rerank": True})
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 16))
    query = _index([3] * 5)
    gallery = fake.make_index([2] * 5, 3, height=64, width=32, train=False)
    qf = centres + 0.3 * rng.normal(size=(5, 16))
    gf = np.repeat(centres, 2, axis=0) + 0.3 * rng.normal(size=(10, 16))
    ranked = ranking.rank(qf, gf, query, gallery, config.eval)
    assert ranked.distances.shape == (5, 10)
    summary = ranked.metrics
    assert set(summary["reranked"]) >= set(metrics.SUMMARY_KEYS)
    assert summary["mAP"] > 0.8  # Well-separated identities rank correctly...
    assert summary["reranked"]["mAP"] > 0.8  # ...with and without re-ranking.


@pytest.mark.parametrize("gallery_choice", ["official", "torchreid"])
def test_every_protocol_equals_evaluate_rank_on_its_gallery(gallery_choice):
    """MARS-style data: the four numbers (both galleries x both AP formulas) each equal
    `metrics.evaluate_rank` called on that gallery, whichever gallery is the headline."""
    config = tiny_config("nl3d", **{"eval.gallery": gallery_choice})
    rng = np.random.default_rng(0)
    query = fake.make_index([1] * 6, 3, train=False, num_cameras=2)
    stored = fake.make_index([3] * 6, 3, train=False, num_cameras=2, seed=1)
    centres = rng.normal(size=(6, 16))
    qf = centres + rng.normal(size=(6, 16))
    stored_f = np.repeat(centres, 3, axis=0) + rng.normal(size=(18, 16))
    if gallery_choice == "official":
        gallery, gf = TrackletIndex.concatenate(query, stored), np.concatenate([qf, stored_f])
    else:
        gallery, gf = stored, stored_f
    data = datasets.ReidData(
        train=query, query=query, gallery=gallery, num_classes=1, num_train_tracklets=1,
        name="mars", protocol=f"mars-{gallery_choice}", gallery_choice=gallery_choice,
    )  # fmt: skip
    ranked = ranking.rank(qf, gf, query, gallery, config.eval)
    protocols = ranking.protocols(qf, gf, data, config.eval, ranked)

    official_f = np.concatenate([qf, stored_f])
    official = TrackletIndex.concatenate(query, stored)
    for gallery_name, g_feats, g_index in (
        ("official", official_f, official),
        ("torchreid", stored_f, stored),
    ):
        distmat = metrics.pairwise_distances(qf, g_feats, normalize=True)
        for ap_mode in metrics.AP_MODES:
            expected = metrics.evaluate_rank(
                distmat, query.pids, g_index.pids, query.camids, g_index.camids, ap_mode=ap_mode
            )
            got = protocols[f"{gallery_name}/{ap_mode}"]
            assert got["mAP"] == pytest.approx(float(expected["mAP"]), abs=1e-6)
            assert got["rank1"] == pytest.approx(float(expected["cmc"][0]), abs=1e-6)
    assert protocols[f"{gallery_choice}/standard"]["mAP"] == ranked.metrics["mAP"]
    # The formulas differ: trapezoid AP is not the standard one on this ranking.
    assert protocols["official/trapezoid"]["mAP"] != protocols["official/standard"]["mAP"]
