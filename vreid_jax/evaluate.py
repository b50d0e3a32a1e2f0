"""Evaluation: whole-tracklet features in fixed shapes, ranking metrics and reports.

Nothing here depends on tracklet length for its compiled shapes: NL3D sees fixed-size batches of
T-frame clips, GLTR's frame encoder fixed-size batches of frames and its temporal head tracklets padded
to a few length buckets. So a 920-frame tracklet neither recompiles nor runs out of memory. Batches
arrive as uint8 pixels and are normalised inside the compiled functions (`vreid_jax.data.pixels`).
"""

from __future__ import annotations

import functools
import io
import os

import jax
import numpy as np
from jax.experimental import multihost_utils
from PIL import Image

from vreid_jax import files, logging_utils, metrics, parallel, viz
from vreid_jax.data import pipeline, pixels

RANKS = (1, 5, 10, 20)


# ----------------------------------------------------------------------------- features


def _gather(x):
    """Host numpy of a (possibly multi-host) global array or of a process-local numpy array."""
    if jax.process_count() == 1:
        return np.asarray(x)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _run_batches(fn, batches, num_batches: int, mesh, array_keys: tuple[str, ...]):
    """Runs `fn(*arrays)` over batches sharded on 'data'; returns gathered host outputs and the
    gathered non-array fields (tracklet ids, masks, positions) of every batch, concatenated."""
    outputs, fields = [], {}
    for _ in range(num_batches):
        batch = next(batches)
        arrays = parallel.host_to_global({k: batch[k] for k in array_keys}, mesh)
        outputs.append(_gather(fn(*(arrays[k] for k in array_keys))))
        for key, value in batch.items():
            if key not in array_keys:
                fields.setdefault(key, []).append(_gather(value))
    return np.concatenate(outputs), {k: np.concatenate(v) for k, v in fields.items()}


def _segment_reduce(values, segment_ids, num_segments: int, how: str) -> np.ndarray:
    """Mean or max of `values` rows per segment (tracklet)."""
    out_shape = (num_segments,) + values.shape[1:]
    if how == "mean":
        sums = np.zeros(out_shape, np.float64)
        np.add.at(sums, segment_ids, values)
        counts = np.bincount(segment_ids, minlength=num_segments).astype(np.float64)
        return (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)
    if how == "max":
        out = np.full(out_shape, -np.inf, np.float32)
        np.maximum.at(out, segment_ids, values)
        return out
    raise ValueError(f"config.eval.aggregate={how!r}; expected 'mean' or 'max'.")


class FeatureExtractor:
    """Compiled feature functions for one model; reused across evaluations (no recompiles)."""

    def __init__(self, model, config, mesh):
        self.model, self.config, self.mesh = model, config, mesh
        data = parallel.data_sharding(mesh)
        rep = parallel.replicated(mesh)
        apply = functools.partial(model.apply, train=False)
        if config.model.name == "gltr":
            self._encode = jax.jit(
                lambda v, x: apply(v, pixels.normalize(x), method="encode_frames"),
                in_shardings=(rep, data),
                out_shardings=data,
            )
            self._head = jax.jit(
                lambda v, f, m: apply(v, f, m, method="temporal_head"),
                in_shardings=(rep, data, data),
                out_shardings=data,
            )
        else:
            self._clips = jax.jit(
                lambda v, x: apply(v, pixels.normalize(x))[0],
                in_shardings=(rep, data),
                out_shardings=data,
            )

    def __call__(self, variables, index) -> np.ndarray:
        """Features [num_tracklets, D] of every tracklet in `index`, in index order."""
        if self.config.model.name == "gltr":
            return self._gltr(variables, index)
        return self._nl3d(variables, index)

    def _nl3d(self, variables, index):
        cfg = self.config
        batch = parallel.local_batch_size(cfg.eval.batch_size, self.mesh, "config.eval.batch_size")
        batches, num_batches = pipeline.eval_clip_batches(
            index,
            cfg.input,
            clip_len=cfg.input.clip_len,
            batch_size=batch,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
        feats, fields = _run_batches(
            functools.partial(self._clips, variables), batches, num_batches, self.mesh, ("clips",)
        )
        keep = fields["mask"]
        return _segment_reduce(
            feats[keep], fields["tracklet"][keep], len(index), cfg.eval.aggregate
        )

    def _gltr(self, variables, index):
        cfg = self.config
        batch = parallel.local_batch_size(
            cfg.eval.frame_batch_size, self.mesh, "config.eval.frame_batch_size"
        )
        batches, num_batches = pipeline.eval_frame_batches(
            index,
            cfg.input,
            batch_size=batch,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
        frame_feats, fields = _run_batches(
            functools.partial(self._encode, variables),
            batches,
            num_batches,
            self.mesh,
            ("frames",),
        )
        keep = fields["mask"]
        frame_feats = frame_feats[keep]
        tracklet, position = fields["tracklet"][keep], fields["position"][keep]
        return self._gltr_heads(variables, frame_feats, tracklet, position, len(index))

    def _gltr_heads(self, variables, frame_feats, tracklet, position, num_tracklets):
        """Runs the temporal head over whole tracklets, padded to length buckets with a mask."""
        cfg = self.config
        lengths = np.bincount(tracklet, minlength=num_tracklets)
        buckets = np.array([bucket_length(n, cfg.eval.length_buckets) for n in lengths])
        head_batch = self.mesh.devices.size  # One tracklet per device per call.
        out = None
        for bucket in np.unique(buckets):
            ids = np.flatnonzero(buckets == bucket)
            padded_count = -(-len(ids) // head_batch) * head_batch
            seqs = np.zeros((padded_count, bucket, frame_feats.shape[1]), np.float32)
            mask = np.zeros((padded_count, bucket), bool)
            rows = np.searchsorted(ids, tracklet)
            sel = np.isin(tracklet, ids)
            seqs[rows[sel], position[sel]] = frame_feats[sel]
            mask[rows[sel], position[sel]] = True
            for start in range(0, padded_count, head_batch):
                local = _process_slice(start, head_batch)
                sl = slice(local.start, local.stop)
                arrays = parallel.host_to_global({"f": seqs[sl], "m": mask[sl]}, self.mesh)
                feats = _gather(self._head(variables, arrays["f"], arrays["m"]))
                if out is None:
                    out = np.zeros((num_tracklets, feats.shape[1]), np.float32)
                valid = ids[start : start + head_batch]
                out[valid] = feats[: len(valid)]
        return out


def _process_slice(start: int, global_batch: int) -> slice:
    """This process's rows of the global batch that starts at `start`."""
    per_process = global_batch // jax.process_count()
    begin = start + jax.process_index() * per_process
    return slice(begin, begin + per_process)


def bucket_length(length: int, buckets) -> int:
    """The smallest bucket that holds `length` frames; beyond the largest, a multiple of it."""
    for bucket in sorted(buckets):
        if length <= bucket:
            return int(bucket)
    largest = max(buckets)
    return int(-(-length // largest) * largest)


# ----------------------------------------------------------------------------- ranking


def rank(qf, gf, query, gallery, eval_config) -> dict:
    """Distances, CMC/mAP/mINP (and optionally re-ranked ones) for query/gallery features."""

    def distances(a, b):
        return metrics.pairwise_distances(
            a, b, metric=eval_config.distance, normalize=eval_config.normalize_features
        )

    def ranked(distmat):
        return _summarise(
            metrics.evaluate_rank(
                distmat, query.pids, gallery.pids, query.camids, gallery.camids,
                max_rank=eval_config.max_rank, ap_mode=eval_config.ap_mode,
            )
        )  # fmt: skip

    distmat = distances(qf, gf)
    result = ranked(distmat)
    if eval_config.rerank:
        # k-reciprocal re-ranking is defined on squared Euclidean distances (Zhong et al. 2017).
        power = 2 if eval_config.distance == "euclidean" else 1
        result["reranked"] = ranked(
            metrics.re_ranking(distmat**power, distances(qf, qf) ** power,
                               distances(gf, gf) ** power)
        )  # fmt: skip
    result["_distmat"] = distmat
    return result


def _summarise(ranked: dict) -> dict:
    cmc = np.asarray(ranked["cmc"])
    out = {
        "mAP": float(ranked["mAP"]),
        "mINP": float(ranked["mINP"]),
        "num_valid_queries": int(ranked["num_valid_queries"]),
        "cmc": cmc.tolist(),
    }
    for r in RANKS:
        out[f"rank{r}"] = float(cmc[min(r, len(cmc)) - 1])
    return out


def evaluate(extractor: FeatureExtractor, variables, data, config) -> dict:
    """Features of query and gallery, then ranking. Returns the metrics and the distance matrix."""
    qf = extractor(variables, data.query)
    gf = extractor(variables, data.gallery)
    return rank(qf, gf, data.query, data.gallery, config.eval)


# ----------------------------------------------------------------------------- reports

METRIC_KEYS = ("mAP", "mINP", "rank1", "rank5", "rank10", "rank20")


def results_record(result: dict, data, config, step: int, untrained: dict | None = None) -> dict:
    """The `results.json` record of DESIGN.md section 5."""
    record = {
        "dataset": data.name,
        "protocol": data.protocol + (f", AP {config.eval.ap_mode}"),
        "model": config.model.name,
        "step": int(step),
        "num_query": len(data.query),
        "num_gallery": len(data.gallery),
        **{k: result[k] for k in METRIC_KEYS},
        "num_valid_queries": result["num_valid_queries"],
    }
    if "reranked" in result:
        record["reranked"] = {k: result["reranked"][k] for k in METRIC_KEYS}
    if untrained is not None:
        record["untrained"] = {k: untrained[k] for k in METRIC_KEYS}
    return record


def print_table(record: dict) -> str:
    """The final metric table (percent), with the untrained network's row when there is one."""
    rows = []
    if "untrained" in record:
        rows.append(["untrained"] + [100 * record["untrained"][k] for k in METRIC_KEYS])
    rows.append([f"step {record['step']}"] + [100 * record[k] for k in METRIC_KEYS])
    if "reranked" in record:
        rows.append(["re-ranked"] + [100 * record["reranked"][k] for k in METRIC_KEYS])
    title = (
        f"{record['model']} on {record['dataset']} ({record['protocol']}; "
        f"{record['num_query']} queries, {record['num_gallery']} gallery tracklets), in %"
    )
    return logging_utils.log_table(title, ["network", *METRIC_KEYS], rows)


def write_reports(
    workdir: str, record: dict, result: dict, data, config, untrained: dict | None = None
) -> None:
    """results.json, plots/cmc.png and plots/ranked/*.png (process 0 only)."""
    if jax.process_index() != 0:
        return
    files.write_json_atomic(os.path.join(workdir, "results.json"), record)
    plots = os.path.join(workdir, "plots")
    os.makedirs(plots, exist_ok=True)
    curves = {f"step {record['step']} (mAP {100 * record['mAP']:.1f}%)": np.array(result["cmc"])}
    if untrained is not None:
        curves[f"untrained (mAP {100 * untrained['mAP']:.1f}%)"] = np.array(untrained["cmc"])
    viz.plot_cmc(
        curves,
        os.path.join(plots, "cmc.png"),
        title=f"CMC: {record['model']} on {record['dataset']} ({record['protocol']})",
    )
    _write_ranked_lists(os.path.join(plots, "ranked"), result["_distmat"], data, config.eval)


def _write_ranked_lists(out_dir: str, distmat, data, eval_config) -> None:
    if eval_config.num_ranked_queries <= 0:
        return
    os.makedirs(out_dir, exist_ok=True)
    query, gallery = data.query, data.gallery
    picks = np.linspace(0, len(query) - 1, min(eval_config.num_ranked_queries, len(query)))
    for qi in np.unique(picks.astype(int)):
        order = np.argsort(distmat[qi], kind="stable")
        # The ranking a user sees skips what the protocol ignores (same pid and camera, junk).
        ignored = ((gallery.pids == query.pids[qi]) & (gallery.camids == query.camids[qi])) | (
            gallery.pids == -1
        )
        order = [g for g in order if not ignored[g]][: eval_config.ranked_top_k]
        entries = [
            (
                _frames_preview(gallery, g),
                bool(gallery.pids[g] == query.pids[qi]),
                f"id {gallery.pids[g]} cam {gallery.camids[g] + 1}\nd={distmat[qi, g]:.2f}",
            )
            for g in order
        ]
        viz.save_ranked_list(
            os.path.join(out_dir, f"query_{qi:05d}.png"),
            _frames_preview(query, qi),
            f"query id {query.pids[qi]} cam {query.camids[qi] + 1}",
            entries,
        )


def _frames_preview(index, i: int, count: int = 4) -> list[np.ndarray]:
    frames = index.frames[i]
    picks = np.unique(np.linspace(0, len(frames) - 1, min(count, len(frames))).astype(int))
    return [np.asarray(Image.open(io.BytesIO(frames[p])).convert("RGB")) for p in picks]


def write_scalars(writer, step: int, dataset: str, result: dict, prefix: str = "eval") -> None:
    writer.write_scalars(step, {f"{prefix}/{dataset}/{k}": result[k] for k in METRIC_KEYS})
