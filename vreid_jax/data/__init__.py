"""Input data: dataset registry, in-RAM tracklet index, numpy samplers, tf.data pipelines.

`datasets.load` gives a process its splits, `pipeline.train_batches` / `eval_clip_batches` /
`eval_frame_batches` turn them into numpy batches, and `vreid_jax.parallel.host_to_global` hands
those to the devices.
"""

import os

# TensorFlow reads these when it is first imported (by a submodule): keep its start-up log quiet
# unless the user asked otherwise.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
