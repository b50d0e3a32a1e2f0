"""Using a trained model: loading a workdir, `extract`, `search`, `relink` and `export` (with its
ONNX writer), and `tracks/` (your own tracklets, the features file, MOT files)."""
