"""The datasets by name, and the per-dataset facts about how they are stored: the one definition.

Cheap to import (no TensorFlow, numpy or jax), so configs and the trainer read it too;
`data_prep.registry` re-exports it next to the parser modules.
"""

# Every dataset, in a fixed order (error messages, synthetic layouts and tests list them so).
NAMES = ("mars", "dukev", "ilidsvid", "prid2011", "lsvid")
# Stored once as all tracklets plus their 10 published splits, one applied when reading.
MULTI_SPLIT = ("ilidsvid", "prid2011")
# Stored with a gallery that excludes the queries (junk included, flagged): the evaluator composes
# its protocol's gallery (`data_prep.reader`).
GALLERY_WITHOUT_QUERIES = ("mars", "lsvid")
