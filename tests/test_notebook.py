"""The Colab quick-start notebook runs top to bottom (on the tiny config)."""

import os

import nbformat
import pytest
from nbclient import NotebookClient


@pytest.mark.slow
def test_quickstart_notebook_runs(repo_root, tmp_path, tiny_data_dir, monkeypatch):
    notebook = nbformat.read(repo_root / "notebooks" / "quickstart.ipynb", as_version=4)
    monkeypatch.setenv("VREID_SKIP_INSTALL", "1")
    monkeypatch.setenv("VREID_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("VREID_NOTEBOOK_DATA_DIR", tiny_data_dir)
    monkeypatch.setenv("VREID_NOTEBOOK_WORKDIR", str(tmp_path / "work"))
    client = NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(repo_root)}},
    )
    client.execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 3  # The CMC curve, one ranked list and one search result.
    assert os.path.exists(tmp_path / "work" / "results.json")
