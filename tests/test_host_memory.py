"""`vreid_jax.host_memory`: where the malloc settings apply, and that applied, freed memory stays
in the process (`benchmarks/host_memory.py` measures what that saves)."""

import json
import subprocess
import sys

import pytest

from vreid_jax import host_memory

# Frees a 64 MiB block (above glibc's mmap threshold, so by default it is unmapped on free) and
# says how much resident memory the free gave back to the kernel.
_PROGRAM = """
import ctypes, json, os, sys
from vreid_jax import host_memory
applied = host_memory.keep_freed_memory(sys.argv[1])
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
size = 64 << 20
block = libc.malloc(size)
ctypes.memset(block, 1, size)
before = rss()
libc.free(block)
print(json.dumps({"applied": applied, "given_back_mib": (before - rss()) / 2**20}))
"""


def _free_a_block(setting: str, repo_root) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", _PROGRAM, setting],
        capture_output=True,
        text=True,
        check=True,
        cwd=repo_root,
        env={"JAX_PLATFORMS": "cpu", "PATH": ""},
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(host_memory._glibc() is None, reason="needs glibc's malloc")
def test_kept_memory_stays_in_the_process_and_the_default_gives_it_back(repo_root):
    default, kept = _free_a_block("false", repo_root), _free_a_block("true", repo_root)
    assert not default["applied"] and default["given_back_mib"] > 60
    assert kept["applied"] and kept["given_back_mib"] < 4
    assert _free_a_block("auto", repo_root)["applied"]  # JAX_PLATFORMS=cpu.


def test_auto_follows_the_platform_jax_will_use(monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cuda,cpu")
    assert not host_memory.jax_will_use_cpu()
    assert not host_memory.keep_freed_memory("auto")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    assert host_memory.jax_will_use_cpu()
    monkeypatch.delenv("JAX_PLATFORMS")
    assert host_memory.jax_will_use_cpu()  # The test environment has no GPU/TPU plugin.


def test_false_applies_nothing_and_a_bad_value_is_refused():
    assert not host_memory.keep_freed_memory("false")
    with pytest.raises(ValueError, match="keep_host_memory='sometimes'"):
        host_memory.keep_freed_memory("sometimes")
