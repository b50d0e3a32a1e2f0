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


def pytest_collection_modifyitems(items):
    """Tests marked slow (command-line runs of minutes) go first: with `-n 2` the long ones then
    overlap with the many short ones instead of leaving one worker running the last alone."""
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
    """A TFDS data_dir where the tiny config generates and builds its synthetic MARS once."""
    return str(tmp_path_factory.mktemp("tiny_data"))
