"""Evaluation: query and gallery features (`vreid_jax.evaluation.features`), then the ranking metrics.

`evaluate` returns a `Ranking`: the summary metrics of `config.eval`'s protocol (the headline), the
same metrics under every other protocol the features allow (`protocols`), and the headline's
distance matrix (the ranked-list pictures of `vreid_jax.evaluation.reports` draw from it).

Published numbers use different protocols: the MARS MATLAB code and GLTR the trapezoid AP, torchreid
and most PyTorch codes the standard AP; AP3D and its successors, and TF-CLIP (its `R1_mAP_eval`
ranks against every test feature), the 11,310-tracklet MARS gallery (queries included);
VID-Trans-ReID the 9,330 one. Every evaluation reports all of them
from the one set of features, so any published number can be compared without re-running.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from absl import logging

from vreid_jax.evaluation import metrics


@dataclasses.dataclass
class Ranking:
    """What one evaluation measured.

    Attributes:
      metrics: mAP, mINP, rank1/5/10/20, the CMC curve and the number of valid queries of the
        headline protocol; with `config.eval.rerank`, the same after k-reciprocal re-ranking under
        'reranked'; from `evaluate`, every protocol's summary under 'protocols' (see
        `protocols`). JSON-able.
      distances: `[num_query, num_gallery]` query-gallery distances, before any re-ranking.
    """

    metrics: dict
    distances: np.ndarray


def _distances(a, b, eval_config):
    return metrics.pairwise_distances(
        a, b, metric=eval_config.distance, normalize=eval_config.normalize_features
    )


def _ranked(distmat, query, gallery, eval_config, ap_mode: str) -> dict:
    return _summarise(
        metrics.evaluate_rank(
            distmat, query.pids, gallery.pids, query.camids, gallery.camids,
            max_rank=eval_config.max_rank, ap_mode=ap_mode,
        )
    )  # fmt: skip


def rank(qf, gf, query, gallery, eval_config) -> Ranking:
    """CMC/mAP/mINP (and optionally re-ranked ones) for query/gallery features."""
    distances = lambda a, b: _distances(a, b, eval_config)
    ranked = lambda distmat: _ranked(distmat, query, gallery, eval_config, eval_config.ap_mode)

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


@dataclasses.dataclass
class _Labels:
    """The identities and cameras of a gallery: all `metrics.evaluate_rank` needs of it."""

    pids: np.ndarray
    camids: np.ndarray


def protocols(qf, gf, data, eval_config, headline: Ranking) -> dict[str, dict]:
    """The summary metrics (`metrics.SUMMARY_KEYS`) of every protocol the features allow.

    Keys:
    - 'standard' and 'trapezoid' (the AP formula) for the datasets with one gallery;
    - '<gallery>/<AP formula>' on MARS and LS-VID, with both galleries: 'official' (the queries
      are in the gallery) and 'torchreid' (they are not).

    `headline` is `rank`'s result for `data.gallery` and `config.eval.ap_mode`: its distances and
    summary are reused, not computed again.
    """
    distmat = headline.distances
    galleries = {data.gallery_choice: (distmat, data.gallery)}
    num_query = len(data.query)
    if data.gallery_choice == "official":  # `data.gallery` starts with the queries.
        tail = slice(num_query, None)
        galleries["torchreid"] = (
            distmat[:, tail],
            _Labels(data.gallery.pids[tail], data.gallery.camids[tail]),
        )
    elif data.gallery_choice == "torchreid":
        official = _Labels(
            np.concatenate([data.query.pids, data.gallery.pids]),
            np.concatenate([data.query.camids, data.gallery.camids]),
        )
        galleries["official"] = (
            np.concatenate([_distances(qf, qf, eval_config), distmat], axis=1),
            official,
        )
    results = {}
    # Sorted by name only: an item's repr would be its whole gallery.
    for gallery_name, (gallery_distmat, gallery) in sorted(
        galleries.items(), key=lambda item: str(item[0])
    ):
        if gallery_name != data.gallery_choice and not _any_valid_query(data.query, gallery):
            # E.g. a small synthetic set whose queries have their only match among the queries.
            logging.warning("No query has a match in the %s gallery: not reported.", gallery_name)
            continue
        for ap_mode in metrics.AP_MODES:
            key = ap_mode if gallery_name is None else f"{gallery_name}/{ap_mode}"
            if gallery_name == data.gallery_choice and ap_mode == eval_config.ap_mode:
                summary = headline.metrics
            else:
                summary = _ranked(gallery_distmat, data.query, gallery, eval_config, ap_mode)
            results[key] = {k: summary[k] for k in metrics.SUMMARY_KEYS}
    return results


def _any_valid_query(query, gallery) -> bool:
    """Whether some query has a gallery item of its identity from another camera (not junk)."""
    same_pid = query.pids[:, None] == gallery.pids[None, :]
    other_camera = query.camids[:, None] != gallery.camids[None, :]
    return bool(np.any(same_pid & other_camera & (gallery.pids[None, :] != -1)))


def evaluate(extractor, variables, data, config) -> Ranking:
    """Features of `data.query` and `data.gallery` by `extractor` (`features.extractor_for`) at
    `variables`, ranked by `config.eval`'s protocol (the headline) and by every other
    (`protocols`). Each tracklet is extracted once: a gallery that holds the queries reuses their
    features."""
    qf = extractor(variables, data.query)
    gf = data.gallery_features(lambda index: extractor(variables, index), qf)
    ranking = rank(qf, gf, data.query, data.gallery, config.eval)
    ranking.metrics["protocols"] = protocols(qf, gf, data, config.eval, ranking)
    return ranking
