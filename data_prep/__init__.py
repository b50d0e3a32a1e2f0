"""Dataset preparation: raw video re-ID datasets -> TFRecord shards, and synthetic datasets.

Modules: one parser per dataset (`mars`, `dukev`, `ilidsvid`, `prid2011`, `lsvid`) producing the
canonical tracklet index (`index`); TFDS builders (`builders`); the `build` and `stats` CLIs; the
`reader` of built datasets; the synthetic generator (`synthetic`, `render`, `synthetic_layouts`).
Importing this package is cheap: it never imports jax or the trainer, and TensorFlow only where
shards are written or read.
"""
