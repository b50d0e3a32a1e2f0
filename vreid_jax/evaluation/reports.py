"""What a run reports: the `results.json` record, the metric tables, the CMC plot, the ranked-list
pictures and the TensorBoard/`metrics.jsonl` scalars of an evaluation.

`results.json`'s keys are a public contract (the README, the notebook and the tests read them):
dataset, protocol, model, step, num_query, num_gallery, and mAP, mINP, rank1/5/10/20 as fractions
in [0, 1]; `untrained` holds the same metrics for the network before training when it was evaluated
then, and the 10-split datasets add the mean over splits and one entry per split.

Files are written by process 0 only, atomically.
"""

from __future__ import annotations

import io
import os

import jax
import numpy as np
from PIL import Image

from vreid_jax import files, logging_utils
from vreid_jax.evaluation import pictures
from vreid_jax.evaluation.metrics import SUMMARY_KEYS


def results_record(summary: dict, data, config, step: int, untrained: dict | None = None) -> dict:
    """The `results.json` record of one evaluation (`Ranking.metrics`) of `data` at `step`."""
    record = {
        "dataset": data.name,
        "protocol": f"{data.protocol}, AP {config.eval.ap_mode}",
        "model": config.model.name,
        "step": int(step),
        "num_query": len(data.query),
        "num_gallery": len(data.gallery),
        **{k: summary[k] for k in SUMMARY_KEYS},
        "num_valid_queries": summary["num_valid_queries"],
    }
    if "reranked" in summary:
        record["reranked"] = {k: summary["reranked"][k] for k in SUMMARY_KEYS}
    if "protocols" in summary:
        record["protocols"] = summary["protocols"]
    if untrained is not None:
        record["untrained"] = {k: untrained[k] for k in SUMMARY_KEYS}
    return record


def splits_record(records: list[dict], config) -> dict:
    """The `results.json` record of a multi-split run: the mean over splits, and each split's."""
    splits = [int(s) for s in config.eval.splits]
    first = records[0]
    return {
        "dataset": first["dataset"],
        "model": first["model"],
        "protocol": f"{config.data.name} mean over splits {splits}, AP {config.eval.ap_mode}",
        "step": first["step"],
        "num_query": first["num_query"],
        "num_gallery": first["num_gallery"],
        **{k: float(np.mean([r[k] for r in records])) for k in SUMMARY_KEYS},
        "protocols": {
            key: {
                k: float(np.mean([r["protocols"][key][k] for r in records])) for k in SUMMARY_KEYS
            }
            for key in first.get("protocols", {})
        },
        "splits": [{"split": s, **r} for s, r in zip(splits, records, strict=True)],
    }


def print_table(record: dict) -> str:
    """Logs and returns the final metric tables (percent): the headline protocol's (the untrained
    network's row when there is one, then the trained network's and the re-ranked one's; or one
    row per split and the mean), then the trained network under every protocol."""
    text = _headline_table(record)
    if record.get("protocols"):
        rows = [_row(key, summary) for key, summary in record["protocols"].items()]
        what = "the mean over splits" if "splits" in record else f"step {record['step']}"
        text += "\n" + logging_utils.log_table(
            f"{what} under every protocol ([gallery/]AP formula), in %",
            ["protocol", *SUMMARY_KEYS],
            rows,
        )
    return text


def _headline_table(record: dict) -> str:
    if "splits" in record:
        rows = [_row(f"split {r['split']}", r) for r in record["splits"]]
        rows.append(_row("mean", record))
        title = f"{record['model']} on {record['dataset']}: {len(record['splits'])} splits, in %"
        return logging_utils.log_table(title, ["split", *SUMMARY_KEYS], rows)
    rows = []
    if "untrained" in record:
        rows.append(_row("untrained", record["untrained"]))
    rows.append(_row(f"step {record['step']}", record))
    if "reranked" in record:
        rows.append(_row("re-ranked", record["reranked"]))
    title = (
        f"{record['model']} on {record['dataset']} ({record['protocol']}; "
        f"{record['num_query']} queries, {record['num_gallery']} gallery tracklets), in %"
    )
    return logging_utils.log_table(title, ["network", *SUMMARY_KEYS], rows)


def _row(label: str, summary: dict) -> list:
    return [label] + [100 * summary[k] for k in SUMMARY_KEYS]


def write_results(workdir: str, record: dict) -> None:
    """`workdir/results.json` (process 0 only)."""
    if jax.process_index() == 0:
        files.write_json_atomic(os.path.join(workdir, "results.json"), record)


def write_reports(workdir: str, record: dict, ranking, data, config, untrained=None) -> None:
    """results.json, plots/cmc.png and plots/ranked/*.png of `ranking` (process 0 only)."""
    write_results(workdir, record)
    if jax.process_index() != 0:
        return
    plots = os.path.join(workdir, "plots")
    os.makedirs(plots, exist_ok=True)
    label = f"step {record['step']} (mAP {100 * record['mAP']:.1f}%)"
    curves = {label: np.array(ranking.metrics["cmc"])}
    if untrained is not None:
        curves[f"untrained (mAP {100 * untrained['mAP']:.1f}%)"] = np.array(untrained["cmc"])
    pictures.plot_cmc(
        curves,
        os.path.join(plots, "cmc.png"),
        title=f"CMC: {record['model']} on {record['dataset']} ({record['protocol']})",
    )
    _write_ranked_lists(os.path.join(plots, "ranked"), ranking.distances, data, config.eval)


def write_scalars(writer, step: int, dataset: str, summary: dict, prefix: str = "eval") -> None:
    """The summary metrics of an evaluation as scalars `<prefix>/<dataset>/<metric>`."""
    writer.write_scalars(step, {f"{prefix}/{dataset}/{k}": summary[k] for k in SUMMARY_KEYS})


def _write_ranked_lists(out_dir: str, distmat, data, eval_config) -> None:
    if eval_config.num_ranked_queries <= 0:
        return
    os.makedirs(out_dir, exist_ok=True)
    query, gallery = data.query, data.gallery
    picks = np.linspace(0, len(query) - 1, min(eval_config.num_ranked_queries, len(query)))
    ranked = {}
    for qi in np.unique(picks.astype(int)):
        order = np.argsort(distmat[qi], kind="stable")
        # The ranking a user sees skips what the protocol ignores (same pid and camera, junk).
        ignored = ((gallery.pids == query.pids[qi]) & (gallery.camids == query.camids[qi])) | (
            gallery.pids == -1
        )
        ranked[int(qi)] = [int(g) for g in order if not ignored[g]][: eval_config.ranked_top_k]
    # Frames are read in row order: one pass over a streamed split, not one per picture.
    query_frames = _previews(query, ranked)
    gallery_frames = _previews(gallery, {g for order in ranked.values() for g in order})
    for qi, order in ranked.items():
        entries = [
            (
                gallery_frames[g],
                bool(gallery.pids[g] == query.pids[qi]),
                f"id {gallery.pids[g]} cam {gallery.camids[g] + 1}\nd={distmat[qi, g]:.2f}",
            )
            for g in order
        ]
        pictures.save_ranked_list(
            os.path.join(out_dir, f"query_{qi:05d}.png"),
            query_frames[qi],
            f"query id {query.pids[qi]} cam {query.camids[qi] + 1}",
            entries,
        )


def _previews(index, rows, count: int = 4) -> dict[int, list[np.ndarray]]:
    """Up to `count` decoded frames, evenly spaced, of each tracklet at `rows`, read in row order."""
    previews = {}
    for row in sorted(rows):
        frames = index.frames[row]
        picks = np.unique(np.linspace(0, len(frames) - 1, min(count, len(frames))).astype(int))
        previews[row] = [
            np.asarray(Image.open(io.BytesIO(frames[p])).convert("RGB")) for p in picks
        ]
    return previews
