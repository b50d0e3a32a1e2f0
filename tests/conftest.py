"""Test harness: fake CPU devices, a persistent compilation cache, quiet TensorFlow, temp workdirs.

Everything here runs before jax is imported by any test module, which is what the device count and
the cache settings need.
"""

import os
import pathlib
import sys

NUM_FAKE_DEVICES = 4
_REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(
    0, str(_REPO)
)  # `configs` is imported as a package, as `python -m` from the root does.

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={NUM_FAKE_DEVICES}"
)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
# Compiled executables persist across test runs (and CI reruns) in a git-ignored folder.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_REPO / ".jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# Tiny models compile far faster without XLA's optimisation passes; results agree to float32 noise.
# An environment variable, so the command-line runs the tests start inherit it.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "true")

import pytest  # noqa: E402
from helpers import build_once  # noqa: E402


def pytest_addoption(parser):
    parser.addoption(
        "--full",
        action="store_true",
        help="The full tier (CI): also run the tests marked slow, which pytest skips by default.",
    )


def pytest_collection_modifyitems(config, items):
    """Two tiers (README, "Run the tests"). Without --full, the tests marked slow are skipped: the
    fast tier, in process, for every change. With --full they run too, and go first: with `-n 2`
    (and `--dist=worksteal`, pyproject.toml) the long ones then overlap with the many short ones
    instead of leaving one worker running the last alone."""
    if not config.getoption("--full"):
        skip = pytest.mark.skip(reason="full tier: run with --full")
        for item in items:
            if item.get_closest_marker("slow"):
                item.add_marker(skip)
        return
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture
def workdir(tmp_path):
    """An empty directory for one test's run outputs."""
    path = tmp_path / "workdir"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def repo_root():
    return _REPO


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
    """A TFDS data_dir holding the tiny config's synthetic MARS, generated and built once per run
    (the first xdist worker to need it builds it; the others wait and share it)."""
    from helpers import tiny_config  # noqa: PLC0415

    def build(folder):
        from vreid_jax.data import datasets  # noqa: PLC0415

        config = tiny_config("nl3d", **{"data.data_dir": str(folder)})
        datasets.ensure_built(config.data, seed=config.seed)

    return str(build_once(tmp_path_factory, "tiny_data", build))
