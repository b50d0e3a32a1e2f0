"""Logging: TensorBoard + `metrics.jsonl` writers, a progress reporter, quiet TensorFlow.

This is the only module that imports clu, so the rest of the code depends on a small interface.
"""

from __future__ import annotations

import json
import logging as logging_std
import os
import time

from absl import logging


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

    def write_images(self, step: int, images: dict) -> None:
        """Images as uint8/float arrays [N, H, W, C], for TensorBoard only."""
        self._clu.write_images(step, images)

    def flush(self) -> None:
        self._clu.flush()

    def close(self) -> None:
        self._clu.close()


class Progress:
    """Logs steps/s and the ETA every `every_steps` steps (and returns the numbers)."""

    def __init__(
        self, total_steps: int, start_step: int = 0, every_steps: int = 50, unit: str = "steps"
    ):
        self.total_steps = total_steps
        self.every_steps = max(1, every_steps)
        self.unit = unit
        self._last_step = start_step
        self._last_time = time.perf_counter()

    def update(self, step: int, extra: str = "") -> dict[str, float] | None:
        """Call once per step; returns {'steps_per_sec', 'eta_sec'} when it reports, else None."""
        if step % self.every_steps and step != self.total_steps:
            return None
        now = time.perf_counter()
        rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
        self._last_step, self._last_time = step, now
        eta = (self.total_steps - step) / rate if rate > 0 else float("inf")
        logging.info(
            "%s %d/%d (%.1f%%)  %.2f %s/s  ETA %s  %s",
            self.unit,
            step,
            self.total_steps,
            100.0 * step / max(self.total_steps, 1),
            rate,
            self.unit,
            format_seconds(eta),
            extra,
        )
        return {"steps_per_sec": rate, "eta_sec": eta}


def format_seconds(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def log_table(title: str, header: list[str], rows: list[list]) -> str:
    """Formats rows as an aligned text table (floats with one decimal), logs it and returns it."""
    cells = [header] + [[f"{c:.1f}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    rule = "  ".join("-" * w for w in widths)
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    text = "\n".join([title, rule, lines[0], rule, *lines[1:], rule])
    logging.info("\n%s", text)
    return text


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
