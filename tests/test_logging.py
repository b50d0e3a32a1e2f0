"""The metric writer: metrics.jsonl and TensorBoard, closed as a context manager."""

import json

from vreid_jax import logging_utils


def test_writer_writes_jsonl_and_tensorboard(workdir):
    with logging_utils.MetricWriter(str(workdir)) as writer:
        writer.write_scalars(1, {"loss": 2.5, "lr": 3e-4})
        writer.write_scalars(2, {"loss": 2.0, "lr": 3e-4})
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert lines == [{"step": 1, "loss": 2.5, "lr": 3e-4}, {"step": 2, "loss": 2.0, "lr": 3e-4}]
    events = list((workdir / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
