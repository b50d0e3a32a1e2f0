"""Logging: TensorBoard + `metrics.jsonl` writers, metric tables, quiet TensorFlow and orbax.

The training loop's progress reporter and profiler are clu's periodic actions (`training/loop.py`).
"""

from __future__ import annotations

import json
import logging as logging_std
import os

from absl import logging

from vreid_jax import files


def quiet_tensorflow() -> None:
    """Silences TensorFlow's import-time noise and keeps it off any GPU (JAX owns the accelerators)."""
    import data_prep  # noqa: PLC0415

    data_prep.quiet_tensorflow_logs()
    import tensorflow as tf  # noqa: PLC0415  (deliberately late: the env vars must be set first)

    tf.config.set_visible_devices([], "GPU")


class MetricWriter:
    """Writes scalars to TensorBoard (via clu) and one JSON object per call to `metrics.jsonl`.

    Only process 0 writes files; other processes only log, so a multi-host run has one record.
    """

    def __init__(
        self, workdir: str, *, is_main_process: bool = True, jsonl_name: str = "metrics.jsonl"
    ):
        from clu import metric_writers  # noqa: PLC0415  (heavy; keep `import vreid_jax` cheap)

        self._is_main = is_main_process
        self._clu = metric_writers.create_default_writer(
            os.path.join(workdir, "tensorboard"),
            just_logging=not is_main_process,
            asynchronous=False,
        )
        self._jsonl_path = os.path.join(workdir, jsonl_name)
        if is_main_process:
            os.makedirs(workdir, exist_ok=True)

    def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
        scalars = {k: float(v) for k, v in scalars.items()}
        self._clu.write_scalars(step, scalars)
        if self._is_main:
            with open(self._jsonl_path, "a") as f:
                f.write(json.dumps({"step": int(step), **scalars}) + "\n")

    def drop_after(self, step: int) -> None:
        """Removes `metrics.jsonl` records of steps after `step` (a run resumed from `step` logs
        them again), so that the file holds each step once. TensorBoard discards such steps
        itself when it sees the step count go back."""
        if not self._is_main or not os.path.exists(self._jsonl_path):
            return
        with open(self._jsonl_path) as f:
            lines = f.read().splitlines(keepends=True)
        kept = [line for line in lines if _logged_step(line) <= step]
        if len(kept) < len(lines):
            with files.atomic_write(self._jsonl_path) as f:
                f.writelines(kept)

    def close(self) -> None:
        self._clu.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def log_table(title: str, header: list[str], rows: list[list]) -> str:
    """Formats rows as an aligned text table (floats with one decimal), logs it and returns it."""
    cells = [header] + [[f"{c:.1f}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    rule = "  ".join("-" * w for w in widths)
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    text = "\n".join([title, rule, lines[0], rule, *lines[1:], rule])
    logging.info("\n%s", text)
    return text


def _logged_step(line: str) -> float:
    """The step of a `metrics.jsonl` line; a line torn by a killed run counts as after any step."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError):
        return float("inf")


class _DropLibraryInfo(logging_std.Filter):
    """Drops INFO records from chatty libraries (orbax logs every file it writes)."""

    def filter(self, record):
        return record.levelno > logging_std.INFO or "/orbax/" not in record.pathname


def quiet_libraries() -> None:
    """Keeps absl's INFO log for our progress lines, without orbax's per-file chatter."""
    logging.get_absl_handler().addFilter(_DropLibraryInfo())


def log_parameter_overview(params) -> None:
    """Logs a table of parameter shapes and the total count (clu's parameter overview)."""
    from clu import parameter_overview  # noqa: PLC0415

    parameter_overview.log_parameter_overview(params)
