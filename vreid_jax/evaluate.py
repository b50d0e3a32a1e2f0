"""Evaluation: query and gallery features (`vreid_jax.features`), then the ranking metrics.

`evaluate` returns a `Ranking`: the summary metrics of `config.eval`'s protocol and the distance
matrix they were computed from (the ranked-list pictures of `vreid_jax.reports` draw from it).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from vreid_jax import metrics


@dataclasses.dataclass
class Ranking:
    """What one evaluation measured.

    Attributes:
      metrics: mAP, mINP, rank1/5/10/20, the CMC curve and the number of valid queries; with
        `config.eval.rerank`, the same after k-reciprocal re-ranking under 'reranked'. JSON-able.
      distances: `[num_query, num_gallery]` query-gallery distances, before any re-ranking.
    """

    metrics: dict
    distances: np.ndarray


def rank(qf, gf, query, gallery, eval_config) -> Ranking:
    """CMC/mAP/mINP (and optionally re-ranked ones) for query/gallery features."""

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
    summary = ranked(distmat)
    if eval_config.rerank:
        # k-reciprocal re-ranking is defined on squared Euclidean distances (Zhong et al. 2017).
        power = 2 if eval_config.distance == "euclidean" else 1
        summary["reranked"] = ranked(
            metrics.re_ranking(distmat**power, distances(qf, qf) ** power,
                               distances(gf, gf) ** power)
        )  # fmt: skip
    return Ranking(metrics=summary, distances=distmat)


def _summarise(ranked: dict) -> dict:
    cmc = np.asarray(ranked["cmc"])
    out = {
        "mAP": float(ranked["mAP"]),
        "mINP": float(ranked["mINP"]),
        "num_valid_queries": int(ranked["num_valid_queries"]),
        "cmc": cmc.tolist(),
    }
    for r in metrics.RANKS:
        out[f"rank{r}"] = float(cmc[min(r, len(cmc)) - 1])
    return out


def evaluate(extractor, variables, data, config) -> Ranking:
    """Features of `data.query` and `data.gallery` by `extractor` (`features.extractor_for`) at
    `variables`, ranked by `config.eval`'s protocol."""
    qf = extractor(variables, data.query)
    gf = extractor(variables, data.gallery)
    return rank(qf, gf, data.query, data.gallery, config.eval)
