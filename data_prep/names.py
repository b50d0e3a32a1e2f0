"""The datasets by name, and the per-dataset facts about how they are stored: the one definition.

Cheap to import (no TensorFlow, numpy or jax), so configs and the trainer read it too;
`data_prep.registry` re-exports it next to the parser modules.
"""

# Every dataset, in a fixed order (error messages, synthetic layouts and tests list them so).
NAMES = ("mars", "dukev", "ilidsvid", "prid2011", "lsvid")
# Stored once as all tracklets plus their NUM_SPLITS published splits, one applied when reading.
MULTI_SPLIT = ("ilidsvid", "prid2011")
NUM_SPLITS = 10
# Stored with a gallery that excludes the queries (junk included, flagged): the evaluator composes
# its protocol's gallery (`data_prep.reader`).
GALLERY_WITHOUT_QUERIES = ("mars", "lsvid")
# Training identities of each dataset's protocol (of one split for the 10-split datasets), for
# sizing a model's classifier before the dataset is built (`vreid_jax.training.preflight`). MARS,
# DukeMTMC-VideoReID and PRID-2011 match their parsers' VERIFIED_STATS; iLIDS-VID's 150 is its
# published protocol (half of 300 persons, UNVERIFIED_STATS); LS-VID's 842 is the count its
# authors' loaders report, unverified here.
TRAIN_IDS = {"mars": 625, "dukev": 702, "ilidsvid": 150, "prid2011": 89, "lsvid": 842}
