"""The values `config.eval`'s choice keys accept, read by `config_lib.validate` before any work.

Plain constants, cheap to import (no jax). `metrics` implements the distances and the AP formulas,
`features` the aggregates; both take the values as validated.
"""

# Query-gallery distance (`config.eval.distance`, and the triplet loss's `config.loss.triplet_distance`):
# Euclidean (not squared) or 1 - cosine similarity.
DISTANCES = ("euclidean", "cosine")
# AP formula (`config.eval.ap_mode`): the mean precision at the hits (torchreid) or the trapezoid
# rule of the MARS MATLAB code.
AP_MODES = ("standard", "trapezoid")
# How a clip-averaging model's clip features combine into one per tracklet (`config.eval.aggregate`).
AGGREGATES = ("mean", "max")
