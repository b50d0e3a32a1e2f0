"""The 10-split protocol (iLIDS-VID, PRID-2011): one command trains and evaluates a chosen subset of
splits and reports their mean with the per-split records."""

import json

import numpy as np
import pytest
from conftest import tiny_config

from vreid_jax import evaluate, run


@pytest.mark.slow
def test_two_ilidsvid_splits_report_their_mean(tmp_path):
    config = tiny_config(
        "nl3d",
        **{
            "data.name": "ilidsvid",
            "data.data_dir": str(tmp_path / "data"),
            "data.synthetic_num_ids": 16,
            "eval.splits": (0, 3),
            "num_train_steps": 2,
            "input.pad": 0,
        },
    )
    record = run.run(config, str(tmp_path / "work"))
    assert [s["split"] for s in record["splits"]] == [0, 3]
    assert record["protocol"] == "ilidsvid mean over splits [0, 3], AP standard"
    for key in evaluate.METRIC_KEYS:
        assert record[key] == pytest.approx(np.mean([s[key] for s in record["splits"]]))
    for split in record["splits"]:
        assert split["protocol"].startswith(f"ilidsvid-split{split['split']},")
        assert split["num_query"] == split["num_gallery"]  # One cam-2 tracklet per query id.
    assert json.loads((tmp_path / "work" / "results.json").read_text())["splits"]
    assert (tmp_path / "work" / "split_3" / "results.json").exists()
