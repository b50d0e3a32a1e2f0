"""The values `config.input`'s choice keys and `config.eval.gallery` accept, read by
`config_lib.validate` before any data is read. Plain constants, cheap to import (no TensorFlow, no
numpy); the modules named beside each implement them and take the values as validated.
"""

# How frames of another size are resized (`config.input.resize`; `augment.decode_frame`).
RESIZE_METHODS = ("bicubic", "bilinear")
# Which tracklets an epoch visits (`config.input.epoch`; `sampling.PKSampler`).
EPOCHS = ("identity", "tracklet")
# How a training clip's frames are drawn (`config.input.train_sampler`; `sampling.sample_frames`).
TEMPORAL_SAMPLERS = ("restricted_window", "restricted", "consecutive", "evenly")
# The gallery of the datasets stored without their queries in it, MARS and LS-VID
# (`config.eval.gallery`; `datasets.load`): 'official' = the queries and the stored gallery,
# 'torchreid' = the stored gallery alone.
GALLERIES = ("official", "torchreid")
