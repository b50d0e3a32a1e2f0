"""The summary table of `benchmarks/gpu.sh`: one row per model and dtype, measured next to predicted.

Reads what gpu.sh left in its folder (train_step.json, feature_extraction.json, input_pipeline.json
and preflight/<model>_<dtype>/preflight.json) and prints a Markdown table; a measurement that is
missing (failed or skipped) shows as "-". Standard library only.

Run: python benchmarks/gpu_summary.py benchmarks/results/gpu
"""

from __future__ import annotations

import json
import pathlib
import sys

GIB = 2**30


def _load(path: pathlib.Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _find(records: dict, model: str, dtype: str) -> dict:
    """The entry of a keyed results file measured for `model` in `dtype` (the last one)."""
    found = [r for r in records.values() if r.get("model") == model and r.get("dtype") == dtype]
    return found[-1] if found else {}


def _fmt(value, spec: str = ".3g", scale: float = 1.0) -> str:
    return "-" if value is None else format(value / scale, spec)


def rows(folder: pathlib.Path) -> list[str]:
    steps = _load(folder / "train_step.json")
    extraction = _load(folder / "feature_extraction.json")
    pipeline = _load(folder / "input_pipeline.json")
    header = (
        "| model | dtype | step s (measured / preflight) | MFU | memory GiB (measured / preflight)"
        " | clips/s consumed | input clips/s | eval frames/s (end to end / compute) | verdict |"
    )
    lines = [header, "|" + "---|" * 9]
    for model in ("nl3d", "gltr", "tfclip"):
        for dtype in ("bfloat16", "float32"):
            step = _find(steps, model, dtype)
            extract = _find(extraction, model, dtype)
            pre = _load(folder / "preflight" / f"{model}_{dtype}" / "preflight.json")
            pre_memory = pre.get("memory", {}).get("train_step", {}).get("total")
            mfu = step.get("mfu")
            cells = [
                model,
                dtype,
                f"{_fmt(step.get('step_s_median'))} / {_fmt(pre.get('step_time_s'))}",
                "-" if mfu is None else f"{100 * mfu:.1f}%",
                f"{_fmt(step.get('peak_memory_bytes'), '.2f', GIB)} / "
                f"{_fmt(pre_memory, '.2f', GIB)}",
                _fmt(step.get("clips_per_s"), ".1f"),
                _fmt(pre.get("input_clips_per_s") or pipeline.get("train_clips_per_sec"), ".1f"),
                f"{_fmt(extract.get('extraction_frames_per_s'), '.1f')} / "
                f"{_fmt(extract.get('compute_only_frames_per_s'), '.1f')}",
                pre.get("verdict", "-").replace("|", "/").replace("\n", " "),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    folder = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/gpu")
    machine = next(iter(_load(folder / "train_step.json").values()), {}).get("machine", {})
    print(
        f"# {machine.get('device_kind', 'unknown device')} x {machine.get('num_devices', '?')}, "
        f"{machine.get('cores', '?')} host cores, jax {machine.get('jax', '?')}\n"
    )
    print("\n".join(rows(folder)))
    pipeline = _load(folder / "input_pipeline.json")
    if pipeline:
        print(
            f"\nInput pipeline on {pipeline['cores']} cores: {pipeline['train_clips_per_sec']} "
            f"training clips/s, {pipeline['eval_frames_per_sec']} evaluation frames/s."
        )


if __name__ == "__main__":
    main()
