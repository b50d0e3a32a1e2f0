"""Evaluation: whole-tracklet features, ranking metrics (CMC, mAP, mINP, re-ranking) and what a run
reports (results.json, tables, CMC plot, ranked-list pictures)."""
