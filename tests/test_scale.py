"""Evaluation memory does not grow with the test set's frames: the same evaluation at two sizes of
synthetic MARS with the real statistics (`data_prep.synthetic` with `scale`).

What this catches: any path that keeps, copies, logs or prints the test set's encoded frames. The
first MARS-size evaluation died so (a sort key that turned the gallery, every JPEG included, into a
string). One process, set up as `mode=eval` sets itself up (host memory, a tiny NL3D), evaluates
the small set once to compile, then measures each size's evaluation: loading the dataset,
extracting every tracklet, every protocol and the reports. The larger set adds about 86 MiB of
encoded test frames. Two peaks are taken around each evaluation:
- Python's and numpy's allocations (`tracemalloc`), exactly: a copy or repr of the frames is made
  of them. It may grow by a twentieth of the added bytes (measured: under 1 MiB).
- the process's RSS (peak reset through `/proc/self/clear_refs`): everything, TensorFlow's buffers
  included, but with the heap's fragmentation in it (measured: 1 to 110 MiB from run to run, one
  arena that is never trimmed, `vreid_jax.host_memory`). It may grow by twice the added bytes: the
  code before streaming grew by ten times (+870 MiB), a copy of the frames and their repr.
"""

import gc
import glob
import json
import os
import subprocess
import sys
import tracemalloc

import helpers
import pytest

# MARS test frames at these fractions of the real set: about 2,300 and 20,000.
SMALL, LARGE = 0.003, 0.03
# How much each peak may grow, as a share of the added encoded test frames (see above).
MAX_PYTHON_GROWTH, MAX_RSS_GROWTH = 0.05, 2.0

pytestmark = pytest.mark.slow


def _built(root, scale: float) -> str:
    """A built synthetic MARS of `scale` in `root`; returns its data folder."""
    from data_prep import build, synthetic  # noqa: PLC0415

    raw, data_dir = os.path.join(root, f"raw_{scale}"), os.path.join(root, f"data_{scale}")
    synthetic.generate("mars", raw, seed=0, scale=scale)
    build.build("mars", raw, data_dir)
    return data_dir


def _test_bytes(data_dir: str) -> int:
    """Bytes of the built query and gallery shards: the encoded test frames, mostly."""
    shards = [
        path
        for split in ("query", "gallery")
        for path in glob.glob(os.path.join(data_dir, "**", f"*-{split}.tfrecord*"), recursive=True)
    ]
    assert shards, f"no query/gallery shards under {data_dir}"
    return sum(os.path.getsize(p) for p in shards)


def _status_mib(key: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key)) / 1024


def probe(data_dirs: list[str], workdir: str) -> list[dict[str, float]]:
    """Run in a fresh process: the growth of the Python and RSS peaks (MiB) over an evaluation of
    each data folder."""
    from vreid_jax import host_memory  # noqa: PLC0415

    host_memory.keep_freed_memory("auto")  # As `main` does, before JAX and TensorFlow start.
    import jax  # noqa: PLC0415

    from vreid_jax import models, parallel
    from vreid_jax.data import datasets  # noqa: PLC0415
    from vreid_jax.evaluation import features, ranking, reports  # noqa: PLC0415
    from vreid_jax.training import state as state_lib  # noqa: PLC0415

    config = helpers.tiny_config("nl3d", **{"data.synthetic.enabled": False})
    mesh = parallel.make_mesh()
    model = models.build_model(config.model, num_classes=8)
    variables = jax.jit(
        lambda: state_lib.init_variables(model, state_lib.init_clips(config.input), 0)
    )()
    extractor = features.extractor_for(model, config, mesh)

    def evaluation(data_dir):
        config.data.data_dir = data_dir
        data = datasets.load(config.data, with_train=False)
        ranked = ranking.evaluate(extractor, variables, data, config)
        record = reports.results_record(ranked.metrics, data, config, 0)
        reports.write_reports(workdir, record, ranked, data, config)

    evaluation(data_dirs[0])  # Compiles every function: the measured runs compile nothing.
    tracemalloc.start()
    growth = []
    for data_dir in data_dirs:
        gc.collect()
        python_before, rss_before = tracemalloc.get_traced_memory()[0], _status_mib("VmRSS")
        tracemalloc.reset_peak()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # Resets the peak (VmHWM) to the current RSS.
        evaluation(data_dir)
        growth.append(
            {
                "python": (tracemalloc.get_traced_memory()[1] - python_before) / 2**20,
                "rss": _status_mib("VmHWM") - rss_before,
            }
        )
    return growth


def test_eval_memory_does_not_grow_with_the_test_frames(repo_root, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("scale"))
    data_dirs = [_built(root, scale) for scale in (SMALL, LARGE)]
    added = (_test_bytes(data_dirs[1]) - _test_bytes(data_dirs[0])) / 2**20
    # A process of its own: a fresh heap, XLA's optimisations on (the harness turns them off to
    # compile faster; this run is bound by its compute), the machine's own devices.
    env = {k: v for k, v in os.environ.items() if k != "JAX_DISABLE_MOST_OPTIMIZATIONS"}
    env.update(XLA_FLAGS="", PYTHONPATH=f"{repo_root}{os.pathsep}{repo_root / 'tests'}")
    code = (
        "import json, sys, test_scale; "
        "print(json.dumps(test_scale.probe(sys.argv[1:3], sys.argv[3])))"
    )
    workdir = str(tmp_path_factory.mktemp("eval"))
    done = subprocess.run(
        [sys.executable, "-c", code, *data_dirs, workdir],
        cwd=repo_root, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    small, large = json.loads(done.stdout.strip().splitlines()[-1])
    summary = (
        f"evaluation peaks, small -> large: Python {small['python']:.1f} -> "
        f"{large['python']:.1f} MiB, RSS {small['rss']:.0f} -> {large['rss']:.0f} MiB, "
        f"for +{added:.0f} MiB of encoded test frames"
    )
    print(summary)
    assert os.path.exists(os.path.join(workdir, "results.json"))
    assert added > 50, summary  # The sizes really differ.
    assert large["python"] - small["python"] < MAX_PYTHON_GROWTH * added, summary
    assert large["rss"] - small["rss"] < MAX_RSS_GROWTH * added, summary
