"""Input data: dataset registry, in-RAM tracklet index, numpy samplers, tf.data pipelines.

`datasets.load` gives a process its splits, `pipeline.train_batches` / `eval_clip_batches` /
`eval_frame_batches` turn them into numpy batches, and `vreid_jax.parallel.host_to_global` hands
those to the devices.
"""
