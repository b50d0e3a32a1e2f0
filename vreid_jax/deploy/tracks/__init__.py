"""Your own tracklets: reading them (folders of frames, MOT track files), the features file, and
the MOT format. What `python -m vreid_jax.deploy.extract`, `search` and `relink` build on."""
