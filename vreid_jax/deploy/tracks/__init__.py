"""Your own tracklets: reading them (folders of frames, MOT track files), the features file, and
the MOT format. What `vreid-extract`, `vreid-search` and `vreid-relink` build on."""
