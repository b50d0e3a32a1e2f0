r"""Prints a built dataset's summary table and checks it against the published statistics.

  python -m data_prep.stats --dataset mars --data_dir /data/tfds [--split_index 0] [--nocheck]

Counts that a parser marks verified (its `VERIFIED_STATS`, recomputed from the release's own files)
must match exactly (exit status 1 otherwise); the others (`UNVERIFIED_STATS`) only warn. Synthetic
datasets are much smaller than the real ones: use `--nocheck` for them.
"""

from __future__ import annotations

from absl import app, flags

from data_prep import quiet_tensorflow_logs, reader, registry
from data_prep.index import DataPrepError

_COLUMNS = ("ids", "tracklets", "frames", "min_len", "max_len", "junk")


def format_table(dataset: str, rows: list[dict]) -> str:
    """A torchreid-style table: ids / tracklets / frames / length min-mean-max per split."""
    rule = "  " + "-" * 78
    lines = [
        f"=> {dataset} summary",
        rule,
        "  subset   | # ids | # tracklets | # frames  | length min / mean / max | # cams | junk | distr.",
        rule,
    ]
    for r in rows:
        length = f"{r['min_len']} / {r['mean_len']:.1f} / {r['max_len']}"
        lines.append(
            f"  {r['split']:<8} | {r['ids']:5d} | {r['tracklets']:11d} | {r['frames']:9d} | "
            f"{length:>23} | {r['cameras']:6d} | {r['junk']:4d} | {r['distractors']:6d}"
        )
    lines.append(rule)
    return "\n".join(lines)


def check(dataset: str, rows: list[dict]) -> tuple[list[str], list[str]]:
    """Compares summary rows with the dataset's known statistics.

    Returns:
      (errors, warnings): mismatches of verified counts, and of unverified ones.
    """
    module = registry.get(dataset)
    found = {r["split"]: r for r in rows}
    out: tuple[list[str], list[str]] = ([], [])
    for verified, known in ((True, module.VERIFIED_STATS), (False, module.UNVERIFIED_STATS)):
        for split, fields in known.items():
            for field, expected in fields.items():
                got = found[split][field]
                if got != expected:
                    kind = "verified" if verified else "unverified"
                    out[0 if verified else 1].append(
                        f"{split} {field}: {got}, expected {expected} ({kind}, {module.__name__})"
                    )
    return out


FLAGS = flags.FLAGS


def _define_flags() -> None:
    # Defined only when run as a script, so importing this module never claims global flag names.
    flags.DEFINE_enum("dataset", None, sorted(registry.DATASETS), "Built dataset to summarise.")
    flags.DEFINE_string("data_dir", None, "TFDS data folder given to data_prep.build.")
    flags.DEFINE_integer("split_index", 0, "iLIDS-VID/PRID-2011: which published split.")
    flags.DEFINE_bool("check", True, "Compare with the published statistics.")
    flags.mark_flags_as_required(["dataset", "data_dir"])


def main(argv):
    del argv
    quiet_tensorflow_logs()
    try:
        rows = reader.summary(FLAGS.dataset, FLAGS.data_dir, FLAGS.split_index)
    except DataPrepError as e:
        raise SystemExit(f"error: {e}") from None
    print(format_table(FLAGS.dataset, rows))
    skipped = reader.build_metadata(FLAGS.dataset, FLAGS.data_dir)["skipped"]
    if skipped:
        print(f"{len(skipped)} bad tracklets were skipped at build time (--skip_bad):")
        print("\n".join(f"  {s}" for s in skipped))
    if not FLAGS.check:
        return
    errors, warnings = check(FLAGS.dataset, rows)
    for w in warnings:
        print(f"warning: {w}")
    for e in errors:
        print(f"MISMATCH: {e}")
    if errors:
        raise SystemExit(1)
    print("statistics: OK" if not warnings else "statistics: verified counts OK")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
